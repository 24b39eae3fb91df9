"""The backend registry: the single source for the CLI's choices, verify, bench and the test matrix.

Each entry names its implementation lazily ("module:Class") so that reading the registry imports
neither torch nor onnxruntime. A new runtime is one new file plus one entry here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import check_against_manifest, check_model, detect_kind
from ..formats import DEVICES, KINDS  # noqa: F401  (DEVICES: the registry's device names)
from ..formats.spec import resolve
from ..errors import BackendUnavailableError, InvalidInputError, MissingDependencyError


@dataclass(frozen=True)
class BackendSpec:
    name: str
    target: str  # "module:Class", imported on first use
    opens: tuple[str, ...]  # artifact kinds (artifacts.KINDS)
    devices: tuple[str, ...]
    requires: tuple[str, ...]  # importable packages it needs
    description: str
    extra: str = "torch"  # the pip extra that installs `requires` (mnistkit[extra])
    slow: bool = False  # verify runs slow backends on a subset (see verify.SLOW_BACKEND_LIMIT)
    # Capabilities, as data: verify and bench read these flags and never test a backend's name.
    reference: bool = False  # the backend other results are compared with (it runs the Source itself)
    independent: bool = False  # an independent implementation: bench's parity gate when no reference is known
    bare_baseline: str | None = None  # "module:Class" timing the bare runtime on the same file (overhead ratio)
    cuda_graphs: bool = False  # bench can time its forward pass as a CUDA-graph replay
    pool_threads: bool = False  # its thread pool is process-wide and fixed: bench plans one thread setting
    spinning_threads: bool = False  # its worker threads spin between calls: bench times it before the
    # others (torch's OpenMP workers linger after torch cases and would share the cores with them)
    options: dict = field(default_factory=dict)  # the runtime options a deploy.json may set: name -> allowed values


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("pytorch", "mnistkit.backends.pytorch:PyTorchBackend", ("checkpoint",), ("cpu", "cuda"),
                    ("torch",), "PyTorch eager on a mnistkit checkpoint (the reference)", reference=True,
                    cuda_graphs=True),
        BackendSpec("torchscript", "mnistkit.backends.torchscript:TorchScriptBackend", ("torchscript",),
                    ("cpu", "cuda"), ("torch",), "TorchScript (.ts), deprecated upstream in favour of torch.export",
                    cuda_graphs=True),
        BackendSpec("exported-program", "mnistkit.backends.exported_program:ExportedProgramBackend",
                    ("exported-program",), ("cpu", "cuda"), ("torch",), "torch.export ExportedProgram (.pt2)"),
        BackendSpec("onnxruntime", "mnistkit.backends.onnxrt:OnnxRuntimeBackend", ("onnx",), ("cpu", "cuda"),
                    ("onnxruntime",), "ONNX Runtime, CPU or CUDA execution provider (never a silent fallback)",
                    extra="all",
                    bare_baseline="mnistkit.backends.onnxrt:BareSession", spinning_threads=True,
                    options={"spinning": (True, False), "graph_level": ("basic", "extended", "all")}),
        BackendSpec("openvino", "mnistkit.backends.openvino:OpenVinoBackend", ("openvino-ir", "onnx"), ("cpu",),
                    ("openvino", "onnx"), "OpenVINO, CPU plugin, fp32 precision pinned (IR, and the ONNX files directly)",
                    extra="openvino",
                    bare_baseline="mnistkit.backends.openvino:BareOpenVino",
                    options={"hint": ("LATENCY", "THROUGHPUT")}),
        BackendSpec("executorch", "mnistkit.backends.executorch:ExecuTorchBackend", ("executorch",), ("cpu",),
                    ("executorch", "torch"), "ExecuTorch runtime, XNNPACK delegate (.pte)", extra="edge",
                    bare_baseline="mnistkit.backends.executorch:BareExecuTorch", pool_threads=True),
        BackendSpec("litert", "mnistkit.backends.litert:LiteRTBackend", ("litert",), ("cpu",), ("ai_edge_litert",),
                    "LiteRT (ex-TensorFlow Lite) Interpreter, XNNPACK delegate (.tflite); no torch", extra="litert",
                    bare_baseline="mnistkit.backends.litert:BareLiteRT", options={"xnnpack": (True, False)}),
        BackendSpec("onnx-reference", "mnistkit.backends.onnxref:OnnxReferenceBackend", ("onnx",), ("cpu",),
                    ("onnx",), "onnx.reference: slow, independent implementation for cross-checks", slow=True,
                    independent=True),
    )
}

REFERENCE = next(name for name, spec in BACKENDS.items() if spec.reference)
# The machine's attainable fp32 rate for the MLP, timed beside each row of a runtime with a bare baseline.
ROOFLINE_PROBE = "mnistkit.backends.onnxrt:MatMulProbe"


def backend_spec(name: str) -> BackendSpec:
    try:
        return BACKENDS[name]
    except KeyError:
        raise InvalidInputError(f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)}") from None


def backend_class(name: str):
    spec = backend_spec(name)
    for package in spec.requires:
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(
                f"backend {name!r} needs {package}, which is not installed; pip install 'mnistkit[{spec.extra}]'")
    return resolve(spec.target)


def backends_for(kind: str) -> list[str]:
    return [name for name, spec in BACKENDS.items() if kind in spec.opens]


def create_backend(path, backend: str | None = None, device: str = "cpu", kind: str | None = None, **options):
    """A backend for the model file at `path` (not yet loaded). Picks the default for its kind.

    A file listed in a manifest.json beside it is checked against its recorded sha256 first, then the loading
    gate runs (mnistkit.gate: operators, memory, no code), before the runtime is even imported.
    """
    path = Path(path)
    kind = kind or detect_kind(path)
    check_against_manifest(path)
    check_model(path, kind)
    name = backend or KINDS[kind].default_backend
    spec = backend_spec(name)
    if kind not in spec.opens:
        raise InvalidInputError(
            f"backend {name!r} cannot open {path} (kind: {kind}); backends for it: {', '.join(backends_for(kind))}")
    if device not in spec.devices:
        raise BackendUnavailableError(
            f"backend {name!r} runs on {', '.join(spec.devices)}, not {device!r}")
    return backend_class(name)(path, device=device, **options)


def reference_backend(source, device: str = "cpu", threads: int | None = None):
    """The reference backend running a source.Source (a checkpoint, a user's class + weights, or a live
    nn.Module) directly: reference logits are computed one way everywhere."""
    where = source.description.get("path") or source.description.get("kind") or "module"
    return backend_class(REFERENCE)(Path(where), device=device, threads=threads, source=source)


def cuda_available_for_torch() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def default_devices() -> list[str]:
    """cpu, plus cuda where torch sees a GPU."""
    return ["cpu", "cuda"] if cuda_available_for_torch() else ["cpu"]
