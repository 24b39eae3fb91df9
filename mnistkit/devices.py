"""The devices an embedded model runs on outside Python: `node` (onnxruntime-node, the Node example's dependency)
and `browser` (onnxruntime-web's WebAssembly backend in headless Chromium, the web example's vendored files).

`bench --devices node,browser` hands the ONNX artifacts to a JavaScript harness (examples/node/bench.mjs,
examples/web/bench-page.mjs driven by bench-driver.mjs) with the parity images in each artifact's native form;
the harness returns the logits on them and, per batch size, every call's latency in ms, timed in-process
(process.hrtime.bigint / performance.now). bench then applies the same parity rule and statistics as for
Python's runtimes and writes rows with the same keys. Torch-free; nothing here runs without Node.

Threads: Node takes 1 .. cores intra-op threads; the browser runs 1 thread, and more only when the page is
cross-origin isolated, so the page is served with COOP/COEP headers (each thread count is a fresh page load:
onnxruntime-web fixes its threads when its WebAssembly module starts). SIMD is always on: since 1.19
onnxruntime-web ships only SIMD builds (`ort-wasm-simd-threaded.wasm`).
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from .errors import first_line
from .pixels import pixels_to_float

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "examples" / "node"
WEB_DIR = ROOT / "examples" / "web"
EXTERNAL_DEVICES = ("node", "browser")
BACKEND_NAME = {"node": "onnxruntime-node", "browser": "onnxruntime-web"}
CHROMIUM = "/usr/bin/chromium"
# The types the web example's files need (Python's table lacks .mjs and .wasm on some systems); serve-demo too
WEB_MIME = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
            ".onnx": "application/octet-stream"}
TIMEOUT_S = 900  # a whole harness run; each case is bounded by min_time x batch sizes


def unavailable(device: str) -> str | None:
    """Why `device` cannot run here (one line), or None when it can."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed (Node.js 18+ runs the node and browser devices)"
    if device == "node":
        if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
            return f"{NODE_DIR} has no node_modules/onnxruntime-node (make setup)"
        return None
    if not (WEB_DIR / "node_modules" / "playwright-core").is_dir():
        return f"{WEB_DIR} has no node_modules/playwright-core (make setup)"
    if not (WEB_DIR / "vendor" / "ort-wasm-simd-threaded.wasm").is_file():
        return f"{WEB_DIR / 'vendor'} lacks onnxruntime-web's files (make setup)"
    import os

    if not Path(os.environ.get("CHROMIUM", CHROMIUM)).is_file():
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


def run_external(device: str, models: list[tuple[Path, dict]], images: np.ndarray, mean: float, std: float,
                 batch_sizes, threads, warmup: float, min_time: float, min_reps: int, max_reps: int) -> dict:
    """Run the device's harness on `models` ([(path, signature)]: the native "dtype" 'float32' | 'uint8', and
    where known the "input" and "output" names, the "dims" after the batch axis and the "fixed_batch") with
    the uint8 parity `images`; returns {"runtime": {...}, "cases": [{"model", "threads", "parity_logits",
    "timings", "error"}]} or {"error": "one line"}."""
    with tempfile.TemporaryDirectory(prefix=f"mnistkit-{device}-") as tmp:
        tmp = Path(tmp)
        parity = tmp / "parity"
        np.ascontiguousarray(images, np.uint8).tofile(f"{parity}.uint8")
        np.ascontiguousarray(pixels_to_float(images, mean, std), np.float32).tofile(f"{parity}.float32")
        config = {"threads": list(threads), "batch_sizes": list(batch_sizes), "warmup_s": warmup,
                  "min_time_s": min_time, "min_reps": min_reps, "max_reps": max_reps,
                  "parity": {"count": int(len(images))}}
        if device == "node":
            config["parity"]["path"] = str(parity)
            config["cases"] = [{"model": str(Path(p).resolve()), **sig} for p, sig in models]
            (tmp / "config.json").write_text(json.dumps(config))
            return _harness(["node", str(NODE_DIR / "bench.mjs"), str(tmp / "config.json")], NODE_DIR)
        links = tmp / "models"
        links.mkdir()
        cases = []
        for i, (p, sig) in enumerate(models):
            served = links / f"{i}-{p.name}"
            shutil.copyfile(p, served)
            cases.append({"model": str(p), "url": f"/data/models/{served.name}", **sig})
        config["parity"]["url"] = "/data/parity"
        config["cases"] = cases
        server = _server(tmp)
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/bench.html"
            spec = {"url": url, "threads": list(threads), "config": config}
            out = _harness(["node", str(WEB_DIR / "bench-driver.mjs"), json.dumps(spec)], WEB_DIR)
        finally:
            server.shutdown()
            server.server_close()
        if "runs" not in out:
            return out
        runs = out["runs"]
        merged = {"runtime": {**(runs[0]["runtime"] if runs else {}), "browser": out.get("browser"),
                              "threads_run": [r["runtime"].get("threads") for r in runs]},
                  "cases": [c for r in runs for c in r["cases"]], "console": out.get("console", [])[-5:]}
        if out.get("error"):
            merged["error"] = out["error"]
        return merged


def _harness(cmd: list[str], cwd: Path) -> dict:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"{Path(cmd[1]).name} did not finish in {TIMEOUT_S} s"}
    except OSError as exc:
        return {"error": f"cannot run {cmd[0]}: {first_line(exc)}"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{Path(cmd[1]).name} exited {done.returncode}: {said[:300]}"}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return {"error": f"{Path(cmd[1]).name} printed malformed JSON ({exc})"}


class _BenchHandler(http.server.SimpleHTTPRequestHandler):
    """The web example's files, and /data/ from the run's temporary folder, with cross-origin isolation
    headers (onnxruntime-web's threads need SharedArrayBuffer) and no request log."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **WEB_MIME}

    def __init__(self, *args, data: Path, **kwargs):
        self.data = data
        super().__init__(*args, **kwargs)

    def translate_path(self, path):
        route = path.split("?", 1)[0].split("#", 1)[0]
        if route.startswith("/data/"):
            name = route[len("/data/"):]
            candidate = (self.data / name).resolve()
            return str(candidate) if candidate.is_relative_to(self.data.resolve()) else str(self.data / "missing")
        return super().translate_path(path)

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, fmt, *args):
        pass


def _server(data: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_BenchHandler, directory=str(WEB_DIR), data=data)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
