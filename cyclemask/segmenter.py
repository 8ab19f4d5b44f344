"""Running the mask segmenter's graph (torch-free): face crops in, mask mattes out.

The graph (`cyclemask.export.segmenter`) takes uint8 [N, S, S, 3] RGB crops and gives a uint8
matte [N, S, S, 1]; `MaskSegmenter` runs it with ONNX Runtime on the CPU and hands back float
mattes in [0, 1]. The embedded one ships beside the embedded generators. Evaluation uses it to
measure how much mask is left after unmasking, and the Telea baseline to find its holes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .artifacts import ArtefactError
from .errors import InputError

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "demo"
DEFAULT_PATH = ASSET_DIR / "segmenter.onnx"


class Segmenter:
    """uint8 crops -> mask mattes; `area(crops)` gives each crop's mask area as a fraction."""

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path is not None else DEFAULT_PATH
        if not self.path.is_file():
            raise ArtefactError(f"{self.path}: no such segmenter graph")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own types for unreadable graphs
            raise ArtefactError(f"{self.path}: not a readable ONNX graph ({str(exc).splitlines()[0][:200]})") from None
        inp, out = self._session.get_inputs(), self._session.get_outputs()
        if len(inp) != 1 or len(out) != 1 or inp[0].type != "tensor(uint8)" or out[0].shape[-1] != 1:
            raise ArtefactError(f"{self.path}: not a cyclemask segmenter (uint8 [N, S, S, 3] in, [N, S, S, 1] out)")
        self.size = int(inp[0].shape[1])
        self._input = inp[0].name

    def __call__(self, crops: np.ndarray, batch: int = 32) -> np.ndarray:
        """uint8 [N, S, S, 3] -> float32 [N, S, S] in [0, 1]."""
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
            raise InputError(f"segmenter input must be uint8 [N, {self.size}, {self.size}, 3]; "
                             f"got {crops.dtype} {list(crops.shape)}")
        out = [self._session.run(None, {self._input: np.ascontiguousarray(crops[i:i + batch])})[0]
               for i in range(0, len(crops), batch)]
        return (np.concatenate(out)[..., 0].astype(np.float32) / 255.0) if out else np.zeros((0, self.size, self.size), np.float32)

    def area(self, crops: np.ndarray) -> np.ndarray:
        """The share of each crop the segmenter calls mask (matte > 0.5)."""
        return (self(crops) > 0.5).mean(axis=(1, 2))


def grow_hole(matte: np.ndarray, grow: int = 3) -> np.ndarray:
    """uint8 hole (0/1) [S, S] from a float matte: > 0.5, grown by `grow` pixels (as the
    restoring graph grows its own)."""
    import cv2

    hole = (matte > 0.5).astype(np.uint8)
    if grow > 0:
        hole = cv2.dilate(hole, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return hole
