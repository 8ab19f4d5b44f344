"""Landmarks that follow a rolled head: YuNet looks again on a crop turned upright and on one
enlarged.

YuNet's landmarks lag a rolled head, most on a small face: its eye points stay nearly level,
and its mouth corners and eyes-to-mouth axis turn by only part of the roll. The mask zone's
top edge is parallel to the eye line, so level eyes on a rolled head put the lower eye under
the matte. `wants_look` picks those faces from the five landmarks alone (a roll they show,
or an eye line that disagrees with the mouth line and the face's axis); `upright_face` looks
at a crop of about twice the face's size turned by the roll they suggest, scaled up for the
lag, and at the same crop enlarged (a large face's eyes follow the roll), and lowers the
first look's eye line below the second's eyes. Upright faces pay nothing; a flagged one pays
two detections on small crops.

What it does not do: YuNet also levels its points on the turned crop, so that look takes the
roll from the landmarks' hint rather than measuring it; benchmarks/eye_cover.py checks the
result against dlib's 68-point predictor and on made-up clips with known points.

In a video the choice is made per tracked face (`RollState`), with hysteresis: a face starts
being looked at when its low-passed roll passes TRACK_ROLL_ON (a new track: when its first
frame calls for it), and keeps being looked at until that roll is clearly small again
(ROLL_OFF). The landmarks move from the first look's to the upright look's over RAMP frames,
not at once: a source that flips from frame to frame would read as motion to the tracker's
One-Euro filter and open it (jitter).
"""

from __future__ import annotations

import numpy as np

from .face_detect import Face, box_iou, crop_square

#: A face is looked at again when the roll its landmarks show (`estimated_roll`) passes
#: ROLL_ON degrees: on the 221 observations_pairs photos that dlib finds within 3 degrees of
#: upright, YuNet's estimate passes 6 degrees on 3 % of them (2.5 degrees: on 48 %).
ROLL_ON = 6.0
#: ... or when the eye line disagrees with the face's other cues by DISAGREE_ON degrees:
#: below it the disagreement is within YuNet's noise on upright faces.
DISAGREE_ON = 6.0
#: A tracked face that is looked at keeps being looked at until its low-passed roll is below
#: ROLL_OFF (hysteresis: YuNet's roll estimate of a small, rolled face wanders between 3 and
#: 10 degrees from frame to frame).
ROLL_OFF = 2.5
#: A tracked face also starts being looked at when its low-passed roll passes TRACK_ROLL_ON:
#: a small, rolled face in a video shows only 3-5 degrees in YuNet's landmarks, as much as an
#: upright photo's noise, but it shows them frame after frame, in one direction.
TRACK_ROLL_ON = 3.5
#: Frames over which a tracked face's landmarks move from one source to the other.
RAMP = 3
#: A looked-at track stops being looked at only after OFF_FRAMES frames in a row with its
#: low-passed roll under ROLL_OFF: a head rolling from one shoulder to the other passes
#: upright for a frame or two, and turning the look off and on again there (RAMP frames
#: each way) left the lower eye under the zone as the roll built up on the other side.
OFF_FRAMES = 6
#: The upright look turns the crop by GAIN x the roll the landmarks show (see upright_face).
GAIN = 2.0
#: Its second, enlarged look scales the crop up so that the face is about FACE_PX wide.
FACE_PX = 160.0
#: The weight of a new frame in a tracked face's low-passed roll, which decides (not the
#: angle of the look: a low-passed one lags a head that rolls, and covers its lower eye).
ROLL_SMOOTH = 0.5
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


def needs_upright(landmarks, roll: float = ROLL_ON, disagree: float = DISAGREE_ON) -> bool:
    """Whether a face's landmarks call for a second look on an upright crop: a roll past `roll`
    degrees (`estimated_roll`) or an eye line that disagrees with the face's other cues by more
    than `disagree` degrees."""
    eyes, other = roll_cues(landmarks)
    return abs(estimated_roll(landmarks)) > roll or abs(_wrap(eyes - other)) > disagree


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


def _enlarged_look(detector, region: np.ndarray, x0: int, y0: int, face: Face, face_px: float) -> Face | None:
    """The face on the crop enlarged so that it is about face_px wide, not turned, in the
    image's coordinates, or None."""
    import cv2

    k = face_px / max(face.box[2], face.box[3], 1.0)
    if k <= 1.0:
        found = detector._detect_bgr(region)
    else:
        side = region.shape[0]
        big = cv2.resize(region, (round(side * k), round(side * k)), interpolation=cv2.INTER_CUBIC)
        found = [f.scaled(side / big.shape[0]) for f in detector._detect_bgr(big)]
    found = [f.scaled(1.0, x0, y0) for f in found]
    found = [f for f in found if box_iou(f.box, face.box) > 0.3]
    return max(found, key=lambda f: box_iou(f.box, face.box)) if found else None


def lower_eyes(landmarks, other) -> np.ndarray:
    """landmarks [5, 2] with both eyes moved down the face (perpendicular to their own eye
    line, so the line keeps its angle) until neither of other's eyes lies below that line: the
    mask zone's top runs parallel to the eye line a little below it, so it then stays off the
    eyes whichever of the two estimates is right. Moving a single eye instead would turn the
    line, and lift the zone's top at the other eye."""
    a = np.asarray(landmarks, np.float64).reshape(5, 2).copy()
    b = np.asarray(other, np.float64).reshape(5, 2)
    across = a[1] - a[0]
    n = float(np.hypot(*across))
    if n < 1e-6:
        return a
    down = np.array([-across[1], across[0]]) / n  # perpendicular to the eye line, image y down
    shift = max(0.0, max(float(np.dot(b[i] - a[i], down)) for i in (0, 1)))
    a[:2] += shift * down
    return a


def upright_face(detector, image_rgb: np.ndarray, face: Face, context: float = CONTEXT,
                 gain: float = GAIN, face_px: float = FACE_PX) -> Face | None:
    """The face found again on a crop around it, in the image's coordinates (box and score as
    the first look gave them: the tracker follows the boxes of upright passes), or None when
    the turned look does not find it. Two looks, on a crop of `context` x the face:

    - turned: by `gain` x the roll its landmarks show (YuNet's points lag the head's roll and
      show a fraction of it); on the turned crop the face is nearer upright, where YuNet's
      points are at their best. Its landmarks are used.
    - enlarged (face_px > 0): the crop scaled up so the face is about face_px wide. YuNet's
      eyes follow a roll far better on a large face (on the observations_pairs photos rolled
      by more than 8 degrees, its roll is 0.2-0.4 of dlib's on faces under 130 px and 0.9 on
      faces over 200 px); the turned look's eye line is moved down the face until neither of
      the enlarged look's eyes lies below it (`lower_eyes`). On the shared clips each look alone leaves
      eyes under the zone where the other does not (the turned one under-turns a head rolled
      by 30 degrees; the enlarged one over-reads a rolled head tipped forward)."""
    region, x0, y0 = _crop(image_rgb, face, context)
    f = _look(detector, region, x0, y0, face, gain * estimated_roll(face.landmarks))
    if f is None:
        return None
    lms = np.asarray(f.landmarks, np.float64)
    if face_px > 0:
        big = _enlarged_look(detector, region, x0, y0, face, face_px)
        if big is not None:
            lms = lower_eyes(lms, big.landmarks)
    return Face(face.box, face.score, tuple((float(x), float(y)) for x, y in lms))


def wants_look(landmarks) -> bool:
    """Whether a face seen once (a photo, or a new track) gets the upright look: `needs_upright`."""
    return needs_upright(landmarks)


def follow_roll(detector, image_rgb: np.ndarray, faces: list[Face], min_face: float = 0.0) -> tuple[list[Face], int]:
    """faces with the landmarks of each face that wants it (`wants_look`, at least min_face)
    taken from the upright look; also returns how many faces were looked at again. For faces
    seen once (photos); a tracked face goes through `RollState`."""
    if not hasattr(detector, "_detect_rotated"):
        return faces, 0
    out, looked = [], 0
    for f in faces:
        if f.size >= min_face and wants_look(f.landmarks):
            looked += 1
            f = upright_face(detector, image_rgb, f) or f
        out.append(f)
    return out, looked


class RollState:
    """One tracked face's upright look, decided with hysteresis and blended in over RAMP frames.

    `follow` takes each of the track's detections and returns the face with the landmarks to
    use: the first look's while the face is upright, the upright look's while it is rolled,
    a mix of the two for RAMP frames after a change. A new track starts at its first frame's
    choice, unblended (there is nothing to jump from). The decisions go by the roll low-passed
    over the track's frames (ROLL_SMOOTH), so one frame's spike does not start a look."""

    def __init__(self) -> None:
        self.on = False
        self.weight: float | None = None  # of the upright look's landmarks; None: no frame yet
        self.roll: float | None = None
        self.low = 0  # frames in a row, while looked at, with the low-passed roll under ROLL_OFF

    def follow(self, detector, image_rgb: np.ndarray, face: Face) -> tuple[Face, bool]:
        """(the face to use, whether an upright look was taken)."""
        lms = face.landmarks
        if len(lms) != 5 or not np.all(np.isfinite(np.asarray(lms, np.float64))):
            return face, False
        est = estimated_roll(lms)
        self.roll = est if self.roll is None else self.roll + ROLL_SMOOTH * (est - self.roll)
        if self.weight is None:  # a new track: this frame is all there is to go by
            self.on = needs_upright(lms)
        elif self.on:
            self.low = self.low + 1 if abs(self.roll) <= ROLL_OFF else 0
            self.on = self.low < OFF_FRAMES
        else:
            # One frame's cues can spike (a turn or a nod tilts the mouth line): a track starts
            # being looked at on its low-passed roll only.
            self.on = abs(self.roll) > TRACK_ROLL_ON
            self.low = 0
        target = 1.0 if self.on else 0.0
        if self.weight is None:
            self.weight = target
        else:
            step = 1.0 / RAMP
            self.weight = float(np.clip(target, self.weight - step, self.weight + step))
        if self.weight <= 0.0:
            return face, False
        up = upright_face(detector, image_rgb, face)
        if up is None:
            return face, True
        a, b = np.asarray(lms, np.float64), np.asarray(up.landmarks, np.float64)
        mixed = a + self.weight * (b - a)
        return Face(face.box, face.score, tuple((float(x), float(y)) for x, y in mixed)), True
