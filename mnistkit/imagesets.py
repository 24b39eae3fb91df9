"""The two data layouts beside the IDX files that small vision models are trained from, read as images at a
model's own geometry (C x H x W) through its recorded transforms (steps.apply_steps). Torch-free.

- An image folder: one sub-folder per class, torchvision's `ImageFolder` layout (`DIR/<class>/*.png`), or
  `DIR/train/<class>/` and `DIR/test/<class>/` for the two splits.
- `.npy` arrays: `DIR/test-images.npy` (uint8 [N,H,W] or [N,H,W,C]) and `DIR/test-labels.npy` (integers [N]);
  `train-` for the training split.

Every file is untrusted: images go through preprocess.open_image's size checks, arrays through its .npy checks
(no pickles, a shape the file really holds), and the total is held to the input limit (`cap`: data passes
max_input_bytes).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .data import Split
from .errors import DataError
from .pixels import DIGITS, Geometry, geometry_of_input
from .steps import apply_steps

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SPLIT_FOLDERS = {"train": ("train", "training"), "test": ("test", "val", "valid", "validation")}


# ---------------------------------------------------------------------------------------------
# Data folders: an image folder, or .npy arrays


def npy_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    imgs, lbls = folder / f"{split}-images.npy", folder / f"{split}-labels.npy"
    return (imgs, lbls) if imgs.is_file() and lbls.is_file() else None


def _class_dirs(folder: Path) -> list[Path]:
    try:
        subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [p for p in subs if any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir() if f.is_file())]


def image_folder(folder: Path, split: str) -> Path | None:
    """The ImageFolder-layout folder holding `split`: DIR/<split name>/<class>/, else DIR/<class>/ itself."""
    for name in SPLIT_FOLDERS[split]:
        if _class_dirs(folder / name):
            return folder / name
    return folder if _class_dirs(folder) else None


def class_names(data_dir) -> list[str] | None:
    """The sorted class folder names of an image folder's test (else train) split; None for other layouts."""
    d = Path(data_dir).expanduser()
    folder = image_folder(d, "test") or image_folder(d, "train") if d.is_dir() else None
    return sorted(p.name for p in _class_dirs(folder)) if folder else None


def has_image_data(data_dir) -> bool:
    """Whether `data_dir` holds an image folder or .npy arrays (rather than IDX files)."""
    if data_dir is None:
        return False
    d = Path(data_dir).expanduser()
    return d.is_dir() and any(npy_files(d, s) or image_folder(d, s) for s in ("train", "test"))


def _label_indices(names: list[str], labels: list[str] | None, where: Path) -> dict[str, int]:
    """Class folder name -> class index: by the model's labels where every folder is one of them, else in sorted
    order (torchvision's ImageFolder), which must give as many classes as the model has."""
    if labels and all(n in labels for n in names):
        return {n: labels.index(n) for n in names}
    if labels and len(names) > len(labels):
        raise DataError(f"{where}: {len(names)} class folders ({', '.join(names[:5])}...) but the model has "
                        f"{len(labels)} classes")
    return {n: i for i, n in enumerate(sorted(names))}


def read_image_folder(folder: Path, geometry: Geometry, steps, labels, limit: int | None = None,
                      cap: int = 256 << 20):
    """(uint8 images at `geometry`, int64 labels) of an ImageFolder-layout folder, each image through the steps;
    more than `cap` bytes of images is refused."""
    from .preprocess import open_image

    classes = _class_dirs(folder)
    index = _label_indices([c.name for c in classes], labels, folder)
    files = sorted((f, index[c.name]) for c in classes for f in c.iterdir()
                   if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:  # an even spread over the classes, not the first class only
        order = np.random.default_rng(0).permutation(len(files))[:limit]
        files = [files[i] for i in sorted(order)]
    images, targets, total = [], [], 0
    for f, label in files:
        img, _ = open_image(f)
        with img:  # as torchvision's ImageFolder loads it: RGB, then the script's transforms
            arr = np.asarray(img.convert("RGB"))
        images.append(apply_steps(arr[None], steps, geometry, str(f))[0])
        targets.append(label)
        total += images[-1].nbytes
        if total > cap:
            raise DataError(f"{folder}: its images are over the {cap >> 20} MB input limit "
                            "(MNISTKIT_MAX_INPUT_BYTES raises it)")
    if not images:
        raise DataError(f"{folder}: no images (expected one sub-folder per class holding PNG/JPEG/BMP files)")
    return np.stack(images), np.asarray(targets, np.int64)


def read_npy_split(images_path: Path, labels_path: Path, geometry: Geometry, steps, num_classes: int | None,
                   limit: int | None = None, cap: int = 256 << 20):
    """(uint8 images at `geometry`, int64 labels) of a pair of .npy arrays, checked; the first `limit`; an
    array over `cap` bytes is refused before it is read."""
    from .errors import InvalidInputError
    from .preprocess import read_npy

    for p in (images_path, labels_path):
        if p.stat().st_size > cap:
            raise DataError(f"{p}: {p.stat().st_size >> 20} MB, over the {cap >> 20} MB input limit "
                            "(MNISTKIT_MAX_INPUT_BYTES raises it)")
    try:
        images, labels = read_npy(images_path), read_npy(labels_path)
    except InvalidInputError as exc:
        raise DataError(str(exc)) from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.ndim == 4 and images.shape[-1] not in (1, 3, 4):
        raise DataError(f"{images_path}: array is {images.dtype} {list(images.shape)}; expected uint8 images "
                        "[N,H,W] or [N,H,W,C] (C 1, 3 or 4)")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
        raise DataError(f"{labels_path}: array is {labels.dtype} {list(labels.shape)}; expected {len(images)} "
                        "integer labels")
    if labels.size and (labels.min() < 0 or num_classes is not None and labels.max() >= num_classes):
        raise DataError(f"{labels_path}: labels range {labels.min()}..{labels.max()}, expected 0.."
                        f"{(num_classes or 1) - 1}")
    images, labels = images[:limit], labels[:limit]
    return apply_steps(images, steps, geometry, str(images_path)), labels.astype(np.int64)


def load_folder_split(data_dir, split: str, geometry: Geometry = DIGITS, steps=(), labels=None,
                      limit: int | None = None, cap: int = 256 << 20):
    """(images at `geometry`, labels, description) of `split` in an image folder or .npy data folder.
    Raises DataError when the folder holds neither."""
    d = Path(os.fspath(data_dir)).expanduser()
    pair = npy_files(d, split)
    if pair is not None:
        images, targets = read_npy_split(*pair, geometry, steps, len(labels) if labels else None, limit, cap)
        return images, targets, f"{pair[0]}"
    folder = image_folder(d, split)
    if folder is None:
        raise DataError(f"--data-dir {d}: no {split} images (expected IDX files, {split}-images.npy with "
                        f"{split}-labels.npy, or one sub-folder per class)")
    images, targets = read_image_folder(folder, geometry, steps, labels, limit, cap)
    return images, targets, f"images in {folder}"


# ---------------------------------------------------------------------------------------------
# A model's data: IDX through its transforms, or the folders above


def model_split(split: str, dataset: str | None, data_dir=None, meta: dict | None = None, limit: int | None = None,
                log=None, download: bool = False, pick=None) -> Split:
    """One split of the data a model takes, at its geometry: `meta` (a source's or artifact's metadata) records
    the input's C x H x W, the script's transforms and the labels. `data_dir` may hold an image folder or .npy
    arrays (imagesets) as well as IDX files; IDX images (28x28 gray) go through the recorded transforms.
    `pick(n)`: the indices to keep of the split's n images (e.g. a seeded sample), taken before any transform."""
    from .data import load_split, max_input_bytes

    meta = meta or {}
    geometry = geometry_of_input(meta.get("input") or {}, "the model's metadata")
    steps = meta.get("transforms") or ()
    if has_image_data(data_dir):
        images, labels, _ = load_folder_split(data_dir, split, geometry, steps, meta.get("labels"), limit,
                                              max_input_bytes())
        keep = pick(len(images)) if pick else slice(None)
        return Split(images[keep], labels[keep], Path(data_dir))
    if dataset is None:
        raise DataError(f"no {split} images: the model names no dataset (pass --data-dir with IDX files, an image "
                        "folder or .npy arrays)")
    s = load_split(dataset, split, data_dir, download=download, log=log)
    keep = pick(len(s)) if pick else slice(None, limit)
    images = s.images[keep]
    if geometry != DIGITS or steps:
        images = apply_steps(images, steps, geometry, f"{s.source} ({dataset} {split} images)")
    return Split(images, s.labels[keep], s.source)


VALIDATION_FALLBACK_IMAGES = 1000


def validation_images(dataset: str | None, data_dir=None, limit: int | None = None, log=None, meta: dict | None = None):
    """(uint8 images, labels or None, description) to check artifacts against their reference: the
    dataset's real test split when it is on this machine (never downloaded for this), or the test images of an
    image folder / .npy data folder, at the model's geometry (`meta`, see model_split); else seeded random
    images (labels None) and a note saying so. Export validation and bench's parity gate both use it."""
    from .data import DATASETS
    from .errors import assumed

    folder_data = has_image_data(data_dir)
    if dataset in DATASETS or folder_data:
        try:
            split = model_split("test", dataset, data_dir, meta, limit)
            what = f"test images in {data_dir}" if folder_data else f"{dataset} test images"
            return split.images, split.labels, what
        except DataError as exc:
            if data_dir is not None:
                raise
            assumed(log, f"validating on random images: {exc}")
    else:
        assumed(log, "validating on random images: the model names no dataset (pass --dataset/--data-dir)")
    rng = np.random.default_rng(0)
    n = VALIDATION_FALLBACK_IMAGES if limit is None else min(limit, VALIDATION_FALLBACK_IMAGES)
    tail = geometry_of_input((meta or {}).get("input") or {}, "the model's metadata").pixel_tail
    return rng.integers(0, 256, (n, *tail), dtype=np.uint8), None, "random images"
