"""`mnistkit optimize`: the search itself, step by step within its time budget (the package's notes)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..bench import time_calls, time_interleaved
from ..deploy import DEPLOY_FORMAT_VERSION
from ..errors import InvalidInputError, MnistkitError
from ..formats import DEFAULT_ACCURACY_BUDGET
from ..pixels import native_batch
from .candidates import plan_candidates
from .decide import MAX_FINAL, SCREEN_KEEP, TOP, Timing, candidate_row, decision
from .defaults import gate_defaults, runtime_defaults, twin_of_default
from .folders import check_deploy_target, export_folder, write_deploy
from .qualify import CHUNK, Scored, qualify

DEFAULT_BATCH_SIZES = (1, 64, 1024)
DEFAULT_BUDGET = 60.0
DEFAULT_DEPLOY_DIR = "deploy"
MIN_BUDGET = 10.0
# Seconds kept for writing the deploy folder (the plot imports matplotlib: ~1 s) and overruns (a search used 59.2 s
# of 60 with 3 s kept); of each batch size's share of
# the rest, 30 % screens, 25 % the interleaved round, 10 % the decision, 4 % the checked call: the remaining
# third is what warm-ups, settling and compiling new shapes took (measured: 46.6 s of timing for 46 s planned
# at 82 %)
WRITE_RESERVE = 5.0


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
    from ..imagesets import model_split
    from ..environment import fingerprint, usable_cores
    from ..plan import expand
    from ..source import data_for, reference_for

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
    from ..backends import reference_backend

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
            s = qualify(folder, c, images, labels, reference, budget_drop, pruned)
            if s is not None:
                scored.append(s)
            step(f"gate {c.label}")
        if not scored:
            raise MnistkitError(f"{folder}: no candidate passed parity and the accuracy budget: "
                                + "; ".join(p.reason for p in pruned[-3:]))
        defaults, default_notes = runtime_defaults(folder, files)
        defaults = gate_defaults(defaults, folder, images, reference, default_notes, labels, budget_drop)
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
            top += [s for s in scored if s not in top and twin_of_default(s.candidate, defaults, cores)]
            calls = [_call(s.backend, x_for[s.input_form]) for s in top]
            calls += [d.make(x_for["float"]) for d in defaults]
            decide_s = min(0.5, max(0.05, 0.1 * share / len(calls)))
            timed = time_interleaved(calls, 0.02, decide_s, 10, block=min(0.2, decide_s / 2), settle=0.02)
            for s, secs in zip(top, timed):
                s.decide[b] = Timing.of(secs)
            for d, secs in zip(defaults, timed[len(top):]):
                d.decide[b] = Timing.of(secs)
            step(f"batch {b}: top {len(top)} and the defaults interleaved")
            choices[str(b)], rounds[str(b)] = decision(b, top, finalists, defaults, ref_acc)
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
        table = {"candidates": [candidate_row(s, batch_sizes) for s in scored],
                 "defaults": [{"name": d.name, "file": d.file,
                               "decide": {str(b): vars(t) for b, t in d.decide.items()}} for d in defaults],
                 "pruned": [vars(p) for p in pruned], "rounds": rounds}
        write_deploy(out_dir, folder, result, table)
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
