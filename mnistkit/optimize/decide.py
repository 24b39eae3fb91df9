"""`mnistkit optimize`, steps 3 and 4: what a timing keeps, the noise band, and the decision, a pure function of the
measurements: among the candidates within the measured noise band of the fastest, the simplest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bench import latency_stats
from .candidates import Candidate
from .defaults import Default
from .qualify import Scored

SCREEN_KEEP = 1.5  # screened p50 within this of the fastest: timed again, interleaved (screens are ~0.1 s)
MAX_FINAL = 8  # at most this many survivors per batch size in the interleaved round
TOP = 3  # re-measured with the defaults before deciding
MIN_NOISE, MAX_NOISE = 0.02, 0.05  # the band of "same speed": measured, clamped (1.05x is the promise)


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


def decision(b: int, top: list[Scored], finalists: list[Scored], defaults: list[Default], ref_acc: float):
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


def candidate_row(s: Scored, batch_sizes) -> dict:
    return {**s.candidate.to_json(), "input_form": s.input_form, "accuracy": s.accuracy,
            "accuracy_delta": s.accuracy_delta, "top1_agreement": s.agreement, "max_abs": s.max_abs,
            "screen": {str(b): vars(s.screen[b]) for b in batch_sizes if b in s.screen},
            "final": {str(b): vars(s.final[b]) for b in batch_sizes if b in s.final},
            "decide": {str(b): vars(s.decide[b]) for b in batch_sizes if b in s.decide}}
