#!/usr/bin/env python
"""Models of other input shapes (issue 23): LeNet-5 on MNIST padded to 32x32, a CIFAR-style 3x32x32 net on an
ImageFolder of coloured digits, torchvision's resnet18 with a 1-channel stem built by a factory function.

Each user's folder is made as the test suite makes it (tests/fixtures/shapes_make.py: the script, the real MNIST
sample, the weights trained on it), then `mnistkit export WEIGHTS --model-class ... --format all --json` runs
there as a real process and is timed. Every artifact's validation row (max abs difference, top-1 agreement,
accuracy against the float model) is kept; then `mnistkit verify` checks the export folder against the user's
PyTorch model on 1,000 real test images, pair by pair. Writes benchmarks/results/shapes-<name>.json.

    python benchmarks/shapes.py [--name 2core] [--models lenet,cifar,resnet]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnistkit.environment import fingerprint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SAMPLE = ROOT / "tests" / "data" / "mnist-sample"
USERS = {  # weights, --model-class, more export arguments (as tests/conftest.py SHAPES, every format)
    "lenet": ("lenet.pth", "lenet.py:LeNet5", ()),
    "cifar": ("cifar.pth", "cifar.py:Net", ("--data-dir", "data")),
    "resnet": ("resnet.pth", "resnet.py:make_resnet", ("--model-args", '{"num_classes": 10}')),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="2core")
    ap.add_argument("--models", default=",".join(USERS))
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mnistkit-shapes-") as tmp:
        for which in args.models.split(","):
            folder = Path(tmp) / which
            subprocess.run([sys.executable, str(ROOT / "tests" / "fixtures" / "shapes_make.py"), str(folder), which,
                            str(SAMPLE)], check=True, capture_output=True)
            weights, model_class, more = USERS[which]
            start = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "mnistkit", "export", weights, "--model-class", model_class,
                                *more, "--format", "all", "--json"], cwd=folder, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if r.returncode != 0:
                sys.exit(f"{which}: export failed: {r.stderr[-2000:]}")
            result = json.loads(r.stdout)
            manifest = json.loads((folder / "models" / which / "manifest.json").read_text())
            # then `verify` on the export folder: every artifact against the user's PyTorch model, pair by pair
            start = time.perf_counter()
            v = subprocess.run([sys.executable, "-m", "mnistkit", "verify", f"models/{which}", "--limit", "1000",
                                "--json"], cwd=folder, capture_output=True, text=True)
            verify_seconds = time.perf_counter() - start
            if v.returncode not in (0, 1) or not v.stdout.strip():
                sys.exit(f"{which}: verify failed to run: {v.stderr[-2000:]}")
            report = json.loads(v.stdout)
            rows[which] = {"export_seconds": round(seconds, 1), "passed": result["passed"],
                           "input_shape": manifest["source"]["input_shape"],
                           "input_shape_origin": manifest["source"]["input_shape_origin"],
                           "validation": result["validation"],
                           "verify": {"seconds": round(verify_seconds, 1), "passed": report["passed"],
                                      "images": report["images"], "pairs": report["pairs"],
                                      "reference": report["reference"]}}
            print(f"{which}: {sum(v['passed'] for v in result['validation'])}/{len(result['validation'])} passed "
                  f"in {seconds:.0f} s; verify {'PASSED' if report['passed'] else 'FAILED'} "
                  f"({sum(p.get('passed', False) for p in report['pairs'])}/{len(report['pairs'])} pairs, "
                  f"{verify_seconds:.0f} s)", flush=True)
    out = RESULTS / f"shapes-{args.name}.json"
    out.write_text(json.dumps({"environment": fingerprint(), "results": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
