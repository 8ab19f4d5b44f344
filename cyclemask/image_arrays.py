"""The numpy half of the uint8 image contract: batch checks and resizing, without torch.

Images are uint8 RGB, HWC (one image) or NHWC (a batch). The runtime (cyclemask.engine) runs
exported graphs through ONNX Runtime or OpenVINO and must not import torch, so everything it
needs about images lives here; the torch half (the conversion to and from the generators'
float tensors, and the eager reference) is `cyclemask.image_tensors`. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def check_batch(batch: np.ndarray, size: int | None = None, what: str = "batch") -> None:
    """Validate a uint8 NHWC RGB batch; the message names what was expected and what came."""
    if not isinstance(batch, np.ndarray):
        raise InputError(f"{what}: expected a numpy uint8 array [N, H, W, 3]; got {type(batch).__name__}")
    if batch.dtype != np.uint8:
        raise InputError(f"{what}: expected dtype uint8; got {batch.dtype}")
    if batch.ndim != 4 or batch.shape[3] != 3:
        raise InputError(f"{what}: expected shape [N, H, W, 3]; got {list(batch.shape)}")
    if batch.shape[0] < 1:
        raise InputError(f"{what}: expected at least one image; got an empty batch")
    if size is not None and (batch.shape[1] != size or batch.shape[2] != size):
        raise InputError(
            f"{what}: expected images of {size}x{size}; got {batch.shape[1]}x{batch.shape[2]}"
        )


def resize(image: np.ndarray, size: int | tuple[int, int], interpolation: str = "area") -> np.ndarray:
    """Resize an HWC uint8 image to size (square int, or (width, height)).

    'area' when shrinking avoids aliasing; 'cubic' is used when enlarging; 'auto' picks between
    the two.
    """
    import cv2

    w, h = (size, size) if isinstance(size, int) else size
    if image.shape[1] == w and image.shape[0] == h:
        return image
    if interpolation == "auto":
        shrinking = w < image.shape[1] and h < image.shape[0]
        flag = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    else:
        flag = {"area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR,
                "nearest": cv2.INTER_NEAREST}[interpolation]
    return cv2.resize(image, (w, h), interpolation=flag)


def center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an HWC image (a view, no copy)."""
    h, w = image.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return image[y0:y0 + s, x0:x0 + s]


def center_crop_resize(image: np.ndarray, size: int, interpolation: str = "auto") -> np.ndarray:
    """The centred square of an image, resized to size x size: how whole photos become model
    inputs where no face is detected (verification images, evaluation of prepared data)."""
    return resize(center_square(image), size, interpolation)
