"""What verify and bench run: MODEL arguments expanded into artifact files, and the (artifact x backend
x device) cases the registry says can run. Torch-free. Neither caller names a backend: the registry's
`opens` and `devices` decide, and the --backends/--devices filters are checked here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .artifacts import detect_kind, manifest_artifacts, read_manifest, recorded_format, recorded_reference
from .backends import BACKENDS, backends_for
from .errors import ArtifactError, InvalidInputError
from .formats import DEVICES, REFERENCE_KIND, REFERENCE_SOURCES


@dataclass(frozen=True)
class Target:
    path: Path
    kind: str
    format: str  # what it is judged as (formats.format_for), read without a runtime


@dataclass(frozen=True)
class Case:
    target: Target
    backend: str
    device: str


def check_choices(backends=None, devices=None) -> None:
    """--backends and --devices against the registry: an unknown name is a usage error before any work."""
    for b in backends or ():
        if b not in BACKENDS:
            raise InvalidInputError(f"--backends: unknown backend {b!r}; expected from {', '.join(BACKENDS)}")
    for d in devices or ():
        if d not in DEVICES:
            raise InvalidInputError(f"--devices: unknown device {d!r}; expected from {', '.join(DEVICES)}")


def target(path) -> Target:
    path = Path(path)
    kind = detect_kind(path)
    return Target(path, kind, recorded_format(path, kind))


def expand(models) -> tuple[list[Target], Path | None]:
    """MODEL arguments -> (artifact targets, what names the PyTorch reference: a checkpoint among them, or
    an export folder whose manifest records a checkpoint or state_dict source, given or holding every
    artifact given; None if neither).

    Export folders (or their manifest.json) are expanded through the manifest, every file checked
    against its sha256; a file given twice is one target.
    """
    files: list[Path] = []
    reference: Path | None = None
    for m in models:
        p = Path(m)
        if p.is_dir() or p.name == "manifest.json":
            folder = p if p.is_dir() else p.parent
            manifest = read_manifest(p)
            if reference is None and (manifest.get("source") or {}).get("kind") in REFERENCE_SOURCES:
                reference = folder
            files.extend(manifest_artifacts(p))
        else:
            if not p.exists():
                raise ArtifactError(f"{p}: no such file")
            files.append(p)
    targets = [target(f) for f in dict.fromkeys(files)]
    if reference is None or reference.is_dir():  # a checkpoint given by name names the reference
        reference = next((t.path for t in targets if t.kind == REFERENCE_KIND), reference)
    if reference is None and targets:  # artifacts of one export folder: the source its manifest records
        folders = {recorded_reference(t.path) for t in targets}
        if len(folders) == 1 and None not in folders:
            reference = folders.pop()
    return targets, reference


def cases(targets: list[Target], backends=None, devices=DEVICES) -> tuple[list[Case], list[str]]:
    """Every (target, backend, device) the registry can run, filtered by `backends`/`devices`; and why each
    other combination was not run (a backend outside --backends, a device a backend does not support)."""
    out: list[Case] = []
    not_run: list[str] = []
    for t in targets:
        openers = backends_for(t.kind)
        for name in openers:
            if backends and name not in backends:
                not_run.append(f"{t.path.name} ({t.kind}) runs on {', '.join(openers)}, "
                               f"not on --backends {','.join(backends)}")
                continue
            for device in devices:
                if device not in BACKENDS[name].devices:
                    not_run.append(f"{name} does not run on {device}")
                    continue
                out.append(Case(t, name, device))
    return out, not_run
