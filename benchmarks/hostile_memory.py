"""Peak memory and time of the commands that refuse hostile inputs (the README's security numbers): the bombs
of the first audit, and each file of the second trust audit (issue 20) built from a fresh export of a tiny MLP.

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


def audit_cases(d: Path, data: Path, image: Path) -> list:
    """The second audit's files (tests/hostile.py's builders) from a real export of a tiny MLP."""
    from conftest import write_tiny_dataset as tiny

    from mnistkit.exporter import export_model
    from mnistkit.train import TrainConfig, train

    clean = tiny(d / "clean-data")
    ckpt = d / "tiny.pt"
    train(TrainConfig(dataset="mnist", data_dir=str(clean), epochs=1, out=str(ckpt), threads=2))
    e = d / "export"
    export_model(ckpt, ["onnx", "torchscript", "exported-program", "executorch", "litert"], out_dir=e, data_dir=clean)
    marker, victim = d / "MARKER", d / "victim.txt"
    victim.write_text("a user's file\n")
    huge = (1 << 30) + (128 << 20)
    files = [
        ("pt2: _codecs + STACK_GLOBAL sample inputs", hostile.pt2_codecs_attack(e / "model.pt2", d / "a.pt2", marker)),
        ("pt2: pickled weight behind a decoy config", hostile.pt2_decoy_config(e / "model.pt2", d / "b.pt2", marker)),
        ("ts: torch.from_file writes a user's file", hostile.ts_from_file(d / "c.ts", victim)),
        ("pt2: aten.from_file node", hostile.pt2_target(e / "model.pt2", d / "d.pt2", "torch.ops.aten.from_file.default")),
        ("onnx: ConstantOfShape [65536, 65536]", hostile.onnx_constant_of_shape(d / "e.onnx")),
        ("onnx: endless Loop", hostile.onnx_endless_loop(d / "f.onnx")),
        ("pt2: 1.1 GiB raw record (deflated)", hostile.archive_with_huge_member(e / "model.pt2", d / "g.pt2",
                                                                                "data/weights/weight_0", huge)),
        ("checkpoint: 1.1 GiB raw record (deflated)", hostile.archive_with_huge_member(ckpt, d / "h.pt", "data/0", huge)),
        ("pt2: shape expression s77*0+2**2**34", hostile.pt2_expression(e / "model.pt2", d / "i.pt2", "s77*0+2**2**34")),
        ("pte: 4 GiB memory plan", hostile.pte_planning(e / "model.pte", d / "j.pte")),
        ("tflite: [1, 2^30] tensor", hostile.tflite_big_tensor(e / "model.tflite", d / "k.tflite")),
    ]
    cases = [(f"audit {what}, predict", ["predict", path, image]) for what, path in files]
    bomb = hostile.parquet_bomb(d / "bomb.parquet")
    cases.append(("audit Parquet: 512 MiB value in a few KB, score", ["score", e / "model.onnx", bomb, "--out", d / "o"]))
    return cases


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
        cases += audit_cases(d, data, d / "digit.png")
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
