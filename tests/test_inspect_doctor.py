import json

import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from mnistkit import doctor as doctor_mod
from mnistkit.backends import BACKENDS
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
    assert names["ncnn"]["status"] == "ok" and "runs a graph" in names["ncnn"]["detail"]
    assert names["mnn"]["status"] == "ok" and "runs a model" in names["mnn"]["detail"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert "ort CUDA provider" in names  # listed providers are probed, not trusted


SELF_CHECKED = [name for name, spec in BACKENDS.items() if spec.self_check]


@pytest.mark.parametrize("name", SELF_CHECKED)
def test_doctor_says_when_a_runtime_is_absent_or_broken(monkeypatch, name):
    """Each runtime's self-check (its backend file's probe model): not installed is information with the extra to
    install; installed but unable to run its probe is a warning with the reinstall."""
    import importlib

    spec = BACKENDS[name]
    monkeypatch.setattr(doctor_mod, "distribution_version", lambda dist: None)
    check = doctor_mod.runtime_check(name)
    assert check.status == "info" and f"mnistkit[{spec.extra}]" in check.fix
    monkeypatch.setattr(doctor_mod, "distribution_version", lambda dist: "9.9")
    module = importlib.import_module(spec.self_check.split(":")[0])
    monkeypatch.setattr(module, "PROBE", module.PROBE.with_name("absent" + "".join(module.PROBE.suffixes)))
    check = doctor_mod.runtime_check(name)
    assert check.status == "warn" and "probe model does not run" in check.detail
    assert check.fix == f"pip install --force-reinstall {spec.distribution}"


def test_every_deployable_runtime_has_a_self_check():
    """A runtime mnistkit deploys to (a bare baseline: it is benched and searched) is checked by doctor; ONNX Runtime,
    the core install, by doctor's own provider checks (flavours, providers listed and really loading)."""
    assert {n for n, s in BACKENDS.items() if s.bare_baseline} - {"onnxruntime"} <= set(SELF_CHECKED)


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
