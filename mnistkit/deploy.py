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
        if not (isinstance(c, dict) and isinstance(c.get("file"), str) and "/" not in c["file"]
                and c.get("backend") in BACKENDS and isinstance(c.get("options"), dict)
                and isinstance(c.get("threads"), int) and str(b).isdigit()):
            raise InvalidInputError(f"{path}: choice for batch {b} is malformed")
        check_sha256(base / c["file"], str(c.get("sha256")), path)
    return obj


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
