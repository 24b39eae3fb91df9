"""The backend contract, for every registered backend x device x artifact it opens."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from mnistkit.artifacts import detect_kind
from mnistkit.backends import BACKENDS, backends_for, create_backend
from mnistkit.backends.base import one_at_a_time
from mnistkit.formats import FORMATS, KINDS, tolerance_for
from mnistkit.pixels import float_to_pixels, pixels_to_float
from mnistkit.errors import ArtifactError, BackendUnavailableError, InvalidInputError

# (backend, artifact file in the export folder or "checkpoint"): every backend on every float format it opens
# (the accuracy-gated int8/fp16 formats run in tests/test_formats.py's matrix), from the format table and the registry
MATRIX = [(b, "checkpoint" if f.name == "checkpoint" else f.file)
          for f in FORMATS.values() if not f.gated for b in backends_for(f.kind)]
CASES = [pytest.param(b, a, d, marks=[pytest.mark.cuda] if d == "cuda" else [], id=f"{b}-{a}-{d}")
         for b, a in MATRIX for d in BACKENDS[b].devices]


def test_every_registered_backend_is_in_the_contract_matrix():
    assert {b for b, _ in MATRIX} == set(BACKENDS)
    # every (backend, device) pair the registry declares has a case
    assert {(c.values[0], c.values[2]) for c in CASES} == {(b, d) for b, s in BACKENDS.items() for d in s.devices}


def test_registry_defaults_open_their_kind():
    for kind, spec in KINDS.items():
        assert kind in BACKENDS[spec.default_backend].opens and spec.default_backend in backends_for(kind)


def _path(tiny_export, tiny_ckpt, artifact):
    return Path(tiny_ckpt) if artifact == "checkpoint" else tiny_export / artifact


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(42).integers(0, 256, (7, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("name, artifact, device", CASES)
def test_backend_contract(name, artifact, device, tiny_export, tiny_ckpt, batch):
    path = _path(tiny_export, tiny_ckpt, artifact)
    backend = create_backend(path, name, device)
    assert backend.info is None  # construction is cheap: nothing loaded yet
    with pytest.raises(RuntimeError, match="call load"):
        backend.run(batch)
    with backend as b:
        assert b.info.kind == detect_kind(path) and b.provider
        # both input forms give the same logits
        from_pixels = b.run(batch)
        as_float = pixels_to_float(batch, b.info.mean, b.info.std)
        from_float = b.run(as_float)
        assert from_pixels.dtype == np.float32 and from_pixels.shape == (7, 10)
        np.testing.assert_allclose(from_pixels, from_float, atol=1e-5, rtol=0)
        # fresh arrays: mutating one result never changes the next
        again = b.run(batch)
        assert again is not from_pixels and not np.shares_memory(again, from_pixels)
        from_pixels[:] = 0
        np.testing.assert_array_equal(b.run(batch), again)
        # batch of one, and a non-contiguous view
        np.testing.assert_allclose(b.run(batch[:1]), again[:1], atol=1e-5, rtol=0)
        np.testing.assert_allclose(b.run(batch[::2]), again[::2], atol=1e-5, rtol=0)
        # input errors say what was expected
        for bad, fragment in [
            (batch.astype(np.float64), "expected uint8 pixels [N,28,28] or normalized float32 [N,1,28,28]"),
            (batch.astype(np.float32), "float32 [7,28,28]"),
            (batch[0], "a single image needs a batch axis"),
            (np.zeros((0, 28, 28), np.uint8), "empty batch"),
            (np.full((2, 1, 28, 28), np.nan, np.float32), "NaN or infinite"),
            (np.full((2, 1, 28, 28), np.inf, np.float32), "NaN or infinite"),
            (batch.tolist(), "expected a numpy array"),
            (np.zeros((2, 3, 28, 28), np.float32), "float32 [2,3,28,28]"),
        ]:
            with pytest.raises(InvalidInputError) as info:
                b.run(bad)
            assert fragment in str(info.value)
        # a shape the fast path has seen: its checks still hold (a NaN, a strided view of the same shape)
        native = batch if b.info.input_form == "uint8" else pixels_to_float(batch, b.info.mean, b.info.std)
        seen = b.run(native)
        strided = np.zeros((*native.shape[:-1], 2 * native.shape[-1]), native.dtype)[..., ::2]
        strided[...] = native
        assert strided.shape == native.shape and not strided.flags.c_contiguous
        np.testing.assert_array_equal(b.run(strided), seen)
        if b.info.input_form == "float":
            poisoned = native.copy()
            poisoned[3, 0, 5, 5] = np.nan
            with pytest.raises(InvalidInputError, match="NaN or infinite"):
                b.run(poisoned)
        # unchecked(): the same call without the checks, for batches already in the native form
        direct = b.unchecked()
        np.testing.assert_array_equal(direct(native), b.run(native))
        assert direct(native) is not direct(native)  # fresh arrays here too
    with pytest.raises(RuntimeError, match="call load"):
        backend.unchecked()
    # parity with the reference on the same seeded batch
    with create_backend(tiny_ckpt, "pytorch", "cpu") as ref:
        tol = tolerance_for(backend.info.format, device).max_abs
        np.testing.assert_allclose(again, ref.run(batch), atol=tol, rtol=0)
    backend.close()  # idempotent


def test_a_runtime_error_on_the_general_path_is_one_artifact_error_line(tiny_export, batch):
    """Pixels into a float model take the general path (converted, then the runtime's call): an exception the
    runtime raises there is one ArtifactError naming the file and the input, as on the fast path (MNN's SystemError
    escaped raw there before)."""
    with create_backend(tiny_export / "model.onnx", "onnxruntime", "cpu") as b:
        assert b.info.input_form == "float"

        def broken(x):
            raise SystemError("a native call returned a result with an exception set")

        b._direct = broken
        with pytest.raises(ArtifactError, match=r"model.onnx: ONNX Runtime failed running it on float32 \[7, 1, 28, "
                                                r"28\]: a native call returned"):
            b.run(batch)


def test_one_at_a_time_never_lets_two_threads_into_one_call():
    """base.one_at_a_time: the lock-free common path, and a second call made only when threads really collide."""
    made, collisions = [], []

    def make():
        me, inside = len(made), threading.Lock()
        made.append(me)

        def call(x):
            if not inside.acquire(blocking=False):
                collisions.append(me)
            try:
                time.sleep(0.0005)
                return x * 2
            finally:
                inside.release()

        return call

    call = one_at_a_time(make)
    assert [call(k) for k in range(5)] == [0, 2, 4, 6, 8] and made == [0]  # one thread: one call, reused
    barrier, results = threading.Barrier(8), {}

    def worker(k):
        barrier.wait()
        results[k] = [call(k * 100 + i) for i in range(40)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not collisions
    assert made == [0, 1]  # the second, made when two threads met, and no more
    assert results == {k: [2 * (k * 100 + i) for i in range(40)] for k in range(8)}


@pytest.mark.parametrize("name, artifact", [m for m in MATRIX if "cpu" in BACKENDS[m[0]].devices])
def test_eight_threads_get_what_serial_calls_get(name, artifact, tiny_export, tiny_ckpt):
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 256, (int(rng.integers(1, 40)), 28, 28), dtype=np.uint8) for _ in range(16)]
    with create_backend(_path(tiny_export, tiny_ckpt, artifact), name, "cpu") as b:
        serial = [b.run(x) for x in batches]
        results = [None] * len(batches)
        errors = []
        barrier = threading.Barrier(8)

        def worker(k):
            barrier.wait()
            try:
                for i in range(k, len(batches), 8):
                    results[i] = b.run(batches[i])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    for s, r in zip(serial, results):
        np.testing.assert_array_equal(s, r)


def test_pixel_float_round_trip_is_exact():
    pixels = np.resize(np.arange(256, dtype=np.uint8), (2, 28, 28))
    assert set(np.unique(pixels)) == set(range(256))  # every pixel value, 0-255
    for mean, std in [(0.1307, 0.3081), (0.2860, 0.3530), (0.0, 1.0), (0.5, 0.5), (0.1918, 0.3483)]:
        np.testing.assert_array_equal(float_to_pixels(pixels_to_float(pixels, mean, std), mean, std), pixels)


def test_the_app_graph_normalizes_like_every_backend():
    """The app-ready ONNX's normalization (formats.onnx.app_model) is pixels.scale_shift's arithmetic."""
    from mnistkit.formats.onnx import app_model

    pixels = np.resize(np.arange(256, dtype=np.uint8), (3, 28, 28))
    graph = app_model(torch.nn.Flatten(), 0.2860, 0.3530)
    logits, _ = graph(torch.from_numpy(pixels))
    np.testing.assert_array_equal(logits.numpy(), pixels_to_float(pixels, 0.2860, 0.3530).reshape(3, -1))


def test_normalization_matches_the_trainer():
    from mnistkit.train import Normalizer

    pixels = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    ours = pixels_to_float(pixels, 0.2860, 0.3530)
    trainer = Normalizer(0.2860, 0.3530)(torch.from_numpy(pixels)).numpy()
    np.testing.assert_array_equal(ours, trainer)


def test_cuda_requested_without_gpu_lists_providers(tiny_export):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendUnavailableError) as info:
        create_backend(tiny_export / "model.onnx", "onnxruntime", "cuda").load()
    message = str(info.value)
    assert "CUDA was requested but ONNX Runtime is running CPUExecutionProvider" in message
    assert "this build lists" in message and "likely cause" in message
    b = create_backend(tiny_export / "model.onnx", "onnxruntime", "cuda", allow_fallback=True).load()
    assert b.provider == "CPUExecutionProvider" and b.device == "cpu" and "allow-fallback" in b.notes[0]
    for name, artifact in [("pytorch", None), ("torchscript", "model.ts")]:
        path = artifact and tiny_export / artifact
        with pytest.raises(BackendUnavailableError, match="--device cuda"):
            create_backend(path or next(tiny_export.parent.glob("ckpt*/tiny.pt")), name, "cuda").load()


def test_backend_that_cannot_open_a_kind(tiny_export):
    with pytest.raises(InvalidInputError,
                       match=r"cannot open .* \(kind: onnx\); backends for it: " + ", ".join(backends_for("onnx"))):
        create_backend(tiny_export / "model.onnx", "torchscript")
    with pytest.raises(BackendUnavailableError, match="runs on cpu, not 'cuda'"):
        create_backend(tiny_export / "model.onnx", "onnx-reference", "cuda")


# ---- models from elsewhere


def _foreign_onnx(tmp_path, tiny_ckpt, name, shape, input_name="Input3", dynamic=False):
    """An ONNX file like the model zoo's: no mnistkit metadata, its own names, maybe a fixed batch."""
    from mnistkit.model import load_checkpoint

    model = load_checkpoint(tiny_ckpt).build()

    class Reshaped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m(x.reshape(x.shape[0], 1, 28, 28))

    path = tmp_path / name
    kwargs = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},)} if dynamic else {}
    torch.onnx.export(Reshaped().eval(), (torch.zeros(*shape),), str(path), dynamo=True, external_data=False,
                      input_names=[input_name], output_names=["Plus214_Output_0"], verbose=False, **kwargs)
    m = onnx.load(str(path))
    del m.metadata_props[:]
    onnx.save(m, str(path))
    return path, model


@pytest.mark.parametrize("backend", backends_for("onnx"))
def test_fixed_batch_foreign_model_runs_by_splitting(tmp_path, tiny_ckpt, backend):
    path, model = _foreign_onnx(tmp_path, tiny_ckpt, "mnist-12-like.onnx", (1, 1, 28, 28))
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    with create_backend(path, backend) as b:
        assert b.info.fixed_batch == 1 and b.info.labels == [str(d) for d in range(10)]
        assert not b.info.described and b.info.input_name == "Input3"
        out = b.run(x)
        np.testing.assert_array_equal(b.unchecked()(pixels_to_float(x, 0.0, 1.0)), out)  # split the same way
    # no metadata: ToTensor scaling (pixels / 255) is assumed
    with torch.no_grad():
        expected = model(torch.from_numpy(x.astype(np.float32)[:, None] / 255)).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)


def test_flat_784_input_model(tmp_path, tiny_ckpt):
    path, _ = _foreign_onnx(tmp_path, tiny_ckpt, "flat.onnx", (2, 784), "x", dynamic=True)
    with create_backend(path) as b:
        assert b.run(np.zeros((3, 28, 28), np.uint8)).shape == (3, 10)


def test_an_rgb_model_from_elsewhere_takes_colour_pixels_and_other_inputs_fit_no_contract(tmp_path):
    """Float [N,3,H,W] is the float contract at another shape: colour pixels arrive as [N,H,W,3] (images' own
    layout) and are normalized per the file's metadata (none: pixels / 255). Four channels fit neither."""
    class Rgb(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x[:, c].mean(dim=(1, 2)) for c in range(x.shape[1])], dim=1)

    def export(channels):
        path = tmp_path / f"c{channels}.onnx"
        torch.onnx.export(Rgb().eval(), (torch.zeros(2, channels, 32, 32),), str(path), dynamo=True,
                          external_data=False, verbose=False)
        return path

    rgb, four = export(3), export(4)
    pixels = np.zeros((2, 32, 32, 3), np.uint8)
    pixels[..., 1] = 255  # green
    for backend in ("onnxruntime", "onnx-reference"):
        with create_backend(rgb, backend) as b:
            assert str(b.info.geometry) == "3x32x32"
            np.testing.assert_allclose(b.run(pixels), [[0, 1, 0], [0, 1, 0]], atol=1e-6)
            with pytest.raises(InvalidInputError, match=r"expected uint8 pixels \[N,32,32,3\] or normalized float32 "
                                                        r"\[N,3,32,32\]"):
                b.run(np.zeros((2, 28, 28), np.uint8))
        with pytest.raises(ArtifactError, match=r"float32 \[N,4,32,32\], which fits neither contract"):
            create_backend(four, backend).load()


@pytest.mark.parametrize("artifact", ["model.onnx", "model.ts", "model.pt2", "model.tflite", "model.xml"])
def test_corrupt_and_truncated_artifacts(tmp_path, tiny_export, artifact):
    src = (tiny_export / artifact).read_bytes()
    truncated = tmp_path / ("t-" + artifact)
    truncated.write_bytes(src[: len(src) // 3])
    corrupt = tmp_path / ("c-" + artifact)
    corrupt.write_bytes(src[:64] + bytes(range(256)) * 40)
    for p in (truncated, corrupt):
        with pytest.raises((ArtifactError, InvalidInputError)) as info:
            b = create_backend(p)
            b.load()
        assert str(p) in str(info.value)


def test_unknown_file_kind(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(ArtifactError, match="not a model file this toolkit knows"):
        create_backend(p)


def test_onnxruntime_path_never_imports_torch(tiny_export, tmp_path):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "x.png")
    code = (
        "import sys, json\n"
        "from mnistkit.cli import main\n"
        "sys.argv = ['mnistkit', 'predict', sys.argv[1], sys.argv[2], '--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "sys.stderr.write(json.dumps({m: m in sys.modules for m in ('torch', 'torchvision', 'onnx')}))\n"
    )
    for model in ("model.onnx", "model-app.onnx"):
        r = subprocess.run([sys.executable, "-c", code, str(tiny_export / model), str(tmp_path / "x.png")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        imported = __import__("json").loads(r.stderr.strip().splitlines()[-1])
        # onnx (a core dependency, ~0.1 s) is the loading gate's reader of the graph; torch is never needed
        assert imported == {"torch": False, "torchvision": False, "onnx": True}


def test_a_missing_runtime_names_the_extra_that_installs_it(tiny_export, monkeypatch):
    import importlib.util

    from mnistkit.errors import MissingDependencyError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    for name, spec in BACKENDS.items():
        if "openvino" in spec.requires:
            with pytest.raises(MissingDependencyError, match=rf"needs openvino.*pip install 'mnistkit\[{spec.extra}\]'"):
                create_backend(tiny_export / "model.onnx", name)


# ---- ExecuTorch programs: planned input bounds, programs from elsewhere, broken files


def test_executorch_runs_batches_beyond_the_planned_input(tiny_cnn_ckpt, tiny_data, tmp_path):
    """ExecuTorch's memory planner bounded the CNN's input at 15 images (not the export's 1024): the backend
    reads the bound from the program and runs larger batches in chunks, and validation proves it."""
    from mnistkit.exporter import export_model

    result = export_model(tiny_cnn_ckpt, "executorch", out_dir=tmp_path / "cnn", data_dir=tiny_data)
    assert result.passed and result.validation[0].batch_sizes == [1, 3, 64, 1000]
    x = np.random.default_rng(0).integers(0, 256, (100, 28, 28), dtype=np.uint8)
    with create_backend(tmp_path / "cnn" / "model.pte") as b, create_backend(tiny_cnn_ckpt) as ref:
        assert b._max < 100  # the bound that forces chunks here
        np.testing.assert_allclose(b.run(x), ref.run(x), atol=tolerance_for("executorch", "cpu").max_abs, rtol=0)


def test_executorch_program_from_elsewhere_and_broken_ones(tiny_export, tmp_path):
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from mnistkit.model import MLP

    program = torch.export.export(MLP().eval(), (torch.zeros(2, 1, 28, 28),))  # no metadata, fixed batch 2
    plain = tmp_path / "plain.pte"
    plain.write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    with create_backend(plain) as b:
        assert not b.info.described and b.info.labels == list("0123456789")
        assert b.run(np.zeros((5, 1, 28, 28), np.float32)).shape == (5, 10)  # 3 chunks of its 2
    good = (tiny_export / "model.pte").read_bytes()
    for name, data in (("truncated.pte", good[: len(good) // 3]), ("garbage.pte", good[:8] + b"\x00" * 4000)):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ArtifactError, match=f"{name}: "):
            create_backend(tmp_path / name).load()


@pytest.mark.parametrize("backend", backends_for("onnx"))
def test_a_corrupt_onnx_file_is_one_line_on_every_runtime(tmp_path, backend):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07" + b"\xff" * 100)  # an ONNX-looking first byte, then garbage
    with pytest.raises(ArtifactError, match=r"bad\.onnx: ") as info:
        create_backend(bad, backend).load()
    assert "\n" not in str(info.value)
