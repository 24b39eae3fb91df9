"""`mnistkit score`: the output folder. One run at a time (a lock), only score's own files, --resume's parts checked
against their shards and the model, and the final check that every input has exactly one row."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, first_line
from .shards import PART_PREFIX, PART_SUFFIX, Shard
from .worker import MODEL_META, SHARD_META


SUMMARY = "_SUCCESS.json"


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

    from ..fileio import check_writable_dir

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
