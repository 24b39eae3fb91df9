"""Images -> model input, by the dataset's recipe. numpy + pillow only (no torch).

The recipe belongs to the dataset the model was trained on and is recorded in checkpoints and
artifacts; it must follow the model (the digit recipe on Fashion-MNIST images drops accuracy from
0.89 to 0.23):

- digits (MNIST, KMNIST): grayscale; invert dark-on-light images; crop to the ink; fit a 20x20 box
  keeping the aspect ratio; place in 28x28 so the centre of mass is at the centre.
- objects (Fashion-MNIST): grayscale; invert light-background images; crop to the object; fit the
  longest edge to 28; centre the bounding box.

Images already 28x28 grayscale in the dataset's polarity (light on dark) pass through unchanged.
Inputs: PNG, JPEG, BMP (any size; L/RGB/RGBA/P), .npy arrays, IDX files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InvalidInputError

RECIPES = ("digits", "objects")
MIN_SIDE = 8  # smaller images hold too little to classify
INK_THRESHOLD = 0.15  # of the image's maximum after inversion: anti-aliasing below this is not ink


@dataclass
class Sample:
    """One input ready for a backend: uint8 pixels [28,28] or normalized float32 [1,28,28]."""

    name: str
    array: np.ndarray

    @property
    def form(self) -> str:
        return "uint8" if self.array.dtype == np.uint8 else "float"


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def to_grayscale(img) -> np.ndarray:
    """A PIL image -> float32 [H,W] in [0,255]. Transparent areas become background: an image whose
    opaque pixels are dark is composited on white, one whose opaque pixels are light on black."""

    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA") or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3] / 255.0
        lum = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
        opaque = alpha > 0.5
        ink_is_dark = opaque.any() and lum[opaque].mean() < 128
        background = 255.0 if ink_is_dark else 0.0
        return lum * alpha + background * (1 - alpha)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    if img.mode == "RGB":
        return np.asarray(img, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.asarray(img, dtype=np.float32)


def _resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), mode="L")
    return np.asarray(im.resize((max(1, width), max(1, height)), Image.Resampling.LANCZOS), dtype=np.float32)


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """Paste with clipping at the canvas edges."""
    h, w = patch.shape
    H, W = canvas.shape
    t0, l0 = max(0, top), max(0, left)
    t1, l1 = min(H, top + h), min(W, left + w)
    if t1 > t0 and l1 > l0:
        canvas[t0:t1, l0:l1] = patch[t0 - top:t1 - top, l0 - left:l1 - left]


def apply_recipe(gray: np.ndarray, recipe: str, name: str = "image") -> np.ndarray:
    """float [H,W] grayscale (0-255, any polarity) -> uint8 [28,28] in the dataset's polarity."""
    if recipe not in RECIPES:
        raise InvalidInputError(f"unknown preprocessing recipe {recipe!r}; expected one of {', '.join(RECIPES)}")
    h, w = gray.shape
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InvalidInputError(f"{name}: image is {w}x{h} pixels; expected at least {MIN_SIDE}x{MIN_SIDE}")
    border = _border(gray)
    if np.median(border) > 127:  # dark-on-light (paper, screenshots): the datasets are light-on-dark
        gray = 255.0 - gray
    # the background level is the border's typical value; subtract it so the background is 0
    gray = np.clip(gray - np.median(_border(gray)), 0, 255)
    peak = gray.max()
    if peak < 16:  # nothing stands out from the background
        raise InvalidInputError(f"{name}: the image is blank (no ink or object stands out); nothing to classify")
    gray = gray * (255.0 / peak)  # stretch contrast so faint pencil and bright ink look alike
    ys, xs = np.nonzero(gray > INK_THRESHOLD * 255)
    crop = gray[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    ch, cw = crop.shape
    canvas = np.zeros((28, 28), np.float32)
    if recipe == "digits":
        scale = 20.0 / max(ch, cw)
        fitted = _resize(crop, round(cw * scale), round(ch * scale))
        total = fitted.sum()
        fy, fx = fitted.shape
        if total > 0:
            cy = (fitted.sum(1) * np.arange(fy)).sum() / total
            cx = (fitted.sum(0) * np.arange(fx)).sum() / total
        else:
            cy, cx = (fy - 1) / 2, (fx - 1) / 2
        # MNIST: "centred by computing the centre of mass of the pixels and translating it to the centre"
        _paste(canvas, fitted, int(round(13.5 - cy)), int(round(13.5 - cx)))
    else:
        scale = 28.0 / max(ch, cw)
        fitted = _resize(crop, round(cw * scale), round(ch * scale))
        fy, fx = fitted.shape
        _paste(canvas, fitted, (28 - fy) // 2, (28 - fx) // 2)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def is_dataset_ready(gray: np.ndarray) -> bool:
    """28x28 and already light-on-dark: the dataset's own form, passed through unchanged."""
    return gray.shape == (28, 28) and np.median(_border(gray)) <= 127


def preprocess_image(img, recipe: str, name: str = "image") -> np.ndarray:
    """A PIL image -> uint8 [28,28] by `recipe` (or unchanged when already in dataset form)."""
    gray = to_grayscale(img)
    if is_dataset_ready(gray):
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return apply_recipe(gray, recipe, name)


# ---------------------------------------------------------------------------------------------
# Files -> samples


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def load_inputs(path: str | os.PathLike, recipe: str) -> list[Sample]:
    """Read one input file into samples. Raises InvalidInputError naming the file."""
    from .data import read_idx
    from .errors import DataError

    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file")
    if path.is_dir():
        raise InvalidInputError(f"{path}: is a directory; expected an image, .npy or IDX file")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"{path}: empty file; expected an image (PNG, JPEG, BMP), .npy or IDX file")
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x93NUMPY"):
        return _npy_samples(path)
    if head[:2] == b"\x00\x00" or (head[:2] == b"\x1f\x8b" and "idx" in path.name.lower()):
        try:
            arr = read_idx(path)
        except DataError as exc:
            raise InvalidInputError(str(exc)) from None
        if arr.ndim == 2 and arr.shape == (28, 28):
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1:] != (28, 28) or arr.dtype != np.uint8:
            raise InvalidInputError(f"{path}: IDX {arr.dtype} {list(arr.shape)}; expected uint8 images [N,28,28]")
        return [Sample(f"{path.name}[{i}]", a) for i, a in enumerate(arr)]
    return [Sample(path.name, _image_pixels(path, recipe))]


def _image_pixels(path: Path, recipe: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return preprocess_image(img, recipe, str(path))
    except UnidentifiedImageError:
        raise InvalidInputError(f"{path}: not an image (expected PNG, JPEG or BMP, a .npy array or an IDX file)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt image data
        raise InvalidInputError(f"{path}: unreadable image ({exc})") from None


def _npy_samples(path: Path) -> list[Sample]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InvalidInputError(f"{path}: not a readable .npy array ({exc})") from None
    if arr.dtype == np.uint8 and arr.shape == (28, 28):
        return [Sample(path.name, arr)]
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[1:] == (28, 28):
        return [Sample(f"{path.name}[{i}]", a) for i, a in enumerate(arr)]
    if arr.dtype == np.float32 and arr.ndim == 4 and arr.shape[1:] == (1, 28, 28):
        if not np.isfinite(arr).all():
            raise InvalidInputError(f"{path}: holds NaN or infinite values; expected finite normalized floats")
        return [Sample(f"{path.name}[{i}]", a) for i, a in enumerate(arr)]
    raise InvalidInputError(
        f"{path}: array is {arr.dtype} {list(arr.shape)}; expected uint8 [28,28] or [N,28,28] pixels, "
        f"or normalized float32 [N,1,28,28]")
