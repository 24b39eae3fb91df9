"""Comparing a runtime's logits with the reference's: values, not booleans. Torch-free.

The tolerances themselves, each with how it was measured, are rows of the format table
(mnistkit/formats): `formats.tolerance_for(format, device)`.

A Comparison is truthy only when it passes; NaN anywhere fails; it carries every statistic and the
smallest tolerance that would have passed, so a failure says by how much.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """What an artifact must meet against the PyTorch reference on the same inputs.

    max_abs: largest allowed |logit difference| (None: not checked, e.g. quantized models);
    min_agreement: smallest allowed fraction of identical top-1 predictions;
    max_accuracy_drop: largest allowed accuracy loss as a fraction (0.003 = 0.3 points), checked
    only when labels are real and there are at least `accuracy_min_images` images (None: not checked).
    """

    max_abs: float | None
    min_agreement: float = 1.0
    max_accuracy_drop: float | None = None
    why: str = ""
    # below this many images one flipped answer moves accuracy by > 0.02 points: the accuracy budget is
    # then reported but not enforced (verify runs slow backends on 500 images)
    accuracy_min_images: int = 5000


@dataclass
class Comparison:
    """Statistics of one runtime's logits against the reference's."""

    n: int
    max_abs: float
    max_rel: float
    mean_abs: float
    top1_agreement: float
    accuracy: float | None
    reference_accuracy: float | None
    accuracy_delta: float | None  # accuracy - reference_accuracy (negative: a loss)
    tolerance: Tolerance
    passed: bool
    failures: list[str]

    def __bool__(self) -> bool:
        return self.passed

    @property
    def would_pass_at(self) -> float:
        """The smallest max_abs tolerance that this result meets (NaN when it has NaNs)."""
        return self.max_abs

    def summary(self) -> str:
        s = f"max_abs {self.max_abs:.2e} (tol {_fmt_tol(self.tolerance.max_abs)}), top-1 {self.top1_agreement:.2%}"
        if self.accuracy is not None:
            s += f", acc {self.accuracy:.4f} ({self.accuracy_delta:+.4f})"
        return s

    def to_json(self) -> dict:
        d = asdict(self)
        d["tolerance"] = asdict(self.tolerance)
        return d


def _fmt_tol(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0e}"


def compare(reference: np.ndarray, logits: np.ndarray, tolerance: Tolerance,
            labels: np.ndarray | None = None) -> Comparison:
    """Compare `logits` with `reference` (both [N, C]); `labels` enable the accuracy statistics."""
    failures: list[str] = []
    ref = np.asarray(reference, np.float64)
    out = np.asarray(logits, np.float64)
    if ref.shape != out.shape:
        nan = float("nan")
        return Comparison(len(ref), nan, nan, nan, 0.0, None, None, None, tolerance, False,
                          [f"shape {list(out.shape)} differs from the reference's {list(ref.shape)}"])
    n = len(ref)
    diff = np.abs(out - ref)
    has_nan = not (np.isfinite(out).all() and np.isfinite(ref).all())
    max_abs = float("nan") if has_nan else float(diff.max(initial=0.0))
    mean_abs = float("nan") if has_nan else float(diff.mean()) if diff.size else 0.0
    denom = np.maximum(np.abs(ref), 1e-6)
    max_rel = float("nan") if has_nan else float((diff / denom).max(initial=0.0))
    agree = float((out.argmax(1) == ref.argmax(1)).mean()) if n else 1.0
    acc = ref_acc = delta = None
    if labels is not None and n:
        labels = np.asarray(labels)
        acc = float((out.argmax(1) == labels).mean())
        ref_acc = float((ref.argmax(1) == labels).mean())
        delta = acc - ref_acc
    if has_nan:
        failures.append("NaN or infinite values in the outputs")
    if tolerance.max_abs is not None and not (max_abs <= tolerance.max_abs):
        failures.append(f"max_abs {max_abs:.3e} > {tolerance.max_abs:.0e}")
    if not agree >= tolerance.min_agreement:
        failures.append(f"top-1 agreement {agree:.4%} < {tolerance.min_agreement:.2%}")
    if (tolerance.max_accuracy_drop is not None and delta is not None and n >= tolerance.accuracy_min_images
            and -delta > tolerance.max_accuracy_drop + 1e-12):
        failures.append(f"accuracy drop {-delta * 100:.2f} points > {tolerance.max_accuracy_drop * 100:.2f}")
    return Comparison(n, max_abs, max_rel, mean_abs, agree, acc, ref_acc, delta, tolerance,
                      not failures and not math.isnan(agree), failures)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def are_probabilities(scores: np.ndarray) -> bool:
    """True when every row already is a probability distribution (in [0, 1], summing to 1 within 1e-3): the
    scores of a model that ends in a softmax (scikit-learn's `probabilities`, a Keras head). Logits of a
    trained classifier are never all of that form, and a softmax over probabilities would flatten them
    (0.9 would show as ~0.22 among ten classes)."""
    return bool(scores.size and scores.min() >= 0 and scores.max() <= 1
                and np.abs(scores.sum(axis=1, dtype=np.float64) - 1).max() <= 1e-3)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Class probabilities from a model's scores: softmax of logits; probabilities pass through as they are."""
    return scores if are_probabilities(scores) else softmax(scores)
