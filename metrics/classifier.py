"""A masked / unmasked face classifier: a task metric beside FID.

FID on a few hundred faces is noisy and can be fooled by texture; a classifier gives each
direction a success rate a person would agree with: the share of G_mask outputs it calls masked,
and of G_unmask outputs it calls unmasked.

The network is small on purpose (four strided convolutions, ~60 k parameters, 64 x 64 input):
it ships inside the package as an ONNX graph with the uint8 contract of the generators (uint8
[N, 64, 64, 3] RGB in, P(masked) [N] out), so scoring needs neither torch nor a GPU. Training it
(`cyclemask-eval train-classifier`) needs torch.

Training blurs, shrinks and re-brightens both classes at random, so that softness, the typical
look of a small generator's output, is no cue for either class. Scoring (`MaskClassifier`)
lives in the core, cyclemask/mask_classifier.py: the export's INT8 check uses it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cyclemask.errors import ConfigError, DataError, InputError
from cyclemask.image_files import list_images, read_image, write_bytes_atomic
# The scoring half lives in the core, where the export's checks use it too.
from cyclemask.mask_classifier import ASSET_DIR, DEFAULT_PATH, INPUT_NAME, INPUT_SIZE, OUTPUT_NAME, MaskClassifier, fit_input  # noqa: F401

log = logging.getLogger(__name__)

RECORD_NAME = "mask_classifier.json"

Progress = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------------------------
# Training (torch)


@dataclass(frozen=True)
class ClassifierTrainConfig:
    unmasked: tuple[str, ...]
    masked: tuple[str, ...]
    out: str
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("unmasked", "masked"):
            v = getattr(self, name)
            v = (v,) if isinstance(v, (str, os.PathLike)) else tuple(v)
            if not v:
                raise ConfigError(f"{name}: give at least one folder")
            object.__setattr__(self, name, tuple(str(x) for x in v))
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be positive")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in [0, 0.5); got {self.val_fraction!r}")


def _build_net():
    from torch import nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64), *block(64, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 1))


def _uint8_classifier(net):
    """net wrapped to take uint8 NHWC and give P(masked): the normalisation lives in the graph."""
    import torch
    from torch import nn

    class UInt8Classifier(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.net = inner

        def forward(self, image):
            x = image.to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0
            return torch.sigmoid(self.net(x)).reshape(-1)

    return UInt8Classifier(net)


def _load(folders: Sequence[str], label: int) -> list[tuple[np.ndarray, int, str]]:
    items = []
    for folder in folders:
        try:
            paths = list_images(folder)
        except InputError as exc:
            raise DataError(str(exc)) from None
        for p in paths:
            try:
                items.append((fit_input_big(read_image(p)), label, str(p)))
            except InputError as exc:
                log.warning("skipped %s", exc)
    if not items:
        raise DataError(f"no readable images in {', '.join(folders)}")
    return items


def fit_input_big(image: np.ndarray) -> np.ndarray:
    """Centred square at 1.25 x the input size: room for the random crops of training."""
    from cyclemask.face_detect import resize_square

    h, w = image.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return resize_square(np.ascontiguousarray(image[y0:y0 + s, x0:x0 + s]), INPUT_SIZE * 5 // 4)


def _augment(big: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    side = big.shape[0]
    crop = int(rng.integers(INPUT_SIZE, side + 1))
    x, y = (int(rng.integers(0, side - crop + 1)) for _ in range(2))
    img = cv2.resize(big[y:y + crop, x:x + crop], (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    u = rng.random()
    if u < 0.3:  # the softness of an upscaled small generator
        small = int(rng.integers(16, 48))
        img = cv2.resize(cv2.resize(img, (small, small), interpolation=cv2.INTER_AREA), (INPUT_SIZE, INPUT_SIZE),
                         interpolation=cv2.INTER_LINEAR)
    elif u < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.8)))
    gain, bias = float(rng.uniform(0.6, 1.4)), float(rng.uniform(-25, 25))
    img = np.clip(img.astype(np.float32) * gain + bias, 0, 255)
    return np.ascontiguousarray(img.astype(np.uint8))


def _split(items, val_fraction: float, seed: int):
    key = lambda it: hashlib.sha256(f"{seed}:{it[2]}".encode()).hexdigest()  # noqa: E731
    ordered = sorted(items, key=key)
    n_val = int(round(len(ordered) * val_fraction))
    return ordered[n_val:], ordered[:n_val]


def train_classifier(config: ClassifierTrainConfig, progress: Progress | None = None) -> dict:
    """Train, export `out/mask_classifier.onnx` (verified against torch) and its JSON record."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    items = _load(config.unmasked, 0) + _load(config.masked, 1)
    train_items, val_items = _split(items, config.val_fraction, config.seed)
    n_pos = sum(1 for it in train_items if it[1] == 1)
    n_neg = len(train_items) - n_pos
    if not n_pos or not n_neg:
        raise DataError("the classifier needs images of both classes in its training split")
    net = _build_net()
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    steps_per_epoch = max(1, len(train_items) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * steps_per_epoch)
    pos_weight = torch.tensor([n_neg / n_pos], dtype=torch.float32)
    step = 0
    for epoch in range(config.epochs):
        net.train()
        order = rng.permutation(len(train_items))
        for s in range(steps_per_epoch):
            idx = order[s * config.batch_size:(s + 1) * config.batch_size]
            x = np.stack([_augment(train_items[i][0], rng) for i in idx])
            y = torch.tensor([train_items[i][1] for i in idx], dtype=torch.float32)
            xt = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            loss = F.binary_cross_entropy_with_logits(net(xt).reshape(-1), y, pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress:
                progress("train classifier", step, config.epochs * steps_per_epoch)
    net.eval()
    wrapped = _uint8_classifier(net).eval()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / DEFAULT_PATH.name
    _export(wrapped, onnx_path)

    def accuracy(rows):
        if not rows:
            return None
        clf = MaskClassifier(onnx_path)
        p = clf.p_masked([fit_input_from_big(r[0]) for r in rows])
        y = np.array([r[1] for r in rows])
        return {"accuracy": float(((p >= 0.5) == (y == 1)).mean()), "n": len(rows),
                "masked_recall": float((p[y == 1] >= 0.5).mean()) if (y == 1).any() else None,
                "unmasked_recall": float((p[y == 0] < 0.5).mean()) if (y == 0).any() else None}

    # The graph must agree with torch before it is kept (same contract as the generators' export).
    check = np.stack([fit_input_from_big(r[0]) for r in (val_items or train_items)[:64]])
    with torch.no_grad():
        ref = wrapped(torch.from_numpy(check)).numpy()
    got = MaskClassifier(onnx_path).p_masked(list(check))
    err = float(np.abs(ref - got).max())
    if err > 1e-4:
        onnx_path.unlink(missing_ok=True)
        raise DataError(f"the exported classifier differs from torch by {err:.2e} (> 1e-4); not written")
    record = {
        "what": "masked / unmasked face classifier (cyclemask task metric)",
        "input": f"uint8 [N, {INPUT_SIZE}, {INPUT_SIZE}, 3] RGB, the centred square of a face crop",
        "output": "P(masked) [N]",
        "params": int(sum(p.numel() for p in net.parameters())),
        "trained_on": {"unmasked": list(config.unmasked), "masked": list(config.masked)},
        "counts": {"train": len(train_items), "val": len(val_items), "train_masked": n_pos, "train_unmasked": n_neg},
        "epochs": config.epochs, "seed": config.seed,
        "val": accuracy(val_items),
        "onnx_vs_torch_max_abs": err,
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
    }
    write_bytes_atomic(out / RECORD_NAME, (json.dumps(record, indent=1) + "\n").encode())
    return record


def fit_input_from_big(big: np.ndarray) -> np.ndarray:
    """The evaluation view of a training image: the whole square at the input size, as
    `fit_input` sees the original."""
    from cyclemask.face_detect import resize_square

    return resize_square(big, INPUT_SIZE)


def _export(module, path: Path) -> None:
    import io
    import warnings

    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, INPUT_SIZE, INPUT_SIZE, 3, dtype=torch.uint8),), buf,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=17,
                          dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}}, dynamo=False)
    write_bytes_atomic(path, buf.getvalue())
