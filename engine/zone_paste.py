"""Zone compositing helpers for face-aware processing (engine/faces.py): the generator's colour
drift around the mask zone, and the hole an erase-then-restore graph changed."""

from __future__ import annotations

import numpy as np

from .colour_match import _ring


def zone_colour_offset(source: np.ndarray, generated: np.ndarray, matte: np.ndarray, h: float,
                       band: float = 0.15, sigma: float = 0.35, tolerance: float = 24.0,
                       field: bool = True) -> np.ndarray:
    """The generator's low-frequency colour drift around the zone, as an offset field [S, S, 3].

    source, generated: the crop before and after translation (uint8 [S, S, 3]); matte: the
    zone's alpha at the same size; h: the face's eye-to-mouth distance in these pixels.
    Outside the zone the generator should have kept the crop as it was, so source - generated
    there is its drift (colour cast, brightness). It is measured in a band `band` x h wide just
    outside the matte, robustly (pixels that differ from the crop's overall drift by more than
    `tolerance`, where the generator painted something such as a mask reaching past the zone,
    are left out), and spread into the zone by a normalised Gaussian of
    `sigma` x h: near the band it is the local drift (a seamless edge), far from it the band's
    mean. Adding it to `generated` makes the pasted zone meet the frame with no halo.
    """
    import cv2

    s = source.shape[0]
    support = (matte > 0).astype(np.uint8)
    r = max(1, int(round(band * h)))
    ring = cv2.dilate(support, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > support
    diff = source.astype(np.float32) - generated.astype(np.float32)
    # The overall drift, from the crop's outer ring (background and hair, far from any mask);
    # in the band, a difference further than `tolerance` from it is content the generator
    # changed on purpose (a mask painted past the zone, a real mask's edge it removed).
    overall = np.median(diff[_ring(s)], axis=0)
    w = (ring & np.all(np.abs(diff - overall) <= tolerance, axis=2)).astype(np.float32)
    if w.sum() < 8:
        return np.broadcast_to(overall.astype(np.float32), diff.shape).copy()
    mean = (diff * w[..., None]).sum(axis=(0, 1)) / w.sum()
    if not field:
        return np.broadcast_to(mean.astype(np.float32), diff.shape).copy()
    sig = max(1.0, sigma * h)
    k = int(min(2 * s + 1, 2 * round(3 * sig) + 1))
    num = cv2.GaussianBlur(diff * w[..., None], (k, k), sig, borderType=cv2.BORDER_REPLICATE)
    den = cv2.GaussianBlur(w, (k, k), sig, borderType=cv2.BORDER_REPLICATE)[..., None]
    eps = 0.02  # where the band's weight is this small, the offset fades to the band's mean
    return ((num + eps * mean) / (den + eps)).astype(np.float32)


def changed_matte(sent: np.ndarray, got: np.ndarray, threshold: int = 2, grow: int = 1,
                  feather: float = 1.0) -> np.ndarray:
    """Where a graph changed a crop, as a soft paste weight [S, S] float32 in [0, 1].

    An erase-then-restore graph composites its output with its own input (see
    `cyclemask.restore_models.EraseRestore`), so outside its hole the output is the input, bit
    for bit in FP32 and FP16. Differences of at most `threshold` levels (BF16 and INT8 graphs
    are not exact) and isolated pixels are not a hole; the rest is grown by `grow` pixels, so the
    feathered edge falls where the output equals the input anyway, and feathered. 0 on the
    crop's border, like every paste weight.
    """
    import cv2

    changed = (np.abs(sent.astype(np.int16) - got.astype(np.int16)).max(axis=2) > threshold).astype(np.uint8)
    if not changed.any():
        return np.zeros(changed.shape, np.float32)
    kernel = np.ones((3, 3), np.uint8)
    changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, kernel)
    if grow > 0:
        changed = cv2.dilate(changed, kernel, iterations=grow)
    weight = cv2.GaussianBlur(changed.astype(np.float32), (0, 0), feather) if feather > 0 else changed.astype(np.float32)
    weight[0, :] = weight[-1, :] = weight[:, 0] = weight[:, -1] = 0.0
    return weight
