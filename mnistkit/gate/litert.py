"""The gate for LiteRT models (.tflite): read the flatbuffer before the interpreter does.

Checked, torch-free and without the runtime: every operator code against the allowlist (builtin operators
image classifiers use; no custom operators, no WHILE/IF/CALL_ONCE or StableHLO control flow), and the
memory of every tensor the file declares (a dynamic batch dimension counted as 1) against the model
budget. The interpreter may still resize a tensor when an operator prepares it: `memory_window` bounds that.
"""

from __future__ import annotations

from . import Refused, check_budget, check_op, mapped
from .flatbuf import FlatbufferError, Table

# Builtin operator codes (the schema's BuiltinOperator enum) of what image classifiers use.
OPERATORS = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE",
    8: "FLOOR", 9: "FULLY_CONNECTED", 11: "L2_NORMALIZATION", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL",
    19: "RELU", 20: "RELU_N1_TO_1", 21: "RELU6", 22: "RESHAPE", 23: "RESIZE_BILINEAR", 25: "SOFTMAX", 28: "TANH",
    34: "PAD", 36: "GATHER", 39: "TRANSPOSE", 40: "MEAN", 41: "SUB", 42: "DIV", 43: "SQUEEZE", 45: "STRIDED_SLICE",
    47: "EXP", 49: "SPLIT", 50: "LOG_SOFTMAX", 53: "CAST", 54: "PRELU", 55: "MAXIMUM", 56: "ARG_MAX", 57: "MINIMUM",
    58: "LESS", 59: "NEG", 60: "PADV2", 61: "GREATER", 62: "GREATER_EQUAL", 63: "LESS_EQUAL", 64: "SELECT",
    65: "SLICE", 67: "TRANSPOSE_CONV", 70: "EXPAND_DIMS", 71: "EQUAL", 72: "NOT_EQUAL", 73: "LOG", 74: "SUM",
    75: "SQRT", 76: "RSQRT", 77: "SHAPE", 78: "POW", 79: "ARG_MIN", 82: "REDUCE_MAX", 83: "PACK", 84: "LOGICAL_OR",
    86: "LOGICAL_AND", 87: "LOGICAL_NOT", 88: "UNPACK", 89: "REDUCE_MIN", 92: "SQUARE", 97: "RESIZE_NEAREST_NEIGHBOR",
    98: "LEAKY_RELU", 99: "SQUARED_DIFFERENCE", 101: "ABS", 102: "SPLIT_V", 104: "CEIL", 111: "ELU",
    114: "QUANTIZE", 116: "ROUND", 117: "HARD_SWISH", 123: "SELECT_V2", 126: "BATCH_MATMUL", 150: "GELU",
    152: "RELU_0_TO_1", 158: "SIGN",
}
CONTROL_FLOW = {118: "IF", 119: "WHILE", 129: "CALL_ONCE", 200: "STABLEHLO_WHILE", 209: "STABLEHLO_CASE"}
# TensorType -> bytes per element (strings and resources count 8: none is used by a classifier)
ELEMENT_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 15: 4, 16: 2, 17: 1,
                 18: 2}


def check(path, label=None) -> None:
    label = label or path
    with mapped(path, label) as buf:
        _check(buf, label)


def _check(buf, label) -> None:
    names = set(OPERATORS.values())
    try:
        model = Table.root(buf)
        codes = []
        for oc in model.tables(1):
            custom = oc.string(1)
            code = max(oc.scalar(0, "<b"), oc.scalar(3, "<i"))
            if custom:
                raise Refused(label, f"custom operator {custom!r} is not on mnistkit's operator allowlist")
            name = OPERATORS.get(code) or CONTROL_FLOW.get(code) or f"builtin #{code}"
            check_op(label, name, names, control_flow=set(CONTROL_FLOW.values()))
            codes.append(name)
        total = 0
        for g, subgraph in enumerate(model.tables(2)):
            for op in subgraph.tables(3):
                if not 0 <= op.scalar(0, "<I") < len(codes):
                    raise Refused(label, f"subgraph {g} names an operator code that does not exist")
            for tensor in subgraph.tables(0):
                shape = tensor.scalars(0, "<i")
                if any(d < -1 for d in shape):
                    raise Refused(label, f"tensor {tensor.string(3)!r} has a negative dimension {shape}")
                numel = 1
                for d in shape:
                    numel *= max(d, 1)
                total += numel * ELEMENT_BYTES.get(tensor.scalar(1, "<b"), 8)
    except FlatbufferError as exc:
        raise Refused(label, f"a corrupt LiteRT flatbuffer ({exc})") from None
    check_budget(label, total, "its tensors (batch 1)")
