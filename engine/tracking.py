"""Following faces from frame to frame (videos): detections are associated with tracks by IoU;
a track's box (and its landmarks, with the same weight, so the zone moves with the crop) is an
exponential moving average whose weight on the new detection grows with the distance from the
smoothed box; a confirmed track the detector misses is held at its predicted box for up to
`hold_frames` frames; tracks are reset on a scene cut or a change of frame size (the reasons are
in engine/faces.py's docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cyclemask.faces import Face, box_iou

Box = tuple[float, float, float, float]  # (x, y, w, h), as YuNet reports a face
iou = box_iou


def _landmarks(face: Face) -> np.ndarray | None:
    """A face's five landmarks as a [5, 2] array, or None when the detector gave none."""
    if len(face.landmarks) != 5:
        return None
    return np.asarray(face.landmarks, np.float64).reshape(5, 2)


def _usable_landmarks(landmarks: np.ndarray | None) -> bool:
    """Landmarks a zone can be built from: five finite points, eyes at least 2 px apart."""
    if landmarks is None or not np.all(np.isfinite(landmarks)):
        return False
    return float(np.hypot(*(landmarks[1] - landmarks[0]))) >= 2.0


@dataclass
class _Track:
    ident: int
    box: Box  # smoothed (x, y, w, h)
    landmarks: np.ndarray | None = None  # smoothed [5, 2], moved with the box when held
    velocity: tuple[float, float] = (0.0, 0.0)  # of the box centre, pixels per frame
    missed: int = 0
    hits: int = 1  # frames with a detection

    def predicted(self) -> Box:
        x, y, w, h = self.box
        return (x + self.velocity[0], y + self.velocity[1], w, h)

    def predicted_landmarks(self) -> np.ndarray | None:
        return None if self.landmarks is None else self.landmarks + np.asarray(self.velocity)


class FaceTracker:
    """IoU association plus adaptive exponential smoothing (see the module docstring).

    `config` is the run's `FaceConfig` (engine/faces.py, which imports this module): its
    smoothing, snap, iou_threshold, hold_frames and scene_cut.
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._shape: tuple[int, ...] | None = None
        self._thumb: np.ndarray | None = None
        self.cuts = 0

    def reset(self) -> None:
        self._tracks = []

    def _scene_changed(self, image: np.ndarray) -> bool:
        import cv2

        thumb = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        changed = (self._thumb is not None and self._shape == image.shape
                   and float(np.abs(thumb - self._thumb).mean()) / 255.0 > self.config.scene_cut)
        new_shape = self._shape is not None and self._shape != image.shape
        self._thumb, self._shape = thumb, image.shape
        return changed or new_shape

    def _smooth(self, track: _Track, face: Face) -> None:
        c = self.config
        sx, sy, sw, sh = track.box
        dx, dy, dw, dh = face.box
        scx, scy, dcx, dcy = sx + sw / 2, sy + sh / 2, dx + dw / 2, dy + dh / 2
        size = max(sw, sh, 1.0)
        deviation = max(abs(dcx - scx), abs(dcy - scy), abs(dw - sw), abs(dh - sh)) / size
        a = 1.0 - c.smoothing * max(0.0, 1.0 - deviation / c.snap)  # weight of the detection
        w, h = sw + a * (dw - sw), sh + a * (dh - sh)
        cx, cy = scx + a * (dcx - scx), scy + a * (dcy - scy)
        track.velocity = (cx - scx, cy - scy)
        track.box = (cx - w / 2, cy - h / 2, w, h)
        # The landmarks take the box's weight, so the zone moves with the crop, steady or snapping.
        lm = _landmarks(face)
        if lm is None or track.landmarks is None:
            track.landmarks = lm
        else:
            track.landmarks = track.landmarks + a * (lm - track.landmarks)
        track.missed = 0
        track.hits += 1

    def _associate(self, preds: list[Box], faces: list[Face]) -> list[tuple[int, int]]:
        """(track index, face index) pairs: greedy by IoU, at least iou_threshold."""
        pairs = sorted(((iou(p, f.box), ti, fi) for ti, p in enumerate(preds) for fi, f in enumerate(faces)),
                       reverse=True)
        used_t, used_f, out = set(), set(), []
        for score, ti, fi in pairs:
            if score < self.config.iou_threshold:
                break
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            out.append((ti, fi))
        return out

    def lost(self, faces: list[Face]) -> list[Box]:
        """Predicted boxes of the confirmed tracks (seen twice or more) that none of this
        frame's faces matches; changes nothing."""
        preds = [t.predicted() for t in self._tracks]
        matched = {ti for ti, _ in self._associate(preds, faces)}
        return [p for ti, (p, t) in enumerate(zip(preds, self._tracks)) if ti not in matched and t.hits >= 2]

    def update(self, image: np.ndarray, faces: list[Face]) -> list[tuple[Box, bool, np.ndarray | None]]:
        """This frame's faces to translate: (box, held, landmarks [5, 2] or None) per live
        track, in track order.

        `faces` are this frame's detections that are large enough to translate.
        """
        c = self.config
        if self._scene_changed(image) and self._tracks:
            self.cuts += 1
            self.reset()
        preds = [t.predicted() for t in self._tracks]
        used_t, used_f = set(), set()
        for ti, fi in self._associate(preds, faces):
            used_t.add(ti)
            used_f.add(fi)
            self._smooth(self._tracks[ti], faces[fi])
        alive = []
        h, w = image.shape[:2]
        for ti, t in enumerate(self._tracks):
            if ti not in used_t:
                t.missed += 1
                t.box = preds[ti]
                t.landmarks = t.predicted_landmarks()
                t.velocity = (t.velocity[0] * 0.5, t.velocity[1] * 0.5)
                x, y, bw, bh = t.box
                # A face seen in one frame only may be a false detection: holding it would
                # paste a mask on it for hold_frames more frames.
                if (t.missed > c.hold_frames or t.hits < 2
                        or not (0 <= x + bw / 2 < w and 0 <= y + bh / 2 < h)):
                    continue
            alive.append(t)
        for fi, f in enumerate(faces):
            if fi not in used_f:
                alive.append(_Track(self._next_id, f.box, _landmarks(f)))
                self._next_id += 1
        self._tracks = alive
        return [(t.box, t.missed > 0, t.landmarks) for t in alive]

    def idents(self) -> list[int]:
        """The live tracks' ids, in the order `update` returned them: a face keeps its id for as
        long as it is followed (what keeps one look per person, e.g. --mask-method template)."""
        return [t.ident for t in self._tracks]
