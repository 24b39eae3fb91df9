"""ONNX formats: the float models (torch.onnx's dynamo exporter) and the int8 / fp16 models derived
from them with ONNX Runtime's own tools (mnistkit.quantize). Torch, onnx and onnxruntime are
imported inside the writers.

Every ONNX artifact, float or derived, goes through `finish`: mnistkit metadata, producer, the full
checker and strict shape inference.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .._version import __version__
from ..errors import ExportError, first_line
from . import OPSET_RANGE
from .derived import base_file
from .spec import (EXAMPLE_BATCH, FormatSpec, WriteContext, common_meta, io_entries, normalization_of, source_geometry,
                   to_onnx_props)

def _set_metadata(model, meta: dict) -> None:
    del model.metadata_props[:]
    for k, v in to_onnx_props(meta).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def app_model(module, mean, std, channels: int = 1):
    """`module` behind the app contract: uint8 pixels [N,H,W] (gray) or [N,H,W,C] (colour) -> (logits,
    probabilities). `mean`/`std`: one value, or one per channel."""
    import torch

    from ..pixels import scale_shift

    scale, shift = scale_shift(mean, std)
    colour = channels != 1

    class AppModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = module
            self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
            self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32))

        def forward(self, pixels):
            x = pixels.to(torch.float32) * self.scale + self.shift  # per channel: the last axis of [N,H,W,C]
            x = x.permute(0, 3, 1, 2) if colour else x.unsqueeze(1)
            logits = self.model(x)
            return logits, torch.softmax(logits, dim=1)

    return AppModel().eval()


def app_module(src, meta: dict):
    """The source's module behind the app contract, with the normalization its metadata records."""
    return app_model(src.module, *normalization_of(meta), source_geometry(src).channels)


def example_input(src, fmt: FormatSpec, batch: int = EXAMPLE_BATCH):
    """Zeros in the format's input form: uint8 pixels for app formats, normalized float32 otherwise."""
    import torch

    g = source_geometry(src)
    if fmt.app:
        return torch.zeros(batch, *g.pixel_tail, dtype=torch.uint8)
    return torch.zeros(batch, *g.float_tail)


def calibration(src, fmt: FormatSpec, ctx: WriteContext):
    """Training images for static quantization, drawn once per export (kept in `ctx.shared`)."""
    if "calibration" not in ctx.shared:
        from ..data import DATASETS
        from ..errors import DataError
        from ..imagesets import has_image_data
        from ..quantize import calibration_data

        dataset = src.meta.get("dataset")
        if dataset not in DATASETS and not has_image_data(ctx.data_dir):
            raise ExportError(f"{fmt.name} needs calibration images from the model's training split: "
                              "the model names no dataset (pass --dataset and --data-dir, or --data-dir with an "
                              "image folder or .npy arrays)")
        try:
            ctx.shared["calibration"] = calibration_data(dataset, ctx.data_dir, meta=src.meta)
        except DataError as exc:
            raise ExportError(f"{fmt.name} needs calibration images from the "
                              f"{dataset + ' ' if dataset else ''}training split: {exc}") from None
    return ctx.shared["calibration"]


def write_float(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """The float model, or behind the app contract for an app-ready format, as one self-contained file."""
    import onnx
    import torch

    from ..capture import captured_output

    meta = common_meta(src, fmt)
    module = app_module(src, meta) if fmt.app else src.module
    example = example_input(src, fmt)
    batch = torch.export.Dim("N", min=1, max=1 << 20)  # the contract names the batch axis N
    with captured_output() as cap, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, (example,), str(tmp), dynamo=True, external_data=False, verbose=False,
                input_names=[meta["input"]["name"]], output_names=meta["outputs"],
                dynamic_shapes=({0: batch},), opset_version=ctx.opset,
            )
        except Exception as exc:
            tail = " | ".join(cap.text.strip().splitlines()[-3:])
            raise ExportError(f"{fmt.name}: torch.onnx.export failed: {exc.__class__.__name__}: "
                              f"{first_line(exc, 200)}" + (f" [{tail[:200]}]" if tail else "")) from None
    if tmp.with_name(tmp.name + ".data").exists():
        raise ExportError(f"{fmt.name}: the exporter wrote an external-data sidecar; expected one self-contained file")
    model = onnx.load(str(tmp))
    written = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    if written != ctx.opset:
        lo, hi = OPSET_RANGE
        raise ExportError(f"--opset {ctx.opset}: the exporter wrote opset {written} instead; "
                          f"supported range {lo}-{hi}")
    return finish(model, meta, fmt, tmp)


def finish(model, meta: dict, fmt: FormatSpec, tmp: Path) -> dict:
    """Stamp metadata and producer, run the full checker and strict shape inference, save; return the
    manifest's facts."""
    import onnx

    from ..onnx_compat import min_onnxruntime

    _set_metadata(model, meta)
    model.producer_name = "mnistkit"
    model.producer_version = __version__
    model.doc_string = f"mnistkit {fmt.name}: " + fmt.description
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ExportError(f"{fmt.name}: onnx.checker rejected the graph: {first_line(exc, 200)}") from None
    onnx.save(model, str(tmp))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    inputs, outputs = io_entries(meta)
    return {"opset": opset, "ir_version": int(model.ir_version),
            "min_onnxruntime": min_onnxruntime(opset, int(model.ir_version)), "inputs": inputs, "outputs": outputs}


def _derived(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext, transform) -> dict:
    """Write `fmt` as `transform(base_path, tmp, meta) -> facts`, then stamp, check and record the accuracy
    it reached on the validation images (the accuracy gate judges it later, against the float model)."""
    import onnx

    from .. import quantize

    meta = common_meta(src, fmt)
    info = transform(base_file(src, fmt, ctx), tmp, meta)
    model = onnx.load(str(tmp))
    meta["quantization"] = info
    meta["float_test_accuracy"] = src.meta.get("test_accuracy")
    if ctx.labels is not None:  # accuracy measured at export, on the validation (test) images
        meta["test_accuracy"] = quantize.accuracy(tmp, ctx.images, ctx.labels)
        meta["accuracy_data"] = ctx.data_desc
    meta["accuracy_budget"] = ctx.budget
    return {**finish(model, meta, fmt, tmp), "quantization": info,
            "test_accuracy": meta.get("test_accuracy"), "float_test_accuracy": meta["float_test_accuracy"],
            "accuracy_budget": ctx.budget}


def write_int8_static(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """Static int8 (QDQ, per-channel weights), calibrated on training images."""
    from .. import quantize

    def transform(base_path, out, meta):
        return quantize.quantize_static_qdq(base_path, out, calibration(src, fmt, ctx), meta["input"]["name"],
                                            fmt.input_form, *normalization_of(meta))

    return _derived(src, fmt, tmp, ctx, transform)


def write_int8_dynamic(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """Dynamic int8: weights int8, activations quantized per call."""
    from .. import quantize

    return _derived(src, fmt, tmp, ctx, lambda base_path, out, meta: quantize.quantize_dynamic_int8(base_path, out))


def write_fp16(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """float16 weights, float32 input and outputs kept."""
    from .. import quantize

    return _derived(src, fmt, tmp, ctx, lambda base_path, out, meta: quantize.convert_fp16(base_path, out))


def flops_per_image(onnx_path: Path) -> int | None:
    """Multiply-add FLOP per image of an ONNX graph's Gemm/MatMul/Conv nodes (shape inference at N=1)."""
    try:
        import numpy as np
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    try:  # a FLOP count is a nicety: a file ONNX cannot read is reported by the backend that loads it
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:
        return None
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:
        return None
    shapes = {}
    for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
            ins = [i for i in node.input if i in inits]
            out = shapes.get(node.output[0])
            if ins and out:
                w = inits[ins[0]]
                k = w[1] if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute) else w[0]
                total += 2 * int(np.prod(out)) * k
        elif node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            weight = next((inits[i] for i in node.input[1:2] if i in inits), None)
            out = shapes.get(node.output[0])
            if weight and out:
                total += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
    return total or None
