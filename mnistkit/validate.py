"""Export validation: each new artifact, loaded in its own runtime, against the PyTorch reference on
the real test split, by its format row (tolerance, accuracy gate, batch-axis check).

Results are values: a Validation is one ✓/✗ line (rendered by ui.py) with its Comparison.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .compare import Comparison, compare
from .errors import ExportError, first_line
from .formats import DEFAULT_ACCURACY_BUDGET, KINDS, FormatSpec, tolerance_for


@dataclass
class Validation:
    format: str
    file: str
    backend: str
    passed: bool
    comparison: Comparison | None
    images: int
    data: str  # what the images were
    batch_sizes: list[int] = field(default_factory=list)  # dynamic batch sizes proven
    error: str | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["comparison"] = self.comparison.to_json() if self.comparison is not None else None
        return d

    def manifest_entry(self) -> dict:
        """What the manifest records of this validation."""
        c = self.comparison
        return {"passed": self.passed, "max_abs": c.max_abs if c is not None else None,
                "top1_agreement": c.top1_agreement if c is not None else None,
                "accuracy": c.accuracy if c is not None else None,
                "reference_accuracy": c.reference_accuracy if c is not None else None,
                "images": self.images, "data": self.data}


def prove_batch_axis(backend, fmt: FormatSpec, images: np.ndarray, logits: np.ndarray) -> list[int]:
    """Run the same images in calls of each size of the format's BatchCheck; return the sizes proven.
    Raises ExportError at the first size whose answers differ from the artifact's own at batch 1000."""
    check = fmt.batch_check
    proven = []
    for b in check.sizes:
        calls = max(1, -(-check.images // b))
        idx = np.arange(b * calls) % len(images)
        out = np.concatenate([backend.run(images[idx[i:i + b]]) for i in range(0, len(idx), b)])
        expected = logits[idx]
        if out.shape != expected.shape:
            raise ExportError(f"batch {b}: output {list(out.shape)}, expected {list(expected.shape)}")
        agree = float((out.argmax(1) == expected.argmax(1)).mean())
        same = agree >= check.min_agreement and (
            check.atol is None or np.allclose(out, expected, atol=check.atol, rtol=0))
        if not same:
            raise ExportError(f"batch {b}: outputs differ from the same model's at batch 1000 "
                              f"(top-1 agreement {agree:.1%} over {len(idx)} images)")
        proven.append(b)
    return proven


def validate_artifact(path: Path, fmt: FormatSpec, images, labels, reference, data_desc: str,
                      budget: float = DEFAULT_ACCURACY_BUDGET) -> Validation:
    """Validate one artifact on CPU with its kind's default backend."""
    from .backends import create_backend

    backend_name = KINDS[fmt.kind].default_backend
    tol = tolerance_for(fmt.name, "cpu")
    if fmt.gated:
        tol = dataclasses.replace(tol, max_accuracy_drop=budget)
        if labels is None:
            return Validation(fmt.name, path.name, backend_name, False, None, len(images), data_desc,
                              error="the accuracy gate needs labelled test images (pass --dataset/--data-dir)")
    try:
        with create_backend(path, backend_name, "cpu", kind=fmt.kind) as backend:
            logits = backend.run_chunked(images)
            proven = prove_batch_axis(backend, fmt, images, logits) if fmt.batch_check else []
    except Exception as exc:  # a validation failure is a result, reported with all the others
        return Validation(fmt.name, path.name, backend_name, False, None, len(images), data_desc,
                          error=first_line(exc)[:300])
    comparison = compare(reference, logits, tol, labels)
    return Validation(fmt.name, path.name, backend_name, bool(comparison), comparison, len(images), data_desc, proven)
