#!/usr/bin/env python
"""Smaller and faster: size, accuracy and latency of every ONNX format of the Fashion-MNIST MLP.

Trains the MLP (10 epochs, seed 0), exports every format (each int8/fp16 artifact passes the 0.3-point
accuracy gate on the full test split or is not written), then times mnistkit's ONNX Runtime backend on
each file at batch 1 and 1024, all formats interleaved block by block in one process so that their
ratios to fp32 survive the machine's noise. Writes benchmarks/results/quantization-<name>.json.

    python benchmarks/quantization.py [--name cpu] [--threads 2] [--min-time 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from mnistkit.backends import create_backend
from mnistkit.pixels import pixels_to_float
from mnistkit.bench import latency_stats, time_interleaved
from mnistkit.data import load_split
from mnistkit.environment import fingerprint
from mnistkit.exporter import export_model
from mnistkit.formats import FORMATS
from mnistkit.train import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = ["onnx", "onnx-int8", "onnx-int8-dynamic", "onnx-fp16", "onnx-app", "onnx-int8-app", "onnx-fp16-app"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=2.0)
    args = ap.parse_args()
    test = load_split("fashion-mnist", "test")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "mlp.pt"
        train(TrainConfig(dataset="fashion-mnist", epochs=10, seed=0, out=str(ckpt)))
        result = export_model(ckpt, ROWS, out_dir=Path(tmp) / "export")
        entries = {a["format"]: a for a in result.artifacts}
        backends = {f: create_backend(Path(tmp) / "export" / FORMATS[f].file, threads=args.threads).load()
                    for f in ROWS}
        timings = {}
        for batch in (1, 1024):
            idx = np.arange(batch) % len(test)
            pixels = np.ascontiguousarray(test.images[idx])
            floats = pixels_to_float(pixels, 0.2860, 0.3530)
            calls = [(lambda b=backends[f], x=(pixels if FORMATS[f].app else floats): b.run(x)) for f in ROWS]
            samples = time_interleaved(calls, 0.3, args.min_time, 20)
            for f, s in zip(ROWS, samples):
                st = latency_stats(s)
                timings.setdefault(f, {})[batch] = {"p50_ms": st.p50, "p99_ms": st.p99, "reps": st.reps}
        for b in backends.values():
            b.close()
    rows = []
    base = {"bytes": entries["onnx"]["bytes"], 1: timings["onnx"][1]["p50_ms"], 1024: timings["onnx"][1024]["p50_ms"]}
    for f in ROWS:
        e, t = entries[f], timings[f]
        v = e["validation"]
        rows.append({
            "format": f, "file": e["file"], "bytes": e["bytes"], "size_ratio": e["bytes"] / base["bytes"],
            "accuracy": v["accuracy"], "float_accuracy": v["reference_accuracy"],
            "accuracy_drop_points": e.get("accuracy_drop_points"), "top1_agreement": v["top1_agreement"],
            "method": (e.get("quantization") or {}).get("method"),
            "candidates": (e.get("quantization") or {}).get("candidates"),
            "p50_ms_b1": t[1]["p50_ms"], "p50_ms_b1024": t[1024]["p50_ms"], "p99_ms_b1": t[1]["p99_ms"],
            "ratio_b1": t[1]["p50_ms"] / base[1], "ratio_b1024": t[1024]["p50_ms"] / base[1024],
        })
    out = {"threads": args.threads, "min_time_s": args.min_time, "rows": rows, "environment": fingerprint()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"quantization-{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    print("| format | size | accuracy (Δ points) | top-1 vs fp32 | batch 1 p50 | batch 1024 p50 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        drop = "" if r["accuracy_drop_points"] is None else f" ({-r['accuracy_drop_points']:+.2f})"
        print(f"| `{r['format']}` | {r['bytes'] / 1e6:.2f} MB ({r['size_ratio']:.2f}×) | {r['accuracy']:.4f}{drop} | "
              f"{r['top1_agreement']:.2%} | {r['p50_ms_b1'] * 1e3:.1f} µs ({r['ratio_b1']:.2f}×) | "
              f"{r['p50_ms_b1024']:.2f} ms ({r['ratio_b1024']:.2f}×) |")


if __name__ == "__main__":
    main()
