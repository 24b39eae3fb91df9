"""The backend registry: the single source for the CLI's choices, verify, bench and the test matrix.

Each entry names its implementation lazily ("module:Class") so that reading the registry imports
neither torch nor onnxruntime. A new runtime is one new file plus one entry here.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import check_against_manifest, detect_kind
from ..errors import BackendUnavailableError, InvalidInputError, MissingDependencyError


@dataclass(frozen=True)
class BackendSpec:
    name: str
    target: str  # "module:Class", imported on first use
    opens: tuple[str, ...]  # artifact kinds (artifacts.KINDS)
    devices: tuple[str, ...]
    requires: tuple[str, ...]  # importable packages it needs
    description: str
    slow: bool = False  # verify runs slow backends on a subset (see verify.SLOW_BACKEND_LIMIT)
    reference: bool = False  # the backend other results are compared with


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("pytorch", "mnistkit.backends.pytorch:PyTorchBackend", ("checkpoint",), ("cpu", "cuda"),
                    ("torch",), "PyTorch eager on a mnistkit checkpoint (the reference)", reference=True),
        BackendSpec("torchscript", "mnistkit.backends.torchscript:TorchScriptBackend", ("torchscript",),
                    ("cpu", "cuda"), ("torch",), "TorchScript (.ts), deprecated upstream in favour of torch.export"),
        BackendSpec("exported-program", "mnistkit.backends.exported_program:ExportedProgramBackend",
                    ("exported-program",), ("cpu", "cuda"), ("torch",), "torch.export ExportedProgram (.pt2)"),
        BackendSpec("onnxruntime", "mnistkit.backends.onnxrt:OnnxRuntimeBackend", ("onnx",), ("cpu", "cuda"),
                    ("onnxruntime",), "ONNX Runtime, CPU or CUDA execution provider (never a silent fallback)"),
        BackendSpec("onnx-reference", "mnistkit.backends.onnxref:OnnxReferenceBackend", ("onnx",), ("cpu",),
                    ("onnx",), "onnx.reference: slow, independent implementation for cross-checks", slow=True),
    )
}

# The backend each artifact kind runs on when none is named.
DEFAULT_BACKEND = {"checkpoint": "pytorch", "torchscript": "torchscript",
                   "exported-program": "exported-program", "onnx": "onnxruntime"}
DEVICES = ("cpu", "cuda")


def backend_spec(name: str) -> BackendSpec:
    try:
        return BACKENDS[name]
    except KeyError:
        raise InvalidInputError(f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)}") from None


def backend_class(name: str):
    spec = backend_spec(name)
    for package in spec.requires:
        if importlib.util.find_spec(package) is None:
            extra = "torch" if package in ("torch", "onnx") else "all"
            raise MissingDependencyError(
                f"backend {name!r} needs {package}, which is not installed; pip install 'mnistkit[{extra}]'")
    module, cls = spec.target.split(":")
    return getattr(importlib.import_module(module), cls)


def backends_for(kind: str) -> list[str]:
    return [name for name, spec in BACKENDS.items() if kind in spec.opens]


def create_backend(path, backend: str | None = None, device: str = "cpu", kind: str | None = None, **options):
    """A backend for the model file at `path` (not yet loaded). Picks the default for its kind.

    A file listed in a manifest.json beside it is checked against its recorded sha256 first.
    """
    path = Path(path)
    kind = kind or detect_kind(path)
    check_against_manifest(path)
    name = backend or DEFAULT_BACKEND[kind]
    spec = backend_spec(name)
    if kind not in spec.opens:
        raise InvalidInputError(
            f"backend {name!r} cannot open {path} (kind: {kind}); backends for it: {', '.join(backends_for(kind))}")
    if device not in spec.devices:
        raise BackendUnavailableError(
            f"backend {name!r} runs on {', '.join(spec.devices)}, not {device!r}")
    return backend_class(name)(path, device=device, **options)


def cuda_available_for_torch() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
