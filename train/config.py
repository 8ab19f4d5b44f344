"""The training configuration: every knob of the paper's Table I and of the reference trainer.

Defaults follow the paper (Methods III.3, Table I): the ResNet-9 generator with instance norm,
70x70 PatchGANs, LSGAN, batch 16, linear policy (Table I trial 2, the best FID_AB), 200 epochs
(100 constant + 100 decaying, as the reference splits them), 286 -> 256 crops, lambda 10 for the
cycle losses, 0.5 for identity, a pool of 50 fakes, Adam 2e-4 (0.5, 0.999).

The config is a frozen dataclass, validated on construction, saved as JSON beside the
checkpoints and stored inside them, so a run can be rebuilt and resumed from its files alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cyclemask.config import NORMS as NETWORK_NORMS
from cyclemask.errors import ConfigError

#: The normalisations training offers: those the networks know, except "none".
NORMS = tuple(n for n in NETWORK_NORMS if n != "none")
GAN_MODES = ("lsgan", "vanilla", "wgangp")
LR_POLICIES = ("linear", "cosine")
DEVICES_HELP = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("auto", "fp32", "bf16")

# Fields that only change how a run is executed, not what it computes: they may differ when a
# run is resumed. Everything else must match the checkpoint, or the continuation is not exact.
RUNTIME_FIELDS = frozenset({
    "data_root", "out_dir", "device", "num_workers", "max_iters", "time_budget_s", "save_every",
    "save_latest_every", "sample_every", "n_samples", "compile", "channels_last", "precision",
    "n_epochs", "n_epochs_decay", "pairs_dir", "mask_pairs_dir", "init_from",
})

_INT_FIELDS = ("n_epochs", "n_epochs_decay", "batch_size", "load_size", "crop_size", "ngf", "ndf",
               "n_blocks", "n_layers_D", "pool_size", "seed", "save_every", "save_latest_every",
               "sample_every", "n_samples", "num_workers", "zone_grow")
_FLOAT_FIELDS = ("lr", "beta1", "beta2", "lambda_A", "lambda_B", "lambda_identity", "lambda_gp",
                 "init_gain", "paired_weight", "zone_weight", "zone_gan_weight")
_BOOL_FIELDS = ("flip", "dropout", "compile", "channels_last")
_OPTIONAL_INT_FIELDS = ("max_iters", "max_dataset_size")
_OPTIONAL_FLOAT_FIELDS = ("time_budget_s",)
_STR_FIELDS = ("data_root", "out_dir", "norm", "gan_mode", "lr_policy", "device", "precision", "pairs_dir",
               "mask_pairs_dir", "init_from")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. Paths are stored as strings so the config is JSON."""

    # Data: data_root holds trainA/ (unmasked, domain A) and trainB/ (masked, domain B), and
    # optionally testA/ testB/ (fixed sample images for the per-epoch grids).
    data_root: str = ""
    out_dir: str = "runs/cyclemask"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    max_dataset_size: int | None = None
    # Schedule (paper: 200 epochs; the reference splits them 100 constant + 100 decaying).
    n_epochs: int = 100
    n_epochs_decay: int = 100
    batch_size: int = 16
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_policy: str = "linear"
    # Networks.
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9
    n_layers_D: int = 3
    norm: str = "instance"
    dropout: bool = False
    init_gain: float = 0.02
    # Objective.
    gan_mode: str = "lsgan"
    lambda_A: float = 10.0
    lambda_B: float = 10.0
    lambda_identity: float = 0.5
    lambda_gp: float = 10.0
    pool_size: int = 50
    # Paired data (a cyclemask extension; the paper trains unpaired only): pairs_dir holds
    # without_mask/ and with_mask/ twins under the same names (cyclemask-data synth writes
    # them); they join the two domains, and paired_weight x L1(G(x), twin of x) is added in both
    # directions for samples that have a twin. 0 (the default) is the paper's objective.
    # mask_pairs_dir: twins for the mask direction's term instead (pairs_dir's then serve the
    # unmask direction only). L1 towards twins of many mask colours teaches G_mask their average,
    # a grey ghost; one consistent style gives it a target it can reach, while unmasking still
    # learns from every colour and pattern.
    pairs_dir: str = ""
    mask_pairs_dir: str = ""
    paired_weight: float = 0.0
    # The mask zone (needs twins with mattes/, as cyclemask-data synth writes them). A twin's
    # matte, grown by zone_grow pixels at crop size, is the zone of the mask direction:
    # zone_weight adds paired_weight x zone_weight x L1 inside it (edges and folds weigh more
    # than the untouched face around them); zone_gan_weight adds a PatchGAN term of a third
    # discriminator (D_zone) that compares the twin's zone with the generated one, both pasted
    # onto the input outside the zone, so it judges only the mask itself. Many mask colours
    # under L1 alone give their average, a grey ghost; the zone PatchGAN rewards one crisp mask.
    zone_weight: float = 0.0
    zone_grow: int = 3
    zone_gan_weight: float = 0.0
    # A generator bundle (generators.pt) whose mask and unmask generators start this run
    # instead of random weights (fine-tuning); the discriminators start fresh. Ignored on resume.
    init_from: str = ""
    # Execution.
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    num_workers: int = 4
    max_iters: int | None = None
    time_budget_s: float | None = None
    # Outputs.
    save_every: int = 5
    save_latest_every: int = 5000
    sample_every: int = 1
    n_samples: int = 4

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            _check_int(name, getattr(self, name))
        for name in _OPTIONAL_INT_FIELDS:
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name))
        for name in _FLOAT_FIELDS + _OPTIONAL_FLOAT_FIELDS:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_FLOAT_FIELDS:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number; got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false; got {getattr(self, name)!r}")
        for name in _STR_FIELDS:
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif not isinstance(value, str):
                raise ConfigError(f"{name} must be a string; got {value!r}")

        _check_min("n_epochs", self.n_epochs, 0)
        _check_min("n_epochs_decay", self.n_epochs_decay, 0)
        if self.n_epochs + self.n_epochs_decay < 1:
            raise ConfigError("n_epochs + n_epochs_decay must be at least 1")
        for name in ("batch_size", "load_size", "crop_size", "ngf", "ndf", "n_blocks", "n_layers_D",
                     "save_every", "sample_every"):
            _check_min(name, getattr(self, name), 1)
        for name in ("pool_size", "save_latest_every", "n_samples", "num_workers", "seed", "zone_grow"):
            _check_min(name, getattr(self, name), 0)
        if self.max_iters is not None:
            _check_min("max_iters", self.max_iters, 1)
        if self.max_dataset_size is not None:
            _check_min("max_dataset_size", self.max_dataset_size, 1)
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError(f"time_budget_s must be positive; got {self.time_budget_s}")
        if self.crop_size > self.load_size:
            raise ConfigError(f"crop_size ({self.crop_size}) must not exceed load_size ({self.load_size})")
        if self.crop_size % 4:
            # Two stride-2 downsamplings and two x2 upsamplings give back the input size only
            # when it is a multiple of 4.
            raise ConfigError(f"crop_size must be a multiple of 4 (the generator halves it twice); got {self.crop_size}")
        side = self.crop_size
        for _ in range(self.n_layers_D):
            side = (side + 2 - 4) // 2 + 1
        side -= 2  # the two stride-1 4x4 convolutions of the PatchGAN head
        if side < 1:
            raise ConfigError(
                f"crop_size {self.crop_size} is too small for a {self.n_layers_D}-layer PatchGAN "
                f"(its output would be empty); use a larger crop or fewer n_layers_D")
        if not 0 < self.lr:
            raise ConfigError(f"lr must be positive; got {self.lr}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1); got {getattr(self, name)}")
        for name in ("lambda_A", "lambda_B", "lambda_identity", "lambda_gp", "init_gain", "paired_weight",
                     "zone_weight", "zone_gan_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative; got {getattr(self, name)}")
        if self.paired_weight > 0 and not (self.pairs_dir or self.mask_pairs_dir):
            raise ConfigError("paired_weight > 0 needs pairs_dir: a folder of without_mask/ and with_mask/ "
                              "twins (cyclemask-data synth writes one)")
        if (self.zone_weight > 0 or self.zone_gan_weight > 0) and not (self.pairs_dir or self.mask_pairs_dir):
            raise ConfigError("zone_weight / zone_gan_weight need twins with mattes: pairs_dir or mask_pairs_dir "
                              "(cyclemask-data synth writes mattes/ beside with_mask/)")
        if self.zone_weight > 0 and self.paired_weight <= 0:
            raise ConfigError("zone_weight scales the paired L1 term: set paired_weight > 0 too")
        _check_choice("norm", self.norm, NORMS)
        _check_choice("gan_mode", self.gan_mode, GAN_MODES)
        _check_choice("lr_policy", self.lr_policy, LR_POLICIES)
        _check_choice("precision", self.precision, PRECISIONS)
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"device must be one of {DEVICES_HELP}; got {dev!r}")

    @property
    def total_epochs(self) -> int:
        return self.n_epochs + self.n_epochs_decay

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a training config must be a mapping; got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training config keys: {', '.join(unknown)} "
                              f"(valid: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TrainConfig":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read config ({exc.strerror or exc})") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON ({exc})") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def differences(self, other: "TrainConfig") -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: name -> (self's, other's)."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer; got {value!r}")


def _check_min(name: str, value: int, low: int) -> None:
    if value < low:
        what = "positive" if low == 1 else f"at least {low}"
        raise ConfigError(f"{name} must be {what}; got {value}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
