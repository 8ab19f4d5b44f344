"""The paper's networks, faithful to the CycleGAN reference implementation.

Module structure (an `nn.Sequential` called `model`, residual blocks with a `conv_block`) is kept
exactly as in the reference so that its state dicts (`model.10.conv_block.1.weight`, ...) load
without renaming.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .config import DiscriminatorConfig, GeneratorConfig

NormFactory = Callable[[int], nn.Module]


def norm_factory(norm: str) -> NormFactory:
    """Channel count -> normalisation layer, as the reference's `get_norm_layer`."""
    if norm == "instance":
        # The reference uses the instance's own statistics at train and test time.
        return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    if norm == "batch":
        return lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)
    if norm == "syncbatch":
        # Built as BatchNorm2d; the trainer converts it with SyncBatchNorm.convert_sync_batchnorm
        # under DDP, so the same checkpoint loads on one device.
        return lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)
    if norm == "none":
        return lambda c: nn.Identity()
    raise ValueError(f"unknown norm {norm!r}")


def uses_bias(norm: str) -> bool:
    # The reference gives convolutions a bias only with instance norm (batch norm has its own
    # shift; 'none' follows the reference, which also leaves the bias out).
    return norm == "instance"


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, norm_layer: NormFactory, use_bias: bool, dropout: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(dim),
            nn.ReLU(True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(dim),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """ResNet generator: 7x7 stem, two stride-2 downsamplings, residual blocks, two
    transposed-convolution upsamplings, 7x7 head, tanh. Input and output in [-1, 1], NCHW."""

    def __init__(self, config: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.config = config
        ngf = config.ngf
        norm_layer = norm_factory(config.norm)
        use_bias = uses_bias(config.norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(config.in_channels, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                norm_layer(ngf * mult * 2),
                nn.ReLU(True),
            ]
        mult = 4
        for _ in range(config.n_blocks):
            layers.append(ResnetBlock(ngf * mult, norm_layer, use_bias, config.dropout))
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1,
                    output_padding=1, bias=use_bias,
                ),
                norm_layer(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, config.out_channels, kernel_size=7, padding=0),
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator; with n_layers 3 each output sees a 70x70 patch. Returns logits
    (no sigmoid): the GAN losses apply their own."""

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()) -> None:
        super().__init__()
        self.config = config
        ndf = config.ndf
        norm_layer = norm_factory(config.norm)
        use_bias = uses_bias(config.norm)
        kw, padw = 4, 1
        layers: list[nn.Module] = [
            nn.Conv2d(config.in_channels, ndf, kernel_size=kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, True),
        ]
        nf_mult = 1
        for n in range(1, config.n_layers):
            nf_prev, nf_mult = nf_mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * nf_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True),
            ]
        nf_prev, nf_mult = nf_mult, min(2**config.n_layers, 8)
        layers += [
            nn.Conv2d(ndf * nf_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
            norm_layer(ndf * nf_mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """The reference's 'normal' init: conv weights N(0, gain), biases 0; batch-norm scale
    N(1, gain), shift 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


def build_generator(config: GeneratorConfig = GeneratorConfig(), init: bool = True) -> ResnetGenerator:
    net = ResnetGenerator(config)
    return init_weights(net) if init else net


def build_discriminator(config: DiscriminatorConfig = DiscriminatorConfig(), init: bool = True) -> NLayerDiscriminator:
    net = NLayerDiscriminator(config)
    return init_weights(net) if init else net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_macs(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of convolutions and transposed convolutions for one forward pass.

    A convolution costs out_pixels x C_out x C_in/groups x k^2; a transposed convolution is
    counted over its input pixels (in_pixels x C_in x C_out/groups x k^2), the work its
    scatter really does. Norms, activations and padding are not counted.
    """
    total = 0

    def conv_hook(mod: nn.Conv2d, inp, out) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += out.numel() * (mod.in_channels // mod.groups) * k

    def convt_hook(mod: nn.ConvTranspose2d, inp, out) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += inp[0].numel() * (mod.out_channels // mod.groups) * k

    handles = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(convt_hook))
    try:
        with torch.no_grad():
            param = next(net.parameters())
            net(torch.zeros(input_shape, dtype=param.dtype, device=param.device))
    finally:
        for h in handles:
            h.remove()
    return total
