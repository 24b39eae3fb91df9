"""Which ONNX Runtime releases load a given ONNX file. Torch-free.

From ONNX Runtime's published compatibility table (docs/reference/compatibility.md, releases up to
1.20): the ONNX opset and IR version each release implements. The oldest release that loads a
model is the oldest whose IR version and default-domain opset both cover the model's.
"""

from __future__ import annotations

# (onnxruntime release, highest ai.onnx opset, highest IR version), oldest first.
ORT_RELEASES: tuple[tuple[str, int, int], ...] = (
    ("1.0", 11, 6), ("1.1", 11, 6), ("1.3", 12, 7), ("1.6", 13, 7), ("1.8", 14, 7), ("1.9", 15, 8),
    ("1.11", 16, 8), ("1.12", 17, 8), ("1.14", 18, 8), ("1.15", 19, 8), ("1.16", 19, 9),
    ("1.17", 20, 9), ("1.18", 21, 10), ("1.19", 21, 10), ("1.20", 21, 10),
)
NEWEST_IN_TABLE = ORT_RELEASES[-1][0]


def min_onnxruntime(opset: int, ir_version: int) -> str:
    """The oldest onnxruntime release that loads a model of this opset and IR version.

    Beyond the published table, answers "> 1.20" (the table stops there; see ORT's docs).
    """
    for release, max_opset, max_ir in ORT_RELEASES:
        if opset <= max_opset and ir_version <= max_ir:
            return release
    return f"> {NEWEST_IN_TABLE}"
