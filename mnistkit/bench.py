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
from functools import partial
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .backends import BACKENDS, REFERENCE, ROOFLINE_PROBE, create_backend, reference_backend
from .compare import compare
from .errors import BackendUnavailableError, InvalidInputError, UnsupportedModelError, first_line
from .formats import DEVICES, EXTERNAL_DEVICE_KIND, KINDS, tolerance_for
from .formats.spec import resolve
from .pixels import native_batch
from .modelspec import ModelSpec
from .plan import Case, Target, cases, check_choices, expand

DEFAULT_BATCH_SIZES = (1, 4, 16, 64, 256, 1024)
DEFAULT_BENCH_DIR = "models/bench"
CV_WARN = 0.25  # stdev/mean above this flags the row: at ~10 us a call, scheduler noise alone gives ~0.1
PARITY_IMAGES = 256
MLP_FLOP_PER_IMAGE = 484_608  # 2 x (784*256 + 256*128 + 128*64 + 64*10)
MODES = ("host", "device")


def default_backends() -> tuple[str, ...]:
    """Every backend except the slow ones (onnx.reference runs operators in Python)."""
    return tuple(name for name, spec in BACKENDS.items() if not spec.slow)


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
        from .devices import EXTERNAL_DEVICES

        check_choices(self.backends, [d for d in self.devices if d not in EXTERNAL_DEVICES])
        for m in self.modes:
            if m not in MODES:
                raise InvalidInputError(f"--modes: unknown mode {m!r}; expected from {', '.join(MODES)}")


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

    A block, and its settling, is never longer than `min_time`: a quick run (`--min-time 0.02`) takes rounds of
    that length instead of 0.2 s blocks per call, which made it ten times longer than asked.
    """
    block = min(block, min_time) if min_time > 0 else block
    settle = min(settle, block)
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
    return native_batch(np.ascontiguousarray(images[idx]), info.input_form, info.mean, info.std)


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


@dataclass(frozen=True)
class BenchCase:
    """One timed configuration: an artifact on a backend and device, in a mode, at a thread count."""

    case: Case
    mode: str
    threads: int | None

    @property
    def label(self) -> str:
        return f"{self.case.backend}/{self.case.device} {self.case.target.path.name}"


def plan_bench(targets: list[Target], config: BenchConfig) -> tuple[list[BenchCase], list[str]]:
    """The planner's (artifact x backend x device) cases x modes x threads, and why other combinations are not
    run; runtimes whose worker threads spin go first (torch's OpenMP workers linger after torch cases and
    would share the cores)."""
    planned, not_run = cases(targets, config.backends, [d for d in config.devices if d in DEVICES])
    out = [BenchCase(c, mode, threads) for c in planned for mode in config.modes
           for threads in ((None,) if BACKENDS[c.backend].pool_threads else config.threads)]
    out.sort(key=lambda bc: not BACKENDS[bc.case.backend].spinning_threads)
    return out, not_run


@dataclass
class _Run:
    """What every case of one bench run shares."""

    config: BenchConfig
    report: BenchReport
    images: np.ndarray
    reference: np.ndarray | None
    source: object  # the reference's source.Source, or None
    checkpoint: Path | None
    progress: Callable[[str, int, int], None] | None
    total: int
    done: int = 0
    probes: dict = field(default_factory=dict)
    independent: dict = field(default_factory=dict)  # (file, backend) -> its logits on the first 64 images

    def step(self, label: str, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self.progress:
            self.progress(label, self.done, self.total)

    def failed(self, bc: BenchCase, status: str, reason: str, fmt: str | None = None, provider=None,
               threads=None, skip: set | None = None) -> None:
        """Rows saying why a case was not timed, at each batch size not already timed."""
        c = bc.case
        for b in self.config.batch_sizes:
            if skip and b in skip:
                continue
            self.report.results.append(_row(c.target, fmt or c.target.kind, c.backend, c.device, provider, bc.mode, b,
                                            threads if threads is not None else bc.threads, status, reason=reason))


def run_bench(models, config: BenchConfig | None = None, data_dir=None, dataset: str | None = None,
              progress: Callable[[str, int, int], None] | None = None, log: Callable[[str], None] | None = None,
              extra_env: dict | None = None, spec: ModelSpec | None = None) -> BenchReport:
    """Benchmark every artifact of `models` on every backend that opens it.

    The parity reference is the checkpoint among `models` (a state_dict with `spec.model_class`), or the
    source an export folder's manifest records (checked by sha256).
    """
    from .environment import fingerprint

    config = config or BenchConfig()
    config.validate()
    log = log or (lambda m: None)
    targets, ref_arg = expand(models)
    if not targets:
        raise InvalidInputError("nothing to benchmark: pass a checkpoint, an export folder or artifacts")
    spec = spec or ModelSpec()
    if spec.model_class is not None and (ref_arg is None or ref_arg.is_dir()):
        raise InvalidInputError("--model-class names the class of a state_dict: pass that file among MODEL")
    src = checkpoint = None
    if ref_arg is not None:
        from .source import data_for, reference_for
        from .plan import target

        implicit = not any(Path(m).resolve() in (ref_arg.resolve(), ref_arg.resolve() / "manifest.json")
                           for m in models)  # the export folder that lists the artifacts given
        try:
            given = spec if ref_arg.is_file() else replace(spec, model_args=None, input_shape=None)
            src, checkpoint, _ = reference_for(ref_arg, given, log=log)
        except InvalidInputError as exc:
            if not implicit:
                raise
            log(f"no PyTorch reference: {exc}")  # the gate falls back to an independent runtime
        else:
            data_dir = data_for(src, data_dir, log)
            if not implicit and not any(t.path.resolve() == checkpoint.resolve() for t in targets):
                targets.insert(0, target(checkpoint))
    images, reference, data_desc = _parity_data(src, dataset, data_dir, targets)
    planned, not_run = plan_bench(targets, config)
    from .devices import EXTERNAL_DEVICES

    external = [d for d in config.devices if d in EXTERNAL_DEVICES]
    external_targets = [t for t in targets if t.kind == EXTERNAL_DEVICE_KIND]
    if not planned and not (external and external_targets):
        from .errors import BenchError

        raise BenchError("nothing could be timed: " + ("; ".join(dict.fromkeys(not_run)) or "no case was planned"))
    report = BenchReport({}, {
        "batch_sizes": list(config.batch_sizes), "threads": list(config.threads), "devices": list(config.devices),
        "modes": list(config.modes), "warmup_s": config.warmup, "min_time_s": config.min_time,
        "min_reps": config.min_reps, "parity_images": len(images), "parity_data": data_desc,
        "timed": {"host": "backend.run(numpy) -> numpy, copies included, native input form",
                  "device": "inputs/outputs resident on the device, synchronized per call",
                  "device+graph": "CUDA graph replay of the forward pass (PyTorch)"},
    }, {"matmul": {}, "flop_per_image": _flop_per_image(targets, src)})
    if config.baselines and "cpu" in config.devices:  # before anything else runs on the cores
        for threads in config.threads:
            rl = _matmul_alone(threads, min_time=min(0.5, config.min_time))
            if rl:
                report.baselines["matmul"][rl["threads"]] = rl
    run = _Run(config, report, images, reference, src, checkpoint, progress,
               (len(planned) + len(external) * len(external_targets)) * len(config.batch_sizes))
    for bc in planned:
        _run_case(run, bc)
    for device in external:
        _run_external(run, device, external_targets)
    _add_roofline(report)
    devices = report.environment.get("devices")  # the JavaScript runtimes' versions, set while they ran
    report.environment = fingerprint({"threads_requested": list(config.threads), **(extra_env or {})})
    if devices:
        report.environment["devices"] = devices
    return report


def _parity_data(src, dataset, data_dir, targets=()):
    """(images, reference logits or None, description) for the parity gate: real test images where
    available, the reference's logits on them when a reference is known; at the images' geometry the reference
    records, else the first artifact's (files from elsewhere: their input's shape)."""
    from .imagesets import validation_images

    meta = src.meta if src else _artifact_meta(targets)
    images, _, data_desc = validation_images(dataset or (src.meta.get("dataset") if src else None), data_dir,
                                             PARITY_IMAGES, None, meta)
    if src is None:
        return images, None, data_desc
    with reference_backend(src) as ref:
        return images, ref.run(images), data_desc


def _artifact_meta(targets) -> dict | None:
    """The input record (and transforms) of the first artifact that opens, for parity images of its shape."""
    from .errors import MnistkitError
    from .source import float_input

    for t in targets:
        try:
            with create_backend(t.path) as b:
                return {"input": float_input(b.info.geometry), "transforms": [list(s) for s in b.info.transforms]}
        except MnistkitError:
            continue
    return None


def _flop_per_image(targets: list[Target], src) -> int | None:
    """FLOP per image from the first file whose kind can count them, else the seed MLP's known count."""
    for t in targets:
        count = KINDS[t.kind].flops
        if count is not None:
            return resolve(count)(t.path)
    return MLP_FLOP_PER_IMAGE if src is not None and src.meta.get("arch") == "mlp" else None


def _matmul_alone(threads: int | None, min_time: float = 0.5) -> dict | None:
    """The roofline probe's rate measured on its own (for rows that are not timed beside it)."""
    try:
        probe = resolve(ROOFLINE_PROBE)(threads)
    except ImportError:
        return None
    return probe.describe(float(np.median(time_calls(probe.call, 0.2, min_time, 20, 100_000))))


def _run_case(run: _Run, bc: BenchCase) -> None:
    c = bc.case
    spec = BACKENDS[c.backend]
    is_reference = run.checkpoint is not None and c.target.path.resolve() == run.checkpoint.resolve()
    options = {"source": run.source} if spec.reference and is_reference else {}
    try:
        t0 = time.perf_counter()
        backend = create_backend(c.target.path, c.backend, c.device, kind=c.target.kind, threads=bc.threads, **options)
        backend.load()
        load_ms = (time.perf_counter() - t0) * 1e3
    except Exception as exc:  # a row that says so, then the next case
        status = "unavailable" if isinstance(exc, BackendUnavailableError) else "error"
        run.failed(bc, status, first_line(exc))
        run.step(bc.label, len(run.config.batch_sizes))
        return
    try:
        _bench_case(run, bc, backend, load_ms)
    except Exception as exc:  # a case that breaks mid-way is a row that says why, never a traceback
        timed = {r["batch_size"] for r in run.report.results if r["artifact"] == str(c.target.path)
                 and r["backend"] == c.backend and r["device"] == c.device and r["mode"] == bc.mode}
        run.failed(bc, "error", first_line(exc), skip=timed)
        run.step(bc.label, len(run.config.batch_sizes))


NO_REFERENCE = "no reference to check parity against (pass the checkpoint too)"


def _parity_gate(run: _Run, t: Target, fmt: str, device: str, out: np.ndarray, also: tuple[str, ...] = ()):
    """(comparison, what it was against) that admits a case to timing: against the PyTorch reference, else (no
    reference known) against an independent implementation that opens the file, else against the backends in
    `also` (a JavaScript runtime's rows take ONNX Runtime's CPU answers on the same file); (None, None) when
    there is none of these."""
    if run.reference is not None:
        return compare(run.reference, out, tolerance_for(fmt, device)), REFERENCE
    names = [n for n, spec in BACKENDS.items() if spec.independent] + list(also)
    for name in names:
        if t.kind not in BACKENDS[name].opens:
            continue
        key = (t.path, name)
        if key not in run.independent:
            try:
                with create_backend(t.path, name, "cpu") as independent:
                    run.independent[key] = independent.run(run.images[:64])
            except UnsupportedModelError:  # e.g. QDQ operators onnx.reference does not implement
                run.independent[key] = None
        if run.independent[key] is not None:
            return compare(run.independent[key], out[:64], tolerance_for(fmt, device)), f"{name}/cpu"
    return None, None


def _bench_case(run: _Run, bc: BenchCase, backend, load_ms: float) -> None:
    """Parity-check, then time one case at every batch size."""
    config, t = run.config, bc.case.target
    name, mode = bc.case.backend, bc.mode
    spec = BACKENDS[name]
    with backend:
        info = backend.info
        fmt = info.format
        eff_threads = backend.threads
        t1 = time.perf_counter()
        out = backend.run(_native_batch(info, run.images, len(run.images)))
        first_ms = (time.perf_counter() - t1) * 1e3
        gate, against = _parity_gate(run, t, fmt, backend.device, out)
        if gate is None or not gate:
            why = NO_REFERENCE if gate is None else "parity failed: " + "; ".join(gate.failures)
            run.failed(bc, "parity-failed", why, fmt, backend.provider, eff_threads)
            run.step(bc.label, len(config.batch_sizes))
            return
        bare = probe = None
        if config.baselines and spec.bare_baseline and backend.device == "cpu" and mode == "host":
            bare = resolve(spec.bare_baseline)(t.path, eff_threads)
            try:
                probe = run.probes.setdefault(eff_threads, resolve(ROOFLINE_PROBE)(eff_threads))
            except ImportError:
                probe = None
        for b in config.batch_sizes:
            x = _native_batch(info, run.images, b)
            extra: dict = {"load_ms": load_ms, "first_ms": first_ms, "bytes": t.path.stat().st_size,
                           "accuracy": info.metadata.get("test_accuracy"),
                           "parity": {"max_abs": gate.max_abs, "top1": gate.top1_agreement, "against": against}}
            if info.fixed_batch and b != info.fixed_batch:
                extra["split"] = _split(info, b)
            modes_here = [mode]
            if mode == "device" and backend.device == "cuda" and spec.cuda_graphs:
                modes_here.append("device+graph")
            for m in modes_here:
                _time_mode(run, bc, backend, fmt, eff_threads, m, b, x, extra, bare if m == "host" else None, probe)
            run.step(bc.label)


def _time_mode(run: _Run, bc: BenchCase, backend, fmt, eff_threads, m: str, b: int, x, extra: dict, bare, probe):
    """Time one mode at one batch size; append its row (and the bare baseline's, when timed beside it)."""
    config, report, t, name = run.config, run.report, bc.case.target, bc.case.backend
    if m == "host":
        call, sync = partial(backend.run, x), None  # no Python frame of the harness's own around run(x)
    elif m == "device+graph":
        call, sync = backend.device_resident(x, cuda_graph=True)
    else:
        call, sync = backend.device_resident(x)
    bare_row = None
    extra_b: dict = {}
    if bare is not None:
        # mnistkit, the bare session and the MatMul probe in alternating blocks: on a shared machine
        # the 2-thread rate drifts by 20 % between minutes, so each ratio is taken against baselines
        # timed in the same seconds
        # backend.unchecked() is the same call without the input checks: timed beside them, it splits the
        # overhead into what the checks cost and what the wrapper's dispatch costs
        direct = backend.unchecked()
        calls = [call, bare.call_for(x), partial(direct, x)] + ([probe.call] if probe else [])
        timed = time_interleaved(calls, config.warmup, config.min_time, config.min_reps)
        seconds, theirs, unchecked = timed[0], timed[1], timed[2]
        s_ours, s_bare, s_direct = latency_stats(seconds), latency_stats(theirs), latency_stats(unchecked)
        extra_b = {"overhead_p50": s_ours.p50 / s_bare.p50, "overhead_p99": s_ours.p99 / s_bare.p99,
                   "unchecked_overhead_p50": s_direct.p50 / s_bare.p50, "unchecked_p50_ms": s_direct.p50}
        fractions = {}
        per_image = report.baselines.get("flop_per_image")
        if probe is not None and per_image:
            mm = probe.describe(float(np.median(timed[3])))
            fractions = {"ours": b * per_image / (s_ours.p50 / 1e3) / (mm["gflops"] * 1e9),
                         "bare": b * per_image / (s_bare.p50 / 1e3) / (mm["gflops"] * 1e9)}
            extra_b.update(roofline_fraction=fractions["ours"], matmul_gflops=mm["gflops"])
        bare_row = _row(t, fmt, f"{name}-bare", "cpu", backend.provider, m, b, eff_threads, "ok", baseline=True,
                        bytes=extra["bytes"], accuracy=extra["accuracy"],
                        **({"split": extra["split"]} if "split" in extra else {}), **_stats_fields(s_bare, b))
        if fractions:
            bare_row.update(roofline_fraction=fractions["bare"], matmul_gflops=extra_b["matmul_gflops"])
        if b in config.keep_samples_at:
            bare_row["samples_ms"] = _samples_field(theirs)
    else:
        seconds = time_calls(call, config.warmup, config.min_time, config.min_reps, config.max_reps, sync)
        s_ours = latency_stats(seconds)
    warnings_ = [f"high variance: CV {s_ours.cv:.2f} > {CV_WARN} (noisy machine?)"] if s_ours.cv > CV_WARN else []
    row = _row(t, fmt, name, backend.device, backend.provider, m, b, eff_threads, "ok",
               **extra, **extra_b, **_stats_fields(s_ours, b), warnings=warnings_)
    if b in config.keep_samples_at:
        row["samples_ms"] = _samples_field(seconds)
    report.results.append(row)
    if bare_row is not None:
        report.results.append(bare_row)


def _external_threads(config: BenchConfig) -> list[int]:
    """--threads, else 1 and every usable core (the JavaScript runtimes have no 'default' worth a row)."""
    from .environment import usable_cores

    asked = [t for t in config.threads if t is not None]
    return sorted(set(asked)) if asked else sorted({1, usable_cores()})


def _run_external(run: _Run, device: str, targets: list[Target]) -> None:
    """The ONNX artifacts on a JavaScript runtime (devices.py): the same parity gate against the reference
    and the same statistics and row keys as Python's runtimes; a device this machine lacks gives rows that
    say so (status unavailable)."""
    from .devices import BACKEND_NAME, run_external, unavailable

    config, backend = run.config, BACKEND_NAME[device]
    threads = _external_threads(config)
    if not targets:
        return
    n = len(config.batch_sizes)

    def failed(t: Target, status: str, reason: str, thr=None) -> None:
        for th in ([thr] if thr is not None else threads):
            for b in config.batch_sizes:
                run.report.results.append(_row(t, t.format, backend, device, None, "host", b, th, status, reason=reason))

    why = unavailable(device)
    if why is not None:
        for t in targets:
            failed(t, "unavailable", why)
            run.step(f"{backend}/{device} {t.path.name}", n)
        return
    infos = {}
    for t in targets:  # the file as its kind's CPU backend reads it: its signature, as the harness needs it
        try:
            with create_backend(t.path, None, "cpu") as b:
                infos[t] = b.info
        except Exception as exc:  # an unreadable file: a row that says so
            failed(t, "error", first_line(exc))
    groups: dict[tuple, list[Target]] = {}  # one harness run per normalization (one per model, in practice)
    for t, info in infos.items():
        groups.setdefault((info.mean, info.std), []).append(t)
    for (mean, std), group in groups.items():
        models = [(t.path, _signature(infos[t])) for t in group]
        out = run_external(device, models, run.images, mean, std, config.batch_sizes, threads, config.warmup,
                           config.min_time, config.min_reps, config.max_reps)
        run.report.environment.setdefault("devices", {})[device] = out.get("runtime")
        by_model: dict[str, list[dict]] = {}
        for c in out.get("cases") or []:
            by_model.setdefault(c["model"], []).append(c)
        for t in group:
            cases_ = by_model.get(str(t.path.resolve())) or by_model.get(str(t.path)) or []
            if not cases_:
                failed(t, "error", out.get("error") or f"{backend} returned nothing for {t.path.name}")
            for c in cases_:
                _external_rows(run, t, infos[t], device, backend, c, out.get("runtime") or {})
            run.step(f"{backend}/{device} {t.path.name}", n)


def _split(info, batch: int) -> str:
    """How a fixed-batch model runs a batch of another size: as several calls of its batch, the last padded."""
    return f"{math.ceil(batch / info.fixed_batch)} × batch {info.fixed_batch}"


def _signature(info) -> dict:
    """What a JavaScript harness needs to feed a model as Python's backends do: the native dtype, the input and
    output names, the input's dims after the batch axis, and the batch a fixed-batch model takes per call."""
    shape = info.metadata.get("input_shape") or []
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape[1:]]
    return {"dtype": "uint8" if info.input_form == "uint8" else "float32", "input": info.input_name,
            "output": info.output_name, "fixed_batch": info.fixed_batch,
            **({"dims": dims} if dims and None not in dims else {})}


def _external_rows(run: _Run, t: Target, info, device: str, backend: str, c: dict, runtime: dict) -> None:
    config = run.config
    fmt = t.format
    provider = f"{runtime.get('name', backend)} {runtime.get('version', '')}".strip() + (
        " wasm SIMD" if device == "browser" else " CPU")

    def rows(status: str, reason: str) -> None:
        for b in config.batch_sizes:
            run.report.results.append(_row(t, fmt, backend, device, provider, "host", b, c["threads"], status,
                                           reason=reason))

    if c.get("error"):
        return rows("error", c["error"])
    logits = np.asarray(c.get("parity_logits") or [], np.float32)
    gate, against = _parity_gate(run, t, fmt, "cpu", logits.reshape(len(logits), -1) if logits.size else logits,
                                 also=(KINDS[t.kind].default_backend,))
    if gate is None:
        return rows("parity-failed", NO_REFERENCE)
    if not gate:
        return rows("parity-failed", "parity failed: " + "; ".join(gate.failures))
    for b in config.batch_sizes:
        ms = c["timings"].get(str(b)) or c["timings"].get(b)
        if not ms:
            run.report.results.append(_row(t, fmt, backend, device, provider, "host", b, c["threads"], "error",
                                           reason="no timings returned"))
            continue
        seconds = np.asarray(ms, np.float64) / 1e3
        stats = latency_stats(seconds)
        warnings_ = [f"high variance: CV {stats.cv:.2f} > {CV_WARN} (noisy machine?)"] if stats.cv > CV_WARN else []
        row = _row(t, fmt, backend, device, provider, "host", b, c["threads"], "ok", bytes=t.path.stat().st_size,
                   accuracy=info.metadata.get("test_accuracy"),
                   parity={"max_abs": gate.max_abs, "top1": gate.top1_agreement, "against": against},
                   **_stats_fields(stats, b),
                   warnings=warnings_)
        if info.fixed_batch and b != info.fixed_batch:  # the harness runs it as several calls, as Python does
            row["split"] = _split(info, b)
        if b in config.keep_samples_at:
            row["samples_ms"] = _samples_field(seconds)
        run.report.results.append(row)


def run_and_write(models, config: BenchConfig, out_dir: Path, create_parents: bool = False, **kwargs) -> dict:
    """run_bench, then results.json/.csv, report.md and the plots into `out_dir`; the report's JSON with
    the files written. When nothing could be timed, says why (BenchError) and writes nothing."""
    from .report import write_outputs

    obj = run_bench(models, config, **kwargs).to_json()
    if not any(r.get("status") == "ok" for r in obj["results"]):
        check_complete(obj["results"])
    files = write_outputs(obj, Path(out_dir), create_parents=create_parents)
    return {**obj, "files": {k: str(v) for k, v in files.items()}}


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
