"""A user's own model, from their own script: export -> verify -> predict -> bench with only the class spec.

Fixtures in tests/fixtures/ reproduce real patterns (written for these tests): a tutorial script that
trains and saves at import, a script with Normalize(...) in its transforms, a class that needs a value
computed at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, TUTORIAL_FORMATS, cli_in_process

from mnistkit import ModelSpec
from mnistkit import export as mnistkit_export
from mnistkit.formats import parse_formats



def mnistkit(*args, cwd: Path) -> subprocess.CompletedProcess:
    """`mnistkit ARGS` in the user's folder, in this process with file descriptors 1/2 captured (conftest); another
    seed than the one cnn.pth was trained with: were the script run, cnn.pth would change."""
    return cli_in_process(*args, cwd=cwd, env={"TUTORIAL_SEED": "2"})


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tutorial(tutorial_export):
    """A user's folder: the unguarded tutorial script, torchvision's MNIST layout in ./data (the real
    sample), and the cnn.pth the script wrote when the user ran it (conftest._tutorial_export)."""
    return tutorial_export[0]


@pytest.fixture(scope="module")
def exported(tutorial_export):
    """`mnistkit export cnn.pth --model-class tutorial.py:Net --format TUTORIAL_FORMATS --json` in the user's folder,
    once, as a real process: (the export folder, the saved weights' bytes before it ran, the finished process)."""
    folder, before, r = tutorial_export
    return folder / "models" / "cnn", before, r


@pytest.mark.realdata
def test_export_never_runs_the_script_and_exports_the_saved_weights(tutorial, exported):
    ckpt = tutorial / "cnn.pth"
    export, before, r = exported
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)  # stdout is exactly one JSON object, whatever the script prints
    assert obj["passed"]
    assert "loss" not in r.stdout + r.stderr and "saved cnn.pth" not in r.stdout + r.stderr  # training never ran
    assert "defining Net" in r.stderr and "defining Net" not in r.stdout  # the class body's print: stderr
    assert ckpt.read_bytes() == before
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == hashlib.sha256(before).hexdigest()
    assert manifest["dataset"] == "mnist" and manifest["labels"] == [str(i) for i in range(10)]
    assert manifest["normalization"] == {"mean": [0.0], "std": [1.0]}  # ToTensor only, no Normalize
    assert manifest["test_accuracy"] is not None and manifest["test_accuracy"] > 0.3
    assert all(v["data"] == "mnist test images" and v["images"] == 1000 for v in obj["validation"])
    # each format asked for, validated on the real test digits
    assert [v["format"] for v in obj["validation"]] == parse_formats(TUTORIAL_FORMATS)
    assert manifest["source"]["model_class"].endswith("tutorial.py:Net")
    assert (export / "app" / "labels.json").is_file()

    # the ONNX is the model the user trained: their class, their saved weights, real test digits
    import onnxruntime as ort

    from mnistkit.data import load_split
    from mnistkit.formats import tolerance_for
    from mnistkit.usercode import load_class

    cls, _ = load_class(f"{tutorial / 'tutorial.py'}:Net")
    net = cls()
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    split = load_split("mnist", "test", tutorial / "data")
    x = split.images.astype(np.float32)[:, None] / 255
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(expected - got).max() <= tolerance_for("onnx", "cpu").max_abs
    assert (expected.argmax(1) == got.argmax(1)).all()


@pytest.mark.realdata
def test_verify_predict_bench_with_no_more_flags(tutorial, exported):
    export, _, done = exported
    assert done.returncode == 0, done.stderr
    r = mnistkit("verify", export, cwd=tutorial)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout and "reference: " in r.stderr and "sha256 checked" in r.stderr
    torch_and_ort = ("--backends", "pytorch,torchscript,exported-program,onnxruntime")  # every runtime ran above
    r = mnistkit("verify", export, *torch_and_ort, "--json", cwd=tutorial)
    report = json.loads(r.stdout)
    assert report["passed"] and report["dataset"] == "mnist" and report["images"] == 1000
    assert {p["format"] for p in report["pairs"]} >= {"onnx", "torchscript", "exported-program", "onnx-int8"}

    from mnistkit.data import load_split

    split = load_split("mnist", "test", tutorial / "data")
    np.save(tutorial / "digits.npy", split.images[:20])
    r = mnistkit("predict", export / "model-app.onnx", "digits.npy", "--json", cwd=tutorial)
    assert r.returncode == 0, r.stderr
    assert [p["input"] for p in json.loads(r.stdout)["predictions"]][:2] == ["digits.npy[0]", "digits.npy[1]"]

    r = mnistkit("bench", export, *torch_and_ort, "--batch-sizes", "1,64", "--min-time", "0.05", "--warmup", "0.02",
                 "--no-baselines", "--out-dir", tutorial / "bench", "--json", cwd=tutorial)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["results"]
    assert all(row["status"] == "ok" for row in rows), [row for row in rows if row["status"] != "ok"]
    assert {row["backend"] for row in rows} >= {"pytorch", "torchscript", "exported-program", "onnxruntime"}


@pytest.mark.realdata
def test_a_changed_or_moved_source_is_said_in_one_line(tutorial, tmp_path):
    export = tmp_path / "export"
    r = mnistkit("export", "cnn.pth", "--model-class", "tutorial.py:Net", "--format", "onnx", "--out-dir", export,
                 "--no-validate", cwd=tutorial)
    assert r.returncode == 0, r.stderr
    work = tmp_path / "moved"
    shutil.copytree(tutorial, work, ignore=shutil.ignore_patterns("models", "bench"))
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["source"]["path"] = manifest["source"]["abspath"] = str(work / "cnn.pth")
    (export / "manifest.json").write_text(json.dumps(manifest))
    (work / "cnn.pth").write_bytes((work / "cnn.pth").read_bytes() + b"\0")  # changed since export
    r = mnistkit("verify", export, cwd=work)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "changed since export" in lines[0] and "--model-class" in lines[0]
    (work / "cnn.pth").unlink()
    r = mnistkit("bench", export, "--batch-sizes", "1", cwd=work)
    assert r.returncode == 1 and "is gone" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.realdata
def test_normalize_is_found_in_the_script(tmp_path, mnist_sample_dir):
    """The app-ready model agrees with the script's own pipeline (its transform, its model) on every real
    test image, with no --mean/--std given."""
    shutil.copy(FIXTURES / "normalize_script.py", tmp_path / "main.py")
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "main.py", str(mnist_sample_dir), "model.pt", str(root)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    r = mnistkit("export", "model.pt", "--model-class", "main.py:Net", "--format", "onnx-app", "--dataset", "mnist",
                 "--data-dir", mnist_sample_dir, "--out-dir", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "normalization from main.py:27: mean 0.1307, std 0.3081" in r.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["normalization"] == {"mean": [0.1307], "std": [0.3081]}
    assert manifest["normalization_source"] == "main.py:27"

    import importlib.util

    import onnxruntime as ort
    from PIL import Image

    from mnistkit.data import load_split

    spec = importlib.util.spec_from_file_location("users_main", tmp_path / "main.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # guarded: importing it does not train
    model = script.Net()
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    model.eval()
    split = load_split("mnist", "test", mnist_sample_dir)
    theirs = script.predict(model, [Image.fromarray(a) for a in split.images])
    sess = ort.InferenceSession(str(tmp_path / "out" / "model-app.onnx"), providers=["CPUExecutionProvider"])
    ours = sess.run(["logits"], {"pixels": split.images})[0].argmax(1)
    assert len(ours) == 1000 and (ours == theirs).all()


def test_several_normalizes_are_refused_and_listed(tmp_path):
    (tmp_path / "two.py").write_text(
        "import torch.nn as nn\nfrom torchvision import transforms\n"
        "a = transforms.Normalize((0.1307,), (0.3081,))\nb = transforms.Normalize(mean=[0.5], std=[0.5])\n"
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = nn.Linear(784, 10)\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
    from mnistkit.errors import InvalidInputError
    from mnistkit.exporter import export_model

    torch.save({"fc.weight": torch.zeros(10, 784), "fc.bias": torch.zeros(10)}, tmp_path / "sd.pt")
    with pytest.raises(InvalidInputError, match=r"2 different Normalize\(\.\.\.\) calls \(two.py:3: mean 0.1307, std "
                                                r"0.3081; two.py:4: mean 0.5, std 0.5\)"):
        export_model(tmp_path / "sd.pt", "onnx", out_dir=tmp_path / "o",
                     spec=ModelSpec(model_class=f"{tmp_path / 'two.py'}:Net"), validate=False)
    # the Python API's keyword form: the ModelSpec fields as keywords
    r = mnistkit_export(tmp_path / "sd.pt", "onnx", out_dir=tmp_path / "o", model_class=f"{tmp_path / 'two.py'}:Net",
                        validate=False, mean=0.5, std=0.5)
    assert json.loads(r.manifest.read_text())["normalization_source"] == "--mean/--std"


def test_a_class_needing_a_run_time_value_is_refused_in_one_line(tmp_path):
    shutil.copy(FIXTURES / "needs_runtime.py", tmp_path / "script.py")
    torch.save({"fc.weight": torch.zeros(10, 784), "fc.bias": torch.zeros(10)}, tmp_path / "sd.pt")
    r = mnistkit("export", "sd.pt", "--model-class", "script.py:Net", "--no-validate", cwd=tmp_path)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "Net needs NUM_CLASSES, which script.py:7 computes at run time" in lines[0]
    assert "__main__" in lines[0] and "own file" in lines[0]


def test_a_failed_import_is_one_line(tmp_path):
    torch.save({"fc.weight": torch.zeros(10, 784)}, tmp_path / "sd.pt")
    (tmp_path / "broken.py").write_text("import torch.nn as nn\nimport not_a_module_xyz\nclass Net(nn.Module):\n"
                                        "    x = not_a_module_xyz.VALUE\n")
    r = mnistkit("export", "sd.pt", "--model-class", "broken.py:Net", "--no-validate", cwd=tmp_path)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "No module named 'not_a_module_xyz'" in lines[0], r.stderr


def test_fixed_batch_onnx_benches_at_every_batch_size_and_says_split(tmp_path):
    """A model-zoo style ONNX whose input is fixed at [1,1,28,28]."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.normal(0, 0.05, (784, 10)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["Input3"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w"], ["Plus214_Output_0"])],
        "zoo", [helper.make_tensor_value_info("Input3", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("Plus214_Output_0", TensorProto.FLOAT, [1, 10])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "mnist-zoo.onnx"))
    r = mnistkit("bench", "mnist-zoo.onnx", "--batch-sizes", "1,4,64", "--min-time", "0.05", "--warmup", "0.02",
                 "--out-dir", "b", "--json", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    rows = json.loads(r.stdout)["results"]
    by = {(row["backend"], row["batch_size"]): row for row in rows}
    assert by[("onnxruntime", 1)].get("split") is None
    assert by[("onnxruntime", 4)]["split"] == "4 × batch 1" and by[("onnxruntime", 64)]["split"] == "64 × batch 1"
    assert by[("onnxruntime-bare", 64)]["split"] == "64 × batch 1" and by[("onnxruntime", 64)]["status"] == "ok"
    assert "split: 64 × batch 1" in (tmp_path / "b" / "report.md").read_text()


@pytest.mark.realdata
def test_a_checkpoint_remembers_its_data_folder(tmp_path, mnist_sample_dir):
    """Trained with --data-dir, exported with no data flags: validated on that real test split, int8 calibrated
    on its training split (a float format and an int8 one: which data a format gets does not depend on which
    format it is)."""
    from mnistkit.exporter import export_model
    from mnistkit.train import TrainConfig, train

    data = tmp_path / "my-digits"
    shutil.copytree(mnist_sample_dir, data)
    ckpt = tmp_path / "c.pt"
    train(TrainConfig(dataset="mnist", data_dir=str(data), epochs=3, out=str(ckpt), threads=2))
    notes = []
    result = export_model(ckpt, "onnx,onnx-int8", out_dir=tmp_path / "o", log=notes.append)
    assert result.passed and len(result.artifacts) == 2
    calibration = json.loads((tmp_path / "o" / "manifest.json").read_text())["artifacts"][1]["quantization"]
    assert "mnist train" in json.dumps(calibration), calibration
    assert {(v.data, v.images) for v in result.validation} == {("mnist test images", 1000)}
    assert any(str(data.resolve()) in n and "recorded with the model" in n for n in notes), notes


def test_inspect_names_the_batch_axis_n(tiny_ckpt, tmp_path):
    from mnistkit.describe import describe
    from mnistkit.exporter import export_model

    export_model(tiny_ckpt, "onnx,onnx-app", out_dir=tmp_path / "o", validate=False)
    for f in ("model.onnx", "model-app.onnx"):
        info = describe(tmp_path / "o" / f)
        assert info["inputs"][0]["shape"][0] == "N" and info["outputs"][0]["shape"][0] == "N", info


def test_predict_names_inputs_by_their_path(tmp_path, tiny_export):
    from mnistkit.predict import predict

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "digit.npy", np.zeros((28, 28), np.uint8))
    names = [p["input"] for p in predict(tiny_export / "model.onnx", [tmp_path / "a" / "digit.npy",
                                                                       tmp_path / "b" / "digit.npy"])["predictions"]]
    assert names == [str(tmp_path / "a" / "digit.npy"), str(tmp_path / "b" / "digit.npy")]
    assert os.sep in names[0]
