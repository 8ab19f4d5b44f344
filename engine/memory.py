"""A source and a sink in memory: images that are already decoded, outputs kept as arrays.

For runs whose frames do not come from files or go to them (the demo's portraits, library
callers): they go through the same `Pipeline` as a folder or a video, so there is one inference
path (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from cyclemask.errors import InputError

from .contracts import Frame, Sink, Source


class MemorySource(Source):
    """Frames from (key, uint8 HxWx3 RGB image) pairs, in order."""

    kind = "memory"

    def __init__(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        self.items = list(items)
        if not self.items:
            raise InputError("no images to translate")
        self.problems: list[str] = []

    @property
    def total(self) -> int:
        return len(self.items)

    def describe(self) -> str:
        return f"{self.total} image{'s' if self.total != 1 else ''} in memory"

    def __iter__(self) -> Iterator[Frame]:
        for i, (key, image) in enumerate(self.items):
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                got = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
                yield Frame(i, key, None, error=f"{key}: expected a uint8 RGB image [H, W, 3]; got {got}")
                continue
            yield Frame(i, key, image)


class MemorySink(Sink):
    """Keeps each output image by its frame's key."""

    fatal_write_errors = True

    def __init__(self) -> None:
        self.images: dict[str, np.ndarray] = {}

    def describe(self) -> str:
        return "memory"

    def write(self, frame: Frame, image: np.ndarray) -> None:
        self.images[frame.key] = image

    def finish(self, commit: bool) -> list[str]:
        return []
