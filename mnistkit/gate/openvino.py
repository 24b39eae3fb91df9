"""The gate for OpenVINO IR (model.xml + model.bin): layers and memory, read from the XML with the standard
library's streaming parser (expat: no external entities; entity expansion refused) before OpenVINO reads it.

Every layer's type against the allowlist (what image classifiers convert to; no Loop, TensorIterator or If,
no ReadValue/Assign state, no extension operations), every Const's weights inside the .bin beside it, and
the memory of the weights plus every output port's declared shape (a dynamic dimension counted as 1)
against the model budget. OpenVINO re-infers shapes when it reads the model: `memory_window` bounds that.
"""

from __future__ import annotations

from pathlib import Path

from . import Refused, check_budget, check_op

LAYERS = frozenset("""
    Parameter Const Result Convert MatMul Add Subtract Multiply Divide Power SquaredDifference Maximum Minimum
    ReLU Relu Clamp Sigmoid Tanh HSwish HSigmoid Swish Mish Gelu Elu PRelu SoftPlus Exp Log Sqrt Abs Negative
    Floor Ceiling Sign Erf Convolution GroupConvolution ConvolutionBackpropData MaxPool AvgPool AdaptiveAvgPool
    AdaptiveMaxPool Reshape Squeeze Unsqueeze Transpose Concat Split VariadicSplit StridedSlice Slice Gather
    ShapeOf Pad Interpolate BatchNormInference MVN NormalizeL2 LRN ReduceMean ReduceMax ReduceMin ReduceSum
    ReduceProd ReduceL2 SoftMax LogSoftmax TopK ArgMax FakeQuantize FakeConvert Select Equal NotEqual Less
    LessEqual Greater GreaterEqual LogicalNot LogicalAnd LogicalOr Broadcast Tile Range Einsum DepthToSpace
    SpaceToDepth ScaledDotProductAttention
""".split())
CONTROL_FLOW = frozenset({"Loop", "TensorIterator", "If"})
ELEMENT_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "f64": 8, "i64": 8, "i32": 4, "i16": 2, "i8": 1, "u64": 8,
                 "u32": 4, "u16": 2, "u8": 1, "boolean": 1, "u1": 1, "i4": 1, "u4": 1, "f8e4m3": 1, "f8e5m2": 1}
PRECISION_BYTES = {"FP32": 4, "FP16": 2, "BF16": 2, "FP64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
                   "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "BOOLEAN": 1, "U1": 1, "I4": 1, "U4": 1}


def check(path, label=None) -> None:
    import xml.etree.ElementTree as ET

    label = label or path
    bin_path = Path(path).with_suffix(".bin")
    bin_size = bin_path.stat().st_size if bin_path.is_file() else 0
    weights = activations = 0
    stack: list[str] = []
    layer_type = layer_name = None
    port_bytes, dims = 0, []
    try:
        for event, elem in ET.iterparse(str(path), events=("start", "end")):
            tag = elem.tag
            if event == "start":
                stack.append(tag)
                if tag == "layer" and stack[-2:-1] == ["layers"]:
                    layer_type, layer_name = elem.get("type") or "", elem.get("name") or elem.get("id") or "?"
                    check_op(label, layer_type, LAYERS, f"layer {layer_name!r}", control_flow=CONTROL_FLOW)
                elif tag == "port" and stack[-2:-1] == ["output"] and layer_type is not None:
                    port_bytes, dims = PRECISION_BYTES.get((elem.get("precision") or "").upper(), 8), []
                continue
            stack.pop()
            if tag == "dim" and stack[-1:] == ["port"] and layer_type is not None and "output" in stack:
                try:
                    dims.append(int((elem.text or "").strip()))
                except ValueError:
                    dims.append(1)  # "?" or a range: dynamic, counted as 1
            elif tag == "port" and stack[-1:] == ["output"] and layer_type is not None:
                numel = 1
                for d in dims:
                    numel *= max(d, 1)
                activations += numel * port_bytes
            elif tag == "data" and layer_type == "Const":
                try:
                    offset, size = int(elem.get("offset", "0")), int(elem.get("size", "0"))
                except ValueError:
                    raise Refused(label, f"Const {layer_name!r} has a malformed offset or size") from None
                if offset < 0 or size < 0 or offset + size > bin_size:
                    raise Refused(label, f"Const {layer_name!r} reads bytes {offset}..{offset + size} of "
                                         f"{bin_path.name}, which holds {bin_size}")
                weights += size
            elif tag == "layer":
                layer_type = None
            if len(stack) > 1:  # drop what was read, keeping only the open path
                elem.clear()
    except Refused:
        raise
    except (ET.ParseError, ValueError, OSError) as exc:
        raise Refused(label, f"unreadable OpenVINO IR ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    check_budget(label, weights + activations, "its weights and the tensors it computes at batch 1")
