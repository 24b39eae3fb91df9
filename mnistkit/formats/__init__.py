"""The format table: the single source of what mnistkit writes, recognises and how it judges each file.

Torch-free (writers import torch when they run), so the CLI's choices cost nothing. Everything that
names formats derives from the two tables below: `--format` choices and parsing, the exporter's
dispatch, export validation (batch-axis checks, accuracy gates), verify's and bench's tolerances,
file-kind detection, the README's formats table (checked by a test) and the test matrix (a
meta-test checks every format x backend x device has a tolerance and a test).

A new format is one writer module in this package plus one FORMATS row (and a KINDS row, with its
sniffer in kinds.py, when it brings a new kind of file). Rows name their writers as "module:function"
strings, imported when a format is written: the table sits low in the package (artifacts and the
backend registry read it), the writers high (they run runtimes to quantize and measure).

Why a package and not one module: the writers are the bulk (ONNX's export, checks and quantization;
torch's archives; the next issue's LiteRT, ExecuTorch and OpenVINO converters), and one module per
toolchain keeps each readable on its own, while the rows stay together here, where a reader
compares them.

How each tolerance was measured (benchmarks/parity.py over the full Fashion-MNIST test split,
results in benchmarks/results/parity-cpu.json): ONNX Runtime differs from PyTorch eager by at most
1.9e-5 on the MLP trained 10 epochs and 4.8e-6 on the CNN (it fuses Gemm+Relu and sums in another
order); OpenVINO's CPU plugin (fp32 pinned) by 7.6e-6 on the MLP; ExecuTorch's XNNPACK by 7e-8 on
the MLP and 9e-8 on the CNN (export-time measurement); TorchScript and torch.export
run the same ATen kernels and match exactly. 1e-4 is 5x the worst seen, and a real fault (a wrong
normalization moves logits by > 0.1) cannot hide under it.
"""

from __future__ import annotations

from ..compare import Tolerance
from ..errors import InvalidInputError
from . import kinds
from .spec import DEFAULT_ACCURACY_BUDGET, BatchCheck, FormatSpec, KindSpec, WriteContext

__all__ = ["APP_BUNDLE_FILE", "APP_FORMAT", "COMPUTE_TOLERANCE", "DEFAULT_ACCURACY_BUDGET", "DEFAULT_FORMAT",
           "DEFAULT_OPSET", "DEVICES", "EXTERNAL_DEVICE_KIND", "FORMATS", "FORMAT_CHOICES", "KINDS", "OPSET_RANGE",
           "REFERENCE_KIND", "REFERENCE_SOURCES", "BatchCheck", "FormatSpec", "KindSpec", "WriteContext",
           "exportable", "format_for", "parse_formats", "tolerance_for"]

DEVICES = ("cpu", "cuda")
REFERENCE_KIND = "checkpoint"  # the kind of file the PyTorch reference is (its KINDS row opens it on the reference)
REFERENCE_SOURCES = (REFERENCE_KIND, "state_dict")  # the sources (source.Source.description["kind"]) that are files
# a reference can be loaded from again: a checkpoint, or a state_dict with its class
DEFAULT_FORMAT = "onnx"  # what `export` writes when no --format is given
APP_FORMAT = "onnx-app"  # what an export's app/ bundle holds (the embedding contract, README "Embedding")
APP_BUNDLE_FILE = "model.onnx"  # its name inside app/
EXTERNAL_DEVICE_KIND = "onnx"  # the kind of file the JavaScript devices run (onnxruntime-node, onnxruntime-web)

# Opsets this exporter writes faithfully: 18+ are the dynamo exporter's own; 17 comes through
# ONNX's version converter; 26 is the newest onnxruntime 1.31 loads (27 fails to load, measured).
# The exporter silently writes 18 for some requests outside its range (7, 9, 13 and 30 were seen),
# so the written opset is checked after every export as well.
OPSET_RANGE = (17, 26)
DEFAULT_OPSET = 18
TORCHSCRIPT_NOTE = ("TorchScript is deprecated upstream in favour of torch.export (model.pt2); "
                    "model.ts is written for runtimes that still need it")
_ONNX = "mnistkit.formats.onnx"  # writer modules, imported when a format is written
_TORCH = "mnistkit.formats.torch_archives"
_ET = "mnistkit.formats.executorch"
_LITERT = "mnistkit.formats.litert"
_OV = "mnistkit.formats.openvino"
_NCNN = "mnistkit.formats.ncnn"
_MNN = "mnistkit.formats.mnn"

# ---- tolerances, each with how it was measured

FP32_CPU = Tolerance(1e-4, 1.0, why="fp32 on CPU: worst seen 1.9e-5 (summation order); 5x margin")
# CUDA: TF32 is pinned off in mnistkit's torch backends, but cuBLAS/cuDNN pick other reduction orders
# and ONNX Runtime's CUDA provider may use TF32 kernels: ~1e-3 is the documented gap. Top-1 may flip on
# near-ties, so agreement is 99.9 %.
FP32_CUDA = Tolerance(2e-3, 0.999, why="CUDA: reduction order and possible TF32 in ORT's kernels")
FP32 = {"cpu": FP32_CPU, "cuda": FP32_CUDA}
# Quantized and half-precision artifacts are judged by what matters: top-1 agreement with the float
# model and the accuracy delta on the test split (the budget, 0.3 points by default, is the export's
# --max-accuracy-drop). Measured on the Fashion-MNIST MLP (benchmarks/results/quantization-*.json):
# static int8 max_abs 1.9 with 98.9-99.5 % top-1 agreement; dynamic int8 0.16 and 99.6-99.8 %; fp16 5e-3
# and 99.98 % on ONNX Runtime, 4.1e-2 on onnx.reference (numpy's float16 matmuls round more). Accuracy
# moved by -0.15 to +0.04 points.
_INT8 = Tolerance(None, 0.98, max_accuracy_drop=DEFAULT_ACCURACY_BUDGET,
                  why="int8: logits move (~1); top-1 and accuracy decide")
INT8 = {"cpu": _INT8, "cuda": _INT8}
_FP16 = Tolerance(1e-1, 0.995, max_accuracy_drop=DEFAULT_ACCURACY_BUDGET,
                  why="fp16: worst seen 4.1e-2 (onnx.reference); 2.5x margin")
FP16 = {"cpu": _FP16, "cuda": _FP16}
# A runtime option may make a float file compute in less than fp32 (OpenVINO's bf16 precision hint, on CPUs with
# AVX-512-BF16 or AMX); the configuration is then judged like a quantized one. Measured with OpenVINO 2026.4.1's
# bf16 on the full Fashion-MNIST test split (benchmarks/bf16.py, 2-vCPU EPYC Zen 4,
# benchmarks/results/bf16-openvino-zen4-2core.json): the MLP's logits moved by up to 0.18 and the CNN's by 0.06,
# both with 99.95 % top-1 agreement and accuracy within 0.03 points (and 1.4-1.9x faster than f32).
_BF16 = Tolerance(None, 0.99, max_accuracy_drop=DEFAULT_ACCURACY_BUDGET,
                  why="bf16 compute (8-bit mantissa): logits move (~0.1); top-1 and accuracy decide")
COMPUTE_TOLERANCE = {"bf16": {"cpu": _BF16, "cuda": _BF16}}
SAME_KERNELS = {"cpu": Tolerance(1e-5, 1.0, why="PyTorch vs itself: same kernels"), "cuda": FP32_CUDA}

# ---- batch-axis checks at export
# A graph must not depend on the batch: float, static int8 and fp16 match exactly (measured).
# Dynamic int8 takes activation scales from each call's whole batch: its logits move by ~0.1 with the
# batch and 99.5 % of top-1 answers stay; it is held to 95 %.
EXACT_BATCH = BatchCheck(atol=1e-4, why="float, static int8 and fp16 graphs matched exactly at every batch")
DYNAMIC_BATCH = BatchCheck(atol=None, min_agreement=0.95,
                           why="dynamic int8 rescales activations per call: ~0.1 logit moves, 99.5 % top-1 kept")

# ---- the kinds of file, recognised by their bytes (the first 8, and a zip archive's member names)

_ARCHIVE_GATE = "mnistkit.safeload:check_archive"
KINDS: dict[str, KindSpec] = {k.name: k for k in (
    KindSpec("checkpoint", "pytorch", kinds.checkpoint, "a torch.save archive of weights (+ mnistkit metadata)",
             gate=_ARCHIVE_GATE),
    KindSpec("torchscript", "torchscript", kinds.torchscript, "a TorchScript archive",
             metadata="mnistkit.artifacts:archive_metadata", gate=_ARCHIVE_GATE),
    KindSpec("exported-program", "exported-program", kinds.exported_program, "a torch.export archive",
             metadata="mnistkit.artifacts:archive_metadata", gate=_ARCHIVE_GATE),
    KindSpec("onnx", "onnxruntime", kinds.onnx, "an ONNX model (protobuf)", flops=f"{_ONNX}:flops_per_image",
             metadata="mnistkit.artifacts:onnx_metadata", gate="mnistkit.gate.onnx:check",
             details="mnistkit.describe:onnx_details"),
    KindSpec("executorch", "executorch", kinds.executorch, "an ExecuTorch program (flatbuffer)",
             metadata="mnistkit.backends.executorch:read_metadata", gate="mnistkit.gate.executorch:check"),
    KindSpec("openvino-ir", "openvino", kinds.openvino_ir, "an OpenVINO IR graph (.xml, weights in the .bin beside it)",
             metadata="mnistkit.backends.openvino:ir_metadata", gate="mnistkit.gate.openvino:check"),
    KindSpec("litert", "litert", kinds.litert, "a LiteRT model (.tflite flatbuffer)",
             metadata="mnistkit.backends.litert:read_metadata", gate="mnistkit.gate.litert:check"),
    KindSpec("ncnn", "ncnn", kinds.ncnn_param, "an ncnn graph (.param text, weights in the .bin beside it)",
             metadata="mnistkit.backends.ncnn:read_metadata", gate="mnistkit.gate.ncnn:check"),
    KindSpec("mnn", "mnn", kinds.mnn, "an MNN model (.mnn flatbuffer)",
             metadata="mnistkit.backends.mnn:read_metadata", gate="mnistkit.gate.mnn:check"),
)}

# ---- the formats

FORMATS: dict[str, FormatSpec] = {f.name: f for f in (
    FormatSpec("checkpoint", "model.pt", "checkpoint",
               "mnistkit checkpoint: weights + self-description (written by `mnistkit train`; the reference)",
               SAME_KERNELS),
    FormatSpec("onnx", "model.onnx", "onnx",
               "ONNX, float32 [N,1,28,28] normalized in, logits out; one self-contained file",
               FP32, f"{_ONNX}:write_float", batch_check=EXACT_BATCH),
    FormatSpec("onnx-app", "model-app.onnx", "onnx",
               "app-ready ONNX: uint8 pixels [N,28,28] in, normalization inside, logits + probabilities out",
               FP32, f"{_ONNX}:write_float", input_form="uint8", batch_check=EXACT_BATCH),
    FormatSpec("torchscript", "model.ts", "torchscript",
               "TorchScript (traced, frozen); deprecated upstream in favour of torch.export",
               FP32, f"{_TORCH}:write_torchscript", notice=TORCHSCRIPT_NOTE),
    FormatSpec("exported-program", "model.pt2", "exported-program",
               "torch.export ExportedProgram with a dynamic batch dimension",
               FP32, f"{_TORCH}:write_exported_program"),
    FormatSpec("executorch", "model.pte", "executorch",
               "ExecuTorch program, XNNPACK delegate, dynamic batch (up to 1024 per call), float32 in, logits out",
               FP32, f"{_ET}:write_executorch", batch_check=EXACT_BATCH),
    FormatSpec("openvino", "model.xml", "openvino-ir",
               "OpenVINO IR (model.xml + model.bin), fp32 weights, dynamic batch, converted from the float ONNX",
               FP32, f"{_OV}:write_openvino_ir", base="onnx", batch_check=EXACT_BATCH, companions=("model.bin",)),
    FormatSpec("litert", "model.tflite", "litert",
               "LiteRT (ex-TensorFlow Lite), fp32, dynamic batch, float32 in, logits out; runs without torch",
               FP32, f"{_LITERT}:write_litert", batch_check=EXACT_BATCH),
    FormatSpec("litert-app", "model-app.tflite", "litert",
               "app-ready LiteRT: uint8 pixels [N,28,28] in, normalization inside, logits + probabilities out",
               FP32, f"{_LITERT}:write_litert", input_form="uint8", batch_check=EXACT_BATCH),
    FormatSpec("ncnn", "model.ncnn.param", "ncnn",
               "ncnn graph + fp32 weights (.ncnn.bin) converted by pnnx, one image per extractor (any batch), "
               "float32 in, logits out; metadata in model.ncnn.json",
               FP32, f"{_NCNN}:write_ncnn", batch_check=EXACT_BATCH, companions=("model.ncnn.bin", "model.ncnn.json")),
    FormatSpec("mnn", "model.mnn", "mnn",
               "MNN, fp32, dynamic batch, converted from the float ONNX by MNN's converter; float32 in, logits out",
               FP32, f"{_MNN}:write_mnn", base="onnx", batch_check=EXACT_BATCH),
    FormatSpec("onnx-int8", "model-int8.onnx", "onnx",
               "static int8 (QDQ, per-channel weights), calibrated on training images; float32 in, logits out",
               INT8, f"{_ONNX}:write_int8_static", base="onnx", precision="int8", batch_check=EXACT_BATCH),
    FormatSpec("onnx-int8-app", "model-int8-app.onnx", "onnx",
               "static int8 app-ready: uint8 pixels in, logits + probabilities out",
               INT8, f"{_ONNX}:write_int8_static", input_form="uint8", base="onnx-app", precision="int8",
               batch_check=EXACT_BATCH),
    FormatSpec("onnx-int8-dynamic", "model-int8-dynamic.onnx", "onnx",
               "dynamic int8 (weights int8, activations quantized per call), for comparison",
               INT8, f"{_ONNX}:write_int8_dynamic", base="onnx", precision="int8", batch_check=DYNAMIC_BATCH),
    FormatSpec("executorch-int8", "model-int8.pte", "executorch",
               "ExecuTorch static int8 (PT2E, XNNPACK quantizer, per-channel weights), calibrated on training images; "
               "float32 in, logits out",
               INT8, f"{_ET}:write_executorch_int8", precision="int8", batch_check=EXACT_BATCH),
    FormatSpec("litert-int8", "model-int8.tflite", "litert",
               "LiteRT int8 by its own quantizer: dynamic range or full integer (calibrated), the better on held-out "
               "training images",
               INT8, f"{_LITERT}:write_litert_int8", base="litert", precision="int8", batch_check=EXACT_BATCH),
    FormatSpec("mnn-int8", "model-int8.mnn", "mnn",
               "MNN with int8 weights (its converter's weight quantization), float compute; float32 in, logits out",
               INT8, f"{_MNN}:write_mnn", base="onnx", precision="int8", batch_check=EXACT_BATCH),
    FormatSpec("onnx-fp16", "model-fp16.onnx", "onnx",
               "float16 weights, float32 input and output kept; for GPUs",
               FP16, f"{_ONNX}:write_fp16", base="onnx", precision="fp16", batch_check=EXACT_BATCH),
    FormatSpec("onnx-fp16-app", "model-fp16-app.onnx", "onnx",
               "float16 app-ready: uint8 pixels in, float32 logits + probabilities out",
               FP16, f"{_ONNX}:write_fp16", input_form="uint8", base="onnx-app", precision="fp16", batch_check=EXACT_BATCH),
)}


def exportable() -> list[str]:
    """The formats `mnistkit export` writes (every row with a writer), in table order."""
    return [name for name, f in FORMATS.items() if f.exportable]


FORMAT_CHOICES = (*exportable(), "all")


def parse_formats(formats) -> list[str]:
    """`--format` values (names, comma-separated lists, "all") -> format names, in order, once each.

    The one parser: the CLI's option callback and the library's export_model both call it."""
    if isinstance(formats, str):
        formats = [formats]
    names: list[str] = []
    for f in formats or ():
        for part in str(f).split(","):
            part = part.strip()
            if not part:
                continue
            if part == "all":
                names.extend(exportable())
            elif part in FORMATS and FORMATS[part].exportable:
                names.append(part)
            else:
                raise InvalidInputError(f"unknown format {part!r}; expected one of: {', '.join(FORMAT_CHOICES)}")
    return list(dict.fromkeys(names))


def format_for(kind: str, recorded: str | None) -> str:
    """The format a file is judged as: the one it records, when that is a known format of its kind
    (a file from a newer mnistkit, or from elsewhere, is judged as its kind's plain format)."""
    if recorded in FORMATS and FORMATS[recorded].kind == kind:
        return recorded
    return kind


def tolerance_for(fmt: str, device: str, computes_in: str | None = None) -> Tolerance:
    """The tolerance of a format (see format_for) on a device; of a float format run by a runtime configured to
    compute in less (`computes_in`: "bf16"), that precision's (COMPUTE_TOLERANCE). No fallback: a gap is a bug,
    and the meta-test fails on it before any user sees it."""
    try:
        if computes_in in COMPUTE_TOLERANCE and FORMATS[fmt].precision == "fp32":
            return COMPUTE_TOLERANCE[computes_in][device]
        return FORMATS[fmt].tolerance[device]
    except KeyError:
        raise InvalidInputError(f"no tolerance for format {fmt!r} on {device!r}; formats: {', '.join(FORMATS)}, "
                                f"devices: {', '.join(DEVICES)}") from None
