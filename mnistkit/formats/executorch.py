"""ExecuTorch: PyTorch's on-device runtime (TorchScript's successor for mobile). `.pte` programs lowered
to the XNNPACK delegate, with a dynamic batch dimension; imported when a format is written or read.

mnistkit's metadata rides inside the program as a constant method, `mnistkit_metadata`, returning the
JSON as a uint8 tensor (read by backends/executorch.py): a .pte has no metadata field of its own, and a
constant method keeps the file self-describing (no sidecar to lose). Reading it runs no code from the
file: a constant method is a stored tensor, returned by the runtime's own kernels.

Measured here (executorch 1.5.1, torch 2.14.1): the MLP's logits differ from PyTorch eager by 7e-8
(XNNPACK fp32), the CNN's by 9e-8; lowering takes ~2 s. The memory planner bounds the input by the
export's batch range (MAX_BATCH) and, for some graphs, lower (the CNN's came out at 15): the backend
reads the bound from the program and runs larger batches in chunks of it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..errors import ExportError, first_line
from .spec import EXAMPLE_BATCH, FormatSpec, WriteContext, common_meta, io_entries, normalization_of, source_geometry

MAX_BATCH = 1024  # the dynamic batch range exported; the program's buffers are planned for it


def _imports(fmt: FormatSpec):
    """The lowering entry points; their import-time logging (torch's pytree registrations) is captured."""
    from ..capture import captured_output

    try:
        with captured_output(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise ExportError(f"{fmt.name}: needs executorch, which is not installed; pip install 'mnistkit[edge]'") from None
    return XnnpackPartitioner, to_edge_transform_and_lower


def _failed(fmt: FormatSpec, what: str, exc: Exception, cap) -> ExportError:
    tail = " | ".join(cap.text.strip().splitlines()[-2:])
    return ExportError(f"{fmt.name}: {what} failed: {exc.__class__.__name__}: {first_line(exc, 200)}"
                       + (f" [{tail[:160]}]" if tail else ""))


def _export(module, geometry):
    """torch.export with the dynamic batch range this format promises, at the model's C x H x W."""
    import torch

    batch = torch.export.Dim("N", min=1, max=MAX_BATCH)
    return torch.export.export(module, (torch.zeros(EXAMPLE_BATCH, *geometry.float_tail),),
                               dynamic_shapes=({0: batch},))


def _lower(fmt: FormatSpec, program, meta: dict | None, room: int = 0) -> bytes:
    """An ExportedProgram lowered to XNNPACK, as .pte bytes; mnistkit's metadata as a constant method, its JSON
    followed by `room` spaces (JSON's own whitespace) for a value measured on the lowered program (_refill)."""
    import torch

    from ..backends.executorch import METADATA_METHOD

    XnnpackPartitioner, to_edge_transform_and_lower = _imports(fmt)
    constants = None
    if meta is not None:
        blob = bytearray((json.dumps(meta) + " " * room).encode())
        constants = {METADATA_METHOD: torch.frombuffer(blob, dtype=torch.uint8)}
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], constant_methods=constants)
    return bytes(edge.to_executorch().buffer)


ROOM = 64  # bytes kept for the measured values written into a lowered program's metadata


def _refill(data: bytes, old: dict, new: dict) -> bytes | None:
    """`data` (lowered with metadata `old` and ROOM spaces) with `new` in the same bytes, or None when that
    cannot be done exactly (the JSON is not in the program once, byte for byte, or `new` needs more room).
    A constant method's tensor is stored as its raw bytes, so the program is otherwise unchanged: lowering
    again to change one number took as long as the first lowering (~2 s for the MLP)."""
    before = (json.dumps(old) + " " * ROOM).encode()
    after = json.dumps(new).encode()
    if len(after) > len(before) or data.count(before) != 1:
        return None
    return data.replace(before, after + b" " * (len(before) - len(after)))


def write_executorch(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """torch.export with a dynamic batch, lowered to XNNPACK, metadata as a constant method."""
    from ..capture import captured_output

    meta = common_meta(src, fmt)
    _imports(fmt)
    with captured_output() as cap, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tmp.write_bytes(_lower(fmt, _export(src.module, source_geometry(src)), meta))
        except Exception as exc:
            raise _failed(fmt, "lowering to ExecuTorch", exc, cap) from None
    inputs, outputs = io_entries(meta)
    return {"inputs": inputs, "outputs": outputs, "max_batch": MAX_BATCH, "delegate": "XNNPACK"}


def _program_accuracy(data: bytes, images, labels, mean: float, std: float) -> float:
    """Top-1 accuracy of a .pte (bytes) on uint8 images, run by ExecuTorch's runtime."""
    import torch

    from ..backends.executorch import _forward, load_program
    from ..pixels import pixels_to_float

    method, sizes = _forward(load_program(data), "the quantized program")
    step = max(1, int(sizes[0]))
    right = 0
    for i in range(0, len(images), step):
        x = torch.from_numpy(pixels_to_float(images[i:i + step], mean, std))
        right += int((method.execute([x])[0].numpy().argmax(1) == labels[i:i + step]).sum())
    return right / len(images) if len(images) else float("nan")


def write_executorch_int8(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """PT2E static int8 with the XNNPACK quantizer (per-channel symmetric weights, int8 activations),
    calibrated on training images, lowered to XNNPACK with a dynamic batch."""
    from ..capture import captured_output
    from ..pixels import pixels_to_float
    from .onnx import calibration

    meta = common_meta(src, fmt)
    _imports(fmt)
    calib = calibration(src, fmt, ctx)
    mean, std = normalization_of(meta)
    with captured_output() as cap, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import torch
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer, get_symmetric_quantization_config)
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        except ImportError as exc:
            raise ExportError(f"{fmt.name}: needs executorch's XNNPACK quantizer and torchao ({first_line(exc, 120)}); "
                              "pip install 'mnistkit[edge]'") from None
        try:
            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            prepared = prepare_pt2e(_export(src.module, source_geometry(src)).module(), quantizer)
            images = torch.from_numpy(pixels_to_float(calib.images, mean, std))
            with torch.no_grad():
                for i in range(0, len(images), 64):
                    prepared(images[i:i + 64])
            program = _export(convert_pt2e(prepared), source_geometry(src))
            info = {"tool": "PT2E (torchao) + XNNPACKQuantizer", "scheme": "static int8, per-channel symmetric weights",
                    "calibration": calib.describe()}
            meta["quantization"] = info
            meta["float_test_accuracy"] = src.meta.get("test_accuracy")
            meta["accuracy_budget"] = ctx.budget
            if ctx.labels is None:
                data = _lower(fmt, program, meta)
            else:  # measured on the lowered program itself, then written into its metadata
                meta["test_accuracy"], meta["accuracy_data"] = None, ctx.data_desc
                reserved = dict(meta)
                data = _lower(fmt, program, reserved, ROOM)
                meta["test_accuracy"] = _program_accuracy(data, ctx.images, ctx.labels, mean, std)
                data = _refill(data, reserved, meta) or _lower(fmt, program, meta)
            tmp.write_bytes(data)
        except ExportError:
            raise
        except Exception as exc:
            raise _failed(fmt, "PT2E quantization or lowering", exc, cap) from None
    inputs, outputs = io_entries(meta)
    return {"inputs": inputs, "outputs": outputs, "max_batch": MAX_BATCH, "delegate": "XNNPACK", "quantization": info,
            "test_accuracy": meta.get("test_accuracy"), "float_test_accuracy": meta["float_test_accuracy"],
            "accuracy_budget": ctx.budget}
