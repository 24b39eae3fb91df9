"""The environment fingerprint every benchmark result carries. Torch is reported only if loaded."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_description() -> str | None:
    """`nvidia-smi`'s name and driver of each GPU, or None when it is absent or silent."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def distribution_version(dist: str) -> str | None:
    """An installed distribution's version by its pip name (onnxruntime-gpu, torch), None when absent."""
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def library_versions(names=("numpy", "onnxruntime", "torch", "onnx", "onnxscript"),
                     loaded_only: tuple[str, ...] = ()) -> dict[str, str | None]:
    """mnistkit, Python and each named library's version (None when not installed). Libraries in
    `loaded_only` are reported only when this process already imported them (torch costs ~0.9 GB)."""
    import importlib

    from ._version import __version__

    versions: dict[str, str | None] = {"mnistkit": __version__, "python": platform.python_version()}
    for name in names:
        mod = sys.modules.get(name)
        if mod is None and name in loaded_only:
            continue
        try:
            mod = mod or importlib.import_module(name)
            versions[name] = str(getattr(mod, "__version__", None))
        except ImportError:
            versions[name] = None
    return versions


def fingerprint(extra: dict | None = None) -> dict:
    """CPU model, cores, GPU and driver, library versions, date: enough to compare results across machines."""
    versions = library_versions(("numpy", "onnxruntime", "torch", "onnx"), loaded_only=("torch", "onnx"))
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": usable_cores(),
        "gpu": gpu_description(),
        "versions": versions,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["cuda"] = {"device": torch.cuda.get_device_name(0), "torch_cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version(),
                           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                           "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    if extra:
        env.update(extra)
    return env
