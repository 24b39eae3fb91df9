"""LiteRT (ex-TensorFlow Lite): `.tflite` flatbuffers, written with litert-torch (PyTorch -> LiteRT) and
quantized with LiteRT's own tool, ai-edge-quantizer; imported when a format is written.

A dynamic batch, found by converting twice. litert-torch 0.10 cannot convert a dynamic batch dimension
through a flatten (its JAX bridge needs concrete reshape sizes: "Shapes must be 1D sequences of concrete
values", and `reshape(-1, ...)` fails too), and a file converted at one batch does not resize (XNNPACK
refuses to re-plan the reshape, measured). So the module is converted at two batch sizes that appear
nowhere else (BATCHES); the two flatbuffers must be identical except in tensor shapes and int32 shape
constants, and exactly where they hold 5 and 7 respectively. Those places are the batch: the shape
constants get -1 (RESHAPE infers it), the tensors' shape signatures -1 and their shapes 1. Any other
difference means the graph depends on the batch in a way this cannot prove, and the export refuses it;
export validation then runs the file at batch 1, 3, 64 and 1000 against the same images in chunks.

mnistkit's metadata rides in the flatbuffer's own metadata table, under the name "mnistkit" (JSON bytes
in a buffer): LiteRT's runtime ignores entries it does not know, and the quantizer keeps them.

int8: ai-edge-quantizer's dynamic-range recipe (int8 weights, activations quantized per call, float32
in and out) and its full-integer recipe (int8 weights and activations, calibrated on training images; its
input and output are int8 with a scale and zero point, which the backend applies) are both made; the one
with the better accuracy on held-out training images (never the test split, which judges the result) is
kept, and ties within SELECTION_TIE go to dynamic range (float I/O, nothing to calibrate). Every
candidate's score is recorded.

Measured here (litert-torch 0.10.0, ai-edge-litert 2.3.0, torch 2.14.1): the MLP's logits differ from
PyTorch eager by 1.2e-7 (fp32, XNNPACK), the CNN's by 4.2e-7; converting takes ~2.5 s per batch size.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..errors import ExportError, first_line
from .spec import FormatSpec, WriteContext, common_meta, io_entries, normalization_of

BATCHES = (5, 7)  # the two batch sizes converted; they must differ and appear nowhere else in the graph
METADATA_NAME = "mnistkit"  # the flatbuffer metadata entry holding mnistkit's JSON
SELECTION_TIE = 0.001  # held-out accuracies closer than this are a tie (0.1 point of 5,000 images = 5)
RECIPES = ("dynamic_wi8_afp32", "static_wi8_ai8")  # ai-edge-quantizer's recipes tried, the tie-winner first


def _need(fmt: FormatSpec, package: str, extra: str = "edge"):
    """Import a converter package; its import-time logging (absl, oneDNN, torch's pytree) is captured."""
    import importlib

    from ..capture import captured_output

    try:
        with captured_output(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(package)
    except ImportError:
        raise ExportError(f"{fmt.name}: needs {package.split('.')[0]}, which is not installed; "
                          f"pip install 'mnistkit[{extra}]'") from None


def _convert(fmt: FormatSpec, module, example) -> bytes:
    """`module` converted at one example input (its batch size and form: the app contract's uint8 pixels for app
    formats)."""
    from ..capture import captured_output

    litert_torch = _need(fmt, "litert_torch")
    with captured_output() as cap, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bytes(litert_torch.convert(module.eval(), (example,)).model_content())
        except Exception as exc:
            said = [line for line in cap.text.strip().splitlines() if "FAIL" not in line][-1:]
            raise ExportError(f"{fmt.name}: litert-torch could not convert the model: {exc.__class__.__name__}: "
                              f"{first_line(exc, 200)}" + (f" [{said[0][:160]}]" if said else "")) from None


def _model_t(data: bytes):
    """The flatbuffer's object model, with every buffer's data inline: a model over 2 GiB, or one the
    quantizer wrote, keeps large buffers after the flatbuffer (offset and size), which packing would drop."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    for buffer in model.buffers:
        if buffer.offset > 1:
            end = buffer.offset + buffer.size
            if end > len(data):
                raise ExportError(f"a LiteRT buffer lies outside the file ({end} > {len(data)} bytes)")
            buffer.data = np.frombuffer(data, np.uint8, buffer.size, buffer.offset)
            buffer.offset = buffer.size = 0
    return model


def _buffer_bytes(buffer) -> bytes | None:
    return None if buffer.data is None else np.asarray(buffer.data, np.uint8).tobytes()


def batch_free(fmt: FormatSpec, a: bytes, b: bytes):
    """The model of `a` (converted at BATCHES[0]) with its batch made dynamic, proved against `b` (converted
    at BATCHES[1]); see the module's notes. Returns the flatbuffer object model (ModelT)."""
    from ai_edge_litert import schema_py_generated as schema

    small, large = BATCHES
    ma, mb = _model_t(a), _model_t(b)

    def refuse(what):
        return ExportError(f"{fmt.name}: the converted graph depends on the batch size beyond its batch axis "
                           f"({what}); LiteRT needs a graph whose only batch-dependent sizes are the batch itself")

    if len(ma.subgraphs) != len(mb.subgraphs) or len(ma.buffers) != len(mb.buffers):
        raise refuse("the two conversions differ in structure")
    owners = {}
    for g in ma.subgraphs:
        for t in g.tensors:
            owners.setdefault(t.buffer, []).append(t)
    for i, (ba, bb) in enumerate(zip(ma.buffers, mb.buffers)):
        da, db = _buffer_bytes(ba), _buffer_bytes(bb)
        if da == db:
            continue
        tensors = owners.get(i, [])
        if (da is None or db is None or len(da) != len(db) or len(da) % 4
                or not tensors or any(t.type != schema.TensorType.INT32 for t in tensors)):
            raise refuse(f"constant buffer {i}")
        va, vb = np.frombuffer(da, np.int32).copy(), np.frombuffer(db, np.int32)
        moved = va != vb
        if not ((va[moved] == small).all() and (vb[moved] == large).all()):
            raise refuse(f"constant {tensors[0].name!r}: {va.tolist()[:8]} vs {vb.tolist()[:8]}")
        va[moved] = -1
        ba.data = va.view(np.uint8)
    for ga, gb in zip(ma.subgraphs, mb.subgraphs):
        if len(ga.tensors) != len(gb.tensors):
            raise refuse("the two conversions differ in tensors")
        for ta, tb in zip(ga.tensors, gb.tensors):
            sa = [] if ta.shape is None else [int(d) for d in ta.shape]
            sb = [] if tb.shape is None else [int(d) for d in tb.shape]
            if sa == sb:
                continue
            if len(sa) != len(sb) or any(x != y and (x, y) != (small, large) for x, y in zip(sa, sb)):
                raise refuse(f"tensor {ta.name!r}: {sa} vs {sb}")
            ta.shapeSignature = np.array([-1 if x != y else x for x, y in zip(sa, sb)], np.int32)
            ta.shape = np.array([1 if x != y else x for x, y in zip(sa, sb)], np.int32)
    return ma


def with_metadata(model, meta: dict) -> bytes:
    """Serialize a ModelT with mnistkit's metadata entry (replacing an earlier one)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if (m.name.decode() if isinstance(m.name, bytes) else m.name)
            != METADATA_NAME]
    model.metadata = [*kept, entry]
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_litert(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """The float model (or, for the app format, the model behind the app contract: uint8 pixels in, the
    normalization inside, logits and probabilities out) as a .tflite with a dynamic batch (see the module's
    notes) and mnistkit's metadata."""
    from .onnx import app_module, example_input

    meta = common_meta(src, fmt)
    module = app_module(src, meta) if fmt.app else src.module
    model = batch_free(fmt, *(_convert(fmt, module, example_input(src, fmt, n)) for n in BATCHES))
    tmp.write_bytes(with_metadata(model, meta))
    inputs, outputs = io_entries(meta)
    return {"inputs": inputs, "outputs": outputs, "converter": "litert-torch", "delegate": "XNNPACK"}


def _quantize(float_bytes: bytes, recipe_name: str, calib: np.ndarray | None, input_name: str) -> bytes:
    from ai_edge_quantizer import quantizer, recipe

    from ..capture import captured_output

    with captured_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantizer.Quantizer(bytearray(float_bytes), getattr(recipe, recipe_name)())
        result = None
        if q.need_calibration:
            batches = [{input_name: calib[i:i + 64]} for i in range(0, len(calib), 64)]
            result = q.calibrate({"serving_default": batches}, num_threads=1)
        return bytes(q.quantize(result, enable_progress_report=False).quantized_model)


def _accuracy(data: bytes, images: np.ndarray, labels: np.ndarray, where: Path) -> float:
    """Top-1 accuracy of a .tflite on uint8 images, through mnistkit's LiteRT backend."""
    from ..backends.litert import LiteRTBackend
    from ..errors import MnistkitError

    where.write_bytes(data)
    try:
        with LiteRTBackend(where, threads=1) as backend:
            return float((backend.run_chunked(images).argmax(1) == labels).mean())
    except MnistkitError as exc:
        raise ExportError(f"the quantized model does not run: {exc}") from None
    finally:
        where.unlink(missing_ok=True)


def write_litert_int8(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """int8 by LiteRT's own quantizer: dynamic range or full integer, chosen on held-out training images."""
    from ..backends.litert import signature_input
    from ..pixels import pixels_to_float
    from . import FORMATS
    from .onnx import calibration
    from .derived import base_file

    _need(fmt, "ai_edge_quantizer")
    float_bytes = base_file(src, fmt, ctx).read_bytes()
    meta = common_meta(src, fmt)
    mean, std = normalization_of(meta)
    calib = calibration(src, fmt, ctx)
    floats = pixels_to_float(calib.images, mean, std)
    name = signature_input(float_bytes)
    candidates, scores = {}, {}
    for recipe_name in RECIPES:
        try:
            candidates[recipe_name] = _quantize(float_bytes, recipe_name, floats, name)
        except Exception as exc:
            scores[recipe_name] = f"failed: {first_line(exc, 160)}"
            continue
        scores[recipe_name] = _accuracy(candidates[recipe_name], calib.selection_images, calib.selection_labels,
                                        tmp.with_name(f".{recipe_name}-{tmp.name}"))
    if not candidates:
        raise ExportError(f"{fmt.name}: ai-edge-quantizer made no model: {scores}")
    chosen = RECIPES[0] if RECIPES[0] in candidates else next(iter(candidates))
    for recipe_name in candidates:
        if scores[recipe_name] > scores[chosen] + SELECTION_TIE:
            chosen = recipe_name
    info = {"tool": "ai-edge-quantizer", "recipe": chosen, "selection_accuracy": scores,
            "calibration": calib.describe(), "base": FORMATS[fmt.base].file}
    meta["quantization"] = info
    meta["float_test_accuracy"] = src.meta.get("test_accuracy")
    meta["accuracy_budget"] = ctx.budget
    quantized = candidates[chosen]
    if ctx.labels is not None:
        meta["test_accuracy"] = _accuracy(with_metadata(_model_t(quantized), meta), ctx.images, ctx.labels,
                                          tmp.with_name(f".accuracy-{tmp.name}"))
        meta["accuracy_data"] = ctx.data_desc
    tmp.write_bytes(with_metadata(_model_t(quantized), meta))
    inputs, outputs = io_entries(meta)
    return {"inputs": inputs, "outputs": outputs, "quantization": info, "test_accuracy": meta.get("test_accuracy"),
            "float_test_accuracy": meta["float_test_accuracy"], "accuracy_budget": ctx.budget}
