"""Face detection (OpenCV's YuNet) and the square-crop geometry shared by data preparation and
the runtime's face-aware mode.

Coordinates are pixels of the image given, x to the right, y down. A `Face` box is
(x, y, w, h) as YuNet reports it (it may reach past the image edge for tightly cropped photos);
a crop box is integer (x0, y0, x1, y1), square, half-open, and may also reach past the edge:
`crop_square` fills the outside by replicating the border, so a crop and its paste-back always
have the box's exact geometry.

Detection policy (see `FaceDetector.detect`): detect on the image as given (downscaled when its
long side exceeds `max_side`) and, when `rotations` are given, on copies rotated by those angles
(boxes and landmarks rotated back, all passes merged by non-maximum suppression): YuNet misses
heads tilted by more than ~20 degrees, and more so when a mask hides the mouth. When nothing is
found, detect once more on a copy padded by `retry_pad` x the long side on every side. The
retry exists for tight face crops (common in scraped data sets), where the face touches the
image edge and the detector, trained on faces with context, can miss it; the padded copy gives
it that context back.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cvlog
from .errors import ConfigError, InputError
from .image_arrays import resize

log = logging.getLogger(__name__)

DETECTOR_ENV = "CYCLEMASK_FACE_DETECTOR"

# YuNet's five landmarks, in its output order (the subject's right eye is on the image's left).
LANDMARK_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner")

FIT_MODES = ("shift", "pad")


@dataclass(frozen=True)
class Face:
    """One detection: box (x, y, w, h), confidence score, five (x, y) landmarks."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def size(self) -> float:
        """The box's shorter side, in pixels: what a minimum face size is compared with."""
        return float(min(self.box[2], self.box[3]))

    def scaled(self, factor: float, dx: float = 0.0, dy: float = 0.0) -> "Face":
        """This face in another frame: coordinates times factor, then shifted by (dx, dy)."""
        x, y, w, h = self.box
        return Face(
            (x * factor + dx, y * factor + dy, w * factor, h * factor),
            self.score,
            tuple((px * factor + dx, py * factor + dy) for px, py in self.landmarks),
        )

    def to_dict(self) -> dict:
        return {
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 4),
            "landmarks": [[round(px, 2), round(py, 2)] for px, py in self.landmarks],
        }


SHIPPED_DETECTOR = "face_detection_yunet_2023mar.onnx"


def shipped_detector_path() -> Path:
    """The YuNet model shipped inside the package (cyclemask/assets/yunet/, with its licence)."""
    import importlib.resources

    return Path(str(importlib.resources.files("cyclemask"))) / "assets" / "yunet" / SHIPPED_DETECTOR


def resolve_detector_path(model_path: str | os.PathLike | None = None) -> Path:
    """The YuNet model file: the argument, else $CYCLEMASK_FACE_DETECTOR, else the shipped one."""
    source = "the model_path argument"
    if model_path is None or str(model_path) == "":
        env = os.environ.get(DETECTOR_ENV, "")
        if env:
            model_path, source = env, f"${DETECTOR_ENV}"
        else:
            model_path, source = shipped_detector_path(), "the copy shipped with cyclemask"
            if not Path(model_path).is_file():
                raise ConfigError(
                    f"the face detector shipped with cyclemask ({model_path}) is missing from this "
                    "installation: reinstall cyclemask, or pass a YuNet ONNX file "
                    "(face_detection_yunet_2023mar.onnx from OpenCV's model zoo) as the model path / "
                    f"--face-detector option, or set the {DETECTOR_ENV} environment variable to its path"
                )
    p = Path(model_path)
    if not p.is_file():
        raise ConfigError(f"face detector model {p} (from {source}): no such file")
    return p


class FaceDetector:
    """YuNet through `cv2.FaceDetectorYN`; one instance per thread (OpenCV's object is stateful).

    score_threshold: detections below it are dropped (YuNet's scores for masked faces run lower
    than for bare ones, so the default is below OpenCV's 0.9).
    retry_pad: the fraction of the long side to pad on each side for the retry on a miss;
    0 disables the retry.
    max_side: images with a longer side are downscaled for detection (boxes are mapped back).
    coarse_side: the long side of a second, smaller look in a large frame for a face that fills
        it (see `detect`); None: no such look.
    rotations: angles (degrees, counter-clockwise as the image is seen) of extra passes on
    rotated copies, for tilted heads; each costs one more detection per image.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 50,
        retry_pad: float = 0.5,
        max_side: int = 1024,
        coarse_side: int | None = 640,
        rotations: tuple[float, ...] = (),
    ) -> None:
        if not 0.0 < score_threshold < 1.0:
            raise ConfigError(f"score_threshold must be in (0, 1); got {score_threshold!r}")
        if not 0.0 < nms_threshold < 1.0:
            raise ConfigError(f"nms_threshold must be in (0, 1); got {nms_threshold!r}")
        if retry_pad < 0.0:
            raise ConfigError(f"retry_pad must be >= 0; got {retry_pad!r}")
        if max_side < 32:
            raise ConfigError(f"max_side must be at least 32; got {max_side!r}")
        if coarse_side is not None and coarse_side < 32:
            raise ConfigError(f"coarse_side must be at least 32 (or None); got {coarse_side!r}")
        rotations = tuple(float(a) for a in rotations)
        if any(not -90.0 <= a <= 90.0 or a == 0.0 for a in rotations):
            raise ConfigError(f"rotations must be non-zero angles in [-90, 90] degrees; got {rotations!r}")
        self.rotations = rotations
        self.model_path = resolve_detector_path(model_path)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.retry_pad = float(retry_pad)
        self.max_side = int(max_side)
        self.coarse_side = int(coarse_side) if coarse_side else None
        import cv2

        try:
            # OpenCV 5's DNN engine warns on stderr ("setPreferableTarget Targets are not supported
            # by the new graph engine") each time a detector is created, though nothing is wrong.
            with cvlog.at_most_errors():
                self._net = cv2.FaceDetectorYN.create(
                    str(self.model_path), "", (320, 320), self.score_threshold, self.nms_threshold, self.top_k
                )
        except cv2.error as exc:
            raise ConfigError(f"face detector model {self.model_path}: OpenCV cannot load it ({str(exc).strip()[:200]})") from None

    def _detect_bgr(self, bgr: np.ndarray) -> list[Face]:
        h, w = bgr.shape[:2]
        self._net.setInputSize((w, h))
        _, rows = self._net.detect(bgr)
        if rows is None:
            return []
        faces = []
        for r in rows:
            r = [float(v) for v in r]
            faces.append(Face(tuple(r[0:4]), r[14], tuple((r[4 + 2 * i], r[5 + 2 * i]) for i in range(5))))
        return faces

    def _detect_rotated(self, bgr: np.ndarray, degrees: float) -> list[Face]:
        """Faces found on a copy rotated by degrees about the centre, in bgr's coordinates."""
        import cv2

        h, w = bgr.shape[:2]
        t = np.deg2rad(degrees)
        c, s = abs(np.cos(t)), abs(np.sin(t))
        # The canvas grows to hold the whole rotated image, so no face at a corner is cut off.
        cw, ch = int(np.ceil(w * c + h * s)), int(np.ceil(w * s + h * c))
        m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)
        m[:, 2] += ((cw - w) / 2.0, (ch - h) / 2.0)
        rotated = cv2.warpAffine(bgr, m, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        back = cv2.invertAffineTransform(m)
        faces = []
        for f in self._detect_bgr(rotated):
            x, y, bw, bh = f.box
            cx, cy = back @ (x + bw / 2.0, y + bh / 2.0, 1.0)
            # The box keeps its size around the face's centre: an upright box of a tilted face,
            # as YuNet itself reports one.
            lms = tuple(tuple(float(v) for v in back @ (px, py, 1.0)) for px, py in f.landmarks)
            faces.append(Face((float(cx - bw / 2.0), float(cy - bh / 2.0), bw, bh), f.score, lms))
        return faces

    def _coarse_passes(self, bgr: np.ndarray, upright: list[Face], rotations: tuple[float, ...]) -> list[list[Face]] | None:
        """The passes of a frame where a face may be too large for YuNet, else None.

        YuNet misses a face that fills most of a large frame (a close selfie: filling a frame
        1,024 px wide it is not found, or only in pieces; at 640 px it is). This matters at the
        default `max_side` of 1,024 (data preparation, synth, evaluation); the runtime detects
        at --detect-side 640, where such a face is found but its landmarks are less exact than
        at 320 px (its mask zone then sits high). When the frame's upright
        pass finds nothing, or finds boxes that large, look again at `coarse_side`; if a face is
        there, the upright and rotated passes run at that size, and of the full-size pass only
        the small faces (which the coarse look cannot see) are kept."""
        import cv2

        h, w = bgr.shape[:2]
        def large(f: Face) -> bool:
            return max(f.box[2], f.box[3]) > LARGE_FACE * min(h, w)
        if max(h, w) <= self.coarse_side * 1.25 or (upright and not any(large(f) for f in upright)):
            return None
        c = self.coarse_side / max(h, w)
        small = cv2.resize(bgr, (max(1, round(w * c)), max(1, round(h * c))), interpolation=cv2.INTER_AREA)
        coarse = self._detect_bgr(small)
        if not coarse:
            return None
        back = w / small.shape[1]
        passes = [coarse] + [self._detect_rotated(small, a) for a in rotations]
        return [[f.scaled(back) for f in p] for p in passes] + [[f for f in upright if not large(f)]]

    def detect(self, image_rgb: np.ndarray, retry: bool = True, rotations: tuple[float, ...] | None = None) -> list[Face]:
        """Faces in a uint8 RGB HWC image, highest score first, in that image's pixel coordinates.

        retry: look again where a face may have been missed: on a padded copy when nothing is
        found (a tight crop), and at a smaller size in a large frame (a face filling it; see
        `_coarse_passes`). Video frames go without: their faces are followed from frame to frame.
        rotations: the rotated passes for this call (default: the detector's own).
        """
        import cv2

        if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            got = f"{image_rgb.dtype} {list(image_rgb.shape)}" if isinstance(image_rgb, np.ndarray) else type(image_rgb).__name__
            raise InputError(f"face detection needs a uint8 RGB image [H, W, 3]; got {got}")
        h, w = image_rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        work = image_rgb
        if scale < 1.0:
            work = resize(image_rgb, (max(1, round(w * scale)), max(1, round(h * scale))), "area")
        bgr = cv2.cvtColor(work, cv2.COLOR_RGB2BGR)
        rotations = self.rotations if rotations is None else tuple(rotations)
        upright = self._detect_bgr(bgr)
        passes = self._coarse_passes(bgr, upright, rotations) if retry and self.coarse_side else None
        if passes is None:
            passes = [upright] + [self._detect_rotated(bgr, a) for a in rotations]
        faces = merge_faces(passes, self.nms_threshold)
        if not faces and retry and self.retry_pad > 0:
            pad = max(1, round(self.retry_pad * max(bgr.shape[:2])))
            # Replicated edges keep the face's colours at the border; a constant frame would
            # add a hard edge the detector never saw in training.
            padded = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            faces = merge_faces([[f.scaled(1.0, -pad, -pad) for f in self._detect_bgr(padded)]], self.nms_threshold)
        if bgr.shape[1] != w:
            faces = [f.scaled(w / bgr.shape[1]) for f in faces]
        return sorted(faces, key=lambda f: -f.score)

    def detect_near(self, image_rgb: np.ndarray, box: tuple[float, float, float, float],
                    rotations: tuple[float, ...] = (25.0, -25.0), context: float = 2.2) -> list[Face]:
        """Faces around one expected face box (x, y, w, h), e.g. where a tracked face was lost:
        upright and rotated passes over a square of `context` x the box's long side around its
        centre (replicated past the image's edge); cheap, as the square is small. Faces are in
        the image's coordinates, highest score first; only those centred inside the square."""
        x, y, w, h = (float(v) for v in box)
        side = max(16, round(max(w, h) * context))
        x0, y0 = round(x + w / 2.0 - side / 2.0), round(y + h / 2.0 - side / 2.0)
        region = crop_square(image_rgb, (x0, y0, x0 + side, y0 + side))
        faces = [f.scaled(1.0, x0, y0) for f in self.detect(region, retry=False, rotations=rotations)]
        return [f for f in faces if x0 <= f.box[0] + f.box[2] / 2 < x0 + side and y0 <= f.box[1] + f.box[3] / 2 < y0 + side]


#: The size (share of the frame's short side) from which a face box counts as large enough to
#: need the detector's second, smaller look (see FaceDetector._coarse_passes).
LARGE_FACE = 0.4


def box_iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


def _inside(small, big) -> float:
    """The share of box small's area that lies inside box big."""
    sx, sy, sw, sh = small
    bx, by, bw, bh = big
    iw = min(sx + sw, bx + bw) - max(sx, bx)
    ih = min(sy + sh, by + bh) - max(sy, by)
    return 0.0 if iw <= 0 or ih <= 0 else iw * ih / (sw * sh)


NESTED = 0.7  # a box this much inside a larger one is a part of that face, not a face


def merge_faces(passes: list[list[Face]], nms_threshold: float = 0.3) -> list[Face]:
    """The faces of one or several detection passes over one image, as one list: greedy
    non-maximum suppression by score (a face found by two passes is kept once, at its best
    score), then boxes lying mostly inside a larger one are dropped (YuNet sometimes reports a
    face's lower half, or a mask's print, as a second, smaller face)."""
    kept: list[Face] = []
    for f in sorted((f for p in passes for f in p), key=lambda f: -f.score):
        if all(box_iou(f.box, k.box) <= nms_threshold for k in kept):
            kept.append(f)
    return [f for f in kept
            if not any(k.box[2] * k.box[3] > f.box[2] * f.box[3] and _inside(f.box, k.box) >= NESTED for k in kept)]


def square_crop_box(
    face_box: tuple[float, float, float, float],
    image_shape: tuple[int, ...],
    margin: float = 0.3,
    fit: str = "shift",
) -> tuple[int, int, int, int]:
    """A square (x0, y0, x1, y1) around a face box, grown by margin x its long side on each side.

    fit="pad": the square is centred on the box and may reach past the image (`crop_square`
    replicates the border there); the runtime uses this so every face gets the same framing.
    fit="shift": the square is shrunk to the image's short side if larger, then moved to lie
    inside the image; data preparation uses this so training crops hold only real pixels.
    """
    if fit not in FIT_MODES:
        raise ConfigError(f"fit must be one of {', '.join(FIT_MODES)}; got {fit!r}")
    if margin < 0:
        raise ConfigError(f"margin must be >= 0; got {margin!r}")
    x, y, w, h = (float(v) for v in face_box)
    if w <= 0 or h <= 0:
        raise InputError(f"face box must have a positive size; got {list(face_box)}")
    ih, iw = int(image_shape[0]), int(image_shape[1])
    side = max(1, round(max(w, h) * (1.0 + 2.0 * margin)))
    cx, cy = x + w / 2.0, y + h / 2.0
    if fit == "shift":
        side = min(side, ih, iw)
    x0 = round(cx - side / 2.0)
    y0 = round(cy - side / 2.0)
    if fit == "shift":
        x0 = min(max(x0, 0), iw - side)
        y0 = min(max(y0, 0), ih - side)
    return int(x0), int(y0), int(x0 + side), int(y0 + side)


def crop_square(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of box; parts outside the image are filled by replicating its border."""
    import cv2

    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"crop box must have a positive size; got {[x0, y0, x1, y1]}")
    ih, iw = image.shape[:2]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y1 - ih), max(0, x1 - iw)
    inner = image[max(0, y0):min(ih, y1), max(0, x0):min(iw, x1)]
    if inner.size == 0:
        raise InputError(f"crop box {[x0, y0, x1, y1]} lies outside the {iw}x{ih} image")
    if top or left or bottom or right:
        inner = cv2.copyMakeBorder(inner, top, bottom, left, right, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(inner)


def crop_face(
    image: np.ndarray,
    face_box: tuple[float, float, float, float],
    size: int,
    margin: float = 0.3,
    fit: str = "shift",
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The square crop around a face, resized to size x size; returns (crop, crop box)."""
    box = square_crop_box(face_box, image.shape, margin, fit)
    return resize_square(crop_square(image, box), size), box


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square crop: area averaging when shrinking (no aliasing), cubic when enlarging."""
    if size < 1:
        raise ConfigError(f"size must be a positive integer; got {size!r}")
    return resize(image, size, "auto")


# -------------------------------------------------------------------------------------------
# The mask zone: where a face mask sits, estimated from YuNet's five landmarks.

# The six anchors in the order of MaskTheFace's template files (masks.cfg, mask_a..mask_f):
# a/c the top corners by the ears, b the top centre on the nose bridge, d/f the lower corners
# along the jaw, e the bottom centre under the chin. a, d are on the image's left.
ANCHOR_NAMES = ("a", "b", "c", "d", "e", "f")


def _face_frame(landmarks) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(eyes' midpoint, x unit vector along the eye line, y unit vector down the face, h, eye
    distance) of five YuNet landmarks; h is the eye-line-to-mouth distance (see mask_anchors)."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    r_eye, l_eye, _, r_mouth, l_mouth = pts
    eyes, mouth = (r_eye + l_eye) / 2.0, (r_mouth + l_mouth) / 2.0
    across = l_eye - r_eye
    d_eyes = float(np.hypot(*across))
    if d_eyes < 1e-6:
        raise InputError("face landmarks: the two eyes are at the same point")
    ux = across / d_eyes
    uy = np.array([-ux[1], ux[0]])  # down the face (image y grows downwards)
    h = float(np.dot(mouth - eyes, uy))
    if h <= 0.05 * d_eyes:  # mouth above the eyes or on their line: not a usable face
        h = d_eyes
    return eyes, ux, uy, h, d_eyes


def eye_mouth_distance(landmarks) -> float:
    """h, the unit of the mask zone: the distance from the eye line down to the mouth (pixels)."""
    return _face_frame(landmarks)[3]


def mask_anchors(landmarks) -> np.ndarray:
    """The six mask anchors [6, 2] (pixel x, y; order `ANCHOR_NAMES`) of one face.

    YuNet gives eyes, nose tip and mouth corners, not the jaw, so the jaw and chin are
    extrapolated with proportions of an average face, in the face's own frame: x along the
    eye line (so the zone follows the head's roll), y perpendicular to it, both in units of the
    eye-to-mouth distance (so it follows scale, including a face that is tilted forward or
    back, where the eye distance alone would mislead). A turned head (yaw) brings the nose tip
    towards one eye: each side's half-width is scaled by how far the nose tip lies from that
    side's eye, so the far cheek narrows as it does in the image.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    r_eye, _, nose, r_mouth, l_mouth = pts
    eyes, ux, uy, h, d_eyes = _face_frame(pts)
    mouth = (r_mouth + l_mouth) / 2.0
    # Half-widths on the image-left and image-right side, from where the nose tip sits
    # between the eyes (0.5 for a frontal face).
    t = float(np.clip(np.dot(nose - r_eye, ux) / d_eyes, 0.1, 0.9))
    left_w, right_w = 2.0 * t, 2.0 * (1.0 - t)
    centre_top = eyes + (float(np.dot(nose - eyes, ux))) * ux  # the nose's line through the eyes
    def at(base, x, y):
        return base + x * ux + y * uy
    # Proportions (units of h = eye line to mouth, looked at on the shared faces): the top runs
    # over the nose bridge a fifth of the way down, the cheeks are ~1.0 h wide at the top and
    # ~0.9 h at the jaw on each side of a frontal face, the chin lies ~0.8 h below the mouth.
    a = at(centre_top, -1.0 * h * left_w, 0.30 * h)
    b = at(centre_top, 0.0, 0.18 * h)
    c = at(centre_top, 1.0 * h * right_w, 0.30 * h)
    mouth_line = mouth + float(np.dot(nose - mouth, ux)) * ux * 0.5
    d = at(mouth_line, -0.9 * h * left_w, 0.35 * h)
    e = at(mouth_line, 0.0, 0.80 * h)
    f = at(mouth_line, 0.9 * h * right_w, 0.35 * h)
    return np.stack([a, b, c, d, e, f]).astype(np.float32)


def _closed_spline(points: np.ndarray, per_segment: int = 12) -> np.ndarray:
    """A closed Catmull-Rom curve through points [N, 2] (rounded corners, no overshoot to speak of)."""
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    out = []
    for i in range(n):
        p0, p1, p2, p3 = p[i - 1], p[i], p[(i + 1) % n], p[(i + 2) % n]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    return np.concatenate(out)


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


# The zone's defaults, in units of h (the eye-line-to-mouth distance). Real masks reach past
# the anchors (to the ears, under the chin), and on a masked face the mouth corners are
# guessed, so the matte is 1 up to grow - feather outside the anchors' outline and 0 from grow
# outside it. Its top is bounded by a line parallel to the eyes: 0 up to ZONE_TOP[0] below
# them, 1 from ZONE_TOP[1] (a lower eyelid lies ~0.1 h below the eye's centre). On the 339
# observations pairs (masks pasted by image processing, landmarks found on the masked twin)
# these cover 97 % of the mask's pixels with a matte above 0.5.
ZONE_GROW = 0.30
ZONE_FEATHER = 0.20
ZONE_TOP = (0.12, 0.24)


def mask_zone_matte(
    landmarks,
    box: tuple[int, int, int, int],
    grow: float = ZONE_GROW,
    feather: float = ZONE_FEATHER,
    top: tuple[float, float] = ZONE_TOP,
    max_side: int = 384,
) -> np.ndarray:
    """The mask zone of one face as a soft alpha matte [side, side] float32 over a square box.

    landmarks: YuNet's five points in frame pixels; box: the square (x0, y0, x1, y1) the matte
    covers, in the same frame (side = x1 - x0). The zone is the closed curve through the six
    `mask_anchors` (nose bridge, cheeks, jaw, under the chin), grown and feathered by `grow`
    and `feather` (units of h, see ZONE_GROW) and cut off below the eyes by `top`; it follows
    the face's roll, scale and yaw as the anchors do. Values are in [0, 1] and exactly 0
    outside the grown zone and on the box's border, so a blend with it leaves those pixels as
    they were. Computed at most max_side pixels wide, then enlarged (bilinear, which keeps the
    zeros).
    """
    import cv2

    if not 0.0 < feather <= grow + 1.0 or grow < 0:
        raise ConfigError(f"zone grow must be >= 0 and feather in (0, grow + 1]; got grow {grow!r}, feather {feather!r}")
    if not 0.0 <= top[0] < top[1]:
        raise ConfigError(f"zone top must be two increasing fractions (start, full); got {top!r}")
    x0, y0, x1, y1 = (int(v) for v in box)
    side = x1 - x0
    if side < 2 or y1 - y0 != side:
        raise InputError(f"mask zone box must be a square of at least 2 px; got {[x0, y0, x1, y1]}")
    work = min(side, max_side)
    scale = work / side
    eyes, ux, uy, h, _ = _face_frame(landmarks)
    h_px = h * scale

    def to_work(pts):  # frame pixels -> work pixels (pixel centres map to pixel centres)
        return (np.asarray(pts, np.float64) - (x0, y0) + 0.5) * scale - 0.5

    outline = to_work(mask_anchors(landmarks)[[0, 1, 2, 5, 4, 3]])  # a b c f e d: around the zone
    curve = _closed_spline(outline)
    inside = np.zeros((work, work), np.uint8)
    cv2.fillPoly(inside, [np.rint(curve * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    # Signed distance to the outline (positive inside); 5x5 masks are within ~1 % of Euclidean.
    d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5)
    d_in = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    alpha = _smoothstep((d_in - d_out + grow * h_px) / (feather * h_px))
    # Below the eyes: distance from the eye line, down the face.
    g = np.arange(work, dtype=np.float32)
    ex, ey = to_work(eyes)
    v = (g[None, :] - ex) * float(uy[0]) + (g[:, None] - ey) * float(uy[1])
    alpha *= _smoothstep((v - top[0] * h_px) / ((top[1] - top[0]) * h_px))
    alpha[0, :] = alpha[-1, :] = alpha[:, 0] = alpha[:, -1] = 0.0  # continuity with the frame
    alpha = alpha.astype(np.float32)
    if work != side:
        alpha = cv2.resize(alpha, (side, side), interpolation=cv2.INTER_LINEAR)
        alpha[0, :] = alpha[-1, :] = alpha[:, 0] = alpha[:, -1] = 0.0
    return alpha
