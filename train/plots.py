"""Figures of a run: the eight losses over training (the paper's Fig. 6) and grids of fakes in
both directions on fixed images (Fig. 10). matplotlib runs on its Agg backend (no display)."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cyclemask.imageio import write_bytes_atomic, write_image

log = logging.getLogger(__name__)

# The paper's eight losses, then the paired L1 terms (a cyclemask extension: zero unless
# training with --pairs and --paired-weight).
# zone_G / zone_D: the mask zone's PatchGAN (generator and discriminator; 0 when it is off).
LOSS_NAMES = ("D_A", "G_A", "cycle_A", "idt_A", "pair_A", "zone_G",
              "D_B", "G_B", "cycle_B", "idt_B", "pair_B", "zone_D")


def read_loss_log(path: str | Path) -> list[dict]:
    """Records of a losses.jsonl file; a torn last line (a kill mid-write) is ignored."""
    records = []
    p = Path(path)
    if not p.is_file():
        return records
    with open(p) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: ignoring a torn line", p)
    return records


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def plot_losses(records: Sequence[dict], out_path: str | Path, title: str | None = None) -> Path | None:
    """One panel per loss, raw per-iteration values in a light line and a moving
    average in a dark one, against epochs. Returns the path, or None with nothing to plot."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    x = np.array([r.get("epoch_f", r["step"]) for r in records], dtype=float)
    window = max(1, min(100, len(records) // 25))
    fig, axes = plt.subplots(2, len(LOSS_NAMES) // 2, figsize=(20, 6.5), sharex=True)
    for ax, name in zip(axes.flat, LOSS_NAMES):
        y = np.array([r.get(name, math.nan) for r in records], dtype=float)
        ax.plot(x, y, color="tab:blue", alpha=0.25, linewidth=0.6)
        ax.plot(x, _smooth(y, window), color="tab:blue", linewidth=1.6)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title or f"losses over {len(records)} iterations (moving average of {window})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_bytes_atomic(out_path, buf.getvalue())
    return Path(out_path)


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
