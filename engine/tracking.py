"""Following faces from frame to frame (videos): detections are associated with tracks by IoU;
a track's box and landmarks are smoothed by a One-Euro filter (`OneEuro`: a low-pass whose
cutoff rises with the face's speed, so a still face holds still and a moving one is followed
without lag), with one weight per frame for box and landmarks, so the zone moves with the crop;
a detection further than `snap` from the smoothed box is taken at once. A new track is
confirmed by 2 detections within 3 frames before it is translated; detections of the frames
ahead (detect-ahead) can confirm it on its first frame. A confirmed track the detector misses is
held at its predicted box for up to `hold_frames` frames; tracks are reset on a scene cut or a
change of frame size (the reasons are in engine/faces.py's docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from cyclemask.face_detect import Face, box_iou

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
    age: int = 1  # frames since the first detection, that one included
    confirmed: bool = False
    motion: np.ndarray | None = None  # One-Euro's low-passed lead of the detections, face sizes
    roll: Any = None  # the caller's per-track state for `update`'s relook (cyclemask.upright.RollState)

    def predicted(self) -> Box:
        x, y, w, h = self.box
        return (x + self.velocity[0], y + self.velocity[1], w, h)

    def predicted_landmarks(self) -> np.ndarray | None:
        return None if self.landmarks is None else self.landmarks + np.asarray(self.velocity)


def one_euro_alpha(cutoff: float) -> float:
    """The low-pass weight of a new sample for a cutoff in cycles per frame (One-Euro, te = 1)."""
    tau = 1.0 / (2.0 * np.pi * max(cutoff, 1e-9))
    return 1.0 / (1.0 + tau)


class FaceTracker:
    """IoU association, One-Euro smoothing and track confirmation (see the module docstring).

    `config` is the run's `FaceConfig` (engine/faces.py, which imports this module): its
    smoothing, min_cutoff, beta, d_cutoff, snap, iou_threshold, hold_frames, scene_cut and
    face_checks, confirm_hits, confirm_window.
    """

    # Frame-to-frame noise of a still face's detection (face sizes per frame) that the speed
    # ignores: what is left of YuNet's jitter after the speed's low-pass, so a still face keeps
    # the lowest cutoff (benchmarks/zone_jitter.py).
    dead_speed = 0.02

    def __init__(self, config: Any) -> None:
        self.config = config
        self._tracks: list[_Track] = []
        self._shown: list[_Track] = []
        self._next_id = 0
        self._shape: tuple[int, ...] | None = None
        self._thumb: np.ndarray | None = None
        self.cuts = 0
        self.unconfirmed = 0  # detections of tracks not (yet) confirmed, so not translated

    def reset(self) -> None:
        self._tracks = []
        self._shown = []

    def _scene_changed(self, image: np.ndarray) -> bool:
        import cv2

        shape = image.shape
        h, w = shape[:2]
        k = min(h, w) // 64
        if k > 1:
            # OpenCV's area resize is several times faster at a whole-number factor: 1 ms instead
            # of 3 for a 720p frame, every frame, on the thread that feeds the detector.
            image = cv2.resize(image[:h - h % k, :w - w % k], (w // k, h // k), interpolation=cv2.INTER_AREA)
        thumb = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        changed = (self._thumb is not None and self._shape == shape
                   and float(np.abs(thumb - self._thumb).mean()) / 255.0 > self.config.scene_cut)
        new_shape = self._shape is not None and self._shape != shape
        self._thumb, self._shape = thumb, shape
        return changed or new_shape

    def _weight(self, track: _Track, face: Face) -> float:
        """This frame's One-Euro weight on the detection, shared by box and landmarks."""
        c = self.config
        sx, sy, sw, sh = track.box
        dx, dy, dw, dh = face.box
        size = max(sw, sh, 1.0)
        deviation = max(abs(dx + dw / 2 - sx - sw / 2), abs(dy + dh / 2 - sy - sh / 2),
                        abs(dw - sw), abs(dh - sh)) / size
        # One-Euro's speed: how far the detection runs ahead of the smoothed track (box centre,
        # size, each landmark: a head turning in place moves the nose, not the box), signed and
        # low-passed at d_cutoff, so a still face's jitter averages out while a movement (even a
        # slow drift, which builds up a lag) adds up and opens the filter.
        rows = [(dx + dw / 2 - sx - sw / 2, dy + dh / 2 - sy - sh / 2), (max(dw, dh) - max(sw, sh), 0.0)]
        lm = _landmarks(face)
        if lm is not None and track.landmarks is not None:
            rows += list(lm - track.landmarks)
        v = np.asarray(rows, np.float64) / size
        ad = one_euro_alpha(c.d_cutoff)
        if track.motion is None or track.motion.shape != v.shape:
            track.motion = np.zeros_like(v)
        track.motion += ad * (v - track.motion)
        if c.smoothing == 0.0 or deviation >= c.snap:
            return 1.0
        speed = max(0.0, float(np.hypot(track.motion[:, 0], track.motion[:, 1]).max()) - self.dead_speed)
        return one_euro_alpha(c.min_cutoff + c.beta * speed)

    def _smooth(self, track: _Track, face: Face) -> None:
        a = self._weight(track, face)
        sx, sy, sw, sh = track.box
        dx, dy, dw, dh = face.box
        scx, scy, dcx, dcy = sx + sw / 2, sy + sh / 2, dx + dw / 2, dy + dh / 2
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
        """Predicted boxes of the confirmed tracks seen twice or more that none of this frame's
        faces matches; changes nothing."""
        preds = [t.predicted() for t in self._tracks]
        matched = {ti for ti, _ in self._associate(preds, faces)}
        return [p for ti, (p, t) in enumerate(zip(preds, self._tracks)) if ti not in matched and t.confirmed and t.hits >= 2]

    def _confirmed_ahead(self, track: _Track, ahead: Sequence[list[Face] | None]) -> bool:
        """Whether the detections of the frames ahead bring a new track to its confirmation
        within its window (followed by IoU from box to box, as `update` will follow it)."""
        c = self.config
        hits, box = track.hits, track.box
        # Indexed one by one: `ahead` may wait for each frame's detection only when asked.
        for k in range(min(len(ahead), max(0, c.confirm_window - track.age))):
            faces = ahead[k]
            best = max(faces or [], key=lambda f: iou(box, f.box), default=None)
            if best is not None and iou(box, best.box) >= c.iou_threshold:
                hits, box = hits + 1, best.box
                if hits >= c.confirm_hits:
                    return True
        return False

    def update(self, image: np.ndarray, faces: list[Face],
               ahead: Sequence[list[Face] | None] | None = None,
               relook: Callable[[Face, _Track], Face] | None = None) -> list[tuple[Box, bool, np.ndarray | None]]:
        """This frame's faces to translate: (box, held, landmarks [5, 2] or None) per live
        confirmed track, in track order.

        `faces` are this frame's detections that are large enough (and plausible) to translate;
        `ahead`, the same for the frames that follow, in order, as far as they are known (None
        for a frame whose detections are not: it confirms nothing).
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
            t = self._tracks[ti]
            self._smooth(t, relook(faces[fi], t) if relook else faces[fi])
        alive = []
        h, w = image.shape[:2]
        for ti, t in enumerate(self._tracks):
            t.age += 1
            if ti not in used_t:
                t.missed += 1
                t.box = preds[ti]
                t.landmarks = t.predicted_landmarks()
                t.velocity = (t.velocity[0] * 0.5, t.velocity[1] * 0.5)
                x, y, bw, bh = t.box
                # An unconfirmed face waits out its window unseen; a confirmed one is held.
                if not c.face_checks:  # as before confirmation: a face seen once is not held
                    keep = t.missed <= c.hold_frames and t.hits >= 2
                else:
                    keep = t.missed <= c.hold_frames if t.confirmed else t.age < c.confirm_window
                if not keep or not (0 <= x + bw / 2 < w and 0 <= y + bh / 2 < h):
                    continue
            alive.append(t)
        for fi, f in enumerate(faces):
            if fi not in used_f:
                t = _Track(self._next_id, f.box)
                t.landmarks = _landmarks(relook(f, t) if relook else f)
                alive.append(t)
                self._next_id += 1
        shown = []
        for t in alive:
            if not t.confirmed:
                # A face seen in one frame only may be a false detection: confirmed by its hits
                # within the window, or by the frames ahead (then it is translated from now on).
                t.confirmed = (not c.face_checks or t.hits >= c.confirm_hits
                               or self._confirmed_ahead(t, ahead or []))
                if not t.confirmed:
                    self.unconfirmed += int(t.missed == 0)
                    continue
            shown.append(t)
        self._tracks, self._shown = alive, shown
        return [(t.box, t.missed > 0, t.landmarks) for t in shown]

    def idents(self) -> list[int]:
        """The live tracks' ids, in the order `update` returned them: a face keeps its id for as
        long as it is followed (what keeps one look per person, e.g. --mask-method template)."""
        return [t.ident for t in self._shown]
