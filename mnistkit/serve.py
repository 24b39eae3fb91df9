"""`mnistkit serve-demo`: the browser example on localhost, with a model of your choice.

Serves examples/web/ (the page, its preprocessing and the onnxruntime-web files copied into
vendor/) and maps /model/model.onnx and /model/labels.json to the chosen app-ready model. Binds
127.0.0.1 only. Torch-free.
"""

from __future__ import annotations

import http.server
import json
import threading
from functools import partial
from pathlib import Path

from .devices import WEB_DIR, WEB_MIME
from .errors import ArtifactError, InvalidInputError, UsageError

VENDOR_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")


def web_dir() -> Path:
    """The page's folder, checked for the files npm provides."""
    if not (WEB_DIR / "index.html").exists():
        raise InvalidInputError(f"{WEB_DIR}: the web example is not here (serve-demo runs from a mnistkit checkout)")
    missing = [f for f in VENDOR_FILES if not (WEB_DIR / "vendor" / f).exists()]
    if missing:
        raise InvalidInputError(f"{WEB_DIR / 'vendor'} lacks {', '.join(missing)}: run `make setup` "
                                f"(or `npm install && npm run vendor` in {WEB_DIR})")
    return WEB_DIR


def default_app_model(root: Path = Path("models")) -> Path:
    """The newest app bundle under `root` (what `serve-demo` serves without --model)."""
    found = sorted(root.glob("**/app/model.onnx"), key=lambda p: -p.stat().st_mtime)
    if not found:
        raise UsageError(f"no app-ready model under {root}/: run `mnistkit demo` (or export --format all) "
                         "or pass --model")
    return found[0].parent


def resolve_model(path) -> tuple[Path, dict]:
    """An app bundle folder, an export folder (its app/), or an app-ready .onnx -> (model, labels.json)."""
    from .backends.onnxrt import OnnxRuntimeBackend

    p = Path(path)
    if p.is_dir():
        from .formats import APP_BUNDLE_FILE

        if (p / "app" / APP_BUNDLE_FILE).exists():
            p = p / "app"
        p = p / APP_BUNDLE_FILE
    if not p.exists():
        raise InvalidInputError(f"--model {path}: no app-ready model there (expected an app/ bundle, an export "
                                f"folder from `mnistkit export --format all`, or model-app.onnx)")
    from .artifacts import check_against_manifest, check_sha256
    from .formats.spec import app_input

    check_against_manifest(p)  # model-app.onnx in an export folder
    labels_file = p.parent / "labels.json"
    contract = None
    if labels_file.exists():
        from .fileio import read_json

        _, contract = read_json(labels_file, "labels.json", "the app bundle's labels.json", ArtifactError)
        if not isinstance(contract, dict):
            raise ArtifactError(f"{labels_file}: not an app bundle's labels.json (expected a JSON object)")
        if isinstance(contract.get("sha256"), str):  # app/model.onnx: labels.json records its sha256
            check_sha256(p, contract["sha256"], labels_file)
    with OnnxRuntimeBackend(p) as b:
        info = b.info
    if info.input_form != "uint8":
        raise ArtifactError(f"--model {p}: takes {info.input_name!r} float32; the page needs the app-ready model "
                            f"(uint8 pixels in: model-app.onnx or app/model.onnx)")
    values = lambda v: [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)]  # noqa: E731
    if contract is None:  # derive the contract from the model's own metadata
        contract = {"labels": info.labels, "preprocess": info.recipe, "dataset": info.metadata.get("dataset"),
                    "normalization": {"mean": values(info.mean), "std": values(info.std)}}
    # the page sizes its input by these: the model's own, where an older labels.json does not say
    contract.setdefault("input", app_input(info.geometry))
    contract.setdefault("transforms", [[k, list(v) if isinstance(v, tuple) else v] for k, v in info.transforms] or None)
    return p, contract


class DemoHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **WEB_MIME, ".json": "application/json"}

    def __init__(self, *args, model: Path, contract: dict, quiet: bool, **kwargs):
        self.model, self.contract, self.quiet = model, contract, quiet
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._answer(head=False)

    def do_HEAD(self):  # noqa: N802
        self._answer(head=True)

    def _answer(self, head: bool):
        route = self.path.split("?", 1)[0].split("#", 1)[0]
        if not _well_formed(route):
            return self.send_error(400, "malformed path")
        if route == "/model/model.onnx":
            return self._send(self.model.read_bytes(), "application/octet-stream", head)
        if route == "/model/labels.json":
            return self._send(json.dumps(self.contract).encode(), "application/json", head)
        if not _public(route):
            return self.send_error(404, "not part of the demo page")
        return super().do_HEAD() if head else super().do_GET()

    def _send(self, body: bytes, ctype: str, head: bool = False):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, fmt, *args):
        if not self.quiet:
            super().log_message(fmt, *args)


# What the page is made of: everything else in examples/web (node_modules/, package.json, the bench harness)
# is the developer's, not the page's, and is never served; no folder is listed.
PAGE_FILES = ("index.html", "app.mjs", "preprocess.mjs", "steps.mjs", "style.css")
VENDOR_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")


def _public(route: str) -> bool:
    import urllib.parse

    name = urllib.parse.unquote(route).lstrip("/") or "index.html"
    return name in PAGE_FILES or name in {f"vendor/{f}" for f in VENDOR_FILES}


def _well_formed(route: str) -> bool:
    """A path the static handler can map to a file: absolute, valid percent-encoding, valid UTF-8 and
    no NUL or control characters (os.stat raises on a NUL, which http.server would log as a traceback)."""
    import urllib.parse

    if not route.startswith("/"):
        return False
    try:
        decoded = urllib.parse.unquote(route, errors="strict")
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 32 or ord(c) == 127 for c in decoded)


class DemoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that goes away mid-response is normal for a page server: no traceback, ever."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        sys.stderr.write(f"serve-demo: request from {client_address[0]} failed: "
                         f"{exc.__class__.__name__}: {str(exc)[:200]}\n")


def make_server(model, port: int = 8000, quiet: bool = False) -> http.server.ThreadingHTTPServer:
    """A server for the page (not started). Port 0 picks a free port."""
    root = web_dir()
    model_path, contract = resolve_model(model)
    handler = partial(DemoHandler, directory=str(root), model=model_path, contract=contract, quiet=quiet)
    try:
        return DemoServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise InvalidInputError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})") from None


def serve_in_background(model, port: int = 0) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = make_server(model, port, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def serve_until_stopped(server) -> None:
    """Serve until Ctrl-C (said in one line), then close the socket."""
    from .console import note

    try:
        server.serve_forever()
    except KeyboardInterrupt:
        note("stopped")
    finally:
        server.server_close()
