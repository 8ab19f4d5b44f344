"""Helpers for the trainer's tests: tiny unpaired folders and tiny configs (ngf/ndf 8,
2 residual blocks, 32 px crops) so that a training iteration costs tens of milliseconds."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cyclemask.train.config import TrainConfig


def make_domain(folder: Path, n: int, seed: int, size=(40, 48), nested: bool = False) -> list[Path]:
    """n smooth random RGB images (low-frequency noise, upsampled) written as PNG."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
        img = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        sub = folder / f"sub{i % 2}" if nested else folder
        sub.mkdir(exist_ok=True)
        p = sub / f"img_{i:03d}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def tiny_config(data_root: Path, out_dir: Path, **overrides) -> TrainConfig:
    base = dict(data_root=str(data_root), out_dir=str(out_dir), load_size=36, crop_size=32,
                ngf=8, ndf=8, n_blocks=2, batch_size=2, n_epochs=2, n_epochs_decay=1,
                num_workers=0, n_samples=2, device="cpu", save_every=2)
    base.update(overrides)
    return TrainConfig(**base)
