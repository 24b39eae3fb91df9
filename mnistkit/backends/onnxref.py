"""onnx.reference: ONNX's own Python implementation of the operators.

Slow, but written independently of ONNX Runtime, so agreement between the two is evidence that
the exported graph means what PyTorch computed, not that two copies of one kernel agree.
"""

from __future__ import annotations

import numpy as np

from ..artifacts import from_onnx_props, onnx_io_info, onnx_signature
from ..errors import ArtifactError, UnsupportedModelError, first_line
from .base import Backend

ONNX_ELEM = {1: "float32", 2: "uint8"}


class OnnxReferenceBackend(Backend):
    name = "onnx-reference"

    def _load(self):
        import onnx
        from onnx.reference import ReferenceEvaluator

        try:
            model = onnx.load(str(self.path))
            self._eval = ReferenceEvaluator(model)
        except Exception as exc:
            first = first_line(exc)
            if "No implementation for operator" in first:  # e.g. DequantizeLinear-18 in onnx 1.23
                raise UnsupportedModelError(f"onnx.reference {onnx.__version__} cannot run {self.path.name}: "
                                            f"{first[:200]}") from None
            raise ArtifactError(f"{self.path}: onnx cannot load it ({first[:200]})") from None
        self.provider = f"onnx.reference {onnx.__version__}"
        init_names = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in init_names]
        if len(inputs) != 1:
            raise ArtifactError(f"{self.path}: has {len(inputs)} inputs; expected one image input")
        inp = inputs[0]
        tt = inp.type.tensor_type
        dtype = ONNX_ELEM.get(tt.elem_type)
        if dtype is None:
            raise ArtifactError(f"{self.path}: input {inp.name!r} has element type {tt.elem_type}; "
                                f"expected float32 or uint8")
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        meta = from_onnx_props({p.key: p.value for p in model.metadata_props})
        info = onnx_io_info(self.path, meta, inp.name, dtype, shape, [onnx_signature(o) for o in model.graph.output],
                            "onnx")
        self._in, self._out = info.input_name, info.output_name
        self._shape = [d if d else -1 for d in shape]
        self._reshape = info.input_form == "float" and len(shape) != 4
        self._fixed = info.fixed_batch
        return info

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self._reshape:
            x = x.reshape([len(x), *self._shape[1:]])
        step = self._fixed or len(x)
        outs = [self._eval.run([self._out], {self._in: x[i:i + step]})[0] for i in range(0, len(x), step)]
        return np.concatenate(outs).astype(np.float32, copy=True)

    def _close(self):
        self._eval = None
