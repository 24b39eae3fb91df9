#!/usr/bin/env python
"""Training speed: the PyTorch tutorial pipeline vs mnistkit's trainer, in one process.

Same data (Fashion-MNIST), same threads, same hyperparameters (MLP, Adam 1e-3, batch 64, CE), for each
seed: the tutorial pipeline for N epochs, then mnistkit's trainer for N epochs. Reports training-only
seconds per epoch (no evaluation, no start-up), their ratio and test accuracy after N epochs, mean over
the seeds; optionally the CNN's accuracy. Writes benchmarks/results/train_speed.json.

    python benchmarks/train_speed.py [--epochs 10] [--seeds 0,1,2] [--threads 2] [--cnn]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mnistkit.data import find_dataset
from mnistkit.environment import fingerprint
from mnistkit.model import MLP
from mnistkit.train import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"


def torchvision_root(folder: Path, tmp: Path) -> Path:
    """torchvision's FashionMNIST wants ROOT/FashionMNIST/raw/<uncompressed files>."""
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in folder.iterdir():
        target = raw / f.name.removesuffix(".gz")
        if f.suffix == ".gz":
            with gzip.open(f) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copyfile(f, target)
    return tmp


def tutorial(root: Path, epochs: int, seed: int) -> tuple[list[float], float]:
    """The reference: dataset class + ToTensor, DataLoader(64, shuffle, 0 workers), MLP, Adam, CE."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    train_ds = datasets.FashionMNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    test_ds = datasets.FashionMNIST(str(root), train=False, download=False, transform=transforms.ToTensor())
    loader = DataLoader(train_ds, batch_size=64, shuffle=True, num_workers=0)
    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - t0)
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(test_ds, batch_size=1000):
            correct += int((model(x).argmax(1) == y).sum())
    return seconds, correct / len(test_ds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cnn", action="store_true", help="also train the CNN (10 epochs, one seed) for its accuracy")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = find_dataset("fashion-mnist")
    if folder is None:
        raise SystemExit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(folder, Path(tmp) / "tv")
        for seed in seeds:
            tut_s, tut_acc = tutorial(root, args.epochs, seed)
            result = train(TrainConfig(dataset="fashion-mnist", epochs=args.epochs, seed=seed, threads=args.threads,
                                       out=str(Path(tmp) / f"mlp-{seed}.pt")))
            ours = [h.seconds for h in result.history]
            row = {"seed": seed, "tutorial_s_per_epoch": statistics.mean(tut_s), "tutorial_accuracy": tut_acc,
                   "mnistkit_s_per_epoch": statistics.mean(ours), "mnistkit_accuracy": result.test_accuracy}
            row["ratio"] = row["mnistkit_s_per_epoch"] / row["tutorial_s_per_epoch"]
            rows.append(row)
            print(json.dumps(row), flush=True)
        cnn = None
        if args.cnn:
            r = train(TrainConfig(dataset="fashion-mnist", model="cnn", epochs=10, seed=0, threads=args.threads,
                                  out=str(Path(tmp) / "cnn.pt")))
            cnn = {"epochs": 10, "seed": 0, "test_accuracy": r.test_accuracy, "s_per_epoch": r.seconds_per_epoch}
            print(json.dumps({"cnn": cnn}), flush=True)

    def mean(key):
        return statistics.mean(r[key] for r in rows)

    summary = {
        "epochs": args.epochs, "seeds": seeds, "threads": args.threads, "dataset": "fashion-mnist",
        "tutorial_s_per_epoch": mean("tutorial_s_per_epoch"), "mnistkit_s_per_epoch": mean("mnistkit_s_per_epoch"),
        "ratio": mean("mnistkit_s_per_epoch") / mean("tutorial_s_per_epoch"),
        "tutorial_accuracy": mean("tutorial_accuracy"), "mnistkit_accuracy": mean("mnistkit_accuracy"),
        "accuracy_gap_points": 100 * (mean("mnistkit_accuracy") - mean("tutorial_accuracy")),
        "cnn": cnn, "runs": rows, "environment": fingerprint(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_speed.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n| pipeline | s/epoch (mean of {len(seeds)} seeds) | test accuracy after {args.epochs} epochs |")
    print("|---|---|---|")
    print(f"| tutorial (torchvision + ToTensor + DataLoader) | {summary['tutorial_s_per_epoch']:.2f} | "
          f"{summary['tutorial_accuracy']:.4f} |")
    print(f"| mnistkit train | {summary['mnistkit_s_per_epoch']:.2f} ({summary['ratio']:.2f}x) | "
          f"{summary['mnistkit_accuracy']:.4f} |")
    if cnn:
        print(f"| mnistkit train --model cnn | {cnn['s_per_epoch']:.2f} | {cnn['test_accuracy']:.4f} |")


if __name__ == "__main__":
    main()
