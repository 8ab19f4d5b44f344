"""The torch half of the uint8 image contract: uint8 RGB images <-> the generators' tensors.

Images are uint8 RGB, HWC (one image) or NHWC (a batch). Networks take float NCHW in [-1, 1].
The exported graphs embed `preprocess` and `postprocess` (see `UInt8Translator`), and the eager
reference calls the same functions, so parity compares backends and nothing else. The numpy
half (batch checks, resizing) is `cyclemask.image_arrays`, which the torch-free runtime uses.

Rounding is round-half-to-even (torch.round, ONNX Round and numpy.rint all do it) followed by a
clip to [0, 255]; float -> uint8 casts truncate, so the rounding must come first.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .image_arrays import check_batch


# The order of the operations below is part of the graph contract. TensorRT's ONNX parser
# accepts a uint8 tensor only as a graph input or output ("TensorRT does not support UINT8 types
# for intermediate tensors"), and its Transpose takes no uint8 at all: so the input is cast to
# float before the layout change, and the output is cast to uint8 as the very last operation
# (docs/ARCHITECTURE.md, "The graph contract"). The values are the same either way.


def preprocess(batch_u8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC RGB -> float32 NCHW in [-1, 1] (cast first, then the layout change)."""
    return batch_u8.to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0


def postprocess(batch: torch.Tensor) -> torch.Tensor:
    """float NCHW in [-1, 1] -> uint8 NHWC RGB (round half to even, clip, layout, then cast)."""
    y = torch.round((batch.to(torch.float32) + 1.0) * 127.5)
    return torch.clamp(y, 0.0, 255.0).permute(0, 2, 3, 1).to(torch.uint8)


class UInt8Translator(nn.Module):
    """A generator wrapped with the uint8 contract: uint8 [N, S, S, 3] in and out.

    This module is what gets exported, so normalisation, layout change, rounding and clamping
    live inside the graph and every backend shares one definition of them.
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return postprocess(self.generator(preprocess(image)))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 HWC or NHWC RGB numpy -> float32 NCHW tensor in [-1, 1]."""
    arr = images[None] if images.ndim == 3 else images
    check_batch(arr, what="image" if images.ndim == 3 else "batch")
    return preprocess(torch.from_numpy(np.ascontiguousarray(arr)))


def to_uint8(batch: torch.Tensor) -> np.ndarray:
    """float NCHW tensor in [-1, 1] -> uint8 NHWC numpy."""
    return postprocess(batch.detach().cpu()).contiguous().numpy()


@torch.no_grad()
def eager_translate(generator: nn.Module, batch_u8: np.ndarray) -> np.ndarray:
    """The eager reference: uint8 NHWC in, uint8 NHWC out, through `preprocess`/`postprocess`."""
    check_batch(batch_u8)
    param = next(generator.parameters())
    x = torch.from_numpy(np.ascontiguousarray(batch_u8)).to(param.device)
    y = postprocess(generator(preprocess(x).to(param.dtype)))
    return y.cpu().numpy()
