"""`mnistkit bench --devices node,browser`: the ONNX files on onnxruntime-node and on onnxruntime-web in headless
Chromium, gated by the same parity rule and reported with the same row keys as Python's runtimes; `report`
puts the devices side by side. The real runs need Node.js, the examples' npm packages and Chromium (the README's
test command installs them): they skip locally where those are absent and fail in CI."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mnistkit import devices
from mnistkit.bench import BenchConfig, check_complete, run_bench
from mnistkit.cli import cli
from mnistkit.errors import BenchError
from mnistkit.report import device_table, markdown_report

PYTHON_ONLY = {"load_ms", "first_ms", "overhead_p50", "overhead_p99", "unchecked_overhead_p50", "unchecked_p50_ms",
               "roofline_fraction", "matmul_gflops", "split"}


def _config(devs, **kw):
    return BenchConfig(batch_sizes=(1, 64), devices=tuple(devs), backends=("onnxruntime",), warmup=0.02,
                       min_time=0.05, min_reps=5, **kw)


@pytest.fixture(scope="module")
def cross(fashion_devices):
    """cpu, node and browser rows for the Fashion-MNIST MLP's ONNX files (real test images as parity data), from
    conftest's fashion_devices (`mnistkit bench --devices cpu,node,browser --json`, made beside the tests)."""
    assert fashion_devices.returncode == 0, fashion_devices.stderr[-3000:]
    return SimpleNamespace(**json.loads(fashion_devices.stdout))


def test_node_and_browser_rows_pass_parity_and_have_pythons_keys(cross):
    rows = [r for r in cross.results if not r.get("baseline")]
    assert all(r["status"] == "ok" for r in rows), [r.get("reason") for r in rows if r["status"] != "ok"]
    for device, backend in (("node", "onnxruntime-node"), ("browser", "onnxruntime-web")):
        mine = [r for r in rows if r["device"] == device]
        got = {(r["file"], r["threads"], r["batch_size"]) for r in mine}
        assert got == {(f, t, b) for f in ("model.onnx", "model-app.onnx", "model-int8.onnx") for t in (1, 2)
                       for b in (1, 64)}
        for r in mine:
            assert r["backend"] == backend and r["mode"] == "host" and r["p50_ms"] > 0 and r["reps"] >= 5
            assert r["parity"]["top1"] >= (0.98 if "int8" in r["file"] else 1.0)
            if "int8" not in r["file"]:
                assert r["parity"]["max_abs"] <= 1e-4  # fp32: the same tolerance as every CPU runtime
        python = next(r for r in rows if r["device"] == "cpu" and r["file"] == "model.onnx")
        assert set(python) - PYTHON_ONLY == set(mine[0]) - {"samples_ms"} | ({"samples_ms"} & set(python)) - PYTHON_ONLY
    env = cross.environment["devices"]
    assert env["node"]["name"] == "onnxruntime-node" and env["browser"]["name"] == "onnxruntime-web"
    assert env["browser"]["cross_origin_isolated"] is True and env["browser"]["threads_run"] == [1, 2]
    table = "\n".join(device_table([{**r, "machine": "m"} for r in cross.results]))
    for runtime in ("onnxruntime/cpu", "onnxruntime-node/node", "onnxruntime-web/browser"):
        assert runtime in table


def _fake_harness(reference_logits, ms):
    def run_external(device, models, images, mean, std, batch_sizes, threads, *rest):
        cases = [{"model": str(p.resolve()), "threads": t, "parity_logits": reference_logits(p).tolist(),
                  "timings": {str(b): ms for b in batch_sizes}, "error": None} for p, _ in models for t in threads]
        return {"runtime": {"name": "fake", "version": "0"}, "cases": cases}
    return run_external


def test_rows_come_from_the_harness_samples_and_wrong_answers_fail_parity(tiny_export, tiny_ckpt, monkeypatch):
    from mnistkit.backends import create_backend

    def logits_of(path):
        with create_backend(path) as b:
            return b.run(_images(tiny_export))

    cache = {}

    def good(path):
        return cache.setdefault(path.name, logits_of(path))

    monkeypatch.setattr(devices, "unavailable", lambda device: None)
    monkeypatch.setattr(devices, "run_external", _fake_harness(good, [0.010, 0.020, 0.030, 0.040, 0.500]))
    report = run_bench([tiny_export / "model.onnx", tiny_ckpt], _config(("node",), threads=(1,), baselines=False))
    rows = [r for r in report.results if r["device"] == "node"]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert rows[0]["p50_ms"] == pytest.approx(0.030) and rows[0]["p99_ms"] == pytest.approx(0.4816)
    assert rows[0]["throughput_per_s"] == pytest.approx(1 / (0.12 / 1e3))
    assert rows[0]["warnings"]  # CV 1.6: flagged, as Python's rows are

    monkeypatch.setattr(devices, "run_external", _fake_harness(lambda p: good(p) + 0.5, [0.01] * 5))
    report = run_bench([tiny_export / "model.onnx", tiny_ckpt], _config(("node",), threads=(1,), baselines=False))
    rows = [r for r in report.results if r["device"] == "node"]
    assert {r["status"] for r in rows} == {"parity-failed"} and "max_abs" in rows[0]["reason"]
    with pytest.raises(BenchError, match="parity"):
        check_complete(report.results, allow_missing=True)


def _images(folder):
    from mnistkit.bench import PARITY_IMAGES
    from mnistkit.imagesets import validation_images
    from mnistkit.source import reference_for

    src, _, _ = reference_for(folder)
    return validation_images(src.meta.get("dataset"), src.data_dir, PARITY_IMAGES, None)[0]


def test_a_missing_device_gives_rows_that_say_so(tiny_export, tiny_ckpt, monkeypatch):
    monkeypatch.setattr(devices, "unavailable", lambda device: f"{device}: not here (test)")
    report = run_bench([tiny_export / "model.onnx", tiny_ckpt], _config(("cpu", "browser"), threads=(1,),
                                                                         baselines=False))
    rows = [r for r in report.results if r["device"] == "browser"]
    assert rows and {r["status"] for r in rows} == {"unavailable"} and rows[0]["reason"] == "browser: not here (test)"
    check_complete(report.results, allow_missing=True)
    with pytest.raises(BenchError, match="--allow-missing"):
        check_complete(report.results)


def test_a_failing_case_is_a_row_with_its_reason(tiny_export, tiny_ckpt, monkeypatch):
    def broken(device, models, *args):
        return {"runtime": {}, "cases": [{"model": str(p.resolve()), "threads": 1, "parity_logits": None,
                                          "timings": {}, "error": "Load model failed: test"} for p, _ in models]}

    monkeypatch.setattr(devices, "unavailable", lambda device: None)
    monkeypatch.setattr(devices, "run_external", broken)
    report = run_bench([tiny_export / "model.onnx", tiny_ckpt], _config(("node",), threads=(1,), baselines=False))
    rows = [r for r in report.results if r["device"] == "node"]
    assert {(r["status"], r["reason"]) for r in rows} == {("error", "Load model failed: test")}


def test_the_page_server_isolates_the_page_and_serves_only_its_folders(tmp_path):
    (tmp_path / "parity.uint8").write_bytes(b"\x01\x02")
    (tmp_path.parent / "secret.txt").write_text("no")
    server = devices._server(tmp_path)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/data/parity.uint8") as r:
            assert r.read() == b"\x01\x02"
            assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        with urllib.request.urlopen(f"{base}/bench-page.mjs") as r:
            assert r.headers["Content-Type"].startswith("text/javascript")
        for path in ("/data/../secret.txt", "/data/%2e%2e/secret.txt"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(base + path)
    finally:
        server.shutdown()
        server.server_close()


def test_devices_are_choices_of_bench_and_unknown_ones_are_usage_errors():
    r = CliRunner().invoke(cli, ["bench", "x.onnx", "--devices", "phone"])
    assert r.exit_code == 2 and "phone" in r.output
    r = CliRunner().invoke(cli, ["bench", "--help"])
    assert "node" in r.output and "browser" in r.output


def test_report_shows_devices_side_by_side_only_with_more_than_one():
    def row(device, backend, p50, b=1):
        return {"status": "ok", "format": "onnx", "file": "model.onnx", "artifact": "model.onnx", "backend": backend,
                "device": device, "threads": 1, "batch_size": b, "p50_ms": p50, "mode": "host", "machine": "m",
                **{k: p50 for k in ("p90_ms", "p99_ms", "p999_ms", "mean_ms")}, "cv": 0.1,
                "throughput_per_s": b / p50 * 1e3, "bytes": 1000, "accuracy": 0.9}
    rows = [row("cpu", "onnxruntime", 0.02), row("browser", "onnxruntime-web", 0.06)]
    table = device_table(rows)
    assert table[2] == "| model.onnx | onnxruntime/cpu | 1 | 20.0 |" and "onnxruntime-web/browser | 1 | 60.0" in table[3]
    assert device_table(rows[:1]) == []
    rows = [{k: v for k, v in r.items() if k != "machine"} for r in rows]
    md = markdown_report([{"environment": {"cpu": "X"}, "config": {}, "baselines": {}, "results": rows}])
    assert "## Across devices" in md and "onnxruntime-web/browser" in md
    md = markdown_report([{"environment": {"cpu": "X"}, "config": {}, "baselines": {}, "results": rows[:1]}])
    assert "## Across devices" not in md
