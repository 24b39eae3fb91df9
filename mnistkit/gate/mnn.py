"""The gate for MNN models (.mnn): read the flatbuffer (MNN's `Net`) before MNN does.

Checked, torch-free and without the runtime: every operator's type against the allowlist, no operator that
reads weights from a file it names (`externalPath`), no subgraphs (MNN's control flow: While/If bodies), no
`extraInfo` buffer (MNN parses that nested flatbuffer without verifying it: one corrupt byte in it segfaulted
MNN 3.6.1's module loader, found by flipping bytes of an export), and
the weights against the model budget: the file, plus `<file>.weight` beside it where one exists (MNN reads a
model's external weights from there and nowhere else; mnistkit's exports keep them inline). Tensor shapes are
computed by MNN when it resizes the session: `memory_window` bounds the first batch.

Then a rehearsal: MNN 3.6.1 segfaults, instead of raising, on a model whose values disagree (a reshape constant
that does not fit its input printed "Compute Shape Error" and killed the process; found by flipping bytes of an
export). Every operator's parameters would have to be checked against MNN's shape rules to rule that out, so the
file is first loaded and run on batches of zeros in a child process (`gate.rehearse`): a child killed by a signal,
or one that fails with an error (the same file can crash another load), is a refusal, and this process never runs
the file.

The allowlist holds the OpType values mnistkit's MNN exports of image classifiers were measured to contain
(MNN 3.6.1 converting the MLP, a CNN with batch norm, resnet18, and nets with PReLU, padding, permutes,
GELU/SiLU/hard-swish, layer norm, upsampling and (log-)softmax, float and with 8-bit weights); names from
MNN's schema (schema/default/MNN.fbs, enum OpType).
"""

from __future__ import annotations

import os

from . import Refused, check_budget, check_op, mapped, rehearse
from .flatbuf import FlatbufferError, Table

OPERATORS = {
    7: "BinaryOp", 10: "Concat", 11: "Const", 12: "Convolution", 13: "ConvolutionDepthwise", 28: "Flatten",
    34: "Input", 35: "Interp", 45: "Padding", 46: "Permute", 47: "Pooling", 49: "PReLU", 66: "Rank",
    68: "Reduction", 70: "ReLU6", 73: "Reshape", 80: "Shape", 84: "SliceTf", 85: "Softmax", 90: "Squeeze",
    91: "StridedSlice", 101: "UnaryOp", 107: "Unsqueeze", 120: "BroadcastTo", 129: "ConvertTensor",
    603: "LayerNorm",
}
# Net's fields (MNN.fbs): bizCode 0, extraTensorDescribe 1, extraInfo 2 (its buffer 0), oplists 3, outputName 4, ...,
# subgraphs 10. Op's: inputIndexes 0, main_type 1, main 2, name 3, outputIndexes 4, type 5, ..., externalPath 7.
NET_BIZCODE, NET_EXTRA, NET_OPS, NET_SUBGRAPHS = 0, 2, 3, 10
OP_NAME, OP_TYPE, OP_EXTERNAL = 3, 5, 7
MAX_OPS = 100_000


def check(path, label=None) -> None:
    label = label or path
    external = f"{path}.weight"  # MNN's external weights (the converter's --saveExternalData), read from beside it
    size = os.path.getsize(path) + (os.path.getsize(external) if os.path.isfile(external) else 0)
    check_budget(label, size, "its weights")
    with mapped(path, label) as buf:
        _check(buf, label)
    rehearse(path, label, "MNN")  # MNN segfaults on values no static check covers (the module's notes)


def _check(buf, label) -> None:
    names = set(OPERATORS.values())
    try:
        net = Table.root(buf)
        extra = net.table(NET_EXTRA)
        if extra is not None and extra.vector_len(0, 1):
            raise Refused(label, "holds an extraInfo buffer, which MNN parses without checking it (a corrupt one "
                                 "crashed MNN 3.6.1); convert the ONNX file without its metadata_props")
        if net.vector_len(NET_SUBGRAPHS, 4):
            raise Refused(label, "holds subgraphs (MNN's control flow); mnistkit runs classifiers without it")
        if net.vector_len(NET_OPS, 4) > MAX_OPS:
            raise Refused(label, f"declares over {MAX_OPS} operators")
        ops = net.tables(NET_OPS)
        if not ops:
            raise Refused(label, "holds no operators")
        for op in ops:
            name = op.string(OP_NAME) or "?"
            code = op.scalar(OP_TYPE, "<i")
            check_op(label, OPERATORS.get(code, f"OpType #{code}"), names, f"operator {name[:60]!r}")
            if op.string(OP_EXTERNAL):
                raise Refused(label, f"operator {name[:60]!r} reads its weights from another file "
                                     "(externalPath); a model file must hold its own weights")
        net.string(NET_BIZCODE)  # readable, when present (the metadata)
    except Refused:
        raise
    except (FlatbufferError, UnicodeDecodeError) as exc:
        raise Refused(label, f"malformed MNN model ({str(exc)[:120]})") from None
