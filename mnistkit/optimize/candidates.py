"""`mnistkit optimize`, step 1: the plan. Every artifact of the export x every CPU runtime that opens it x threads
x the runtime options its backend file says matter (`BackendSpec.plan_options`); what cannot differ, or may not be
deployed, is pruned by reasoning, each with its reason for the report."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends import BACKENDS, backends_for
from ..formats import COMPUTE_TOLERANCE, FORMATS

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


def plan_candidates(targets, cores: int) -> tuple[list[Candidate], list[Pruned]]:
    """Candidates and what was pruned (with why) for the export's artifacts (plan.Target) on `cores` cores.

    Every CPU runtime that opens an artifact and may be deployed is planned at each thread count (one, for a
    runtime whose pool is fixed) with the option sets its backend file's `plan_options` gives."""
    from ..backends.base import PlanContext
    from ..formats.spec import resolve

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
