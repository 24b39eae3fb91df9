"""Regenerate mnistkit/assets/probe.mnn: y = 2x + 1 over float32 [4] (doctor runs it on MNN), an ONNX graph
converted by MNN's converter extension (never MNN.tools: see mnistkit/formats/mnn.py)."""
import tempfile
from pathlib import Path

import _tools
import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

graph = helper.make_graph(
    [helper.make_node("Mul", ["x", "two"], ["y2"]), helper.make_node("Add", ["y2", "one"], ["y"])], "probe",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    [numpy_helper.from_array(np.array(2.0, np.float32), "two"), numpy_helper.from_array(np.array(1.0, np.float32), "one")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
with tempfile.TemporaryDirectory() as work:
    path = Path(work) / "probe.onnx"
    save(model, str(path))
    assert _tools.mnnconvert(["mnnconvert", "-f", "ONNX", "--modelFile", str(path), "--MNNModel",
                              "mnistkit/assets/probe.mnn", "--bizCode", "mnistkit-probe"])
