import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mnistkit.cli import cli
from mnistkit.data import load_split
from test_preprocess import draw_digit
from conftest import cli_run as run


@pytest.mark.realdata
def test_predict_fashion_pngs_from_real_test_images(fashion_export, fashion_ckpt, tmp_path):
    split = load_split("fashion-mnist", "test")
    paths = []
    for i in range(60):
        p = tmp_path / f"fashion-{i}.png"
        Image.fromarray(split.images[i]).save(p)
        paths.append(p)
    labels = [split.labels[i] for i in range(60)]
    names = list(__import__("mnistkit.data", fromlist=["DATASETS"]).DATASETS["fashion-mnist"].labels)
    for model in (fashion_export / "model.onnx", fashion_export / "model-app.onnx", fashion_ckpt,
                  fashion_export / "model.ts", fashion_export / "model.pt2"):
        r = CliRunner().invoke(cli, ["predict", str(model), *map(str, paths), "--json", "--top-k", "2"],
                               catch_exceptions=False)
        assert r.exit_code == 0, r.output
        obj = json.loads(r.stdout)
        preds = obj["predictions"]
        assert [p["input"] for p in preds] == [str(p) for p in paths]  # as given: two digit.png never collide
        acc = np.mean([names.index(p["label"]) == y for p, y in zip(preds, labels)])
        assert acc >= 0.8, (model, acc)
        assert all(len(p["top_k"]) == 2 and abs(sum(p["probabilities"].values()) - 1) < 1e-6 for p in preds)
        assert obj["backend"] and obj["provider"] and obj["recipe"] == "objects"


@pytest.mark.realdata
def test_predict_real_digits_and_a_drawn_digit(digits_export, mnist_sample_dir, tmp_path):
    split = load_split("mnist", "test", mnist_sample_dir)
    paths = []
    for i in range(40):
        p = tmp_path / f"digit-{i}.png"
        Image.fromarray(split.images[i]).save(p)
        paths.append(p)
    r = CliRunner().invoke(cli, ["predict", str(digits_export / "model.onnx"), *map(str, paths), "--json"],
                           catch_exceptions=False)
    preds = json.loads(r.stdout)["predictions"]
    acc = np.mean([p["label"] == str(y) for p, y in zip(preds, split.labels[:40])])
    assert acc >= 0.8
    # digits drawn large, dark on light, as a user writes them: the digit recipe makes them MNIST-like
    drawn = []
    for digit in ("0", "1", "7", "4"):
        p = tmp_path / f"drawn-{digit}.png"
        draw_digit(digit).save(p)
        drawn.append(p)
    r = CliRunner().invoke(cli, ["predict", str(digits_export / "model-app.onnx"), *map(str, drawn), "--json"],
                           catch_exceptions=False)
    got = [p["label"] for p in json.loads(r.stdout)["predictions"]]
    assert got == ["0", "1", "7", "4"]


def test_predict_human_output_and_idx_input(tiny_export, tiny_data):
    r = run("predict", tiny_export / "model.onnx", tiny_data / "t10k-images-idx3-ubyte.gz", "--top-k", "1")
    assert r.exit_code == 0
    assert "t10k-images-idx3-ubyte.gz[127]" in r.output and "CPUExecutionProvider" in r.output


def test_predict_cuda_without_gpu_exits_1_listing_providers(tiny_export, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    draw_digit("1").save(tmp_path / "x.png")
    r = run("predict", tiny_export / "model.onnx", tmp_path / "x.png", "--device", "cuda")
    assert r.exit_code == 1 and "internal error" not in r.output
    line = r.output.strip()
    assert "\n" not in line and "CPUExecutionProvider" in line and "CUDAExecutionProvider" in line
    r = CliRunner().invoke(cli, ["predict", str(tiny_export / "model.onnx"), str(tmp_path / "x.png"), "--device",
                                 "cuda", "--allow-fallback", "--json"], catch_exceptions=False)
    assert r.exit_code == 0 and json.loads(r.stdout)["provider"] == "CPUExecutionProvider"
    assert "warning:" in r.stderr


@pytest.mark.parametrize("what", ["missing", "text", "corrupt-onnx", "truncated-ts", "nan-npy", "wrong-npy"])
def test_predict_bad_inputs_exit_1(tiny_export, tmp_path, what):
    model = tiny_export / "model.onnx"
    inp = tmp_path / "x.png"
    draw_digit("1").save(inp)
    if what == "missing":
        inp = tmp_path / "absent.png"
    elif what == "text":
        inp = tmp_path / "notes.txt"
        inp.write_text("hello")
    elif what == "corrupt-onnx":
        model = tmp_path / "bad.onnx"
        model.write_bytes(b"\x08\x07" + b"\xff" * 100)
    elif what == "truncated-ts":
        model = tmp_path / "bad.ts"
        model.write_bytes((tiny_export / "model.ts").read_bytes()[:2000])
    elif what == "nan-npy":
        inp = tmp_path / "x.npy"
        np.save(inp, np.full((1, 1, 28, 28), np.nan, np.float32))
    elif what == "wrong-npy":
        inp = tmp_path / "x.npy"
        np.save(inp, np.zeros((3, 32, 32), np.uint8))
    r = run("predict", model, inp)
    assert r.exit_code == 1, r.output
    assert "internal error" not in r.output and len(r.output.strip().splitlines()) == 1
    assert r.output.startswith("error: ")


def test_predict_usage_errors(tiny_export):
    assert run("predict", tiny_export / "model.onnx").exit_code == 2  # no inputs
    assert run("predict", tiny_export / "model.onnx", "x.png", "--backend", "tflite").exit_code == 2
    assert run("predict", tiny_export / "model.onnx", "x.png", "--top-k", "0").exit_code == 2
