"""Small file helpers: atomic writes (temp + rename) and hashing. Torch-free."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
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


MAX_JSON_BYTES = 64 << 20  # manifests and bench results are KBs to a few MBs


def check_input_file(path: Path, expected: str, error=InvalidInputError) -> int:
    """A file given as input must exist, be a file and not be empty; returns its size. One `error` line
    naming the file and what was expected otherwise."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc}); expected {expected}") from None
    import stat

    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a directory, expected {expected}")
    if not stat.S_ISREG(st.st_mode):
        what = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a character device" if stat.S_ISCHR(st.st_mode)
                else "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "not a file")
        raise error(f"{path}: is {what}, not a regular file; expected {expected}")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: cannot read it (permission denied); expected {expected}")
    if st.st_size == 0:
        raise error(f"{path}: empty file, expected {expected}")
    return st.st_size


def read_json(path: str | os.PathLike, default_name: str, expected: str, error=InvalidInputError):
    """Read a JSON file (or DIR/default_name); one-line `error` naming the file and what was expected."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise error(f"{path}: {path.stat().st_size} bytes; expected {expected} (at most {MAX_JSON_BYTES >> 20} MiB)")
        return path, json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such file (expected {expected})") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise error(f"{path}: not a readable JSON file ({str(exc)[:160]}); expected {expected}") from None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Folders that are replaced whole


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE). False where unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl without it
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    import errno

    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a filesystem without exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def staging_dir(target: Path, what: str = "export") -> Path:
    """A hidden folder beside `target` to build its replacement in: `.NAME.export.PID.XXXX`.

    Staging folders of processes that no longer run (killed with SIGKILL, a power cut) are removed
    first: the PID in the name tells whose they are.
    """
    import shutil

    target = Path(target)
    prefix = f".{target.name}.{what}."
    for old in target.parent.glob(prefix + "*"):
        try:
            pid = int(old.name[len(prefix):].split(".", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.", dir=target.parent))
    make_public_dir(folder)
    return folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def replace_dir(new: Path, target: Path) -> None:
    """Put the folder `new` in place of `target` (which may not exist), then delete the old one.

    Readers see either the whole old folder or the whole new one: an exchange is one atomic
    renameat2 call on Linux; elsewhere two renames with the old folder kept under a hidden name until
    the new one is in place.
    """
    import shutil

    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        return
    if _renameat2_exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old folder
        return
    old = target.parent / f".{target.name}.old.{os.getpid()}.{time.time_ns()}"
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
