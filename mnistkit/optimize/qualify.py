"""`mnistkit optimize`, step 2: the gate. Every candidate runs the full test split and must pass its format's parity
tolerance against PyTorch and the accuracy budget (`--max-accuracy-drop`) before it is timed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..backends import create_backend
from ..compare import compare
from ..errors import first_line
from ..formats import tolerance_for
from .candidates import Candidate, Pruned

CHUNK = 1000  # images per call in the accuracy gate


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


def qualify(folder: Path, c: Candidate, images, labels, reference, budget_drop: float, pruned: list[Pruned]):
    """Load the candidate and run the full test split: a Scored when it passes parity and the accuracy
    budget; else a Pruned entry saying why (and None)."""
    from ..capture import captured_output

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
