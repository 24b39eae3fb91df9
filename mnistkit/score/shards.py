"""`mnistkit score`: the work cut into shards from file headers only (an IDX or .npy header, a Parquet footer, a
folder's listing), and the Layout of a row of pixels for the model scored. The driver never reads a pixel."""

from __future__ import annotations

import gzip
import hashlib
import functools
import json
import os
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError, InvalidInputError, first_line
from ..pixels import DIGITS, MAX_SIDE, Geometry
from ..preprocess import IMAGE_SUFFIXES


SHARD_ROWS = 16384  # images per shard of an array file: ~12 MB of pixels, a few ms to ~0.1 s of work
IMAGE_SHARD_FILES = 1024  # image files per shard (decoding dominates: ~0.2 ms each)
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
DIGIT_TAIL = (28, 28)  # MNIST's rows, which a model's transforms (Pad, Resize, ...) may take to its own size


@dataclass(frozen=True)
class Layout:
    """What a row of pixels is for the model being scored: its geometry (ModelInfo.geometry) and the transforms
    its training script applied before ToTensor (ModelInfo.transforms). A uint8 row is the model's pixels
    (Geometry.pixel_tail), or an image of another size that the transforms make the model's size (MNIST's 28x28
    digits padded to a LeNet's 32x32); a float32 row is already normalized [C,H,W]."""

    geometry: Geometry = DIGITS
    steps: tuple = ()

    def takes(self, tail) -> bool:
        """uint8 rows of `tail` ([h,w] gray or [h,w,3] colour) are, or become, the model's pixels."""
        return _takes(self.geometry, self.steps, tuple(int(d) for d in tail))

    def to_model(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [k, *tail] (a tail `takes` accepted) -> the model's pixels [k, *pixel_tail]."""
        from ..steps import apply_steps

        if pixels.dtype != np.uint8 or pixels.shape[1:] == self.geometry.pixel_tail:
            return pixels
        return apply_steps(pixels, self.steps, self.geometry)

    def raw_tail(self, size: int) -> tuple[int, ...] | None:
        """The shape of a raw row of `size` uint8 values (a Parquet binary or list cell): the model's pixels, else
        MNIST's 28x28 where the transforms take that to the model's size; None when it is neither."""
        if size == int(np.prod(self.geometry.pixel_tail)):
            return self.geometry.pixel_tail
        if size == DIGIT_TAIL[0] * DIGIT_TAIL[1] and self.takes(DIGIT_TAIL):
            return DIGIT_TAIL
        return None

    def pixels_expected(self, word: str = "") -> str:
        """For messages: "[N,32,32]{word} (or [N,28,28] digits, which Pad(2) makes 32x32)"."""
        g = self.geometry
        also = f" (or [N,28,28] digits, which {self._steps_text()} makes {g.height}x{g.width})" \
            if g.pixel_tail != DIGIT_TAIL and self.takes(DIGIT_TAIL) else ""
        return f"[N,{','.join(map(str, g.pixel_tail))}]{word}{also}"

    def expected(self) -> str:
        """For messages: "uint8 [N,28,28] pixels or normalized float32 [N,1,28,28]" (and what the transforms take)."""
        return (f"uint8 {self.pixels_expected(' pixels')} or normalized float32 "
                f"[N,{','.join(map(str, self.geometry.float_tail))}]")

    def raw_expected(self) -> str:
        sizes = sorted({int(np.prod(self.geometry.pixel_tail))} |
                       ({DIGIT_TAIL[0] * DIGIT_TAIL[1]} if self.raw_tail(784) else set()))
        return " or ".join(map(str, sizes))

    def _steps_text(self) -> str:
        from ..steps import steps_text

        return steps_text(self.steps)

    @classmethod
    def of(cls, info) -> "Layout":
        """The layout of a loaded backend's ModelInfo (its transforms are already hashable tuples)."""
        return cls(info.geometry, info.transforms)


@functools.lru_cache(maxsize=64)  # asked per raw row of a Parquet column: the answer is one small resize away
def _takes(geometry: Geometry, steps: tuple, tail: tuple[int, ...]) -> bool:
    from ..steps import apply_steps

    if tail == geometry.pixel_tail:
        return True
    if not steps or len(tail) not in (2, 3) or len(tail) == 3 and tail[2] != 3 \
            or not all(0 < d <= MAX_SIDE for d in tail[:2]):
        return False
    try:
        apply_steps(np.zeros((1, *tail), np.uint8), steps, geometry)
    except DataError:
        return False
    return True


@dataclass(frozen=True)
class Shard:
    """A unit of work: rows [start, stop) of one array file, one Parquet row group, or image files."""

    kind: str  # "idx", "npy", "parquet" or "images"
    source: str = ""  # the file (absolute); "" for images
    start: int = 0
    stop: int = 0
    offset: int = 0  # idx/npy: the byte offset of image 0
    gz: bool = False  # idx: gzip-compressed
    dtype: str = "uint8"  # idx/npy: "uint8" pixels or normalized "float32" (npy only)
    tail: tuple[int, ...] = DIGIT_TAIL  # idx/npy: each row's dims ([h,w] or [h,w,3] uint8, [C,H,W] float32)
    row_group: int = -1  # parquet
    column: str = ""  # parquet: the image column
    paths: tuple[str, ...] = ()  # images

    @property
    def size(self) -> int:
        return len(self.paths) if self.kind == "images" else self.stop - self.start

    @cached_property  # the JSON of up to 1,024 paths, hashed once per shard, not per use
    def key(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:24]

    @property
    def part_name(self) -> str:
        return f"{PART_PREFIX}{self.key}{PART_SUFFIX}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Shard":
        d = json.loads(text)
        d["paths"] = tuple(d["paths"])
        d["tail"] = tuple(d.get("tail") or DIGIT_TAIL)
        return cls(**d)


def _ranges(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _plan_npy(path: Path, rows: int, layout: Layout) -> list[Shard]:
    from ..preprocess import NPY_ERRORS, npy_header

    try:
        with open(path, "rb") as f:
            shape, fortran, dtype, offset = npy_header(f)
        if fortran and len(shape) > 1:
            raise ValueError("is Fortran-ordered; expected a C-ordered array (read in place, by rows)")
    except NPY_ERRORS as exc:
        raise InvalidInputError(f"{path}: not a readable .npy array ({first_line(exc, 160)})") from None
    shape = tuple(int(d) for d in shape)
    if dtype == np.uint8 and shape and layout.takes(shape):  # one image
        shape = (1, *shape)
    if dtype == np.uint8 and len(shape) in (3, 4) and layout.takes(shape[1:]):
        form = "uint8"
    elif dtype == np.float32 and dtype.isnative and len(shape) == 4 and shape[1:] == layout.geometry.float_tail:
        form = "float32"
    else:
        raise InvalidInputError(f"{path}: array is {dtype} {list(shape)}; expected {layout.expected()}")
    return [Shard("npy", str(path), a, b, offset=offset, dtype=form, tail=shape[1:])
            for a, b in _ranges(shape[0], rows)]


def _idx_count(path: Path, gz: bool, layout: Layout) -> tuple[int, tuple[int, ...], int]:
    """(images, each image's dims, data offset) from an IDX header (the IDX reader's checks); the file's length is
    checked against it, streaming through a gzip file in bounded memory."""
    from ..data import idx_header

    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            dtype, dims, offset = idx_header(path, f)
            dims = tuple(int(d) for d in dims)
            if dtype == np.uint8 and dims and layout.takes(dims):
                dims = (1, *dims)
            if dtype != np.uint8 or len(dims) not in (3, 4) or not layout.takes(dims[1:]):
                raise InvalidInputError(f"{path}: IDX {dtype.name} {list(dims)}; expected uint8 images "
                                        f"{layout.pixels_expected()}")
            n, tail = dims[0], dims[1:]
            expected = offset + n * int(np.prod(tail))
            if gz:  # the length is known only by inflating
                got = offset
                while block := f.read(1 << 20):
                    got += len(block)
                    if got > expected:
                        break
            else:
                got = os.fstat(f.fileno()).st_size
    except (OSError, EOFError) as exc:
        raise InvalidInputError(f"{path}: corrupt or truncated IDX file ({first_line(exc, 120)})") from None
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise InvalidInputError(f"{path}: {what}: {got} bytes of data, expected {expected} for {n} images")
    return n, tail, offset


def _inflates_to_idx(path: Path) -> bool:
    """A gzip file whose first inflated bytes are an IDX magic number (0x0000, type, dimensions)."""
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(4)
    except (OSError, EOFError):
        return True  # a damaged gzip: the IDX reader says what is wrong with it
    return len(head) == 4 and head[:2] == b"\x00\x00"


def _plan_idx(path: Path, gz: bool, rows: int, layout: Layout) -> list[Shard]:
    n, tail, offset = _idx_count(path, gz, layout)
    return [Shard("idx", str(path), a, b, offset=offset, gz=gz, tail=tail) for a, b in _ranges(n, rows)]


def _image_column(schema, path: Path, column: str | None, layout: Layout = Layout()) -> str:
    """The column holding the images: named, else the one binary, {bytes: binary} or integer-list column."""
    import pyarrow as pa

    def usable(t) -> bool:
        if pa.types.is_fixed_size_binary(t):
            return layout.raw_tail(t.byte_width) is not None  # raw uint8 pixels: the fastest layout to read
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return True
        if pa.types.is_struct(t):
            return any(t.field(i).name == "bytes" and usable(t.field(i).type) for i in range(t.num_fields))
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return pa.types.is_integer(t.value_type)
        return False

    names = schema.names
    if column is not None:
        if column not in names:
            raise InvalidInputError(f"{path}: no column {column!r}; columns: {', '.join(names)}")
        if not usable(schema.field(column).type):
            raise InvalidInputError(f"{path}: column {column!r} is {schema.field(column).type}; expected image "
                                    "bytes (binary, or a struct with a 'bytes' field) or uint8 pixels (a list of "
                                    f"{layout.raw_expected()})")
        return column
    found = [n for n in names if usable(schema.field(n).type)]
    if len(found) == 1:
        return found[0]
    preferred = [n for n in found if n.lower() in ("image", "img", "pixels", "png", "jpg", "bytes")]
    if len(preferred) == 1:
        return preferred[0]
    what = f"several ({', '.join(found)})" if found else "none"
    raise InvalidInputError(f"{path}: which column holds the images? {what} of its columns ({', '.join(names)}) "
                            "hold image bytes or pixels; name one with --column")


def _plan_parquet(path: Path, column: str | None, layout: Layout) -> list[Shard]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata  # the footer only
        schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInputError(f"{path}: not a readable Parquet file ({first_line(exc, 160)})") from None
    col = _image_column(schema, path, column, layout)
    from ..data import max_input_bytes

    limit = max_input_bytes()
    shards, start = [], 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        n = group.num_rows
        # what reading the image column of this group inflates to, as its footer declares (a 50 KB zstd file can
        # hold a 1.5 GiB value): refused before any page is read
        declared = sum(group.column(i).total_uncompressed_size for i in range(group.num_columns)
                       if group.column(i).path_in_schema.split(".")[0] == col)
        if declared > limit:
            raise InvalidInputError(f"{path}: row group {g} holds {declared:,} bytes of images in column {col!r} "
                                    f"(over the {limit:,}-byte input limit; MNISTKIT_MAX_INPUT_BYTES raises it, or "
                                    "write smaller row groups)")
        if n:
            shards.append(Shard("parquet", str(path), start, start + n, row_group=g, column=col))
        start += n
    return shards


def _walk_images(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                yield Path(root) / name


def plan(inputs, column: str | None = None, rows: int = SHARD_ROWS, image_files: int = IMAGE_SHARD_FILES,
         layout: Layout = Layout()):
    """Shards for every input (folders of images, image files, IDX, .npy, Parquet), in input order; array rows
    are checked against `layout` (the model's geometry and transforms).

    Reads headers and footers only. Raises InvalidInputError for an input that is missing, of no
    known kind, or whose header does not fit its file or the model.
    """
    if not inputs:
        raise InvalidInputError("no inputs given")
    shards: list[Shard] = []
    loose: list[str] = []

    def flush():
        for i in range(0, len(loose), image_files):
            shards.append(Shard("images", paths=tuple(loose[i:i + image_files])))
        loose.clear()

    for given in inputs:
        path = Path(given).absolute()
        if path.is_dir():
            flush()
            found = 0
            for image in _walk_images(path):
                loose.append(str(image))
                found += 1
                if len(loose) == image_files:
                    flush()
            if not found:
                raise InvalidInputError(f"{given}: no images (PNG, JPEG, BMP) in this folder or below it")
            flush()
            continue
        if not path.is_file():
            raise InvalidInputError(f"{given}: no such file or folder")
        with open(path, "rb") as f:
            head = f.read(6)
        gz = head[:2] == b"\x1f\x8b"
        if head.startswith(b"\x93NUMPY"):
            flush()
            shards += _plan_npy(path, rows, layout)
        elif head.startswith(b"PAR1"):
            flush()
            shards += _plan_parquet(path, column, layout)
        elif head[:2] == b"\x00\x00" or gz and _inflates_to_idx(path):
            flush()
            shards += _plan_idx(path, gz, rows, layout)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            loose.append(str(path))  # a bad image among them is an error row, not a failed plan
        else:
            raise InvalidInputError(f"{given}: not an input mnistkit scores (expected a folder of images, an image, "
                                    "an IDX file, a .npy array or a Parquet file)")
    flush()
    return shards
