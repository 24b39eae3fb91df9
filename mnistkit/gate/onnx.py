"""The gate for ONNX models: operators and memory, read with onnx's protobuf parser before any runtime
(ONNX Runtime, OpenVINO, onnx.reference) creates a session (which folds constants: it runs the graph's
constant parts while loading).

- Operators: every node's (domain, op_type) against the allowlist below; no node may carry a subgraph
  (Loop, Scan and If are the only standard operators with one, and Loop's condition can stay true forever).
- Memory: initializers (dense and sparse: ONNX Runtime densifies those) and Constant values, plus every
  tensor the graph computes at batch 1, sized by ONNX shape inference with data propagation (so a
  `ConstantOfShape` of a constant [65536, 65536] is 16 GiB before anything allocates it). A tensor whose
  size inference cannot tell is bounded by its operator when that operator cannot grow its input
  (Reshape, Transpose, activations...); otherwise the model is refused: its memory is unknowable.
"""

from __future__ import annotations

import os

from ..errors import first_line
from . import Refused, check_budget, check_op, human, max_model_bytes

# (domain, op_type): "" and "ai.onnx" are the default domain.
_DEFAULT_OPS = """
    Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast CastLike Ceil Celu Clip Concat Constant
    ConstantOfShape Conv ConvInteger ConvTranspose DepthToSpace DequantizeLinear Div Dropout DynamicQuantizeLinear
    Einsum Elu Equal Erf Exp Expand Flatten Floor Gather GatherElements Gelu Gemm GlobalAveragePool GlobalMaxPool
    Greater GreaterOrEqual GroupNormalization HardSigmoid HardSwish Identity InstanceNormalization LayerNormalization
    LeakyRelu Less LessOrEqual Log LogSoftmax LRN MatMul MatMulInteger Max MaxPool Mean Min Mish Mod Mul Neg Not Or
    Pad Pow PRelu QLinearConv QLinearMatMul QuantizeLinear Range Reciprocal ReduceL2 ReduceLogSumExp ReduceMax
    ReduceMean ReduceMin ReduceProd ReduceSum Relu Reshape Resize Round Selu Shape Sigmoid Sign Size Slice Softmax
    Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh Tile TopK Transpose Unsqueeze Upsample Where Xor
"""
# scikit-learn's converters (skl2onnx) write these for classical classifiers of flattened images
_ML_OPS = "ArrayFeatureExtractor Binarizer Cast FeatureVectorizer Imputer LabelEncoder LinearClassifier " \
          "LinearRegressor Normalizer OneHotEncoder Scaler SVMClassifier SVMRegressor TreeEnsembleClassifier " \
          "TreeEnsembleRegressor ZipMap"
ALLOWED = frozenset({("", op) for op in _DEFAULT_OPS.split()} | {("ai.onnx.ml", op) for op in _ML_OPS.split()})
CONTROL_FLOW = frozenset({"Loop", "Scan", "If"})

# Operators whose output has at most as many elements as their largest input (x GROWTH_SLACK, for pads a
# pooling window may add): what bounds a tensor whose exact shape inference leaves open.
NON_GROWING = frozenset("""
    Abs Add ArgMax ArgMin AveragePool BatchNormalization Cast CastLike Ceil Celu Clip Div Dropout DequantizeLinear
    DynamicQuantizeLinear Elu Erf Exp Flatten Floor Gelu GlobalAveragePool GlobalMaxPool GroupNormalization
    HardSigmoid HardSwish Identity InstanceNormalization LayerNormalization LeakyRelu Log LogSoftmax LRN MaxPool
    Mish Neg Not PRelu QuantizeLinear Reciprocal ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
    ReduceSum Relu Reshape Round Selu Shape Sigmoid Sign Size Slice Softmax Softplus Softsign Split Sqrt Squeeze
    Tanh TopK Transpose Unsqueeze Normalizer Scaler Binarizer ZipMap LinearClassifier SVMClassifier
    TreeEnsembleClassifier ArrayFeatureExtractor
""".split())
GROWTH_SLACK = 4
# TensorProto.DataType -> bytes per element (strings count 64: a label in a classical classifier's output)
ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 8: 64, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16,
                 16: 2, 17: 1, 18: 1, 19: 1, 20: 1, 21: 1, 22: 1, 23: 1}
_CONTRACT_TAILS = {4: (1, 28, 28), 3: (28, 28), 2: (784,)}  # the image contract's dims after the batch axis


def check(path, label=None) -> None:
    import onnx

    label = label or path
    cap = max_model_bytes()
    size = os.path.getsize(path)
    if size > cap:
        raise Refused(label, f"a {human(size)} ONNX file, over the {human(cap)} model budget "
                             "(MNISTKIT_MAX_MODEL_BYTES raises it)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise Refused(label, f"not a readable ONNX model ({first_line(exc, 120)})") from None
    check_model(model, label)


def check_model(model, label) -> None:
    """The checks on a parsed ModelProto (the exporter runs them on what it writes, too)."""
    graph = model.graph
    weights = 0
    for node in graph.node:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        name = node.op_type if not domain else f"{node.op_type} ({domain})"
        if (domain, node.op_type) not in ALLOWED:
            check_op(label, name, (), f"node {node.name!r}" if node.name else "", control_flow=CONTROL_FLOW)
        for attr in node.attribute:
            if attr.g.node or attr.graphs:
                raise Refused(label, f"node {node.name or node.op_type!r} carries a subgraph; mnistkit runs "
                                     "graphs without control flow")
            if attr.HasField("t"):
                weights += _tensor_bytes(attr.t.dims, attr.t.data_type, label)
    for t in graph.initializer:
        weights += _tensor_bytes(t.dims, t.data_type, label)
    for st in graph.sparse_initializer:
        weights += _tensor_bytes(st.dims, st.values.data_type, label)
    check_budget(label, weights, "its weights and constants")
    activations = _activation_bytes(model, label)
    check_budget(label, weights + activations, "its weights and the tensors it computes at batch 1")


def _tensor_bytes(dims, data_type: int, label) -> int:
    numel = 1
    for d in dims:
        if d < 0:
            raise Refused(label, f"a tensor with a negative dimension {list(dims)}")
        numel *= d
    return numel * ELEMENT_BYTES.get(data_type, 8)


def _activation_bytes(model, label) -> int:
    import onnx
    from onnx import shape_inference

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    batch_symbols: set[str] = set()
    for inp in probe.graph.input:
        dims = inp.type.tensor_type.shape.dim
        tail = _CONTRACT_TAILS.get(len(dims))
        for i, d in enumerate(dims):
            if not d.HasField("dim_value") and i == 0:
                d.dim_param = d.dim_param or "N"
                batch_symbols.add(d.dim_param)
            elif not d.HasField("dim_value") and tail is not None:
                d.dim_value = tail[i - 1]  # the image contract fixes what the file leaves open
            elif not d.HasField("dim_value"):
                batch_symbols.add(d.dim_param)
    try:
        inferred = shape_inference.infer_shapes(probe, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise Refused(label, f"ONNX shape inference fails on it ({first_line(exc, 120)})") from None
    known = {}
    for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        t = v.type.tensor_type
        if not t.HasField("shape"):
            continue
        numel = 1
        for d in t.shape.dim:
            if d.HasField("dim_value"):
                numel *= max(d.dim_value, 1)
            elif d.dim_param in batch_symbols:
                continue
            else:
                numel = None
                break
        if numel is not None:
            known[v.name] = numel * ELEMENT_BYTES.get(t.elem_type, 8)
    for t in inferred.graph.initializer:
        known.setdefault(t.name, _tensor_bytes(t.dims, t.data_type, label))
    sizes = dict(known)
    total = 0
    for node in inferred.graph.node:
        for out in node.output:
            if not out:
                continue
            if out not in sizes:
                if node.op_type not in NON_GROWING:
                    raise Refused(label, f"the size of {out!r} ({node.op_type}) cannot be known before running it "
                                         "(it depends on values computed at run time), so its memory is unbounded")
                sizes[out] = GROWTH_SLACK * max((sizes.get(i, 0) for i in node.input if i), default=0)
            total += sizes[out]
    return total
