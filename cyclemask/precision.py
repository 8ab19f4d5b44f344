"""IEEE FP32 on CUDA where cyclemask promises FP32 results.

cuDNN convolutions default to TF32 on Ampere and later (torch.backends.cudnn.allow_tf32 is
True): a 10-bit mantissa, which moves generator outputs by several LSB and FID features past
the metric's reporting precision. The FP32 paths (TorchBackend at precision fp32, the parity
reference, feature extraction) turn it off while they run and restore the caller's settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def ieee_fp32(device: torch.device | str) -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls inside the block (a no-op off CUDA).
    The flags are process-wide: they are restored on exit, even on error."""
    if torch.device(device).type != "cuda":
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
