"""Colour matching for face-aware processing (--color-match; the paper's third limitation: "the
model would apply a mask of the same luminosity in both correctly exposed and underexposed
images"): a gain in linear light that lifts a dark crop to a well-exposed face's luminance
before translation and is undone after it, and the median LAB colour of a crop's outer ring,
which the model should leave alone, to measure and remove the generator's colour drift.
"""

from __future__ import annotations

import functools

import numpy as np

# Exposure: a gain in linear light, applied to sRGB uint8 through 256-entry tables.
_V = np.arange(256, dtype=np.float64) / 255.0
_SRGB_TO_LINEAR = np.where(_V <= 0.04045, _V / 12.92, ((_V + 0.055) / 1.055) ** 2.4)
_LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709 luminance of linear RGB


def _linear_to_srgb_u8(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0.0, 1.0)
    s = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * np.power(lin, 1.0 / 2.4) - 0.055)
    return np.clip(np.rint(s * 255.0), 0, 255).astype(np.uint8)


def mean_luminance(image: np.ndarray) -> float:
    """Mean linear-light luminance (0..1) of a uint8 RGB image."""
    counts = [np.bincount(image[..., c].ravel(), minlength=256) for c in range(3)]
    per_channel = [float(cnt @ _SRGB_TO_LINEAR) for cnt in counts]
    return float(np.dot(_LUMA, per_channel) / (image.shape[0] * image.shape[1]))


@functools.lru_cache(maxsize=512)
def _gain_table(gain: float, inverse: bool) -> np.ndarray:
    return _linear_to_srgb_u8(_SRGB_TO_LINEAR / gain if inverse else _SRGB_TO_LINEAR * gain)


def apply_gain(image: np.ndarray, gain: float, inverse: bool = False) -> np.ndarray:
    """Multiply (inverse: divide) a uint8 sRGB image's linear light by gain, clipped at white."""
    if gain == 1.0:
        return image
    return _gain_table(float(gain), inverse)[image]


def exposure_gain(image: np.ndarray, target: float, max_gain: float) -> float:
    """The gain (>= 1, rounded so tables are reused) that lifts a dark crop's mean luminance to target."""
    mean = mean_luminance(image)
    if mean >= target:
        return 1.0
    return round(min(max_gain, target / max(mean, 1e-4)), 3)


@functools.lru_cache(maxsize=8)
def _ring(size: int) -> np.ndarray:
    """The outer band of a crop (beyond 3/4 of its half-side): outside the face box at margin 0.3."""
    t = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    x, y = np.meshgrid(t, t)
    return np.maximum(np.abs(x), np.abs(y)) >= 0.75


def _to_lab(image: np.ndarray) -> np.ndarray:
    import cv2

    # Float LAB (L 0..100): the 8-bit conversion alone moves saturated colours by several levels.
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def ring_lab(image: np.ndarray) -> np.ndarray:
    """Median LAB colour of a square crop's outer ring."""
    return np.median(_to_lab(image)[_ring(image.shape[0])], axis=0).astype(np.float32)


def shift_lab(image: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The image with delta added to every pixel's LAB colour; unchanged when delta is tiny."""
    import cv2

    if float(np.abs(delta).max()) < 0.25:  # below a quarter of an L unit: not worth the round trip
        return image
    rgb = cv2.cvtColor(_to_lab(image) + delta, cv2.COLOR_Lab2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
