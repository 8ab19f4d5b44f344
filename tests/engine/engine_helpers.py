"""Helpers shared by the runtime's CLI tests."""

from __future__ import annotations

from pathlib import Path

import cv2


def video_props(path: Path) -> tuple[int, float, int, int]:
    """(frames actually decodable, fps, width, height) of a video file."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    props = (n, cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    return props
