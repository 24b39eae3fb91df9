import json
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mnistkit import bench as bench_mod
from mnistkit.backends import BACKENDS, BackendSpec
from mnistkit.backends.base import Backend
from mnistkit.backends.onnxrt import OnnxRuntimeBackend
from mnistkit.bench import BenchConfig, latency_stats, run_bench, time_calls, time_interleaved
from mnistkit.report import write_outputs
from mnistkit.cli import cli


def test_percentiles_by_hand():
    s = latency_stats(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]) * 1e-3)
    # numpy linear interpolation: p50 = 5.5, p90 = 9.1, p99 = 9.91, p99.9 = 9.991 (ms)
    assert s.p50 == pytest.approx(5.5) and s.p90 == pytest.approx(9.1)
    assert s.p99 == pytest.approx(9.91) and s.p999 == pytest.approx(9.991)
    assert s.mean == pytest.approx(5.5) and s.min == pytest.approx(1.0) and s.max == pytest.approx(10.0)
    assert s.stdev == pytest.approx(np.std(np.arange(1, 11), ddof=1)) and s.reps == 10
    assert s.cv == pytest.approx(s.stdev / 5.5)
    single = latency_stats(np.array([2e-3]))
    assert single.p50 == single.p999 == 2.0 and single.stdev == 0.0


def test_time_calls_warms_up_and_meets_minimums():
    calls = []
    samples = time_calls(lambda: calls.append(1), warmup=0.0, min_time=0.01, min_reps=50, max_reps=10_000)
    assert len(samples) >= 50 and len(calls) >= len(samples) + 5  # >= 5 warm-up calls first
    capped = time_calls(lambda: time.sleep(0.001), warmup=0, min_time=10, min_reps=3, max_reps=4)
    assert len(capped) == 4


def test_interleaved_timing_alternates_blocks():
    order = []
    a, b = time_interleaved([lambda: order.append("a"), lambda: order.append("b")], 0, 0.02, 10, block=0.002,
                            settle=0.001)
    assert len(a) >= 10 and len(b) >= 10
    switches = sum(1 for x, y in zip(order, order[1:]) if x != y)
    assert switches >= 4  # several a-blocks and b-blocks, not one long run each


def test_a_block_is_never_longer_than_min_time():
    """A quick run asked for 20 ms per call: blocks of at most 20 ms each (not the 0.2 s default), so the whole
    timing of two calls ends after a round or two (a block stops at its end, whatever the machine's load)."""
    import time

    a, b = time_interleaved([lambda: time.sleep(0.001), lambda: time.sleep(0.001)], 0, 0.02, 3, settle=0.0)
    assert len(a) >= 3 and len(b) >= 3
    assert max(a.sum(), b.sum()) < 0.2  # one 0.2 s default block alone would be 0.2 s of samples for each


class NoisyBackend(OnnxRuntimeBackend):
    """ONNX Runtime with a deliberately erratic delay: ~0.1 ms usually, 3 ms on 30 % of calls."""

    name = "noisy"
    _rng = np.random.default_rng(0)

    def _fast_run(self):
        return Backend.run.__get__(self)  # every call goes through _infer below

    def _infer(self, x):
        time.sleep(0.003 if self._rng.random() < 0.3 else 0.0001)
        return super()._infer(x)


def test_high_variance_is_flagged(tiny_export, tiny_ckpt, monkeypatch):
    spec = BackendSpec("noisy", "test_bench:NoisyBackend", ("onnx",), ("cpu",), ("onnxruntime",), "erratic fake")
    monkeypatch.setitem(BACKENDS, "noisy", spec)
    report = run_bench([tiny_ckpt, tiny_export / "model.onnx"], BenchConfig(batch_sizes=(1,), backends=("noisy",),
                       min_time=0.1, warmup=0.01, baselines=False))
    (row,) = report.results
    assert row["status"] == "ok" and row["backend"] == "noisy"
    assert row["cv"] > bench_mod.CV_WARN and "high variance" in row["warnings"][0]


def test_every_cpu_backend_at_two_batch_sizes(tiny_ckpt, tiny_export, tiny_data, tmp_path):
    cfg = BenchConfig(batch_sizes=(1, 8), threads=(1,), min_time=0.02, warmup=0.005, min_reps=3)
    report = run_bench([tiny_export], cfg, data_dir=tiny_data)
    rows = report.results
    ok = {(r["backend"], r["format"]) for r in rows if r["status"] == "ok"}
    cpu_backends = {b for b, s in BACKENDS.items() if "cpu" in s.devices}
    assert {b for b, _ in ok} >= cpu_backends  # the checkpoint from the manifest brings pytorch in
    with_bare = [b for b, s in BACKENDS.items() if s.bare_baseline]
    assert with_bare and all(f"{b}-bare" in {b for b, _ in ok} for b in with_bare)  # each runtime's own bare call
    pooled = {b for b, s in BACKENDS.items() if s.pool_threads} | {f"{b}-bare" for b, s in BACKENDS.items() if s.pool_threads}
    for r in rows:
        if r["status"] == "unavailable":  # onnx.reference cannot run QDQ int8 at opset 18
            assert r["backend"] == "onnx-reference" and "int8" in r["file"], r
            continue
        assert r["status"] == "ok" and r["batch_size"] in (1, 8)
        assert r["threads"] == 1 or r["backend"] in pooled  # a process-wide pool runs at its own size
        assert r["p50_ms"] > 0 and r["throughput_per_s"] > 0 and r["reps"] >= 3
        assert set(r) >= {"artifact", "backend", "device", "provider", "batch_size", "threads", "p50_ms", "p90_ms",
                          "p99_ms", "throughput_per_s"}
    timed_beside = [r for r in rows if r["backend"] in with_bare and r["status"] == "ok"]
    assert timed_beside and all(r["overhead_p50"] > 0 and r["overhead_p99"] > 0 for r in timed_beside)
    # the unchecked call (backend.unchecked()) is timed in the same blocks: the checks' share of the overhead
    assert all(r["unchecked_overhead_p50"] > 0 and r["unchecked_p50_ms"] > 0 for r in timed_beside)
    assert report.baselines["matmul"][1]["gflops"] > 0
    assert report.baselines["flop_per_image"] == bench_mod.MLP_FLOP_PER_IMAGE
    assert all(0 < r["roofline_fraction"] for r in rows if r["status"] == "ok")
    assert all(r["bytes"] > 0 for r in rows if r["status"] == "ok")
    env = report.environment
    assert env["cpu"] and env["cores"] >= 1 and "onnxruntime" in env["versions"] and env["date"]
    # outputs: JSON, CSV, Markdown and valid PNGs
    files = write_outputs(report.to_json(), tmp_path)
    assert json.loads(files["json"].read_text())["results"]
    assert files["csv"].read_text().startswith("artifact,format,bytes,accuracy,backend")
    md = files["markdown"].read_text()
    assert "## Summary" in md and "MatMul" in md and "bare runtime call (e.g. `InferenceSession.run`)" in md
    assert "## Formats side by side" in md and "model-int8.onnx | onnxruntime/cpu | 0." in md
    for name in ("latency", "throughput", "cdf"):
        png = files[name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as im:
            assert im.size[0] > 400


def test_parity_failure_is_a_row_not_a_number(tiny_ckpt, tiny_export, monkeypatch):
    from mnistkit.compare import Tolerance

    monkeypatch.setattr(bench_mod, "tolerance_for", lambda fmt, device: Tolerance(-1.0))
    report = run_bench([tiny_ckpt, tiny_export / "model.onnx"], BenchConfig(batch_sizes=(1, 2), min_time=0.01,
                                                                           backends=("onnxruntime",)))
    assert [r["status"] for r in report.results] == ["parity-failed", "parity-failed"]
    assert "parity failed" in report.results[0]["reason"] and "p50_ms" not in report.results[0]


def test_unavailable_device_is_a_row(tiny_ckpt, tiny_export):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    report = run_bench([tiny_export / "model.onnx"], BenchConfig(batch_sizes=(1,), devices=("cuda",),
                                                                 backends=("onnxruntime",), min_time=0.01))
    (row,) = report.results
    assert row["status"] == "unavailable" and "CUDA was requested" in row["reason"]


def test_bench_cli_json_and_report_merges_two_machines(tiny_ckpt, tiny_export, tiny_data, tmp_path):
    args = ["bench", str(tiny_export / "model.onnx"), str(tiny_ckpt), "--batch-sizes", "1,4", "--min-time", "0.02",
            "--warmup", "0.01", "--min-reps", "3", "--data-dir", str(tiny_data), "--json"]
    r1 = CliRunner().invoke(cli, args + ["--out-dir", str(tmp_path / "a")], catch_exceptions=False)
    assert r1.exit_code == 0, r1.output
    obj = json.loads(r1.stdout)
    assert set(obj) >= {"environment", "results", "baselines", "files"}
    # a second "machine": same results with another fingerprint
    other = json.loads((tmp_path / "a" / "results.json").read_text())
    other["environment"]["cpu"] = "NVIDIA box CPU"
    other["environment"]["gpu"] = "NVIDIA H100 80GB HBM3, 580.00"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(json.dumps(other))
    r2 = CliRunner().invoke(cli, ["report", str(tmp_path / "a" / "results.json"), str(tmp_path / "b"),
                                  "--out-dir", str(tmp_path / "merged"), "--json"], catch_exceptions=False)
    assert r2.exit_code == 0, r2.output
    summary = json.loads(r2.stdout)
    assert summary["machines"] == 2 and summary["rows"] == 2 * len(obj["results"])
    md = (tmp_path / "merged" / "report.md").read_text()
    assert "NVIDIA H100" in md and "NVIDIA box CPU" in md
    assert (tmp_path / "merged" / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_report_bad_inputs(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "x.json"), "--out-dir", str(tmp_path)])
    assert r.exit_code == 1 and "not a mnistkit bench result" in r.output
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "absent.json"), "--out-dir", str(tmp_path)])
    assert r.exit_code == 1 and "no such file" in r.output


def test_bench_usage_errors(tiny_export):
    for bad in (["--batch-sizes", "0"], ["--batch-sizes", "a,b"], ["--threads", "0"], ["--modes", "gpu"],
                ["--min-time", "0"]):
        r = CliRunner().invoke(cli, ["bench", str(tiny_export), *bad])
        assert r.exit_code == 2, (bad, r.output)
