"""The CycleGAN objective's pieces: the adversarial loss in its three forms and the WGAN-GP
gradient penalty. The cycle and identity terms are plain L1 (see the trainer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cyclemask.errors import ConfigError

GAN_MODES = ("lsgan", "vanilla", "wgangp")


class GANLoss:
    """Adversarial loss on the PatchGAN's logits, a mean over every patch of every image.

    lsgan: least squares against 1 (real) / 0 (fake); vanilla: the log-loss of the original GAN,
    as BCE with logits (numerically safe: the discriminator outputs logits); wgangp: the
    Wasserstein critic, -mean for real and +mean for fake.
    """

    def __init__(self, mode: str) -> None:
        if mode not in GAN_MODES:
            raise ConfigError(f"gan_mode must be one of {', '.join(GAN_MODES)}; got {mode!r}")
        self.mode = mode

    def __call__(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        pred = prediction.float()
        if self.mode == "wgangp":
            return -pred.mean() if target_is_real else pred.mean()
        target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
        if self.mode == "lsgan":
            return F.mse_loss(pred, target)
        return F.binary_cross_entropy_with_logits(pred, target)


def gradient_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): mean over the batch of (||grad D(x_hat)||_2 - 1)^2 at
    random interpolates x_hat of real and fake. `generator` (CPU) draws the mixing weights, so
    the penalty is reproducible and resumable."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device, real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = discriminator(x_hat)
    (grad,) = torch.autograd.grad(out.float().sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).float().norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()
