"""Score many images with one artifact: Parquet out, exactly one row per input, on Ray Data or in-process.

The work is cut into *shards* planned from file headers only (an IDX or .npy file's header, a Parquet
file's footer, a folder's listing): a range of images of one array file, one Parquet row group, or up
to IMAGE_SHARD_FILES image files. The driver never reads a pixel. Each shard is scored by a worker
that loaded the artifact once through mnistkit's backend contract (any runtime) and writes the
shard's rows to its own part file, `part-<shard key>.parquet`, under a temporary name renamed into
place when complete. So:

- a retried shard (Ray restarts a worker that died and re-runs its task) rewrites the same part:
  retries are idempotent, never duplicates;
- `--resume` skips the shards whose part is already there (its footer names the shard and the model);
- before anything says success, the driver checks every part against its shard (row count from the
  footer, then the ids themselves, part by part) and writes `_SUCCESS.json` with the counts.

Why not Ray Data's own readers and `write_parquet`: `read_numpy` and `read_parquet` yield rows
without their position in the file, so no stable id (file + index) can be made, and `write_parquet`
names files by block, so a retried or resumed block cannot be matched to what it replaces. Ray Data
does what it is good at here: distributing the shards over an actor pool, restarting dead actors and
retrying their tasks, streaming results back. Without Ray the same shards run in-process, one after
another, in bounded memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import contextlib
import functools
import json
import os
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import DataError, InvalidInputError, MissingDependencyError, first_line
from .pixels import DIGITS, MAX_SIDE, Geometry
from .preprocess import IMAGE_SUFFIXES
from .signals import publishing

SHARD_ROWS = 16384  # images per shard of an array file: ~12 MB of pixels, a few ms to ~0.1 s of work
IMAGE_SHARD_FILES = 1024  # image files per shard (decoding dominates: ~0.2 ms each)
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
SUMMARY = "_SUCCESS.json"
SHARD_META, MODEL_META = b"mnistkit.shard", b"mnistkit.model_sha256"
DIGIT_TAIL = (28, 28)  # MNIST's rows, which a model's transforms (Pad, Resize, ...) may take to its own size
MAX_ERRORS_LISTED = 5
ROW_GROUP = 65536  # output rows per Parquet row group
# Dictionary encoding (and statistics) only where values repeat: a unique id or a probability vector would be
# tried and dropped for every page; 0.35 -> 0.2 s per 200,000 rows (measured).
WRITER_OPTIONS = {"use_dictionary": ["source", "label", "top_k_labels.list.element", "model_sha256", "error"],
                  "write_statistics": ["index", "class_index", "error"]}


class StrictError(InvalidInputError):
    """--strict and an input that cannot be scored."""


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
        from .steps import apply_steps

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
        from .steps import steps_text

        return steps_text(self.steps)

    @classmethod
    def of(cls, info) -> "Layout":
        """The layout of a loaded backend's ModelInfo (its transforms are already hashable tuples)."""
        return cls(info.geometry, info.transforms)


@functools.lru_cache(maxsize=64)  # asked per raw row of a Parquet column: the answer is one small resize away
def _takes(geometry: Geometry, steps: tuple, tail: tuple[int, ...]) -> bool:
    from .steps import apply_steps

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


# ---------------------------------------------------------------------------------------------
# Shards


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
    from .preprocess import NPY_ERRORS, npy_header

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
    from .data import idx_header

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
    from .data import max_input_bytes

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


# ---------------------------------------------------------------------------------------------
# Reading a shard (in the worker)


@dataclass
class Chunk:
    """Up to one batch of a shard: pixels for the readable rows, an error for the others."""

    source: str  # the array file the rows come from ("" for image files)
    start: int  # the first row's index in `source`
    n: int
    pixels: np.ndarray  # the model's uint8 pixels [k,H,W(,3)] or float32 [k,C,H,W], k = rows without an error
    ok: np.ndarray  # bool [n]: which rows `pixels` holds, in order
    errors: dict[int, str] = field(default_factory=dict)  # row -> message
    paths: list[str] | None = None  # image files: each row's path (its id)

    def name(self, j: int) -> str:
        return self.paths[j] if self.paths is not None else f"{self.source}[{self.start + j}]"


def _array_chunks(shard: Shard, batch: int, layout: Layout) -> Iterator[Chunk]:
    tail, per = tuple(shard.tail), int(np.prod(shard.tail))
    if shard.kind == "npy" or not shard.gz:
        dtype = np.float32 if shard.dtype == "float32" else np.uint8
        arr = np.memmap(shard.source, dtype=dtype, mode="r", offset=shard.offset, shape=(shard.stop,) + tail)
        read = lambda a, b: np.array(arr[a:b])  # noqa: E731  (a copy: the map is closed with the shard)
    else:
        stream = gzip.open(shard.source, "rb")
        skip = shard.offset + shard.start * per
        while skip:
            skip -= len(stream.read(min(skip, 1 << 20)))
        read = lambda a, b: np.frombuffer(stream.read((b - a) * per), np.uint8).reshape(-1, *tail)  # noqa: E731
    try:
        for a in range(shard.start, shard.stop, batch):
            b = min(shard.stop, a + batch)
            pixels = read(a, b)
            if len(pixels) != b - a:
                raise InvalidInputError(f"{shard.source}: changed while being scored (images {a}-{b} missing)")
            pixels = layout.to_model(pixels)
            ok = np.ones(b - a, bool)
            if pixels.dtype == np.float32:
                finite = np.isfinite(pixels.reshape(len(pixels), -1)).all(axis=1)
                if not finite.all():
                    ok = finite
                    pixels = pixels[finite]
            yield Chunk(shard.source, a, b - a, pixels, ok,
                        {int(j): f"{shard.source}[{a + j}]: holds NaN or infinite values; expected finite normalized "
                                 "floats" for j in np.flatnonzero(~ok)})
    finally:
        if shard.kind == "idx" and shard.gz:
            stream.close()


def _decode(blob, name: str, recipe: str, layout: Layout) -> np.ndarray:
    from .preprocess import open_image, preprocess_image

    img, mode = open_image(io.BytesIO(blob), name)
    with img:
        return preprocess_image(img, recipe, name, original_mode=mode, geometry=layout.geometry, steps=layout.steps)


def _decoded_chunk(items, recipe: str, layout: Layout, source: str = "", start: int = 0, paths=None) -> Chunk:
    """items: per row, an image file (Path), image bytes, a pixel sequence, an error message (str) or None."""
    from .preprocess import _image_pixels

    chunk = Chunk(source, start, len(items), np.zeros((0, *layout.geometry.pixel_tail), np.uint8),
                  np.zeros(len(items), bool), {}, paths)
    good = []
    for j, item in enumerate(items):
        name = chunk.name(j)
        try:
            if item is None:
                raise InvalidInputError(f"{name}: no image (null)")
            if isinstance(item, Path):  # an image file
                good.append(_image_pixels(item, recipe, layout.geometry, layout.steps))
            elif isinstance(item, (bytes, bytearray, memoryview)):  # an encoded image (PNG, JPEG, BMP)
                good.append(_decode(item, name, recipe, layout))
            else:
                values = np.asarray(item)
                tail = layout.raw_tail(values.size)
                if tail is None or values.dtype.kind not in "iu" or values.min() < 0 or values.max() > 255:
                    raise InvalidInputError(f"{name}: {values.size} values in [{values.min() if values.size else ''}, "
                                            f"{values.max() if values.size else ''}]; expected "
                                            f"{layout.raw_expected()} pixels in [0, 255]")
                good.append(layout.to_model(values.astype(np.uint8).reshape(1, *tail))[0])
            chunk.ok[j] = True
        except InvalidInputError as exc:
            chunk.errors[j] = str(exc)
        except Exception as exc:  # a decoder's own failure on hostile bytes: that row's error, not the job's
            chunk.errors[j] = f"{name}: unreadable image ({first_line(exc, 160)})"
    if good:
        chunk.pixels = np.stack(good)
    return chunk


def _parquet_chunks(shard: Shard, batch: int, recipe: str, layout: Layout) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(shard.source)
    i = shard.start
    for rb in pf.iter_batches(batch_size=batch, row_groups=[shard.row_group], columns=[shard.column]):
        col = rb.column(0)
        if pa.types.is_struct(col.type):
            col = col.field("bytes")
        n = len(col)
        width = col.type.byte_width if pa.types.is_fixed_size_binary(col.type) else \
            col.type.list_size if pa.types.is_fixed_size_list(col.type) else 0
        tail = layout.raw_tail(width) if width else None
        if pa.types.is_fixed_size_binary(col.type) and col.null_count == 0:  # raw pixels, zero-copy
            pixels = np.frombuffer(col.buffers()[1], np.uint8, count=n * width, offset=col.offset * width)
            yield Chunk(shard.source, i, n, layout.to_model(pixels.reshape(n, *tail)), np.ones(n, bool))
        elif (tail is not None and pa.types.is_fixed_size_list(col.type) and col.null_count == 0
                and pa.types.is_uint8(col.type.value_type)):  # uint8 pixel lists, no per-row work
            pixels = col.values.to_numpy(zero_copy_only=False).reshape(n, *tail)
            yield Chunk(shard.source, i, n, layout.to_model(pixels), np.ones(n, bool))
        elif pa.types.is_fixed_size_binary(col.type):  # raw pixels with null rows among them
            yield _decoded_chunk([None if v is None else np.frombuffer(v, np.uint8) for v in col.to_pylist()],
                                 recipe, layout, shard.source, i)
        else:  # encoded images, or lists of integers checked row by row (the model's pixels, in [0, 255])
            yield _decoded_chunk(col.to_pylist(), recipe, layout, shard.source, i)
        i += n
    if i != shard.stop:
        raise InvalidInputError(f"{shard.source}: row group {shard.row_group} holds {i - shard.start} rows, "
                                f"its footer said {shard.size} (changed while being scored?)")


def _image_chunks(shard: Shard, batch: int, recipe: str, layout: Layout) -> Iterator[Chunk]:
    for a in range(0, len(shard.paths), batch):
        paths = list(shard.paths[a:a + batch])
        yield _decoded_chunk([Path(p) for p in paths], recipe, layout, paths=paths)


def read_chunks(shard: Shard, batch: int, recipe: str, layout: Layout = Layout()) -> Iterator[Chunk]:
    """The shard's rows in batches, as the model's pixels (`layout`: its geometry and transforms)."""
    if shard.kind in ("idx", "npy"):
        return _array_chunks(shard, batch, layout)
    if shard.kind == "parquet":
        return _parquet_chunks(shard, batch, recipe, layout)
    return _image_chunks(shard, batch, recipe, layout)


# ---------------------------------------------------------------------------------------------
# The worker


def output_schema(num_classes: int):
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("source", pa.string()), ("index", pa.int64()),
        ("label", pa.string()), ("class_index", pa.int16()),
        ("top_k_labels", pa.list_(pa.string())), ("top_k_probabilities", pa.list_(pa.float32())),
        ("probabilities", pa.list_(pa.float32(), num_classes)),
        ("model_sha256", pa.string()), ("error", pa.string()),
    ])


class Scorer:
    """Loads the artifact once; scores shards into their part files. The same class runs in-process
    and as a Ray actor."""

    def __init__(self, model: str, out: str, model_sha256: str, backend: str | None = None, threads: int | None = None,
                 batch_size: int = 1024, top_k: int = 3, strict: bool = False, options: dict | None = None):
        import pyarrow as pa

        from .backends import create_backend

        self.out, self.sha, self.batch, self.strict = Path(out), model_sha256, batch_size, strict
        self.backend = create_backend(model, backend, "cpu", threads=threads, **(options or {})).load()
        info = self.backend.info
        self.labels = list(info.labels)
        self.label_array = pa.array(self.labels, pa.string())
        self.recipe, self.k = info.recipe, min(top_k, info.num_classes)
        self.layout = Layout.of(info)
        self.schema = output_schema(info.num_classes)

    def score_shard(self, shard: Shard, progress: Callable[[int], None] | None = None) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        t0 = time.perf_counter()
        final = self.out / shard.part_name
        tmp = self.out / f".{shard.part_name}.{os.getpid()}.tmp"
        schema = self.schema.with_metadata({SHARD_META: shard.to_json().encode(), MODEL_META: self.sha.encode()})
        rows = errors = 0
        first_error = None
        pending: list = []
        pending_rows = 0
        try:
            with pq.ParquetWriter(tmp, schema, **WRITER_OPTIONS) as writer:
                for chunk in read_chunks(shard, self.batch, self.recipe, self.layout):
                    table = self._table(chunk, schema)
                    if table.column("error").null_count < len(table):
                        bad = [e for e in table.column("error").to_pylist() if e]
                        errors += len(bad)
                        first_error = first_error or (bad[0] if bad else None)
                        if bad and self.strict:
                            raise StrictError(f"{bad[0]} (--strict: an input that cannot be scored fails the job)")
                    pending.append(table)
                    rows += len(table)
                    pending_rows += len(table)
                    if pending_rows >= ROW_GROUP:  # one row group per ~64k rows, not per batch
                        writer.write_table(pa.concat_tables(pending))
                        pending, pending_rows = [], 0
                    if progress:
                        progress(len(table))
                if pending:
                    writer.write_table(pa.concat_tables(pending))
            if rows != shard.size:
                raise InvalidInputError(f"{shard.source or shard.paths[0]}: {rows} rows scored, {shard.size} planned")
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        return {"key": shard.key, "rows": rows, "errors": errors, "first_error": first_error or "",
                "seconds": time.perf_counter() - t0}

    def _table(self, chunk: Chunk, schema):
        """The chunk's rows as an Arrow table, built column-wise in Arrow's C++ (no Python loop per row)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from .compare import probabilities

        n, c, k = chunk.n, len(self.labels), self.k
        probs = np.zeros((n, c), np.float32)
        good = chunk.ok.copy()
        errors = dict(chunk.errors)
        if len(chunk.pixels):
            logits = self.backend.run(chunk.pixels)
            rows = np.flatnonzero(chunk.ok)
            finite = np.isfinite(logits).all(axis=1)
            for j in rows[~finite]:
                errors[int(j)] = f"{chunk.name(j)}: the model's outputs are not finite (NaN or infinite logits)"
                good[j] = False
            probs[rows] = probabilities(logits)  # float32: the order (the labels) is the logits' own either way
        bad = pa.array(~good)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        offsets = pa.array(np.concatenate([[0], np.cumsum(np.where(good, k, 0))]).astype(np.int32))
        flat = pa.array(order[good].reshape(-1).astype(np.int32))
        const = lambda value: pa.DictionaryArray.from_arrays(  # noqa: E731  (one string, n times, in C++)
            pa.array(np.zeros(n, np.int32)), pa.array([value], pa.string())).cast(pa.string())
        if chunk.paths is not None:
            ids = source = pa.array(chunk.paths, pa.string())
            index = pa.nulls(n, pa.int64())
        else:
            index = pa.array(np.arange(chunk.start, chunk.start + n, dtype=np.int64))
            ids = pc.binary_join_element_wise(const(chunk.source + "["), pc.cast(index, pa.string()), const("]"), "")
            source = const(chunk.source)
        top = pa.array(order[:, 0].astype(np.int16), mask=~good)
        return pa.Table.from_arrays([
            ids, source, index,
            pc.take(self.label_array, top),
            top,
            pa.ListArray.from_arrays(offsets, pc.take(self.label_array, flat), mask=bad),
            pa.ListArray.from_arrays(offsets, pa.array(np.take_along_axis(probs, order, 1)[good].reshape(-1)), mask=bad),
            pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), c, mask=bad),
            const(self.sha),
            pa.array([errors.get(j) for j in range(n)], pa.string()) if errors else pa.nulls(n, pa.string()),
        ], schema=schema)

    def close(self) -> None:
        self.backend.close()


class _RayScorer:
    """Scorer as Ray Data's map_batches callable: one row per shard in, one summary row out.

    Its arguments travel inside the class (a subclass made per job with KWARGS set), not as constructor
    arguments: Ray keeps those in its object store, and a restarted actor whose arguments were lost with a
    dead worker could not start again.
    """

    KWARGS: dict = {}

    def __init__(self):
        self.scorer = Scorer(**self.KWARGS)

    def __call__(self, batch: dict) -> dict:
        done = [self.scorer.score_shard(Shard.from_json(str(s))) for s in batch["shard"]]
        return {k: np.array([d[k] for d in done]) for k in ("key", "rows", "errors", "first_error", "seconds")}


# ---------------------------------------------------------------------------------------------
# The output folder


def _our_file(name: str) -> bool:
    return name in (SUMMARY, LOCK_FILE) or (name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)) or \
        (name.startswith("." + PART_PREFIX) and name.endswith(".tmp"))


LOCK_FILE = ".score.lock"


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold an exclusive lock on the output folder (flock on its .score.lock) while a run writes into it: a
    second `score` on the same folder (a --resume while the first still runs) is refused instead of deleting
    the first one's unfinished parts. The folder is created here when it does not exist."""
    import fcntl

    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out}: is a file; expected a folder for the Parquet parts (or a new name)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InvalidInputError(f"--out {out}: cannot write there ({exc.strerror or exc}); expected a folder this "
                                "user can create and write") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InvalidInputError(f"--out {out}: another mnistkit score is writing into it; wait for it to end "
                                    "(or use another --out)") from None
        yield
    finally:
        os.close(fd)  # releases the lock; the empty lock file stays (removing it would race a waiting run)


def prepare_out(out: Path, shards: list[Shard], sha: str, resume: bool, overwrite: bool) -> set[str]:
    """Check (and, with --overwrite, clear) the output folder, which output_lock created and holds; return the
    keys of shards already done."""
    import pyarrow.parquet as pq

    from .fileio import check_writable_dir

    check_writable_dir(out, "--out")
    names = [n for n in os.listdir(out) if n != LOCK_FILE]
    foreign = sorted(n for n in names if not _our_file(n))
    if foreign:
        raise InvalidInputError(f"--out {out}: holds files score did not write ({', '.join(foreign[:3])}); "
                                "expected a new or earlier score output folder")
    if overwrite:
        for n in names:
            (out / n).unlink()
        return set()
    for n in names:
        if n.endswith(".tmp"):
            (out / n).unlink()  # a part an interrupted run did not finish
    parts = sorted(n for n in names if n.startswith(PART_PREFIX))
    if (out / SUMMARY).exists() and not resume:
        raise InvalidInputError(f"--out {out}: already holds a complete run ({SUMMARY}); --overwrite to score again")
    if parts and not resume:
        raise InvalidInputError(f"--out {out}: holds {len(parts)} parts of an earlier run; --resume to finish it "
                                "or --overwrite to start again")
    wanted = {s.part_name: s for s in shards}
    done = set()
    for n in parts:
        if n not in wanted:
            raise InvalidInputError(f"--out {out}: {n} is not a part of these inputs (another run's output?); "
                                    "--overwrite to start again")
        try:
            meta = pq.read_metadata(out / n)
        except Exception as exc:
            raise InvalidInputError(f"--out {out}: {n} is unreadable ({first_line(exc, 120)}); delete it to re-score "
                                    "its shard") from None
        kv = meta.metadata or {}
        if kv.get(MODEL_META, b"").decode() != sha:
            raise InvalidInputError(f"--out {out}: {n} was scored with another model (sha256 "
                                    f"{kv.get(MODEL_META, b'?').decode()[:12]}…); --overwrite to start again")
        if kv.get(SHARD_META, b"").decode() == wanted[n].to_json() and meta.num_rows == wanted[n].size:
            done.add(wanted[n].key)
    (out / SUMMARY).unlink(missing_ok=True)
    return done


def check_output(out: Path, shards: list[Shard]) -> dict:
    """Every input has exactly one row: each shard's part holds its ids, once, in order; nothing else is there."""
    import pyarrow.parquet as pq

    wanted = {s.part_name: s for s in shards}
    parts = {n for n in os.listdir(out) if n.startswith(PART_PREFIX) and n.endswith(PART_SUFFIX)}
    missing = [n for n in wanted if n not in parts]
    extra = sorted(parts - set(wanted))
    rows = wrong = errors = 0
    for name, shard in wanted.items():  # part by part: memory stays at one part's ids
        if name in missing:
            continue
        if shard.kind == "images":
            table = pq.read_table(out / name, columns=["id", "error"])
            same = table.column("id").to_pylist() == list(shard.paths)
        else:  # the index column proves the ids (file[index]): cheaper than 1e6 strings
            table = pq.read_table(out / name, columns=["index", "error"])
            index = table.column("index")
            same = index.null_count == 0 and np.array_equal(index.to_numpy(), np.arange(shard.start, shard.stop))
        rows += len(table)
        errors += len(table) - table.column("error").null_count
        wrong += not same
    expected = sum(s.size for s in shards)
    report = {"expected_rows": expected, "rows": rows, "error_rows": errors, "missing_parts": len(missing),
              "unexpected_parts": len(extra), "parts_with_wrong_ids": wrong,
              "ok": not missing and not extra and not wrong and rows == expected}
    if not report["ok"]:
        raise InvalidInputError(
            f"--out {out}: the output does not have exactly one row per input ({rows} rows for {expected} inputs; "
            f"{len(missing)} parts missing, {len(extra)} unexpected, {wrong} with wrong ids); nothing marked done")
    return report


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class ScoreConfig:
    model: str
    inputs: list[str]
    out: str
    backend: str | None = None
    batch_size: int = 1024
    top_k: int = 3
    workers: int | None = None  # Ray actors; None: cores // threads
    threads_per_worker: int = 1
    address: str | None = None  # a Ray cluster ("auto", "ray://host:10001"); None: a local Ray
    engine: str = "auto"  # "ray", "local" or "auto" (Ray when installed)
    resume: bool = False
    overwrite: bool = False
    strict: bool = False
    column: str | None = None
    shard_rows: int = SHARD_ROWS


def _model_or_deployment(config: ScoreConfig) -> tuple[str, str | None, dict, dict | None]:
    """(model file, backend, backend options, the deployment used or None). A deploy folder (`mnistkit optimize`)
    gives the file, runtime and options it chose for the batch size nearest --batch-size; threads stay
    --threads-per-worker (the choice's threads were measured for one process, workers x threads share the cores)."""
    from .deploy import deploy_choice, is_deploy_folder, read_deploy

    if not is_deploy_folder(config.model):
        return config.model, config.backend, {}, None
    if config.backend is not None:
        raise InvalidInputError(f"{config.model}: a deploy folder runs the runtime it records; --backend goes with "
                                "a model file")
    b, c = deploy_choice(read_deploy(config.model), config.batch_size)
    return (str(Path(config.model) / c["file"]), c["backend"], dict(c["options"]),
            {"folder": str(config.model), "batch_size": b, "label": c["label"], "chosen_threads": c["threads"]})


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.data") is not None


def score(config: ScoreConfig, progress: Callable[[int, int], None] | None = None, log=None) -> dict:
    """Score every input into config.out; return the summary (also written as _SUCCESS.json)."""
    from .backends import create_backend
    from .fileio import atomic_write_json, sha256_file

    if config.batch_size < 1 or config.top_k < 1 or config.threads_per_worker < 1:
        raise InvalidInputError("--batch-size, --top-k and --threads-per-worker must be >= 1")
    if (config.engine == "ray" or config.address) and not ray_installed():
        raise MissingDependencyError("Ray is not installed: pip install 'mnistkit[scale]' (or run without --address "
                                     "to score in-process)")
    model, backend, options, deployment = _model_or_deployment(config)
    with create_backend(model, backend, "cpu", threads=1, **options) as probe:  # a bad model fails here, once
        info, backend_name = probe.info, probe.name
    sha = sha256_file(model)
    shards = plan(config.inputs, config.column, config.shard_rows, layout=Layout.of(info))
    out = Path(config.out)
    with output_lock(out):  # one score at a time per output folder: a --resume would delete a live run's parts
        done = prepare_out(out, shards, sha, config.resume, config.overwrite)
        todo = [s for s in shards if s.key not in done]
        total, skipped = sum(s.size for s in shards), sum(s.size for s in shards if s.key in done)
        cores = os.cpu_count() or 1
        threads = config.threads_per_worker
        workers = config.workers or max(1, cores // threads)
        kwargs = dict(model=str(Path(model).absolute()), out=str(out.absolute()), model_sha256=sha,
                      backend=backend, threads=threads, batch_size=config.batch_size, top_k=config.top_k,
                      strict=config.strict, options=options)
        t0 = time.perf_counter()
        counted = [skipped]
        first: list = []  # (time, rows) of the first rows written: what comes after is the steady state

        def advance(n: int) -> None:
            counted[0] += n
            if n and not first:
                first.append((time.perf_counter(), n))
            if progress:
                progress(counted[0], total)

        advance(0)
        engine = config.engine
        if engine == "auto":
            engine = "ray" if config.address or ray_installed() and len(todo) > 1 else "local"
            if engine == "local" and len(todo) == 1 and ray_installed() and log:
                # one shard is one worker's work: Ray's start (~6 s on 2 cores) would only add to it
                log(f"{todo[0].size:,} images are one shard: scoring in-process (Ray pays off from two shards, "
                    f"{config.shard_rows:,} images each)")
        if not todo:
            results = []
        elif engine == "ray":
            workers = min(workers, len(todo))  # an actor without a shard would only cost its start
            results = _run_ray(todo, kwargs, workers, threads, config.address, advance)
        else:
            if log and not ray_installed():
                log("Ray is not installed: scoring in-process, one shard after another (pip install 'mnistkit[scale]' "
                    "parallelizes it over cores or a cluster)")
            workers = 1
            results = _run_local(todo, kwargs, advance)
        end = time.perf_counter()
        seconds = end - t0
        check = check_output(out, shards)
        check_seconds = time.perf_counter() - end
        scored = sum(r["rows"] for r in results)
        steady = None
        if first and scored > first[0][1] and end > first[0][0]:
            steady = round((scored - first[0][1]) / (end - first[0][0]), 1)
        errors = check["error_rows"]
        first_errors = [r["first_error"] for r in results if r["first_error"]][:MAX_ERRORS_LISTED]
        summary = {
            "model": str(model), "model_sha256": sha, "kind": info.kind, "backend": backend_name,
            **({"deployment": deployment} if deployment else {}),
            "labels": list(info.labels), "engine": "ray" if engine == "ray" else "in-process",
            "address": config.address, "workers": workers,
            "threads_per_worker": threads, "batch_size": config.batch_size, "inputs": [str(i) for i in config.inputs],
            "images": total, "rows": check["rows"], "errors": errors, "first_errors": first_errors,
            "scored_now": scored, "skipped_by_resume": skipped, "shards": len(shards), "seconds": round(seconds, 3),
            "images_per_second": round(scored / seconds, 1) if seconds > 0 and scored else None,
            # Ray's start, the workers' start and the first shard, then the rate once every worker is busy
            "seconds_to_first_rows": round(first[0][0] - t0, 3) if first else None,
            "steady_images_per_second": steady, "check_seconds": round(check_seconds, 3),
            "check": check, "out": str(out),
        }
        with publishing(str(out)):
            atomic_write_json(out / SUMMARY, summary)
        return summary


def _run_local(todo: list[Shard], kwargs: dict, advance) -> list[dict]:
    scorer = Scorer(**kwargs)
    try:
        return [scorer.score_shard(s, advance) for s in todo]
    finally:
        scorer.close()


QUIET_LOGGERS = (  # Ray's start-up and Ray Data's execution notes; errors still show
    "ray", "ray.data", "ray._private.authentication.authentication_token_setup", "ray.data._internal.progress",
    "ray.data._internal.execution.streaming_executor")


def _run_ray(todo: list[Shard], kwargs: dict, workers: int, threads: int, address: str | None, advance) -> list[dict]:
    import logging
    import warnings

    from .capture import native_stderr_captured

    # Ray's processes inherit fd 2 and print start-up notes from C++ (one per actor about how Ray Data passes
    # its arguments): kept off the terminal; every Ray log stays in its session folder, and errors come back
    # as exceptions
    with warnings.catch_warnings(), native_stderr_captured():
        warnings.simplefilter("ignore", DeprecationWarning)  # Ray Data's own deprecated settings, read at start
        # JAX (imported by an export earlier in this process) warns of any fork; Ray's fork is followed by exec
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        import ray
        import ray.data

        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        started = not ray.is_initialized()  # a Ray the caller started is theirs to keep; one started here stops
        if started:
            _check_reachable(address)
            cpus = None if address else max(os.cpu_count() or 1, workers * threads)
            from .signals import keep_signal_handlers

            try:
                with keep_signal_handlers():  # Ray's driver handler would exit 15 without a line
                    ray.init(address=address, num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                             logging_level=logging.ERROR, configure_logging=False)
            except Exception as exc:
                from .errors import BackendUnavailableError

                raise BackendUnavailableError(f"Ray did not start{f' at {address}' if address else ''}: "
                                              f"{first_line(exc, 200)}") from None
        try:
            return _run_dataset(todo, kwargs, workers, threads, advance)
        finally:
            if started:
                ray.shutdown()


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a cluster address (host:port, ray://host:port) does not answer:
    ray.init keeps retrying an unreachable GCS for a long time."""
    import socket

    if not address or address == "auto" or address.startswith("local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInputError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        from .errors import BackendUnavailableError

        raise BackendUnavailableError(f"--address {address}: no Ray cluster answers there "
                                      f"({exc.strerror or exc}); start one with `ray start --head`, or leave "
                                      "--address out to use this machine") from None


def _run_dataset(todo: list[Shard], kwargs: dict, workers: int, threads: int, advance) -> list[dict]:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    sizes = {s.key: s.size for s in todo}
    ds = ray.data.from_items([{"shard": s.to_json()} for s in todo], override_num_blocks=len(todo))
    job = type("_RayScorer", (_RayScorer,), {"KWARGS": kwargs, "__module__": __name__})
    ds = ds.map_batches(job, batch_size=1, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads)
    results = []
    try:
        for row in ds.iter_rows():
            r = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            results.append(r)
            advance(sizes.get(r["key"], r["rows"]))
    except Exception as exc:
        raise _unwrap(exc) from None
    return results


def _unwrap(exc: BaseException) -> BaseException:
    """A worker's own error (a --strict row, a bad input) out of Ray's wrapping, else one line."""
    from .errors import MnistkitError

    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, InvalidInputError):
            return type(e)(str(e))
        cause = getattr(e, "cause", None)
        e = cause if isinstance(cause, BaseException) else (e.__cause__ or e.__context__)
    return MnistkitError(f"the Ray job failed: {first_line(exc, 300)}")
