"""Deploy folders (written by `mnistkit optimize`): read, checked, and opened as the backend chosen for a batch size.

Torch-free and small: `predict` and `mnistkit.load` use it without importing the search.
"""

from __future__ import annotations

import math
from pathlib import Path

from .backends import BACKENDS, create_backend
from .errors import InvalidInputError

DEPLOY_FILE = "deploy.json"
DEPLOY_FORMAT_VERSION = 1


def is_deploy_folder(path) -> bool:
    """Whether `path` is a folder holding deploy.json (what `mnistkit optimize` writes)."""
    p = Path(path)
    return p.is_dir() and (p / DEPLOY_FILE).is_file()


def read_deploy(folder) -> dict:
    """deploy.json of a deploy folder, checked: its choices name files that are there with their sha256."""
    from .artifacts import check_sha256
    from .fileio import read_json

    path, obj = read_json(folder, DEPLOY_FILE, "a deploy folder written by mnistkit optimize")
    if not isinstance(obj, dict) or obj.get("format") != "mnistkit-deploy" or not isinstance(obj.get("choices"), dict):
        raise InvalidInputError(f"{path}: not a mnistkit deploy.json (no 'choices')")
    if not obj["choices"]:
        raise InvalidInputError(f"{path}: no choices recorded")
    base = Path(path).parent
    for b, c in obj["choices"].items():
        what = f"{path}: the choice for batch {str(b)[:20]!r}"
        if not (isinstance(b, str) and b.isascii() and b.isdigit() and 1 <= int(b) <= MAX_BATCH):
            raise InvalidInputError(f"{what}: the batch size must be a whole number from 1 to {MAX_BATCH}")
        if not (isinstance(c, dict) and isinstance(c.get("file"), str) and c.get("backend") in BACKENDS
                and isinstance(c.get("options"), dict) and type(c.get("threads")) is int and 1 <= c["threads"] <= 1024):
            raise InvalidInputError(f"{what} is malformed (expected file, a known backend, options and threads 1-1024)")
        allowed = BACKENDS[c["backend"]].options
        for key, value in c["options"].items():
            if key not in allowed:
                known = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
                raise InvalidInputError(f"{what}: unknown {c['backend']} option {str(key)[:40]!r} ({known})")
            if value not in allowed[key] or type(value) is not type(allowed[key][0]):
                raise InvalidInputError(f"{what}: option {key}={str(value)[:40]!r}; expected one of "
                                        f"{', '.join(map(str, allowed[key]))}")
        _check_member(base, c["file"], what)
        check_sha256(base / c["file"], str(c.get("sha256")), path)
    return obj


MAX_BATCH = 1 << 20


def _check_member(base: Path, name: str, what: str) -> None:
    """A file a deploy.json names: a plain name of a regular file inside the folder (a link may point only to
    another file of the same folder)."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise InvalidInputError(f"{what} names {name[:60]!r}; expected a file name inside the deploy folder")
    f = base / name
    try:
        inside = f.resolve(strict=True).parent == base.resolve()
    except (OSError, RuntimeError):
        raise InvalidInputError(f"{what}: {f} is missing or unreadable") from None
    if not inside:
        raise InvalidInputError(f"{what}: {f} is a link that leaves the deploy folder")
    if not f.is_file():
        raise InvalidInputError(f"{what}: {f} is not a regular file")


def deploy_choice(obj: dict, batch_size: int | None) -> tuple[int, dict]:
    """The recorded choice for `batch_size`: the nearest recorded batch size on a log scale (ties: the larger);
    None: the largest."""
    sizes = sorted(int(b) for b in obj["choices"])
    if batch_size is None:
        b = sizes[-1]
    else:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size {batch_size}: expected >= 1")
        b = min(sizes, key=lambda s: (abs(math.log(s) - math.log(batch_size)), -s))
    return b, obj["choices"][str(b)]


def load_deployment(folder, batch_size: int | None = None, deploy: dict | None = None, **overrides):
    """A loaded backend configured as deploy.json chose for `batch_size` (see deploy_choice); `deploy` is
    read_deploy(folder) when the caller has it already."""
    obj = deploy if deploy is not None else read_deploy(folder)
    b, c = deploy_choice(obj, batch_size)
    options = {**c["options"], **overrides}
    backend = create_backend(Path(folder) / c["file"], c["backend"], "cpu", threads=c["threads"], **options)
    backend.load()
    backend.deployment = {"batch_size": b, **c}  # what was chosen, for the caller to show
    return backend
