"""IEEE FP32 on CUDA where cyclemask promises FP32 results.

cuDNN convolutions default to TF32 on Ampere and later: a 10-bit mantissa, which moves generator
outputs by several LSB and FID features past the metric's reporting precision. The FP32 paths
(TorchBackend at precision fp32, the parity reference, feature extraction) turn it off while
they run and restore the caller's settings.

torch 2.9 added per-backend precision settings (`torch.backends.cudnn.conv.fp32_precision`,
`torch.backends.cuda.matmul.fp32_precision`: "ieee" or "tf32") and deprecated the `allow_tf32`
flags; mixing the two raises in torch >= 2.9. The new settings are used where they exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def has_precision_api() -> bool:
    """Whether this torch has the per-backend `fp32_precision` settings (torch >= 2.9)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    return hasattr(conv, "fp32_precision") and hasattr(torch.backends.cuda.matmul, "fp32_precision")


def tf32_settings() -> tuple:
    """The process-wide settings `ieee_fp32` changes, in the API this torch has."""
    if has_precision_api():
        return (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    return (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)


def _apply(settings: tuple) -> None:
    if has_precision_api():
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = settings
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = settings


#: The settings that mean "IEEE FP32, no TF32", in each API.
IEEE = ("ieee", "ieee")
_IEEE_LEGACY = (False, False)


@contextlib.contextmanager
def ieee_fp32(device: torch.device | str) -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls inside the block (a no-op off CUDA).
    The settings are process-wide: they are restored on exit, even on error."""
    if torch.device(device).type != "cuda":
        yield
        return
    saved = tf32_settings()
    _apply(IEEE if has_precision_api() else _IEEE_LEGACY)
    try:
        yield
    finally:
        _apply(saved)
