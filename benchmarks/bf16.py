#!/usr/bin/env python
"""Measure OpenVINO's bf16 precision against its f32, the numbers behind the format table's bf16 tolerance
(mnistkit/formats/__init__.py, COMPUTE_TOLERANCE) and optimize's bf16 candidates.

Trains the MLP (10 epochs) and the CNN (2 epochs) on Fashion-MNIST, exports the OpenVINO IR, and runs it with
INFERENCE_PRECISION_HINT f32 and bf16 over the full test split against the PyTorch reference (max abs difference,
top-1 agreement, accuracy), then times both interleaved at batch 1 (1 thread), 64 and 1024 (2 threads). On a CPU
without bf16 arithmetic (no AVX-512-BF16 or AMX) it says so and measures nothing: the hint would run f32.

    python benchmarks/bf16.py [--name zen4-2core]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from mnistkit.backends import create_backend, reference_backend
from mnistkit.backends.openvino import cpu_precisions
from mnistkit.bench import latency_stats, time_interleaved
from mnistkit.compare import compare
from mnistkit.data import load_split
from mnistkit.environment import fingerprint
from mnistkit.exporter import export_model
from mnistkit.formats import COMPUTE_TOLERANCE
from mnistkit.source import load_source
from mnistkit.train import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = [(1, 1), (64, 2), (1024, 2)]  # (batch, threads)


def _call(run, x):
    return lambda: run(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="2core")
    ap.add_argument("--min-time", type=float, default=1.0)
    args = ap.parse_args()
    out = {"environment": fingerprint(), "cpu_precisions": list(cpu_precisions()), "models": {}}
    if "bf16" not in cpu_precisions():
        print("this CPU has no bf16 arithmetic: nothing to measure")
    split = load_split("fashion-mnist", "test")
    tol = COMPUTE_TOLERANCE["bf16"]["cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        for arch, epochs in (("mlp", 10), ("cnn", 2)) if "bf16" in cpu_precisions() else ():
            ckpt = Path(tmp) / f"{arch}.pt"
            result = train(TrainConfig(dataset="fashion-mnist", model=arch, epochs=epochs, seed=0, out=str(ckpt)))
            export_model(ckpt, ["openvino"], out_dir=Path(tmp) / arch)
            with reference_backend(load_source(ckpt)) as ref:
                reference = ref.run_chunked(split.images)
            model = {"epochs": epochs, "test_accuracy": result.test_accuracy, "precisions": {}, "latency": []}
            for precision in ("f32", "bf16"):
                with create_backend(Path(tmp) / arch / "model.xml", "openvino", threads=2, precision=precision) as b:
                    logits = b.run_chunked(split.images)
                cmp = compare(reference, logits, tol, split.labels)
                model["precisions"][precision] = {"max_abs": cmp.max_abs, "top1_agreement": cmp.top1_agreement,
                                                  "accuracy": cmp.accuracy, "accuracy_delta": cmp.accuracy_delta,
                                                  "passes_bf16_tolerance": bool(cmp)}
                print(f"{arch} {precision}: max_abs {cmp.max_abs:.3g}, top-1 {cmp.top1_agreement:.2%}, "
                      f"accuracy {cmp.accuracy:.4f} ({cmp.accuracy_delta * 100:+.2f} points)", flush=True)
            for batch, threads in ROWS:
                x = np.ascontiguousarray(split.images[np.arange(batch) % len(split.images)])
                backends = [create_backend(Path(tmp) / arch / "model.xml", "openvino", threads=threads,
                                           precision=p).load() for p in ("f32", "bf16")]
                try:
                    calls = [_call(b.unchecked(), b.to_native(x)) for b in backends]
                    f32, bf16 = (latency_stats(s) for s in time_interleaved(calls, 0.2, args.min_time, 20))
                finally:
                    for b in backends:
                        b.close()
                row = {"batch": batch, "threads": threads, "f32_p50_ms": f32.p50, "bf16_p50_ms": bf16.p50,
                       "bf16_speedup": f32.p50 / bf16.p50}
                model["latency"].append(row)
                print(f"{arch} batch {batch} ({threads} thr): f32 {f32.p50:.4f} ms, bf16 {bf16.p50:.4f} ms "
                      f"({row['bf16_speedup']:.2f}x)", flush=True)
            out["models"][arch] = model
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"bf16-openvino-{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
