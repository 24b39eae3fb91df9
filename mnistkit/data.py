"""Datasets of the MNIST family: a validated IDX reader, folder resolution, download, constants.

Torch-free on purpose: the reader is used on the inference path (predict on IDX files), where torch
is not installed. torchvision's own readers expect its folder layout and uncompressed files, fail on
bad files with bare AssertionErrors and would import torch, so mnistkit reads IDX itself.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import sys
import urllib.parse
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, require

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class DatasetSpec:
    """What mnistkit knows about one dataset of the family."""

    name: str
    torchvision_class: str  # also the folder name torchvision uses: ROOT/<class>/raw
    labels: tuple[str, ...]
    # Per-channel mean/std of the training split's pixels scaled to [0, 1].
    mean: float
    std: float
    recipe: str  # preprocessing recipe for images from elsewhere (see preprocess.py)
    system_dirs: tuple[Path, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist", "MNIST", tuple(str(d) for d in range(10)), 0.1307, 0.3081, "digits"
    ),
    "fashion-mnist": DatasetSpec(
        "fashion-mnist",
        "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        0.2860,
        0.3530,
        "objects",
        (DEBIAN_FASHION_DIR,),
    ),
    # KMNIST was built to MNIST's format (centred characters in 28x28), so it shares the digit recipe.
    "kmnist": DatasetSpec(
        "kmnist", "KMNIST", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        0.1918, 0.3483, "digits",
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}"
        ) from None


@dataclass
class Split:
    """One split: uint8 images [N,28,28] in the dataset's polarity and int64 labels [N]."""

    images: np.ndarray
    labels: np.ndarray
    source: Path  # folder the files came from

    def __len__(self) -> int:
        return len(self.labels)


# ---------------------------------------------------------------------------------------------
# The IDX reader


# The family's files are at most 47 MB (60,000 images); EMNIST Digits, the largest 10-class IDX set,
# is 188 MB. A header that declares more is refused before anything is read or allocated, so a file
# that lies about its size costs at most this much memory. The same limit holds one Parquet row group's
# images (score). MNISTKIT_MAX_INPUT_BYTES raises it (MNISTKIT_MAX_IDX_BYTES, its older name, still works).
MAX_INPUT_BYTES = 256 << 20
_CHUNK = 1 << 20


def max_input_bytes() -> int:
    name = "MNISTKIT_MAX_INPUT_BYTES" if os.environ.get("MNISTKIT_MAX_INPUT_BYTES") else "MNISTKIT_MAX_IDX_BYTES"
    env = os.environ.get(name)
    try:
        value = int(float(env)) if env else MAX_INPUT_BYTES
    except ValueError:
        raise DataError(f"{name}={env!r}: expected a number of bytes") from None
    if value <= 0:
        raise DataError(f"{name}={env!r}: expected a positive number of bytes")
    return value


def _read_exact(stream, n: int) -> bytearray:
    """Up to n bytes (fewer only at the end of the data), read in chunks."""
    out = bytearray()
    while len(out) < n:
        block = stream.read(min(_CHUNK, n - len(out)))
        if not block:
            break
        out += block
    return out


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a native-endian numpy array.

    Checks the magic number (two zero bytes, a known type code, 1-4 dimensions), that no dimension
    is zero, that the declared size is under the limit (max_input_bytes), and that the payload holds
    exactly what the dimensions say. Decompression streams: the header is read first and the body
    never beyond the size the header declares plus one byte, so a gzip bomb costs no more memory than
    an honest file of its declared size. Raises DataError.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with f:
        gz = f.read(2) == b"\x1f\x8b"  # gzip magic, whatever the suffix says
        f.seek(0)
        try:
            if gz:
                with gzip.GzipFile(fileobj=f, mode="rb") as stream:
                    return _parse_idx(path, stream, None)
            return _parse_idx(path, f, os.fstat(f.fileno()).st_size)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def idx_header(path: Path, stream) -> tuple[np.dtype, tuple[int, ...], int]:
    """(big-endian dtype, dimensions, header length) from the start of an IDX stream, checked: the magic
    number (two zero bytes, a known type code, 1-4 dimensions), a complete header, no zero dimension.
    Raises DataError. Reads nothing past the header."""
    head = _read_exact(stream, 4)
    if len(head) == 0:
        raise DataError(f"{path}: empty file, expected an IDX file")
    if len(head) < 4:
        raise DataError(f"{path}: {len(head)} bytes is too short for an IDX header (4+ bytes)")
    zero, code, ndim = head[:2], head[2], head[3]
    if zero != b"\x00\x00" or code not in IDX_DTYPES or not 1 <= ndim <= 4:
        raise DataError(
            f"{path}: not an IDX file (magic number 0x{head.hex()}; expected 0x0000, a type "
            f"code in {{{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}}} and 1-4 dimensions)"
        )
    header = 4 + 4 * ndim
    raw_dims = _read_exact(stream, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: truncated header ({4 + len(raw_dims)} bytes, expected {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw_dims, ">u4"))
    if 0 in dims:
        raise DataError(f"{path}: a dimension is zero ({'x'.join(map(str, dims))}); no data")
    return IDX_DTYPES[code], dims, header


def _parse_idx(path: Path, stream, size: int | None) -> np.ndarray:
    """The IDX reader proper, on a stream; `size` is the file's length when it is not compressed."""
    dtype, dims, header = idx_header(path, stream)
    payload = int(np.prod(dims, dtype=object)) * dtype.itemsize
    shape = "x".join(map(str, dims))
    limit = max_input_bytes()
    if payload > limit:
        raise DataError(f"{path}: header declares {shape} {dtype.name} values ({payload} bytes), over the "
                        f"{limit}-byte limit (MNISTKIT_MAX_INPUT_BYTES raises it)")
    expected = header + payload
    if size is not None and size != expected:  # an uncompressed file says its length up front
        what = "truncated" if size < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: {size} bytes, expected {expected} for {shape} {dtype.name} values")
    body = _read_exact(stream, payload)
    if len(body) < payload:
        raise DataError(f"{path}: truncated: {header + len(body)} bytes, expected {expected} for {shape} "
                        f"{dtype.name} values")
    if stream.read(1):  # never inflate past the declared size: one byte tells
        raise DataError(f"{path}: has trailing bytes after the {expected} its header declares ({shape} "
                        f"{dtype.name} values)")
    arr = np.frombuffer(body, dtype).reshape(dims)  # owns `body` (writable): no copy for uint8
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file ([N,28,28] uint8) and a labels file ([N]) and check they agree."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: images of shape {list(images.shape)} {images.dtype}, "
            f"expected [N,28,28] uint8"
        )
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: labels of shape {list(labels.shape)}, expected [N]")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path.name} holds {len(images)} images but {labels_path.name} holds "
            f"{len(labels)} labels; expected equal counts"
        )
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Finding the files


def cache_dir() -> Path:
    """Where downloads go: $MNISTKIT_DATA, else the user's cache dir."""
    env = os.environ.get("MNISTKIT_DATA")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnistkit"


def _find_file(folder: Path, base: str) -> Path | None:
    for name in (base, base + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def _split_files_in(folder: Path, split: str) -> tuple[Path, Path] | None:
    imgs, lbls = (_find_file(folder, b) for b in SPLIT_FILES[split])
    return (imgs, lbls) if imgs and lbls else None


def candidate_dirs(spec: DatasetSpec, data_dir: str | os.PathLike | None) -> list[Path]:
    """Folders searched for a dataset's files, in order."""
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        return [d, d / spec.torchvision_class / "raw", d / "raw"]
    c = cache_dir()
    return [c / spec.torchvision_class / "raw", c / spec.name, *spec.system_dirs]


def find_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first folder holding both splits of `name`, or None. Never downloads."""
    spec = dataset_spec(name)
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        if not d.exists():
            raise DataError(f"--data-dir {d}: no such directory")
        if not d.is_dir():
            raise DataError(f"--data-dir {d}: not a directory")
    for folder in candidate_dirs(spec, data_dir):
        if all(_split_files_in(folder, s) for s in SPLIT_FILES):
            return folder
    return None


def load_split(
    name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
    download: bool = True, log=None,
) -> Split:
    """Load one split of a dataset as numpy arrays.

    Searches `data_dir` (flat, or torchvision's ROOT/<Class>/raw layout); without it, the download
    cache and known system folders (Debian's dataset-fashion-mnist). When nothing is found and no
    `data_dir` was given, downloads with torchvision into the cache (if `download`).
    """
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; expected 'train' or 'test'")
    spec = dataset_spec(name)
    folder = find_dataset(name, data_dir)
    if folder is None:
        if data_dir is not None:
            names = ", ".join(f"{b}[.gz]" for s in SPLIT_FILES.values() for b in s)
            raise DataError(
                f"--data-dir {data_dir}: no {name} files found (looked for {names} there and in "
                f"{spec.torchvision_class}/raw/)"
            )
        if not download:
            raise DataError(_not_found_message(spec))
        folder = download_dataset(name, log=log)
    images, labels = read_idx_pair(*_split_files_in(folder, split))
    if labels.size and (labels.min() < 0 or labels.max() >= len(spec.labels)):
        raise DataError(
            f"{folder}: labels range {labels.min()}..{labels.max()}, expected 0..{len(spec.labels) - 1}"
        )
    return Split(images, labels, folder)


def training_splits(name: str, data_dir=None, log=None) -> tuple[Split, Split]:
    """The training split (downloaded when absent and no --data-dir was given) and the test split."""
    return load_split(name, "train", data_dir, log=log), load_split(name, "test", data_dir, download=False)


def _not_found_message(spec: DatasetSpec) -> str:
    hint = "pass --data-dir DIR with the four IDX files"
    if spec.name != "fashion-mnist":
        hint += (", or use --dataset fashion-mnist with Debian's dataset-fashion-mnist package "
                 "(apt-get install dataset-fashion-mnist)")
    else:
        hint += ", or install Debian's dataset-fashion-mnist package"
    return f"{spec.name} not found locally and could not be downloaded; {hint}"


# ---------------------------------------------------------------------------------------------
# Download (torchvision), with a fast no-network check


class DownloadError(DataError):
    """A download was needed and failed; `reason` is the short cause."""

    def __init__(self, message: str, reason: str):
        super().__init__(f"{message} ({reason})")
        self.reason = reason


def _reachable(url: str, timeout: float) -> bool:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _stdout_to_stderr():
    """torchvision prints download progress to stdout; keep stdout clean for --json."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def download_dataset(name: str, root: Path | None = None, timeout: float = 3.0, log=None) -> Path:
    """Download both splits with torchvision into ROOT/<Class>/raw and return that folder.

    Fails within seconds when no mirror is reachable (a TCP connect with `timeout` per mirror),
    with one line that says what to do instead.
    """
    spec = dataset_spec(name)
    root = Path(root) if root else cache_dir()
    datasets = require("torchvision.datasets")
    cls = getattr(datasets, spec.torchvision_class)
    mirrors = list(getattr(cls, "mirrors", []) or [])
    if not mirrors:  # torchvision classes without mirrors list full URLs in resources
        mirrors = [r[0] for r in cls.resources]
    if not any(_reachable(m, timeout) for m in mirrors):
        raise DownloadError(_not_found_message(spec), f"no download mirror reachable: {mirrors[0]}")
    if log:
        log(f"downloading {name} with torchvision into {root} ...")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the download cache {root}: {exc.strerror or exc}; "
                        f"set MNISTKIT_DATA to a writable folder") from None
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        with _stdout_to_stderr():
            for train in (True, False):
                cls(root=str(root), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError variously
        raise DownloadError(_not_found_message(spec), f"{exc.__class__.__name__}: {exc}") from None
    finally:
        socket.setdefaulttimeout(old)
    folder = root / spec.torchvision_class / "raw"
    if not all(_split_files_in(folder, s) for s in SPLIT_FILES):
        raise DataError(f"download of {name} finished but {folder} lacks the IDX files")
    if log:
        log(f"downloaded {name} to {folder}")
    return folder


def resolve_demo_dataset(log=None) -> tuple[str, str]:
    """Pick the demo's dataset: MNIST when cached or downloadable, else Fashion-MNIST.

    Returns (dataset name, reason).
    """
    if find_dataset("mnist") is not None:
        return "mnist", "MNIST found in the cache"
    try:
        download_dataset("mnist", log=log)
        return "mnist", "MNIST downloaded"
    except DataError as exc:  # no network (or no torchvision): fall back
        why = getattr(exc, "reason", None) or str(exc)
        if find_dataset("fashion-mnist") is not None:
            return "fashion-mnist", f"MNIST is not cached and could not be downloaded ({why})"
        raise DataError(
            "the demo needs MNIST (not cached, download failed) or Fashion-MNIST "
            "(apt-get install dataset-fashion-mnist); neither is available"
        ) from None


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write an array as an IDX file (gzipped when the name ends in .gz or `compress`)."""
    path = Path(path)
    arr = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    code = codes.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"{path}: cannot write dtype {arr.dtype} as IDX")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload = header + arr.astype(IDX_DTYPES[code], copy=False).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6)
    path.write_bytes(payload)
