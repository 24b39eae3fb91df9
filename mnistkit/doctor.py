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
PROBE_PTE = Path(__file__).parent / "assets" / "probe.pte"  # y = 2x + 1, float32 [4], XNNPACK
PROBE_TFLITE = Path(__file__).parent / "assets" / "probe.tflite"  # y = 2x + 1, float32 [4]


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


def openvino_checks() -> list[Check]:
    """OpenVINO: installed, and its CPU plugin really compiling and running a model here."""
    try:
        from .backends.openvino import import_openvino

        ov = import_openvino()
    except ImportError:
        return [Check("openvino", INFO, "not installed (optional runtime)", "pip install 'mnistkit[openvino]'")]
    except Exception as exc:  # installed but broken
        return [Check("openvino", FAIL, f"cannot import ({str(exc)[:160]})", "pip install --force-reinstall openvino")]
    import numpy as np

    from .capture import captured_output
    from .signals import ensure_signal_stack

    try:
        with captured_output():
            core = ov.Core()
            compiled = core.compile_model(core.read_model(str(PROBE_MODEL)), "CPU")
            ensure_signal_stack()  # the CPU plugin's small signal stack (signals.py)
            inp = compiled.inputs[0]
            shape = [d.get_length() if d.is_static else 1 for d in inp.get_partial_shape()]
            compiled.create_infer_request().infer({0: np.zeros(shape, np.float32)})
        return [Check("openvino", OK, f"{ov.__version__.split('-')[0]}: CPU plugin runs a model "
                      f"(devices: {', '.join(core.available_devices)})")]
    except Exception as exc:
        return [Check("openvino", WARN, f"{ov.__version__.split('-')[0]} installed, but the CPU plugin failed: "
                      f"{str(exc)[:200]}", "pip install --force-reinstall openvino")]


def executorch_checks() -> list[Check]:
    """ExecuTorch: installed, and its runtime really running a program (assets/probe.pte, y = 2x + 1 on
    XNNPACK; scripts/make_probe_pte.py regenerates it)."""
    version = distribution_version("executorch")
    if version is None:
        return [Check("executorch", INFO, "not installed (optional runtime for .pte)", "pip install 'mnistkit[edge]'")]
    try:
        import torch

        from .backends.executorch import load_program

        method = load_program(PROBE_PTE).load_method("forward")
        out = method.execute([torch.arange(4, dtype=torch.float32)])[0]
        if out.tolist() != [1.0, 3.0, 5.0, 7.0]:
            raise RuntimeError(f"y = 2x + 1 gave {out.tolist()}")
        return [Check("executorch", OK, f"{version}: the runtime runs an XNNPACK program")]
    except Exception as exc:
        return [Check("executorch", WARN, f"{version} installed, but a program does not run: {str(exc)[:200]}",
                      "pip install --force-reinstall executorch (with the torch it was built for)")]


def litert_checks() -> list[Check]:
    """LiteRT: installed, and its Interpreter really running a model (assets/probe.tflite, y = 2x + 1;
    scripts/make_probe_tflite.py regenerates it)."""
    version = distribution_version("ai-edge-litert")
    if version is None:
        return [Check("litert", INFO, "not installed (optional runtime for .tflite)", "pip install 'mnistkit[litert]'")]
    try:
        import numpy as np

        from .backends.litert import interpreter

        interp = interpreter(PROBE_TFLITE, 1)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], np.arange(4, dtype=np.float32))
        interp.invoke()
        out = interp.get_tensor(interp.get_output_details()[0]["index"])
        if out.tolist() != [1.0, 3.0, 5.0, 7.0]:
            raise RuntimeError(f"y = 2x + 1 gave {out.tolist()}")
        return [Check("litert", OK, f"{version}: the Interpreter runs a model")]
    except Exception as exc:
        return [Check("litert", WARN, f"{version} installed, but a model does not run: {str(exc)[:200]}",
                      "pip install --force-reinstall ai-edge-litert")]


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

    checks.extend(openvino_checks())
    checks.extend(executorch_checks())
    checks.extend(litert_checks())

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
