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

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InvalidInputError, first_line
from .fileio import check_input_file

# The preprocessing recipes by name, each with what it does (the app bundle's README quotes it).
RECIPES = {
    "digits": "grayscale; invert dark-on-light images; crop to the ink; fit a 20x20 box keeping the "
              "aspect ratio; place in 28x28 by centre of mass (the MNIST recipe)",
    "objects": "grayscale; invert light-background images; crop to the object; fit the longest edge "
               "to 28; centre (the Fashion-MNIST recipe)",
    "image": "the image as it is, RGB (or gray for a 1-channel model), through the transforms the model's script "
             "applies (Grayscale, Resize, Pad, CenterCrop): torchvision's ImageFolder and transforms",
}
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


# Images are refused above this many pixels before any pixel is decoded (Pillow reads the size from
# the header): 50 MP covers a 48-50 MP phone photo (8160x6120); a decoded 50 MP RGBA image is 200 MB.
MAX_IMAGE_PIXELS = 50_000_000
# Larger images are reduced to this longest side right after decoding (JPEG decodes at a reduced
# scale directly, with Pillow's draft mode): the recipe ends at 20x20 or 28x28, and a 12 MP photo
# would otherwise cost ~200 MB of float32 arrays.
WORK_SIDE = 1024

_TO_RGB = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}


def _wide_to_8bit(a: np.ndarray, mode: str) -> np.ndarray:
    """A 16-bit, 32-bit integer or float image -> float32 [0,255] by its real range, never by clipping.

    16-bit modes (I;16*) scale their full range 0-65535 onto 0-255, exactly as an 8-bit export of
    the same scan would. 32-bit integer and float images have no fixed range: values already in
    0-255 (or 0-1 for floats) keep their meaning; 0-65535 integers are 16-bit data in a wider mode;
    anything else is stretched from its minimum to its maximum.
    """
    a = a.astype(np.float64)
    if mode.startswith("I;16"):
        return (a * (255.0 / 65535.0)).astype(np.float32)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros(a.shape, np.float32)
    a = np.nan_to_num(a, nan=float(finite.min()), posinf=float(finite.max()), neginf=float(finite.min()))
    lo, hi = float(finite.min()), float(finite.max())
    if mode == "F" and lo >= 0 and hi <= 1:
        return (a * 255.0).astype(np.float32)
    if lo >= 0 and hi <= 255:
        return a.astype(np.float32)
    if mode == "I" and lo >= 0 and hi <= 65535:
        return (a * (255.0 / 65535.0)).astype(np.float32)
    if hi == lo:
        return np.zeros(a.shape, np.float32)
    return ((a - lo) * (255.0 / (hi - lo))).astype(np.float32)


def normalize_mode(img):
    """Any mode Pillow opens -> (image in L, RGB, RGBA, LA, I or F, the original mode)."""
    mode = img.mode
    if mode == "1":
        return img.convert("L"), mode
    if mode in ("P", "PA", "RGBa"):
        return img.convert("RGBA"), mode
    if mode == "La":
        return img.convert("LA"), mode
    if mode.startswith("I;16") or mode == "I":
        return (img if mode == "I" else img.convert("I")), mode
    if mode in _TO_RGB:
        return img.convert("RGB"), mode
    if mode in ("L", "RGB", "RGBA", "LA", "F"):
        return img, mode
    return img.convert("RGBA" if "A" in mode else "RGB"), mode


def to_grayscale(img, original_mode: str | None = None) -> np.ndarray:
    """A PIL image -> float32 [H,W] in [0,255]. Transparent areas become background: an image whose
    opaque pixels are dark is composited on white, one whose opaque pixels are light on black.
    16-bit, 32-bit and float images are brought to 0-255 by their real range (see _wide_to_8bit)."""

    img, mode = normalize_mode(img)
    original_mode = original_mode or mode
    if img.mode in ("I", "F"):
        return _wide_to_8bit(np.asarray(img), original_mode)
    # Luminance as Pillow's convert("L") computes it (ITU-R 601-2 in integer arithmetic): grey pixels
    # keep their exact value, so an RGB copy of a greyscale image gives bit-identical input (float
    # weights summing to 1.0000001 moved the centre of mass across a rounding boundary, measured).
    if img.mode in ("RGBA", "LA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        lum = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float32)
        opaque = alpha > 0.5
        ink_is_dark = opaque.any() and lum[opaque].mean() < 128
        background = 255.0 if ink_is_dark else 0.0
        return lum * alpha + background * (1 - alpha)
    if img.mode == "RGB":
        return np.asarray(img.convert("L"), dtype=np.float32)
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


def preprocess_image(img, recipe: str, name: str = "image", original_mode: str | None = None,
                     geometry=None, steps=()) -> np.ndarray:
    """A PIL image -> uint8 pixels at the model's geometry (default: [28,28]) by `recipe`: the digit and object
    recipes make the dataset's 28x28 (unchanged when already in that form), then the script's transforms; "image"
    takes the image as torchvision's loaders do (RGB) through the transforms."""
    from .steps import apply_steps
    from .pixels import DIGITS

    geometry = geometry or DIGITS
    if recipe == "image":
        img, _ = normalize_mode(img)
        return apply_steps(np.asarray(img.convert("RGB"))[None], steps, geometry, name)[0]
    pixels = _dataset_form(img, recipe, name, original_mode)
    if geometry == DIGITS and not steps:
        return pixels
    return apply_steps(pixels[None], steps, geometry, name)[0]


def _dataset_form(img, recipe: str, name: str, original_mode: str | None) -> np.ndarray:
    """A PIL image -> uint8 [28,28] by a dataset's recipe (or unchanged when already in dataset form)."""
    gray = to_grayscale(img, original_mode)
    if is_dataset_ready(gray):
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return apply_recipe(gray, recipe, name)


# ---------------------------------------------------------------------------------------------
# Files -> samples


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def load_inputs(path: str | os.PathLike, recipe: str, geometry=None, steps=()) -> list[Sample]:
    """Read one input file into samples at the model's geometry (default 1x28x28; `steps`: the transforms its
    script applies). Raises InvalidInputError naming the file."""
    from .data import read_idx
    from .errors import DataError
    from .steps import apply_steps
    from .pixels import DIGITS

    geometry = geometry or DIGITS

    path = Path(path)
    check_input_file(path, "an image (PNG, JPEG, BMP), .npy or IDX file")
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x93NUMPY"):
        return _npy_samples(path, geometry, steps)
    if head[:2] == b"\x00\x00" or (head[:2] == b"\x1f\x8b" and "idx" in path.name.lower()):
        try:
            arr = read_idx(path)
        except DataError as exc:
            raise InvalidInputError(str(exc)) from None
        if arr.ndim == 2 and arr.shape == (28, 28):
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1:] != (28, 28) or arr.dtype != np.uint8:
            raise InvalidInputError(f"{path}: IDX {arr.dtype} {list(arr.shape)}; expected uint8 images [N,28,28]")
        if geometry != DIGITS or steps:
            arr = apply_steps(arr, steps, geometry, str(path))
        return [Sample(f"{path}[{i}]", a) for i, a in enumerate(arr)]
    return [Sample(str(path), _image_pixels(path, recipe, geometry, steps))]


def open_image(path, name=None):
    """Open, size-check and decode an image in bounded memory -> (PIL image, its original mode).

    The pixel count is read from the header and checked before any pixel is decoded; Pillow's own
    decompression-bomb limit is set to the same number and its warnings are errors. Large images are
    decoded at a reduced scale (JPEG draft mode) or reduced right after decoding. `path` may be a
    binary file object (image bytes from a Parquet column); messages name it as `name`.
    """
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    name = path if name is None else name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            try:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise InvalidInputError(f"{name}: image is {w}x{h} ({w * h / 1e6:.0f} megapixels); the limit "
                                            f"is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels: downscale it first")
                mode = img.mode
                if img.format == "JPEG" and max(w, h) > WORK_SIDE:
                    img.draft(img.mode if img.mode in ("L", "RGB") else None, (WORK_SIDE, WORK_SIDE))
                img.load()
                img, _ = normalize_mode(img)
                side = max(img.size)
                if side > WORK_SIDE:
                    img = img.reduce(math.ceil(side / WORK_SIDE))
                return img, mode
            except BaseException:
                img.close()
                raise
    except UnidentifiedImageError:
        raise InvalidInputError(f"{name}: not an image (expected PNG, JPEG or BMP, a .npy array or an IDX file)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInputError(f"{name}: image is over the {MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit, refused "
                                f"before decoding ({first_line(exc, 120)})") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, MemoryError) as exc:
        # truncated or corrupt image data; Pillow's decoders raise all of these
        raise InvalidInputError(f"{name}: unreadable image ({first_line(exc, 160)})") from None


def _image_pixels(path: Path, recipe: str, geometry=None, steps=()) -> np.ndarray:
    img, mode = open_image(path)
    with img:
        return preprocess_image(img, recipe, str(path), original_mode=mode, geometry=geometry, steps=steps)


NPY_ERRORS = (ValueError, OSError, EOFError, MemoryError, SyntaxError, TypeError)  # what a bad .npy raises


def npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset) of the .npy file open as `f`, checked: a known version,
    no Python objects, and a shape that fits the file's real size (numpy would otherwise allocate whatever
    the header claims). Raises one of NPY_ERRORS."""
    from numpy.lib import format as npy_format

    version = npy_format.read_magic(f)
    read_header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    if version not in read_header:
        raise ValueError(f"unsupported .npy version {version}")
    shape, fortran, dtype = read_header[version](f, max_header_size=10000)
    offset = f.tell()
    body = os.fstat(f.fileno()).st_size - offset
    if dtype.hasobject:
        raise ValueError("holds Python objects (pickles are never loaded)")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared != body:
        raise ValueError(f"header declares {dtype} {list(shape)} ({declared} bytes) but the file holds "
                         f"{body} bytes of data")
    return shape, fortran, dtype, offset


def read_npy(path: Path) -> np.ndarray:
    """np.load without pickles, after npy_header's checks."""
    from numpy.lib import format as npy_format

    try:
        with open(path, "rb") as f:
            npy_header(f)
            f.seek(0)
            return npy_format.read_array(f, allow_pickle=False)
    except NPY_ERRORS as exc:
        raise InvalidInputError(f"{path}: not a readable .npy array ({first_line(exc, 160)})") from None


def _npy_samples(path: Path, geometry=None, steps=()) -> list[Sample]:
    """An array's samples: uint8 pixels at the model's geometry ([H,W(,C)] or [N,H,W(,C)]), normalized float32
    [N,C,H,W], or MNIST-form uint8 [N,28,28] digits through the model's transforms."""
    from .steps import apply_steps
    from .pixels import DIGITS

    g = geometry or DIGITS
    arr = read_npy(path)
    tail = g.pixel_tail
    if arr.dtype == np.uint8 and arr.shape == tail:
        return [Sample(str(path), arr)]
    if arr.dtype == np.uint8 and arr.ndim == 1 + len(tail) and arr.shape[1:] == tail:
        return [Sample(f"{path}[{i}]", a) for i, a in enumerate(arr)]
    if arr.dtype == np.float32 and arr.ndim == 4 and arr.shape[1:] == g.float_tail:
        if not np.isfinite(arr).all():
            raise InvalidInputError(f"{path}: holds NaN or infinite values; expected finite normalized floats")
        return [Sample(f"{path}[{i}]", a) for i, a in enumerate(arr)]
    if g != DIGITS and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[1:] == (28, 28) and steps:
        return [Sample(f"{path}[{i}]", a) for i, a in enumerate(apply_steps(arr, steps, g, str(path)))]
    shown = lambda t: ",".join(map(str, t))  # noqa: E731
    raise InvalidInputError(
        f"{path}: array is {arr.dtype} {list(arr.shape)}; expected uint8 [{shown(tail)}] or [N,{shown(tail)}] pixels, "
        f"or normalized float32 [N,{shown(g.float_tail)}]")
