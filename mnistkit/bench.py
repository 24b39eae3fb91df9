"""Latency benchmarks: every (artifact, backend, device, batch, threads), with honest statistics.

What is timed (says each row's `mode`):
- host (default): one `backend.run(batch)` call, numpy in and numpy out, every copy included; each
  artifact is fed its native input form (normalized float32 for float models, uint8 for app models),
  so conversion costs are not charged to one runtime and not another.
- device: inputs and outputs already on the device (ONNX Runtime IO binding, torch tensors), the
  device synchronized after every call; on CUDA, PyTorch also as a CUDA-graph replay (`device+graph`).

Each case is warmed up, then timed call by call (perf_counter_ns) until `min_time` has passed and
at least `min_reps` calls were made: p50/p90/p99/p99.9, mean, stdev, min, max, throughput
(batch / mean latency). A high coefficient of variation (stdev / mean) is flagged, as trtexec does.

Baselines measured in the same run, so ratios survive a noisy machine:
- the bare `onnxruntime.InferenceSession.run` on the same file with the same options and input,
  interleaved block by block with mnistkit's backend -> the overhead ratio (p50 and p99);
- the fp32 matrix-multiply rate of ONNX Runtime's own MatMul (1024x784 by 784x256, same threads),
  timed in the same interleaved blocks as each ONNX Runtime row (and once at the start for the
  others) -> each row's p50 throughput as a fraction of the model's compute roofline;
- PyTorch eager (the `pytorch` backend) whenever the checkpoint is known.

Nothing is timed before it passes a parity check against the reference on real test images; a
failure becomes a row that says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .artifacts import detect_kind, read_manifest
from .backends import BACKENDS, backends_for, create_backend
from .backends.base import pixels_to_float
from .compare import compare, tolerance_for
from .errors import BackendUnavailableError, InvalidInputError, UnsupportedModelError, first_line

DEFAULT_BATCH_SIZES = (1, 4, 16, 64, 256, 1024)
CV_WARN = 0.25  # stdev/mean above this flags the row: at ~10 us a call, scheduler noise alone gives ~0.1
PARITY_IMAGES = 256
MLP_FLOP_PER_IMAGE = 484_608  # 2 x (784*256 + 256*128 + 128*64 + 64*10)
MATMUL_SHAPE = (1024, 784, 256)


@dataclass
class BenchConfig:
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    threads: tuple[int | None, ...] = (None,)  # None: each runtime's default (all usable cores)
    backends: tuple[str, ...] | None = None
    devices: tuple[str, ...] = ("cpu",)
    modes: tuple[str, ...] = ("host",)
    warmup: float = 0.2  # seconds of warm-up calls per case (at least 5 calls)
    min_time: float = 1.0  # seconds of timed calls per case
    min_reps: int = 20
    max_reps: int = 1_000_000
    baselines: bool = True
    keep_samples_at: tuple[int, ...] = (1,)  # batch sizes whose latency samples are kept (CDF plot)

    def validate(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise InvalidInputError(f"--batch-sizes {self.batch_sizes}: expected integers >= 1")
        if any(t is not None and t < 1 for t in self.threads):
            raise InvalidInputError(f"--threads {self.threads}: expected integers >= 1")
        if self.min_time <= 0 or self.warmup < 0:
            raise InvalidInputError("--min-time must be > 0 and --warmup >= 0")
        for b in self.backends or ():
            if b not in BACKENDS:
                raise InvalidInputError(f"--backends: unknown backend {b!r}; expected from {', '.join(BACKENDS)}")
        for m in self.modes:
            if m not in ("host", "device"):
                raise InvalidInputError(f"--modes: unknown mode {m!r}; expected host or device")


@dataclass
class Stats:
    p50: float
    p90: float
    p99: float
    p999: float
    mean: float
    stdev: float
    min: float
    max: float
    reps: int

    @property
    def cv(self) -> float:
        return self.stdev / self.mean if self.mean > 0 else float("nan")


def latency_stats(seconds: np.ndarray) -> Stats:
    """Statistics in milliseconds of per-call latencies given in seconds (numpy's linear percentiles)."""
    ms = np.asarray(seconds, np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no samples")
    p50, p90, p99, p999 = np.percentile(ms, [50, 90, 99, 99.9])
    return Stats(float(p50), float(p90), float(p99), float(p999), float(ms.mean()),
                 float(ms.std(ddof=1)) if ms.size > 1 else 0.0, float(ms.min()), float(ms.max()), int(ms.size))


def time_calls(call: Callable[[], object], warmup: float, min_time: float, min_reps: int, max_reps: int,
               sync: Callable[[], None] | None = None) -> np.ndarray:
    """Warm up, then time `call` one call at a time; returns per-call seconds."""
    clock = time.perf_counter_ns
    end = clock() + int(warmup * 1e9)
    n = 0
    while n < 5 or clock() < end:
        call()
        if sync:
            sync()
        n += 1
    samples = []
    append = samples.append
    deadline = clock() + int(min_time * 1e9)
    while len(samples) < max_reps:
        t0 = clock()
        call()
        if sync:
            sync()
        append(clock() - t0)
        if len(samples) >= min_reps and t0 >= deadline:
            break
    return np.asarray(samples, np.float64) * 1e-9


def time_interleaved(calls: list[Callable[[], object]], warmup: float, min_time: float, min_reps: int,
                     block: float = 0.2, settle: float = 0.03) -> list[np.ndarray]:
    """Time several calls in alternating blocks (~`block` s each), so that drifts in the machine's
    speed land on all of them alike. Returns per-call seconds for each.

    Each block starts with `settle` seconds of untimed calls: the other session's spinning worker
    threads take tens of ms to go idle, and with 50 ms blocks and no settling a batch-1024 call
    measured 2.6x slower than alone (6.4 vs 2.4 ms on the 2-core machine).
    """
    for c in calls:
        time_calls(c, warmup, 0.0, 1, 5)
    samples: list[list[float]] = [[] for _ in calls]
    clock = time.perf_counter_ns
    deadline = clock() + int(min_time * len(calls) * 1e9)
    while True:
        for c, out in zip(calls, samples):
            end = clock() + int(settle * 1e9)
            while clock() < end:
                c()
            end = clock() + int(block * 1e9)
            while True:
                t0 = clock()
                c()
                t1 = clock()
                out.append(t1 - t0)
                if t1 >= end:
                    break
        if clock() >= deadline and all(len(s) >= min_reps for s in samples):
            break
    return [np.asarray(s, np.float64) * 1e-9 for s in samples]


# ---------------------------------------------------------------------------------------------
# What to benchmark


@dataclass
class Target:
    path: Path
    kind: str
    checkpoint: Path | None  # the reference for parity and the PyTorch eager row


def resolve_targets(models) -> tuple[list[Target], Path | None]:
    """MODEL arguments -> (artifact files, what names the PyTorch reference: a checkpoint or an export folder).

    Export folders are expanded through their manifest, every file checked against its sha256.
    """
    from .artifacts import manifest_artifacts

    targets: list[Target] = []
    reference: Path | None = None
    for m in models:
        p = Path(m)
        if p.is_dir() or p.name == "manifest.json":
            folder = p if p.is_dir() else p.parent
            manifest = read_manifest(p)
            if reference is None and (manifest.get("source") or {}).get("kind") in ("checkpoint", "state_dict"):
                reference = folder
            for f in manifest_artifacts(p):
                targets.append(Target(f, detect_kind(f), None))
        else:
            kind = detect_kind(p)
            if kind == "checkpoint" and (reference is None or reference.is_dir()):
                reference = p
            targets.append(Target(p, kind, None))
    return targets, reference


def flops_per_image(onnx_path: Path) -> int | None:
    """Multiply-add FLOP per image of an ONNX graph's Gemm/MatMul/Conv nodes (shape inference at N=1)."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    try:  # a FLOP count is a nicety: a file ONNX cannot read is reported by the backend that loads it
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:
        return None
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:
        return None
    shapes = {}
    for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
            ins = [i for i in node.input if i in inits]
            out = shapes.get(node.output[0])
            if ins and out:
                w = inits[ins[0]]
                k = w[1] if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute) else w[0]
                total += 2 * int(np.prod(out)) * k
        elif node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            weight = next((inits[i] for i in node.input[1:2] if i in inits), None)
            out = shapes.get(node.output[0])
            if weight and out:
                total += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
    return total or None


# ---------------------------------------------------------------------------------------------
# Baselines


class MatMulProbe:
    """ONNX Runtime's own MatMul, 1024x784 by a constant 784x256 (the MLP's first layer at batch 1024),
    with mnistkit's session options and threads: the machine's attainable fp32 rate for this model."""

    def __init__(self, threads: int | None):
        from onnx import TensorProto, helper, numpy_helper  # ImportError: no roofline without onnx
        import onnxruntime as ort

        from .backends.onnxrt import default_threads, session_options

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


def matmul_roofline(threads: int | None, min_time: float = 0.5) -> dict | None:
    """The MatMul rate measured on its own (for rows that are not timed beside it)."""
    try:
        probe = MatMulProbe(threads)
    except ImportError:
        return None
    return probe.describe(float(np.median(time_calls(probe.call, 0.2, min_time, 20, 100_000))))


class BareSession:
    """The bare `InferenceSession.run` on the same file with mnistkit's session options."""

    def __init__(self, path: Path, threads: int | None):
        import onnxruntime as ort

        from .backends.onnxrt import default_threads, session_options

        self.threads = threads or default_threads()
        self.sess = ort.InferenceSession(str(path), session_options(self.threads), providers=["CPUExecutionProvider"])
        inp = self.sess.get_inputs()[0]
        self.input = inp.name
        self.shape = [d if isinstance(d, int) and d > 0 else -1 for d in inp.shape]
        self.fixed = self.shape[0] if self.shape and self.shape[0] > 0 else None
        outs = [o.name for o in self.sess.get_outputs()]
        self.outputs = ["logits"] if "logits" in outs else outs[:1]

    def call_for(self, x: np.ndarray) -> Callable[[], object]:
        """A call as a user of the bare session would write it: reshaped to the model's input rank and, for a
        fixed-batch model, split into batches of its size (the last padded) exactly as the backend does."""
        run, outs = self.sess.run, self.outputs
        if len(self.shape) != x.ndim:
            x = x.reshape([len(x), *self.shape[1:]])
        fixed = self.fixed
        if fixed is None or len(x) == fixed:
            feed = {self.input: x}
            return lambda: run(outs, feed)
        from .backends.onnxrt import fixed_batches

        feeds = [{self.input: part} for part in fixed_batches(x, fixed)]

        def split_call():
            return [run(outs, feed)[0] for feed in feeds]

        return split_call


# ---------------------------------------------------------------------------------------------
# The harness


@dataclass
class BenchReport:
    environment: dict
    config: dict
    baselines: dict
    results: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"environment": self.environment, "config": self.config, "baselines": self.baselines,
                "results": self.results}


def _native_batch(info, images: np.ndarray, batch: int) -> np.ndarray:
    idx = np.arange(batch) % len(images)
    pixels = np.ascontiguousarray(images[idx])
    if info.input_form == "uint8":
        return pixels
    return pixels_to_float(pixels, info.mean, info.std)


def _row(target: Target, fmt: str, backend: str, device: str, provider, mode: str, batch: int, threads,
         status: str, **extra) -> dict:
    row = {"artifact": str(target.path), "file": target.path.name, "format": fmt, "backend": backend,
           "device": device, "provider": provider, "mode": mode, "batch_size": batch, "threads": threads,
           "status": status}
    row.update(extra)
    return row


def _stats_fields(stats: Stats, batch: int) -> dict:
    return {"p50_ms": stats.p50, "p90_ms": stats.p90, "p99_ms": stats.p99, "p999_ms": stats.p999,
            "mean_ms": stats.mean, "stdev_ms": stats.stdev, "min_ms": stats.min, "max_ms": stats.max,
            "cv": stats.cv, "reps": stats.reps, "throughput_per_s": batch / (stats.mean / 1e3)}


def _samples_field(seconds: np.ndarray) -> list[float]:
    """At most 1,000 evenly spaced order statistics (ms): enough for a CDF, small in JSON."""
    ms = np.sort(seconds) * 1e3
    if ms.size > 1000:
        ms = ms[np.linspace(0, ms.size - 1, 1000).round().astype(int)]
    return [round(float(x), 6) for x in ms]


def run_bench(models, config: BenchConfig | None = None, data_dir=None, dataset: str | None = None,
              progress: Callable[[str, int, int], None] | None = None, log: Callable[[str], None] | None = None,
              extra_env: dict | None = None, model_class: str | None = None, labels=None, mean=None,
              std=None) -> BenchReport:
    """Benchmark every artifact of `models` on every backend that opens it.

    The parity reference is the checkpoint among `models` (a state_dict with `model_class`), or the
    source an export folder's manifest records (checked by sha256).
    """
    from .environment import fingerprint
    from .exporter import validation_images

    config = config or BenchConfig()
    config.validate()
    log = log or (lambda m: None)
    targets, ref_arg = resolve_targets(models)
    if not targets:
        raise InvalidInputError("nothing to benchmark: pass a checkpoint, an export folder or artifacts")
    if model_class is not None and (ref_arg is None or ref_arg.is_dir()):
        raise InvalidInputError("--model-class names the class of a state_dict: pass that file among MODEL")

    # reference logits for the parity gate (real test images where available)
    ref_meta: dict = {}
    reference = src = checkpoint = None
    if ref_arg is not None:
        from .source import data_for, reference_for

        src, checkpoint, _ = reference_for(ref_arg, model_class if ref_arg.is_file() else None, labels, mean, std,
                                           log=log)
        ref_meta = src.meta
        data_dir = data_for(src, data_dir, log)
        if not any(t.path.resolve() == checkpoint.resolve() for t in targets):
            targets.insert(0, Target(checkpoint, "checkpoint", None))
    for t in targets:
        t.checkpoint = checkpoint
    images, _, data_desc = validation_images({"dataset": dataset or ref_meta.get("dataset")}, data_dir,
                                             PARITY_IMAGES, None)
    if checkpoint is not None:
        with create_backend(checkpoint, "pytorch", "cpu", kind="checkpoint", source=src) as ref:
            reference = ref.run(images)

    # the cases
    cases = []
    for t in targets:
        for name in backends_for(t.kind):
            if config.backends and name not in config.backends:
                continue
            for device in config.devices:
                if device not in BACKENDS[name].devices:
                    continue
                for mode in config.modes:
                    for threads in config.threads:
                        cases.append((t, name, device, mode, threads))
    # ONNX Runtime cases first: torch's OpenMP workers linger after torch cases and would share the
    # cores with ORT's spinning threads
    cases.sort(key=lambda c: c[1] != "onnxruntime")
    total = sum(len(config.batch_sizes) for _ in cases)
    done = 0
    baselines: dict = {"matmul": {}, "flop_per_image": None}
    report = BenchReport({}, {
        "batch_sizes": list(config.batch_sizes), "threads": list(config.threads), "devices": list(config.devices),
        "modes": list(config.modes), "warmup_s": config.warmup, "min_time_s": config.min_time,
        "min_reps": config.min_reps, "parity_images": len(images), "parity_data": data_desc,
        "timed": {"host": "backend.run(numpy) -> numpy, copies included, native input form",
                  "device": "inputs/outputs resident on the device, synchronized per call",
                  "device+graph": "CUDA graph replay of the forward pass (PyTorch)"},
    }, baselines)

    if config.baselines and "cpu" in config.devices:  # before anything else runs on the cores
        for threads in config.threads:
            rl = matmul_roofline(threads, min_time=min(0.5, config.min_time))
            if rl:
                baselines["matmul"][rl["threads"]] = rl
    onnx_files = [t.path for t in targets if t.kind == "onnx"]
    if onnx_files:
        fl = flops_per_image(onnx_files[0])
        baselines["flop_per_image"] = fl
    elif ref_meta.get("arch") == "mlp":
        baselines["flop_per_image"] = MLP_FLOP_PER_IMAGE

    probes: dict[int, MatMulProbe] = {}
    for (t, name, device, mode, threads) in cases:
        label = f"{name}/{device} {t.path.name}"
        is_reference = checkpoint is not None and t.path.resolve() == checkpoint.resolve()
        options = {"source": src} if name == "pytorch" and is_reference else {}
        try:
            t0 = time.perf_counter()
            backend = create_backend(t.path, name, device, kind=t.kind, threads=threads, **options)
            backend.load()
            load_ms = (time.perf_counter() - t0) * 1e3
        except (BackendUnavailableError, Exception) as exc:  # a row that says so, then the next case
            reason = first_line(exc)
            status = "unavailable" if isinstance(exc, BackendUnavailableError) else "error"
            for b in config.batch_sizes:
                report.results.append(_row(t, t.kind, name, device, None, mode, b, threads, status, reason=reason))
                done += 1
                if progress:
                    progress(label, done, total)
            continue
        try:
            done = _bench_case(report, config, t, name, device, mode, threads, backend, load_ms, images, reference,
                               probes, label, done, total, progress)
        except Exception as exc:  # a case that breaks mid-way is a row that says why, never a traceback
            reason = first_line(exc)
            timed = {r["batch_size"] for r in report.results if r["artifact"] == str(t.path) and r["backend"] == name
                     and r["device"] == device and r["mode"] == mode}
            for b in config.batch_sizes:
                if b not in timed:
                    report.results.append(_row(t, t.kind, name, device, None, mode, b, threads, "error",
                                               reason=reason))
            done = min(total, done + len(config.batch_sizes))
            if progress:
                progress(label, done, total)
    _add_roofline(report)
    report.environment = fingerprint({"threads_requested": list(config.threads), **(extra_env or {})})
    return report


def _bench_case(report, config, t, name, device, mode, threads, backend, load_ms, images, reference, probes,
                label, done, total, progress) -> int:
    """Parity-check, then time one (artifact, backend, device, mode, threads) at every batch size.

    Returns the updated count of finished steps for the progress bar."""
    with backend:
        info = backend.info
        fmt = info.format
        eff_threads = backend.threads
        # parity gate
        t1 = time.perf_counter()
        out = backend.run(_native_batch(info, images, len(images)))
        first_ms = (time.perf_counter() - t1) * 1e3
        gate = None
        if reference is not None:
            gate = compare(reference, out, tolerance_for(fmt, device))
        elif t.kind == "onnx":
            try:
                with create_backend(t.path, "onnx-reference", "cpu") as independent:
                    gate = compare(independent.run(images[:64]), out[:64], tolerance_for(fmt, device))
            except UnsupportedModelError:  # e.g. QDQ operators onnx.reference does not implement
                gate = None
        if gate is None or not gate:
            why = ("no reference to check parity against (pass the checkpoint too)" if gate is None
                   else "parity failed: " + "; ".join(gate.failures))
            for b in config.batch_sizes:
                report.results.append(_row(t, fmt, name, backend.device, backend.provider, mode, b, eff_threads,
                                           "parity-failed", reason=why))
                done += 1
                if progress:
                    progress(label, done, total)
            return done
        bare = probe = None
        if config.baselines and name == "onnxruntime" and backend.device == "cpu" and mode == "host":
            bare = BareSession(t.path, eff_threads)
            try:
                probe = probes.setdefault(eff_threads, MatMulProbe(eff_threads))
            except ImportError:
                probe = None
        for b in config.batch_sizes:
            x = _native_batch(info, images, b)
            warnings_: list[str] = []
            extra: dict = {"load_ms": load_ms, "first_ms": first_ms, "bytes": t.path.stat().st_size,
                           "accuracy": info.metadata.get("test_accuracy"),
                           "parity": {"max_abs": gate.max_abs, "top1": gate.top1_agreement}}
            if info.fixed_batch and b != info.fixed_batch:  # a fixed-batch model runs a batch as several calls
                extra["split"] = f"{math.ceil(b / info.fixed_batch)} × batch {info.fixed_batch}"
            modes_here = [mode]
            if mode == "device" and device == "cuda" and name in ("pytorch", "torchscript"):
                modes_here.append("device+graph")
            for m in modes_here:
                if m == "host":
                    call, sync = (lambda run=backend.run, x=x: run(x)), None
                else:
                    call, sync = backend.device_resident(x, cuda_graph=True) if m == "device+graph" \
                        else backend.device_resident(x)
                if bare is not None and m == "host":
                    # mnistkit, the bare session and the MatMul probe in alternating blocks: on a
                    # shared machine the 2-thread rate drifts by 20 % between minutes, so each
                    # ratio is taken against baselines timed in the same seconds
                    calls = [call, bare.call_for(x)] + ([probe.call] if probe else [])
                    timed = time_interleaved(calls, config.warmup, config.min_time, config.min_reps)
                    ours, theirs = timed[0], timed[1]
                    s_ours, s_bare = latency_stats(ours), latency_stats(theirs)
                    extra_b = {"overhead_p50": s_ours.p50 / s_bare.p50, "overhead_p99": s_ours.p99 / s_bare.p99}
                    fractions = {}
                    if probe is not None and report.baselines.get("flop_per_image"):
                        mm = probe.describe(float(np.median(timed[2])))
                        per_image = report.baselines["flop_per_image"]
                        fractions = {"ours": b * per_image / (s_ours.p50 / 1e3) / (mm["gflops"] * 1e9),
                                     "bare": b * per_image / (s_bare.p50 / 1e3) / (mm["gflops"] * 1e9)}
                        extra_b.update(roofline_fraction=fractions["ours"], matmul_gflops=mm["gflops"])
                    bare_row = _row(t, fmt, "onnxruntime-bare", "cpu", "CPUExecutionProvider", m, b, eff_threads,
                                    "ok", baseline=True, bytes=extra["bytes"], accuracy=extra["accuracy"],
                                    **({"split": extra["split"]} if "split" in extra else {}),
                                    **_stats_fields(s_bare, b))
                    if fractions:
                        bare_row.update(roofline_fraction=fractions["bare"], matmul_gflops=extra_b["matmul_gflops"])
                    if b in config.keep_samples_at:
                        bare_row["samples_ms"] = _samples_field(theirs)
                    seconds = ours
                else:
                    seconds = time_calls(call, config.warmup, config.min_time, config.min_reps, config.max_reps, sync)
                    s_ours, extra_b, bare_row = latency_stats(seconds), {}, None
                if s_ours.cv > CV_WARN:
                    warnings_.append(f"high variance: CV {s_ours.cv:.2f} > {CV_WARN} (noisy machine?)")
                row = _row(t, fmt, name, backend.device, backend.provider, m, b, eff_threads, "ok",
                           **extra, **extra_b, **_stats_fields(s_ours, b), warnings=list(warnings_))
                if b in config.keep_samples_at:
                    row["samples_ms"] = _samples_field(seconds)
                report.results.append(row)
                if bare_row is not None:
                    report.results.append(bare_row)
            done += 1
            if progress:
                progress(label, done, total)
    return done


def untimed(results: list[dict]) -> list[str]:
    """One entry per (artifact, backend, device, mode) with rows that could not be timed, with the reason."""
    seen: dict[tuple, str] = {}
    for r in results:
        if r.get("status") != "ok":
            key = (r["file"], r["backend"], r["device"], r["mode"])
            seen.setdefault(key, f"{r['backend']}/{r['device']} {r['file']} ({r['status']}: {r.get('reason')})")
    return list(seen.values())


def check_complete(results: list[dict], allow_missing: bool = False) -> None:
    """Raise BenchError unless every requested row was timed.

    With allow_missing, rows whose runtime or device is not available here are fine; errors and
    parity failures never are.
    """
    from .errors import BenchError

    bad = [r for r in results if r.get("status") != "ok" and not (allow_missing and r.get("status") == "unavailable")]
    if not bad:
        return
    timed = sum(1 for r in results if r.get("status") == "ok" and not r.get("baseline"))
    listed = untimed(bad)
    hint = "" if allow_missing or any(r["status"] != "unavailable" for r in bad) else \
        " (--allow-missing accepts runtimes and devices this machine does not have)"
    what = "nothing could be timed" if not timed else f"{len(listed)} requested case(s) could not be timed"
    raise BenchError(f"{what}: {'; '.join(listed)}{hint}")


def _add_roofline(report: BenchReport) -> None:
    """Rows not timed beside the MatMul probe get their fraction from the start-of-run measurement.

    Both are p50-based: images per second at the median latency x FLOP per image, over the MatMul's
    FLOP per second at its median latency.
    """
    fl = report.baselines.get("flop_per_image")
    for row in report.results:
        rl = report.baselines["matmul"].get(row.get("threads"))
        if row.get("status") == "ok" and fl and rl and row["device"] == "cpu" and "roofline_fraction" not in row:
            row["roofline_fraction"] = row["batch_size"] / (row["p50_ms"] / 1e3) * fl / (rl["gflops"] * 1e9)
