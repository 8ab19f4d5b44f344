"""Grids of fakes both ways on fixed images, written at the end of an epoch (the paper's
Fig. 10): real A, G_A(A), G_B(G_A(A)); real B, G_B(B), G_A(G_B(B))."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from cyclemask.image_files import write_image
from cyclemask.image_tensors import eager_translate


@torch.no_grad()
def write_epoch_samples(path: Path, G_A: nn.Module, G_B: nn.Module, samples) -> Path:
    """Translate `samples` (datasets.SampleImages) both ways and back with the generators in
    eval mode (train mode is restored after) and write the grid."""
    G_A.eval()
    G_B.eval()
    try:
        fake_B = eager_translate(G_A, samples.A)
        rec_A = eager_translate(G_B, fake_B)
        fake_A = eager_translate(G_B, samples.B)
        rec_B = eager_translate(G_A, fake_A)
    finally:
        G_A.train()
        G_B.train()
    return write_sample_grid(path, samples.A, fake_B, rec_A, samples.B, fake_A, rec_B)


def _label(tile_h: int, width: int, text: str) -> np.ndarray:
    import cv2

    strip = np.full((tile_h, width, 3), 255, np.uint8)
    scale = max(0.35, min(0.6, tile_h / 160))
    y = tile_h // 2 + 5
    for i, part in enumerate(text.split("\n")):
        cv2.putText(strip, part, (4, y + int((i - 0.5) * 18 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def sample_grid(rows: Iterable[tuple[str, np.ndarray]], min_tile: int = 128) -> np.ndarray:
    """Stack labelled rows of uint8 NHWC images into one image. Small tiles are enlarged
    (nearest neighbour, so pixels stay visible) to at least `min_tile`."""
    rows = list(rows)
    size = rows[0][1].shape[1]
    scale = max(1, math.ceil(min_tile / size))
    tile = size * scale
    n_cols = max(r[1].shape[0] for r in rows)
    label_w = 150
    out = []
    for label, images in rows:
        big = images.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else images
        cells = [_label(tile, label_w, label)]
        for k in range(n_cols):
            cells.append(big[k] if k < len(big) else np.full((tile, tile, 3), 255, np.uint8))
            cells.append(np.full((tile, 2, 3), 255, np.uint8))
        out.append(np.concatenate(cells, axis=1))
        out.append(np.full((2, out[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(out, axis=0)


def write_sample_grid(path: str | Path, real_A: np.ndarray, fake_B: np.ndarray, rec_A: np.ndarray,
                      real_B: np.ndarray, fake_A: np.ndarray, rec_B: np.ndarray) -> Path:
    """Rows: real A, G_A(A) (masked), G_B(G_A(A)); real B, G_B(B) (unmasked), G_A(G_B(B))."""
    grid = sample_grid([
        ("real A", real_A), ("mask\nG_A(A)", fake_B), ("cycle\nG_B(G_A(A))", rec_A),
        ("real B", real_B), ("unmask\nG_B(B)", fake_A), ("cycle\nG_A(G_B(B))", rec_B),
    ])
    write_image(path, grid)
    return Path(path)
