"""OpenVINO on the CPU plugin, running mnistkit's ONNX files directly (float, app-ready, int8 and fp16).

Imports openvino, onnx (for the metadata OpenVINO's ONNX frontend does not keep) and numpy: no torch.

Choices, measured or documented:
- INFERENCE_PRECISION_HINT f32: on CPUs with bf16 or AMX the plugin's default runs float models in bf16
  (~1e-2 off PyTorch); mnistkit's parity contract is fp32.
- PERFORMANCE_HINT LATENCY with one synchronous infer request: bench times one call at a time (the
  THROUGHPUT hint with synchronous calls ran at one-thread speed, issue 13's measurement).
- INFERENCE_NUM_THREADS = --threads, else every usable core, like ONNX Runtime.
- Batch sizes up to STATIC_MAX get their own static-shape compiled model with a pre-bound input buffer
  (the first STATIC_SHAPES sizes seen): the input is copied into it and `infer()` runs with no per-call
  tensor set-up. At batch 1 that is 28 us against 62 us for `infer({0: x})` on the dynamic model
  (1 thread, 2-vCPU EPYC, interleaved); from batch 64 up the two are the same. Compiling a shape costs
  25-45 ms, once. The path is fixed per batch size at its first call, because the static model's
  kernels can differ from the dynamic one's in the last bits (4e-8 seen on the uint8 app model): a
  size always runs the same way, so repeated calls are bit-identical.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from ..artifacts import ModelInfo, onnx_io_info, onnx_metadata
from ..errors import ArtifactError, first_line
from .base import Backend

OV_TYPES = {"f32": "float32", "u8": "uint8"}
STATIC_MAX = 256  # above it the static path gains nothing measurable (1024: 4.54 vs 4.43 ms dynamic)
STATIC_SHAPES = 4


def compile_options(threads: int) -> dict:
    """The compile options mnistkit uses everywhere (backend and bench baseline alike)."""
    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": int(threads)}


def _compile(path, threads: int):
    """(read model, compiled model) on the CPU plugin; one ArtifactError line when OpenVINO cannot."""
    import openvino as ov

    from ..capture import captured_output

    core = ov.Core()
    with captured_output():
        try:
            model = core.read_model(str(path))
            return model, core.compile_model(model, "CPU", compile_options(threads))
        except Exception as exc:
            raise ArtifactError(f"{path}: OpenVINO cannot load it: {first_line(exc, 300)}") from None


def _logits_output(outputs) -> int:
    """Index of the output named logits (OpenVINO may show another of the tensor's names first)."""
    for i, o in enumerate(outputs):
        if "logits" in o.get_names():
            return i
    return 0


class OpenVinoBackend(Backend):
    name = "openvino"

    def _load(self) -> ModelInfo:
        import openvino as ov

        from .onnxrt import default_threads

        self.threads = self.threads or default_threads()
        model, compiled = _compile(self.path, self.threads)
        if len(model.inputs) != 1:
            raise ArtifactError(f"{self.path}: has {len(model.inputs)} inputs; expected one image input")
        inp = model.inputs[0]
        dtype = OV_TYPES.get(inp.get_element_type().get_type_name())
        if dtype is None:
            raise ArtifactError(f"{self.path}: input is {inp.get_element_type().get_type_name()}; expected float32 "
                                "[N,1,28,28] or uint8 [N,28,28]")
        shape = [d.get_length() if d.is_static else None for d in inp.get_partial_shape()]
        out_index = _logits_output(compiled.outputs)
        try:
            meta = onnx_metadata(self.path)
        except ImportError:  # the runtime-only install without onnx: the file's contract still decides
            meta = {}
        names = ["logits" if "logits" in o.get_names() else o.get_any_name() for o in compiled.outputs]
        info = onnx_io_info(self.path, meta, inp.get_any_name(), dtype, shape, names)
        self._model, self._out_index = model, out_index
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        self._static: dict[int, tuple] = {}  # batch -> (request, bound input buffer)
        self._seen: set[int] = set()
        self._shape = [d if d else -1 for d in shape]
        self._reshape = info.input_form == "float" and len(shape) != 4
        self._fixed = info.fixed_batch
        self.provider = f"openvino {ov.__version__.split('-')[0]} CPU"
        return info

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self._reshape:
            x = x.reshape([len(x), *self._shape[1:]])
        if self._fixed is not None and len(x) != self._fixed:
            from .onnxrt import fixed_batches

            return np.concatenate([self._run(part) for part in fixed_batches(x, self._fixed)])[:len(x)]
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        import openvino as ov

        n = len(x)
        try:
            with self._lock:  # the requests are not safe to share between threads
                static = self._static.get(n)
                if static is None and n not in self._seen and n <= STATIC_MAX and len(self._static) < STATIC_SHAPES \
                        and self._fixed is None:
                    static = self._static[n] = self._compile_static(x)
                self._seen.add(n)  # a size first seen on the dynamic model stays there
                if static is not None:
                    request, buffer = static
                    np.copyto(buffer, x)
                else:
                    request = self._request
                    request.set_input_tensor(ov.Tensor(np.ascontiguousarray(x), shared_memory=True))
                request.infer()
                out = request.get_output_tensor(self._out_index).data.copy()  # fresh memory, never the request's
        except Exception as exc:
            raise ArtifactError(f"{self.path}: OpenVINO failed running it on {x.dtype} {list(x.shape)}: "
                                f"{first_line(exc, 240)}") from None
        return out if out.dtype == np.float32 else out.astype(np.float32)

    def _compile_static(self, x: np.ndarray) -> tuple:
        """(request, input buffer bound to it) of the model compiled for exactly x's shape."""
        import openvino as ov

        model = self._model.clone()
        model.reshape(list(x.shape))
        compiled = ov.Core().compile_model(model, "CPU", compile_options(self.threads))
        request = compiled.create_infer_request()
        buffer = np.zeros(x.shape, x.dtype)
        request.set_input_tensor(ov.Tensor(buffer, shared_memory=True))
        return request, buffer

    def _close(self) -> None:
        self._request = self._model = None
        self._static.clear()


class BareOpenVino:
    """OpenVINO's fastest call a user writes by hand for one batch size, with mnistkit's compile options:
    the model compiled for exactly that shape, the input tensor bound once, `infer()` and the output
    read (issue 13's measurement, confirmed here: 2.2x faster than `infer({0: x})` at batch 1)."""

    def __init__(self, path, threads: int | None):
        from .onnxrt import default_threads

        self.path = path
        self.threads = threads or default_threads()
        model, compiled = _compile(path, self.threads)
        self.model = model
        self.index = _logits_output(compiled.outputs)
        self.shape = [d.get_length() if d.is_static else -1 for d in model.inputs[0].get_partial_shape()]

    def call_for(self, x: np.ndarray) -> Callable:
        import openvino as ov

        if len(self.shape) != x.ndim:
            x = x.reshape([len(x), *self.shape[1:]])
        model = self.model.clone()
        fixed = self.shape[0] if self.shape and self.shape[0] > 0 else None
        parts = [x] if fixed is None or len(x) == fixed else None
        if parts is None:
            from .onnxrt import fixed_batches

            parts = fixed_batches(x, fixed)
        else:
            model.reshape(list(x.shape))
        compiled = ov.Core().compile_model(model, "CPU", compile_options(self.threads))
        request, index = compiled.create_infer_request(), self.index
        tensors = [ov.Tensor(np.ascontiguousarray(p), shared_memory=True) for p in parts]
        if len(tensors) == 1:
            request.set_input_tensor(tensors[0])

            def call():
                request.infer()
                return request.get_output_tensor(index).data.copy()

            return call

        def split_call():
            outs = []
            for t in tensors:
                request.set_input_tensor(t)
                request.infer()
                outs.append(request.get_output_tensor(index).data.copy())
            return outs

        return split_call
