#!/usr/bin/env python
"""Mutation fuzz of the two mobile runtimes' files (issue 22): what reaches ncnn and MNN from a damaged or hostile
file, and whether any of it kills the process that loads it.

An MLP and a CNN (random weights: values do not matter here, structure does) are exported to ncnn and MNN; each
mutant (bytes flipped, int32 fields set to edge values, param values replaced, layer types swapped, weights
garbled) is loaded with `mnistkit.load` in its own child process, which then runs zeros at batch 1, 3, 64 and 1000
(the loading gate's rehearsal, in a grandchild, runs batches 1 and 3 first). Each mutant ends in one of:

- refused: one mnistkit error at load (the static gate, or the rehearsal when the runtime crashed in it);
- error: it loaded, and a run raised one mnistkit error line (never a traceback);
- ran: every batch ran (the runtime computed something from the damaged file: garbage, not a crash);
- CRASHED: the child died by a signal. That is a finding: the gate let through a file that kills the process.

    .venv/bin/python benchmarks/fuzz_mobile.py [--mutants 300] [--seed 0] [--keep DIR]   # results/fuzz-mobile-seed0.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"  # fuzz-mobile-seed<N>.json
BATCHES = (1, 3, 64, 1000)
KEEP: Path | None = None
EDGE_INTS = (0, 1, -1, 2, 3, 7, 65, 255, 784, 1 << 16, 1 << 24, (1 << 31) - 1, -(1 << 31))

CHILD = r"""
import sys, numpy as np, mnistkit
from mnistkit.errors import MnistkitError
path = sys.argv[1]
try:
    model = mnistkit.load(path)
except MnistkitError as exc:
    print("\nREFUSED", str(exc).splitlines()[0][:300], flush=True); sys.exit(0)
g, form = model.info.geometry, model.info.input_form
tail = g.float_tail if form == "float" else g.pixel_tail
for n in (%s):
    print("\nBATCH", n, flush=True)
    try:
        model.run(np.zeros((n, *tail), np.float32 if form == "float" else np.uint8))
    except MnistkitError as exc:
        print("\nERROR", n, str(exc).splitlines()[0][:300], flush=True); sys.exit(0)
print("\nRAN", flush=True)
""" % ", ".join(map(str, BATCHES))


def export(arch: str, folder: Path) -> Path:
    import torch

    from mnistkit.exporter import export_model
    from mnistkit.model import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(arch)
    ckpt = save_checkpoint(folder / f"{arch}.pt", model.state_dict(), {"arch": arch, "arch_args": {}, "dataset": "mnist"})
    out = folder / arch
    export_model(ckpt, ["ncnn", "mnn"], out_dir=out, validate=False)
    return out


# ---- mutators: each returns (description, {file name: new bytes})

def structure_words(data: bytes) -> list[int]:
    """Offsets of the 4-byte words that do not look like weights: a trained model's float32 weights are normal
    numbers of modest size, while offsets, vtable entries, counts, shapes and enum values read as float32 are zero,
    denormal or huge. Most of a model file is weights: mutating at random would mostly change numbers."""
    import numpy as np

    words = np.frombuffer(data[:len(data) // 4 * 4], "<f4")
    size = np.abs(words.astype(np.float64))
    return (np.flatnonzero(~((size > 1e-12) & (size < 1e3))) * 4).tolist()


def mnn_bytes(rng: random.Random, data: bytes, structure: list[int]) -> tuple[str, bytes]:
    b = bytearray(data)
    where = "a structure word" if rng.random() < 0.8 else "anywhere"
    pick = (lambda: rng.choice(structure)) if where != "anywhere" else (lambda: rng.randrange(0, len(b) - 4) & ~3)
    if rng.random() < 0.5:
        flips = {pick() + rng.randrange(4): rng.randrange(256) for _ in range(rng.randint(1, 3))}
        for i, v in flips.items():
            b[i] = v
        return f"bytes {flips} ({where})", bytes(b)
    i = pick()
    v = rng.choice(EDGE_INTS)
    struct.pack_into("<i", b, i, v)
    return f"int32 at {i} ({where}) = {v}", bytes(b)


def ncnn_param(rng: random.Random, text: str) -> tuple[str, str]:
    lines = text.splitlines()
    layers = [i for i in range(2, len(lines)) if lines[i].strip()]
    i = rng.choice(layers)
    fields = lines[i].split()
    params = [k for k, f in enumerate(fields) if re.match(r"^-?\d+=", f)]
    roll = rng.random()
    if params and roll < 0.7:
        k = rng.choice(params)
        key = fields[k].split("=", 1)[0]
        fields[k] = f"{key}={rng.choice(EDGE_INTS)}" if rng.random() < 0.8 else f"{key}={rng.uniform(-10, 10):.3f}"
    elif roll < 0.85:
        fields.append(f"{rng.choice((0, 1, 2, 3, 4, 5, 6, 11, 12, 13, 14))}={rng.choice(EDGE_INTS)}")
    else:
        n = rng.randrange(2, 4)
        if len(fields) > n:
            fields[n] = str(rng.choice((0, 1, 2, 3)))  # a blob count
    lines[i] = " ".join(fields)
    return "\n".join(lines) + "\n", f"line {i}: {lines[i][:120]}"


def mutants(rng: random.Random, folder: Path, count: int):
    mnn = (folder / "model.mnn").read_bytes()
    structure = structure_words(mnn)
    param = (folder / "model.ncnn.param").read_text()
    weights = (folder / "model.ncnn.bin").read_bytes()
    for k in range(count):
        if k % 2 == 0:
            what, data = mnn_bytes(rng, mnn, structure)
            yield "mnn", what, {"model.mnn": data}
        elif rng.random() < 0.85:
            text, what = ncnn_param(rng, param)
            yield "ncnn", f"param {what}", {"model.ncnn.param": text.encode(), "model.ncnn.bin": weights}
        else:
            b = bytearray(weights)
            cut = rng.random() < 0.5
            if cut:
                b = b[:rng.randrange(len(b))]
            else:
                for _ in range(8):
                    struct.pack_into("<f", b, rng.randrange(len(b) // 4) * 4, rng.choice((float("nan"), float("inf"), 1e38)))
            yield "ncnn", "bin " + ("cut short" if cut else "eight weights set to NaN/inf/1e38"), \
                {"model.ncnn.param": param.encode(), "model.ncnn.bin": bytes(b)}


def run_one(job) -> dict:
    runtime, what, files, d = job
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    path = d / ("model.mnn" if runtime == "mnn" else "model.ncnn.param")
    r = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=600,
                       cwd=d, stdin=subprocess.DEVNULL)
    out = r.stdout.split("\n")
    last_batch = [line for line in out if line.startswith("BATCH")]
    row = {"runtime": runtime, "mutation": what}
    if r.returncode < 0:
        row.update(outcome="CRASHED", signal=-r.returncode, at=last_batch[-1] if last_batch else "load")
        if KEEP is not None:  # the file, for a look (never committed: benchmarks/results holds the description only)
            KEEP.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (KEEP / f"{d.name}-{name}").write_bytes(data)
    elif any(line.startswith("REFUSED") for line in out):
        reason = next(line for line in out if line.startswith("REFUSED"))[8:]
        row.update(outcome="refused", by="rehearsal" if "rehearsal" in reason else "gate", reason=reason)
    elif any(line.startswith("ERROR") for line in out):
        row.update(outcome="error", reason=next(line for line in out if line.startswith("ERROR"))[6:])
    elif "RAN" in out:
        row.update(outcome="ran")
    else:
        row.update(outcome="TRACEBACK", rc=r.returncode, stderr=r.stderr[-600:])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mutants", type=int, default=300, help="per model (half MNN, half ncnn)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="copy each crashing mutant's files into this folder")
    args = ap.parse_args()
    global KEEP
    KEEP = args.keep
    from mnistkit.environment import fingerprint

    rng = random.Random(args.seed)
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mnistkit-fuzz-") as tmp:
        tmp = Path(tmp)
        jobs = []
        for arch in ("mlp", "cnn"):
            folder = export(arch, tmp)
            jobs += [(rt, f"{arch}: {what}", files, tmp / "m" / f"{arch}-{k}")
                     for k, (rt, what, files) in enumerate(mutants(rng, folder, args.mutants))]
        with ThreadPoolExecutor(args.workers) as pool:
            for i, row in enumerate(pool.map(run_one, jobs), 1):
                rows.append(row)
                if row["outcome"] in ("CRASHED", "TRACEBACK"):
                    print(f"{row['outcome']}: {row}", flush=True)
                if i % 50 == 0:
                    print(f"{i}/{len(jobs)} {dict(Counter(r['outcome'] for r in rows))}", flush=True)
    summary = {rt: dict(Counter(r["outcome"] + (f" ({r['by']})" if "by" in r else "") for r in rows
                                if r["runtime"] == rt)) for rt in ("mnn", "ncnn")}
    found = [r for r in rows if r["outcome"] in ("CRASHED", "TRACEBACK")]
    report = {"environment": fingerprint(), "seed": args.seed, "mutants": len(rows), "batches": list(BATCHES),
              "seconds": round(time.perf_counter() - t0, 1), "summary": summary, "findings": found,
              "rehearsal_refusals": [r for r in rows if r.get("by") == "rehearsal"][:20]}
    out = RESULTS / f"fuzz-mobile-seed{args.seed}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"{len(found)} findings; wrote {out}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
