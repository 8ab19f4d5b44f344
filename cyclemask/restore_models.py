"""The erase-then-restore unmasking networks: a mask segmenter and a restoring U-Net.

CycleGAN's cycle loss rewards an "unmasked" output that still carries the mask (the mask must be
rebuilt from it), so the unmasking path finds the mask first and fills only there:

- `MaskSegmenter` gives, for a face crop, the matte of the mask on it (logits; 0 where there is
  no mask). It is trained on synthetic twins whose exact mattes `cyclemask-data synth` writes.
- `Restorer` takes the crop with the hole erased and the hole itself, and gives the whole face.
  It is trained self-supervised on bare faces with mask-shaped holes warped to their landmarks.
- `EraseRestore` joins them into one image -> image network: segment, grow the matte into a
  hole, erase, restore, and composite so that every pixel outside the hole is the input's own.
  Wrapped in the uint8 contract it exports as a single-input graph, so export, parity, the
  TensorRT lint and every backend take it as they take a CycleGAN generator.

Every operation is one that TensorRT's ONNX parser and OpenVINO take in FP16 and FP32 (Conv,
Relu, Resize nearest, MaxPool, Sigmoid, Clip, Concat): no boolean tensors, no data-dependent shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError


def _check_channels(name: str, value: tuple[int, ...]) -> None:
    if not value or any(int(c) < 1 for c in value):
        raise ConfigError(f"{name} must be positive channel counts; got {value!r}")


@dataclass(frozen=True)
class SegmenterConfig:
    channels: tuple[int, ...] = (16, 32, 48, 64)
    # Dilated residual blocks at the coarsest stage: context across the whole crop, which tells
    # a mask from a collar or a scarf of the same colour. 0 in the files written before them.
    n_res: int = 0
    # At inference, average the logits of the crop and of its mirror image: the two views err
    # differently at a mask's edges and on clothing, for twice the segmenter's time. Training
    # is unchanged (its batches are flipped at random already).
    mirror: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "n_res", int(self.n_res))
        if not isinstance(self.mirror, bool):
            raise ConfigError(f"segmenter mirror must be true or false; got {self.mirror!r}")
        _check_channels("segmenter channels", self.channels)
        if self.n_res < 0:
            raise ConfigError(f"segmenter n_res must be >= 0; got {self.n_res}")

    def to_dict(self) -> dict:
        # n_res and mirror only when set, so files without them stay readable by earlier releases
        return {"channels": list(self.channels), **({"n_res": self.n_res} if self.n_res else {}),
                **({"mirror": True} if self.mirror else {})}


@dataclass(frozen=True)
class RestorerConfig:
    channels: tuple[int, ...] = (16, 32, 64, 96)
    n_res: int = 4
    # Hole growth in pixels of the model's input (max-pool radius) when EraseRestore turns a
    # segmenter matte into a hole: masks have soft, blurred edges that the matte's 0.5 level cuts.
    grow: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        _check_channels("restorer channels", self.channels)
        if self.n_res < 0 or self.grow < 0:
            raise ConfigError(f"restorer n_res and grow must be >= 0; got {self.n_res}, {self.grow}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation),
                         nn.LeakyReLU(0.2, inplace=True))


class _Res(nn.Module):
    def __init__(self, ch: int, dilation: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.b = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.b(F.leaky_relu(self.a(x), 0.2))


class _UNet(nn.Module):
    """Encoder of stride-2 stages, optional dilated residual blocks, decoder with skips."""

    def __init__(self, cin: int, cout: int, channels: tuple[int, ...], n_res: int) -> None:
        super().__init__()
        self.inc = nn.Sequential(_conv(cin, channels[0]), _conv(channels[0], channels[0]))
        self.down = nn.ModuleList(
            nn.Sequential(_conv(a, b, stride=2), _conv(b, b)) for a, b in zip(channels[:-1], channels[1:]))
        dil = (1, 2, 4, 8)
        self.mid = nn.Sequential(*[_Res(channels[-1], dil[i % len(dil)]) for i in range(n_res)])
        self.up = nn.ModuleList(
            nn.Sequential(_conv(b + a, a), _conv(a, a)) for a, b in zip(channels[:-1], channels[1:]))
        self.out = nn.Conv2d(channels[0], cout, 3, padding=1)

    def forward(self, x):
        skips = [self.inc(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        y = self.mid(skips.pop())
        for stage in reversed(self.up):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            y = stage(torch.cat([y, skips.pop()], dim=1))
        return self.out(y)


class MaskSegmenter(nn.Module):
    """Face crop in [-1, 1] NCHW -> mask logits N x 1 x S x S. Works at half the input size
    (a matte needs no fine detail) and is enlarged back."""

    def __init__(self, config: SegmenterConfig = SegmenterConfig()) -> None:
        super().__init__()
        self.config = config
        self.net = _UNet(3, 1, config.channels, config.n_res)

    def forward(self, x):
        small = F.avg_pool2d(x, 2)
        logits = self.net(small)
        if self.config.mirror and not self.training:
            # A constant index (Gather), not torch.flip: the exporter writes flip as a Slice with
            # negative steps, a form the TensorRT lint does not check.
            back = torch.arange(small.shape[3] - 1, -1, -1, device=small.device)
            logits = 0.5 * (logits + self.net(small.index_select(3, back)).index_select(3, back))
        return F.interpolate(logits, scale_factor=2.0, mode="bilinear", align_corners=False)


class Restorer(nn.Module):
    """(crop with the hole erased to 0 in [-1, 1], hole in {0, 1}) -> the whole face in [-1, 1]."""

    def __init__(self, config: RestorerConfig = RestorerConfig()) -> None:
        super().__init__()
        self.config = config
        self.net = _UNet(4, 3, config.channels, config.n_res)

    def forward(self, erased, hole):
        return torch.tanh(self.net(torch.cat([erased, hole * 2.0 - 1.0], dim=1)))


def erase(x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """The crop with the hole set to 0 (mid-grey in [-1, 1])."""
    return x * (1.0 - hole)


def grow_hole(matte: torch.Tensor, grow: int) -> torch.Tensor:
    """A soft matte in [0, 1] -> a hole: 1 wherever the matte passes 0.5 within `grow` pixels,
    with a 1-pixel ramp, all in float (TensorRT takes no boolean intermediate)."""
    hard = torch.clamp((matte - 0.5) * 8.0 + 0.5, 0.0, 1.0)
    if grow > 0:
        hard = F.max_pool2d(hard, 2 * grow + 1, stride=1, padding=grow)
    return hard


class EraseRestore(nn.Module):
    """Segment, erase, restore, composite: image in [-1, 1] -> image in [-1, 1]. Outside the
    hole the output is the input exactly, so a crop without a mask comes back unchanged."""

    def __init__(self, segmenter: MaskSegmenter, restorer: Restorer) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.restorer = restorer
        self.config = restorer.config

    def hole(self, x: torch.Tensor) -> torch.Tensor:
        return grow_hole(torch.sigmoid(self.segmenter(x)), self.restorer.config.grow)

    def forward(self, x):
        hole = self.hole(x)
        restored = self.restorer(erase(x, hole), hole)
        return x + hole * (restored - x)


class SegmenterGraph(nn.Module):
    """The segmenter in the uint8 contract: uint8 [N, S, S, 3] -> uint8 matte [N, S, S, 1]
    (0..255, 255 = mask). Cast first, layout in float, round and clip, cast last (TensorRT)."""

    def __init__(self, segmenter: MaskSegmenter) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, image):
        x = image.to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0
        m = torch.sigmoid(self.segmenter(x)) * 255.0
        return torch.clamp(torch.round(m), 0.0, 255.0).permute(0, 2, 3, 1).to(torch.uint8)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
