"""Small file helpers: atomic writes (temp + rename) and hashing. Torch-free."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import InvalidInputError


def check_writable_dir(folder: Path, what: str = "output folder") -> None:
    """Create `folder` when its parent exists; raise InvalidInputError when it cannot be written."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"{what} {folder}: exists and is not a directory")
    if not folder.exists():
        if not folder.parent.exists():
            raise InvalidInputError(f"{what} {folder}: parent directory {folder.parent} does not exist")
        try:
            folder.mkdir()
        except OSError as exc:
            raise InvalidInputError(f"{what} {folder}: cannot create ({exc.strerror or exc})") from None
    try:  # a real write: os.access says yes to root on read-only or special filesystems
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InvalidInputError(f"{what} {folder}: not writable ({exc.strerror or exc})") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, else delete it.

    Readers never see a half-written file under the final name, and an interrupted write
    (exception, Ctrl-C) leaves the previous file, if any, untouched.
    """
    path = Path(path)
    check_writable_dir(path.parent if str(path.parent) else Path("."), f"{what} folder")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_public_dir(folder: Path) -> None:
    """mkdtemp makes 0700 folders; give a staged folder normal permissions before publishing it."""
    os.chmod(folder, 0o777 & ~current_umask())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: str | os.PathLike, default_name: str, expected: str, error=InvalidInputError):
    """Read a JSON file (or DIR/default_name); one-line `error` naming the file and what was expected."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    try:
        return path, json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such file (expected {expected})") from None
    except (OSError, ValueError) as exc:
        raise error(f"{path}: not a readable JSON file ({exc}); expected {expected}") from None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
