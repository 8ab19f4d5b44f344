"""Is a detection a face? Landmark geometry that a real face can have.

YuNet fires now and then on hands, shirts and printed pictures; its five points then land
wherever its regressor puts them, and often in places no face has them (the mouth above the
eyes, the nose outside the face, the corners of the mouth crossed). Each rule below measures
one such relation in the face's own frame (x along the eye line, y down the face), so a rolled
head is judged as an upright one. The bounds are the range seen on every real face in the
shared data (cfmd and observations_pairs with and without masks, the head-pose clips, YuNet at
the runtime's settings, rotated passes included), widened by a margin: no real face there is
rejected (benchmarks/face_geometry.py measures it and prints the counts per rule).

Runtime only uses YuNet's own landmarks: independent landmark models are for benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cyclemask.face_detect import Face

# Rule name -> (low, high) bound of its measure; None: unbounded on that side. Lengths are in
# units of the box's size (the square root of its area). Seen on the 4 877 real faces of at
# least 32 px (the runtime's --min-face; smaller ones are never judged) in the shared data
# (min .. max; profiles and masked faces make the extremes):
#   eye_gap      0.043 .. 0.646  eye distance
#   mouth_below  0.149 .. 0.733  eye line to the mouth corners' midpoint, down the face
#   nose_down    0.363 .. 1.706  eye line to nose tip, as a fraction of eye line to mouth
#   nose_across -0.192 .. 0.218  nose tip along the eye line, from the eyes' midpoint
#   mouth_order -0.017 .. 0.571  left minus right mouth corner along the eye line
#   outside      0.000 .. 0.107  how far the furthest landmark lies outside the box
# The bounds widen that range by about 15 % on each side.
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "eye_gap": (0.03, 0.8),
    "mouth_below": (0.07, 0.85),
    "nose_down": (0.15, 2.0),
    "nose_across": (-0.27, 0.3),
    "mouth_order": (-0.1, 0.7),
    "outside": (None, 0.15),
}
RULES = tuple(BOUNDS)


def measures(face: Face) -> dict[str, float] | None:
    """Each rule's measure for one face; None when it has no landmarks to judge (not five
    finite points, or all five at one point: a detector that gives boxes only)."""
    if len(face.landmarks) != 5:
        return None
    pts = np.asarray(face.landmarks, np.float64).reshape(5, 2)
    if not np.all(np.isfinite(pts)) or np.all(pts == pts[0]):
        return None
    r_eye, l_eye, nose, r_mouth, l_mouth = pts
    x, y, w, h = face.box
    size = max(np.sqrt(max(w, 0.0) * max(h, 0.0)), 1e-6)
    eyes, mouth = (r_eye + l_eye) / 2.0, (r_mouth + l_mouth) / 2.0
    across = l_eye - r_eye
    d = float(np.hypot(*across))
    if d < 1e-6:
        return {"eye_gap": 0.0, "mouth_below": 0.0, "nose_down": 0.0, "nose_across": 0.0,
                "mouth_order": 0.0, "outside": 0.0}
    ux = across / d
    uy = np.array([-ux[1], ux[0]])
    below = float(np.dot(mouth - eyes, uy))
    # Distance outside the box per point (0 inside), the worst one relative to the box's size.
    lo = np.array([x, y])
    hi = np.array([x + w, y + h])
    out = np.maximum(np.maximum(lo - pts, pts - hi), 0.0).max()
    # Relative to the box, not to the eye distance: a face in profile has its eyes close
    # together, and ratios to that distance run off to extremes no rule could bound.
    return {
        "eye_gap": d / size,
        "mouth_below": below / size,
        "nose_down": float(np.dot(nose - eyes, uy)) / below if below > 1e-6 else -1.0,
        "nose_across": float(np.dot(nose - eyes, ux)) / size,
        "mouth_order": float(np.dot(l_mouth - r_mouth, ux)) / size,
        "outside": float(out) / size,
    }


def failed_rules(face: Face, bounds: dict[str, tuple[float | None, float | None]] = BOUNDS) -> list[str]:
    """The rules a face breaks (empty: plausible). A face without landmarks breaks none here:
    whether it can be pasted is decided elsewhere (it is pasted as a whole crop)."""
    m = measures(face)
    if m is None:
        return []
    bad = []
    for name, (low, high) in bounds.items():
        v = m[name]
        if (low is not None and v < low) or (high is not None and v > high):
            bad.append(name)
    return bad


def plausible(face: Face) -> bool:
    return not failed_rules(face)


@dataclass(frozen=True)
class Confirmation:
    """A new track is confirmed by `hits` detections within `window` consecutive frames; until
    then it is followed but not translated (a one-frame false face never is). Detections that
    arrive ahead of the frame (detect-ahead, at most `window` - 1 frames) confirm it at once,
    so a real face is translated from its first frame."""

    hits: int = 2
    window: int = 3


# A face printed on clothing: a detection on the chest of a larger face above it. In the face's
# own frame (x along its eye line, y down it, in units of its size: the square root of its box's
# area), the print's centre lies WORN_BELOW below the face's centre and within WORN_ACROSS of its
# axis, and it is at most WORN_SIZE times the face's size. A T-shirt print sits there; a person
# does not often: a child in front of a grown-up is closer to the camera, so its face comes out
# about as large (and a small one stands lower: its centre is under the chest); a baby carried
# on the chest is the case this rule gets wrong (--no-face-checks translates it). Videos only:
# in photos, collages stack faces the same way (FaceProcessor._usable).
WORN_BELOW = (1.3, 3.2)
WORN_ACROSS = 0.6
WORN_SIZE = 0.85


def _axes(face: Face) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(centre, x axis, y axis, size) of a face: its eye line when it has landmarks, else upright."""
    x, y, w, h = face.box
    size = float(np.sqrt(max(w, 0.0) * max(h, 0.0)))
    centre = np.array([x + w / 2.0, y + h / 2.0])
    ux = np.array([1.0, 0.0])
    if len(face.landmarks) == 5:
        pts = np.asarray(face.landmarks, np.float64).reshape(5, 2)
        across = pts[1] - pts[0]
        d = float(np.hypot(*across))
        if np.all(np.isfinite(pts)) and d > 1e-6:
            ux = across / d
    return centre, ux, np.array([-ux[1], ux[0]]), size


def worn_on(face: Face, other: Face) -> bool:
    """Does `face` lie where a print on `other`'s clothing would (see WORN_BELOW)?"""
    c, _, _, size = _axes(face)
    oc, ox, oy, osize = _axes(other)
    if osize <= 0 or size > WORN_SIZE * osize:
        return False
    d = (c - oc) / osize
    below, across = float(np.dot(d, oy)), float(np.dot(d, ox))
    return WORN_BELOW[0] <= below <= WORN_BELOW[1] and abs(across) <= WORN_ACROSS


def worn(faces: list[Face]) -> list[bool]:
    """For each of one frame's faces: is it printed on another one's clothing? Only a face that
    is not itself worn counts as a wearer, so a print never makes a second print of the real
    face's own detection."""
    flags = [False] * len(faces)
    for i in sorted(range(len(faces)), key=lambda k: -faces[k].box[2] * faces[k].box[3]):
        flags[i] = any(j != i and not flags[j] and worn_on(faces[i], faces[j]) for j in range(len(faces)))
    return flags
