#!/usr/bin/env python
"""Measure the parity numbers behind the tolerance table (mnistkit/compare.py).

Trains the MLP (10 epochs) and the CNN (2 epochs) on Fashion-MNIST, exports every format, and runs
`verify` over the full test split on every CPU backend (and CUDA where available). Writes
benchmarks/results/parity-<name>.json with every pair's statistics.

    python benchmarks/parity.py [--name cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from mnistkit.environment import fingerprint
from mnistkit.exporter import export_model
from mnistkit.train import TrainConfig, train
from mnistkit.backends import default_devices
from mnistkit.verify import verify

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="cpu")
    args = ap.parse_args()
    out = {"environment": None, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for arch, epochs in (("mlp", 10), ("cnn", 2)):
            ckpt = Path(tmp) / f"{arch}.pt"
            result = train(TrainConfig(dataset="fashion-mnist", model=arch, epochs=epochs, seed=0, out=str(ckpt)))
            export_model(ckpt, "all", out_dir=Path(tmp) / arch)
            report = verify(ckpt, [Path(tmp) / arch], devices=default_devices())
            pairs = [{k: v for k, v in p.to_json().items() if k != "artifact"} | {"file": Path(p.artifact).name}
                     for p in report.pairs]
            out["models"][arch] = {"epochs": epochs, "test_accuracy": result.test_accuracy, "passed": report.passed,
                                   "verdict": report.verdict(), "pairs": pairs}
            worst = max(p.comparison.max_abs for p in report.pairs if p.comparison)
            print(f"{arch}: {report.verdict()} (worst max_abs {worst:.2e})", flush=True)
    out["environment"] = fingerprint()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"parity-{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
