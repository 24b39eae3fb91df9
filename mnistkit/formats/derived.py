"""What derived formats share: the float file they are made from (int8 and IR from ONNX, LiteRT int8 from
the float .tflite). Reads the table, so it sits beside the writers, above the rows."""

from __future__ import annotations

from pathlib import Path

from . import FORMATS
from .spec import FormatSpec, WriteContext


def base_file(src, fmt: FormatSpec, ctx: WriteContext) -> Path:
    """The float file a derived format is made from: the export's own, or written beside under a hidden
    name when it was not asked for (removed before the folder is published)."""
    base = FORMATS[fmt.base]
    path = ctx.staging / base.file
    if not path.exists():
        path = ctx.staging / f".base-{base.file}"
        if not path.exists():
            base.write(src, path, ctx)
    return path
