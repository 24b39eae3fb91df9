"""Quantized (int8) and half-precision (fp16) ONNX artifacts, made with ONNX Runtime's own tools.

- static int8, QDQ format, per-channel weights (onnxruntime.quantization.quantize_static), calibrated on
  real training images drawn reproducibly (seeded) from the training split, through the artifact's own
  input form; ONNX Runtime's quantization pre-processing (quant_pre_process) runs first. The
  calibration method (MinMax, Entropy, Percentile), each with every weighted layer quantized and with the
  last one (the classifier) kept in float, is chosen on held-out training images (never the test split,
  which judges the result): top-1 agreement with the float model first, then accuracy; every candidate's
  scores are recorded. Keeping the classifier in float (with what follows it: an app variant's Softmax) is
  the usual remedy when int8 costs too much accuracy: on a Fashion-MNIST MLP trained on another CPU it
  turned a failing -0.36-point drop into -0.19 (README), for 640 float multiply-adds.
- dynamic int8 (quantize_dynamic), for comparison.
- fp16 weights with float32 inputs and outputs kept (onnxruntime.transformers.float16, keep_io_types),
  for GPUs.

Nothing here decides whether an artifact is good enough: the exporter's accuracy gate does, on the full
test split, against the float model.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ExportError, first_line
from .pixels import native_batch

CALIBRATION_BATCH = 64  # images per calibration batch; every batch is whole (see calibration_data)
CALIBRATION_IMAGES = 512  # "a few hundred": more changed nothing measurable on the MLP (benchmarks/README.md)
CALIBRATION_SEED = 0
SELECTION_IMAGES = 5000  # held-out training images that choose the calibration method
METHODS = ("MinMax", "Entropy", "Percentile")
FLOAT_LAST = "+float-classifier"  # a candidate's suffix: the last weighted layer stays float
CANDIDATES = METHODS + tuple(m + FLOAT_LAST for m in METHODS)  # in order of preference on a tie
WEIGHTED_OPS = ("Gemm", "MatMul", "Conv", "ConvTranspose")


@dataclass
class CalibrationData:
    """Training images for calibration and for choosing the method (uint8, dataset polarity)."""

    images: np.ndarray  # uint8 [n,H,W] or [n,H,W,C], the model's geometry
    selection_images: np.ndarray
    selection_labels: np.ndarray
    seed: int
    source: str

    def describe(self) -> dict:
        return {"images": int(len(self.images)), "seed": self.seed, "source": self.source,
                "selection_images": int(len(self.selection_images))}


def calibration_data(dataset: str | None, data_dir=None, n: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED,
                     selection: int = SELECTION_IMAGES, meta: dict | None = None) -> CalibrationData:
    """Draw `n` calibration images and `selection` held-out images from the training split (seeded), at the
    model's geometry (`meta`: see imagesets.model_split)."""
    from .imagesets import model_split

    sizes = {}

    def drawn(total: int) -> np.ndarray:  # the images drawn, before the model's transforms are applied to them
        k = min(n, max(1, total // 2))  # small training sets keep half for choosing the method
        if k > CALIBRATION_BATCH:  # whole batches: ONNX Runtime's Entropy and Percentile calibrators stack the
            k -= k % CALIBRATION_BATCH  # batches' histograms and fail on a short last one (800: 400 = 6x64 + 16)
        sizes["cal"] = k
        return np.random.default_rng(seed).permutation(total)[:k + selection]

    split = model_split("train", dataset, data_dir, meta, pick=drawn)
    k = sizes["cal"]
    return CalibrationData(split.images[:k], split.images[k:], split.labels[k:], seed,
                           f"{dataset} training split" if dataset else f"training images in {split.source}")


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over a fixed array, in batches of CALIBRATION_BATCH (or one
    batch of all, when there are fewer)."""

    def __init__(self, name: str, data: np.ndarray, batch: int = CALIBRATION_BATCH):
        self.name, self.data, self.batch, self.i = name, data, batch, 0

    def get_next(self):
        if self.i >= len(self.data):
            return None
        out = {self.name: self.data[self.i:self.i + self.batch]}
        self.i += self.batch
        return out

    def rewind(self):
        self.i = 0


def preprocess_for_quantization(src: Path, dst: Path) -> None:
    """ONNX Runtime's quantization pre-processing: symbolic shape inference and graph optimization.

    Without it the dynamo exporter's Gemm nodes can stay float under dynamic quantization.
    """
    from onnxruntime.quantization import quant_pre_process

    from .capture import captured_output

    with captured_output():
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)


def top1(path: Path, images: np.ndarray) -> np.ndarray:
    """An ONNX file's top-1 class for uint8 images, through mnistkit's ONNX Runtime backend."""
    from .backends.onnxrt import OnnxRuntimeBackend

    with OnnxRuntimeBackend(path) as backend:
        return backend.run_chunked(images).argmax(1)


def accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX file on uint8 images."""
    return float((top1(path, images) == labels).mean())


def float_tail(path: Path) -> list[str]:
    """The graph's last Gemm/MatMul/Conv node (the classifier, in a feed-forward model) and every node
    downstream of it (a Softmax, say: quantizing its input would quantize the logits themselves)."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    weighted = [i for i, n in enumerate(nodes) if n.op_type in WEIGHTED_OPS]
    if len(weighted) < 2 or not all(n.name for n in nodes):  # one layer kept float is no int8 model
        return []
    tail, produced = [nodes[weighted[-1]].name], set(nodes[weighted[-1]].output)
    for n in nodes[weighted[-1] + 1:]:  # graph order is topological (checked by the ONNX checker)
        if produced.intersection(n.input):
            tail.append(n.name)
            produced.update(n.output)
    return tail


def quantize_static_qdq(float_path: Path, out_path: Path, calib: CalibrationData, input_name: str, input_form: str,
                        mean: float, std: float, candidates=CANDIDATES) -> dict:
    """Static int8 QDQ, per-channel weights, uint8 activations; the best calibration candidate wins.

    Returns what the manifest records: the candidate chosen (its calibration method, and the layers kept in
    float if any), every candidate's held-out accuracy and agreement, and the calibration data's description.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .capture import captured_output

    data = native_batch(calib.images, input_form, mean, std)
    scores: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mnistkit-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        preprocess_for_quantization(float_path, pre)
        tail = float_tail(pre)
        reference = top1(float_path, calib.selection_images)
        agreement: dict[str, float] = {}
        best = None
        for name in candidates:
            method, keep_float = name.removesuffix(FLOAT_LAST), name.endswith(FLOAT_LAST)
            if keep_float and not tail:
                continue
            candidate = Path(tmp) / f"{name}.onnx"
            with captured_output() as cap:
                try:
                    quantize_static(
                        str(pre), str(candidate), _Reader(input_name, data), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method),
                        nodes_to_exclude=tail if keep_float else [],
                    )
                except Exception as exc:
                    raise ExportError(f"onnx-int8: quantize_static ({name}) failed: {first_line(exc, 200)}"
                                      + (f" [{cap.text.strip().splitlines()[-1][:120]}]" if cap.text.strip() else "")) from None
            answers = top1(candidate, calib.selection_images)
            scores[name] = round(float((answers == calib.selection_labels).mean()), 6)
            agreement[name] = round(float((answers == reference).mean()), 6)
            # the gate judges both: agreement with the float model first (it varies less than accuracy
            # between image sets), then accuracy; ties keep the earlier (simpler) candidate
            if best is None or (agreement[name], scores[name]) > (agreement[best], scores[best]):
                best = name
        Path(tmp, f"{best}.onnx").replace(out_path)
    return {"scheme": "static int8, QDQ, per-channel weights (int8), uint8 activations", "method": best,
            "float_nodes": tail if best.endswith(FLOAT_LAST) else [],
            "candidates": scores, "agreement": agreement, "calibration": calib.describe()}


def quantize_dynamic_int8(float_path: Path, out_path: Path) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .capture import captured_output

    with tempfile.TemporaryDirectory(prefix="mnistkit-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        preprocess_for_quantization(float_path, pre)
        with captured_output():
            quantize_dynamic(str(pre), str(out_path), weight_type=QuantType.QInt8, per_channel=False)
    return {"scheme": "dynamic int8 (weights int8, activations quantized per call)", "method": "dynamic"}


def topological_sort(graph) -> None:
    """Re-order a graph's nodes so each comes after its inputs' producers (in place).

    onnxconverter's float16 conversion (also shipped in onnxruntime.transformers) can insert Cast nodes
    out of order, which onnx.checker then rejects.
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progressed = False
        for node in list(pending):
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                pending.remove(node)
                progressed = True
        if not progressed:
            raise ExportError("onnx-fp16: the converted graph has a cycle or a dangling input")
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(float_path: Path, out_path: Path) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from .capture import captured_output

    model = onnx.load(str(float_path))
    with captured_output():
        half = convert_float_to_float16(model, keep_io_types=True, op_block_list=_fp16_blocked())
    topological_sort(half.graph)
    onnx.save(half, str(out_path))
    return {"scheme": "float16 weights and activations, float32 inputs and outputs (keep_io_types); "
                      "softmax and log-softmax in float32",
            "method": "fp16"}


# Operators kept in float32 inside the fp16 file, besides the converter's own list (its classical-ML operators):
# softmax and log-softmax. A confident model's smaller probabilities are below float16's 6e-8: a log-softmax that a
# runtime computes as log(softmax(x)) in float16 (onnx.reference does) gives -inf where PyTorch gives -20; ONNX
# Runtime's and OpenVINO's fused kernels happened not to. In float32 every runtime agrees, for two Casts.
def _fp16_blocked() -> list[str]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return [*DEFAULT_OP_BLOCK_LIST, "Softmax", "LogSoftmax"]
