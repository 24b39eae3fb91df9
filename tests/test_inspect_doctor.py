import json

import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from mnistkit import doctor as doctor_mod
from mnistkit.cli import cli
from mnistkit.formats import FORMATS, exportable
from mnistkit.onnx_compat import min_onnxruntime
from conftest import cli_run as run


# every exported file that is not derived from another (one per kind and input form), the manifest, the folder
TARGETS = [f.file for f in FORMATS.values() if f.exportable and not f.gated] + ["manifest.json", "."]


@pytest.mark.parametrize("target", TARGETS)
def test_inspect_every_kind_json(tiny_export, target):
    r = CliRunner().invoke(cli, ["inspect", str(tiny_export / target), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["labels"] == list("0123456789")
    assert info["preprocess"] == "digits" and info["normalization"]["mean"] == [0.1307]
    if target.endswith(".onnx"):
        assert info["opset"] == 18 and info["ir_version"] == 10 and info["min_onnxruntime"] == "1.18"
        assert len(info["sha256"]) == 64 and info["bytes"] > 100_000
        assert info["inputs"][0]["dtype"] == ("uint8" if "app" in target else "float32")
        assert info["operators"]["Gemm"] == 4
    if target in ("manifest.json", "."):
        assert info["kind"] == "manifest" and len(info["artifacts"]) == len(exportable())
    else:
        assert info["kind"] == FORMATS[info["format"]].kind and info["format"] in FORMATS


def test_inspect_checkpoint_human(tiny_ckpt):
    r = run("inspect", tiny_ckpt)
    assert r.exit_code == 0 and "checkpoint" in r.output and "test_accuracy" in r.output and "parameters" in r.output


def test_inspect_bad_files(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    for target in (tmp_path / "x.txt", tmp_path / "absent.onnx", tmp_path):
        r = run("inspect", target)
        assert r.exit_code == 1 and "internal error" not in r.output, r.output


def test_min_onnxruntime_table():
    assert min_onnxruntime(13, 7) == "1.6"
    assert min_onnxruntime(17, 8) == "1.12"
    assert min_onnxruntime(18, 8) == "1.14"
    assert min_onnxruntime(18, 10) == "1.18"
    assert min_onnxruntime(21, 10) == "1.18"
    assert min_onnxruntime(22, 10) == "> 1.20"


def test_probe_asset_is_a_valid_tiny_model():
    onnx.checker.check_model(onnx.load(str(doctor_mod.PROBE_MODEL)), full_check=True)
    sess = ort.InferenceSession(str(doctor_mod.PROBE_MODEL), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x"]


def test_doctor_json_on_this_machine():
    r = CliRunner().invoke(cli, ["doctor", "--json"], catch_exceptions=False)
    obj = json.loads(r.stdout)
    assert r.exit_code == 0 and obj["ok"] is True
    names = {c["name"]: c for c in obj["checks"]}
    assert names["ort CPU provider"]["status"] == "ok"
    assert names["onnxruntime"]["status"] == "ok" and "torch" in names
    # make setup installs OpenVINO: the check compiles and runs a model on its CPU plugin, not just imports it
    assert names["openvino"]["status"] == "ok" and "CPU plugin runs a model" in names["openvino"]["detail"]
    assert names["executorch"]["status"] == "ok" and "runs an XNNPACK program" in names["executorch"]["detail"]
    assert names["litert"]["status"] == "ok" and "Interpreter runs a model" in names["litert"]["detail"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert "ort CUDA provider" in names  # listed providers are probed, not trusted


def test_doctor_says_when_openvino_is_absent_or_broken(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    (check,) = doctor_mod.openvino_checks()
    assert check.status == "info" and "mnistkit[openvino]" in check.fix
    monkeypatch.setattr(builtins, "__import__", real_import)
    monkeypatch.setattr(doctor_mod, "PROBE_MODEL", doctor_mod.PROBE_MODEL.with_name("absent.onnx"))
    (check,) = doctor_mod.openvino_checks()
    assert check.status == "warn" and "CPU plugin failed" in check.detail


def test_doctor_says_when_litert_is_absent_or_broken(monkeypatch):
    monkeypatch.setattr(doctor_mod, "distribution_version", lambda name: None)
    (check,) = doctor_mod.litert_checks()
    assert check.status == "info" and "mnistkit[litert]" in check.fix
    monkeypatch.setattr(doctor_mod, "distribution_version", lambda name: "2.3.0")
    monkeypatch.setattr(doctor_mod, "PROBE_TFLITE", doctor_mod.PROBE_TFLITE.with_name("absent.tflite"))
    (check,) = doctor_mod.litert_checks()
    assert check.status == "warn" and "a model does not run" in check.detail


def test_doctor_blocks_on_two_onnxruntime_flavours(monkeypatch):
    monkeypatch.setattr(doctor_mod, "onnxruntime_distributions",
                        lambda: ["onnxruntime 1.31.0", "onnxruntime-gpu 1.31.1"])
    r = CliRunner().invoke(cli, ["doctor", "--json"], catch_exceptions=False)
    assert r.exit_code == 1
    obj = json.loads(r.stdout)
    bad = [c for c in obj["checks"] if c["status"] == "fail"]
    assert obj["ok"] is False and [c["name"] for c in bad] == ["onnxruntime packages"]
    assert "pip uninstall" in bad[0]["fix"]
    assert run("doctor").exit_code == 1
