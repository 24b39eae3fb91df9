"""ONNX Runtime backend: CPU or CUDA execution provider, and never a silent fallback.

Imports onnxruntime and numpy only: with the core install (no torch), predict on an .onnx works.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

import numpy as np

from ..artifacts import ModelInfo, check_model, from_onnx_props, onnx_io_info, pick_output
from ..capture import captured_output
from ..errors import ArtifactError, BackendUnavailableError, InvalidInputError, first_line
from .base import Backend

ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}


def ort_signature(name: str, type_: str, shape) -> tuple:
    """(name, dtype, shape) of an ONNX Runtime input/output: "tensor(float)" is float32, "tensor(int64)"
    int64; a sequence or map keeps ONNX Runtime's text and has no shape."""
    if type_.startswith("tensor(") and type_.endswith(")"):
        elem = type_[7:-1]
        try:
            dtype = np.dtype({"float": "float32", "double": "float64", "float16": "float16"}.get(elem, elem)).name
        except TypeError:
            dtype = elem
        return name, dtype, list(shape)
    return name, type_, None


_BINDING_CHECKED: dict[str, bool] = {}  # onnxruntime version -> its C++ binding answers like the public run


def default_threads() -> int:
    """Intra-op threads: one per usable core (2 on the reference machine)."""
    from ..environment import usable_cores

    return max(1, usable_cores())


GRAPH_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def session_options(threads: int | None = None, spinning: bool = True, graph_level: str = "all"):
    """The session options mnistkit uses everywhere (backend and bench baseline alike); `spinning` and
    `graph_level` are the knobs `mnistkit optimize` searches (the defaults below are mnistkit's own).

    Measured on the 2-core reference machine (PERF_NOTES.md, benchmarks/README.md), batch 1:
    - intra-op threads = cores (2) with spinning on: 10.5-13.1 us, against 13.8 us on one thread;
      two threads with spinning off are the worst (20.5 us), so spinning stays on (ORT's default).
    - ORT_ENABLE_ALL fuses Gemm+Relu for the MLP; sequential execution (the graph is a chain),
      one inter-op thread.
    """
    import onnxruntime as ort

    if graph_level not in GRAPH_LEVELS:
        raise InvalidInputError(f"graph_level {graph_level!r}: expected one of {', '.join(GRAPH_LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_LEVELS[graph_level])
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3  # errors only; ORT's warnings would otherwise reach the terminal
    return so


def gpu_present() -> bool:
    """Whether this machine shows an NVIDIA driver at all (cheap; no CUDA initialisation)."""
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


def preload_cuda_libraries() -> str:
    """Let ORT find the CUDA/cuDNN libraries PyTorch's wheels installed (ORT >= 1.21).

    `onnxruntime.preload_dlls()` prints its failures to stdout and never raises: capture that text
    and return it, so a later failure can say why.
    """
    import onnxruntime as ort

    if not hasattr(ort, "preload_dlls"):
        return ""
    with captured_output() as cap:
        try:
            ort.preload_dlls()
        except Exception as exc:  # older builds or odd environments
            print(f"preload_dlls raised {exc!r}")
    return cap.text.strip()


class OnnxRuntimeBackend(Backend):
    """Options: allow_fallback (warn instead of raising when CUDA is not active), cuda_options, spinning
    (bool, default on) and graph_level (basic/extended/all, default all): see session_options."""

    name = "onnxruntime"
    runtime = "ONNX Runtime"

    def _load(self) -> ModelInfo:
        import onnxruntime as ort

        check_model(self.path)  # the loading gate (a no-op when create_backend ran it on this file)
        want_cuda = self.device == "cuda"
        preload_text = preload_cuda_libraries() if want_cuda else ""
        if want_cuda:
            cuda_opts = {"device_id": 0, **self.options.get("cuda_options", {})}
            providers = [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.threads = self.threads or default_threads()
        so = session_options(self.threads, bool(self.options.get("spinning", True)), self.options.get("graph_level", "all"))
        with captured_output() as cap:
            try:
                self._sess = ort.InferenceSession(str(self.path), so, providers=providers)
            except Exception as exc:
                err = exc
            else:
                err = None
        if err is not None:
            first = first_line(err)
            if not self.path.exists():
                raise ArtifactError(f"{self.path}: no such file")
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load it: {first[:300]}") from None
        active = self._sess.get_providers()
        self.provider = active[0]
        if want_cuda and "CUDAExecutionProvider" not in active:
            cause = self._fallback_cause(preload_text, cap.text)
            message = (f"CUDA was requested but ONNX Runtime is running {', '.join(active)}; this build "
                       f"lists {', '.join(ort.get_available_providers())}; likely cause: {cause}")
            if not self.options.get("allow_fallback"):
                self._sess = None
                raise BackendUnavailableError(message + " (--allow-fallback runs on CPU instead)")
            self.notes.append(message + "; running on CPU (--allow-fallback)")
            self.device = "cpu"

        try:  # ONNX Runtime decodes names and metadata as UTF-8 on access
            inputs = self._sess.get_inputs()
            props = self._sess.get_modelmeta().custom_metadata_map
            outputs = self._sess.get_outputs()
            output_types = {o.name: o.type for o in outputs}
            output_sigs = [ort_signature(o.name, o.type, o.shape) for o in outputs]
            shapes = [(i.name, i.type, list(i.shape)) for i in inputs]
        except (UnicodeDecodeError, RuntimeError) as exc:
            self._sess = None
            raise ArtifactError(f"{self.path}: unreadable input/output names or metadata ({first_line(exc, 120)})") from None
        if len(inputs) != 1:
            raise ArtifactError(f"{self.path}: has {len(inputs)} inputs; expected one image input")
        in_name, in_type, in_shape = shapes[0]
        dtype = ORT_TYPES.get(in_type)
        if dtype is None:
            raise ArtifactError(
                f"{self.path}: input {in_name!r} is {in_type}; expected tensor(float) [N,1,28,28] "
                f"or tensor(uint8) [N,28,28]")
        meta = from_onnx_props(props)
        info = onnx_io_info(self.path, meta, in_name, dtype, in_shape, output_sigs, "onnx")
        self._in = info.input_name
        self._outs = [info.output_name]
        self._fixed = info.fixed_batch
        self._input_shape = [d if isinstance(d, int) and d > 0 else -1 for d in in_shape]
        self._reshape = info.input_form == "float" and len(in_shape) != 4
        self._run_fn = self._sess.run
        self._float_out = output_types[info.output_name] == "tensor(float)"
        if not info.described:
            self.notes.append(f"{self.path.name} carries no mnistkit metadata: classes named by their index, pixels/255 assumed")
        return info

    def load(self):
        super().load()
        if not (self._reshape or self._fixed) and self._float_out:
            self.run = self._fast_run()
        return self

    def _fast_run(self):
        """`run` through the C++ session's run: the public `InferenceSession.run` wrapper re-validates the
        input names on every call, which this backend fixed at load (see _c_run)."""
        c_run, outs, name = self._c_run(), self._outs, self._in
        return self.fast_run(lambda batch: c_run(outs, {name: batch}, None)[0], self.run_failed)

    def _c_run(self):
        """The C++ binding's run, when this onnxruntime has it and it answers like the public one.

        It pays at batch 1: the public wrapper re-validates input names on every call, 1.1-1.5 us of a
        ~16-20 us MLP call (public/binding p50 1.07-1.08 at 1 and 2 threads, 1.006 at batch 64; measured
        interleaved, onnxruntime-gpu 1.31, 2-vCPU EPYC). Whether the binding answers like the public API
        is a property of the onnxruntime release, so it is checked once per process, on the first model
        loaded, not on every load.
        """
        binding = getattr(getattr(self._sess, "_sess", None), "run", None)
        public = self._sess.run
        if binding is None:
            return lambda outs, feed, options: public(outs, feed, options)
        import onnxruntime as ort

        same = _BINDING_CHECKED.get(ort.__version__)
        if same is None:
            # the contract's shape: the graph's own dims may be symbolic (-1) where the contract has H and W
            g = self.info.geometry
            probe = np.zeros((1, *(g.pixel_tail if self._native == "uint8" else g.float_tail)),
                             np.uint8 if self._native == "uint8" else np.float32)
            try:
                expected = public(self._outs, {self._in: probe})[0]
            except Exception:  # this model cannot say (it fails on zeros): the public API, undecided
                return lambda outs, feed, options: public(outs, feed, options)
            try:
                same = np.array_equal(binding(self._outs, {self._in: probe}, None)[0], expected)
            except Exception:  # a future onnxruntime changed the binding: use the public API
                same = False
            _BINDING_CHECKED[ort.__version__] = same
        return binding if same else (lambda outs, feed, options: public(outs, feed, options))

    @staticmethod
    def _fallback_cause(preload_text: str, session_text: str) -> str:
        if not gpu_present():
            return "no NVIDIA GPU or driver on this machine"
        text = " ".join((preload_text + " " + session_text).split())
        if text:
            return f"the CUDA provider failed to load ({text[:300]})"
        return "the CUDA provider failed to load (CUDA 12/13 runtime or cuDNN 9 libraries not found)"

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self._reshape:
            x = x.reshape([len(x), *self._input_shape[1:]])
        fixed = self._fixed
        if fixed is not None and len(x) != fixed:
            return self._infer_fixed(x, fixed)
        try:
            out = self._run_fn(self._outs, {self._in: x})[0]
        except Exception as exc:
            raise self.run_failed(exc, x) from None
        if not isinstance(out, np.ndarray):
            raise ArtifactError(f"{self.path}: output {self._outs[0]!r} is a {type(out).__name__}, expected a tensor")
        return out if out.dtype == np.float32 else out.astype(np.float32)

    def _infer_fixed(self, x: np.ndarray, fixed: int) -> np.ndarray:
        """A model with a fixed batch dimension: run it chunk by chunk (padding the last)."""
        chunks = []
        for part in fixed_batches(x, fixed):
            try:
                chunks.append(self._run_fn(self._outs, {self._in: part})[0])
            except Exception as exc:
                raise self.run_failed(exc, part) from None
        return np.concatenate(chunks)[:len(x)].astype(np.float32, copy=False)

    def _close(self) -> None:
        self._sess = None
        self._run_fn = None

    # ---- device-resident execution (bench's separately labelled mode)
    def device_resident(self, batch: np.ndarray):
        """Return (call, sync): `call()` runs on inputs/outputs already on the device (IO binding)."""
        import onnxruntime as ort

        x = self.to_native(batch)
        if self._reshape:
            x = x.reshape([len(x), *self._input_shape[1:]])
        device = "cuda" if self.device == "cuda" else "cpu"
        io = self._sess.io_binding()
        x_dev = ort.OrtValue.ortvalue_from_numpy(x, device, 0)
        io.bind_ortvalue_input(self._in, x_dev)
        io.bind_output(self._outs[0], device)
        sess = self._sess

        def call():
            sess.run_with_iobinding(io)

        def sync():
            io.synchronize_outputs()

        call._keepalive = (x_dev, io)  # the bound buffers must outlive the closure's use
        return call, sync


def fixed_batches(x: np.ndarray, fixed: int) -> list[np.ndarray]:
    """`x` split into batches of a fixed-batch model's size, the last padded with zeros (the backend and
    bench's bare-session baseline split the same way)."""
    pad = (-len(x)) % fixed
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    return [x[i:i + fixed] for i in range(0, len(x), fixed)]


# ---------------------------------------------------------------------------------------------
# Baselines for bench, measured in the same run (BackendSpec.bare_baseline, backends.ROOFLINE_PROBE)


MATMUL_SHAPE = (1024, 784, 256)


class MatMulProbe:
    """ONNX Runtime's own MatMul, 1024x784 by a constant 784x256 (the MLP's first layer at batch 1024),
    with mnistkit's session options and threads: the machine's attainable fp32 rate for this model."""

    def __init__(self, threads: int | None):
        from onnx import TensorProto, helper, numpy_helper  # ImportError: no roofline without onnx
        import onnxruntime as ort

        m, k, n = MATMUL_SHAPE
        rng = np.random.default_rng(0)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])], "roofline",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
            [numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        self.threads = threads or default_threads()
        self.flop = 2 * m * k * n
        sess = ort.InferenceSession(model.SerializeToString(), session_options(self.threads),
                                    providers=["CPUExecutionProvider"])
        feed = {"a": rng.standard_normal((m, k)).astype(np.float32)}
        self.call = lambda: sess.run(None, feed)

    def describe(self, p50_seconds: float) -> dict:
        return {"threads": self.threads, "shape": list(MATMUL_SHAPE), "p50_ms": p50_seconds * 1e3,
                "gflops": self.flop / p50_seconds / 1e9}


class BareSession:
    """The bare `InferenceSession.run` on the same file with mnistkit's session options; with `defaults`, ONNX
    Runtime's own (no session options: its thread pools and graph level as a user gets them)."""

    def __init__(self, path, threads: int | None, defaults: bool = False):
        import onnxruntime as ort

        check_model(path)
        self.threads = None if defaults else threads or default_threads()
        options = None if defaults else session_options(self.threads)
        self.sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inp = self.sess.get_inputs()[0]
        self.input = inp.name
        self.shape = [d if isinstance(d, int) and d > 0 else -1 for d in inp.shape]
        self.fixed = self.shape[0] if self.shape and self.shape[0] > 0 else None
        self.outputs = [pick_output(path, [ort_signature(o.name, o.type, o.shape) for o in self.sess.get_outputs()])]

    def call_for(self, x: np.ndarray) -> Callable:
        """A call as a user of the bare session would write it: reshaped to the model's input rank and, for a
        fixed-batch model, split into batches of its size (the last padded) exactly as the backend does."""
        run, outs = self.sess.run, self.outputs
        if len(self.shape) != x.ndim:
            x = x.reshape([len(x), *self.shape[1:]])
        fixed = self.fixed
        if fixed is None or len(x) == fixed:
            feed = {self.input: x}
            return lambda: run(outs, feed)
        feeds = [{self.input: part} for part in fixed_batches(x, fixed)]

        def split_call():
            return [run(outs, feed)[0] for feed in feeds]

        return split_call


# ---------------------------------------------------------------------------------------------
# mnistkit optimize's option space for ONNX Runtime (BackendSpec.plan_options)

SPIN_1 = "spinning keeps a pool's idle threads busy; with one thread there is no pool"


def graph_levels(path) -> list[str]:
    """ONNX Runtime's graph levels (all, extended, basic) whose optimized graphs differ for this file, highest
    first: a level that yields the same operators and wiring as a higher one is the same candidate. Where onnx is
    not installed (the runtime-only install), mnistkit's one level."""
    import tempfile
    from pathlib import Path

    try:
        import onnx
    except ImportError:
        return ["all"]
    import onnxruntime as ort

    graphs: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory(prefix="mnistkit-levels-") as tmp:
        for level in ("all", "extended", "basic"):
            so = session_options(1, True, level)
            so.optimized_model_filepath = str(Path(tmp) / f"{level}.onnx")
            try:
                ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                g = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
            except Exception:  # a level ORT cannot save (contrib ops at 'all'): time it anyway
                graphs[level] = (level,)
                continue
            graphs[level] = tuple((n.op_type, n.domain, tuple(n.input), tuple(n.output)) for n in g.node)
    distinct: list[str] = []
    for level, graph in graphs.items():
        if all(graphs[d] != graph for d in distinct):
            distinct.append(level)
    return distinct


def plan_options(target, threads: int, ctx) -> list[dict]:
    """The option sets worth timing for `target` at `threads`: each distinct graph level, spinning on and off
    (off only with a pool). Only non-default values are listed."""
    levels = graph_levels(target.path)
    spins = [True, False] if threads > 1 else [True]
    if threads == 1:
        ctx.prune(f"{target.path.name} on onnxruntime, 1 thread, spinning off", SPIN_1)
    return [{k: v for k, v in (("graph_level", level), ("spinning", spin))
             if not (k == "graph_level" and v == "all") and not (k == "spinning" and v is True)}
            for level in levels for spin in spins]
