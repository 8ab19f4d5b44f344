"""Where a face's mask zone must end, by exact geometry from its landmarks: the reference the
zone's tests hold the matte (and the paste) to, computed without the matte's own raster steps
(polygon fill, distance transform, smoothstep, border), so a matte that grows by a pixel
cannot move its own reference with it."""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path as MplPath

from cyclemask.face_detect import _closed_spline, mask_anchors

#: How far past the grown outline the matte's support may reach: its distance transform is
#: OpenCV's 5x5 approximation of Euclidean distance, which comes up to ~0.6 px short at the
#: zone's grow distance (18 px for h = 60). A matte one pixel wider reaches ~1.6 px past it.
DISTANCE_SLACK = 0.8


def zone_reference(landmarks, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, float]:
    """(distance outside the anchors' outline, distance down the face from the eye line, h) at
    each pixel centre of `box` ([side, side] arrays, frame pixels; the outside distance is
    negative inside the outline).

    The outline is the closed curve through the six `mask_anchors` that the zone is defined by,
    sampled finely; distances to it are exact point-to-segment distances."""
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    x0, y0, x1, y1 = box
    curve = _closed_spline(mask_anchors(lm)[[0, 1, 2, 5, 4, 3]], per_segment=64)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    dist = np.full(len(pts), np.inf)
    for a, b in zip(curve, np.roll(curve, -1, axis=0)):
        ab = b - a
        t = np.clip((pts - a) @ ab / (ab @ ab), 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(*(pts - a - t[:, None] * ab).T))
    inside = MplPath(curve).contains_points(pts)
    outside = np.where(inside, -dist, dist).reshape(xx.shape)
    eyes, mouth = lm[:2].mean(axis=0), lm[3:].mean(axis=0)
    across = (lm[1] - lm[0]) / np.hypot(*(lm[1] - lm[0]))
    down = np.array([-across[1], across[0]])
    h = float((mouth - eyes) @ down)
    below = (xx - eyes[0]) * down[0] + (yy - eyes[1]) * down[1]
    return outside, below, h
