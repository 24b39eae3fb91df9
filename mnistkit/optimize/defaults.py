"""`mnistkit optimize`: each runtime's own defaults, the calls a user writes in three lines (its bare baseline with
the runtime's own configuration, BackendSpec.bare_baseline / defaults_format), which the choice must beat; kept
only where they give PyTorch's answers."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..backends import BACKENDS
from ..compare import compare
from ..errors import first_line
from ..formats import DEFAULT_ACCURACY_BUDGET, FORMATS, tolerance_for
from .candidates import Candidate
from .qualify import CHUNK


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
    from ..formats.spec import resolve

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


def gate_defaults(defaults: list[Default], folder: Path, images, reference, notes: list[str], labels=None,
                   budget_drop: float = DEFAULT_ACCURACY_BUDGET) -> list[Default]:
    """The defaults that give PyTorch's answers (on 1,000 test images; by their file's tolerance, or by the
    tolerance of what they compute in on this CPU, e.g. OpenVINO's bf16): timing a default that computes something
    else would compare nothing."""
    from ..pixels import pixels_to_float

    kept = []
    sample = np.ascontiguousarray(images[:CHUNK])
    for d in defaults:
        try:
            info_mean, info_std = file_norm(folder / d.file)
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


def file_norm(path: Path) -> tuple[float, float]:
    from ..artifacts import detect_kind, info_from_metadata, kind_metadata

    kind = detect_kind(path)
    info = info_from_metadata(path, kind, kind_metadata(path, kind))
    return info.mean, info.std


def twin_of_default(c: Candidate, defaults: list[Default], cores: int) -> bool:
    """Whether `c` is mnistkit's configuration of a runtime default: the same file on that runtime, on every
    core, with no changed option."""
    return c.threads == cores and any(
        d.file == c.file and d.backend == c.backend and c.opts == ({"precision": d.precision} if d.precision != "fp32" else {})
        for d in defaults)
