"""Training: datasets, data preparation, losses, image pool, schedules, trainer, DDP, sweeps.

The library API is `TrainConfig` (a frozen, validated dataclass) and
`train(config, progress=None, resume=False) -> TrainResult`. Names are loaded lazily so that
importing a sibling module (e.g. data preparation) does not pull in the trainer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "TrainResult", "ProgressInfo", "train", "LOSS_NAMES"]

_LAZY = {
    "TrainConfig": "config",
    "TrainResult": "trainer",
    "ProgressInfo": "trainer",
    "train": "trainer",
    "LOSS_NAMES": "plots",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
