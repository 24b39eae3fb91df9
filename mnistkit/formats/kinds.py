"""How each kind of model file is recognised: by its first bytes and, for zip archives, its member names,
never by its suffix. Pure functions over bytes (the format table's KINDS rows point here)."""

from __future__ import annotations


def onnx(head: bytes, members: list[str] | None) -> bool:
    """An ONNX ModelProto: writers emit ir_version (field 1, varint: tag 0x08) first; other fields
    (producer_name 0x12, graph 0x3a, opset_import 0x42) can lead when ir_version is absent."""
    return (members is None and head[:1] in (b"\x08", b"\x12", b"\x1a", b"\x3a", b"\x42")
            and not executorch(head, members) and not litert(head, members))


def executorch(head: bytes, members: list[str] | None) -> bool:
    """An ExecuTorch program: a flatbuffer whose file identifier (bytes 4-8) is "ET" and a two-digit
    schema version ("ET12" for executorch 1.x)."""
    return members is None and len(head) >= 8 and head[4:6] == b"ET" and head[6:8].isdigit()


def litert(head: bytes, members: list[str] | None) -> bool:
    """A LiteRT (TensorFlow Lite) model: a flatbuffer whose file identifier (bytes 4-8) is "TFL3"."""
    return members is None and len(head) >= 8 and head[4:8] == b"TFL3"


def openvino_ir(head: bytes, members: list[str] | None) -> bool:
    """An OpenVINO IR graph: XML (the weights are a companion .bin file, not sniffed)."""
    return members is None and (head.startswith(b"<?xml") or head.startswith(b"<net") or head.startswith(b"\xef\xbb\xbf<?xm"))


def torchscript(head: bytes, members: list[str] | None) -> bool:
    return members is not None and any("/code/" in n for n in members)


def exported_program(head: bytes, members: list[str] | None) -> bool:
    return members is not None and not torchscript(head, members) and any(
        n.endswith("/archive_format") or "/models/" in n for n in members)


def checkpoint(head: bytes, members: list[str] | None) -> bool:
    """A torch.save archive holding data.pkl, or a legacy (non-zip) torch.save pickle."""
    if members is None:
        return head[:1] == b"\x80"
    return (not torchscript(head, members) and not exported_program(head, members)
            and any(n.endswith("data.pkl") for n in members))


def ncnn_param(head: bytes, members: list[str] | None) -> bool:
    """An ncnn text param file: its first line is the magic number 7767517 (the weights are the companion .bin)."""
    return members is None and (head.startswith(b"7767517\n") or head.startswith(b"7767517\r"))


def mnn(head: bytes, members: list[str] | None) -> bool:
    """An MNN model: a flatbuffer with no file identifier whose root table (MNN's Net) follows its vtable, as
    MNN's converter writes it: the root offset is 4 + the vtable's size rounded up to 4, and the vtable holds
    at most Net's 13 fields. (No other kind mnistkit reads starts this way: ONNX starts with a field tag, the
    other flatbuffers carry an identifier at bytes 4-8, ncnn and OpenVINO IR are text.)"""
    if members is not None or len(head) < 8:
        return False
    root = int.from_bytes(head[:4], "little")
    vtable = int.from_bytes(head[4:6], "little")
    return 6 <= vtable <= 4 + 2 * 13 and vtable % 2 == 0 and root == (4 + vtable + 3) // 4 * 4
