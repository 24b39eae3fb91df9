"""The loading gate: what a model file may make mnistkit do, decided before any runtime reads it.

A model file is data, never code (safetensors' stance). Every file from outside passes four layers of
defence before a runtime opens it, and each is a refusal when it cannot finish (never "let the runtime
decide"):

1. **No code runs.** Pickles inside torch archives are simulated against one allowlist (`safeload`), and
   while any torch archive is loaded, `no_unsafe_loads()` makes every unpickling that could run code raise
   (`torch.load(weights_only=False)`, `pickle.load(s)`, TorchScript's Python-object unpickler): a gap in the
   gate still cannot run code.
2. **Operators on an allowlist.** Every graph format's operators are checked before anything runs
   (ONNX nodes, TorchScript code of every method, torch.export nodes, LiteRT and ExecuTorch operators,
   OpenVINO layers): what vision classifiers use (convolution, matmul, activations, pooling, normalisation,
   reshapes, quantize/dequantize, softmax...). Operators that touch files, processes or the network, and
   control flow that can loop, are never on it; an unknown operator is refused with its name.
3. **A memory budget.** The memory a model will need is estimated from what it declares (tensor shapes
   after ONNX shape inference, LiteRT tensors, ExecuTorch planned buffers, archive members' sizes, IR port
   shapes) and refused above `MNISTKIT_MAX_MODEL_BYTES` (default 1 GiB, activations counted per image).
   Behind it, `memory_window()` caps the process's data segment while a model loads and runs its first
   batch (Linux), so a file that lies about its shapes meets an allocation failure, not the OOM killer.
4. **One line.** Every refusal is an ArtifactError naming the file and the reason (exit 1 in the CLI).

Each kind of file has its checker, named by its KindSpec row (`gate`); `artifacts.check_model` runs it
once per file and process. This package is torch-free: refusals happen before torch is imported.
"""

from __future__ import annotations

import contextlib
import os
import threading

from ..errors import ArtifactError, InvalidInputError

DEFAULT_MAX_MODEL_BYTES = 1 << 30
# What a runtime needs beyond the model's own tensors while it loads and runs its first batch: thread
# pools, kernel caches, OpenVINO's plugin, XNNPACK's packed weights, the runtime's own first import.
# Measured growth of the data segment (VmData) for a first load + batch-1 run of the CNN in a fresh process
# (2-vCPU EPYC Zen 4, 2026-12-04): ONNX Runtime 34 MiB, LiteRT 14, OpenVINO 87 (ONNX) / 70 (IR), TorchScript 16,
# torch.export 110, ExecuTorch 153 (its runtime's import included). 512 MiB is 3x the largest.
RUNTIME_HEADROOM = 512 << 20


def max_model_bytes() -> int:
    """The memory budget of one model (`MNISTKIT_MAX_MODEL_BYTES`, default 1 GiB)."""
    env = os.environ.get("MNISTKIT_MAX_MODEL_BYTES")
    if not env:
        return DEFAULT_MAX_MODEL_BYTES
    try:
        value = int(float(env))
    except ValueError:
        raise InvalidInputError(f"MNISTKIT_MAX_MODEL_BYTES={env!r}: expected a number of bytes") from None
    if value <= 0:
        raise InvalidInputError(f"MNISTKIT_MAX_MODEL_BYTES={env!r}: expected a positive number of bytes")
    return value


def human(nbytes: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} bytes"


class Refused(ArtifactError):
    """A model file the gate refuses: `label: refuses to load: reason`."""

    def __init__(self, label, reason: str):
        super().__init__(f"{label}: refuses to load: {reason}")
        self.reason = reason


def check_budget(label, nbytes: float, what: str) -> None:
    """Refuse when `what` (e.g. "its tensors at batch 1") needs more than the model budget."""
    cap = max_model_bytes()
    if nbytes > cap:
        raise Refused(label, f"{what} need {human(nbytes)}, over the {human(cap)} model budget "
                             "(MNISTKIT_MAX_MODEL_BYTES raises it)")


def check_op(label, op: str, allowed, where: str = "", control_flow=()) -> None:
    """Refuse an operator that is not on the allowlist, saying why when it is known to be dangerous."""
    if op in allowed:
        return
    at = f" ({where})" if where else ""
    if op in control_flow:
        raise Refused(label, f"operator {op}{at} is control flow that can loop; mnistkit runs classifiers "
                             "without it")
    raise Refused(label, f"operator {op}{at} is not on mnistkit's operator allowlist (what image classifiers "
                         "use; nothing that touches files, processes or the network)")


# ---------------------------------------------------------------------------------------------
# No unpickling that could run code, while a torch archive loads


class UnsafeLoad(BaseException):
    """Raised by the guarded torch.load/pickle functions. A BaseException so that torch's own
    `except Exception: retry with weights_only=False` cannot catch it."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


_guard_lock = threading.RLock()
_guard_depth = 0
_saved: list[tuple[object, str, object]] = []


def _guarded_torch_load(original):
    def load(f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None, **kwargs):
        if weights_only is False or (pickle_module is not None and weights_only is not True):
            raise UnsafeLoad("torch.load(weights_only=False)")
        return original(f, map_location=map_location, weights_only=True, mmap=mmap, **kwargs)

    return load


def _refuse(what):
    def refuse(*args, **kwargs):
        raise UnsafeLoad(what)

    return refuse


@contextlib.contextmanager
def no_unsafe_loads():
    """While it is open, nothing in the process can unpickle with code execution: `torch.load` runs
    weights-only (a call asking for `weights_only=False` raises UnsafeLoad, as do `pickle.load(s)` and
    torch's Python-object unpickler for TorchScript objects). torch.export.load, for one, retries a failed
    weights-only load with `weights_only=False`: under this guard that retry raises instead of running the
    file. Re-entrant; other threads are affected while it is open (that is the point)."""
    global _guard_depth
    import pickle
    import sys

    torch = sys.modules.get("torch")
    with _guard_lock:
        if _guard_depth == 0:
            targets = [(pickle, "load", _refuse("pickle.load")), (pickle, "loads", _refuse("pickle.loads"))]
            if torch is not None:
                import torch.serialization

                safe = _guarded_torch_load(torch.serialization.load)
                targets += [(torch, "load", safe), (torch.serialization, "load", safe)]
                if hasattr(torch._C, "_pickle_load_obj"):
                    targets.append((torch._C, "_pickle_load_obj", _refuse("torch._C._pickle_load_obj")))
            for owner, name, replacement in targets:
                _saved.append((owner, name, getattr(owner, name)))
                setattr(owner, name, replacement)
        _guard_depth += 1
    try:
        yield
    finally:
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0:
                while _saved:
                    owner, name, original = _saved.pop()
                    setattr(owner, name, original)


# ---------------------------------------------------------------------------------------------
# The backstop: a cap on the process's data segment while a model loads


_window_lock = threading.Lock()
_window_depth = 0
_window_saved = None


def _data_segment() -> int | None:
    """The process's data segment (VmData: private writable memory, what RLIMIT_DATA counts), or None."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextlib.contextmanager
def memory_window():
    """Cap the process's data segment at its current size + the model budget + RUNTIME_HEADROOM while the
    block runs (Linux: RLIMIT_DATA, which counts malloc and anonymous mmap alike). An allocation past it
    fails (MemoryError, or the runtime's own bad_alloc) instead of taking the machine's memory; the block's
    caller reports it as one line. A no-op where the limit cannot be read or set, and when a window is
    already open (the outer one holds)."""
    global _window_depth, _window_saved
    try:
        import resource
    except ImportError:  # not POSIX
        yield
        return
    with _window_lock:
        first = _window_depth == 0
        _window_depth += 1
        if first:
            _window_saved = None
            now = _data_segment()
            if now is not None:
                try:
                    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
                    cap = now + max_model_bytes() + RUNTIME_HEADROOM
                    if hard != resource.RLIM_INFINITY:
                        cap = min(cap, hard)
                    if soft == resource.RLIM_INFINITY or soft > cap:
                        resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
                        _window_saved = (soft, hard)
                except (OSError, ValueError):
                    _window_saved = None
    try:
        yield
    finally:
        with _window_lock:
            _window_depth -= 1
            if _window_depth == 0 and _window_saved is not None:
                try:
                    resource.setrlimit(resource.RLIMIT_DATA, _window_saved)
                except (OSError, ValueError):
                    pass
                _window_saved = None


_ALLOCATION_WORDS = ("bad_alloc", "can't allocate memory", "cannot allocate memory", "out of memory",
                     "failed to allocate", "unable to allocate", "memoryerror", "allocation failed")


def is_allocation_failure(exc: BaseException) -> bool:
    """Whether an exception reads like a failed allocation (what the window turns a memory bomb into)."""
    if isinstance(exc, MemoryError):
        return True
    text = f"{exc.__class__.__name__}: {exc}".lower()
    return any(w in text for w in _ALLOCATION_WORDS)


def over_memory(label) -> ArtifactError:
    return Refused(label, f"it asked for more memory than its {human(max_model_bytes())} budget while loading "
                          "or running its first batch (MNISTKIT_MAX_MODEL_BYTES raises it)")


@contextlib.contextmanager
def mapped(path, label=None):
    """The file's bytes as a read-only memory map (only the pages a checker reads are loaded)."""
    import mmap

    label = label or path
    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise Refused(label, f"cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        yield data
    finally:
        try:
            data.close()
        except BufferError:  # a view is still alive (a traceback frame): freed with it
            pass


# ---------------------------------------------------------------------------------------------
# Rehearsal: a runtime that crashes on inconsistent files is first run in a child process

REHEARSAL_ENV = "MNISTKIT_REHEARSAL"  # set in the child: its own gate does not rehearse again
REHEARSAL_TIMEOUT = 120  # seconds
REHEARSAL_ERROR = "mnistkit-rehearsal-error: "  # the child's line before its error (mnistkit.backends.rehearse)
_WRITTEN: set[str] = set()  # files this process's exporter wrote from the user's own model (written_here)


def written_here(path) -> None:
    """Mark a file this process just wrote with a converter from the user's own model (the exporter's staging):
    its validation needs no rehearsal, for it comes from no one else. Published, or read by another process, it is
    rehearsed like any file (the mark is for this path, in this process)."""
    _WRITTEN.add(os.path.realpath(path))


def rehearse(path, label, runtime: str) -> None:
    """Load the file and run its first batches in a child process (mnistkit.backends.rehearse) before this process
    does, for a runtime that segfaults instead of raising on a file whose values are inconsistent (MNN: a reshape
    constant that disagrees with its input kills the process; no static check covers every operator's parameters).
    A child killed by a signal is a refusal, one line. So is an error the child reports: the same file that raised
    there can crash a process another time (fuzzing found MNN files that segfault on some loads and raise on others),
    so this process never loads a file its rehearsal failed. Memory in the child is bounded like any load
    (memory_window)."""
    import signal
    import subprocess
    import sys

    if os.environ.get(REHEARSAL_ENV) or os.path.realpath(path) in _WRITTEN:
        return
    env = {**os.environ, REHEARSAL_ENV: "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "mnistkit.backends.rehearse", str(path)], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=REHEARSAL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Refused(label, f"{runtime} did not finish loading and running it in {REHEARSAL_TIMEOUT} s "
                             "(a rehearsal in a child process)") from None
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        raise Refused(label, f"{runtime} crashed ({name}) loading or running it in a rehearsal process: the file's "
                             "values are inconsistent (this process never ran it)")
    if done.returncode != 0:
        said = [line[len(REHEARSAL_ERROR):] for line in done.stdout.decode("utf-8", "replace").splitlines()
                if line.startswith(REHEARSAL_ERROR)]
        why = said[-1] if said else f"exit {done.returncode}: " + " ".join(done.stderr.decode("utf-8", "replace").split())[-200:]
        for prefix in (f"{path}: ", f"{label}: "):
            why = why[len(prefix):] if why.startswith(prefix) else why
        raise Refused(label, f"{runtime} failed on it in a rehearsal process ({why}); a file its runtime fails on can "
                             "crash it another time, so this process does not load it")
