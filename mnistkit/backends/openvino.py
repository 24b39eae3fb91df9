"""OpenVINO on the CPU plugin, running OpenVINO IR (model.xml + model.bin) and mnistkit's ONNX files
directly (float, app-ready, int8 and fp16).

Imports openvino, onnx (for the metadata of ONNX files: OpenVINO's ONNX frontend does not keep it) and
numpy: no torch. An IR's metadata is its rt_info entry `mnistkit` (formats/openvino.py), read from the XML
with a streaming parser before OpenVINO opens the file.

Choices, measured or documented:
- INFERENCE_PRECISION_HINT f32: on CPUs with bf16 or AMX the plugin's default runs float models in bf16
  (~1e-2 off PyTorch); mnistkit's parity contract is fp32.
- PERFORMANCE_HINT LATENCY with one synchronous infer request: bench times one call at a time (the
  THROUGHPUT hint with synchronous calls ran at one-thread speed, issue 13's measurement).
- INFERENCE_NUM_THREADS = --threads, else every usable core, like ONNX Runtime.
- Each batch size (the first STATIC_SHAPES seen, up to STATIC_MAX) gets a model compiled for exactly
  its shape and its own infer request; small batches are copied into a pre-bound input buffer, larger
  ones bound as a Tensor over the caller's array, and `infer()` runs with no other per-call set-up. At
  batch 1 that is 28 us against 62 us for `infer({0: x})` on the dynamic model (1 thread, 2-vCPU EPYC,
  interleaved), and static int8 at batch 1024 runs 1.30 ms against 1.97 dynamic. Compiling a shape
  costs 25-45 ms, once. The path is fixed per batch size at its first call, because a static model's
  kernels can differ from the dynamic one's in the last bits (4e-8 seen on the uint8 app model): a
  size always runs the same way, so repeated calls are bit-identical.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import MAX_METADATA_BYTES, ModelInfo, check_model, detect_kind, onnx_io_info, onnx_metadata
from ..errors import ArtifactError, InvalidInputError, first_line
from ..signals import ensure_signal_stack
from .base import Backend

OV_TYPES = {"f32": "float32", "u8": "uint8"}
STATIC_MAX = 4096  # batch sizes compiled for their exact shape (int8 at 1024: 1.30 static, 1.97 ms dynamic)
STATIC_SHAPES = 8  # at most this many; other sizes share the dynamic model
COPY_MAX = 16  # up to here the input is copied into a bound buffer (batch 1: 28.5 us, a new Tensor 34.0 us);
# above, a Tensor over the caller's array is bound per call (batch 64, 2 threads: 168 vs 186 us)


HINTS = ("LATENCY", "THROUGHPUT")
PRECISIONS = ("f32", "bf16")  # INFERENCE_PRECISION_HINT values mnistkit sets (f32: the parity contract)
PROBE = Path(__file__).resolve().parent.parent / "assets" / "probe.onnx"  # Identity, opset 13, IR 7


def import_openvino():
    """`import openvino` without OpenVINO's usage telemetry. Left alone, `import openvino` (through its model
    converter, imported by openvino/__init__.py) sends a Google Analytics event from a forked process and writes
    ~/intel/openvino_ga_cid and ~/intel/stats, on every machine where nobody ran `opt_in_out --opt_out`
    (measured: openvino 2026.4.1; only CI=true turns it off). OpenVINO falls back to its own no-op stub when the
    `openvino_telemetry` package cannot be imported, which a None in sys.modules makes so. A process that
    imported openvino_telemetry itself keeps it: that is its owner's choice, not ours."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def compile_options(threads: int, hint: str = "LATENCY", precision: str = "f32") -> dict:
    """The compile options mnistkit uses everywhere (backend and bench baseline alike); `hint` and `precision` are
    knobs `mnistkit optimize` searches (LATENCY, mnistkit's default, or THROUGHPUT; f32, mnistkit's default, or
    bf16 where the CPU computes in it: cpu_precisions())."""
    if hint not in HINTS:
        raise InvalidInputError(f"hint {hint!r}: expected one of {', '.join(HINTS)}")
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": int(threads)}


def cpu_precisions() -> tuple[str, ...]:
    """The float precisions the CPU plugin computes in here: f32 always, bf16 where the CPU has bf16 arithmetic
    (AVX-512-BF16 or AMX: the plugin's OPTIMIZATION_CAPABILITIES lists BF16). Elsewhere a bf16 hint would run f32."""
    caps = import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return ("f32", "bf16") if "BF16" in caps else ("f32",)


def default_precision() -> str:
    """What OpenVINO's own defaults compute float models in on this CPU, as the format table names precisions:
    "bf16" where the plugin's default INFERENCE_PRECISION_HINT is bf16 (CPUs with AVX-512-BF16 or AMX), else "fp32"."""
    hint = str(import_openvino().Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    return "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"


def ir_metadata(path) -> dict | None:
    """mnistkit's metadata of an OpenVINO IR: the JSON in <net><rt_info><mnistkit value=...>; None when absent.

    Read with the standard library's streaming XML parser (expat: no external entities, and entity
    expansion attacks refused), each element dropped once read, so memory stays bounded whatever the file."""
    import xml.etree.ElementTree as ET

    stack: list[str] = []
    try:
        for event, elem in ET.iterparse(str(path), events=("start", "end")):
            if event == "start":
                stack.append(elem.tag)
                continue
            if stack == ["net", "rt_info", "mnistkit"]:
                value = elem.get("value") or ""
                if len(value) > MAX_METADATA_BYTES:
                    raise ArtifactError(f"{path}: rt_info mnistkit entry over 1 MiB")
                meta = json.loads(value)
                if not isinstance(meta, dict):
                    raise ArtifactError(f"{path}: rt_info mnistkit entry is not a JSON object")
                return meta
            stack.pop()
            if len(stack) != 1:  # keep <net>'s direct children until they end; drop everything read
                elem.clear()
    except ArtifactError:
        raise
    except (ET.ParseError, ValueError, OSError) as exc:
        raise ArtifactError(f"{path}: unreadable OpenVINO IR ({exc.__class__.__name__}: {first_line(exc, 120)})") from None
    return None


def _compile(path, threads: int, hint: str = "LATENCY", precision: str = "f32"):
    """(read model, compiled model) on the CPU plugin; one ArtifactError line when OpenVINO cannot."""
    ov = import_openvino()

    from ..capture import captured_output

    check_model(path)  # the loading gate (once per file and process)
    core = ov.Core()
    options = compile_options(threads, hint, precision)
    with captured_output():
        try:
            model = core.read_model(str(path))
            return model, core.compile_model(model, "CPU", options)
        except Exception as exc:
            raise ArtifactError(f"{path}: OpenVINO cannot load it: {conversion_failure(exc)}") from None
        finally:
            ensure_signal_stack()  # the CPU plugin leaves this thread a ~10 KB signal stack (signals.py)


def conversion_failure(exc: Exception) -> str:
    """One line for OpenVINO's refusal: its ONNX front end ends a multi-line report with a summary of the
    operators it has no rule for (scikit-learn's ai.onnx.ml classifiers, for one); that summary is the news."""
    text = str(exc)
    if "Summary:" in text:
        lines = [ln.strip(" -") for ln in text.split("Summary:", 1)[1].splitlines() if ln.strip(" -")]
        if lines:
            return "; ".join(lines)[:300]
    return first_line(exc, 300)


def _shape_request(model, shape: list[int], threads: int, hint: str = "LATENCY", precision: str = "f32"):
    """An infer request of `model` compiled for exactly `shape` (the static path; see the module's notes)."""
    ov = import_openvino()

    model = model.clone()
    model.reshape(list(shape))
    try:
        return ov.Core().compile_model(model, "CPU", compile_options(threads, hint, precision)).create_infer_request()
    finally:
        ensure_signal_stack()


def _signature(output) -> tuple:
    """(name, dtype, shape) of a compiled model's output, as artifacts.pick_output reads them; the name is
    logits when that is one of the tensor's names (OpenVINO may show another of them first)."""
    import numpy as np

    name = "logits" if "logits" in output.get_names() else output.get_any_name()
    try:
        dtype = np.dtype(output.get_element_type().to_dtype()).name
    except Exception:
        dtype = output.get_element_type().get_type_name()
    pshape = output.get_partial_shape()
    shape = [d.get_length() if d.is_static else None for d in pshape] if pshape.rank.is_static else None
    return name, dtype, shape


def _score_output(path, outputs) -> int:
    """Index of the output holding the class scores (artifacts.pick_output)."""
    from ..artifacts import pick_output

    sigs = [_signature(o) for o in outputs]
    return [sig[0] for sig in sigs].index(pick_output(path, sigs))


class OpenVinoBackend(Backend):
    """Options: hint (PERFORMANCE_HINT: LATENCY, the default, or THROUGHPUT); precision (INFERENCE_PRECISION_HINT:
    f32, the default and the parity contract, or bf16 on CPUs that compute in it, judged by the accuracy gate)."""

    name = "openvino"
    runtime = "OpenVINO"

    def _load(self) -> ModelInfo:
        ov = import_openvino()

        from .onnxrt import default_threads

        self.threads = self.threads or default_threads()
        self._hint = self.options.get("hint", "LATENCY")
        self._precision = self.options.get("precision", "f32")
        model, compiled = _compile(self.path, self.threads, self._hint, self._precision)
        if len(model.inputs) != 1:
            raise ArtifactError(f"{self.path}: has {len(model.inputs)} inputs; expected one image input")
        inp = model.inputs[0]
        dtype = OV_TYPES.get(inp.get_element_type().get_type_name())
        if dtype is None:
            raise ArtifactError(f"{self.path}: input is {inp.get_element_type().get_type_name()}; expected float32 "
                                "[N,1,28,28] or uint8 [N,28,28]")
        shape = [d.get_length() if d.is_static else None for d in inp.get_partial_shape()]
        kind = detect_kind(self.path)
        try:
            meta = (ir_metadata(self.path) if kind == "openvino-ir" else onnx_metadata(self.path)) or {}
        except ImportError:  # the runtime-only install without onnx: the file's contract still decides
            meta = {}
        sigs = [_signature(o) for o in compiled.outputs]
        info = onnx_io_info(self.path, meta, inp.get_any_name(), dtype, shape, sigs, kind)
        out_index = [sig[0] for sig in sigs].index(info.output_name)
        self._model, self._out_index = model, out_index
        self._float_out = compiled.outputs[out_index].get_element_type().get_type_name() == "f32"
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        self._runners: dict[int, Callable] = {}  # batch size -> its call
        self._shape = [d if d else -1 for d in shape]
        self._reshape = info.input_form == "float" and len(shape) != 4
        self._fixed = info.fixed_batch
        bf16 = f" {self._precision}" if self._precision != "f32" else ""
        self.provider = f"openvino {ov.__version__.split('-')[0]} CPU{bf16}"
        return info

    def load(self):
        super().load()
        if not self._reshape and self._fixed is None and self._float_out:
            runners, make = self._runners, self._runner

            def call_for(batch):  # the batch size's own request: found once per shape by fast_run
                return runners.get(len(batch)) or make(batch)

            self.run = self.fast_run(None, self.run_failed, call_for)
        return self

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self._reshape:
            x = x.reshape([len(x), *self._shape[1:]])
        if self._fixed is not None and len(x) != self._fixed:
            from .onnxrt import fixed_batches

            return np.concatenate([self._run(part) for part in fixed_batches(x, self._fixed)])[:len(x)]
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        runner = self._runners.get(len(x))
        if runner is None:
            runner = self._runner(x)
        try:
            out = runner(x)
        except Exception as exc:
            raise self.run_failed(exc, x) from None
        return out if out.dtype == np.float32 else out.astype(np.float32)

    def _runner(self, x: np.ndarray):
        """The call for x's batch size, fixed at its first call (see the module's notes)."""
        ov = import_openvino()

        n, lock, index, Tensor = len(x), self._lock, self._out_index, ov.Tensor
        with lock:
            if n in self._runners:
                return self._runners[n]
            request = self._request
            if self._fixed is None and n <= STATIC_MAX and len(self._runners) < STATIC_SHAPES:
                try:
                    request = _shape_request(self._model, x.shape, self.threads, self._hint, self._precision)
                except Exception as exc:
                    raise ArtifactError(f"{self.path}: OpenVINO cannot compile it for batch {n}: "
                                        f"{first_line(exc, 200)}") from None
            # the lock as acquire/release, not `with`: 0.26 against 0.41 us right after a call (base.one_at_a_time)
            acquire, release, copyto = lock.acquire, lock.release, np.copyto
            infer, output = request.infer, request.get_output_tensor
            if n <= COPY_MAX and request is not self._request:
                buffer = np.zeros(x.shape, x.dtype)
                request.set_input_tensor(Tensor(buffer, shared_memory=True))

                def run(x):
                    acquire()  # the requests are not safe to share between threads
                    try:
                        copyto(buffer, x)
                        infer()
                        return output(index).data.copy()  # fresh memory, never the request's
                    finally:
                        release()
            else:
                def run(x):
                    acquire()
                    try:
                        request.set_input_tensor(Tensor(x, shared_memory=True))
                        infer()
                        return output(index).data.copy()
                    finally:
                        release()
            if len(self._runners) < STATIC_SHAPES:
                self._runners[n] = run
            return run

    def _close(self) -> None:
        self._request = self._model = None
        self._runners.clear()


class BareOpenVino:
    """OpenVINO's fastest hand-written call for a new input each time, with mnistkit's compile options:
    the model compiled for exactly that batch's shape, the input put into the request (copied into a
    bound buffer for small batches, bound as a Tensor over the array for larger ones), `infer()`, the
    output read. What it leaves out is what the backend adds: the input checks, the lock, the dispatch."""

    def __init__(self, path, threads: int | None, defaults: bool = False):
        from .onnxrt import default_threads

        self.defaults = defaults
        if defaults:  # OpenVINO's own: no compile options (its hint, its threads, its precision: bf16 where the CPU has it)
            from ..capture import captured_output

            check_model(path)
            with captured_output():
                self.compiled = import_openvino().Core().compile_model(str(path), "CPU")
            ensure_signal_stack()  # the CPU plugin's small signal stack (signals.py)
            self.threads, self.index = None, _score_output(path, self.compiled.outputs)
            return
        self.threads = threads or default_threads()
        model, compiled = _compile(path, self.threads)
        self.model = model
        self.index = _score_output(path, compiled.outputs)
        self.shape = [d.get_length() if d.is_static else -1 for d in model.inputs[0].get_partial_shape()]

    def call_for(self, x: np.ndarray) -> Callable:
        if self.defaults:  # the call OpenVINO's documentation shows
            compiled, index = self.compiled, self.index
            return lambda: compiled(x)[index]
        ov = import_openvino()

        from .onnxrt import fixed_batches

        if len(self.shape) != x.ndim:
            x = x.reshape([len(x), *self.shape[1:]])
        fixed = self.shape[0] if self.shape and self.shape[0] > 0 else None
        parts = fixed_batches(x, fixed) if fixed is not None and len(x) != fixed else [x]
        request = _shape_request(self.model, parts[0].shape, self.threads)
        index, Tensor = self.index, ov.Tensor
        if len(parts) == 1 and len(x) <= COPY_MAX:
            buffer = np.zeros(x.shape, x.dtype)
            request.set_input_tensor(Tensor(buffer, shared_memory=True))

            def copied():
                np.copyto(buffer, x)
                request.infer()
                return request.get_output_tensor(index).data.copy()

            return copied

        def bound():
            outs = []
            for part in parts:
                request.set_input_tensor(Tensor(part, shared_memory=True))
                request.infer()
                outs.append(request.get_output_tensor(index).data.copy())
            return outs

        return bound


def self_check() -> str:
    """doctor's line: the CPU plugin really compiles and runs a model here (assets/probe.onnx), not just imports."""
    ov = import_openvino()

    from ..capture import captured_output

    with captured_output():
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(PROBE)), "CPU")
        ensure_signal_stack()  # the CPU plugin's small signal stack (signals.py)
        shape = [d.get_length() if d.is_static else 1 for d in compiled.inputs[0].get_partial_shape()]
        compiled.create_infer_request().infer({0: np.zeros(shape, np.float32)})
    return f"CPU plugin runs a model (devices: {', '.join(core.available_devices)})"


# ---------------------------------------------------------------------------------------------
# mnistkit optimize's option space for OpenVINO (BackendSpec.plan_options)

ONNX_BESIDE_IR = ("OpenVINO on model.onnx compiles the same graph as model.xml (the IR is that file converted by "
                  "OpenVINO): the IR is the candidate")
THROUGHPUT_1 = "with one thread the THROUGHPUT hint has one stream of one thread: the LATENCY candidate"
NO_BF16 = ("this CPU has no bf16 arithmetic (neither AVX-512-BF16 nor AMX): a bf16 precision hint would run f32, "
           "the f32 candidate")


def plan_options(target, threads: int, ctx) -> list[dict]:
    """The option sets worth timing for `target` at `threads`: the LATENCY hint, THROUGHPUT with a pool; on float
    files each also in bf16 where the CPU computes in it (judged by the accuracy gate: BF16 in the format table).
    The float ONNX file is left to the IR converted from it."""
    from ..formats import FORMATS

    name = target.path.name
    fmt = FORMATS.get(target.format)
    if target.kind == "onnx" and fmt is not None and fmt.base is None and not fmt.app \
            and any(t.kind == "openvino-ir" for t in ctx.targets):
        ctx.prune(f"{name} on openvino", ONNX_BESIDE_IR)
        return []
    hints = [{}] if threads == 1 else [{}, {"hint": "THROUGHPUT"}]
    if threads == 1:
        ctx.prune(f"{name} on openvino, 1 thread, THROUGHPUT hint", THROUGHPUT_1)
    if fmt is None or fmt.precision != "fp32":
        return hints
    if "bf16" not in cpu_precisions():
        ctx.prune(f"{name} on openvino, {threads} thread{'s' if threads > 1 else ''}, precision bf16", NO_BF16)
        return hints
    return hints + [{**h, "precision": "bf16"} for h in hints]
