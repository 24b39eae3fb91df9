"""Regenerate tests/data/mnist-sample: the real MNIST digits the test suite ships (286 KB), taken from the larger
sample in ../shared/mnist-sample (whose README allows a subset of at most ~300 KB under tests/data/).

    .venv/bin/python scripts/make_test_digits.py

800 training digits (the shared sample's train images 0-799, i.e. MNIST t10k 0-799) and 1,000 test digits (its
t10k images 0-999, i.e. MNIST t10k 4000-4999): 1,000 test images keep export validation's accuracy gates as
fine-grained as on the larger sample (0.3 points = 3 images), and the MLP trained on the 800 for 15 epochs reaches
0.876 (measured 2026-12-04).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnistkit.data import load_split, write_idx

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "mnist-sample"
OUT = ROOT / "tests" / "data" / "mnist-sample"
TRAIN, TEST = 800, 1000


def main() -> None:
    train = load_split("mnist", "train", SOURCE)
    test = load_split("mnist", "test", SOURCE)
    OUT.mkdir(parents=True, exist_ok=True)
    write_idx(OUT / "train-images-idx3-ubyte.gz", train.images[:TRAIN])
    write_idx(OUT / "train-labels-idx1-ubyte.gz", train.labels[:TRAIN].astype(np.uint8))
    write_idx(OUT / "t10k-images-idx3-ubyte.gz", test.images[:TEST])
    write_idx(OUT / "t10k-labels-idx1-ubyte.gz", test.labels[:TEST].astype(np.uint8))
    print(f"wrote {OUT}: {sum(f.stat().st_size for f in OUT.glob('*.gz')):,} bytes")


if __name__ == "__main__":
    main()
