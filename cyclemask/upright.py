"""Landmarks that follow a rolled head: a second YuNet look on a crop turned upright.

YuNet's landmarks lag a rolled head: its eye points stay nearly level, and its mouth corners
and eyes-to-mouth axis turn by only part of the roll. The mask zone's top edge is parallel to
the eye line, so level eyes on a rolled head put the lower eye under the matte.
`wants_look` picks those faces from the five landmarks alone (a roll they show, or an eye
line that disagrees with the mouth line and the face's axis); `upright_face` turns a crop of
about twice the face's size by the roll they suggest, scaled up for the lag, detects there,
where the face is near upright and YuNet's points are at their best, and maps the landmarks
back. Upright faces pay nothing; a flagged one pays one detection on that small crop.

What it does not do: YuNet also levels its points on the turned crop, so the roll is taken
from the landmarks' hint, not measured; benchmarks/eye_cover.py checks the result against
dlib's 68-point predictor.
"""

from __future__ import annotations

import numpy as np

from .faces import Face, box_iou, crop_square

#: Beyond this roll (degrees) the eye points are not trusted: YuNet's own training rarely
#: rolls that far, and its eyes lag the head.
ROLL_LIMIT = 7.0
#: The eye line may disagree with the face's other cues by this much (degrees) before a
#: second look: below it the disagreement is within YuNet's noise on upright faces.
DISAGREE_LIMIT = 5.0
#: The upright look turns the crop by GAIN x the roll the landmarks show (see upright_face).
GAIN = 2.0
#: Faces whose landmarks show a roll past HINT degrees get the look (see wants_look).
HINT = 2.5
#: The crop around the face, as a multiple of the box's long side: room for the whole head
#: once rotated, as `FaceDetector.detect_near` uses.
CONTEXT = 2.2


def _angle(v) -> float:
    return float(np.degrees(np.arctan2(v[1], v[0])))


def _wrap(a: float) -> float:
    return (a + 180.0) % 360.0 - 180.0


def roll_cues(landmarks) -> tuple[float, float]:
    """(the eye line's angle, the roll the rest of the face shows), in degrees, image y down
    (positive: the head leans to the image's right, clockwise as seen). The second is the
    mean of the mouth line's angle and the angle of the eyes-to-mouth axis less 90."""
    p = np.asarray(landmarks, np.float64).reshape(5, 2)
    r_eye, l_eye, _, r_mouth, l_mouth = p
    eyes = _angle(l_eye - r_eye)
    mouth = _angle(l_mouth - r_mouth)
    axis = _wrap(_angle((r_mouth + l_mouth) / 2 - (r_eye + l_eye) / 2) - 90.0)
    # Both lower-face cues are turned into one by averaging on the circle (they are close).
    other = _angle((np.cos(np.radians(mouth)) + np.cos(np.radians(axis)),
                    np.sin(np.radians(mouth)) + np.sin(np.radians(axis))))
    return eyes, other


def needs_upright(landmarks, roll_limit: float = ROLL_LIMIT, disagree_limit: float = DISAGREE_LIMIT) -> bool:
    """Whether a face's landmarks call for a second look on an upright crop."""
    eyes, other = roll_cues(landmarks)
    return max(abs(eyes), abs(other)) > roll_limit or abs(_wrap(eyes - other)) > disagree_limit


def estimated_roll(landmarks) -> float:
    """The head's roll in degrees (sign as `roll_cues`): the lower face's cues, which follow
    the head, weighted twice the eye line, which lags it."""
    eyes, other = roll_cues(landmarks)
    return _wrap(eyes + _wrap(other - eyes) * 2.0 / 3.0)


def _crop(image_rgb: np.ndarray, face: Face, context: float):
    import cv2

    x, y, w, h = (float(v) for v in face.box)
    side = max(16, round(max(w, h) * context))
    x0, y0 = round(x + w / 2.0 - side / 2.0), round(y + h / 2.0 - side / 2.0)
    return cv2.cvtColor(crop_square(image_rgb, (x0, y0, x0 + side, y0 + side)), cv2.COLOR_RGB2BGR), x0, y0


def _look(detector, region, x0: int, y0: int, face: Face, degrees: float) -> Face | None:
    """The face on the crop turned by degrees (a positive roll leans the head clockwise and
    OpenCV's positive angle turns it back), in the image's coordinates, or None."""
    found = [f.scaled(1.0, x0, y0) for f in detector._detect_rotated(region, degrees)]
    found = [f for f in found if box_iou(f.box, face.box) > 0.3]
    return max(found, key=lambda f: box_iou(f.box, face.box)) if found else None


def upright_face(detector, image_rgb: np.ndarray, face: Face, context: float = CONTEXT,
                 gain: float = GAIN) -> Face | None:
    """The face found again on a crop around it turned upright by its estimated roll, in the
    image's coordinates (box and score as the first look gave them: the tracker follows the
    boxes of upright passes), or None when that look does not find it.

    YuNet's eye points lag the head's roll, and so, less, do its other points: the roll they
    show is a fraction of the head's. The crop is turned by `gain` x that estimate; on the
    turned crop the face is near upright, where YuNet's points are at their best."""
    region, x0, y0 = _crop(image_rgb, face, context)
    f = _look(detector, region, x0, y0, face, gain * estimated_roll(face.landmarks))
    return None if f is None else Face(face.box, face.score, f.landmarks)


def wants_look(landmarks, hint: float = HINT) -> bool:
    """Whether a face's landmarks call for an upright look: flagged by `needs_upright`, or
    showing a roll of more than `hint` degrees (YuNet's cues show a fraction of the head's)."""
    return needs_upright(landmarks) or abs(estimated_roll(landmarks)) > hint


def follow_roll(detector, image_rgb: np.ndarray, faces: list[Face], min_face: float = 0.0) -> tuple[list[Face], int]:
    """faces with the landmarks of each face that wants it (`wants_look`, at least min_face)
    taken from the upright look; also returns how many faces were looked at again."""
    if not hasattr(detector, "_detect_rotated"):
        return faces, 0
    out, looked = [], 0
    for f in faces:
        if f.size >= min_face and wants_look(f.landmarks):
            looked += 1
            f = upright_face(detector, image_rgb, f) or f
        out.append(f)
    return out, looked
