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
