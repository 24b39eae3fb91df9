"""`mnistkit optimize`: the fastest verified deployment of a model for each batch size, and `deploy/`.

The search, in four steps, each narrowing the one before (all in one process, on the same cores):

1. Plan: every artifact of the export (exporting the formats missing) x every CPU runtime that opens it x
   threads (1 .. usable cores) x the runtime options that matter, as each backend file says
   (`BackendSpec.plan_options`: ONNX Runtime's spinning and graph levels, OpenVINO's hint and bf16 precision
   where the CPU has it, LiteRT's XNNPACK delegate on int8 files). Combinations that cannot differ, runtimes
   not to deploy, and formats the table says are not CPU formats are pruned by reasoning before anything
   runs, each with its reason, stated in the report.
2. Gate: every candidate runs the full test split; it must pass its format's parity tolerance against
   PyTorch and the accuracy budget (`--max-accuracy-drop`) before it is timed.
3. Screen: each candidate is timed briefly at each batch size; those within SCREEN_KEEP of the fastest go on.
4. Decide: the survivors are timed in interleaved blocks (bench's harness), then the three fastest are timed
   again, with mnistkit's own configuration of each runtime default (same file, every core, no option changed),
   interleaved with each runtime's own defaults (a bare session as a user would write it). The noise
   band is measured: how far the same candidates' medians moved between the two interleaved rounds
   (at least MIN_NOISE, at most MAX_NOISE). Among the candidates within the band of the fastest the simplest
   is chosen (fp32 over int8, fewer threads, the core install, default options); so the choice is within
   1 + MAX_NOISE = 1.05x of the fastest measured, and the decision is a pure function of the measurements
   (`choose`).

What is timed: `backend.unchecked()(batch)` of mnistkit's backend configured as the candidate says, numpy in and
out, on the artifact's native input form (normalized float32, or uint8 pixels for app-ready files): the
configuration's own cost. The defaults it must beat are bare runtime calls, which check nothing either;
`run()`'s input checks (a dot product over the batch for finiteness: ~7 % at batch 1024 on 2 cores) are the same
for every float candidate, so they would only blur the ranking; they are timed for the choice, beside it
(`checked_run_p50_ms`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .backends import BACKENDS, backends_for, create_backend
from .bench import latency_stats, time_calls, time_interleaved
from .compare import compare
from .deploy import DEPLOY_FILE, DEPLOY_FORMAT_VERSION
from .errors import InvalidInputError, MnistkitError, first_line
from .signals import publishing
from .formats import COMPUTE_TOLERANCE, DEFAULT_ACCURACY_BUDGET, FORMATS, REFERENCE_KIND, exportable, tolerance_for
from .pixels import native_batch

DEFAULT_BATCH_SIZES = (1, 64, 1024)
DEFAULT_BUDGET = 60.0
DEFAULT_DEPLOY_DIR = "deploy"
MIN_BUDGET = 10.0
SCREEN_KEEP = 1.5  # screened p50 within this of the fastest: timed again, interleaved (screens are ~0.1 s)
MAX_FINAL = 8  # at most this many survivors per batch size in the interleaved round
TOP = 3  # re-measured with the defaults before deciding
MIN_NOISE, MAX_NOISE = 0.02, 0.05  # the band of "same speed": measured, clamped (1.05x is the promise)
CHUNK = 1000  # images per call in the accuracy gate
# Seconds kept for writing the deploy folder (the plot imports matplotlib: ~1 s) and overruns (a search used 59.2 s
# of 60 with 3 s kept); of each batch size's share of
# the rest, 30 % screens, 25 % the interleaved round, 10 % the decision, 4 % the checked call: the remaining
# third is what warm-ups, settling and compiling new shapes took (measured: 46.6 s of timing for 46 s planned
# at 82 %)
WRITE_RESERVE = 5.0

# Why whole groups of candidates are not timed: reasoning, stated in the report. Each runtime's own reasons live
# in its backend file (BackendSpec.plan_options, .not_deployed, .pool_size); these are about formats and pools.
PRUNE_REASONS = {
    "fp16": "float16 weights on a CPU: x86 CPUs have no fp16 arithmetic, so CPU runtimes cast back to float32 and "
            "add the casts (a GPU format)",
    "pool": "{label}'s thread pool is process-wide and fixed when the runtime loads (it cannot be resized safely): "
            "one thread setting per process",
}


def _precision(fmt: str) -> str:
    """What a format computes in, from the format table ("fp32" for a name it does not hold)."""
    spec = FORMATS.get(fmt)
    return spec.precision if spec else "fp32"


@dataclass(frozen=True)
class Candidate:
    """One deployable configuration: an artifact on a runtime, at a thread count, with options."""

    file: str  # name inside the export folder
    format: str
    kind: str
    backend: str
    threads: int
    options: tuple = ()  # sorted (name, value) pairs, non-default values only

    @property
    def opts(self) -> dict:
        return dict(self.options)

    @property
    def label(self) -> str:
        extra = "".join(f", {k}={_show(v)}" for k, v in self.options)
        return f"{self.file} on {self.backend}, {self.threads} thread{'s' if self.threads > 1 else ''}{extra}"

    @property
    def quantized(self) -> bool:
        return _precision(self.format) == "int8"

    @property
    def computes_in(self) -> str | None:
        """The precision a runtime option makes a float file compute in (OpenVINO's bf16), else None."""
        value = self.opts.get("precision")
        return value if value in COMPUTE_TOLERANCE else None

    def simplicity(self) -> tuple:
        """Sort key, simplest first: fp32 before bf16 before int8, fewer threads, the core install, fewer changed
        options."""
        return (self.quantized, self.computes_in is not None, self.threads, not BACKENDS[self.backend].core,
                len(self.options), self.label)

    def to_json(self) -> dict:
        return {"file": self.file, "format": self.format, "backend": self.backend, "threads": self.threads,
                "options": self.opts, "label": self.label}


def _show(v) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


@dataclass
class Pruned:
    what: str
    reason: str


@dataclass
class Timing:
    p50_ms: float
    p99_ms: float
    reps: int
    cv: float

    @classmethod
    def of(cls, seconds: np.ndarray) -> "Timing":
        s = latency_stats(seconds)
        return cls(s.p50, s.p99, s.reps, s.cv)


@dataclass
class Scored:
    """A candidate that passed the gate, with its measurements."""

    candidate: Candidate
    backend: object  # the loaded mnistkit backend (closed at the end)
    input_form: str
    accuracy: float
    accuracy_delta: float
    agreement: float
    max_abs: float
    screen: dict = field(default_factory=dict)  # batch -> Timing
    final: dict = field(default_factory=dict)  # batch -> Timing (interleaved round)
    decide: dict = field(default_factory=dict)  # batch -> Timing (interleaved with the defaults)


# ------------------------------------------------------------------------------------------------
# 1. the plan


def plan_candidates(targets, cores: int) -> tuple[list[Candidate], list[Pruned]]:
    """Candidates and what was pruned (with why) for the export's artifacts (plan.Target) on `cores` cores.

    Every CPU runtime that opens an artifact and may be deployed is planned at each thread count (one, for a
    runtime whose pool is fixed) with the option sets its backend file's `plan_options` gives."""
    from .backends.base import PlanContext
    from .formats.spec import resolve

    out: list[Candidate] = []
    pruned: list[Pruned] = []
    ctx = PlanContext(list(targets), lambda what, why: pruned.append(Pruned(what, why)))
    threads_all = list(range(1, max(1, cores) + 1))
    for t in targets:
        fmt, name = t.format, t.path.name
        if _precision(fmt) == "fp16":
            ctx.prune(f"{name} (every runtime)", PRUNE_REASONS["fp16"])
            continue
        for backend in backends_for(t.kind):
            spec = BACKENDS[backend]
            if "cpu" not in spec.devices:
                continue
            if spec.not_deployed:
                ctx.prune(f"{name} on {backend}", spec.not_deployed)
                continue
            options_for = resolve(spec.plan_options) if spec.plan_options else (lambda target, threads, c: [{}])
            if spec.pool_size:
                n = resolve(spec.pool_size)()
                out.extend(Candidate(name, fmt, t.kind, backend, n, tuple(sorted(o.items())))
                           for o in options_for(t, n, ctx))
                if cores > 1:
                    ctx.prune(f"{name} on {backend} at other thread counts", PRUNE_REASONS["pool"].format(label=spec.label))
                continue
            for threads in threads_all:
                for options in options_for(t, threads, ctx):
                    out.append(Candidate(name, fmt, t.kind, backend, threads, tuple(sorted(options.items()))))
    return out, pruned


# ------------------------------------------------------------------------------------------------
# the defaults: each runtime as a user would call it with no options


@dataclass
class Default:
    """A runtime's own defaults on an fp32 file: the call a user writes in three lines."""

    name: str
    file: str
    make: Callable[[np.ndarray], Callable[[], np.ndarray]]  # batch -> call returning logits
    decide: dict = field(default_factory=dict)  # batch -> Timing
    backend: str = ""  # the registry's runtime it is the default of
    precision: str = "fp32"  # what it computes in on this CPU (OpenVINO's defaults: bf16 where the CPU has it)
    format: str = ""  # the format of its file (the registry's defaults_format)


def runtime_defaults(folder: Path, files: set[str]) -> tuple[list[Default], list[str]]:
    """The defaults of every runtime that names a defaults format in the registry (its bare baseline with the
    runtime's own configuration, on that format's file), where the file and the runtime are here; and notes on
    those that are not."""
    from .formats.spec import resolve

    out: list[Default] = []
    notes: list[str] = []
    for backend, spec in BACKENDS.items():
        if not spec.defaults_format:
            continue
        name, file = f"{spec.label} defaults", FORMATS[spec.defaults_format].file
        if file not in files:
            notes.append(f"{name}: no {file} in the export")
            continue
        try:
            bare = resolve(spec.bare_baseline)(folder / file, None, defaults=True)
        except ImportError as exc:
            notes.append(f"{name}: runtime not installed ({first_line(exc, 80)})")
            continue
        except Exception as exc:
            notes.append(f"{name}: does not load ({first_line(exc, 120)})")
            continue
        precision = resolve(spec.defaults_precision)() if spec.defaults_precision else "fp32"
        out.append(Default(name, file, bare.call_for, backend=backend, precision=precision, format=spec.defaults_format))
    return out, notes


# ------------------------------------------------------------------------------------------------
# 4. the decision (a pure function of the measurements)


def noise_band(pairs: list[tuple[float, float]]) -> float:
    """The relative noise of a p50: the median relative change of the same candidates' p50 between two
    interleaved rounds, clamped to [MIN_NOISE, MAX_NOISE]."""
    moves = [abs(a - b) / min(a, b) for a, b in pairs if a > 0 and b > 0]
    measured = float(np.median(moves)) if moves else MIN_NOISE
    return min(MAX_NOISE, max(MIN_NOISE, measured))


def choose(timed: list[tuple[Candidate, float]], noise: float) -> tuple[int, list[int]]:
    """(index of the choice, indices within the noise band of the fastest) for (candidate, p50) pairs: the
    simplest candidate whose p50 is within `noise` of the fastest."""
    if not timed:
        raise ValueError("nothing timed")
    fastest = min(p for _, p in timed)
    band = [i for i, (_, p) in enumerate(timed) if p <= fastest * (1 + noise)]
    chosen = min(band, key=lambda i: (timed[i][0].simplicity(), timed[i][1]))
    return chosen, band


# ------------------------------------------------------------------------------------------------
# the command


@dataclass
class _Budget:
    seconds: float
    start: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def optimize(model, batch_sizes=DEFAULT_BATCH_SIZES, max_accuracy_drop: float = DEFAULT_ACCURACY_BUDGET * 100,
             out_dir=DEFAULT_DEPLOY_DIR,
             budget: float = DEFAULT_BUDGET, data_dir=None, overwrite: bool = False,
             progress: Callable[[str, int, int], None] | None = None,
             log: Callable[[str], None] | None = None) -> dict:
    """Search the deployments of `model` (a checkpoint or an export folder) and write `out_dir` (deploy.json,
    the chosen files, manifest.json, report.md, tradeoff.png). Returns deploy.json's content."""
    from .imagesets import model_split
    from .environment import fingerprint, usable_cores
    from .plan import expand
    from .source import data_for, reference_for

    log = log or (lambda m: None)
    batch_sizes = tuple(dict.fromkeys(int(b) for b in batch_sizes))
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise InvalidInputError(f"--batch-sizes {','.join(map(str, batch_sizes))}: expected integers >= 1")
    if not 0 <= max_accuracy_drop <= 100:
        raise InvalidInputError(f"--max-accuracy-drop {max_accuracy_drop}: expected 0-100 points")
    if budget < MIN_BUDGET:
        raise InvalidInputError(f"--budget {budget:g}s: expected at least {MIN_BUDGET:g}s")
    out_dir = Path(out_dir)
    check_deploy_target(out_dir, overwrite)

    t_export = time.perf_counter()
    folder, exported = export_folder(Path(model), data_dir, log)
    export_s = time.perf_counter() - t_export
    clock = _Budget(budget)
    src, ckpt, _ = reference_for(folder, log=log)
    data_dir = data_for(src, data_dir, log)
    split = model_split("test", src.meta.get("dataset") or "mnist", data_dir, src.meta, log=log, download=True)
    images, labels = split.images, split.labels
    from .backends import reference_backend

    with reference_backend(src) as ref:
        reference = ref.run_chunked(images, CHUNK)
    ref_acc = float((reference.argmax(1) == labels).mean())

    targets, _ = expand([folder])
    cores = usable_cores()
    candidates, pruned = plan_candidates(targets, cores)
    if not candidates:
        raise InvalidInputError(f"{folder}: no artifact here runs on a CPU runtime that is installed")
    files = {t.path.name for t in targets}
    steps = len(candidates) * (1 + len(batch_sizes)) + 2 * len(batch_sizes)
    done = 0

    def step(label: str, n: int = 1) -> None:
        nonlocal done
        done += n
        if progress:
            progress(label, min(done, steps), steps)

    scored: list[Scored] = []
    phases: dict[str, float] = {"reference": round(clock.elapsed(), 2)}
    try:
        # 2. the gate
        budget_drop = max_accuracy_drop / 100
        for c in candidates:
            s = _gate(folder, c, images, labels, reference, budget_drop, pruned)
            if s is not None:
                scored.append(s)
            step(f"gate {c.label}")
        if not scored:
            raise MnistkitError(f"{folder}: no candidate passed parity and the accuracy budget: "
                                + "; ".join(p.reason for p in pruned[-3:]))
        defaults, default_notes = runtime_defaults(folder, files)
        defaults = _gate_defaults(defaults, folder, images, reference, default_notes, labels, budget_drop)
        phases["gate"] = round(clock.elapsed() - sum(phases.values()), 2)

        # 3. screen, 4. decide: per batch size, the time left split over what is left to do
        choices, rounds = {}, {}
        for i, b in enumerate(batch_sizes):
            share = max(clock.left() - WRITE_RESERVE, 0.0) / (len(batch_sizes) - i)
            x_for = {form: native_batch(_cycle(images, b), form, *_norm(scored)) for form in ("float", "uint8")}
            screen_s = min(0.2, max(0.01, 0.3 * share / len(scored)))
            for s in scored:
                x = x_for[s.input_form]
                s.screen[b] = Timing.of(time_calls(_call(s.backend, x), min(0.02, screen_s / 3), screen_s, 5,
                                                   200_000))
                step(f"screen batch {b}: {s.candidate.label}")
            best = min(s.screen[b].p50_ms for s in scored)
            ranked = sorted(scored, key=lambda s: s.screen[b].p50_ms)
            near = [s for s in ranked if s.screen[b].p50_ms <= best * SCREEN_KEEP]
            finalists = ranked[:max(TOP, min(len(near), MAX_FINAL))]  # at least TOP: a runner-up is always timed
            round_s = min(0.5, max(0.05, 0.25 * share / len(finalists)))
            timed = time_interleaved([_call(s.backend, x_for[s.input_form]) for s in finalists], 0.02, round_s, 10,
                                     block=min(0.2, round_s / 2), settle=0.02)
            for s, secs in zip(finalists, timed):
                s.final[b] = Timing.of(secs)
            step(f"batch {b}: {len(finalists)} finalists interleaved")
            top = sorted(finalists, key=lambda s: s.final[b].p50_ms)[:TOP]
            # mnistkit's twin of each runtime default (its file, its runtime, every core, no options) decides too:
            # where a default is fastest, the configuration that matches it is then a candidate in that round
            top += [s for s in scored if s not in top and _twin_of_default(s.candidate, defaults, cores)]
            calls = [_call(s.backend, x_for[s.input_form]) for s in top]
            calls += [d.make(x_for["float"]) for d in defaults]
            decide_s = min(0.5, max(0.05, 0.1 * share / len(calls)))
            timed = time_interleaved(calls, 0.02, decide_s, 10, block=min(0.2, decide_s / 2), settle=0.02)
            for s, secs in zip(top, timed):
                s.decide[b] = Timing.of(secs)
            for d, secs in zip(defaults, timed[len(top):]):
                d.decide[b] = Timing.of(secs)
            step(f"batch {b}: top {len(top)} and the defaults interleaved")
            choices[str(b)], rounds[str(b)] = _decision(b, top, finalists, defaults, ref_acc)
            chosen = next(s for s in top if s.candidate.label == choices[str(b)]["label"])
            x = x_for[chosen.input_form]
            bare, checked = time_interleaved([_call(chosen.backend, x), lambda run=chosen.backend.run, x=x: run(x)], 0.02,
                                             min(0.3, max(0.05, 0.04 * share)), 10, block=0.05, settle=0.01)
            checked_p50 = Timing.of(checked).p50_ms
            choices[str(b)]["checked_run_p50_ms"] = checked_p50
            choices[str(b)]["checks_cost"] = checked_p50 / Timing.of(bare).p50_ms
        search_s = clock.elapsed()
        phases["timing"] = round(search_s - sum(phases.values()), 2)
        result = {
            "format": "mnistkit-deploy", "format_version": DEPLOY_FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {"export": str(folder), "checkpoint": str(ckpt), "exported_now": exported},
            "environment": fingerprint({"cores": cores}),
            "search": {"budget_s": budget, "seconds": round(search_s, 2), "export_s": round(export_s, 2),
                       "within_budget": search_s <= budget, "phases_s": phases, "candidates": len(candidates),
                       "passed_gate": len(scored),
                       "pruned": len(pruned), "test_images": int(len(images)), "reference_accuracy": ref_acc,
                       "max_accuracy_drop": max_accuracy_drop, "batch_sizes": list(batch_sizes),
                       "timed": "backend.unchecked()(numpy) -> numpy on the artifact's native input form (the "
                                "configured runtime without mnistkit's input checks; checked_run_p50_ms is run())",
                       "defaults_not_timed": default_notes},
            "choices": choices,
        }
        table = {"candidates": [_candidate_row(s, batch_sizes) for s in scored],
                 "defaults": [{"name": d.name, "file": d.file,
                               "decide": {str(b): vars(t) for b, t in d.decide.items()}} for d in defaults],
                 "pruned": [vars(p) for p in pruned], "rounds": rounds}
        _write_deploy(out_dir, folder, result, table)
        log(f"search took {search_s:.1f} s of the {budget:g} s budget" + (f" (+ {export_s:.1f} s exporting)"
                                                                              if exported else ""))
        return result
    finally:
        for s in scored:
            s.backend.close()


def _cycle(images: np.ndarray, b: int) -> np.ndarray:
    return np.ascontiguousarray(images[np.arange(b) % len(images)])


def _norm(scored: list[Scored]) -> tuple[float, float]:
    info = scored[0].backend.info
    return info.mean, info.std


def _call(backend, x):
    """The candidate's call as timed: `unchecked()`, the runtime as configured without mnistkit's input checks
    (the defaults it is compared with check nothing either; the checks' cost is measured for the choice)."""
    run = backend.unchecked()
    return lambda: run(x)


def _gate(folder: Path, c: Candidate, images, labels, reference, budget_drop: float, pruned: list[Pruned]):
    """Load the candidate and run the full test split: a Scored when it passes parity and the accuracy
    budget; else a Pruned entry saying why (and None)."""
    from .capture import captured_output

    try:
        backend = create_backend(folder / c.file, c.backend, "cpu", kind=c.kind, threads=c.threads, **c.opts)
        with captured_output():  # runtimes' start-up chatter (ExecuTorch's cpuinfo probe, torch's import notes)
            backend.load()
    except Exception as exc:
        pruned.append(Pruned(c.label, f"does not load here: {first_line(exc, 200)}"))
        return None
    try:
        logits = backend.run_chunked(images, CHUNK)
        tol = tolerance_for(c.format, "cpu", c.computes_in)
        tol = replace(tol, max_accuracy_drop=budget_drop) if tol.max_accuracy_drop is not None else tol
        cmp = compare(reference, logits, tol, labels)
    except Exception as exc:
        backend.close()
        pruned.append(Pruned(c.label, f"failed on the test split: {first_line(exc, 200)}"))
        return None
    if not cmp:
        backend.close()
        pruned.append(Pruned(c.label, "failed the gate: " + "; ".join(cmp.failures)))
        return None
    return Scored(c, backend, backend.info.input_form, cmp.accuracy, cmp.accuracy_delta, cmp.top1_agreement,
                  cmp.max_abs)


def _gate_defaults(defaults: list[Default], folder: Path, images, reference, notes: list[str], labels=None,
                   budget_drop: float = DEFAULT_ACCURACY_BUDGET) -> list[Default]:
    """The defaults that give PyTorch's answers (on 1,000 test images; by their file's tolerance, or by the
    tolerance of what they compute in on this CPU, e.g. OpenVINO's bf16): timing a default that computes something
    else would compare nothing."""
    from .pixels import pixels_to_float

    kept = []
    sample = np.ascontiguousarray(images[:CHUNK])
    for d in defaults:
        try:
            info_mean, info_std = _file_norm(folder / d.file)
            logits = np.asarray(d.make(pixels_to_float(sample, info_mean, info_std))(), np.float32)
            tol = tolerance_for(d.format, "cpu", d.precision if d.precision != "fp32" else None)
            tol = replace(tol, max_accuracy_drop=budget_drop) if tol.max_accuracy_drop is not None else tol
            cmp = compare(reference[:CHUNK], logits.reshape(len(sample), -1), tol,
                          None if labels is None else labels[:CHUNK])
        except Exception as exc:
            notes.append(f"{d.name}: failed to run ({first_line(exc, 120)})")
            continue
        if not cmp:
            notes.append(f"{d.name}: not timed, its answers differ from PyTorch's ({'; '.join(cmp.failures)})")
            continue
        kept.append(d)
    return kept


def _file_norm(path: Path) -> tuple[float, float]:
    from .artifacts import detect_kind, info_from_metadata, kind_metadata

    kind = detect_kind(path)
    info = info_from_metadata(path, kind, kind_metadata(path, kind))
    return info.mean, info.std


def _twin_of_default(c: Candidate, defaults: list[Default], cores: int) -> bool:
    """Whether `c` is mnistkit's configuration of a runtime default: the same file on that runtime, on every
    core, with no changed option."""
    return c.threads == cores and any(
        d.file == c.file and d.backend == c.backend and c.opts == ({"precision": d.precision} if d.precision != "fp32" else {})
        for d in defaults)


def _decision(b: int, top: list[Scored], finalists: list[Scored], defaults: list[Default], ref_acc: float):
    """The choice at batch size `b` among `top` (timed in the deciding round), and the round's record. The noise
    band comes from those also timed in the round before."""
    pairs = [(s.final[b].p50_ms, s.decide[b].p50_ms) for s in top if b in s.final]
    noise = noise_band(pairs)
    timed = [(s.candidate, s.decide[b].p50_ms) for s in top]
    ci, band = choose(timed, noise)
    chosen = top[ci]
    fastest = min(p for _, p in timed)
    others = sorted((i for i in range(len(top)) if i != ci), key=lambda i: timed[i][1])
    runner = top[others[0]] if others else None
    entry = {
        **chosen.candidate.to_json(),
        "input_form": chosen.input_form,
        "p50_ms": chosen.decide[b].p50_ms, "p99_ms": chosen.decide[b].p99_ms,
        "accuracy": chosen.accuracy, "accuracy_delta": chosen.accuracy_delta,
        "reference_accuracy": ref_acc, "top1_agreement": chosen.agreement,
        "vs_fastest": chosen.decide[b].p50_ms / fastest,
        "noise": noise,
        "within_noise": [top[i].candidate.label for i in band if i != ci],
        "runner_up": None if runner is None else {
            **runner.candidate.to_json(), "p50_ms": runner.decide[b].p50_ms,
            "ratio": runner.decide[b].p50_ms / chosen.decide[b].p50_ms},
        "defaults": [{"name": d.name, "file": d.file, "p50_ms": d.decide[b].p50_ms,
                      "speedup": d.decide[b].p50_ms / chosen.decide[b].p50_ms,
                      "at_least_as_fast": chosen.decide[b].p50_ms <= d.decide[b].p50_ms * (1 + noise)}
                     for d in defaults],
    }
    record = {"finalists": [s.candidate.label for s in finalists], "top": [s.candidate.label for s in top],
              "noise": noise}
    return entry, record


def _candidate_row(s: Scored, batch_sizes) -> dict:
    return {**s.candidate.to_json(), "input_form": s.input_form, "accuracy": s.accuracy,
            "accuracy_delta": s.accuracy_delta, "top1_agreement": s.agreement, "max_abs": s.max_abs,
            "screen": {str(b): vars(s.screen[b]) for b in batch_sizes if b in s.screen},
            "final": {str(b): vars(s.final[b]) for b in batch_sizes if b in s.final},
            "decide": {str(b): vars(s.decide[b]) for b in batch_sizes if b in s.decide}}


# ------------------------------------------------------------------------------------------------
# the export folder and the deploy folder


def export_folder(path: Path, data_dir, log) -> tuple[Path, list[str]]:
    """(the export folder to search, formats exported now). A folder is used as it is; a checkpoint's default
    export folder (models/<name>/) gets the formats it is missing (those already there are kept)."""
    from .artifacts import read_manifest

    if path.is_dir() or path.name == "manifest.json":
        folder = path if path.is_dir() else path.parent
        read_manifest(folder)  # not an export folder: one line
        return folder, []
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file or folder; expected a checkpoint or an export folder")
    from .artifacts import detect_kind

    if detect_kind(path) != REFERENCE_KIND:
        raise InvalidInputError(f"{path}: optimize takes a checkpoint or an export folder (the PyTorch reference "
                                "checks every candidate), not a single artifact")
    from .exporter import export_model
    from .source import load_source

    src = load_source(path, None, None, None, None, None, None, data_dir, log)
    folder = src.default_out
    present: set[str] = set()
    try:
        manifest = read_manifest(folder)
        if (manifest.get("source") or {}).get("sha256") == src.description.get("sha256"):
            present = {a.get("format") for a in manifest.get("artifacts") or []}
    except MnistkitError:
        pass
    missing = [f for f in exportable() if f not in present and FORMATS[f].precision != "fp16"]
    if missing:
        log(f"exporting {', '.join(missing)} to {folder} (the formats it does not have yet)")
        folder.parent.mkdir(parents=True, exist_ok=True)
        export_model(path, missing, out_dir=folder, data_dir=data_dir, log=log, raise_on_failure=False)
    return folder, missing


def check_deploy_target(out_dir: Path, overwrite: bool) -> None:
    """A deploy folder is new, empty, or an earlier deploy folder (replaced whole); never a folder of the user's."""
    from .fileio import check_writable_dir

    if out_dir.exists():
        if not out_dir.is_dir():
            raise InvalidInputError(f"--out-dir {out_dir}: exists and is not a directory")
        entries = [p.name for p in out_dir.iterdir()]
        if entries and not (out_dir / DEPLOY_FILE).is_file():
            raise InvalidInputError(f"--out-dir {out_dir}: holds {', '.join(sorted(entries)[:3])}"
                                    f"{' and more' if len(entries) > 3 else ''} and no {DEPLOY_FILE}; pass a new or "
                                    "empty folder (or an earlier deploy folder)")
        if entries and not overwrite:
            raise InvalidInputError(f"--out-dir {out_dir}: already holds a deployment; --overwrite replaces it")
    elif not out_dir.parent.exists():
        raise InvalidInputError(f"--out-dir {out_dir}: parent directory {out_dir.parent} does not exist")
    check_writable_dir(out_dir.parent, f"the folder holding --out-dir {out_dir.name}")


def _write_deploy(out_dir: Path, folder: Path, result: dict, table: dict) -> None:
    """Build the deploy folder beside `out_dir` and swap it in whole."""
    from .artifacts import read_manifest
    from .fileio import atomic_write_json, replace_dir, sha256_file, staging_dir

    manifest = read_manifest(folder)
    chosen = {c["file"] for c in result["choices"].values()}
    entries = [a for a in manifest.get("artifacts") or [] if a.get("file") in chosen]
    staging = staging_dir(out_dir, "deploy")
    try:
        copied = []
        for e in entries:
            for name in [e["file"], *[c["file"] for c in e.get("companions") or []]]:
                shutil.copy2(folder / name, staging / name)
                copied.append(name)
        for c in result["choices"].values():
            c["sha256"] = sha256_file(staging / c["file"])
        result["files"] = copied
        atomic_write_json(staging / "manifest.json", {**manifest, "artifacts": entries})
        atomic_write_json(staging / DEPLOY_FILE, result)
        atomic_write_json(staging / "candidates.json", table)
        plot = _plot(staging / "tradeoff.png", table, result)
        (staging / "report.md").write_text(markdown(result, table, plot is not None))
        with publishing(str(out_dir)):  # a signal from here on does not turn a complete deploy folder into "terminated"
            replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------------
# report.md and the plot


def _plot(path: Path, table: dict, result: dict) -> Path | None:
    """Latency vs accuracy of every gated candidate, one panel per batch size, the Pareto front marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sizes = result["search"]["batch_sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4.2), squeeze=False)
    runtimes = sorted({c["backend"] for c in table["candidates"]})
    colours = {r: plt.get_cmap("tab10")(i) for i, r in enumerate(runtimes)}
    for ax, b in zip(axes[0], sizes):
        pts = [(c["screen"][str(b)]["p50_ms"] * 1e3, c["accuracy"] * 100, c) for c in table["candidates"]
               if str(b) in c["screen"]]
        for r in runtimes:
            xs = [p[0] for p in pts if p[2]["backend"] == r]
            ys = [p[1] for p in pts if p[2]["backend"] == r]
            ax.scatter(xs, ys, s=22, color=colours[r], label=r, alpha=0.8)
        front = sorted(pareto([(p[0], p[1]) for p in pts]))
        if front:
            fx, fy = zip(*front)
            ax.plot(fx, fy, "k--", lw=1)
            ax.scatter(fx, fy, s=60, facecolors="none", edgecolors="black", linewidths=1, label="Pareto front")
        ch = result["choices"][str(b)]
        ax.scatter([ch["p50_ms"] * 1e3], [ch["accuracy"] * 100], s=140, facecolors="none", edgecolors="red",
                   linewidths=2, label="chosen (decision-round p50)")
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency per call (µs, screening)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"batch {b}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"mnistkit optimize: latency vs accuracy ({result['environment'].get('cpu', '')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both latency (lower) and accuracy (higher)."""
    return [p for p in points if not any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)]


def markdown(result: dict, table: dict, has_plot: bool) -> str:
    s = result["search"]
    env = result["environment"]
    lines = [f"# mnistkit optimize: {result['source']['export']}", "",
             f"Machine: {env.get('cpu', '?')}, {env.get('cores', '?')} usable cores; "
             f"search {s['seconds']:.1f} s of a {s['budget_s']:g} s budget; {s['candidates']} candidates, "
             f"{s['passed_gate']} passed parity and the accuracy budget ({s['max_accuracy_drop']:g} points "
             f"below PyTorch's {s['reference_accuracy']:.4f} on {s['test_images']:,} test images), "
             f"{s['pruned']} pruned or refused.", "",
             f"Timed: {s['timed']}. Screening times each candidate briefly; those within {SCREEN_KEEP}x of the "
             f"fastest are timed in interleaved blocks; the {TOP} fastest again, with mnistkit's configuration of "
             "each runtime default (its file, every core, no option changed), interleaved with the bare defaults; "
             "the decision uses that last round.", "", "## Choices", "",
             "| batch | chosen | p50 | p99 | accuracy (Δ) | vs fastest | runner-up (ratio) | within noise |",
             "|---|---|---|---|---|---|---|---|"]
    for b, c in result["choices"].items():
        ru = c["runner_up"]
        runner = f"{ru['label']} ({ru['ratio']:.3f}x)" if ru else "—"
        lines.append(f"| {b} | {c['label']} | {_us(c['p50_ms'])} | {_us(c['p99_ms'])} | {c['accuracy']:.4f} "
                     f"({c['accuracy_delta'] * 100:+.2f}) | {c['vs_fastest']:.3f}x | "
                     f"{runner} | "
                     f"{'; '.join(c['within_noise']) or '—'} (band {c['noise'] * 100:.1f} %) |")
    lines += ["", "## Against each runtime's defaults (same interleaved round)", "",
              "| batch | default | its p50 | chosen is faster by |", "|---|---|---|---|"]
    for b, c in result["choices"].items():
        for d in c["defaults"]:
            slower = '' if d['at_least_as_fast'] else ' (the choice is slower than this default beyond the noise band)'
            lines.append(f"| {b} | {d['name']} ({d['file']}) | {_us(d['p50_ms'])} | {d['speedup']:.2f}x{slower} |")
    for n in s["defaults_not_timed"]:
        lines.append(f"\n- {n}")
    if has_plot:
        lines += ["", "## Latency vs accuracy", "", "![latency vs accuracy](tradeoff.png)"]
    lines += ["", "## Every candidate that passed the gate (screening p50)", "",
              "| candidate | accuracy | " + " | ".join(f"batch {b}" for b in s["batch_sizes"]) + " |",
              "|---|---|" + "---|" * len(s["batch_sizes"])]
    for c in sorted(table["candidates"], key=lambda c: c["label"]):
        cells = " | ".join(_us(c["screen"][str(b)]["p50_ms"]) if str(b) in c["screen"] else "—"
                           for b in s["batch_sizes"])
        lines.append(f"| {c['label']} | {c['accuracy']:.4f} | {cells} |")
    lines += ["", "## Pruned or refused, and why", ""]
    by_reason: dict[str, list[str]] = {}
    for p in table["pruned"]:
        by_reason.setdefault(p["reason"], []).append(p["what"])
    for reason, whats in by_reason.items():
        lines.append(f"- {'; '.join(whats)}: {reason}")
    return "\n".join(lines) + "\n"


def _us(ms: float) -> str:
    return f"{ms * 1e3:,.1f} µs" if ms < 1 else f"{ms:,.3f} ms"

