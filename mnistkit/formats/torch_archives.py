"""Writers of PyTorch's own archive formats: TorchScript and torch.export programs (checkpoints are
written by `mnistkit train`). Their mnistkit metadata is the archive member extra/mnistkit.json."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..errors import ExportError, first_line
from .spec import EXAMPLE_BATCH, METADATA_FILE, FormatSpec, WriteContext, common_meta, io_entries, source_geometry

def _write_archive(src, fmt: FormatSpec, what: str, save) -> dict:
    """Run `save(example, metadata_json)`; one ExportError line on failure."""
    import torch

    from ..capture import captured_output

    meta = common_meta(src, fmt)
    # torch.jit / torch.export warnings are said once, in our words, if at all; torch's loggers print
    # straight to stderr (an interrupted torch.export logged a whole traceback there): kept, not shown
    with captured_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad():
                save(torch.zeros(EXAMPLE_BATCH, *source_geometry(src).float_tail), json.dumps(meta))
        except Exception as exc:
            raise ExportError(f"{fmt.name}: {what} failed: {exc.__class__.__name__}: {first_line(exc, 200)}") from None
    inputs, outputs = io_entries(meta)
    return {"inputs": inputs, "outputs": outputs}


def write_torchscript(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """Traced and frozen."""
    import torch

    def save(example, meta_json):
        frozen = torch.jit.freeze(torch.jit.trace(src.module, example, check_trace=False).eval())
        torch.jit.save(frozen, str(tmp), _extra_files={METADATA_FILE: meta_json})

    return _write_archive(src, fmt, "tracing", save)


def write_exported_program(src, fmt: FormatSpec, tmp: Path, ctx: WriteContext) -> dict:
    """torch.export with a dynamic batch dimension named N."""
    import torch

    def save(example, meta_json):
        batch = torch.export.Dim("N", min=1, max=1 << 20)  # the contract names the batch axis N
        program = torch.export.export(src.module, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(tmp), extra_files={METADATA_FILE: meta_json})

    return _write_archive(src, fmt, "torch.export", save)
