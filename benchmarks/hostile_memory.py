"""Peak memory and time of the commands that refuse hostile inputs (the README's reliability numbers).

Each command runs in its own process under a small launcher that reports getrusage(RUSAGE_CHILDREN)
for the command alone (a child forked from a large process would inherit its peak RSS). The files
are built here with tests/hostile.py's builders; nothing hostile is committed.

    .venv/bin/python benchmarks/hostile_memory.py      # writes benchmarks/results/hostile-memory.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hostile  # noqa: E402
from conftest import write_tiny_dataset  # noqa: E402

from mnistkit.environment import fingerprint  # noqa: E402

LAUNCHER = """
import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc)
"""


def measure(args, cwd: Path) -> dict:
    rss = cwd / ".rss"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", LAUNCHER, str(rss), sys.executable, "-m", "mnistkit", *map(str, args)],
                       cwd=cwd, capture_output=True, text=True, env={**os.environ, "MNISTKIT_DATA": str(cwd / ".none")})
    seconds = time.perf_counter() - t0
    return {"command": "mnistkit " + " ".join(Path(a).name if isinstance(a, Path) else str(a) for a in args),
            "exit_code": p.returncode, "stderr": p.stderr.strip().splitlines()[-1][:200] if p.stderr.strip() else "",
            "peak_rss_mb": round(int(rss.read_text()) / 1024, 1), "seconds": round(seconds, 2)}


def plain_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    w = onnx.numpy_helper.from_array(np.zeros((784, 10), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "plain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def main() -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        model = plain_onnx(d / "model.onnx")
        digit = np.zeros((280, 280), np.uint8)
        digit[60:220, 120:160] = 255
        Image.fromarray(digit).save(d / "digit.png")
        data = write_tiny_dataset(d / "bomb-data")
        hostile.gzip_bomb(data / "train-images-idx3-ubyte.gz")  # 2 MB, inflates to 2 GiB
        cases = [
            ("baseline: predict a normal PNG", ["predict", model, d / "digit.png"]),
            ("IDX gzip bomb (2 MB -> 2 GiB), predict", ["predict", model, data / "train-images-idx3-ubyte.gz"]),
            ("IDX gzip bomb (2 MB -> 2 GiB), train", ["train", "--data-dir", data, "--out", d / "x.pt"]),
            ("PNG 30000x30000 (header only)", ["predict", model, hostile.png_bomb(d / "b30k.png", 30000, 30000, 4)]),
            ("PNG 121 megapixels in ~120 KB", ["predict", model, hostile.png_bomb(d / "b121.png", 11000, 11000)]),
        ]
        rows = []
        for what, args in cases:
            row = {"case": what, **measure(args, d)}
            rows.append(row)
            print(f"{what:45s} exit {row['exit_code']}  peak {row['peak_rss_mb']:7.1f} MB  {row['seconds']:.2f} s")
    out = ROOT / "benchmarks" / "results" / "hostile-memory.json"
    out.write_text(json.dumps({"environment": fingerprint(), "results": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
