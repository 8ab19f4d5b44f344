"""Unpaired image folders for CycleGAN training.

Layout: `<data_root>/trainA/` (domain A, unmasked faces) and `<data_root>/trainB/` (domain B,
masked faces), searched recursively; optionally `testA/` and `testB/`. Every image is decoded to
RGB by `cyclemask.image_files.read_image`.

Pairs (a cyclemask extension, optional): a folder with `without_mask/` and `with_mask/` holding
the same face under the same relative name (what `cyclemask-data synth` writes). Its images join
the two domains, and a sample drawn from a pair carries its twin, cropped and flipped exactly as
the sample is, for the trainer's paired L1 term.

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
from cyclemask.image_files import IMAGE_EXTENSIONS, list_images, read_image
from cyclemask.image_tensors import preprocess

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


PAIR_DIRS = ("without_mask", "with_mask")  # unmasked (A) and masked (B) halves of a pairs folder


def find_pairs(pairs_dir: str | Path, max_size: int | None = None) -> list[tuple[Path, Path]]:
    """(unmasked, masked) paths of a pairs folder, matched by relative name; a clear DataError
    when the folder is not one or holds no pair."""
    root = Path(pairs_dir)
    halves = [root / d for d in PAIR_DIRS]
    missing = [str(h) for h in halves if not h.is_dir()]
    if missing:
        raise DataError(f"{root}: not a pairs folder ({', '.join(missing)} missing; a pairs folder holds "
                        f"{PAIR_DIRS[0]}/ and {PAIR_DIRS[1]}/ with the same file names, as cyclemask-data synth writes)")
    try:
        masked = {p.relative_to(halves[1]).as_posix(): p for p in list_images(halves[1])}
        plain = list_images(halves[0])
    except InputError as exc:
        raise DataError(str(exc)) from None
    pairs = [(p, masked[p.relative_to(halves[0]).as_posix()]) for p in plain
             if p.relative_to(halves[0]).as_posix() in masked]
    if not pairs:
        raise DataError(f"{root}: no pairs (no file name is in both {PAIR_DIRS[0]}/ and {PAIR_DIRS[1]}/)")
    return pairs[:max_size] if max_size else pairs


MATTE_DIR = "mattes"  # beside with_mask/: each twin's exact mask matte, <name>.png (cyclemask-data synth)


def matte_path(twin: str | Path) -> Path | None:
    """Where a masked twin's matte lies (<pairs>/mattes/<name>.png for <pairs>/with_mask/<name>),
    or None when the twin is not inside a with_mask/ folder."""
    p = Path(twin)
    parts = p.parts
    if PAIR_DIRS[1] not in parts[:-1]:
        return None
    i = len(parts) - 1 - parts[:-1][::-1].index(PAIR_DIRS[1]) - 1
    return Path(*parts[:i], MATTE_DIR, *parts[i + 1:]).with_suffix(".png")


def merge_pairs(paths_A: Sequence[Path], pairs: Sequence[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Pairs whose unmasked image is byte for byte a file of domain A are re-pointed at that
    file, so a face that is both in trainA/ and in the pairs folder (synth copies its sources)
    is one sample with a twin, not two samples."""
    import hashlib

    if not pairs:
        return []
    by_size: dict[int, list[Path]] = {}
    for p in paths_A:
        by_size.setdefault(Path(p).stat().st_size, []).append(Path(p))
    digests: dict[Path, str] = {}

    def digest(p: Path) -> str:
        if p not in digests:
            digests[p] = hashlib.sha256(p.read_bytes()).hexdigest()
        return digests[p]

    out = []
    for a, b in pairs:
        same = [p for p in by_size.get(Path(a).stat().st_size, []) if digest(p) == digest(Path(a))]
        out.append((same[0] if same else Path(a), Path(b)))
    return out


def draw_crop(rng: np.random.Generator, load_size: int, crop_size: int) -> tuple[int, int, bool]:
    """The random part of `augment`: (x, y, flip). Always draws three numbers, so the stream of
    draws does not depend on the settings."""
    x = int(rng.integers(0, load_size - crop_size + 1))
    y = int(rng.integers(0, load_size - crop_size + 1))
    return x, y, bool(rng.random() < 0.5)


def apply_crop(image: np.ndarray, load_size: int, crop_size: int, flip: bool,
               drawn: tuple[int, int, bool]) -> torch.Tensor:
    """Resize to load_size, crop and flip as drawn; float CHW in [-1, 1]."""
    x, y, do_flip = drawn
    t = resize_bicubic(image, load_size)[:, y:y + crop_size, x:x + crop_size]
    if flip and do_flip:
        t = t.flip(-1)
    return preprocess(t.permute(1, 2, 0)[None].contiguous())[0]


def augment(image: np.ndarray, load_size: int, crop_size: int, flip: bool,
            rng: np.random.Generator) -> torch.Tensor:
    """The reference's training transform: resize to load_size, random crop to crop_size,
    random horizontal flip; returns float CHW in [-1, 1]."""
    return apply_crop(image, load_size, crop_size, flip, draw_crop(rng, load_size, crop_size))


class UnpairedDataset(Dataset):
    """Indexed by (epoch, index) keys (see `EpochSampler`). Length is the larger domain, as in
    the reference; A is walked in order (modulo its size), B is drawn at random.

    pairs: (unmasked, masked) twins; each joins its domain, and a sample that is one of them
    also returns the other as `A_twin` / `B_twin` with `A_paired` / `B_paired` set (zeros and
    False for samples without a twin). mask_pairs: twins that give A samples their `A_twin`
    instead (pairs then give B samples theirs only); their masked halves join domain B too."""

    def __init__(self, paths_A: Sequence[Path], paths_B: Sequence[Path], load_size: int,
                 crop_size: int, flip: bool = True, seed: int = 0,
                 pairs: Sequence[tuple[Path, Path]] = (), mask_pairs: Sequence[tuple[Path, Path]] = (),
                 mattes: bool = False) -> None:
        self.paths_A = [str(p) for p in paths_A]
        known_A = set(self.paths_A)
        for a, _ in list(pairs) + list(mask_pairs):
            if str(a) not in known_A:
                known_A.add(str(a))
                self.paths_A.append(str(a))
        self.paths_B = [str(p) for p in paths_B] + [str(b) for _, b in list(pairs) + list(mask_pairs)]
        if not self.paths_A or not self.paths_B:
            raise DataError("both domains need at least one image")
        self.twin_of_A = {str(a): str(b) for a, b in (mask_pairs or pairs)}
        self.twin_of_B = {str(b): str(a) for a, b in list(pairs) + list(mask_pairs)}
        self.paired = bool(pairs or mask_pairs)
        # mattes: A samples with a twin also return `A_matte` (1 x H x W in 0..1, cropped as the
        # sample) and `A_has_matte`; a twin without a matte file gets zeros and False.
        self.mattes = mattes
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
        crop_A = draw_crop(rng, self.load_size, self.crop_size)
        crop_B = draw_crop(rng, self.load_size, self.crop_size)
        sample = {
            "A": apply_crop(img_A, self.load_size, self.crop_size, self.flip, crop_A),
            "B": apply_crop(img_B, self.load_size, self.crop_size, self.flip, crop_B),
            "A_path": path_A,
            "B_path": path_B,
            "skipped": skipped,
        }
        if self.paired:
            for d, path, drawn, twins in (("A", path_A, crop_A, self.twin_of_A), ("B", path_B, crop_B, self.twin_of_B)):
                twin = self._read_twin(twins.get(path), skipped)
                sample[f"{d}_paired"] = twin is not None
                sample[f"{d}_twin"] = (apply_crop(twin, self.load_size, self.crop_size, self.flip, drawn)
                                       if twin is not None else torch.zeros_like(sample[d]))
            if self.mattes:
                matte = None
                twin_path = self.twin_of_A.get(path_A)
                if sample["A_paired"] and twin_path is not None:
                    matte = self._read_matte(matte_path(twin_path), img_A.shape[:2], skipped)
                sample["A_has_matte"] = matte is not None
                sample["A_matte"] = (((apply_crop(matte, self.load_size, self.crop_size, self.flip, crop_A)[:1] + 1.0)
                                      * 0.5).clamp_(0.0, 1.0)
                                     if matte is not None else torch.zeros_like(sample["A"][:1]))
        return sample

    def _read_matte(self, path: Path | None, shape: tuple[int, int], skipped: list[str]) -> np.ndarray | None:
        """The matte as a 3-channel uint8 image (so it crops exactly as the photos do)."""
        if path is None or str(path) in self._bad:
            return None
        import cv2

        m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if m is None or m.shape[:2] != tuple(shape):
            self._bad.add(str(path))
            what = "missing or unreadable" if m is None else f"{m.shape[1]}x{m.shape[0]}, not the twin's size"
            skipped.append(f"{path}: matte {what}")
            return None
        return np.repeat(m[..., None], 3, axis=2)

    def _read_twin(self, path: str | None, skipped: list[str]) -> np.ndarray | None:
        if path is None or path in self._bad:
            return None
        try:
            return read_image(path)
        except InputError as exc:
            self._bad.add(path)
            skipped.append(str(exc))
            return None

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
    batch = {
        "A": torch.stack([s["A"] for s in samples]),
        "B": torch.stack([s["B"] for s in samples]),
        "A_paths": [s["A_path"] for s in samples],
        "B_paths": [s["B_path"] for s in samples],
        "skipped": [msg for s in samples for msg in s["skipped"]],
    }
    if "A_twin" in samples[0]:
        for d in "AB":
            batch[f"{d}_twin"] = torch.stack([s[f"{d}_twin"] for s in samples])
            batch[f"{d}_paired"] = torch.tensor([s[f"{d}_paired"] for s in samples], dtype=torch.bool)
    if "A_matte" in samples[0]:
        batch["A_matte"] = torch.stack([s["A_matte"] for s in samples])
        batch["A_has_matte"] = torch.tensor([s["A_has_matte"] for s in samples], dtype=torch.bool)
    return batch


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
