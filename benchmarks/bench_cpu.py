#!/usr/bin/env python
"""Reproduce the published latency table: train the MLP on Fashion-MNIST, export every format,
benchmark every runtime at batch 1-1024 on 1 and 2 threads, write benchmarks/results/<name>/.

    python benchmarks/bench_cpu.py [--name cpu-2core] [--min-time 1.0] [--devices cpu]
    python benchmarks/bench_cpu.py --name runtimes-2core --backends onnxruntime,openvino \
        --formats onnx,onnx-int8,onnx-int8-dynamic --batch-sizes 1,64,1024
    python benchmarks/bench_cpu.py --name edge-cnn-2core --model cnn --backends ... --formats ...

On a GPU machine: python benchmarks/bench_cpu.py --name h100 --devices cpu,cuda --modes host,device
then `mnistkit report benchmarks/results/*/results.json` shows the machines side by side.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from mnistkit.bench import BenchConfig, run_bench
from mnistkit.report import write_outputs
from mnistkit.exporter import export_model
from mnistkit.formats import FORMATS, parse_formats
from mnistkit.train import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="cpu-2core")
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--devices", default="cpu")
    ap.add_argument("--modes", default="host")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch-sizes", default="1,4,16,64,256,1024")
    ap.add_argument("--backends", default="pytorch,torchscript,exported-program,onnxruntime")
    ap.add_argument("--formats", default="all", help="formats to time (the checkpoint is the parity reference)")
    ap.add_argument("--model", default="mlp", choices=["mlp", "cnn"], help="the architecture trained (10 epochs)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / f"{args.model}-fashion-mnist.pt"
        train(TrainConfig(dataset="fashion-mnist", model=args.model, epochs=10, seed=0, out=str(ckpt)))
        export_model(ckpt, "all", out_dir=Path(tmp) / "export")
        config = BenchConfig(
            batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
            threads=tuple(int(t) for t in args.threads.split(",")),
            backends=tuple(args.backends.split(",")),
            devices=tuple(args.devices.split(",")), modes=tuple(args.modes.split(",")),
            min_time=args.min_time)
        export = Path(tmp) / "export"
        models = [export] if args.formats == "all" else [ckpt] + [export / FORMATS[f].file for f in parse_formats(args.formats)]
        report = run_bench(models, config, log=print,
                           progress=lambda label, done, total: print(f"[{done}/{total}] {label}", flush=True))
    obj = report.to_json()
    for row in obj["results"]:  # paths of a temporary folder mean nothing later
        row["artifact"] = Path(row["artifact"]).name
    out = RESULTS / args.name
    out.mkdir(parents=True, exist_ok=True)
    files = write_outputs(obj, out, title=f"mnistkit bench: {args.model.upper()} on Fashion-MNIST ({args.name})")
    print(json.dumps({k: str(v) for k, v in files.items()}, indent=1))


if __name__ == "__main__":
    main()
