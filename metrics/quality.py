"""Full-reference image quality: PSNR and SSIM on uint8 RGB images.

SSIM follows Wang et al. (2004) as most papers report it (and as scikit-image computes it with
gaussian_weights=True, use_sample_covariance=False, data_range=255): an 11x11 Gaussian window
of sigma 1.5, K1 = 0.01, K2 = 0.03, computed per channel, averaged over the pixels at least half
a window from the border (the filtered values there are incomplete), then over channels.
"""

from __future__ import annotations

import numpy as np

from cyclemask.errors import InputError

SSIM_SIGMA = 1.5
SSIM_WIN = 11
K1, K2 = 0.01, 0.03


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    for name, x in (("first", a), ("second", b)):
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
            got = f"{x.dtype} {list(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
            raise InputError(f"{name} image: expected uint8 RGB [H, W, 3]; got {got}")
    if a.shape != b.shape:
        raise InputError(f"images differ in size: {list(a.shape)} vs {list(b.shape)}")


def mse(a: np.ndarray, b: np.ndarray) -> float:
    _check_pair(a, b)
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(d * d))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; infinity for identical images."""
    m = mse(a, b)
    return float("inf") if m == 0.0 else float(10.0 * np.log10(data_range * data_range / m))


def _gaussian_filter(x: np.ndarray) -> np.ndarray:
    import cv2

    # Reflect at the border (scikit-image's default); the border band is cropped afterwards anyway.
    return cv2.GaussianBlur(x, (SSIM_WIN, SSIM_WIN), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT_101)


def psnr_in(a: np.ndarray, b: np.ndarray, region: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR over the pixels where region [H, W] is true (all channels); infinity if identical there."""
    _check_pair(a, b)
    if region.shape != a.shape[:2] or not region.any():
        raise InputError(f"region must be a non-empty boolean mask of {list(a.shape[:2])}; got {list(region.shape)}")
    d = a[region].astype(np.float64) - b[region].astype(np.float64)
    m = float(np.mean(d * d))
    return float("inf") if m == 0.0 else float(10.0 * np.log10(data_range * data_range / m))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, region: np.ndarray | None = None) -> float:
    """Mean structural similarity of two uint8 RGB images (at least 11x11); with region [H, W],
    the SSIM map is averaged over the region's pixels instead (border band included)."""
    _check_pair(a, b)
    if min(a.shape[:2]) < SSIM_WIN:
        raise InputError(f"SSIM needs images of at least {SSIM_WIN}x{SSIM_WIN}; got {a.shape[1]}x{a.shape[0]}")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    pad = (SSIM_WIN - 1) // 2
    values = []
    for ch in range(3):
        x = a[:, :, ch].astype(np.float64)
        y = b[:, :, ch].astype(np.float64)
        mx, my = _gaussian_filter(x), _gaussian_filter(y)
        vx = _gaussian_filter(x * x) - mx * mx
        vy = _gaussian_filter(y * y) - my * my
        cxy = _gaussian_filter(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        values.append(s[region].mean() if region is not None else s[pad:-pad, pad:-pad].mean())
    return float(np.mean(values))
