"""The one backend contract every runtime implements.

    with create_backend("model.onnx", device="cpu") as b:   # construction is cheap
        logits = b.run(batch)                               # load() happened in __enter__

`run(batch)` accepts the two forms data comes in and returns a fresh float32 [N, C] numpy array, for the
images the artifact records (`info.geometry`, C x H x W; MNIST's 1 x 28 x 28 by default):

- uint8 pixels [N,H,W] (gray) or [N,H,W,C] (colour), 0-255, the dataset's polarity: how images and datasets arrive;
- normalized float32 [N,C,H,W]: what the float model takes.

Each backend converts to its artifact's native form with the artifact's own metadata (mean/std),
so the app-ready uint8 ONNX and the float artifacts are both first-class. Conversions are the same
arithmetic for every backend, so all of them see bit-identical float inputs.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from ..artifacts import ModelInfo
from ..errors import InvalidInputError
from ..pixels import FLOAT_FORM, UINT8_FORM, float_to_pixels, pixels_to_float

_F32 = np.dtype(np.float32)
_U8 = np.dtype(np.uint8)


def all_finite(x: np.ndarray) -> bool:
    """True when every value of a float array is finite.

    The sum of squares is finite exactly when every value is finite and no square overflows; one
    BLAS dot product costs ~0.5 us at batch 1 against ~1.6 us for np.isfinite(x).all() (two numpy
    calls), and stays cheaper at batch 1024 (measured, benchmarks/README.md). Only when the dot
    product is not finite is the exact check run, so huge-but-finite inputs are not refused.
    """
    flat = x.ravel()
    if math.isfinite(flat.dot(flat)):
        return True
    return bool(np.isfinite(flat).all())


def describe_array(x) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} [{','.join(map(str, x.shape))}]"
    return type(x).__name__


FAST_SHAPES = 64  # batch shapes a fast run remembers the call of (Backend.fast_run); others take the full check

NONFINITE = "input holds NaN or infinite values; expected finite normalized floats"


def one_at_a_time(make: Callable[[], Callable]) -> Callable:
    """A thread-safe call built from `make()`'s calls, which are not (each holds its own interpreter, request or
    input buffer): the common path takes a call from a list and puts it back (`list.pop` / `list.append`, atomic
    under the GIL); a caller that finds it taken, because another thread is inside it, runs a second one, made on
    first need, under a lock (so at most two exist, and the second only where threads really call at once).

    Why not a lock: right after a runtime call Python's caches are cold, and `with lock` measured 0.41 us there
    against 0.08 us for the pop and append (LiteRT, the MLP at batch 1: 3 % of a 13 us call; interleaved,
    2-vCPU EPYC Zen 4)."""
    free = [make()]
    take, give = free.pop, free.append
    second: list[Callable] = []
    lock = threading.Lock()

    def contended(x):
        with lock:
            if not second:
                second.append(make())
            return second[0](x)

    def call(x):
        try:
            c = take()
        except IndexError:
            return contended(x)
        try:
            return c(x)
        finally:
            give(c)

    return call


@dataclass
class PlanContext:
    """What a runtime's `plan_options` hook (BackendSpec.plan_options) sees while `mnistkit optimize` plans: every
    artifact of the export (plan.Target: path, format, kind) and `prune(what, why)`, which records a configuration
    left out by reasoning, with its reason, for the report."""

    targets: list
    prune: Callable[[str, str], None]


class Backend:
    """Base class: input validation and conversion, lifecycle, context manager.

    Subclasses set `name` and implement `_load() -> ModelInfo` (take resources) and
    `_infer(x) -> np.ndarray` (x already in the artifact's native form), and `_close()`.
    """

    name: ClassVar[str] = "base"
    runtime: ClassVar[str] = "the runtime"  # how messages name the runtime ("ONNX Runtime", "OpenVINO")

    def __init__(self, path, device: str = "cpu", threads: int | None = None, **options):
        from pathlib import Path

        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.options = options
        self.info: ModelInfo | None = None
        self.provider: str | None = None  # what really runs (e.g. CPUExecutionProvider)
        self.notes: list[str] = []  # warnings worth showing (fallbacks, defaults used)
        self._loaded = False

    # ---- lifecycle
    def load(self) -> "Backend":
        """Take the runtime's resources, then run one batch of zeros (batch 1, or the model's fixed batch).

        On the CPU both happen inside gate.memory_window: a file whose shapes lied to the loading gate meets
        an allocation failure (one ArtifactError line) instead of exhausting the machine's memory. The first
        batch is where a runtime sizes its activations, so a model that would need more than its budget per
        image is refused here rather than at the user's first call."""
        if not self._loaded:
            from contextlib import nullcontext

            from ..gate import is_allocation_failure, memory_window, over_memory

            window = memory_window() if self.device == "cpu" else nullcontext()
            try:
                with window:
                    self.info = self._load()
                    self._native = self.info.input_form
                    self._mean, self._std = self.info.mean, self.info.std
                    self._loaded = True
                    self._first_batch()
            except Exception as exc:
                if self._loaded:
                    self.close()
                if is_allocation_failure(exc):
                    raise over_memory(self.path) from None
                raise
        return self

    def _first_batch(self) -> None:
        """One batch of zeros in the artifact's native form; its failures other than memory are the first real
        call's to report (a model may reject zeros, or a size its contract allows)."""
        g = self.info.geometry
        shape = (self.info.fixed_batch or 1, *(g.float_tail if self._native == FLOAT_FORM else g.pixel_tail))
        try:
            self._infer(np.zeros(shape, _F32 if self._native == FLOAT_FORM else _U8))
        except Exception as exc:
            from ..gate import is_allocation_failure

            if is_allocation_failure(exc):
                raise

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded = False
            self.__dict__.pop("run", None)  # drop a fast path installed by load()
            self.__dict__.pop("_direct", None)

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- running
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits float32 [N, C] for a batch in either input form. Raises InvalidInputError."""
        if not self._loaded:
            raise RuntimeError(f"{self.name} backend: call load() (or use `with`) before run()")
        x = self.to_native(batch)
        try:  # the fast path's per-shape calls where load() installed them (fast_run), else the backend's own
            return (self.__dict__.get("_direct") or self._infer)(x)
        except Exception as exc:
            raise self.run_failed(exc, x) from None

    def to_native(self, batch) -> np.ndarray:
        """Validate a batch and convert it to the artifact's native input form."""
        if type(batch) is not np.ndarray:
            raise InvalidInputError(f"input is a {describe_array(batch)}; expected a numpy array, "
                                    f"{self.info.geometry.forms()}")
        dtype, shape = batch.dtype, batch.shape
        g = self.info.geometry
        if dtype == _F32 and shape[1:] == g.float_tail and len(shape) == 4:
            if shape[0] == 0:
                raise InvalidInputError("input is an empty batch (N=0); expected N >= 1")
            if not all_finite(batch):
                raise InvalidInputError(NONFINITE)
            if self._native == FLOAT_FORM:
                return batch if batch.flags.c_contiguous else np.ascontiguousarray(batch)
            return float_to_pixels(batch, self._mean, self._std)
        if dtype == _U8 and shape[1:] == g.pixel_tail and len(shape) == 1 + len(g.pixel_tail):
            if shape[0] == 0:
                raise InvalidInputError("input is an empty batch (N=0); expected N >= 1")
            if self._native == UINT8_FORM:
                return batch if batch.flags.c_contiguous else np.ascontiguousarray(batch)
            return pixels_to_float(batch, self._mean, self._std)
        hint = ""
        if shape == g.pixel_tail or shape == g.float_tail and dtype != _U8:
            hint = " (a single image needs a batch axis: x[None])"
        elif dtype.kind == "f" and dtype != _F32:
            hint = " (convert with .astype(np.float32))"
        raise InvalidInputError(f"input is {describe_array(batch)}; expected {g.forms()}{hint}")

    # ---- subclass hooks
    def _load(self) -> ModelInfo:
        raise NotImplementedError

    def _infer(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def run_failed(self, exc: Exception, x: np.ndarray) -> Exception:
        """A model that loads but fails to run (a corrupt graph, a shape it cannot take): one line naming the
        file and the input. mnistkit's own errors pass through."""
        from ..errors import ArtifactError, MnistkitError, first_line

        if isinstance(exc, MnistkitError):
            return exc
        return ArtifactError(f"{self.path}: {self.runtime} failed running it on {x.dtype} {list(x.shape)}: "
                             f"{first_line(exc, 240)}")

    def fast_run(self, call, failed, call_for=None):
        """A `run` for the common case in as few Python operations as possible: a well-formed batch in the
        artifact's native form goes straight to the runtime's call; anything else takes the general path, with
        its precise messages. An exception from the call becomes `failed(exc, batch)`. Backends install it at
        load when their native form needs no conversion.

        Well-formed is checked in three steps: the type and dtype by identity, then one dict lookup on the
        batch's whole shape (a shape gets there only after the full check: N >= 1, the geometry's tail, the
        rank), which also finds the call for that shape, then C-contiguity; floats are finite by one dot
        product. `call_for(batch)` gives the call for a new shape (default `call`): a runtime with one compiled
        request or interpreter per batch size hands it here, and the per-call dispatch by size is gone."""
        ndarray, dot_ok, isfinite = np.ndarray, math.isfinite, np.isfinite
        is_float = self._native == FLOAT_FORM
        g = self.info.geometry
        dtype, tail = (_F32, g.float_tail) if is_float else (_U8, g.pixel_tail)
        ndim = 1 + len(tail)
        general = Backend.run.__get__(self)
        calls: dict[tuple, Callable] = {}  # batch shape -> its call, filled as shapes are seen (FAST_SHAPES at most)
        call_for = call_for or (lambda batch: call)

        def direct(batch):  # what unchecked() hands out: the same calls, without the checks
            return (calls.get(batch.shape) or call_for(batch))(batch)

        self._direct = direct

        def learn(batch):
            """A shape not seen yet: the full check, then its call remembered."""
            if (type(batch) is ndarray and batch.dtype is dtype and batch.ndim == ndim and batch.shape[1:] == tail
                    and batch.shape[0] and batch.flags.c_contiguous):
                if is_float:
                    flat = batch.ravel()
                    if not dot_ok(flat.dot(flat)) and not isfinite(flat).all():
                        raise InvalidInputError(NONFINITE)
                try:
                    c = call_for(batch)
                    if len(calls) < FAST_SHAPES:
                        calls[batch.shape] = c
                    return c(batch)
                except Exception as exc:
                    raise failed(exc, batch) from None
            return general(batch)

        get = calls.get

        def run(batch):
            if type(batch) is ndarray and batch.dtype is dtype:
                c = get(batch.shape)
                if c is not None and batch.flags.c_contiguous:
                    if is_float:
                        flat = batch.ravel()
                        if not dot_ok(flat.dot(flat)) and not isfinite(flat).all():
                            raise InvalidInputError(NONFINITE)
                    try:  # free when nothing is raised (Python 3.11's zero-cost exceptions)
                        return c(batch)
                    except Exception as exc:
                        raise failed(exc, batch) from None
            return learn(batch)

        return run

    def unchecked(self):
        """`run` without its input checks, for a caller whose batches are already in the artifact's native form
        (`info.input_form`: float32 [N,C,H,W] normalized, or uint8 [N,H,W(,C)] pixels), C-contiguous and finite
        — e.g. a serving loop that validated them once upstream. Nothing is checked: a wrong dtype or shape
        reaches the runtime (its own error, as one ArtifactError line, at best), and NaN gives NaN or garbage.

        The checks cost about 1 us per call (dtype, shape and layout; one BLAS dot product for finiteness;
        the dispatch): nothing at batch 64, but 10-30 % of a 4-15 us batch-1 call on LiteRT or ExecuTorch.
        This is the same call `run` makes after them; bench times it beside `run` and the bare runtime."""
        if not self._loaded:
            raise RuntimeError(f"{self.name} backend: call load() (or use `with`) before unchecked()")
        call, failed = self.__dict__.get("_direct") or self._infer, self.run_failed

        def unchecked(batch):
            try:  # free when nothing is raised (Python 3.11's zero-cost exceptions)
                return call(batch)
            except Exception as exc:
                raise failed(exc, batch) from None

        return unchecked

    def device_resident(self, batch: np.ndarray):
        """(call, sync) that runs on an input already in native form (no conversion, no checks).

        Runtimes with device memory (CUDA) override this with IO binding or device tensors.
        """
        x = self.to_native(batch)
        return (lambda: self._infer(x)), None

    def run_chunked(self, images: np.ndarray, chunk: int = 1000) -> np.ndarray:
        """`run` over a large set in chunks (bounded memory: a CNN's activations at 10,000 images are ~1 GB)."""
        return np.concatenate([self.run(images[i:i + chunk]) for i in range(0, len(images), chunk)])
