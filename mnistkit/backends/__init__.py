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
    core: bool = False  # the core install (`pip install mnistkit`) runs it: optimize prefers it on a tie
    slow: bool = False  # verify runs slow backends on a subset (see verify.SLOW_BACKEND_LIMIT)
    # Capabilities, as data: verify and bench read these flags and never test a backend's name.
    reference: bool = False  # the backend other results are compared with (it runs the Source itself)
    independent: bool = False  # an independent implementation: bench's parity gate when no reference is known
    bare_baseline: str | None = None  # "module:Class" timing the bare runtime on the same file (overhead ratio)
    cuda_graphs: bool = False  # bench can time its forward pass as a CUDA-graph replay
    pool_size: str | None = None  # "module:function" -> the size of its process-wide thread pool, fixed when the
    # runtime loads: bench plans one thread setting, optimize one candidate per file (pool_threads)
    spinning_threads: bool = False  # its worker threads spin between calls: bench times it before the
    # others (torch's OpenMP workers linger after torch cases and would share the cores with them)
    options: dict = field(default_factory=dict)  # the runtime options a deploy.json may set: name -> allowed values
    plan_options: str | None = None  # "module:function", (target, threads, PlanContext) -> the option sets optimize
    # times (non-default values only; what it leaves out it prunes with its reason); None: the defaults only
    not_deployed: str | None = None  # why optimize never deploys to it (said in the report); None: a candidate
    label: str = ""  # how reports name the runtime ("ONNX Runtime")
    defaults_format: str | None = None  # optimize times the runtime's own defaults on this format's file (with
    # bare_baseline(path, None, defaults=True): the call a user writes in three lines, no option set)
    defaults_precision: str | None = None  # "module:function" -> what its defaults compute in here ("fp32": None)
    distribution: str | None = None  # its pip distribution (doctor's version line)
    self_check: str | None = None  # "module:function" -> one line; runs a probe model, raises when the runtime is broken

    @property
    def pool_threads(self) -> bool:
        """Its thread pool is process-wide and fixed (pool_size)."""
        return self.pool_size is not None


_TORCH_NOT_DEPLOYED = ("PyTorch eager, TorchScript and torch.export run the reference's ATen kernels with per-operator "
                       "dispatch from Python: slower than every other runtime on CPU at every batch size in "
                       "benchmarks/README.md, and a deployment on them needs torch (2 GB) installed")


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("pytorch", "mnistkit.backends.pytorch:PyTorchBackend", ("checkpoint",), ("cpu", "cuda"),
                    ("torch",), "PyTorch eager on a mnistkit checkpoint (the reference)", reference=True,
                    cuda_graphs=True, not_deployed=_TORCH_NOT_DEPLOYED),
        BackendSpec("torchscript", "mnistkit.backends.torchscript:TorchScriptBackend", ("torchscript",),
                    ("cpu", "cuda"), ("torch",), "TorchScript (.ts), deprecated upstream in favour of torch.export",
                    cuda_graphs=True, not_deployed=_TORCH_NOT_DEPLOYED),
        BackendSpec("exported-program", "mnistkit.backends.exported_program:ExportedProgramBackend",
                    ("exported-program",), ("cpu", "cuda"), ("torch",), "torch.export ExportedProgram (.pt2)",
                    not_deployed=_TORCH_NOT_DEPLOYED),
        BackendSpec("onnxruntime", "mnistkit.backends.onnxrt:OnnxRuntimeBackend", ("onnx",), ("cpu", "cuda"),
                    ("onnxruntime",), "ONNX Runtime, CPU or CUDA execution provider (never a silent fallback)",
                    extra="all", core=True,
                    bare_baseline="mnistkit.backends.onnxrt:BareSession", spinning_threads=True,
                    label="ONNX Runtime", defaults_format="onnx",
                    options={"spinning": (True, False), "graph_level": ("basic", "extended", "all")},
                    plan_options="mnistkit.backends.onnxrt:plan_options"),
        BackendSpec("openvino", "mnistkit.backends.openvino:OpenVinoBackend", ("openvino-ir", "onnx"), ("cpu",),
                    ("openvino", "onnx"),
                    "OpenVINO, CPU plugin, fp32 precision pinned, bf16 an option (IR, and the ONNX files directly)",
                    extra="openvino",
                    bare_baseline="mnistkit.backends.openvino:BareOpenVino",
                    label="OpenVINO", defaults_format="openvino",
                    defaults_precision="mnistkit.backends.openvino:default_precision",
                    distribution="openvino", self_check="mnistkit.backends.openvino:self_check",
                    options={"hint": ("LATENCY", "THROUGHPUT"), "precision": ("f32", "bf16")},
                    plan_options="mnistkit.backends.openvino:plan_options"),
        BackendSpec("executorch", "mnistkit.backends.executorch:ExecuTorchBackend", ("executorch",), ("cpu",),
                    ("executorch", "torch"), "ExecuTorch runtime, XNNPACK delegate (.pte)", extra="edge",
                    bare_baseline="mnistkit.backends.executorch:BareExecuTorch", label="ExecuTorch",
                    pool_size="mnistkit.backends.executorch:pool_threads",
                    distribution="executorch", self_check="mnistkit.backends.executorch:self_check"),
        BackendSpec("litert", "mnistkit.backends.litert:LiteRTBackend", ("litert",), ("cpu",), ("ai_edge_litert",),
                    "LiteRT (ex-TensorFlow Lite) Interpreter, XNNPACK delegate (.tflite); no torch", extra="litert",
                    bare_baseline="mnistkit.backends.litert:BareLiteRT", options={"xnnpack": (True, False)},
                    plan_options="mnistkit.backends.litert:plan_options",
                    label="LiteRT", defaults_format="litert",
                    distribution="ai-edge-litert", self_check="mnistkit.backends.litert:self_check"),
        BackendSpec("ncnn", "mnistkit.backends.ncnn:NcnnBackend", ("ncnn",), ("cpu",), ("ncnn",),
                    "ncnn (Tencent), CPU, fp32 pinned, one image per extractor (.ncnn.param + .ncnn.bin)", extra="ncnn",
                    bare_baseline="mnistkit.backends.ncnn:BareNcnn",
                    label="ncnn", defaults_format="ncnn",
                    distribution="ncnn", self_check="mnistkit.backends.ncnn:self_check"),
        BackendSpec("mnn", "mnistkit.backends.mnn:MnnBackend", ("mnn",), ("cpu",), ("MNN",),
                    "MNN (Alibaba), CPU, precision high (fp32) (.mnn)", extra="mnn",
                    bare_baseline="mnistkit.backends.mnn:BareMnn",
                    label="MNN", defaults_format="mnn",
                    distribution="MNN", self_check="mnistkit.backends.mnn:self_check"),
        BackendSpec("onnx-reference", "mnistkit.backends.onnxref:OnnxReferenceBackend", ("onnx",), ("cpu",),
                    ("onnx",), "onnx.reference: slow, independent implementation for cross-checks", slow=True,
                    independent=True, not_deployed="a reference implementation for cross-checks (operators in Python), "
                                                   "not a runtime to deploy"),
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
