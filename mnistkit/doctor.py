"""`mnistkit doctor`: what this machine can run, and a one-line fix for each problem.

Only blocking problems (no working onnxruntime, two onnxruntime flavours installed together, an
unsupported Python) make it exit non-zero; a CPU-only machine is not a problem.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .environment import distribution_version

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
PROBE_MODEL = Path(__file__).parent / "assets" / "probe.onnx"  # Identity, opset 13, IR 7


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def onnxruntime_distributions() -> list[str]:
    names = set()
    for dist in md.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name.startswith("onnxruntime") and "extensions" not in name and "genai" not in name:
            names.add(f"{name} {dist.version}")
    return sorted(names)


def probe_provider(provider: str) -> tuple[bool, str]:
    """Create a real session with `provider`; return (active, captured log text)."""
    import onnxruntime as ort

    from .backends.onnxrt import preload_cuda_libraries
    from .capture import captured_output

    text = preload_cuda_libraries() if provider == "CUDAExecutionProvider" else ""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    with captured_output() as cap:
        try:
            providers = list(dict.fromkeys([provider, "CPUExecutionProvider"]))
            sess = ort.InferenceSession(str(PROBE_MODEL), so, providers=providers)
            active = provider in sess.get_providers()
        except Exception as exc:
            active = False
            print(exc)
    return active, " ".join((text + " " + cap.text).split())


def runtime_check(name: str) -> Check:
    """A runtime of the backend registry with a self-check: installed, and really running its probe model here
    (each backend file owns its probe: BackendSpec.self_check). Not installed is information, not a problem."""
    from .backends import BACKENDS
    from .formats.spec import resolve

    spec = BACKENDS[name]
    version = distribution_version(spec.distribution)
    if version is None:
        return Check(name, INFO, f"not installed (optional runtime: {spec.description})",
                     f"pip install 'mnistkit[{spec.extra}]'")
    try:
        from .capture import captured_output

        with captured_output():  # runtimes' start-up chatter
            detail = resolve(spec.self_check)()
        return Check(name, OK, f"{version.split('-')[0]}: {detail}")
    except Exception as exc:  # installed but broken
        return Check(name, WARN, f"{version} installed, but its probe model does not run: {str(exc)[:200]}",
                     f"pip install --force-reinstall {spec.distribution}")


def runtime_checks() -> list[Check]:
    from .backends import BACKENDS

    return [runtime_check(name) for name, spec in BACKENDS.items() if spec.self_check]


def run_checks() -> list[Check]:
    checks: list[Check] = []
    py = sys.version_info
    checks.append(Check("python", OK if py >= (3, 11) else FAIL, platform.python_version(),
                        "" if py >= (3, 11) else "use Python 3.11 or newer"))
    from ._version import __version__

    checks.append(Check("mnistkit", OK, __version__))
    for dist in ("numpy", "pillow", "click", "rich"):
        v = distribution_version(dist)
        checks.append(Check(dist, OK if v else FAIL, v or "not installed", "" if v else f"pip install {dist}"))

    # ONNX Runtime: flavours, providers listed, providers that really load
    flavours = onnxruntime_distributions()
    if len(flavours) > 1:
        checks.append(Check("onnxruntime packages", FAIL, ", ".join(flavours),
                            "installed together they break each other's providers: pip uninstall -y "
                            "onnxruntime onnxruntime-gpu, then install one (onnxruntime-gpu on Linux/Windows x86-64)"))
    try:
        import onnxruntime as ort
    except Exception as exc:  # missing or broken
        checks.append(Check("onnxruntime", FAIL, f"cannot import ({exc})", "pip install onnxruntime-gpu (or onnxruntime)"))
        ort = None
    if ort is not None:
        checks.append(Check("onnxruntime", OK, f"{ort.__version__} ({', '.join(flavours) or 'unknown package'})"))
        listed = ort.get_available_providers()
        checks.append(Check("ort providers listed", INFO, ", ".join(listed)))
        ok_cpu, log_cpu = probe_provider("CPUExecutionProvider")
        checks.append(Check("ort CPU provider", OK if ok_cpu else FAIL, "loads" if ok_cpu else log_cpu[:200],
                            "" if ok_cpu else "reinstall onnxruntime"))
        if "CUDAExecutionProvider" in listed:
            ok_cuda, log_cuda = probe_provider("CUDAExecutionProvider")
            from .backends.onnxrt import gpu_present

            if ok_cuda:
                checks.append(Check("ort CUDA provider", OK, "loads and is active"))
            elif not gpu_present():
                checks.append(Check("ort CUDA provider", INFO, "listed by the build, not usable: no NVIDIA GPU here "
                                    "(mnistkit refuses --device cuda instead of silently running on CPU)"))
            else:
                checks.append(Check("ort CUDA provider", WARN, f"listed but does not load: {log_cuda[:240]}",
                                    "install CUDA and cuDNN libraries matching the onnxruntime-gpu build "
                                    "(e.g. pip install 'torch' with the same CUDA major, then preload_dlls)"))
        try:
            from onnxruntime.capi import build_and_package_info as bpi

            cuda_v = getattr(bpi, "cuda_version", None)
            cudnn_v = getattr(bpi, "cudnn_version", None)
            if cuda_v:
                checks.append(Check("ort built for", INFO, f"CUDA {cuda_v}" + (f", cuDNN {cudnn_v}" if cudnn_v else "")))
        except ImportError:
            cuda_v = None
    else:
        cuda_v = None

    checks.extend(runtime_checks())

    # PyTorch side
    try:
        import torch
    except ImportError:
        torch = None
        checks.append(Check("torch", WARN, "not installed: train, export and verify need it",
                            "pip install 'mnistkit[torch]'"))
    if torch is not None:
        checks.append(Check("torch", OK, f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})"))
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            checks.append(Check("torch CUDA", OK, f"{name}, cuDNN {torch.backends.cudnn.version()}"))
            tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            checks.append(Check("TF32", INFO, f"matmul {tf32[0]}, cudnn {tf32[1]} (mnistkit's backends pin it off "
                                "for parity; bench records it)"))
        else:
            checks.append(Check("torch CUDA", INFO, "no usable GPU: CPU only"))
        if cuda_v and torch.version.cuda and cuda_v.split(".")[0] != torch.version.cuda.split(".")[0]:
            checks.append(Check("CUDA majors", WARN, f"onnxruntime built for CUDA {cuda_v}, torch for {torch.version.cuda}",
                                "ORT's preload_dlls() finds CUDA libraries through torch's wheels only when the "
                                "majors match: install matching versions"))
        for dist in ("torchvision", "onnx", "onnxscript"):
            v = distribution_version(dist)
            checks.append(Check(dist, OK if v else WARN, v or "not installed", "" if v else "pip install 'mnistkit[torch]'"))

    from .environment import gpu_description

    gpu = gpu_description()
    checks.append(Check("GPU", INFO, gpu or "none found (nvidia-smi absent or silent)"))

    from .data import find_dataset

    fashion = find_dataset("fashion-mnist")
    checks.append(Check("Fashion-MNIST", OK if fashion else INFO, str(fashion) if fashion else "not found",
                        "" if fashion else "apt-get install dataset-fashion-mnist (Debian) or pass --data-dir"))
    mnist = find_dataset("mnist")
    checks.append(Check("MNIST", OK if mnist else INFO, str(mnist) if mnist else "not cached (downloads on first use)"))
    return checks


def doctor() -> dict:
    checks = run_checks()
    return {"ok": not any(c.status == FAIL for c in checks), "checks": [asdict(c) for c in checks]}
