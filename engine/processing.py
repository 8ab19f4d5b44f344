"""Frame processors: how a decoded frame becomes model inputs, and model outputs a frame again.

The pipeline does not know what a face is. It asks a processor (`engine.contracts.Processor`;
`FrameProcessor` is its base here) for the crops of a frame (uint8 S x S x 3 each; zero crops
means "pass the frame through"), batches crops across frames, and gives the translated crops back
to `finish`, which composes the output frame.

`AlignedProcessor` treats the whole image as the face (the input is already an aligned crop):
resize to the model size, translate, resize back. A face-aware processor (detect, square crop
with margin, feathered paste) plugs in here with the same two methods.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from cyclemask.errors import ConfigError
from cyclemask.image_arrays import resize

from .contracts import Processor


class FrameProcessor(Processor):
    """A `Processor` (see engine/contracts.py) with its model input size checked.

    `state` is whatever `finish` needs (boxes, masks); it travels with the frame.
    Implementations must not keep per-frame state on `self`.
    """

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or size < 1:
            raise ConfigError(f"model image size must be a positive integer; got {size!r}")
        self.size = size

    @abc.abstractmethod
    def prepare(self, image: np.ndarray, ahead: Any = None) -> tuple[list[np.ndarray], Any]: ...

    @abc.abstractmethod
    def finish(self, image: np.ndarray, state: Any, outputs: list[np.ndarray]) -> np.ndarray: ...


class AlignedProcessor(FrameProcessor):
    """The whole image is the model input.

    Shrinking uses area averaging (no aliasing), enlarging uses bicubic on the way in. On the
    way out, enlarging is bilinear: its weights are positive and sum to one, so two backends
    whose model outputs differ by at most 1 LSB still differ by at most 1 LSB after the resize
    (bicubic's negative lobes can turn 1 LSB into 2).
    """

    def prepare(self, image: np.ndarray, ahead: Any = None) -> tuple[list[np.ndarray], Any]:
        h, w = image.shape[:2]
        return [np.ascontiguousarray(resize(image, self.size, interpolation="auto"))], (w, h)

    def finish(self, image: np.ndarray, state: Any, outputs: list[np.ndarray]) -> np.ndarray:
        (w, h), out = state, outputs[0]
        if (w, h) == (self.size, self.size):
            return out
        shrinking = w <= self.size and h <= self.size
        return resize(out, (w, h), interpolation="area" if shrinking else "linear")


class PassThroughProcessor(FrameProcessor):
    """No model input at all: every frame comes out exactly as it went in. What the decode and
    encode around the model cost, and what they do to the pixels, is measured with it."""

    def prepare(self, image: np.ndarray, ahead: Any = None) -> tuple[list[np.ndarray], Any]:
        return [], None

    def finish(self, image: np.ndarray, state: Any, outputs: list[np.ndarray]) -> np.ndarray:
        return image
