"""The gate for ExecuTorch programs (.pte): read the flatbuffer before the runtime does.

Checked, torch-free: every execution plan's operators (ATen kernels and ExecuTorch's own, by name), its
delegates (XNNPACK only), its instructions (no JumpFalseCall: a jump is how a program loops), and the
memory the runtime allocates for it when a method loads (the planned buffers) against the model budget.
The XNNPACK delegate's own blob is opaque here: its workspace is bounded by `memory_window` at load.
"""

from __future__ import annotations

from . import Refused, check_budget, check_op, mapped
from .flatbuf import FlatbufferError, Table
from .torch_ops import ATEN_OPS, EXECUTORCH_DELEGATES, EXECUTORCH_OPS

_JUMP_FALSE = 4  # InstructionArguments.JumpFalseCall (program.fbs)
_ALLOWED = frozenset({*EXECUTORCH_OPS, *(f"aten::{op}" for op in ATEN_OPS)})


def check(path, label=None) -> None:
    label = label or path
    with mapped(path, label) as buf:
        _check(buf, label)


def _check(buf, label) -> None:
    try:
        plans = Table.root(buf).tables(1)
        if not plans:
            raise Refused(label, "an ExecuTorch program with no method")
        planned = 0
        for plan in plans:
            method = plan.string(0) or "?"
            for op in plan.tables(6):
                name = op.string(0) or ""
                check_op(label, name, _ALLOWED, f"in method {method}")
            for delegate in plan.tables(7):
                backend = delegate.string(0) or ""
                if backend not in EXECUTORCH_DELEGATES:
                    raise Refused(label, f"method {method} delegates to {backend!r}; mnistkit runs "
                                         f"{', '.join(sorted(EXECUTORCH_DELEGATES))} programs")
            for chain in plan.tables(5):
                for instruction in chain.tables(2):
                    if instruction.scalar(0) == _JUMP_FALSE:
                        raise Refused(label, f"method {method} jumps (JumpFalseCall): control flow that can loop; "
                                             "mnistkit runs classifiers without it")
            sizes = plan.scalars(8, "<q")
            if any(s < 0 for s in sizes):
                raise Refused(label, f"method {method} plans a buffer of negative size")
            planned += sum(sizes)
    except FlatbufferError as exc:
        raise Refused(label, f"a corrupt ExecuTorch flatbuffer ({exc})") from None
    check_budget(label, planned, "its methods' planned buffers")
