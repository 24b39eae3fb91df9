"""A bounds-checked reader of flatbuffer tables by field index, for files whose schema ships no torch-free
Python reader (ExecuTorch's generated classes live inside a package that imports torch; the `flatbuffers`
package's own Table checks no offset).

Written here, with `struct` only, because the file is hostile until proven otherwise: every offset is checked
against the buffer before it is followed, so a crafted file raises FlatbufferError, never reads outside the
buffer and never loops (a vector's length is checked against the bytes that remain).
"""

from __future__ import annotations

import struct


class FlatbufferError(ValueError):
    pass


class Table:
    """One table: fields by their schema index (0-based, in declaration order; a union takes two)."""

    def __init__(self, buf, pos: int):
        if not 0 <= pos <= len(buf) - 4:
            raise FlatbufferError(f"table at {pos} is outside the file")
        self.buf, self.pos = buf, pos
        vt = pos - _i32(buf, pos)
        if not 0 <= vt <= len(buf) - 4:
            raise FlatbufferError(f"vtable at {vt} is outside the file")
        self.vt, self.vt_len = vt, _u16(buf, vt)

    @classmethod
    def root(cls, buf) -> "Table":
        if len(buf) < 8:
            raise FlatbufferError("shorter than a flatbuffer header")
        return cls(buf, _u32(buf, 0))

    def _field(self, index: int) -> int:
        """The field's absolute position, or 0 when absent."""
        entry = 4 + 2 * index
        if entry >= self.vt_len:
            return 0
        rel = _u16(self.buf, self.vt + entry)
        if rel == 0:
            return 0
        at = self.pos + rel
        if at > len(self.buf) - 1:
            raise FlatbufferError(f"field {index} is outside the file")
        return at

    def _indirect(self, at: int) -> int:
        target = at + _u32(self.buf, at)
        if target > len(self.buf) - 4:
            raise FlatbufferError("offset points outside the file")
        return target

    def scalar(self, index: int, fmt: str = "<B", default=0):
        at = self._field(index)
        if not at:
            return default
        if at + struct.calcsize(fmt) > len(self.buf):
            raise FlatbufferError(f"field {index} is outside the file")
        return struct.unpack_from(fmt, self.buf, at)[0]

    def table(self, index: int) -> "Table | None":
        at = self._field(index)
        return Table(self.buf, self._indirect(at)) if at else None

    def string(self, index: int) -> str | None:
        at = self._field(index)
        if not at:
            return None
        start = self._indirect(at)
        n = _u32(self.buf, start)
        if start + 4 + n > len(self.buf):
            raise FlatbufferError("string runs past the end of the file")
        return bytes(self.buf[start + 4:start + 4 + n]).decode("utf-8", "replace")

    def _vector(self, index: int, item: int) -> tuple[int, int]:
        at = self._field(index)
        if not at:
            return 0, 0
        start = self._indirect(at)
        n = _u32(self.buf, start)
        if start + 4 + n * item > len(self.buf):
            raise FlatbufferError(f"vector field {index} runs past the end of the file")
        return start + 4, n

    def tables(self, index: int) -> list["Table"]:
        start, n = self._vector(index, 4)
        return [Table(self.buf, p + _u32(self.buf, p)) for p in range(start, start + 4 * n, 4)]

    def scalars(self, index: int, fmt: str = "<q") -> list:
        size = struct.calcsize(fmt)
        start, n = self._vector(index, size)
        return [struct.unpack_from(fmt, self.buf, start + i * size)[0] for i in range(n)]

    def vector_len(self, index: int, item: int = 1) -> int:
        return self._vector(index, item)[1]


def _u32(buf, at: int) -> int:
    if not 0 <= at <= len(buf) - 4:
        raise FlatbufferError(f"offset {at} is outside the file")
    return struct.unpack_from("<I", buf, at)[0]


def _i32(buf, at: int) -> int:
    if not 0 <= at <= len(buf) - 4:
        raise FlatbufferError(f"offset {at} is outside the file")
    return struct.unpack_from("<i", buf, at)[0]


def _u16(buf, at: int) -> int:
    if not 0 <= at <= len(buf) - 2:
        raise FlatbufferError(f"offset {at} is outside the file")
    return struct.unpack_from("<H", buf, at)[0]
