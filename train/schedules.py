"""Learning-rate policies of the paper's Table I, as multipliers of the base rate per epoch."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from cyclemask.errors import ConfigError

LR_POLICIES = ("linear", "cosine")


def lr_factor(policy: str, n_epochs: int, n_epochs_decay: int) -> Callable[[int], float]:
    """epoch (0-based, the epoch about to run) -> multiplier of the base learning rate.

    linear: the reference's rule, 1 for the first n_epochs, then falling by 1/(n_epochs_decay+1)
    each epoch (its last epoch runs at 1/(n_epochs_decay+1) of the base rate; the next would be 0).
    cosine: half a cosine from 1 at epoch 0 to 0 after n_epochs + n_epochs_decay epochs. (The
    reference's cosine restarts after n_epochs and climbs back up during the decay epochs; a
    single annealing over the whole run is what the policy's name promises.)
    """
    if policy == "linear":
        def linear(epoch: int) -> float:
            return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)
        return linear
    if policy == "cosine":
        total = max(1, n_epochs + n_epochs_decay)

        def cosine(epoch: int) -> float:
            return 0.5 * (1.0 + math.cos(math.pi * min(epoch, total) / total))
        return cosine
    raise ConfigError(f"lr_policy must be one of {', '.join(LR_POLICIES)}; got {policy!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, policy: str, n_epochs: int,
                    n_epochs_decay: int) -> LambdaLR:
    """Stepped once per epoch. Its state_dict holds no function (LambdaLR stores None for plain
    functions), so checkpoints stay loadable with weights_only=True."""
    return LambdaLR(optimizer, lr_lambda=lr_factor(policy, n_epochs, n_epochs_decay))
