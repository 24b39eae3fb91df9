"""The edge runtimes' own promises: LiteRT's batch-free conversion, metadata, full-integer models and
int8 selection; ExecuTorch int8; OpenVINO IR as a two-file artifact. (Parity of every format on every
runtime that opens it is tests/test_formats.py's matrix; the backend contract is tests/test_backends.py's.)"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import need_module, side_by_side, swap_writer
from mnistkit.artifacts import detect_kind, kind_metadata
from mnistkit.backends import create_backend
from mnistkit.backends.litert import INTERPRETERS, BareLiteRT, LiteRTBackend, read_metadata
from mnistkit.errors import ArtifactError, ExportError
from mnistkit.exporter import export_model
from mnistkit.formats import FORMATS, tolerance_for
from mnistkit.formats import litert as litert_fmt
from mnistkit.model import MLP

LITERT = FORMATS["litert"]


def pixels(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


# ---- LiteRT


def test_litert_file_is_recognised_and_describes_itself(tiny_export):
    path = tiny_export / "model.tflite"
    assert path.read_bytes()[4:8] == b"TFL3" and detect_kind(path) == "litert"
    meta = read_metadata(path)
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    assert meta["format"] == "litert" and meta["labels"] == manifest["labels"]
    assert meta["normalization"] == manifest["normalization"] and meta["source_sha256"] == manifest["source"]["sha256"]
    assert kind_metadata(path, "litert") == meta


def test_litert_batch_is_dynamic_in_the_file(tiny_export):
    from ai_edge_litert.interpreter import Interpreter

    inp = Interpreter(model_path=str(tiny_export / "model.tflite")).get_input_details()[0]
    assert list(inp["shape_signature"]) == [-1, 1, 28, 28] and list(inp["shape"]) == [1, 1, 28, 28]


def test_litert_runs_any_batch_size_beyond_its_own_interpreters(tiny_export, tiny_ckpt):
    """The first INTERPRETERS sizes get their own interpreter; later ones share one that is resized."""
    x = pixels(40, seed=1)
    sizes = list(range(1, INTERPRETERS + 4)) + [1, 3, 40]
    atol = tolerance_for("litert", "cpu").max_abs
    with create_backend(tiny_export / "model.tflite") as b, create_backend(tiny_ckpt) as ref:
        for n in sizes:
            np.testing.assert_allclose(b.run(x[:n]), ref.run(x[:n]), atol=atol, rtol=0)
        assert len(b._runners) == INTERPRETERS
        first = b.run(x[:7])
        assert b.run(x[:7]) is not first  # fresh memory every call
        np.testing.assert_array_equal(b.run(x[:7]), first)


def test_litert_refuses_a_graph_that_depends_on_the_batch():
    """A graph whose values use the batch size (not only its shapes) cannot be made batch-free: refused,
    with the reason, instead of a file that is silently wrong at other batch sizes."""

    class CountsItsBatch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)) * float(x.shape[0])

    m = CountsItsBatch().eval()
    a, b = (litert_fmt._convert(LITERT, m, torch.zeros(n, 1, 28, 28)) for n in litert_fmt.BATCHES)
    with pytest.raises(ExportError, match="depends on the batch size beyond its batch axis"):
        litert_fmt.batch_free(LITERT, a, b)


def test_litert_from_elsewhere_fixed_batch_and_no_metadata(tmp_path):
    import litert_torch

    plain = tmp_path / "plain.tflite"
    plain.write_bytes(litert_torch.convert(MLP().eval(), (torch.zeros(2, 1, 28, 28),)).model_content())
    with create_backend(plain) as b:
        assert not b.info.described and b.info.labels == list("0123456789") and b.info.fixed_batch == 2
        assert b.run(np.zeros((5, 1, 28, 28), np.float32)).shape == (5, 10)  # 3 calls of its 2, the last padded
    bare = BareLiteRT(plain, 1).call_for(np.zeros((5, 1, 28, 28), np.float32))
    assert [o.shape for o in bare()] == [(2, 10)] * 3


def test_litert_metadata_is_bounded_and_checked(tiny_export, tmp_path):
    model = litert_fmt._model_t((tiny_export / "model.tflite").read_bytes())
    huge = tmp_path / "huge.tflite"
    huge.write_bytes(litert_fmt.with_metadata(model, {"labels": ["x" * (2 << 20)]}))
    with pytest.raises(ArtifactError, match=r"huge\.tflite: malformed mnistkit metadata entry .*over 1 MiB"):
        read_metadata(huge)
    listed = tmp_path / "list.tflite"
    listed.write_bytes(litert_fmt.with_metadata(litert_fmt._model_t(huge.read_bytes()), [1, 2]))
    with pytest.raises(ArtifactError, match="not a JSON object"):
        create_backend(listed).load()


@pytest.mark.parametrize("seed", range(6))
def test_litert_damaged_files_are_one_line(tiny_export, tmp_path, seed):
    """Bytes flipped in the flatbuffer's tables, truncation, garbage: one ArtifactError line naming the file,
    never a crash (LiteRT verifies the flatbuffer; mnistkit's metadata reader checks every offset)."""
    src = bytearray((tiny_export / "model.tflite").read_bytes())
    rng = np.random.default_rng(seed)
    if seed == 0:
        data = bytes(src[: len(src) // 3])
    elif seed == 1:
        data = bytes(src[:64]) + bytes(range(256)) * 40
    else:
        for pos in rng.integers(len(src) - 30000, len(src), 8).tolist() + rng.integers(0, 2048, 4).tolist():
            src[pos] = int(rng.integers(0, 256))
        data = bytes(src)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(data)
    code = ("import sys, numpy as np\nfrom mnistkit.backends import create_backend\nfrom mnistkit.errors import ArtifactError\n"
            "try:\n    b = create_backend(sys.argv[1]).load(); b.run(np.zeros((3, 28, 28), np.uint8)); print('ran')\n"
            "except ArtifactError as e:\n    print('refused', e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]  # no crash, no traceback
    assert r.stdout.startswith(("ran", f"refused {bad}: ")) and r.stdout.count("\n") == 1
    if seed < 2:
        assert r.stdout.startswith("refused")


def test_litert_full_integer_model_runs_with_its_own_scales(tiny_export, tiny_data, tmp_path):
    """ai-edge-quantizer's full-integer recipe gives int8 input and output with a scale and zero point: the
    backend quantizes the input and dequantizes the logits with the file's parameters, on run's fast path (floats)
    and its general path (pixels) alike, and the bare baseline does the same arithmetic, logits out."""
    from mnistkit.data import load_split
    from mnistkit.pixels import pixels_to_float

    meta = read_metadata(tiny_export / "model.tflite")
    mean, std = meta["normalization"]["mean"][0], meta["normalization"]["std"][0]
    train = load_split("mnist", "train", tiny_data, download=False)
    calib = pixels_to_float(train.images[:256], mean, std)
    data = litert_fmt._quantize((tiny_export / "model.tflite").read_bytes(), "static_wi8_ai8", calib, "args_0")
    full = tmp_path / "full.tflite"
    full.write_bytes(litert_fmt.with_metadata(litert_fmt._model_t(data), meta))
    test = load_split("mnist", "test", tiny_data, download=False)
    with LiteRTBackend(full) as q, create_backend(tiny_export / "model.tflite") as f:
        assert q._quantize is not None and q._out_q is not None  # the int8 I/O path
        got, want = q.run(test.images), f.run(test.images)
        assert got.dtype == np.float32 and (got.argmax(1) == want.argmax(1)).mean() >= 0.9
        assert np.abs(got - want).max() < 0.5 * np.abs(want).max()
        x = pixels_to_float(test.images[:8], mean, std)
        bare = BareLiteRT(full, 1).call_for(x)()
        assert bare.dtype == np.float32
        np.testing.assert_allclose(bare, q.run(x), rtol=0, atol=1e-6)
        scale, zero = q._out_q
        np.testing.assert_array_equal(q.run(x), q.unchecked()(x))  # the fast path: the unchecked call, checked
        np.testing.assert_allclose(q.run(test.images[:8]), q.run(x), rtol=0, atol=1e-6)  # pixels: the general path
        assert scale > 0 and np.all(np.abs(np.round(q.run(x) / scale) * scale - q.run(x)) < 1e-4)  # on its grid


def test_litert_int8_chooses_by_held_out_accuracy_and_records_it(tiny_export):
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == "litert-int8")
    q = entry["quantization"]
    scores = q["selection_accuracy"]
    assert set(scores) == set(litert_fmt.RECIPES) and q["tool"] == "ai-edge-quantizer"
    best = max(scores.values())
    assert scores[q["recipe"]] >= best - litert_fmt.SELECTION_TIE
    if abs(scores["dynamic_wi8_afp32"] - scores["static_wi8_ai8"]) <= litert_fmt.SELECTION_TIE:
        assert q["recipe"] == "dynamic_wi8_afp32"  # a tie goes to float I/O, nothing calibrated
    # the accuracy it records is the accuracy export validation measured on the same file
    assert entry["test_accuracy"] == pytest.approx(entry["validation"]["accuracy"], abs=1e-9)


PREDICT_THEN = (
    "import sys, json\n"
    "from mnistkit.cli import main\n"
    "sys.argv = ['mnistkit', 'predict', sys.argv[1], sys.argv[2], '--json']\n"
    "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
)


def predict_then(model, tmp_path, after: str) -> dict:
    """`mnistkit predict MODEL x.png --json` in a fresh interpreter, then `after` (Python that writes one JSON
    object to stderr about the process): that object, once the prediction's own output was checked."""
    from PIL import Image

    Image.fromarray(pixels(1)[0]).save(tmp_path / "x.png")
    r = subprocess.run([sys.executable, "-c", PREDICT_THEN + after, str(model), str(tmp_path / "x.png")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["predictions"][0]["label"]
    return json.loads(r.stderr.strip().splitlines()[-1])


def test_edge_runtimes_run_without_torch(tiny_export, tmp_path):
    """LiteRT and OpenVINO IR files run with the runtime alone: predict imports neither torch nor onnx."""
    modules = "sys.stderr.write(json.dumps({m: m in sys.modules for m in ('torch', 'torchvision', 'onnx', 'litert_torch')}))\n"
    for model in ("model.tflite", "model-int8.tflite", "model.xml"):
        imported = predict_then(tiny_export / model, tmp_path, modules)
        assert imported == {"torch": False, "torchvision": False, "onnx": False, "litert_torch": False}, model


def test_predict_on_a_pte_loads_the_runtime_not_the_compiler(tiny_export, tmp_path):
    """The runtime needs torch (its bindings link libtorch) but not executorch.exir, the compiler its Python module
    imports for one warning class (8 of the 14 s a .pte predict took); the compiler still imports afterwards."""
    after = ("compiler = 'executorch.exir' in sys.modules\n"
             "from executorch.exir import to_edge_transform_and_lower\n"
             "sys.stderr.write(json.dumps({'compiler_imported_by_predict': compiler}))\n")
    assert predict_then(tiny_export / "model.pte", tmp_path, after) == {"compiler_imported_by_predict": False}


# ---- ExecuTorch int8


def test_executorch_int8_is_quantized_and_records_what_validation_measured(tiny_export):
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == "executorch-int8")
    assert entry["quantization"]["calibration"]["images"] > 0 and "XNNPACKQuantizer" in entry["quantization"]["tool"]
    assert entry["test_accuracy"] == pytest.approx(entry["validation"]["accuracy"], abs=1e-9)
    assert entry["bytes"] < 0.4 * next(a for a in manifest["artifacts"] if a["format"] == "executorch")["bytes"]
    assert entry["validation"]["passed"] and entry["max_batch"] == 1024
    # measured on the lowered program, then written into that program's own metadata (not lowered again)
    assert kind_metadata(tiny_export / "model-int8.pte", "executorch")["test_accuracy"] == entry["test_accuracy"]


def test_a_measured_value_is_written_into_the_program_in_place_or_not_at_all():
    from mnistkit.formats.executorch import ROOM, _refill

    old, new = {"format": "executorch-int8", "test_accuracy": None}, {"format": "executorch-int8", "test_accuracy": 0.875}
    blob = (json.dumps(old) + " " * ROOM).encode()
    data = b"program" + blob + b"rest"
    out = _refill(data, old, new)
    assert len(out) == len(data) and out.startswith(b"program") and out.endswith(b"rest")
    assert json.loads(out[7:-4]) == new  # JSON's own whitespace fills the rest of the room
    assert _refill(data + blob, old, new) is None  # twice: which copy is the metadata is not known
    assert _refill(data, old, {**new, "note": "x" * ROOM}) is None  # more than the room: lowered again instead


# ---- OpenVINO IR: one artifact in two files


def test_openvino_ir_is_two_files_listed_together(tiny_export):
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == "openvino")
    assert entry["file"] == "model.xml" and [c["file"] for c in entry["companions"]] == ["model.bin"]
    assert detect_kind(tiny_export / "model.xml") == "openvino-ir"
    meta = kind_metadata(tiny_export / "model.xml", "openvino-ir")
    assert meta["format"] == "openvino" and meta["labels"] == manifest["labels"]
    with create_backend(tiny_export / "model.xml") as b:
        assert b.info.format == "openvino" and b.info.described


def test_no_runtime_phones_home_or_writes_in_home(tiny_ckpt, tiny_data, tmp_path):
    """`import openvino` sends a usage event and writes ~/intel/; `import onnxruntime` (1.31, Linux) writes a
    device id and an event queue under ~/.cache/Microsoft/: each unless the user opted out, and OpenVINO's only
    stops by itself under CI=true, so CI is unset here. An export to ONNX and IR, validated by ONNX Runtime and
    OpenVINO (both imported and run), writes nothing in HOME."""
    need_module("openvino", "openvino")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL", "ORT_DISABLE_TELEMETRY")}
    homes = {name: tmp_path / name for name in ("plain", "mnistkit")}
    for home in homes.values():
        home.mkdir()
    commands = {"plain": [sys.executable, "-c", "import openvino, onnxruntime"],
                "mnistkit": [sys.executable, "-m", "mnistkit", "export", str(tiny_ckpt), "--format", "onnx,openvino",
                             "--data-dir", str(tiny_data), "--out-dir", str(tmp_path / "o")]}
    plain, r = side_by_side(lambda name: subprocess.run(commands[name], env={**env, "HOME": str(homes[name])},
                                                        capture_output=True, text=True, timeout=300), commands)
    assert plain.returncode == 0, plain.stderr
    assert (homes["plain"] / "intel").is_dir() and (homes["plain"] / ".cache" / "Microsoft").is_dir(), \
        "the telemetry this guards against is gone: drop the guard"
    assert r.returncode == 0 and "fork" not in r.stderr, r.stderr  # OpenVINO sends from a forked process
    assert list(homes["mnistkit"].iterdir()) == []


def test_openvino_ir_weights_are_checked_against_the_manifest(tiny_export, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny_export, folder)
    weights = bytearray((folder / "model.bin").read_bytes())
    weights[100] ^= 0xFF
    (folder / "model.bin").write_bytes(bytes(weights))
    with pytest.raises(ArtifactError, match=r"model\.bin: sha256 .* does not match"):
        create_backend(folder / "model.xml")
    (folder / "model.bin").unlink()
    with pytest.raises(ArtifactError, match=r"model\.bin: listed in .*manifest\.json but missing"):
        create_backend(folder / "model.xml")


def test_a_failed_ir_leaves_neither_file(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    def half_written(src, fmt, tmp, ctx):
        tmp.write_text("<?xml")
        tmp.with_suffix(".bin").write_bytes(b"\0" * 10)
        raise ExportError("openvino: interrupted")

    swap_writer(monkeypatch, "openvino", half_written)
    result = export_model(tiny_ckpt, "onnx,openvino", out_dir=tmp_path / "out", data_dir=tiny_data, raise_on_failure=False)
    assert not result.passed and [v.format for v in result.validation if not v.passed] == ["openvino"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "model.onnx"]


def test_ir_is_carried_over_with_its_weights(tiny_ckpt, tiny_data, tmp_path):
    out = tmp_path / "out"
    export_model(tiny_ckpt, "openvino", out_dir=out, data_dir=tiny_data)
    bin_sha = json.loads((out / "manifest.json").read_text())["artifacts"][0]["companions"][0]["sha256"]
    export_model(tiny_ckpt, "litert", out_dir=out, data_dir=tiny_data)  # a second export into the folder
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["format"] for a in manifest["artifacts"]] == ["openvino", "litert"]
    assert manifest["artifacts"][0]["companions"][0]["sha256"] == bin_sha and (out / "model.bin").is_file()
    with create_backend(out / "model.xml") as b:
        assert b.run(pixels(2)).shape == (2, 10)


def test_ir_from_elsewhere_and_hostile_xml(tiny_export, tmp_path):
    import openvino as ov

    plain = tmp_path / "plain.xml"
    ov.save_model(ov.convert_model(str(tiny_export / "model.onnx")), str(plain), compress_to_fp16=False)
    with create_backend(plain) as b:  # OpenVINO keeps the ONNX file's metadata_props, but no mnistkit entry
        assert not b.info.described and b.run(pixels(3)).shape == (3, 10)
    laughs = tmp_path / "laughs.xml"
    entities = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 12))
    laughs.write_text(f'<?xml version="1.0"?><!DOCTYPE net [<!ENTITY e0 "ha">{entities}]>'
                      '<net><rt_info><mnistkit value="&e11;"/></rt_info></net>')
    broken = tmp_path / "broken.xml"
    broken.write_text('<?xml version="1.0"?><net><rt_info><mnistkit value="{')
    for path in (laughs, broken):
        with pytest.raises(ArtifactError, match=f"{path.name}: "):
            kind_metadata(path, "openvino-ir")
