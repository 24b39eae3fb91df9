"""`mnistkit score`: the worker. A Scorer loads the artifact once and scores shards into their part files (a
temporary name renamed into place when complete: retries are idempotent); the same class runs in-process and as a
Ray actor."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InvalidInputError
from .read import Chunk, read_chunks
from .shards import Layout, Shard


SHARD_META, MODEL_META = b"mnistkit.shard", b"mnistkit.model_sha256"
ROW_GROUP = 65536  # output rows per Parquet row group
# Dictionary encoding (and statistics) only where values repeat: a unique id or a probability vector would be
# tried and dropped for every page; 0.35 -> 0.2 s per 200,000 rows (measured).
WRITER_OPTIONS = {"use_dictionary": ["source", "label", "top_k_labels.list.element", "model_sha256", "error"],
                  "write_statistics": ["index", "class_index", "error"]}


class StrictError(InvalidInputError):
    """--strict and an input that cannot be scored."""


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

        from ..backends import create_backend

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

        from ..compare import probabilities

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
