import json
import math

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from mnistkit.cli import cli
from mnistkit.backends import backends_for
from mnistkit.compare import Tolerance, compare
from mnistkit.formats import FORMATS, tolerance_for
from mnistkit.verify import verify
from conftest import cli_run as run


# ---- the comparison function on hand-computed arrays

REF = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 1.0, 0.0], [1.0, 1.5, 1.4]])


def test_compare_statistics_by_hand():
    out = REF.copy()
    out[0, 1] = 2.5  # |diff| 0.5, rel 0.25
    out[3, 2] = 1.6  # |diff| 0.2, rel 0.2/1.4; flips the argmax of row 3 (1.5 -> 1.6)
    labels = np.array([1, 2, 0, 2])
    c = compare(REF, out, Tolerance(1.0, 0.5), labels)
    assert c.max_abs == pytest.approx(0.5)
    assert c.max_rel == pytest.approx(0.25)
    assert c.mean_abs == pytest.approx(0.7 / 12)
    assert c.top1_agreement == pytest.approx(0.75)
    assert c.reference_accuracy == pytest.approx(0.75)  # ref argmax: 1, 2, 0, 1
    assert c.accuracy == pytest.approx(1.0) and c.accuracy_delta == pytest.approx(0.25)
    assert c and c.passed and c.would_pass_at == pytest.approx(0.5)


def test_compare_fails_and_says_why():
    out = REF + 0.01
    c = compare(REF, out, Tolerance(1e-3))
    assert not c and c.failures == ["max_abs 1.000e-02 > 1e-03"]
    out = REF.copy()
    out[3, 2] = 1.6
    c = compare(REF, out, Tolerance(1.0, 1.0))
    assert not c and "top-1 agreement 75.0000% < 100.00%" in c.failures[0]


def test_compare_nan_fails_even_without_a_max_abs():
    out = REF.copy()
    out[1, 1] = np.nan
    c = compare(REF, out, Tolerance(None, 0.0))
    assert not c and math.isnan(c.max_abs) and "NaN" in c.failures[0]


def test_compare_accuracy_drop_budget():
    labels = np.array([1, 2, 0, 1])
    out = REF.copy()
    out[0] = [3.0, 0.0, 0.0]  # row 0 now wrong
    assert not compare(REF, out, Tolerance(None, 0.0, max_accuracy_drop=0.2, accuracy_min_images=4), labels)
    assert compare(REF, out, Tolerance(None, 0.0, max_accuracy_drop=0.3, accuracy_min_images=4), labels)
    # on fewer images than accuracy_min_images the drop is reported, not enforced (one image = 25 points here)
    c = compare(REF, out, Tolerance(None, 0.0, max_accuracy_drop=0.2), labels)
    assert c and c.accuracy_delta == pytest.approx(-0.25)


def test_compare_shape_mismatch():
    c = compare(REF, REF[:2], Tolerance(1.0))
    assert not c and "shape" in c.failures[0]


# ---- verify end to end


def test_verify_every_backend_on_tiny_data(tiny_ckpt, tiny_export, tiny_data):
    pairs = []
    report = verify(tiny_ckpt, [tiny_export], data_dir=tiny_data, on_pair=pairs.append)
    assert report.passed, report.verdict()
    got = {(p.backend, p.format) for p in report.pairs}
    expected = {(b, name) for name, f in FORMATS.items() if f.exportable for b in backends_for(f.kind)}
    assert got == expected  # every exported file on every runtime that opens it
    skipped = [p for p in report.pairs if p.skipped]
    # onnx.reference implements no DequantizeLinear for opset 18: the QDQ files are skipped, not failed
    assert {(p.backend, p.format) for p in skipped} == {("onnx-reference", "onnx-int8"),
                                                         ("onnx-reference", "onnx-int8-app")}
    assert report.verdict().startswith(f"PASSED | {len(report.compared)} pairs | worst max_abs")
    assert "2 skipped" in report.verdict()
    assert pairs == report.pairs


def test_verify_without_artifacts_exports_them(tiny_ckpt, tiny_data):
    """Only the formats the named backends open are exported (ONNX Runtime: the ONNX files, not a .pte)."""
    notes = []
    report = verify(tiny_ckpt, data_dir=tiny_data, backends=["onnxruntime"], log=notes.append)
    onnx_formats = [name for name, f in FORMATS.items() if f.kind == "onnx" and f.exportable]
    assert report.passed and sorted(p.format for p in report.pairs) == sorted(onnx_formats)
    assert f"no artifacts given: exporting {', '.join(onnx_formats)} to a temporary folder first" in notes


def test_verify_reports_every_failing_pair(tiny_ckpt, tiny_export, tiny_data, tmp_path):
    # a tampered ONNX file: one weight changed after export
    bad = tmp_path / "tampered.onnx"
    model = onnx.load(str(tiny_export / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[:200] += 0.5
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(bad))
    r = run("verify", tiny_ckpt, bad, tiny_export / "model.ts", "--data-dir", tiny_data)
    assert r.exit_code == 1
    last = r.output.strip().splitlines()[-1]
    n = len(backends_for("onnx"))  # every ONNX runtime sees the tampered weights
    assert last.startswith(f"error: FAILED | {n} of {n + 1} pairs |")
    for b in backends_for("onnx"):
        assert f"{b}/cpu tampered.onnx: max_abs" in last
    assert "torchscript" not in last  # the good artifact passed


def test_verify_json(tiny_ckpt, tiny_export, tiny_data):
    r = CliRunner().invoke(cli, ["verify", str(tiny_ckpt), str(tiny_export / "model.onnx"), "--data-dir",
                                 str(tiny_data), "--json", "--limit", "50"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["passed"] and obj["images"] == 50 and obj["verdict"].startswith("PASSED")
    pair = obj["pairs"][0]
    assert set(pair["comparison"]) >= {"max_abs", "max_rel", "mean_abs", "top1_agreement", "accuracy",
                                       "accuracy_delta", "tolerance"}


def test_saved_outputs_checked_on_another_machine(tiny_ckpt, tiny_export, tiny_data, tmp_path):
    saved = tmp_path / "gpu-box.npz"
    first = verify(tiny_ckpt, [tiny_export / "model.onnx"], data_dir=tiny_data, save_outputs=saved)
    assert first.passed and saved.exists()
    second = verify(tiny_ckpt, [tiny_export / "model.ts"], data_dir=tiny_data, load_outputs=saved)
    loaded = [p for p in second.pairs if p.origin.startswith("loaded from")]
    assert len(loaded) == len(backends_for("onnx")) and all(p.passed for p in loaded)
    # different images: refused, not silently compared
    r = run("verify", tiny_ckpt, tiny_export / "model.ts", "--data-dir", tiny_data, "--limit", "10",
            "--load-outputs", saved)
    assert r.exit_code == 1 and "differ from this run's 10" in r.output
    (tmp_path / "junk.npz").write_bytes(b"junk")
    r = run("verify", tiny_ckpt, tiny_export / "model.ts", "--data-dir", tiny_data, "--load-outputs", tmp_path / "junk.npz")
    assert r.exit_code == 1 and "not a mnistkit outputs file" in r.output


def test_verify_explicit_cuda_without_gpu_fails(tiny_ckpt, tiny_export, tiny_data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = run("verify", tiny_ckpt, tiny_export / "model.onnx", "--data-dir", tiny_data, "--devices", "cuda",
            "--backends", "onnxruntime")
    assert r.exit_code == 1 and "CUDA was requested" in r.output


def test_verify_bad_usage(tiny_ckpt):
    assert run("verify", tiny_ckpt, "--backends", "tflite").exit_code == 2
    assert run("verify", tiny_ckpt, "--devices", "tpu").exit_code == 2
    assert run("verify", tiny_ckpt, "--limit", "0").exit_code == 2
    r = run("verify", tiny_ckpt, "/nonexistent/model.onnx")
    assert r.exit_code == 1 and "no such file" in r.output


@pytest.mark.cuda
def test_verify_on_cuda(tiny_ckpt, tiny_export, tiny_data):
    report = verify(tiny_ckpt, [tiny_export], data_dir=tiny_data, devices=["cuda"],
                    backends=["pytorch", "torchscript", "exported-program"])
    assert report.passed, report.verdict()


@pytest.mark.realdata
def test_verify_full_fashion_test_set(fashion_ckpt, fashion_export):
    """Done-when of the Runtime issue: every CPU backend on the full Fashion-MNIST test split."""
    report = verify(fashion_ckpt, [fashion_export], devices=["cpu"])
    assert report.passed, report.verdict()
    assert report.images == 10000
    by = {(p.backend, p.format): p for p in report.pairs}
    for key in [("onnxruntime", f) for f in ("onnx-int8", "onnx-int8-app", "onnx-int8-dynamic", "onnx-fp16")]:
        c = by[key].comparison  # quantized: judged by agreement and accuracy on all 10,000 images
        assert c.top1_agreement >= 0.98 and -c.accuracy_delta <= 0.003
    for key in [("onnxruntime", "onnx"), ("onnxruntime", "onnx-app")]:
        assert by[key].comparison.max_abs <= tolerance_for(key[1], "cpu").max_abs
        assert by[key].comparison.top1_agreement == 1.0
        assert by[key].images == 10000
    assert by[("onnx-reference", "onnx")].images == 500  # the slow one runs a subset
    assert by[("torchscript", "torchscript")].passed and by[("exported-program", "exported-program")].passed


def test_another_checkpoint_is_compared_not_skipped(tiny_ckpt, tiny_cnn_ckpt, tiny_data, tmp_path):
    """`verify CKPT OTHER.pt` compares the two models (it used to say only "nothing was compared")."""
    import shutil

    same = tmp_path / "copy.pt"
    shutil.copy(tiny_ckpt, same)
    report = verify(tiny_ckpt, [same], data_dir=tiny_data)
    assert report.passed and [p.backend for p in report.pairs] == ["pytorch"]
    assert report.pairs[0].comparison.max_abs == 0
    other = verify(tiny_ckpt, [tiny_cnn_ckpt], data_dir=tiny_data)
    assert not other.passed and other.pairs[0].comparison is not None
    assert "max_abs" in other.verdict()


def test_nothing_compared_says_why(tiny_ckpt, tiny_export, tiny_data):
    report = verify(tiny_ckpt, [tiny_export / "model.ts"], backends=["onnxruntime"], data_dir=tiny_data)
    assert not report.passed
    assert report.verdict().startswith("FAILED | 0 pairs | nothing was compared: model.ts (torchscript) runs on "
                                       "torchscript, not on --backends onnxruntime")
    alone = verify(tiny_ckpt, [tiny_ckpt], data_dir=tiny_data)
    assert "no artifact given besides the reference" in alone.verdict()
