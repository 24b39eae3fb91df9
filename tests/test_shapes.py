"""Small vision models of other input shapes (issue 23): C x H x W found from the user's script or --input-shape,
recorded in every artifact, followed by export, verify and predict; images prepared by the recorded transforms.

The three users (tests/fixtures/shapes_scripts.py, made by shapes_make.py beside the tests): LeNet-5 on MNIST padded
to 32x32, a CIFAR-style 3x32x32 net on an ImageFolder of colour digits, torchvision's resnet18 with a 1-channel
stem built by a factory function with --model-args. Each is trained on the real MNIST sample and exported (every
format for LeNet-5 and the colour net; conftest.SHAPES says why resnet18 takes the float formats), and every
artifact must give the user's model's answers on the user's own preprocessing
(torchvision's transforms from the user's script, run here, outside mnistkit)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, SHAPES, cli_in_process, cli_run
from mnistkit import ModelSpec
from mnistkit.errors import ArtifactError, DataError
from mnistkit.formats import FORMATS, parse_formats
from mnistkit.steps import apply_steps
from mnistkit.pixels import Geometry

pytestmark = pytest.mark.realdata
WEB_DIR = ROOT / "examples" / "web"


def _users_model(folder: Path, which: str):
    """(the user's module, the user's model with its trained weights) — what the user has, not what mnistkit built."""
    weights, model_class, _, _ = SHAPES[which]
    script, name = model_class.split(":")
    spec = importlib.util.spec_from_file_location(f"users_{which}", folder / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, name)(**({"num_classes": 10} if which == "resnet" else {}))
    model.load_state_dict(torch.load(folder / weights, weights_only=True))
    return module, model.eval()


def _users_answers(folder: Path, which: str) -> tuple[list[Path], np.ndarray]:
    """The PNG files and the user's model's logits on them through the user's own transforms (as an ImageFolder
    or torchvision dataset loads them: RGB for the colour net, gray "L" for the MNIST ones)."""
    module, model = _users_model(folder, which)
    pngs = sorted((folder / "png").glob("*.png"))
    with torch.no_grad():
        batch = torch.stack([module.transform(Image.open(p).convert("RGB" if which == "cifar" else "L")) for p in pngs])
        return pngs, model(batch).numpy()


def test_every_format_of_lenet5_on_padded_digits_is_the_users_model(lenet_export):
    _every_format_is_the_users_model(*lenet_export, "lenet", [1, 32, 32])


def test_every_format_of_a_colour_net_is_the_users_model(cifar_export):
    _every_format_is_the_users_model(*cifar_export, "cifar", [3, 32, 32])


def test_every_format_of_resnet18_by_factory_is_the_users_model(resnet_export):
    _every_format_is_the_users_model(*resnet_export, "resnet", [1, 28, 28])


def _every_format_is_the_users_model(folder: Path, export, which: str, shape: list[int]) -> None:
    assert export.returncode == 0, export.stderr[-3000:]
    result = json.loads(export.stdout)
    out = folder / "models" / SHAPES[which][0].removesuffix(".pth")
    assert {a["format"] for a in result["artifacts"]} == set(parse_formats(SHAPES[which][3])) and result["passed"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["input_shape"] == shape
    # every artifact records the input it takes: floats [N,C,H,W], app pixels [N,H,W] or [N,H,W,C]
    for a in result["artifacts"]:
        info = json.loads(cli_in_process("inspect", out / a["file"], "--json", cwd=folder).stdout)
        tail = shape[1:] + ([3] if shape[0] == 3 else []) if FORMATS[a["format"]].app else shape
        assert info["input"]["shape"][1:] == tail, (a["file"], info["input"])

    pngs, users = _users_answers(folder, which)
    from mnistkit.predict import predict

    for a in result["artifacts"]:
        got = predict(out / a["file"], pngs, top_k=1)["predictions"]
        labels = [p["label"] for p in got]
        expected = [manifest["labels"][i] for i in users.argmax(1)]
        agree = np.mean([x == y for x, y in zip(labels, expected)])
        assert agree >= (0.9 if "int8" in a["format"] else 1.0), (a["file"], labels, expected)
        if "int8" not in a["format"] and "fp16" not in a["format"]:  # float formats: the same probabilities
            probs = np.array([[p["probabilities"][lab] for lab in manifest["labels"]] for p in got])
            e = np.exp(users - users.max(1, keepdims=True))
            np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), atol=1e-4, err_msg=a["file"])


def test_verify_follows_the_recorded_shape_and_data(lenet_export, cifar_export):
    for which, (folder, export) in (("lenet", lenet_export), ("cifar", cifar_export)):
        _verify(folder, export, which)


def _verify(folder: Path, export, which: str) -> None:
    assert export.returncode == 0, export.stderr[-3000:]
    out = folder / "models" / SHAPES[which][0].removesuffix(".pth")
    r = cli_in_process("verify", out, "--limit", "200", "--json", cwd=folder)
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["passed"], r.stderr
    assert report["images"] == 200 and len(report["pairs"]) >= 20
    assert report["reference"]["accuracy"] > 0.7  # the real test digits, prepared as the user's script does


def test_what_is_found_and_what_is_assumed_is_said(lenet_export, cifar_export):
    from mnistkit import AssumptionWarning
    from mnistkit.source import load_source

    said = []
    folder = lenet_export[0]
    load_source(folder / "lenet.pth", ModelSpec(model_class=f"{folder / 'lenet.py'}:LeNet5"), log=said.append)
    assert "input: 1x32x32 (from the transforms at lenet.py:7)" in said
    said.clear()
    folder = cifar_export[0]
    with pytest.warns(AssumptionWarning, match="input: 3x32x32 assumed"):
        load_source(folder / "cifar.pth", ModelSpec(model_class=f"{folder / 'cifar.py'}:Net"), data_dir=folder / "data",
                    log=said.append)
    assert "input: 3x32x32 assumed (the first of 1x28x28, 1x32x32, 3x32x32, 3x28x28 the model accepts); pass " \
           "--input-shape C,H,W if it was trained on another size" in said
    assert f"labels: the class folders of {folder / 'data'} (eight, five, four, nine, ...)" in said


def test_the_colour_nets_labels_are_its_class_folders(cifar_export):
    folder, export = cifar_export
    assert export.returncode == 0, export.stderr[-3000:]
    manifest = json.loads((folder / "models" / "cifar" / "manifest.json").read_text())
    assert manifest["source"]["input_shape_origin"] == "probed"  # the script does not say: the first it accepts
    assert manifest["labels"] == sorted(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    assert manifest["normalization"] == {"mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616]}


def test_the_lenet_transforms_are_read_from_the_script(lenet_export):
    folder, export = lenet_export
    assert export.returncode == 0, export.stderr[-3000:]
    manifest = json.loads((folder / "models" / "lenet" / "manifest.json").read_text())
    assert manifest["source"]["input_shape_origin"] == "lenet.py:7"
    meta = json.loads(cli_in_process("inspect", folder / "models" / "lenet" / "model.onnx", "--json",
                                     cwd=folder).stdout)
    assert meta["metadata"]["transforms"] == [["pad", 2]]


# ---- the steps, as torchvision does them


@pytest.mark.parametrize("steps, geometry", [
    ([("pad", 2)], Geometry(1, 32, 32)),
    ([("resize", 32)], Geometry(1, 32, 32)),
    ([("resize", (20, 24)), ("crop", (16, 16))], Geometry(1, 16, 16)),
    ([("crop", 32)], Geometry(1, 32, 32)),  # larger than the image: padded, as CenterCrop pads
    ([("gray", 3), ("pad", 1)], Geometry(3, 30, 30)),
])
def test_steps_are_torchvisions_transforms(steps, geometry):
    from torchvision import transforms as T

    names = {"pad": T.Pad, "resize": T.Resize, "crop": T.CenterCrop, "gray": lambda n: T.Grayscale(n)}
    pipeline = T.Compose([names[k](v) for k, v in steps])
    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 256, (28, 28), dtype=np.uint8), rng.integers(0, 256, (27, 31), dtype=np.uint8)):
        theirs = np.asarray(pipeline(Image.fromarray(image)))
        if steps[0][0] == "resize" and isinstance(steps[0][1], int) and image.shape != (28, 28):
            with pytest.raises(DataError, match="the model takes 32x32"):  # Resize(32) keeps the aspect ratio
                apply_steps(image[None], steps, geometry)
            assert theirs.shape[:2] != (32, 32)
            continue
        if theirs.shape[:2] != (geometry.height, geometry.width):
            continue
        np.testing.assert_array_equal(apply_steps(image[None], steps, geometry)[0], theirs)


def test_colour_images_to_a_gray_model_are_made_gray_as_pil_does():
    rgb = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    gray = apply_steps(rgb, [], Geometry(1, 8, 8))
    np.testing.assert_array_equal(gray, np.stack([np.asarray(Image.fromarray(a).convert("L")) for a in rgb]))


# ---- flags, data folders and what is refused


def test_input_shape_and_per_channel_normalization_flags(tmp_path, monkeypatch):
    class Colour(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 16 * 16, 4)

        def forward(self, x):
            return self.fc(x.flatten(1))

    script = tmp_path / "colour.py"
    script.write_text("import torch\n\nclass Colour(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                      "        self.fc = torch.nn.Linear(3 * 16 * 16, 4)\n\n    def forward(self, x):\n"
                      "        return self.fc(x.flatten(1))\n")
    torch.manual_seed(0)
    torch.save(Colour().state_dict(), tmp_path / "c.pth")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "test-images.npy", rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8))
    np.save(tmp_path / "test-labels.npy", rng.integers(0, 4, 40))
    base = ("export", "c.pth", "--model-class", "colour.py:Colour", "--format", "onnx,onnx-app", "--json")
    r = cli_in_process(*base, "--input-shape", "3,16,16", "--mean", "0.5,0.4,0.3", "--std", "0.2,0.25,0.3",
                       "--labels", "a,b,c,d", "--data-dir", ".", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert [v["data"] for v in result["validation"]] == ["test images in ."] * 2
    manifest = json.loads((tmp_path / "models" / "c" / "manifest.json").read_text())
    assert manifest["source"]["input_shape"] == [3, 16, 16]
    assert manifest["source"]["input_shape_origin"] == "--input-shape"
    assert manifest["normalization"] == {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    # the app file normalizes per channel inside: the same logits as the float file on the same pixels
    from mnistkit.backends import create_backend

    pixels = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    with create_backend(tmp_path / "models" / "c" / "model.onnx") as f, \
            create_backend(tmp_path / "models" / "c" / "model-app.onnx") as a:
        np.testing.assert_allclose(f.run(pixels), a.run(pixels), atol=1e-5)
        x = (pixels / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.3])
        ref = Colour()
        ref.load_state_dict(torch.load(tmp_path / "c.pth", weights_only=True))
        expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))).detach().numpy()
        np.testing.assert_allclose(f.run(pixels), expected, atol=1e-5)

    for bad, said in ((("--input-shape", "4,16,16"), "4 channels; expected 1 (gray) or 3 (RGB)"),
                      (("--input-shape", "3,16"), "expected C,H,W"),
                      (("--mean", "0.1,0.2"), "expected one finite number, or three"),
                      (("--std", "0,1,1"), "std must be > 0")):
        r = cli_run(*base, *bad)
        assert r.exit_code == 2 and said in r.output, r.output
    r = cli_in_process(*base, "--input-shape", "1,16,16", "--out-dir", "o", cwd=tmp_path)
    assert r.returncode == 1 and "does not accept float [N,1,16,16] input" in r.stderr


def test_recorded_transforms_from_elsewhere_are_checked(tiny_export, tmp_path):
    import onnx

    from mnistkit.artifacts import from_onnx_props, to_onnx_props
    from mnistkit.backends import create_backend

    model = onnx.load(str(tiny_export / "model.onnx"))
    meta = from_onnx_props({p.key: p.value for p in model.metadata_props})
    for bad in ([["resize", 10 ** 9]], [["exec", 1]], "pad", [["pad", -1]]):
        meta["transforms"] = bad
        del model.metadata_props[:]
        for k, v in to_onnx_props(meta).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
        path = tmp_path / "bad.onnx"
        onnx.save(model, str(path))
        with pytest.raises(ArtifactError, match="malformed transforms metadata"):
            create_backend(path).load()


def _scored(model: Path, inputs, out: Path) -> dict[str, np.ndarray]:
    """`score` (in-process, one process: no Ray) -> {row id: probabilities}, every row without an error."""
    import pyarrow.parquet as pq

    from mnistkit.score import ScoreConfig, score

    summary = score(ScoreConfig(str(model), [str(i) for i in inputs], str(out), engine="local", shard_rows=64))
    assert summary["check"]["ok"] and summary["errors"] == 0, summary
    table = pq.read_table(out).to_pydict()
    return {i: np.array(p) for i, p in zip(table["id"], table["probabilities"])}


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_score_follows_the_recorded_shape_and_transforms(lenet_export, cifar_export, tmp_path):
    """score reads each input as the model takes it: MNIST's 28x28 digits (IDX, .npy, Parquet pixel rows) through
    LeNet-5's Pad(2), arrays already 32x32, PNGs by the recipe and the transforms, colour rows [32,32,3]; every row
    is the user's model on the user's preprocessing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mnistkit.data import load_split, write_idx

    folder, export = lenet_export
    assert export.returncode == 0, export.stderr[-3000:]
    module, model = _users_model(folder, "lenet")
    digits = load_split("mnist", "test", folder / "data" / "MNIST" / "raw").images[:150]
    with torch.no_grad():
        users = _softmax(model(torch.stack([module.transform(Image.fromarray(a, "L")) for a in digits])).numpy())
    write_idx(tmp_path / "digits-idx3-ubyte", digits)
    np.save(tmp_path / "digits28.npy", digits)
    np.save(tmp_path / "digits32.npy", np.pad(digits, ((0, 0), (2, 2), (2, 2))))
    pq.write_table(pa.table({"pixels": pa.array([a.tobytes() for a in digits], pa.binary(784))}),
                   tmp_path / "digits.parquet")
    pngs, png_logits = _users_answers(folder, "lenet")
    out = folder / "models" / "lenet"
    for artifact in ("model.onnx", "model-app.onnx"):
        rows = _scored(out / artifact, [tmp_path / "digits-idx3-ubyte", tmp_path / "digits28.npy",
                                        tmp_path / "digits32.npy", tmp_path / "digits.parquet", folder / "png"],
                       tmp_path / artifact)
        assert len(rows) == 4 * len(digits) + len(pngs)
        for name in ("digits-idx3-ubyte", "digits28.npy", "digits32.npy", "digits.parquet"):
            got = np.stack([rows[f"{tmp_path / name}[{i}]"] for i in range(len(digits))])
            np.testing.assert_allclose(got, users, atol=1e-4, err_msg=f"{artifact} on {name}")
        got = np.stack([rows[str(p)] for p in pngs])
        np.testing.assert_allclose(got, _softmax(png_logits), atol=1e-4, err_msg=f"{artifact} on the PNGs")

    # the colour net: PNGs as ImageFolder loads them (RGB), and raw [32,32,3] rows in Parquet
    folder, export = cifar_export
    assert export.returncode == 0, export.stderr[-3000:]
    pngs, png_logits = _users_answers(folder, "cifar")
    rgb = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pngs])
    pq.write_table(pa.table({"image": pa.array([a.tobytes() for a in rgb], pa.binary(32 * 32 * 3))}),
                   tmp_path / "colour.parquet")
    rows = _scored(folder / "models" / "cifar" / "model.onnx", [tmp_path / "colour.parquet", folder / "png"],
                   tmp_path / "cifar")
    for ids in ([f"{tmp_path / 'colour.parquet'}[{i}]" for i in range(len(pngs))], [str(p) for p in pngs]):
        np.testing.assert_allclose(np.stack([rows[i] for i in ids]), _softmax(png_logits), atol=1e-4)


def test_score_refuses_arrays_the_model_cannot_take_in_one_line(lenet_export, cifar_export, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((3, 40, 40), np.uint8))
    np.save(tmp_path / "gray.npy", np.zeros((3, 32, 32), np.uint8))
    cases = [(lenet_export, "lenet", "wide.npy", "array is uint8 [3, 40, 40]; expected uint8 [N,32,32] pixels (or "
              "[N,28,28] digits, which Pad(2) makes 32x32) or normalized float32 [N,1,32,32]"),
             (cifar_export, "cifar", "gray.npy", "array is uint8 [3, 32, 32]; expected uint8 [N,32,32,3] pixels or "
              "normalized float32 [N,3,32,32]")]
    for (folder, _), which, name, message in cases:
        r = cli_in_process("score", folder / "models" / which / "model.onnx", tmp_path / name, "--out",
                           tmp_path / f"o-{which}", cwd=tmp_path)
        assert r.returncode == 1 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / f"o-{which}").exists()


def test_a_data_folder_array_over_the_input_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from mnistkit.imagesets import model_split

    np.save(tmp_path / "test-images.npy", np.zeros((40, 16, 16, 3), np.uint8))  # 30 KB
    np.save(tmp_path / "test-labels.npy", np.zeros(40, np.int64))
    meta = {"input": {"dtype": "float32", "shape": ["N", 3, 16, 16]}}
    assert len(model_split("test", None, tmp_path, meta, limit=7).images) == 7
    monkeypatch.setenv("MNISTKIT_MAX_INPUT_BYTES", "10000")
    with pytest.raises(DataError, match=r"test-images.npy: .* over the .* input limit \(MNISTKIT_MAX_INPUT_BYTES"):
        model_split("test", None, tmp_path, meta)


# ---- the Node example and the browser page at other shapes


STEP_CASES = [  # (steps, the model's geometry, an input image's shape)
    ([["pad", 2]], Geometry(1, 32, 32), (28, 28)),
    ([["resize", 32]], Geometry(1, 32, 32), (28, 28)),
    ([["resize", 32]], Geometry(3, 32, 32), (28, 28, 3)),
    ([["resize", 32], ["crop", 28]], Geometry(1, 28, 28), (70, 45)),
    ([["resize", [20, 37]], ["crop", [21, 36]]], Geometry(3, 21, 36), (50, 91, 3)),
    ([["resize", 200], ["crop", 33]], Geometry(3, 33, 33), (40, 41, 3)),
    ([["crop", 31]], Geometry(1, 31, 31), (28, 28)),  # padding first, offsets rounded half to even
    ([["crop", 25]], Geometry(1, 25, 25), (28, 28)),
    ([["gray", 3]], Geometry(3, 28, 28), (28, 28, 3)),
    ([], Geometry(1, 32, 32), (32, 32, 3)),  # colour made gray by PIL's luma
    ([], Geometry(3, 32, 32), (32, 32)),  # gray repeated over three channels
]


@pytest.mark.node
def test_the_javascript_transforms_are_pythons_pixel_for_pixel(node, tmp_path):
    """examples/web/steps.mjs (Pad, Resize as Pillow's bilinear, CenterCrop, Grayscale, the model's channels) gives
    mnistkit.steps' pixels exactly: the Node example and the page see what Python's predict sees."""
    rng = np.random.default_rng(0)
    cases = []
    for steps, geometry, shape in STEP_CASES:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        want = apply_steps(img[None], [tuple(s) for s in steps], geometry)[0]
        cases.append({"data": img.reshape(-1).tolist(), "h": shape[0], "w": shape[1],
                      "c": shape[2] if len(shape) == 3 else 1, "steps": steps, "geometry": list(geometry.to_json()),
                      "want": want.reshape(-1).tolist()})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = ("import fs from 'node:fs'; import { applySteps, image } from " + json.dumps(str(WEB_DIR / "steps.mjs"))
              + "; const out = JSON.parse(fs.readFileSync(process.argv[1])).map((c) => Array.from(applySteps("
              "image(Uint8Array.from(c.data), c.w, c.h, c.c), c.steps, {channels: c.geometry[0], height: "
              "c.geometry[1], width: c.geometry[2]}))); process.stdout.write(JSON.stringify(out));")
    r = subprocess.run([node, "--input-type=module", "-e", script, str(tmp_path / "cases.json")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for case, got in zip(cases, json.loads(r.stdout)):
        assert got == case["want"], case["steps"]


def _png_pixels(folder: Path, which: str) -> np.ndarray:
    """The user's PNGs as the model's raw uint8 pixels: RGB [N,32,32,3], or the digits padded by 2 [N,32,32]."""
    pngs = sorted((folder / "png").glob("*.png"))
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB" if which == "cifar" else "L")) for p in pngs])
    return np.pad(pixels, ((0, 0), (2, 2), (2, 2))) if which == "lenet" else pixels


@pytest.mark.node
def test_node_follows_the_shape_and_transforms_in_labels_json(node, lenet_export, cifar_export, tmp_path):
    """predict.mjs on the app bundles of LeNet-5 (1x32x32: PNG digits through the digits recipe, then Pad(2)) and the
    colour net (3x32x32, the image recipe): the user's model's answers, and Python's on raw pixels."""
    from test_embedding import run_node

    for which, (folder, export) in (("lenet", lenet_export), ("cifar", cifar_export)):
        assert export.returncode == 0, export.stderr[-3000:]
        app = folder / "models" / which / "app" / "model.onnx"
        pngs, users = _users_answers(folder, which)
        r = run_node(node, "--model", app, *pngs, "--json", "--top-k", "1")
        assert r.returncode == 0, r.stderr
        probs = np.array([p["probabilities"] for p in json.loads(r.stdout)["predictions"]])  # in the labels' order
        np.testing.assert_allclose(probs, _softmax(users), atol=1e-4, err_msg=which)
        # raw pixels at the model's shape: Python's ONNX Runtime on the same bytes
        pixels = _png_pixels(folder, which)
        (tmp_path / f"{which}.bin").write_bytes(pixels.tobytes())
        r = run_node(node, "--model", app, "--raw", tmp_path / f"{which}.bin", "--json")
        assert r.returncode == 0, r.stderr
        from mnistkit.backends import create_backend

        with create_backend(app) as b:
            python = b.run(pixels)
        got = np.array([p["probabilities"] for p in json.loads(r.stdout)["predictions"]])
        np.testing.assert_allclose(got, _softmax(python), atol=1e-5, err_msg=which)

    # what the model cannot take: one line, exit 1
    folder = cifar_export[0]
    app = folder / "models" / "cifar" / "app" / "model.onnx"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "big.png")
    (tmp_path / "short.bin").write_bytes(bytes(784))
    for args, message in (([tmp_path / "big.png"], "big.png: 40x40 after no transforms; the model takes 32x32 (3x32x32)"),
                          (["--raw", tmp_path / "short.bin"], "784 bytes is not a whole number of 32x32x3 uint8 images "
                                                              "(3072 bytes each; the model takes 3x32x32)")):
        r = run_node(node, "--model", app, *args)
        assert r.returncode == 1 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.browser
def test_the_page_follows_the_shape_and_transforms(chromium, lenet_export, cifar_export, tmp_path):
    """The page sized by labels.json: LeNet-5's drawings go through the digits recipe then Pad(2) (32x32, a zero
    border), the colour net's canvas is scaled to 32x32 RGB; raw pixels give Python's answers on the same bytes."""
    from mnistkit.backends import create_backend
    from mnistkit.serve import resolve_model

    from test_embedding import DRAWINGS, run_page

    # a bare model-app.onnx (no labels.json beside it): the page's contract comes from the model's metadata
    _, contract = resolve_model(lenet_export[0] / "models" / "lenet" / "model-app.onnx")
    assert contract["input"]["shape"] == ["N", 32, 32] and contract["transforms"] == [["pad", 2]]

    for which, (folder, export), seen, tail in (("lenet", lenet_export, "32×32 (Pad(2))", (32, 32)),
                                                ("cifar", cifar_export, "32×32 RGB", (32, 32, 3))):
        assert export.returncode == 0, export.stderr[-3000:]
        app = folder / "models" / which / "app"
        pixels = _png_pixels(folder, which)
        (tmp_path / f"{which}.bin").write_bytes(pixels.tobytes())
        out = run_page(chromium, app, raw=str(tmp_path / f"{which}.bin"), drawings=DRAWINGS[:2])
        assert out["seen"] == seen and out["geometry"] == {"channels": 1 if which == "lenet" else 3, "height": 32,
                                                           "width": 32}
        with create_backend(app / "model.onnx") as b:
            np.testing.assert_allclose(np.array(out["raw"]), _softmax(b.run(pixels)), atol=1e-5, err_msg=which)
            for d in out["drawings"]:
                seen_pixels = np.array(d["pixels"], np.uint8).reshape(1, *tail)
                if which == "lenet":  # the digits recipe's 28x28, padded by 2: a zero border
                    assert seen_pixels.max() > 200 and not seen_pixels[0, :2].any() and not seen_pixels[0, :, -2:].any()
                probs = _softmax(b.run(seen_pixels))[0]
                assert d["label"] == b.info.labels[int(probs.argmax())], (which, d["name"])
                np.testing.assert_allclose(d["probabilities"], probs, atol=1e-5)


@pytest.mark.node
def test_bench_on_node_feeds_the_models_shape_and_gates_on_the_users_model(node, lenet_export, cifar_export):
    """`bench --devices node` on the app and float ONNX of both models: onnxruntime-node gets [N,32,32] and
    [N,32,32,3] pixels or [N,C,32,32] floats, and its rows pass the parity gate against the PyTorch model that
    the export folder's manifest names (the user's)."""
    from mnistkit.bench import BenchConfig, run_bench

    config = BenchConfig(batch_sizes=(1, 3), devices=("node",), backends=("onnxruntime",), threads=(1,), warmup=0.01,
                         min_time=0.01, min_reps=5)
    for which, (folder, _) in (("lenet", lenet_export), ("cifar", cifar_export)):
        out = folder / "models" / which
        result = run_bench([out / "model.onnx", out / "model-app.onnx"], config)
        rows = [r for r in result.results if r["device"] == "node" and not r.get("baseline")]
        assert {(r["file"], r["batch_size"]) for r in rows} == {(f, b) for f in ("model.onnx", "model-app.onnx")
                                                                for b in (1, 3)}, which
        for r in rows:
            assert r["status"] == "ok", (which, r.get("reason"))
            assert r["parity"]["against"] == "pytorch" and r["parity"]["top1"] == 1.0
            assert r["parity"]["max_abs"] <= 1e-4, (which, r["file"], r["parity"])


def test_verify_exports_a_colour_model_with_its_normalization_per_channel(cifar_export, tmp_path):
    """verify without artifacts exports the model first: with every channel's mean and std (it once passed the
    first channel's only, which a 3-channel model's files then recorded for all three)."""
    from mnistkit.source import load_source
    from mnistkit.verify import _export_everything

    folder = cifar_export[0]
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    spec = ModelSpec(model_class=f"{folder / 'cifar.py'}:Net", mean=mean, std=std, input_shape="3,32,32")
    src = load_source(folder / "cifar.pth", spec, data_dir=folder / "data")
    targets = _export_everything(src, tmp_path / "v", folder / "data", ["onnxruntime"], lambda m: None)
    assert targets
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert manifest["normalization"]["mean"] == list(mean) and manifest["normalization"]["std"] == list(std)
    assert manifest["artifacts"][0]["inputs"][0]["shape"][1:] == [3, 32, 32]
