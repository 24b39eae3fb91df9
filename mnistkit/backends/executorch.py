"""ExecuTorch's Python runtime on a `.pte` program (XNNPACK delegate), CPU.

The runtime takes torch tensors (the executorch wheel links libtorch), so this backend needs torch.
Loading a program parses its flatbuffer and runs no Python from it; its metadata is a constant method
(see formats/executorch.py).

- The program's input buffer is planned for a maximum batch (the export's range, sometimes lower): larger
  batches run in chunks of it. A program exported at a fixed batch (from elsewhere) takes only that
  size: the runtime says no other, so at load one call at batch 1 tells the two apart, and a fixed
  program's last chunk is padded (as ONNX Runtime's backend does for fixed-batch models).
- XNNPACK's thread pool is process-wide and sized at start-up (one thread per core). The runtime can
  reset it (`_unsafe_reset_threadpool`), but a program loaded before keeps a pointer to the old pool:
  that crashed the process here (a segfault in bench, measured). So the backend never resizes it: it
  reports the pool's real size as its thread count, and says so when --threads asked for another.
- One method object, one call at a time (a lock): methods are not safe to share between threads.
- Inputs are copied into a tensor kept per batch size (up to INPUT_SIZES sizes) rather than wrapped in a
  new tensor per call: the runtime took 2 us (batch 1) to 40 us (batch 64) longer on a tensor it had not
  seen before, and the copy costs 0.4 to 13 us (measured interleaved here).
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import MAX_METADATA_BYTES, ModelInfo, check_model, exact_contract, info_from_metadata
from ..errors import ArtifactError, first_line
from .base import Backend

METADATA_METHOD = "mnistkit_metadata"  # the constant method holding mnistkit's metadata (formats/executorch.py)
INPUT_SIZES = 8  # batch sizes that keep an input tensor (see the module's notes)


def _quiet_import(module: str):
    """Import an executorch runtime module without its ExperimentalWarning reaching the user, nor torch's log line
    about executorch registering an Enum with pytree (`register_constant() on Enum subclasses is deprecated`):
    printed on every import, it made every .pte command's one error line two."""
    import importlib
    import logging
    import warnings

    pytree = logging.getLogger("torch.utils._pytree")
    level = pytree.level
    pytree.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), _without_the_compiler():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    finally:
        pytree.setLevel(level)


@contextlib.contextmanager
def _without_the_compiler():
    """The runtime's Python module imports `executorch.exir._warnings` for one warning class, and that import runs
    `executorch.exir/__init__.py`: the whole compiler (8.3 of 8.5 s of importing the runtime, measured with
    -X importtime on a 2-vCPU EPYC). While the runtime is imported, that one small module (no imports but
    typing_extensions) is loaded from its own file and its package stands in as an empty placeholder, which is
    removed again: a later export imports the real compiler as usual. Nothing is replaced once the compiler is
    imported, or when the file is not where executorch 1.x keeps it."""
    import importlib.util
    import sys
    import types

    if "executorch.exir" in sys.modules or "executorch.exir._warnings" in sys.modules:
        yield
        return
    top = importlib.util.find_spec("executorch")
    source = Path(top.submodule_search_locations[0]) / "exir" / "_warnings.py" if top and \
        top.submodule_search_locations else None
    if source is None or not source.is_file():
        yield
        return
    placeholder = types.ModuleType("executorch.exir")
    placeholder.__path__ = [str(source.parent)]
    spec = importlib.util.spec_from_file_location("executorch.exir._warnings", source)
    warnings_module = importlib.util.module_from_spec(spec)
    sys.modules["executorch.exir"] = placeholder
    sys.modules["executorch.exir._warnings"] = warnings_module
    try:
        spec.loader.exec_module(warnings_module)
        yield
    finally:
        if sys.modules.get("executorch.exir") is placeholder:
            del sys.modules["executorch.exir"]
        package = sys.modules.get("executorch")
        if package is not None and getattr(package, "exir", None) is placeholder:
            delattr(package, "exir")


def load_program(path):
    """The runtime's Program for a .pte file (after the loading gate), or its bytes (a program mnistkit just
    wrote; ArtifactError when the runtime refuses it)."""
    from ..capture import captured_output

    if not isinstance(path, (bytes, bytearray)):
        check_model(path)

    Runtime = _quiet_import("executorch.runtime").Runtime

    with captured_output() as cap:  # the runtime logs to the file descriptors directly
        try:
            return Runtime.get().load_program(path if isinstance(path, (bytes, bytearray)) else Path(path))
        except Exception as exc:
            said = cap.text.strip().splitlines()
            where = "the program" if isinstance(path, (bytes, bytearray)) else path
            raise ArtifactError(f"{where}: not a loadable ExecuTorch program ({first_line(exc, 200)}"
                                + (f" [{said[-1][:160]}]" if said else "") + ")") from None


def read_metadata(path, program=None) -> dict | None:
    """mnistkit's metadata of a .pte (None when the program carries none)."""
    from ..capture import captured_output

    program = program or load_program(path)
    if METADATA_METHOD not in program.method_names:
        return None
    with captured_output():
        try:
            outputs = program.load_method(METADATA_METHOD).execute([])
        except Exception as exc:
            raise ArtifactError(f"{path}: unreadable {METADATA_METHOD} ({first_line(exc, 160)})") from None
    data = outputs[0] if outputs else None
    if data is None or str(getattr(data, "dtype", "")) != "torch.uint8" or data.numel() > MAX_METADATA_BYTES:
        raise ArtifactError(f"{path}: malformed {METADATA_METHOD} (expected a uint8 tensor of JSON, at most 1 MiB)")
    try:
        meta = json.loads(data.numpy().tobytes().decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: malformed {METADATA_METHOD} ({first_line(exc, 120)})") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: {METADATA_METHOD} is not a JSON object")
    return meta


def pool_threads() -> int:
    """The size of XNNPACK's process-wide thread pool (see the module's notes); BackendSpec.pool_size."""
    from ..capture import captured_output

    with captured_output():  # the runtime's cpuinfo probe and torch's import notes, on load
        return int(_quiet_import("executorch.extension.pybindings.portable_lib")._threadpool_get_thread_count())


def _forward(program, path):
    from ..capture import captured_output

    with captured_output():
        try:
            method = program.load_method("forward")
        except Exception as exc:
            raise ArtifactError(f"{path}: its forward method does not load ({first_line(exc, 200)})") from None
    sizes = list(method.metadata.input_tensor_meta(0).sizes())
    return method, sizes


def _is_fixed(method, sizes: list[int], dtype) -> bool:
    """Whether the program takes only its planned batch (one call at batch 1; see the module's notes)."""
    import torch

    from ..capture import captured_output

    if sizes[0] <= 1:
        return False
    with captured_output():  # the runtime logs the refused resize to the file descriptors
        try:
            method.execute([torch.zeros([1, *sizes[1:]], dtype=dtype)])
            return False
        except RuntimeError:
            return True


class ExecuTorchBackend(Backend):
    name = "executorch"
    runtime = "ExecuTorch"

    def _load(self) -> ModelInfo:
        import torch

        self._torch = torch
        program = load_program(self.path)
        info = info_from_metadata(self.path, "executorch", read_metadata(self.path, program))
        self._method, sizes = _forward(program, self.path)
        info.input_form, info.geometry = exact_contract(self.path, "input", "uint8" if info.input_form == "uint8" else
                                                        "float32", list(sizes), info.geometry if info.described else None)
        self._max = max(1, int(sizes[0]))  # the planned input's batch capacity
        self._fixed_program = _is_fixed(self._method, sizes, torch.uint8 if info.input_form == "uint8" else torch.float32)
        info.fixed_batch = self._max if self._fixed_program else None
        self._program, self._lock = program, threading.Lock()
        self._inputs: dict[int, tuple] = {}  # batch size -> (torch tensor, its numpy view)
        pool = pool_threads()
        if self.threads and self.threads != pool:
            self.notes.append(f"ExecuTorch runs on its process-wide pool of {pool} threads, not the {self.threads} "
                              "asked for (it cannot be resized safely once programs are loaded)")
        self.threads = pool
        self.provider = "executorch XNNPACK"
        return info

    def load(self):
        super().load()
        if not self._fixed_program:  # the checks inline, then straight to the program (Backend.fast_run)
            self.run = self.fast_run(None, self.run_failed, self._call_for)
        return self

    def _call_for(self, batch: np.ndarray):
        """The call for one batch size within the program's capacity, found once per shape by fast_run: `_call`
        without its per-call lookups (its kept input tensor bound, the lock taken as acquire/release, which costs
        0.26 against 0.41 us for `with` right after a runtime call: base.one_at_a_time). Other sizes: `_infer`."""
        if len(batch) > self._max:
            return self._infer
        with self._lock:
            kept = self._kept(batch)
        if kept is None:
            return self._infer
        tensor, view = kept
        execute, acquire, release, copyto, f32 = self._method.execute, self._lock.acquire, self._lock.release, \
            np.copyto, np.float32

        def call(x):
            acquire()
            try:
                copyto(view, x)
                return execute([tensor])[0].numpy().astype(f32, copy=True)  # fresh memory: the runtime reuses its own
            finally:
                release()

        return call

    def _infer(self, x: np.ndarray) -> np.ndarray:
        step = self._max
        if self._fixed_program and len(x) != step:
            from .onnxrt import fixed_batches

            return np.concatenate([self._call(part) for part in fixed_batches(x, step)])[:len(x)]
        if len(x) <= step:
            return self._call(x)
        return np.concatenate([self._call(x[i:i + step]) for i in range(0, len(x), step)])

    def _kept(self, x: np.ndarray) -> tuple | None:
        """The input tensor kept for x's batch size and its numpy view (made for the first INPUT_SIZES sizes), or
        None. Called under the lock."""
        kept = self._inputs.get(len(x))
        if kept is None and len(self._inputs) < INPUT_SIZES:
            tensor = self._torch.from_numpy(np.empty_like(x))
            kept = self._inputs[len(x)] = (tensor, tensor.numpy())
        return kept

    def _call(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            kept = self._kept(x)
            if kept is not None:
                np.copyto(kept[1], x)
                tensor = kept[0]
            else:
                tensor = self._torch.from_numpy(x)
            try:
                out = self._method.execute([tensor])[0]
            except Exception as exc:
                raise self.run_failed(exc, x) from None
            return out.numpy().astype(np.float32, copy=True)  # fresh memory: the runtime reuses its buffers

    def _close(self) -> None:
        self._method = self._program = None
        self._inputs = {}


class BareExecuTorch:
    """The bare runtime call on the same file for a new input each time, done the fastest way by hand: the
    input copied into a kept tensor, `method.execute([tensor])`, the output read."""

    def __init__(self, path, threads: int | None):
        import torch

        self.threads = pool_threads()  # the pool it really runs on, whatever was asked
        self.method, sizes = _forward(load_program(path), path)
        self.max = max(1, int(sizes[0]))
        self.fixed = _is_fixed(self.method, sizes, torch.float32 if len(sizes) == 4 else torch.uint8)

    def call_for(self, x: np.ndarray) -> Callable:
        import torch

        from .onnxrt import fixed_batches

        execute = self.method.execute
        chunks = fixed_batches(x, self.max) if self.fixed and len(x) != self.max else \
            [x[i:i + self.max] for i in range(0, len(x), self.max)]
        kept = [(c, torch.from_numpy(np.empty_like(c))) for c in chunks]
        if len(kept) == 1:  # the common case in its fewest steps
            chunk, tensor = kept[0]
            view, copyto = tensor.numpy(), np.copyto

            def one():
                copyto(view, chunk)
                return execute([tensor])[0].numpy().copy()

            return one

        def call():
            outs = []
            for chunk, tensor in kept:
                np.copyto(tensor.numpy(), chunk)
                outs.append(execute([tensor])[0].numpy().copy())
            return outs

        return call


PROBE = Path(__file__).resolve().parent.parent / "assets" / "probe.pte"  # y = 2x + 1, float32 [4], XNNPACK


def self_check() -> str:
    """doctor's line: the runtime really runs a program (assets/probe.pte; scripts/make_probe_pte.py)."""
    import torch

    out = load_program(PROBE).load_method("forward").execute([torch.arange(4, dtype=torch.float32)])[0]
    if out.tolist() != [1.0, 3.0, 5.0, 7.0]:
        raise RuntimeError(f"y = 2x + 1 gave {out.tolist()}")
    return "the runtime runs an XNNPACK program"
