"""Unpaired image folders for CycleGAN training.

Layout: `<data_root>/trainA/` (domain A, unmasked faces) and `<data_root>/trainB/` (domain B,
masked faces), searched recursively; optionally `testA/` and `testB/`. Every image is decoded to
RGB by `cyclemask.imageio.read_image`.

Randomness is per sample, not per process: the crop, the flip and the B partner of sample `i`
in epoch `e` come from a generator seeded with (seed, e, i). The same sample therefore gets the
same augmentation whichever rank or DataLoader worker loads it, and a resumed run replays the
exact batches of an uninterrupted one without saving any data-loading RNG state.

An unreadable file is replaced by the next readable one of its domain (deterministically) and
its path is passed up with the batch, so the trainer reports it once, not once per worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from cyclemask.errors import DataError, InputError
from cyclemask.imageio import IMAGE_EXTENSIONS, list_images, read_image
from cyclemask.imaging import preprocess

log = logging.getLogger(__name__)

DOMAIN_HELP = "trainA/ holds domain A (unmasked faces), trainB/ domain B (masked faces)"


def find_domain(data_root: str | Path, name: str, required: bool = True,
                max_size: int | None = None) -> list[Path]:
    """Image paths of one domain folder (e.g. 'trainA'), sorted; a clear DataError when a
    required domain is missing or empty."""
    folder = Path(data_root) / name
    if not folder.is_dir():
        if required:
            raise DataError(f"{folder}: no such folder ({DOMAIN_HELP})")
        return []
    try:
        paths = list_images(folder)
    except InputError as exc:
        raise DataError(str(exc)) from None
    if not paths and required:
        raise DataError(f"{folder}: no images found (searched recursively for "
                        f"{', '.join(IMAGE_EXTENSIONS)}); {DOMAIN_HELP}")
    return paths[:max_size] if max_size else paths


def resize_bicubic(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 HWC -> uint8 CHW tensor of size x size.

    Antialiased bicubic, like the reference's PIL `Resize(BICUBIC)`, which also smooths when
    shrinking; cv2's plain bicubic would alias on the large photos most datasets hold.
    """
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if t.shape[1] == size and t.shape[2] == size:
        return t.contiguous()
    y = F.interpolate(t[None].float(), size=(size, size), mode="bicubic", align_corners=False,
                      antialias=True)[0]
    return y.round_().clamp_(0, 255).to(torch.uint8)


def augment(image: np.ndarray, load_size: int, crop_size: int, flip: bool,
            rng: np.random.Generator) -> torch.Tensor:
    """The reference's training transform: resize to load_size, random crop to crop_size,
    random horizontal flip; returns float CHW in [-1, 1]. Always draws three numbers, so the
    stream of draws does not depend on the settings."""
    t = resize_bicubic(image, load_size)
    x = int(rng.integers(0, load_size - crop_size + 1))
    y = int(rng.integers(0, load_size - crop_size + 1))
    do_flip = bool(rng.random() < 0.5)
    t = t[:, y:y + crop_size, x:x + crop_size]
    if flip and do_flip:
        t = t.flip(-1)
    return preprocess(t.permute(1, 2, 0)[None].contiguous())[0]


class UnpairedDataset(Dataset):
    """Indexed by (epoch, index) keys (see `EpochSampler`). Length is the larger domain, as in
    the reference; A is walked in order (modulo its size), B is drawn at random."""

    def __init__(self, paths_A: Sequence[Path], paths_B: Sequence[Path], load_size: int,
                 crop_size: int, flip: bool = True, seed: int = 0) -> None:
        if not paths_A or not paths_B:
            raise DataError("both domains need at least one image")
        self.paths_A = [str(p) for p in paths_A]
        self.paths_B = [str(p) for p in paths_B]
        self.load_size, self.crop_size, self.flip, self.seed = load_size, crop_size, flip, seed
        # Per process (each DataLoader worker has its own copy): avoids decoding a known-bad
        # file again; reporting is done once by the trainer.
        self._bad: set[str] = set()

    def __len__(self) -> int:
        return max(len(self.paths_A), len(self.paths_B))

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        rng = np.random.default_rng([self.seed, epoch, index])
        ib = int(rng.integers(0, len(self.paths_B)))
        skipped: list[str] = []
        img_A, path_A = self._read(self.paths_A, index % len(self.paths_A), "A", skipped)
        img_B, path_B = self._read(self.paths_B, ib, "B", skipped)
        return {
            "A": augment(img_A, self.load_size, self.crop_size, self.flip, rng),
            "B": augment(img_B, self.load_size, self.crop_size, self.flip, rng),
            "A_path": path_A,
            "B_path": path_B,
            "skipped": skipped,
        }

    def _read(self, paths: list[str], start: int, domain: str, skipped: list[str]) -> tuple[np.ndarray, str]:
        n = len(paths)
        for k in range(n):
            path = paths[(start + k) % n]
            if path in self._bad:
                continue
            try:
                return read_image(path), path
            except InputError as exc:
                self._bad.add(path)
                skipped.append(str(exc))
        raise DataError(f"domain {domain}: none of its {n} images can be read "
                        f"(first: {paths[0]})")


def collate(samples: list[dict]) -> dict:
    return {
        "A": torch.stack([s["A"] for s in samples]),
        "B": torch.stack([s["B"] for s in samples]),
        "A_paths": [s["A_path"] for s in samples],
        "B_paths": [s["B_path"] for s in samples],
        "skipped": [msg for s in samples for msg in s["skipped"]],
    }


class EpochSampler(Sampler):
    """torch's DistributedSampler (this rank's shard of a permutation seeded by seed + epoch)
    yielding (epoch, index) keys, able to start part-way through an epoch on resume.

    Used in one process too (one replica), so a single-process run and a DDP run over the same
    global batch see the same samples: step k of the single run takes perm[kB:(k+1)B], and
    rank r of W takes perm[kB + r], perm[kB + W + r], ... of the same permutation.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank,
                                        shuffle=shuffle, seed=seed, drop_last=False)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip its first `start` samples (of this rank)."""
        self.epoch = epoch
        self.start = start
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i, index in enumerate(self.inner):
            if i >= self.start:
                yield self.epoch, int(index)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.start)

    @property
    def samples_per_epoch(self) -> int:
        return len(self.inner)


@dataclass(frozen=True)
class SampleImages:
    """Fixed images for the per-epoch grids: uint8 NHWC at crop_size."""

    A: np.ndarray
    B: np.ndarray
    source: str  # "test" or "train"


def load_sample_images(data_root: str | Path, size: int, count: int,
                       max_size: int | None = None) -> SampleImages | None:
    """Evenly spaced picks from testA/testB (trainA/trainB when there is no test split),
    resized to `size` as the reference's test transform does. Unreadable picks are skipped."""
    if count < 1:
        return None
    source = "test"
    paths = {d: find_domain(data_root, f"test{d}", required=False) for d in "AB"}
    if not paths["A"] or not paths["B"]:
        source = "train"
        paths = {d: find_domain(data_root, f"train{d}", max_size=max_size) for d in "AB"}
    out = {}
    for d, ps in paths.items():
        picks = [ps[int(i)] for i in np.linspace(0, len(ps) - 1, min(count, len(ps)))]
        imgs = []
        for p in dict.fromkeys(picks):
            try:
                imgs.append(resize_bicubic(read_image(p), size).permute(1, 2, 0).numpy())
            except InputError as exc:
                log.warning("sample image skipped: %s", exc)
        if not imgs:
            return None
        out[d] = np.stack(imgs)
    return SampleImages(out["A"], out["B"], source)
