"""ONNX files mnistkit did not write (tests/foreign.py): what each command does with them, and the clear line where
one is out of scope. Each test here failed on main before this module: verify said a zoo model "holds pickled Python
objects", inspect hit an internal KeyError on a ZipMap output, predict took scikit-learn's `label` output and bench
ended in "axis 1 is out of bounds", an artifact of an export folder was benched with "no reference" although its
manifest names it, and a JavaScript runtime's rows for a bare ONNX file failed parity for want of a reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli_in_process
from foreign import sklearn_onnx, zoo_mnist8
from PIL import Image

from mnistkit import AssumptionWarning
from mnistkit.bench import BenchConfig, run_bench
from mnistkit.compare import softmax
from mnistkit.data import load_split


@pytest.fixture(scope="module")
def digits_png(mnist_sample_dir, tmp_path_factory):
    """Six real test digits as PNG files, and their pixels."""
    split = load_split("mnist", "test", mnist_sample_dir)
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i in range(6):
        paths.append(folder / f"digit{i}.png")
        Image.fromarray(split.images[i]).save(paths[-1])
    return paths, split.images[:6]


def _config(**kw):
    return BenchConfig(batch_sizes=(1, 4), warmup=0.01, min_time=0.02, min_reps=3, **kw)


def test_verify_on_a_model_from_elsewhere_says_it_needs_the_pytorch_model(tmp_path):
    zoo = zoo_mnist8(tmp_path / "mnist-8.onnx")
    r = cli_in_process("verify", zoo, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "an ONNX model" in line and "not a PyTorch reference" in line and "pickle" not in line
    assert "checkpoint" in line and "export folder" in line and "mnistkit verify model.pt mnist-8.onnx" in line


def test_inspect_shows_a_zipmap_output_as_the_sequence_it_is(tmp_path):
    model, _ = sklearn_onnx(tmp_path / "logreg.onnx", zipmap=True)
    r = cli_in_process("inspect", model, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    outputs = {o["name"]: o for o in json.loads(r.stdout)["outputs"]}
    assert outputs["output_label"] == {"name": "output_label", "dtype": "int64", "shape": ["?"]}
    assert outputs["output_probability"]["shape"] is None and "seq" in outputs["output_probability"]["dtype"]


def test_predict_reads_scikit_learns_probabilities_not_its_label(tmp_path, digits_png):
    """The [N,10] float output holds the scores; being probabilities already, they are shown as they are (a
    softmax over them would flatten 0.9 to ~0.2)."""
    model, coef = sklearn_onnx(tmp_path / "logreg.onnx", zipmap=False)
    paths, pixels = digits_png
    r = cli_in_process("predict", model, *paths, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["predictions"]
    expected = softmax((pixels.reshape(-1, 784) / 255.0) @ coef.T.astype(np.float64))  # the model's own arithmetic
    for p, want in zip(got, expected):
        probs = np.array([p["probabilities"][str(k)] for k in range(10)])
        np.testing.assert_allclose(probs, want, atol=1e-5)
        assert p["index"] == int(want.argmax())


def test_predict_on_a_zipmap_model_names_its_outputs_and_the_converter_option(tmp_path, digits_png):
    model, _ = sklearn_onnx(tmp_path / "logreg.onnx", zipmap=True)
    r = cli_in_process("predict", model, digits_png[0][0], cwd=tmp_path)
    assert r.returncode == 1
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "no output holds class scores as float [N,C]" in line
    assert "output_label int64 [N]" in line and "output_probability (seq(map(int64,tensor(float))))" in line
    assert "{'zipmap': False}" in line


def test_bench_times_scikit_learns_model_and_says_why_openvino_cannot(tmp_path):
    model, _ = sklearn_onnx(tmp_path / "logreg.onnx", zipmap=False)
    with pytest.warns(AssumptionWarning, match="random images"):  # no reference, no data: said
        report = run_bench([model], _config(backends=("onnxruntime", "openvino"), baselines=False))
    rows = {(r["backend"], r["batch_size"]): r for r in report.results}
    for b in (1, 4):
        ort = rows[("onnxruntime", b)]
        assert ort["status"] == "ok", ort.get("reason")
        assert ort["parity"]["against"] == "onnx-reference/cpu" and ort["parity"]["top1"] == 1.0
        ov = rows[("openvino", b)]
        assert ov["status"] == "error" and "axis 1" not in ov["reason"]
        assert "No conversion rule found for operations: ai.onnx.ml.LinearClassifier" in ov["reason"]


def test_an_artifact_of_an_export_folder_is_checked_against_the_source_its_manifest_records(tiny_export, tmp_path):
    int8 = tiny_export / "model-int8.onnx"
    report = run_bench([int8], _config(backends=("onnxruntime",), baselines=False))
    assert {r["file"] for r in report.results} == {"model-int8.onnx"}  # nothing added to what was asked
    assert all(r["status"] == "ok" and r["parity"]["against"] == "pytorch" for r in report.results)
    r = cli_in_process("verify", int8, "--backends", "onnxruntime", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    recorded = json.loads((tiny_export / "manifest.json").read_text())["source"]
    assert out["checkpoint"] in (recorded["path"], recorded["abspath"])
    assert out["reference"]["source"]["sha256"] == recorded["sha256"]
    assert [p["artifact"].endswith("model-int8.onnx") for p in out["pairs"]] == [True] and out["pairs"][0]["passed"]


def test_node_rows_of_files_with_no_reference_gate_on_the_same_file(tiny_export, tmp_path, node):
    """A bare ONNX file (no checkpoint, no manifest) and a fixed-batch zoo model on onnxruntime-node: the parity gate
    is an independent runtime's answers on the same file, and the fixed-batch model runs a batch as calls of its
    batch, as Python's backends run it."""
    bare = tmp_path / "bare.onnx"
    bare.write_bytes((tiny_export / "model.onnx").read_bytes())
    zoo = zoo_mnist8(tmp_path / "mnist-8.onnx")
    with pytest.warns(AssumptionWarning, match="random images"):
        report = run_bench([bare, zoo], _config(devices=("node",)))
    rows = [r for r in report.results if r["device"] == "node"]
    assert {r["file"] for r in rows} == {"bare.onnx", "mnist-8.onnx"}
    for r in rows:
        assert r["status"] == "ok", r.get("reason")
        assert r["parity"]["against"] in ("onnx-reference/cpu", "onnxruntime/cpu") and r["parity"]["top1"] == 1.0
    assert {r.get("split") for r in rows if r["file"] == "mnist-8.onnx"} == {None, "4 × batch 1"}
