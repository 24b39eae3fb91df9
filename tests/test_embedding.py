"""The exported model embedded in other apps: the Node.js client and the browser page, tested to give
Python's answers. They need Node.js, the examples' npm packages and Chromium, which the README's test
command installs; locally they skip with a message where those are absent, in CI that is a failure."""

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from mnistkit.backends import create_backend
from mnistkit.data import load_split
from test_preprocess import draw_digit

NODE_DIR = ROOT / "examples" / "node"
WEB_DIR = ROOT / "examples" / "web"
SCREENSHOT = os.environ.get("MNISTKIT_SCREENSHOT")  # e.g. docs/web-demo.png to refresh the README's picture


@pytest.fixture(scope="module")
def raw_images(tmp_path_factory, mnist_sample_dir):
    """200 real MNIST test digits as one raw buffer (200 x 784 uint8)."""
    images = load_split("mnist", "test", mnist_sample_dir).images[:200]
    path = tmp_path_factory.mktemp("raw") / "images.bin"
    path.write_bytes(np.ascontiguousarray(images).tobytes())
    return images, path


@pytest.fixture(scope="module")
def python_probabilities(digits_export, raw_images):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(digits_export / "app" / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(["probabilities"], {"pixels": raw_images[0]})[0]


def run_node(node, *args, timeout=120, home=None):
    env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
    if home is not None:  # a fresh HOME, and no ORT_DISABLE_TELEMETRY from `import mnistkit` in this process
        env = {k: v for k, v in env.items() if k != "ORT_DISABLE_TELEMETRY"} | {"HOME": str(home)}
    return subprocess.run([node, str(NODE_DIR / "predict.mjs"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


# ---- Node.js


@pytest.mark.node
def test_node_matches_python_on_200_raw_images(node, digits_export, raw_images, python_probabilities, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    r = run_node(node, "--model", digits_export / "app" / "model.onnx", "--raw", raw_images[1], "--json", home=home)
    assert list(home.iterdir()) == []  # onnxruntime-node's usage events are off (predict.mjs), nothing in HOME
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    node_probs = np.array([p["probabilities"] for p in out["predictions"]], np.float64)
    assert node_probs.shape == (200, 10)
    assert (node_probs.argmax(1) == python_probabilities.argmax(1)).all()
    assert np.abs(node_probs - python_probabilities).max() <= 1e-5
    assert out["predictions"][0]["label"] == str(python_probabilities[0].argmax())
    assert out["recipe"] == "digits"


@pytest.mark.node
def test_node_reads_pngs_and_applies_the_recipe(node, digits_export, tmp_path, mnist_sample_dir):
    paths = []
    for digit in ("0", "1", "7", "4"):
        p = tmp_path / f"drawn-{digit}.png"
        draw_digit(digit).save(p)
        paths.append(p)
    real = load_split("mnist", "test", mnist_sample_dir)
    for i in range(5):  # dataset images pass through unchanged
        Image.fromarray(real.images[i]).save(tmp_path / f"real-{i}.png")
        paths.append(tmp_path / f"real-{i}.png")
    r = run_node(node, "--model", digits_export / "app" / "model.onnx", *paths, "--json", "--top-k", "2")
    assert r.returncode == 0, r.stderr
    preds = json.loads(r.stdout)["predictions"]
    assert [p["label"] for p in preds[:4]] == ["0", "1", "7", "4"]
    with create_backend(digits_export / "app" / "model.onnx") as b:
        expected = b.run(real.images[:5]).argmax(1)
    assert [p["index"] for p in preds[4:]] == list(expected)
    assert all(len(p["top_k"]) == 2 for p in preds)
    human = run_node(node, "--model", digits_export / "app" / "model.onnx", paths[0])
    assert human.returncode == 0 and human.stdout.startswith("drawn-0.png: 0")


@pytest.mark.node
@pytest.mark.parametrize("case", ["missing-model", "not-onnx", "wrong-contract", "not-an-image", "blank", "bad-raw",
                                  "no-labels"])
def test_node_bad_inputs_exit_nonzero_with_a_message(node, digits_export, tmp_path, case):
    model = digits_export / "app" / "model.onnx"
    extra = []
    image = tmp_path / "digit.png"
    draw_digit("1").save(image)
    inputs = [image]
    if case == "missing-model":
        model = tmp_path / "absent.onnx"
    elif case == "not-onnx":
        model = tmp_path / "model.onnx"
        model.write_text("not a model")
        extra = ["--labels", digits_export / "app" / "labels.json"]
    elif case == "wrong-contract":
        model = digits_export / "model.onnx"  # the float model: input 'input' float32
        extra = ["--labels", digits_export / "app" / "labels.json"]
    elif case == "not-an-image":
        (tmp_path / "notes.txt").write_text("hello")
        inputs = [tmp_path / "notes.txt"]
    elif case == "blank":
        Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
        inputs = [tmp_path / "blank.png"]
    elif case == "bad-raw":
        (tmp_path / "raw.bin").write_bytes(b"\x00" * 1000)
        inputs = ["--raw", tmp_path / "raw.bin"]
    elif case == "no-labels":
        shutil.copy(model, tmp_path / "model.onnx")
        model = tmp_path / "model.onnx"
    r = run_node(node, "--model", model, *extra, *inputs)
    assert r.returncode == 1, (r.stdout, r.stderr)
    message = r.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and "at " not in message.split(":", 1)[1][:5]
    fragment = {"missing-model": "no such file", "not-onnx": "not a loadable ONNX model",
                "wrong-contract": "expected the app-ready model", "not-an-image": "not a PNG image",
                "blank": "blank", "bad-raw": "not a whole number of 28x28", "no-labels": "labels.json"}[case]
    assert fragment in message


@pytest.mark.node
def test_node_usage_errors_exit_2(node):
    assert run_node(node).returncode == 2
    assert run_node(node, "--model").returncode == 2
    assert run_node(node, "--model", "m.onnx", "--top-k", "0", "x.png").returncode == 2


# ---- the browser page


def _ellipse(cx, cy, rx, ry, n=40):
    return [[cx + rx * math.cos(2 * math.pi * i / n), cy + ry * math.sin(2 * math.pi * i / n)] for i in range(n + 1)]


DRAWINGS = [
    {"name": "0", "strokes": [_ellipse(140, 140, 55, 85)]},
    {"name": "1", "strokes": [[[140, 40], [140, 240]]]},
    {"name": "7", "strokes": [[[70, 50], [210, 50], [120, 245]]]},
    {"name": "4", "strokes": [[[170, 40], [80, 170], [210, 170]], [[170, 100], [170, 250]]]},
]


def run_page(chromium, app: Path, **config) -> dict:
    """The page served with the app bundle `app`, driven by e2e.mjs in headless Chromium with `config` (raw,
    drawings, screenshot): what the page computed, checked to have logged no error."""
    from mnistkit.serve import serve_in_background

    server, url = serve_in_background(app)
    try:
        r = subprocess.run(["node", str(WEB_DIR / "e2e.mjs"), json.dumps({"url": url, **config})], capture_output=True,
                           text=True, timeout=240, env={**os.environ, "CHROMIUM": chromium}, cwd=WEB_DIR)
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert not [c for c in out["console"] if c.startswith(("error", "pageerror"))], out["console"]
    return out


@pytest.mark.browser
def test_page_in_headless_chromium(chromium, digits_export, raw_images, python_probabilities, tmp_path):
    shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "page.png"
    out = run_page(chromium, digits_export / "app", raw=str(raw_images[1]), drawings=DRAWINGS, screenshot=str(shot),
                   screenshotOf="7")
    # an empty canvas asks for a digit instead of guessing
    assert out["initial"] == "draw a digit" and out["afterClear"] == "draw a digit"
    assert out["emptyCanvas"] == "draw a digit"
    # the page's onnxruntime-web gives Python's answers on the same 200 raw images
    page_probs = np.array(out["raw"], np.float64)
    assert page_probs.shape == (200, 10)
    assert (page_probs.argmax(1) == python_probabilities.argmax(1)).all()
    assert np.abs(page_probs - python_probabilities).max() <= 1e-5
    # digits drawn with the mouse: the page predicts them, and Python agrees on the page's own pixels
    with create_backend(digits_export / "app" / "model.onnx") as b:
        for d in out["drawings"]:
            assert d["label"] == d["name"] == d["shown"], d["name"]
            pixels = np.array(d["pixels"], np.uint8).reshape(1, 28, 28)
            assert pixels.max() > 200 and pixels[0, 0, 0] == 0  # light ink on black, as in MNIST
            assert str(b.run(pixels).argmax(1)[0]) == d["label"]
    assert shot.exists() and shot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.browser
def test_serve_demo_checks_its_model(digits_export, chromium):
    from mnistkit.errors import ArtifactError, InvalidInputError
    from mnistkit.serve import make_server, resolve_model

    model, contract = resolve_model(digits_export)  # an export folder: its app/
    assert model == digits_export / "app" / "model.onnx" and contract["preprocess"] == "digits"
    model, contract = resolve_model(digits_export / "model-app.onnx")  # no labels.json beside: from metadata
    assert contract["labels"] == [str(d) for d in range(10)]
    with pytest.raises(ArtifactError, match="needs the app-ready model"):
        resolve_model(digits_export / "model.onnx")
    with pytest.raises(InvalidInputError, match="no app-ready model there"):
        resolve_model(digits_export / "absent")
    server = make_server(digits_export, port=0, quiet=True)
    try:
        import threading
        import urllib.request

        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(base + "/model/labels.json") as resp:
            assert json.loads(resp.read())["labels"][0] == "0"
        with urllib.request.urlopen(base + "/vendor/ort-wasm-simd-threaded.wasm") as resp:
            assert resp.headers["Content-Type"] == "application/wasm"
        with urllib.request.urlopen(base + "/") as resp:
            assert b"Draw a digit" in resp.read()
    finally:
        server.shutdown()
