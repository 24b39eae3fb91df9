"""ONNX files as other tools write them, built here with onnx's helpers (no scikit-learn or model zoo download):

- `sklearn_onnx`: what skl2onnx writes for a LogisticRegression on flattened 28x28 images: a float [N,784] input,
  LinearClassifier (ai.onnx.ml) with a `label` int64 [N] output first and the probabilities (Normalizer L1)
  second, either as a float [N,10] tensor (skl2onnx's `zipmap=False`) or as ZipMap's list of dicts (its default).
- `zoo_mnist8`: the ONNX model zoo's mnist-8 layout: IR version 3 and opset 8 (initializers also listed as graph
  inputs, as IR 3 requires), a fixed batch of 1 (`Input3` [1,1,28,28]), logits `Plus214_Output_0` [1,10].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sklearn_onnx(dst: Path, zipmap: bool, classes: int = 10, seed: int = 0) -> tuple[Path, np.ndarray]:
    """(file, the coefficients [classes, 784]): scores = x @ coef.T, probabilities their softmax."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    coef = np.random.default_rng(seed).standard_normal((classes, 784)).astype(np.float32) * 0.01
    nodes = [h.make_node("LinearClassifier", ["float_input"], ["label", "probability_tensor"], domain="ai.onnx.ml",
                         coefficients=coef.ravel().tolist(), intercepts=[0.0] * classes,
                         classlabels_ints=list(range(classes)), multi_class=1, post_transform="SOFTMAX"),
             h.make_node("Normalizer", ["probability_tensor"], ["normalized"], domain="ai.onnx.ml", norm="L1")]
    if zipmap:
        nodes += [h.make_node("Identity", ["label"], ["output_label"]),
                  h.make_node("ZipMap", ["normalized"], ["output_probability"], domain="ai.onnx.ml",
                              classlabels_int64s=list(range(classes)))]
        seq = h.make_sequence_type_proto(h.make_map_type_proto(T.INT64, h.make_tensor_type_proto(T.FLOAT, [])))
        outputs = [h.make_tensor_value_info("output_label", T.INT64, [None]),
                   h.make_value_info("output_probability", seq)]
    else:
        nodes.append(h.make_node("Cast", ["normalized"], ["probabilities"], to=T.FLOAT))
        outputs = [h.make_tensor_value_info("label", T.INT64, [None]),
                   h.make_tensor_value_info("probabilities", T.FLOAT, [None, classes])]
    graph = h.make_graph(nodes, "sklearn", [h.make_tensor_value_info("float_input", T.FLOAT, [None, 784])], outputs)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 15), h.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst, coef


def zoo_mnist8(dst: Path, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    inits = [nh.from_array(rng.standard_normal((8, 1, 5, 5)).astype(np.float32) * 0.1, "Parameter5"),
             nh.from_array(np.array([1, 8 * 14 * 14], np.int64), "Pooling160_Output_0_reshape0_shape"),
             nh.from_array(rng.standard_normal((8 * 14 * 14, 10)).astype(np.float32) * 0.01, "Parameter193")]
    nodes = [h.make_node("Conv", ["Input3", "Parameter5"], ["Convolution28_Output_0"], kernel_shape=[5, 5],
                         pads=[2, 2, 2, 2]),
             h.make_node("Relu", ["Convolution28_Output_0"], ["ReLU32_Output_0"]),
             h.make_node("MaxPool", ["ReLU32_Output_0"], ["Pooling66_Output_0"], kernel_shape=[2, 2], strides=[2, 2]),
             h.make_node("Reshape", ["Pooling66_Output_0", "Pooling160_Output_0_reshape0_shape"],
                         ["Pooling160_Output_0_reshape0"]),
             h.make_node("MatMul", ["Pooling160_Output_0_reshape0", "Parameter193"], ["Plus214_Output_0"])]
    graph = h.make_graph(
        nodes, "CNTKGraph",
        [h.make_tensor_value_info("Input3", T.FLOAT, [1, 1, 28, 28]),
         *(h.make_tensor_value_info(t.name, t.data_type, t.dims) for t in inits)],
        [h.make_tensor_value_info("Plus214_Output_0", T.FLOAT, [1, 10])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 8)])
    model.ir_version = 3
    onnx.save(model, str(dst))
    return dst
