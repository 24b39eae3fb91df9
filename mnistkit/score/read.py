"""`mnistkit score`: reading a shard in the worker, chunk by chunk, in bounded memory: array rows, Parquet cells,
image files decoded; a row that cannot be scored becomes an error row, never a crash."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InvalidInputError, first_line
from .shards import Layout, Shard


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
    from ..preprocess import open_image, preprocess_image

    img, mode = open_image(io.BytesIO(blob), name)
    with img:
        return preprocess_image(img, recipe, name, original_mode=mode, geometry=layout.geometry, steps=layout.steps)


def _decoded_chunk(items, recipe: str, layout: Layout, source: str = "", start: int = 0, paths=None) -> Chunk:
    """items: per row, an image file (Path), image bytes, a pixel sequence, an error message (str) or None."""
    from ..preprocess import _image_pixels

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


def read_chunks(shard: Shard, batch: int, recipe: str, layout: Layout | None = None) -> Iterator[Chunk]:
    """The shard's rows in batches, as the model's pixels (`layout`: its geometry and transforms; MNIST's digits
    when None)."""
    layout = layout or Layout()
    if shard.kind in ("idx", "npy"):
        return _array_chunks(shard, batch, layout)
    if shard.kind == "parquet":
        return _parquet_chunks(shard, batch, recipe, layout)
    return _image_chunks(shard, batch, recipe, layout)
