"""LiteRT (ex-TensorFlow Lite) on a `.tflite` file: ai-edge-litert's Interpreter, CPU, XNNPACK delegate
(the Interpreter applies it by default). Imports ai_edge_litert and numpy: no torch.

Loading parses the flatbuffer and runs no code from it. mnistkit's metadata is read from the flatbuffer's
own metadata table (formats/litert.py) with the schema's generated reader, from a memory map, the entry's
size checked before it is read.

Choices, measured (2-vCPU AMD EPYC, litert 2.3.0, the MLP, interleaved):
- The call is `set_tensor / invoke / get_tensor`: 15.6 us at batch 1 (one thread) against 17.8 us for
  copying into the `tensor()` views; get_tensor returns a copy, so results never alias the runtime's buffers.
- An interpreter is sized for one batch (resize + allocate costs more than the call), so each batch size
  (the first INTERPRETERS seen) gets its own interpreter, made once from the memory-mapped file; other
  sizes share one that is resized when the size changes.
- --threads sets the interpreter's threads (XNNPACK's pool), else every usable core, like ONNX Runtime.
- A full-integer model (int8 or uint8 input with a scale and zero point, as LiteRT's quantizer writes
  them) gets its input quantized and its output dequantized here, with the file's own parameters.
- A file converted at a fixed batch (its shape signature has no -1) runs in chunks of that batch, the last
  padded, as the other backends do with fixed-batch models.
"""

from __future__ import annotations

import json
import mmap
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import MAX_METADATA_BYTES, ModelInfo, check_model, exact_contract, info_from_metadata
from ..errors import ArtifactError, first_line
from ..pixels import FLOAT_FORM, UINT8_FORM
from .base import Backend, one_at_a_time

METADATA_NAME = "mnistkit"  # formats/litert.py writes it under this name
INTERPRETERS = 4  # batch sizes that get their own interpreter (see the module's notes)
_QUANTIZED = {np.dtype(np.int8), np.dtype(np.uint8)}


def read_metadata_bytes(data) -> dict | None:
    """mnistkit's metadata from a .tflite's bytes (or a memory map); None when it carries none."""
    from ai_edge_litert import schema_py_generated as schema

    problem = None
    try:
        model = schema.Model.GetRootAsModel(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() != METADATA_NAME.encode():
                continue
            buffer = model.Buffers(entry.Buffer())
            # inline bytes, or (as LiteRT's quantizer writes larger models) bytes after the flatbuffer, at offset
            offset, size = (buffer.Offset(), buffer.Size()) if buffer is not None else (0, 0)
            length = size if offset > 1 else (buffer.DataLength() if buffer is not None else 0)
            if buffer is None or length > MAX_METADATA_BYTES or (offset > 1 and offset + size > len(data)):
                problem = f"malformed {METADATA_NAME} metadata entry (missing, out of the file, or over 1 MiB)"
                break
            raw = bytes(data[offset:offset + size]) if offset > 1 else (bytes(buffer.DataAsNumpy()) if length else b"")
            meta = json.loads(raw or b"null")
            if isinstance(meta, dict):
                return meta
            problem = f"{METADATA_NAME} metadata is not a JSON object"
            break
    except Exception as exc:  # a truncated or hostile flatbuffer: offsets out of range, bad UTF-8, bad JSON
        problem = f"unreadable LiteRT flatbuffer metadata ({exc.__class__.__name__}: {first_line(exc, 120)})"
    # raised here, outside the handler: no traceback keeps a view of the caller's memory map alive
    if problem is not None:
        raise ArtifactError(problem)
    return None


def read_metadata(path) -> dict | None:
    """mnistkit's metadata of a .tflite file (None when it carries none), read from a memory map."""
    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable ({first_line(exc, 120)})") from None
    problem = None
    try:
        return read_metadata_bytes(data)
    except ArtifactError as exc:
        problem = str(exc)
    finally:
        try:
            data.close()
        except BufferError:  # a view is still alive somewhere: the map is freed with it
            pass
    raise ArtifactError(f"{path}: {problem}")


def signature_input(data: bytes) -> str:
    """The input name of a .tflite's first signature (what the quantizer's calibration data is keyed by)."""
    from ai_edge_litert.interpreter import Interpreter

    from ..capture import captured_output

    with captured_output():
        signatures = Interpreter(model_content=data).get_signature_list()
    first = next(iter(signatures.values()), {})
    return (first.get("inputs") or ["args_0"])[0]


def interpreter(path, threads: int, xnnpack: bool = True):
    """An Interpreter on the file (memory-mapped), one ArtifactError line when LiteRT refuses it. `xnnpack`
    False runs LiteRT's built-in kernels without its default XNNPACK delegate (a knob `mnistkit optimize`
    searches: int8 kernels differ between the two)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from ..capture import captured_output

    check_model(path)  # the loading gate (once per file and process)
    with captured_output() as cap:  # the runtime logs the delegate it creates to fd 2
        try:
            resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            return Interpreter(model_path=str(path), num_threads=int(threads), experimental_op_resolver_type=resolver)
        except Exception as exc:
            said = [line for line in cap.text.strip().splitlines() if "INFO:" not in line]
            raise ArtifactError(f"{path}: LiteRT cannot load it: {first_line(exc, 240)}"
                                + (f" [{said[-1][:160]}]" if said else "")) from None


def _quantizer(params, dtype: np.dtype) -> Callable[[np.ndarray], np.ndarray]:
    """float -> the model's integer input, with the file's scale and zero point (round half to even, clipped)."""
    scale, zero = np.float32(params[0]), params[1]
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    return lambda x: np.clip(np.rint(x / scale) + zero, lo, hi).astype(dtype)


def _dequantizer(params) -> Callable[[np.ndarray], np.ndarray]:
    """The model's integer output -> float32, with the file's scale and zero point (LiteRTBackend._finish's
    arithmetic)."""
    scale, zero = np.float32(params[0]), np.float32(params[1])
    return lambda out: ((out.astype(np.float32) - zero) * scale).astype(np.float32)


def _logits_output(interp) -> int:
    """The tensor index of the logits: the output named so, else the signature's first output (the first
    value the module returned: the app model returns logits, then probabilities), else the first listed."""
    details = interp.get_output_details()
    for d in details:
        if "logits" in d["name"]:
            return d["index"]
    try:
        signatures = interp._get_full_signature_list()  # {name: {"inputs": {..}, "outputs": {name: index}}}
        outputs = next(iter(signatures.values()))["outputs"]
        return int(outputs[sorted(outputs)[0]])
    except Exception:  # no signature (an old converter's file): the order the runtime lists
        return details[0]["index"]


def _sized(interp, index: int, shape) -> None:
    """Resize and allocate an interpreter for `shape` (LiteRT re-plans its buffers and XNNPACK's; the first
    allocation in a process logs the delegate's creation to fd 2, captured)."""
    from ..capture import captured_output

    with captured_output():
        interp.resize_tensor_input(index, list(shape), strict=False)
        interp.allocate_tensors()


class LiteRTBackend(Backend):
    """Options: xnnpack (bool, default on: LiteRT's default XNNPACK delegate; off: its built-in kernels)."""

    name = "litert"
    runtime = "LiteRT"

    def _load(self) -> ModelInfo:
        from .onnxrt import default_threads

        self.threads = self.threads or default_threads()
        self._xnnpack = bool(self.options.get("xnnpack", True))
        meta = read_metadata(self.path)
        interp = interpreter(self.path, self.threads, self._xnnpack)
        inputs, outputs = interp.get_input_details(), interp.get_output_details()
        if len(inputs) != 1:
            raise ArtifactError(f"{self.path}: has {len(inputs)} inputs; expected one image input")
        inp = inputs[0]
        out = next(d for d in outputs if d["index"] == _logits_output(interp))
        dtype, shape = np.dtype(inp["dtype"]), [int(d) for d in inp["shape"]]
        signature = [int(d) for d in inp.get("shape_signature", inp["shape"])]
        described = meta if meta and (meta.get("labels") or meta.get("normalization")) else None
        info = info_from_metadata(self.path, "litert", described)
        if dtype == np.uint8 and not inp["quantization"][0]:
            seen = "uint8"
        elif dtype == np.float32 or (dtype in _QUANTIZED and inp["quantization"][0]):
            seen = "float32"  # a quantized input takes floats through its scale and zero point
        else:
            seen = str(dtype)
        info.input_form, info.geometry = exact_contract(self.path, inp["name"], seen, shape,
                                                        info.geometry if info.described else None)
        info.input_name, info.output_name = inp["name"], "logits"
        self._fixed = shape[0] if signature[0] != -1 else None
        info.fixed_batch = self._fixed
        self._quantize = _quantizer(inp["quantization"], dtype) if dtype in _QUANTIZED and info.input_form == FLOAT_FORM \
            else None
        self._out_q = out["quantization"] if np.dtype(out["dtype"]) in _QUANTIZED else None
        self._dequantize = _dequantizer(self._out_q) if self._out_q is not None else None
        self._float_out = np.dtype(out["dtype"]) == np.float32
        self._in_index, self._out_index = inp["index"], out["index"]
        self._spare, self._spare_size = interp, None  # allocated at its first call
        self._runners: dict[int, Callable] = {}
        self._lock = threading.Lock()
        from ai_edge_litert import __version__ as version

        self.provider = f"litert {version} XNNPACK"
        return info

    def load(self):
        super().load()
        if self._fixed is None:  # a batch axis: each size its own interpreter, found once per shape by fast_run
            runners, make, quantize, finish = self._runners, self._runner, self._quantize, self._finish
            plain = quantize is None and self._float_out
            out = self._dequantize or finish  # integer logits dequantized; float16 ones cast

            def call_for(batch):
                run = runners.get(len(batch)) or make(len(batch))
                if plain:  # float or uint8 (app) in, float out: the interpreter's call itself
                    return run
                if quantize is None:
                    return lambda x: out(run(x))
                return lambda x: out(run(quantize(x)))  # a full-integer model: its scale and zero point

            self.run = self.fast_run(None, self.run_failed, call_for)
        return self

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self._quantize is not None:
            x = self._quantize(x)
        if self._fixed is not None and len(x) != self._fixed:
            from .onnxrt import fixed_batches

            out = np.concatenate([self._call(part) for part in fixed_batches(x, self._fixed)])[:len(x)]
        else:
            out = self._call(x)
        return self._finish(out)

    def _finish(self, out: np.ndarray) -> np.ndarray:
        """The output as float32 logits: dequantized with the file's own scale and zero point where it is integer."""
        if self._dequantize is not None:
            return self._dequantize(out)
        return out if out.dtype == np.float32 else out.astype(np.float32)

    def _call(self, x: np.ndarray) -> np.ndarray:
        try:
            return (self._runners.get(len(x)) or self._runner(len(x)))(x)
        except Exception as exc:
            raise self.run_failed(exc, x) from None

    def _runner(self, n: int) -> Callable:
        """The call for batch size n: its own interpreter for the first INTERPRETERS sizes, else the spare one,
        resized when the size changes (see the module's notes)."""
        lock, ii, oi = self._lock, self._in_index, self._out_index
        with lock:
            if n in self._runners:
                return self._runners[n]
            if len(self._runners) < INTERPRETERS:
                def make() -> Callable:  # an interpreter sized for n, and its call (one thread at a time)
                    interp = interpreter(self.path, self.threads, self._xnnpack)
                    try:
                        _sized(interp, ii, [n, *self._shape_tail()])
                    except Exception as exc:
                        raise ArtifactError(f"{self.path}: LiteRT cannot run it at batch {n}: "
                                            f"{first_line(exc, 200)}") from None
                    put, invoke, get = interp.set_tensor, interp.invoke, interp.get_tensor

                    def run(x):
                        put(ii, x)
                        invoke()
                        return get(oi)

                    return run

                run = self._runners[n] = one_at_a_time(make)
                return run

        def spare(x):
            with lock:
                if self._spare_size != len(x):
                    _sized(self._spare, ii, x.shape)
                    self._spare_size = len(x)
                self._spare.set_tensor(ii, x)
                self._spare.invoke()
                return self._spare.get_tensor(oi)

        return spare

    def _shape_tail(self) -> list[int]:
        g = self.info.geometry
        return list(g.pixel_tail if self._native == UINT8_FORM else g.float_tail)

    def _close(self) -> None:
        self._runners.clear()
        self._spare = None


class BareLiteRT:
    """LiteRT's fastest hand-written call for a new input each time: an interpreter sized for that batch,
    `set_tensor / invoke / get_tensor`, with the file's own scale and zero point where it is full-integer (floats
    in, float logits out, as a user needs them). What it leaves out is what the backend adds: the input checks, the
    lock and the dispatch by batch size."""

    def __init__(self, path, threads: int | None, defaults: bool = False):
        from .onnxrt import default_threads

        self.path, self.defaults = path, defaults
        self.threads = None if defaults else threads or default_threads()
        interp = self._interpreter()
        probe = interp.get_input_details()[0]
        signature = probe.get("shape_signature", probe["shape"])
        self.fixed = int(probe["shape"][0]) if int(signature[0]) != -1 else None
        self.index = probe["index"]
        dtype = np.dtype(probe["dtype"])
        self.quantize = _quantizer(probe["quantization"], dtype) if dtype in _QUANTIZED and len(probe["shape"]) == 4 \
            else None
        logits = next(d for d in interp.get_output_details() if d["index"] == _logits_output(interp))
        self.dequantize = _dequantizer(logits["quantization"]) if np.dtype(logits["dtype"]) in _QUANTIZED else None

    def call_for(self, x: np.ndarray) -> Callable:
        from .onnxrt import fixed_batches

        interp = self._interpreter()
        parts = fixed_batches(x, self.fixed) if self.fixed is not None and len(x) != self.fixed else [x]
        _sized(interp, self.index, x.shape if self.fixed is None else [self.fixed, *x.shape[1:]])
        out = _logits_output(interp)
        put, invoke, get, index, quantize = interp.set_tensor, interp.invoke, interp.get_tensor, self.index, self.quantize
        dequantize = self.dequantize
        if len(parts) == 1 and quantize is None and dequantize is None:  # as a user writes it: set, invoke, get
            def one():
                put(index, x)
                invoke()
                return get(out)

            return one
        if len(parts) == 1:  # a full-integer file: its input quantized, its logits dequantized
            def one_quantized():
                put(index, x if quantize is None else quantize(x))
                invoke()
                return get(out) if dequantize is None else dequantize(get(out))

            return one_quantized

        def call():
            outs = []
            for part in parts:
                put(index, part if quantize is None else quantize(part))
                invoke()
                outs.append(get(out) if dequantize is None else dequantize(get(out)))
            return outs

        return call

    def _interpreter(self):
        """mnistkit's interpreter (its threads, XNNPACK), or with `defaults` LiteRT's own: `Interpreter(model_path)`."""
        if not self.defaults:
            return interpreter(self.path, self.threads)
        from ai_edge_litert.interpreter import Interpreter

        from ..capture import captured_output

        check_model(self.path)
        with captured_output():
            return Interpreter(model_path=str(self.path))


PROBE = Path(__file__).resolve().parent.parent / "assets" / "probe.tflite"  # y = 2x + 1, float32 [4]


def self_check() -> str:
    """doctor's line: the Interpreter really runs a model (assets/probe.tflite; scripts/make_probe_tflite.py)."""
    interp = interpreter(PROBE, 1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.arange(4, dtype=np.float32))
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    if out.tolist() != [1.0, 3.0, 5.0, 7.0]:
        raise RuntimeError(f"y = 2x + 1 gave {out.tolist()}")
    return "the Interpreter runs a model"


# ---------------------------------------------------------------------------------------------
# mnistkit optimize's option space for LiteRT (BackendSpec.plan_options)

XNNPACK_FP32 = ("XNNPACK is LiteRT's fp32 CPU path; without it the built-in reference kernels run (only int8 files "
                "have a second optimized path to compare)")


def plan_options(target, threads: int, ctx) -> list[dict]:
    """XNNPACK on, and off for int8 files (LiteRT's built-in int8 kernels are a second optimized path)."""
    from ..formats import FORMATS

    fmt = FORMATS.get(target.format)
    if fmt is not None and fmt.quantized:
        return [{}, {"xnnpack": False}]
    ctx.prune(f"{target.path.name} on litert, {threads} thread{'s' if threads > 1 else ''}, XNNPACK off", XNNPACK_FP32)
    return [{}]
