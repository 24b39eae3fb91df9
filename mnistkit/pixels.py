"""The two input forms, the image geometry, and the one conversion between the forms. Torch-free.

A model takes C x H x W images (C = 1 gray or 3 RGB; MNIST's 1 x 28 x 28 is the default). Data arrives as uint8
pixels, [N,H,W] for gray and [N,H,W,C] for colour (images' own layout; 0-255, the dataset's polarity); float
models take normalized float32 [N,C,H,W]: (pixels / 255 - mean) / std per channel. That arithmetic is written
here once, as `pixels * scale + shift` in float32, and every place that normalizes uses these constants: the
backends (numpy), training (torch, in place) and the app-ready ONNX graph (two buffers). So a model sees
bit-identical inputs whichever runtime or path feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ArtifactError

FLOAT_FORM = "float"  # normalized float32 [N,C,H,W]
UINT8_FORM = "uint8"  # raw pixels uint8 [N,H,W] (gray) or [N,H,W,C] (colour), 0-255, the dataset's polarity
MAX_SIDE = 1024  # a "small vision model": larger images are refused where a shape is read from outside


@dataclass(frozen=True)
class Geometry:
    """The images a model takes: channels (1 or 3) x height x width."""

    channels: int = 1
    height: int = 28
    width: int = 28

    @property
    def float_tail(self) -> tuple[int, int, int]:
        """The float input's dims after the batch axis: (C, H, W)."""
        return self.channels, self.height, self.width

    @property
    def pixel_tail(self) -> tuple[int, ...]:
        """The uint8 input's dims after the batch axis: (H, W) for gray, (H, W, C) for colour."""
        return (self.height, self.width) if self.channels == 1 else (self.height, self.width, self.channels)

    @property
    def size(self) -> int:
        return self.channels * self.height * self.width

    def __str__(self) -> str:
        return f"{self.channels}x{self.height}x{self.width}"

    def forms(self) -> str:
        """Both forms, for messages: "uint8 pixels [N,28,28] or normalized float32 [N,1,28,28]"."""
        return (f"uint8 pixels [N,{','.join(map(str, self.pixel_tail))}] or normalized float32 "
                f"[N,{','.join(map(str, self.float_tail))}]")

    def to_json(self) -> list[int]:
        return [self.channels, self.height, self.width]


DIGITS = Geometry()  # MNIST's and Fashion-MNIST's 1 x 28 x 28


def geometry_from(value) -> Geometry:
    """A Geometry from [C, H, W] (metadata, --input-shape); raises ValueError naming what is wrong."""
    try:
        c, h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError("expected C,H,W (three integers, e.g. 3,32,32)") from None
    if c not in (1, 3):
        raise ValueError(f"{c} channels; expected 1 (gray) or 3 (RGB)")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f"{h}x{w}: height and width must be 1-{MAX_SIDE} (a small vision model's input)")
    return Geometry(c, h, w)


def geometry_of_input(inp: dict, path) -> Geometry:
    """The Geometry an artifact's "input" metadata records: float ["N",C,H,W], uint8 ["N",H,W] or ["N",H,W,C];
    MNIST's 1x28x28 when it records none (artifacts of earlier mnistkit versions)."""
    shape = inp.get("shape")
    if shape is None:
        return DIGITS
    dims = shape[1:] if isinstance(shape, list) else None
    try:
        if inp.get("dtype") == "uint8" and dims is not None and len(dims) in (2, 3):
            return geometry_from([dims[2] if len(dims) == 3 else 1, dims[0], dims[1]])
        if dims is not None and len(dims) == 3:
            return geometry_from(dims)
    except ValueError as exc:
        raise ArtifactError(f"{path}: malformed input metadata: {exc}") from None
    raise ArtifactError(f"{path}: malformed input metadata {inp!r} (expected a shape [N,C,H,W], or [N,H,W(,C)] for "
                        "uint8 pixels)")


def _per_channel(value) -> float | np.ndarray:
    """A float for one value (every channel alike), a float64 vector for per-channel values."""
    if np.ndim(value) == 0:
        return float(value)
    values = np.asarray(value, np.float64).ravel()
    return float(values[0]) if values.size == 1 else values


def scale_shift(mean, std):
    """(scale, shift) with normalized = pixels * scale + shift, in float32: scalars, or one per channel."""
    mean, std = _per_channel(mean), _per_channel(std)
    if isinstance(mean, float) and isinstance(std, float):
        return np.float32(1.0 / (255.0 * std)), np.float32(-mean / std)
    return (np.asarray(1.0 / (255.0 * np.asarray(std)), np.float32),
            np.asarray(-np.asarray(mean) / np.asarray(std), np.float32))


def pixels_to_float(pixels: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [N,H,W] -> normalized float32 [N,1,H,W]; uint8 [N,H,W,C] -> [N,C,H,W] (per-channel mean/std)."""
    scale, shift = scale_shift(mean, std)
    out = pixels.astype(np.float32)
    out *= scale  # a per-channel vector broadcasts over the last (channel) axis of [N,H,W,C]
    out += shift
    if pixels.ndim == 4:
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    return out.reshape(len(pixels), 1, *pixels.shape[1:])


def float_to_pixels(x: np.ndarray, mean, std) -> np.ndarray:
    """Normalized float32 [N,C,H,W] -> uint8 [N,H,W] (C = 1) or [N,H,W,C] (exact inverse on inputs made from
    pixels)."""
    mean, std = _per_channel(mean), _per_channel(std)
    hwc = x.astype(np.float64).transpose(0, 2, 3, 1)  # [N,H,W,C]
    pixels = np.clip(np.rint((hwc * std + mean) * 255.0), 0, 255).astype(np.uint8)
    return pixels[..., 0] if x.shape[1] == 1 else np.ascontiguousarray(pixels)


def native_batch(pixels: np.ndarray, input_form: str, mean, std) -> np.ndarray:
    """`pixels` in a model's native input form (uint8 as is, float normalized)."""
    return pixels if input_form == UINT8_FORM else pixels_to_float(pixels, mean, std)
