"""The geometric steps a user's script applies before ToTensor (torchvision's `Pad`, `Resize`, `CenterCrop`,
`Grayscale`, read from the script by usercode.find_transforms and recorded in every artifact's metadata), done the
way torchvision does them on PIL images, then the channels the model takes. Torch-free (numpy, and Pillow for
Resize)."""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .pixels import Geometry


def steps_text(steps) -> str:
    """The steps as the script wrote them: "Pad(2), Resize(32)"."""
    names = {"pad": "Pad", "resize": "Resize", "crop": "CenterCrop", "gray": "Grayscale"}
    parts = []
    for kind, value in steps or ():
        arg = f"({value[0]}, {value[1]})" if isinstance(value, (list, tuple)) else str(value)
        parts.append(f"{names.get(kind, kind)}({arg})")
    return ", ".join(parts) or "no transforms"


def resized_size(h: int, w: int, size) -> tuple[int, int]:
    """(height, width) after torchvision's Resize(size): (h, w) exactly, or an int for the shorter side, the
    aspect ratio kept."""
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[1])
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = int(size), int(int(size) * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def _resize(image: np.ndarray, size) -> np.ndarray:
    """torchvision's Resize on a PIL image (resized_size), bilinear."""
    from PIL import Image

    h, w = image.shape[:2]
    new_h, new_w = resized_size(h, w, size)
    if (new_h, new_w) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def _center_crop(images: np.ndarray, size) -> np.ndarray:
    """torchvision's CenterCrop on [N,H,W(,C)]: zero padding first where the crop is larger than the image."""
    ch, cw = (int(size[0]), int(size[1])) if isinstance(size, (list, tuple)) else (int(size), int(size))
    h, w = images.shape[1:3]
    if ch > h or cw > w:
        pad = [(0, 0), ((ch - h) // 2 if ch > h else 0, (ch - h + 1) // 2 if ch > h else 0),
               ((cw - w) // 2 if cw > w else 0, (cw - w + 1) // 2 if cw > w else 0)] + [(0, 0)] * (images.ndim - 3)
        images = np.pad(images, pad)
        h, w = images.shape[1:3]
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return images[:, top:top + ch, left:left + cw]


def _to_gray(images: np.ndarray) -> np.ndarray:
    """RGB [N,H,W,3] -> L [N,H,W] as PIL's convert("L") does (ITU-R 601-2 luma, integer arithmetic)."""
    if images.ndim == 3:
        return images
    rgb = images[..., :3].astype(np.uint32)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def _to_rgb(images: np.ndarray) -> np.ndarray:
    return images if images.ndim == 4 else np.repeat(images[..., None], 3, axis=-1)


def apply_steps(images: np.ndarray, steps, geometry: Geometry, where: str = "images") -> np.ndarray:
    """uint8 [N,h,w] (gray) or [N,h,w,3] -> uint8 at `geometry` ([N,H,W] gray, [N,H,W,3] colour) through the
    script's steps in order, then the model's channels (gray images repeated over three channels, as
    Grayscale(num_output_channels=3) does; colour made gray by luma). Raises DataError when the result is not
    the model's height and width."""
    out = np.asarray(images)
    if out.ndim == 4 and out.shape[-1] == 1:
        out = out[..., 0]
    if out.ndim == 4 and out.shape[-1] == 4:
        out = out[..., :3]
    for kind, value in steps or ():
        if kind == "pad":
            pad = [(0, 0), (int(value), int(value)), (int(value), int(value))] + [(0, 0)] * (out.ndim - 3)
            out = np.pad(out, pad)
        elif kind == "resize":
            out = np.stack([_resize(np.ascontiguousarray(x), value) for x in out]) if len(out) else out
        elif kind == "crop":
            out = _center_crop(out, value)
        elif kind == "gray":
            out = _to_gray(out)
            if int(value) == 3:
                out = _to_rgb(out)
    out = _to_gray(out) if geometry.channels == 1 else _to_rgb(out)
    if out.shape[1:3] != (geometry.height, geometry.width):
        raise DataError(f"{where}: {out.shape[1]}x{out.shape[2]} after {steps_text(steps)}; the model takes "
                        f"{geometry.height}x{geometry.width} ({geometry}): give images of that size, or the "
                        "transforms the model was trained with (its script's Resize/Pad/CenterCrop)")
    return np.ascontiguousarray(out, np.uint8)
