#!/usr/bin/env python
"""Print the edge-runtimes table (issue 13's layout) from a `mnistkit bench` results.json.

    python benchmarks/edge_table.py benchmarks/results/edge-mlp-2core/results.json
    python benchmarks/edge_table.py --overhead benchmarks/results/edge-*-2core/results.json

Rows: batch 1 on 1 thread, 64 and 1024 on 2 threads (ExecuTorch's pool is process-wide: 2 threads at every
batch). Each cell is mnistkit's backend p50 per call, then in brackets that runtime's own bare call timed
interleaved with it in the same seconds; the fastest mnistkit cell of each row is bold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [  # (title, file, backend)
    ("ONNX Runtime fp32", "model.onnx", "onnxruntime"),
    ("ONNX Runtime int8 (static QDQ)", "model-int8.onnx", "onnxruntime"),
    ("ONNX Runtime int8 (dynamic)", "model-int8-dynamic.onnx", "onnxruntime"),
    ("LiteRT fp32", "model.tflite", "litert"),
    ("LiteRT int8", "model-int8.tflite", "litert"),
    ("ExecuTorch fp32", "model.pte", "executorch"),
    ("ExecuTorch int8", "model-int8.pte", "executorch"),
    ("OpenVINO IR fp32", "model.xml", "openvino"),
    ("OpenVINO on the int8 QDQ ONNX", "model-int8.onnx", "openvino"),
    ("ncnn fp32", "model.ncnn.param", "ncnn"),
    ("MNN fp32", "model.mnn", "mnn"),
    ("MNN int8 weights", "model-int8.mnn", "mnn"),
    ("PyTorch eager", None, "pytorch"),
]
ROWS = [(1, 1), (64, 2), (1024, 2)]  # (batch, threads)


def _fmt(ms: float) -> str:
    us = ms * 1e3
    return f"{us:,.1f} µs" if us < 100 else (f"{us:,.0f} µs" if us < 1000 else f"{ms:,.2f} ms")


def table(results: dict) -> str:
    rows = [r for r in results["results"] if r.get("status") == "ok"]

    def find(file, backend, batch, threads):
        hits = [r for r in rows if r["backend"] == backend and r["batch_size"] == batch
                and (file is None or r["file"] == file)]
        exact = [r for r in hits if r["threads"] == threads]
        return (exact or hits or [None])[0]

    head = "| batch (threads) | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for batch, threads in ROWS:
        cells = [(find(f, b, batch, threads), find(f, f"{b}-bare", batch, threads)) for _, f, b in COLUMNS]
        best = min((ours["p50_ms"] for ours, _ in cells if ours), default=None)
        out = []
        for ours, bare in cells:
            if ours is None:
                out.append("—")
                continue
            text = _fmt(ours["p50_ms"])
            if ours["p50_ms"] == best:
                text = f"**{text}**"
            if bare is not None:
                text += f" [{_fmt(bare['p50_ms'])}]"
            if ours["threads"] != threads:
                text += f" ({ours['threads']} thr)"
            out.append(text)
        lines.append(f"| {batch} ({threads}) | " + " | ".join(out) + " |")
    acc = []
    for title, f, b in COLUMNS:
        r = find(f, b, 1, 1)
        if r and r.get("accuracy") is not None:
            acc.append(f"{title} {r['accuracy']:.4f}")
    lines.append("")
    lines.append("Test accuracy (full split): " + "; ".join(acc) + ".")
    return "\n".join(lines)


def overhead(named: dict[str, dict]) -> str:
    """Each backend's p50 over its bare call (`run`, then `unchecked()` where recorded), per model."""
    lines = ["| model | runtime, file | " + " | ".join(f"b={b} ({t} thr)" for b, t in ROWS) + " |",
             "|---|---|" + "---|" * len(ROWS)]
    for model, results in named.items():
        rows = [r for r in results["results"] if r.get("status") == "ok" and r.get("overhead_p50")]
        for title, f, b in COLUMNS:
            mine = [r for r in rows if r["backend"] == b and r["file"] == f]
            if not mine:
                continue
            cells = []
            for batch, threads in ROWS:
                hit = [r for r in mine if r["batch_size"] == batch and r["threads"] == threads] or \
                      [r for r in mine if r["batch_size"] == batch]
                if not hit:
                    cells.append("—")
                    continue
                r = hit[0]
                unchecked = f" / {r['unchecked_overhead_p50']:.2f}" if r.get("unchecked_overhead_p50") else ""
                cells.append(f"{r['overhead_p50']:.2f}{unchecked}")
            lines.append(f"| {model} | {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--overhead":
        print(overhead({Path(a).parent.name: json.loads(Path(a).read_text()) for a in args[1:]}))
    else:
        for arg in args:
            print(table(json.loads(Path(arg).read_text())))
