"""The loss log read back and drawn: the paper's eight losses over training (its Fig. 6), and
the paired and mask-zone terms cyclemask adds.
matplotlib runs on its Agg backend (no display). The grids of fakes (Fig. 10) are train/samples.py."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from cyclemask.image_files import write_bytes_atomic

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
