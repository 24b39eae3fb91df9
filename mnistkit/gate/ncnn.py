"""The gate for ncnn models (model.ncnn.param + model.ncnn.bin): the text graph read line by line before
ncnn's own parser sees it.

Checked, without the runtime: the magic line (7767517: ncnn's text param; the binary .param.bin form is not
taken), the layer and blob counts against what the file holds and a ceiling, every layer's type against the
allowlist (what image classifiers convert to with pnnx; no RNN/LSTM/GRU, no custom or detection layers), every
parameter a number or a list of numbers, and the weights every layer declares (InnerProduct's and the
convolutions' weight_data_size, MemoryData's w x h x d x c) against the .bin beside it: ncnn reads weights
from the .bin in order and allocates what a layer declares before reading, so a declaration over the file
would otherwise allocate memory the file does not back. The .bin itself counts against the model budget.
Activation sizes are not declared in a param file: `memory_window` bounds what the first batch allocates.

Then a rehearsal (`gate.rehearse`, as for MNN): ncnn 1.0.20261020 segfaults, instead of refusing, on parameter values
that do not fit the layer (a pooling pad of 7 around a 2x2 window, a convolution pad of 65: found by mutating an
export's params), so the file is first loaded and run on batches of zeros in a child process, and a child killed
by a signal, or one that fails with an error, is a refusal.
"""

from __future__ import annotations

from pathlib import Path

from . import Refused, check_budget, check_op, rehearse

MAGIC = "7767517"
MAX_LAYERS = 10_000  # a small classifier has tens; resnet18 converts to ~70
MAX_LINE = 64 * 1024  # one layer line (its parameters included)
LAYERS = frozenset("""
    Input Reshape Flatten InnerProduct Gemm MatMul Convolution ConvolutionDepthWise Convolution1D
    ConvolutionDepthWise1D Deconvolution DeconvolutionDepthWise Pooling Pooling1D ReLU Clip Sigmoid TanH
    HardSigmoid HardSwish Swish Mish GELU ELU SELU PReLU Softplus Erf Softmax BatchNorm Scale Bias InstanceNorm
    GroupNorm LayerNorm RMSNorm Normalize Eltwise BinaryOp UnaryOp AbsVal Exp Log Power Concat Split Slice Crop
    Padding Interp Permute Squeeze ExpandDims Dropout Noop MemoryData Reduction ShuffleChannel PixelShuffle
    Quantize Dequantize Requantize Cast Packing Flip
""".split())
RECURRENT = frozenset({"RNN", "LSTM", "GRU"})
# parameter id holding weight_data_size (elements read from the .bin), by layer type
WEIGHT_SIZE = {"InnerProduct": 2, "Convolution": 6, "ConvolutionDepthWise": 6, "Convolution1D": 6,
               "ConvolutionDepthWise1D": 6, "Deconvolution": 6, "DeconvolutionDepthWise": 6}
ARRAY_BASE = -23300  # an array parameter's id is ARRAY_BASE - its index: "-23301=2,1.0,2.0"


def _number(text: str) -> float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_params(fields: list[str], label, layer: str) -> dict[int, object]:
    """A layer's `id=value` parameters: numbers, and arrays (`-233xx=count,v1,v2,...`)."""
    params: dict[int, object] = {}
    for f in fields:
        key, sep, value = f.partition("=")
        try:
            pid = int(key)
            if pid <= ARRAY_BASE:
                items = value.split(",")
                count = int(items[0])
                if count != len(items) - 1:
                    raise ValueError("array length")
                params[ARRAY_BASE - pid] = [_number(v) for v in items[1:]]
            else:
                if not sep:
                    raise ValueError("no value")
                params[pid] = _number(value)
        except ValueError:
            raise Refused(label, f"layer {layer!r} has a malformed parameter {f[:40]!r}") from None
    return params


def check(path, label=None) -> None:
    label = label or path
    path = Path(path)
    bin_path = path.with_suffix(".bin")
    bin_size = bin_path.stat().st_size if bin_path.is_file() else 0
    declared = 0
    try:
        with open(path, "rb") as f:
            lines = iter(lambda: f.readline(MAX_LINE + 1), b"")
            first = next(lines, b"").decode("ascii").strip()
            if first != MAGIC:
                raise Refused(label, f"not an ncnn text param file (first line {first[:20]!r}, expected {MAGIC})")
            counts = next(lines, b"").decode("ascii").split()
            if len(counts) != 2 or not all(c.isdigit() for c in counts):
                raise Refused(label, "malformed second line (expected the layer and blob counts)")
            layer_count, blob_count = int(counts[0]), int(counts[1])
            if not 1 <= layer_count <= MAX_LAYERS or not 1 <= blob_count <= 4 * MAX_LAYERS:
                raise Refused(label, f"declares {layer_count} layers and {blob_count} blobs "
                                     f"(at most {MAX_LAYERS} layers are taken)")
            seen = 0
            for raw in lines:
                if len(raw) > MAX_LINE:
                    raise Refused(label, f"a layer line over {MAX_LINE} bytes")
                fields = raw.decode("ascii").split()
                if not fields:
                    continue
                seen += 1
                if seen > layer_count:
                    raise Refused(label, f"holds more layers than the {layer_count} it declares")
                if len(fields) < 4 or not fields[2].isdigit() or not fields[3].isdigit():
                    raise Refused(label, f"malformed layer line {seen} ({' '.join(fields)[:60]!r})")
                kind, name, bottoms, tops = fields[0], fields[1], int(fields[2]), int(fields[3])
                check_op(label, kind, LAYERS, f"layer {name!r}", control_flow=RECURRENT)
                if len(fields) < 4 + bottoms + tops or bottoms + tops > blob_count:
                    raise Refused(label, f"layer {name!r} names more blobs than its line holds")
                params = parse_params(fields[4 + bottoms + tops:], label, name)
                declared += _declared_weights(kind, params, label, name)
            if seen != layer_count:
                raise Refused(label, f"holds {seen} layers; it declares {layer_count}")
    except Refused:
        raise
    except (UnicodeDecodeError, OSError) as exc:
        raise Refused(label, f"unreadable ncnn param ({exc.__class__.__name__})") from None
    if declared > bin_size:
        raise Refused(label, f"its layers declare weights of at least {declared} bytes; {bin_path.name} holds "
                             f"{bin_size}")
    check_budget(label, bin_size, "its weights")
    rehearse(path, label, "the ncnn library")  # ncnn segfaults on parameter values no static check covers (the module's notes)


def _declared_weights(kind: str, params: dict, label, name: str) -> int:
    """The fewest bytes the .bin must hold for a layer's declared weights (one byte per element: int8, the
    smallest storage ncnn reads)."""
    def count(value) -> int:
        if not isinstance(value, int) or value < 0:
            raise Refused(label, f"layer {name!r} declares a weight size that is not a count ({value!r})")
        return value

    if kind in WEIGHT_SIZE:
        return count(params.get(WEIGHT_SIZE[kind], 0))
    if kind == "MemoryData":
        total = 1
        for pid in (0, 1, 11, 2):  # w, h, d, c
            total *= max(1, count(params.get(pid, 0)))
        return total
    return 0
