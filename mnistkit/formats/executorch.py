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
from .spec import EXAMPLE_BATCH, FormatSpec, WriteContext, common_meta, io_entries

MAX_BATCH = 1024  # the dynamic batch range exported; the program's buffers are planned for it


def write_executorch(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """torch.export with a dynamic batch, lowered to XNNPACK, metadata as a constant method."""
    import torch

    from ..backends.executorch import METADATA_METHOD
    from ..capture import captured_output

    meta = common_meta(src, fmt)
    with captured_output() as cap, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
        except ImportError:
            raise ExportError(f"{fmt.name}: needs executorch, which is not installed; "
                              "pip install 'mnistkit[edge]'") from None
        try:
            batch = torch.export.Dim("N", min=1, max=MAX_BATCH)
            program = torch.export.export(src.module, (torch.zeros(EXAMPLE_BATCH, 1, 28, 28),),
                                          dynamic_shapes=({0: batch},))
            blob = torch.frombuffer(bytearray(json.dumps(meta).encode()), dtype=torch.uint8)
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                               constant_methods={METADATA_METHOD: blob})
            tmp.write_bytes(edge.to_executorch().buffer)
        except Exception as exc:
            tail = " | ".join(cap.text.strip().splitlines()[-2:])
            raise ExportError(f"{fmt.name}: lowering to ExecuTorch failed: {exc.__class__.__name__}: "
                              f"{first_line(exc, 200)}" + (f" [{tail[:160]}]" if tail else "")) from None
    inputs, outputs = io_entries(meta)
    return {"inputs": inputs, "outputs": outputs, "max_batch": MAX_BATCH, "delegate": "XNNPACK"}
