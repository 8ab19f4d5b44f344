"""The paper's qualitative figures as image sheets (uint8 RGB arrays; the CLI writes them).

- `cycle_sheet` (Fig. 7): each row x -> G(x) -> F(G(x)), for unmasked inputs (mask, then
  unmask) and masked inputs (unmask, then mask).
- `outline_sheet` (Figs. 8-9): each row a real face beside its translation, with the region the
  generator changed outlined on both: |fake - real| averaged over channels, blurred, thresholded,
  small specks removed, outer contours drawn.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cyclemask.errors import ConfigError, InputError

from .evaluate import Translate, fit_size

OUTLINE_COLOUR = (255, 32, 32)
LABEL_HEIGHT = 22
GAP = 4


def _label(text: str, width: int) -> np.ndarray:
    import cv2

    strip = np.full((LABEL_HEIGHT, width, 3), 255, np.uint8)
    scale = 0.45
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    while tw > width - 4 and scale > 0.25:
        scale -= 0.05
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(strip, text, (max(2, (width - tw) // 2), (LABEL_HEIGHT + th) // 2), cv2.FONT_HERSHEY_SIMPLEX,
                scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], tile: int) -> np.ndarray:
    """Tiles (resized to tile x tile) in rows, a title above each column, white gaps."""
    import cv2

    if not rows:
        raise InputError("no images to put on the sheet")
    ncol = len(titles)
    width = ncol * tile + (ncol + 1) * GAP
    parts = [np.concatenate([np.full((LABEL_HEIGHT, GAP, 3), 255, np.uint8)]
                            + sum(([_label(t, tile), np.full((LABEL_HEIGHT, GAP, 3), 255, np.uint8)] for t in titles), []),
                            axis=1)]
    for row in rows:
        if len(row) != ncol:
            raise InputError(f"a sheet row has {len(row)} images for {ncol} columns")
        cells = [np.full((tile, GAP, 3), 255, np.uint8)]
        for im in row:
            cells += [cv2.resize(im, (tile, tile), interpolation=cv2.INTER_NEAREST if im.shape[0] < tile else cv2.INTER_AREA),
                      np.full((tile, GAP, 3), 255, np.uint8)]
        parts += [np.concatenate(cells, axis=1), np.full((GAP, width, 3), 255, np.uint8)]
    return np.ascontiguousarray(np.concatenate(parts, axis=0))


def cycle_sheet(translators: dict[str, Translate], size: int, images_a: Sequence[np.ndarray],
                images_b: Sequence[np.ndarray], tile: int | None = None) -> np.ndarray:
    """Fig. 7: rows x, G(x), F(G(x)) for unmasked inputs, then y, F(y), G(F(y)) for masked ones."""
    for d in ("mask", "unmask"):
        if d not in translators:
            raise ConfigError(f"the cycle figure needs both directions; the '{d}' generator is missing")
    if not images_a and not images_b:
        raise InputError("the cycle figure needs at least one input image")
    g, f = translators["mask"], translators["unmask"]
    rows = []
    for first, second, images in ((g, f, images_a), (f, g, images_b)):
        if not images:
            continue
        x = np.stack([fit_size(im, size) for im in images])
        y = first(x)
        z = second(y)
        rows += [[x[i], y[i], z[i]] for i in range(len(x))]
    return grid(rows, ["input", "translated", "back again"], tile or max(size, 128))


def changed_region(real: np.ndarray, fake: np.ndarray, threshold: float = 50.0, min_area: float = 0.005) -> np.ndarray:
    """Boolean mask of where fake differs from real: mean |difference| over channels, Gaussian
    blurred (a generator changes every pixel a little; the outline should follow the edit, not
    the noise), thresholded, opened, and stripped of blobs under min_area of the image."""
    import cv2

    if real.shape != fake.shape:
        raise InputError(f"real and fake differ in size: {list(real.shape)} vs {list(fake.shape)}")
    diff = np.abs(real.astype(np.float32) - fake.astype(np.float32)).mean(axis=2)
    k = max(3, (real.shape[0] // 32) | 1)
    diff = cv2.GaussianBlur(diff, (k, k), 0)
    mask = (diff > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area * mask.size
    return keep[labels]


def draw_outline(image: np.ndarray, region: np.ndarray, colour=OUTLINE_COLOUR, thickness: int = 1) -> np.ndarray:
    import cv2

    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.ascontiguousarray(image.copy())
    cv2.drawContours(out, contours, -1, colour, thickness, cv2.LINE_AA)
    return out


def outline_sheet(translate: Translate, size: int, images: Sequence[np.ndarray], threshold: float = 50.0,
                  tile: int | None = None, labels: tuple[str, str] = ("real", "translated")) -> np.ndarray:
    """Figs. 8-9: real | fake, the changed region outlined on both."""
    if not images:
        raise InputError("the outline figure needs at least one input image")
    if threshold <= 0:
        raise ConfigError(f"threshold must be > 0 (a mean absolute difference, 0-255); got {threshold!r}")
    tile = tile or max(size, 128)
    x = np.stack([fit_size(im, size) for im in images])
    y = translate(x)
    rows = []
    import cv2

    for real, fake in zip(x, y):
        # Outline at tile resolution so the line stays one pixel wide on the sheet.
        r = cv2.resize(real, (tile, tile), interpolation=cv2.INTER_CUBIC)
        f = cv2.resize(fake, (tile, tile), interpolation=cv2.INTER_CUBIC)
        region = changed_region(r, f, threshold)
        rows.append([draw_outline(r, region), draw_outline(f, region)])
    return grid(rows, list(labels), tile)
