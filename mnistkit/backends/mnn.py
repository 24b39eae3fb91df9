"""MNN (Alibaba): MNN's Python module API (`MNN.nn.load_module_from_file`) running a .mnn file on the CPU.

Imports MNN and numpy: no torch, and never `MNN.tools` (its wrappers install packages and send usage logs:
formats/mnn.py). mnistkit's metadata is the model's `bizCode`, read from the flatbuffer with the gate's
bounds-checked reader before MNN opens the file.

Choices, measured (MNN 3.6.1, 2-vCPU EPYC):
- precision "high" (fp32): MNN's "normal"/"low" may compute in fp16 or bf16 where the CPU has it; the parity
  contract is fp32 (the MLP: 4.8e-7 against PyTorch).
- No Winograd convolutions (hint WINOGRAD_MEMORY_LEVEL 0): MNN picks Winograd by shape, and its transforms
  round differently at each batch size. LeNet-5's 5x5 convolutions gave logits 9.5e-5 apart between batch 1
  and batch 1000 with it (random inputs; more on real digits, failing the batch check), 3.3e-6 without, for
  ~10 % more time at batch 1.
- numThread = --threads, else every usable core, like the other runtimes.
- One module, any batch: MNN resizes the graph when the batch changes (14.6 us at batch 1, 282 us at 64 for
  the MLP on one thread). A module is not safe to share between threads: calls take a lock.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import MAX_METADATA_BYTES, ModelInfo, check_model, info_from_metadata
from ..errors import ArtifactError, first_line
from ..pixels import FLOAT_FORM
from .base import Backend

WINOGRAD_MEMORY_LEVEL = 3  # MNN's Interpreter::HintMode value; 0 turns Winograd convolutions off
BIZCODE = 0  # Net.bizCode, the converter's --bizCode (gate/mnn.py lists Net's fields)


def read_metadata(path) -> dict | None:
    """mnistkit's metadata of a .mnn file (its bizCode as JSON); None when the bizCode is not mnistkit's (MNN's
    converter writes "MNNTest" when none is given)."""
    from ..gate import mapped
    from ..gate.flatbuf import FlatbufferError, Table

    problem = None
    with mapped(path) as buf:
        try:
            code = Table.root(buf).string(BIZCODE)
        except (FlatbufferError, UnicodeDecodeError) as exc:
            code, problem = None, f"unreadable MNN bizCode ({first_line(exc, 120)})"
    if problem:
        raise ArtifactError(f"{path}: {problem}")
    if not code or not code.startswith("{"):
        return None
    if len(code) > MAX_METADATA_BYTES:
        raise ArtifactError(f"{path}: bizCode metadata over 1 MiB")
    try:
        meta = json.loads(code)
    except ValueError as exc:
        raise ArtifactError(f"{path}: malformed bizCode metadata ({first_line(exc, 120)})") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: bizCode metadata is not a JSON object")
    return meta if "mnistkit_version" in meta else None


def import_mnn():
    """MNN's runtime modules (MNN.nn, MNN.expr); its start-up line about CPU features is captured."""
    from ..capture import captured_output

    with captured_output():
        import MNN.expr as expr
        import MNN.nn as nn
    return nn, expr


def open_module(path, threads: int | None, defaults: bool = False):
    """(module, input name, output name) with mnistkit's fp32 CPU configuration, or with `defaults` MNN's own (no
    runtime manager: its precision and threads); ArtifactError when MNN cannot load it."""
    from ..capture import captured_output

    nn, _ = import_mnn()
    manager = None
    with captured_output():
        try:
            if not defaults:
                manager = nn.create_runtime_manager(({"backend": 0, "precision": "high", "numThread": int(threads)},))
                manager.set_hint(WINOGRAD_MEMORY_LEVEL, 0)  # no Winograd convolutions (the module's notes)
            module = nn.load_module_from_file(str(path), [], [], runtime_manager=manager)
            info = module.get_info()
        except Exception as exc:
            raise ArtifactError(f"{path}: MNN cannot load it: {first_line(exc, 200)}") from None
    inputs, outputs = list(info.get("inputNames") or []), list(info.get("outputNames") or [])
    if len(inputs) != 1 or not outputs:
        raise ArtifactError(f"{path}: has {len(inputs)} inputs and {len(outputs)} outputs; expected one image "
                            "input and a scores output")
    output = "logits" if "logits" in outputs else outputs[0]
    if outputs != [output]:
        module = nn.load_module_from_file(str(path), inputs, [output], runtime_manager=manager)
    return module, inputs[0], output


class MnnBackend(Backend):
    name = "mnn"
    runtime = "MNN"

    def _load(self) -> ModelInfo:
        from .onnxrt import default_threads

        check_model(self.path)
        self.threads = self.threads or default_threads()
        meta = read_metadata(self.path)
        self._module, name_in, name_out = open_module(self.path, self.threads)
        info = info_from_metadata(self.path, "mnn", meta)
        info.input_form = FLOAT_FORM  # converted from the float ONNX; MNN takes float [N,C,H,W]
        info.input_name, info.output_name = name_in, name_out
        self.info = info
        self._lock = threading.Lock()
        from ..environment import distribution_version

        self.provider = f"MNN {distribution_version('MNN') or '?'} CPU fp32 (precision high)"
        return info

    def load(self):
        super().load()
        self.run = self.fast_run(None, self.run_failed, self._call_for)  # the checks in one step (Backend.fast_run)
        return self

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """The first batch at load; once loaded every call goes through fast_run's per-shape calls."""
        return self._call_for(x)(x)

    def _call_for(self, batch: np.ndarray):
        """The call for one batch shape, found once by fast_run: the lock (acquire/release, not `with`: 0.26
        against 0.41 us right after a call, base.one_at_a_time), the batch as a constant of its known shape,
        `forward`, the scores copied out (MNN reuses its output buffer), their shape compared with the one they
        must have in one step."""
        forward, (_, expr), path = self._module.forward, import_mnn(), self.path
        const, nchw, shape, n = expr.const, expr.NCHW, list(batch.shape), len(batch)
        acquire, release = self._lock.acquire, self._lock.release
        classes, described = self.info.num_classes, self.info.described

        def infer(x: np.ndarray) -> np.ndarray:
            acquire()
            try:
                out = forward(const(x, shape, nchw)).read().copy()
            finally:
                release()
            got = out.shape
            if len(got) != 2 or got[0] != n or got[1] != classes and described:
                raise ArtifactError(f"{path}: MNN gave scores of shape {list(got)} for {n} images"
                                    + (f"; its metadata names {classes} labels" if described else ""))
            return out

        return infer

    def _close(self) -> None:
        self._module = None


class BareMnn:
    """MNN's module call as an app writes it, with mnistkit's configuration: the batch as a constant, `forward`,
    `read`, the scores copied out. What it leaves out is what the backend adds: the checks and the lock."""

    def __init__(self, path, threads: int | None, defaults: bool = False):
        from .onnxrt import default_threads

        check_model(path)
        self.threads = None if defaults else threads or default_threads()
        self.module = open_module(path, self.threads, defaults)[0]

    def call_for(self, x: np.ndarray) -> Callable:
        _, expr = import_mnn()
        forward, const, nchw, shape = self.module.forward, expr.const, expr.NCHW, list(x.shape)
        return lambda: forward(const(x, shape, nchw)).read().copy()


PROBE = Path(__file__).resolve().parent.parent / "assets" / "probe.mnn"  # y = 2x + 1, float32 [4]


def self_check() -> str:
    """doctor's line: MNN really runs a model with mnistkit's configuration (assets/probe.mnn, y = 2x + 1;
    scripts/make_probe_mnn.py)."""
    module = open_module(PROBE, 1)[0]
    _, expr = import_mnn()
    out = module.forward(expr.const(np.arange(4, dtype=np.float32), [4], expr.NCHW)).read()
    if np.asarray(out).reshape(-1).tolist() != [1.0, 3.0, 5.0, 7.0]:
        raise RuntimeError(f"y = 2x + 1 gave {np.asarray(out).tolist()}")
    return "runs a model (precision high: fp32)"
