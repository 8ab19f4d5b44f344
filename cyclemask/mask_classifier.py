"""The masked / unmasked face classifier's scoring half: the shipped ONNX graph on ONNX Runtime.

A task metric beside pixel figures and FID: the share of G_mask outputs it calls masked, and of
G_unmask outputs it calls unmasked. It scores without torch (uint8 [N, 64, 64, 3] RGB in,
P(masked) [N] out), so evaluation (metrics/classifier.py, which also trains it) and
the export's low-precision checks (export/lowp.py) share this one definition.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError

INPUT_SIZE = 64
INPUT_NAME, OUTPUT_NAME = "image", "p_masked"
ASSET_DIR = Path(__file__).resolve().parent / "assets" / "classifier"
DEFAULT_PATH = ASSET_DIR / "mask_classifier.onnx"


def fit_input(image: np.ndarray) -> np.ndarray:
    """The centred square of a uint8 RGB image at the classifier's input size."""
    from .face_detect import resize_square

    h, w = image.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return resize_square(np.ascontiguousarray(image[y0:y0 + s, x0:x0 + s]), INPUT_SIZE)


class MaskClassifier:
    """The shipped (or a given) classifier graph on ONNX Runtime's CPU provider."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else DEFAULT_PATH
        if not self.path.is_file():
            raise ConfigError(f"mask classifier {self.path}: no such file "
                              "(train one with: cyclemask-eval train-classifier)")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for unreadable graphs
            raise ConfigError(f"mask classifier {self.path}: ONNX Runtime cannot load it ({str(exc)[:200]})") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise ConfigError(f"mask classifier {self.path}: expected one input named {INPUT_NAME!r}")

    def p_masked(self, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """P(masked) of each uint8 RGB image (any size: its centred square is used)."""
        out = []
        for i in range(0, len(images), batch_size):
            batch = np.stack([fit_input(im) for im in images[i:i + batch_size]])
            out.append(self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0].reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def rates(self, images: Sequence[np.ndarray], want_masked: bool) -> dict:
        """The share of images called masked (want_masked) or unmasked, with its count."""
        p = self.p_masked(images)
        hits = (p >= 0.5) if want_masked else (p < 0.5)
        return {"success": float(hits.mean()) if len(p) else float("nan"), "n": int(len(p)),
                "called": "masked" if want_masked else "unmasked"}
