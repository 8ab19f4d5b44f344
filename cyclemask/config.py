"""Frozen, validated network configurations.

The config travels inside every checkpoint so that the file alone rebuilds its network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

NORMS = ("instance", "batch", "syncbatch", "none")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")


@dataclass(frozen=True)
class GeneratorConfig:
    """ResNet generator of the CycleGAN reference (`resnet_9blocks` by default)."""

    ngf: int = 64
    n_blocks: int = 9
    norm: str = "instance"
    dropout: bool = False
    in_channels: int = 3
    out_channels: int = 3

    def __post_init__(self) -> None:
        _check_positive("ngf", self.ngf)
        _check_positive("n_blocks", self.n_blocks)
        _check_positive("in_channels", self.in_channels)
        _check_positive("out_channels", self.out_channels)
        _check_choice("norm", self.norm, NORMS)
        if not isinstance(self.dropout, bool):
            raise ConfigError(f"dropout must be true or false; got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GeneratorConfig":
        return _from_dict(cls, data)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """70x70 PatchGAN discriminator (`basic`, n_layers 3)."""

    ndf: int = 64
    n_layers: int = 3
    norm: str = "instance"
    in_channels: int = 3

    def __post_init__(self) -> None:
        _check_positive("ndf", self.ndf)
        _check_positive("n_layers", self.n_layers)
        _check_positive("in_channels", self.in_channels)
        _check_choice("norm", self.norm, NORMS)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DiscriminatorConfig":
        return _from_dict(cls, data)


def _from_dict(cls, data: dict[str, Any]):
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} needs a mapping; got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} keys: {', '.join(unknown)} (valid: {', '.join(sorted(known))})"
        )
    return cls(**data)
