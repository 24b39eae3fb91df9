#!/usr/bin/env python
"""Scoring at scale: `mnistkit score` on a local Ray against a single-process loop over the bare runtime.

Trains the Fashion-MNIST MLP (10 epochs, seed 0), exports model.onnx, and writes the 10,000 test images
repeated into Parquet shards (uint8 pixels, 784 per row, as a fixed-size list or fixed_size_binary(784);
100,000 rows per file, 16,384 per row group) until --images rows exist. Then, in this order, on the same files:

1. baseline: one process reads each file's row groups with pyarrow (batches of --batch-size), converts
   the pixels with the model's normalization and calls ONNX Runtime's InferenceSession.run, keeping the
   argmax (no output written): the least work any scorer could do. At 1 and 2 intra-op threads.
2. `mnistkit score --in-process` (one process, 2 threads): the same pipeline as Ray's workers, no Ray.
3. `mnistkit score` on a local Ray: 2 workers x 1 thread (and 1 x 2), Parquet out with the id, label,
   top-3, probabilities and model sha256 of every image, checked complete before it returns.

Each score run is a fresh subprocess (its own Ray), timed end to end (`wall_s`, Ray's start included)
and by score itself (`seconds`: from the first shard submitted to the last part written and checked).
The driver's peak RSS (VmHWM of the driver process; Ray's workers are other processes) is recorded
for --images and for a tenth of it. Writes benchmarks/results/score-<name>.json.

    python benchmarks/score_scale.py [--name 2core] [--images 1000000] [--layout list|binary]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROWS_PER_FILE = 100_000
ROW_GROUP = 16_384

DRIVER = r"""
import json, sys, time
from mnistkit import score as sc
cfg = sc.ScoreConfig(**json.loads(sys.argv[1]))
t0 = time.perf_counter()
s = sc.score(cfg)
s["wall_s"] = time.perf_counter() - t0
# VmHWM, not getrusage: ru_maxrss carries the parent's peak across fork + exec
s["driver_peak_rss_mb"] = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
print("SUMMARY" + json.dumps(s))
"""


def write_shards(folder: Path, images: np.ndarray, total: int, layout: str) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    reps = -(-ROWS_PER_FILE // len(images))
    block = np.concatenate([images] * reps)[:ROWS_PER_FILE]
    for i in range(0, total, ROWS_PER_FILE):
        n = min(ROWS_PER_FILE, total - i)
        path = folder / f"images-{i // ROWS_PER_FILE:04d}.parquet"
        if layout == "list":  # what Ray Data and Hugging Face write for a uint8 array column
            col = pa.FixedSizeListArray.from_arrays(pa.array(block[:n].reshape(-1), pa.uint8()), 784)
        else:  # fixed_size_binary(784): a row's pixels as one value, read as a memcpy
            col = pa.FixedSizeBinaryArray.from_buffers(pa.binary(784), n, [None, pa.py_buffer(block[:n].tobytes())])
        pq.write_table(pa.table({"pixels": col}), path, row_group_size=ROW_GROUP)
        files.append(path)
    return files


def baseline(model: Path, files: list[Path], batch: int, threads: int) -> dict:
    import onnxruntime as ort
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mnistkit.backends import create_backend
    from mnistkit.pixels import pixels_to_float

    with create_backend(model) as b:
        mean, std, name = b.info.mean, b.info.std, b.info.input_name
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    n, t0 = 0, time.perf_counter()
    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=batch, columns=["pixels"]):
            col = rb.column(0)
            if pa.types.is_fixed_size_binary(col.type):
                px = np.frombuffer(col.buffers()[1], np.uint8, count=len(col) * 784, offset=col.offset * 784)
            else:
                px = col.values.to_numpy(zero_copy_only=False)
            px = px.reshape(-1, 28, 28)
            labels = sess.run(None, {name: pixels_to_float(px, mean, std)})[0].argmax(1)
            n += len(labels)
    seconds = time.perf_counter() - t0
    return {"images": n, "seconds": seconds, "images_per_second": n / seconds, "threads": threads}


def run_score(model: Path, files: list[Path], out: Path, **kw) -> dict:
    cfg = dict(model=str(model), inputs=[str(f) for f in files], out=str(out), overwrite=True, **kw)
    p = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cfg)], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"score failed: {p.stdout[-2000:]}{p.stderr[-3000:]}")
    s = json.loads(p.stdout.split("SUMMARY", 1)[1])
    keep = ("engine", "workers", "threads_per_worker", "batch_size", "rows", "errors", "seconds", "wall_s",
            "images_per_second", "seconds_to_first_rows", "steady_images_per_second", "check_seconds",
            "driver_peak_rss_mb", "shards")
    return {k: s[k] for k in keep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="2core")
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--layout", choices=["list", "binary"], default="list",
                    help="pixels as fixed_size_list<uint8>[784] or fixed_size_binary(784)")
    args = ap.parse_args()

    from mnistkit.data import load_split
    from mnistkit.environment import fingerprint
    from mnistkit.exporter import export_model
    from mnistkit.train import TrainConfig, train

    with tempfile.TemporaryDirectory(prefix="mnistkit-score-bench-") as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "mlp.pt"
        train(TrainConfig(dataset="fashion-mnist", model="mlp", epochs=10, seed=0, out=str(ckpt)))
        export_model(ckpt, "onnx", out_dir=tmp / "export")
        model = tmp / "export" / "model.onnx"
        test = load_split("fashion-mnist", "test")
        t0 = time.perf_counter()
        files = write_shards(tmp / "data", test.images, args.images, args.layout)
        print(f"wrote {args.images:,} images in {len(files)} files in {time.perf_counter() - t0:.1f} s", flush=True)
        small = files[:max(1, len(files) // 10)]
        b = args.batch_size
        runs = {
            "baseline_1_thread": baseline(model, files, b, 1),
            "baseline_2_threads": baseline(model, files, b, 2),
            "in_process_2_threads": run_score(model, files, tmp / "o1", engine="local", threads_per_worker=2,
                                              batch_size=b),
            "ray_2x1": run_score(model, files, tmp / "o2", engine="ray", workers=2, threads_per_worker=1, batch_size=b),
            "ray_1x2": run_score(model, files, tmp / "o3", engine="ray", workers=1, threads_per_worker=2, batch_size=b),
            "ray_2x1_tenth": run_score(model, small, tmp / "o4", engine="ray", workers=2, threads_per_worker=1,
                                       batch_size=b),
        }
        for name, r in runs.items():
            print(name, json.dumps(r), flush=True)
        out_bytes = sum(p.stat().st_size for p in (tmp / "o2").iterdir())
        in_bytes = sum(p.stat().st_size for p in files)
    base = runs["baseline_2_threads"]["images_per_second"]
    ratios = {k: round(base / r["images_per_second"], 3) for k, r in runs.items()
              if k.startswith(("ray", "in_process")) and r.get("images_per_second")}
    ratios_wall = {k: round(runs[k]["wall_s"] / runs["baseline_2_threads"]["seconds"], 3) for k in ratios}
    ratios_steady = {k: round(base / runs[k]["steady_images_per_second"], 3) for k in ratios
                     if runs[k].get("steady_images_per_second")}
    result = {"images": args.images, "layout": args.layout, "files": len(files), "rows_per_file": ROWS_PER_FILE,
              "row_group": ROW_GROUP,
              "input_bytes": in_bytes, "output_bytes_ray_2x1": out_bytes, "runs": runs,
              "time_over_baseline_2_threads": ratios, "wall_over_baseline_2_threads": ratios_wall,
              "steady_over_baseline_2_threads": ratios_steady,
              "driver_rss_mb": {"tenth": runs["ray_2x1_tenth"]["driver_peak_rss_mb"],
                                "full": runs["ray_2x1"]["driver_peak_rss_mb"]},
              "environment": fingerprint()}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"score-{args.name}-{args.layout}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("time_over_baseline_2_threads", "wall_over_baseline_2_threads",
                                             "steady_over_baseline_2_threads", "driver_rss_mb")}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
