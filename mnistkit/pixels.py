"""The two input forms and the one conversion between them. Torch-free.

Data arrives as uint8 pixels [N,28,28] (0-255, the dataset's polarity); float models take normalized
float32 [N,1,28,28]: (pixels / 255 - mean) / std. That arithmetic is written here once, as
`pixels * scale + shift` in float32, and every place that normalizes uses these two constants: the
backends (numpy), training (torch, in place) and the app-ready ONNX graph (two buffers). So a model
sees bit-identical inputs whichever runtime or path feeds it.
"""

from __future__ import annotations

import numpy as np

FLOAT_FORM = "float"  # normalized float32 [N,1,28,28]
UINT8_FORM = "uint8"  # raw pixels uint8 [N,28,28], 0-255, the dataset's polarity


def scale_shift(mean: float, std: float) -> tuple[np.float32, np.float32]:
    """(scale, shift) with normalized = pixels * scale + shift, in float32."""
    return np.float32(1.0 / (255.0 * std)), np.float32(-mean / std)


def pixels_to_float(pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 [N,28,28] -> normalized float32 [N,1,28,28]."""
    scale, shift = scale_shift(mean, std)
    out = pixels.astype(np.float32)
    out *= scale
    out += shift
    return out.reshape(len(pixels), 1, 28, 28)


def float_to_pixels(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Normalized float32 [N,1,28,28] -> uint8 [N,28,28] (exact inverse on inputs made from pixels)."""
    pixels = np.rint((x.reshape(len(x), 28, 28).astype(np.float64) * std + mean) * 255.0)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def native_batch(pixels: np.ndarray, input_form: str, mean: float, std: float) -> np.ndarray:
    """`pixels` in a model's native input form (uint8 as is, float normalized)."""
    return pixels if input_form == UINT8_FORM else pixels_to_float(pixels, mean, std)
