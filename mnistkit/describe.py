"""`mnistkit inspect`: what a file is and what it promises. Torch-free except for checkpoints.

TorchScript and .pt2 metadata are read straight from the zip archive (no torch needed); ONNX
details come from the onnx package when installed, else from an ONNX Runtime session.
"""

from __future__ import annotations

from pathlib import Path

from .artifacts import (check_against_manifest, check_model, detect_kind, from_onnx_props,
                        manifest_artifacts, onnx_signature, read_manifest)
from .backends import BACKENDS
from .errors import ArtifactError, first_line
from .fileio import sha256_file
from .formats import FORMATS, KINDS
from .formats.spec import resolve


def onnx_details(path: Path) -> dict:
    from .onnx_compat import min_onnxruntime

    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise ArtifactError(f"{path}: not a loadable ONNX file ({first_line(exc, 200)})") from None

        def tensor_info(v):
            name, dtype, dims = onnx_signature(v)  # a scikit-learn ZipMap output is a sequence of maps: no shape
            return {"name": name, "dtype": dtype, "shape": None if dims is None else [d or "?" for d in dims]}

        init = {i.name for i in model.graph.initializer}
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
        ops: dict[str, int] = {}
        for node in model.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        return {
            "opset": opset,
            "ir_version": model.ir_version,
            "min_onnxruntime": min_onnxruntime(opset or 0, model.ir_version),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "inputs": [tensor_info(i) for i in model.graph.input if i.name not in init],
            "outputs": [tensor_info(o) for o in model.graph.output],
            "operators": ops,
            "metadata": from_onnx_props({p.key: p.value for p in model.metadata_props}),
        }
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({first_line(exc, 200)})") from None
    try:  # ONNX Runtime decodes names and metadata as UTF-8 on access
        meta = sess.get_modelmeta()
        return {
            "opset": None, "ir_version": None, "min_onnxruntime": None,
            "producer": meta.producer_name,
            "inputs": [{"name": i.name, "dtype": i.type, "shape": i.shape} for i in sess.get_inputs()],
            "outputs": [{"name": o.name, "dtype": o.type, "shape": o.shape} for o in sess.get_outputs()],
            "metadata": from_onnx_props(meta.custom_metadata_map),
            "note": "install onnx (mnistkit[torch]) for opset, IR version and operators",
        }
    except (UnicodeDecodeError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: unreadable names or metadata ({first_line(exc, 120)})") from None


def describe(path) -> dict:
    """A dict describing a checkpoint, artifact, manifest or export folder."""
    path = Path(path)
    if path.is_dir() or (path.suffix == ".json" and path.exists()):
        manifest = read_manifest(path)
        manifest_artifacts(path)  # every listed file present and unchanged since export (sha256)
        return {"kind": "manifest", "path": str(path), **manifest}
    kind = detect_kind(path)
    check_against_manifest(path)
    check_model(path, kind)  # the loading gate: say so if the file would run code, loop or bomb memory
    info: dict = {"kind": kind, "path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    spec = KINDS[kind]
    if spec.details:  # a kind with more to say than its metadata (ONNX: inputs, outputs, opset, operators)
        details = resolve(spec.details)(path)
        meta = details.pop("metadata")
        info.update(details)
        info["metadata"] = meta
    elif not BACKENDS[spec.default_backend].reference:  # an artifact: its metadata reader in the format table
        from .artifacts import kind_metadata

        try:
            info["metadata"] = kind_metadata(path, kind) or {}
        except ImportError as exc:
            raise ArtifactError(f"{path}: reading a {kind} file needs {exc.name or 'its runtime'}, which is not "
                                "installed") from None
    else:  # the reference's own kind: a checkpoint
        from .errors import require

        require("torch")
        from .model import load_checkpoint

        ckpt = load_checkpoint(path)
        info["metadata"] = ckpt.meta
        info["parameters"] = int(sum(v.numel() for v in ckpt.state_dict.values()))
    notice = next((f.notice for f in FORMATS.values() if f.kind == kind and f.notice), None)
    if notice:
        info["note"] = notice
    meta = info.get("metadata") or {}
    for key in ("dataset", "labels", "normalization", "preprocess", "test_accuracy", "format", "input", "outputs"):
        if key in meta and key not in info:
            info[key] = meta[key]
    return info
