"""Face detection (YuNet) and square-crop geometry."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cyclemask.errors import ConfigError, InputError
from cyclemask.face_detect import (
    DETECTOR_ENV,
    Face,
    FaceDetector,
    crop_face,
    crop_square,
    resolve_detector_path,
    shipped_detector_path,
    square_crop_box,
)
from cyclemask.image_files import read_image


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """Grace Hopper's public-domain portrait, shipped inside matplotlib's wheel."""
    import matplotlib

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        pytest.skip(f"matplotlib's sample portrait {p} is absent in this installation")
    return read_image(p)


YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


@pytest.fixture
def detector(face_detector_path) -> FaceDetector:
    return FaceDetector(face_detector_path)


def iou(a, b) -> float:
    from cyclemask.face_detect import box_iou

    return box_iou(a, b)


# --- model path resolution ---------------------------------------------------------------


def test_no_detector_given_uses_the_shipped_one(monkeypatch):
    monkeypatch.delenv(DETECTOR_ENV, raising=False)
    p = resolve_detector_path(None)
    assert p == shipped_detector_path() and p.is_file()
    assert (p.parent / "LICENSE_yunet.txt").is_file()  # the licence travels with the weights
    assert hashlib.sha256(p.read_bytes()).hexdigest() == YUNET_SHA256
    assert FaceDetector().model_path == p


def test_package_data_ships_the_detector_and_its_licence():
    import tomllib
    from fnmatch import fnmatch

    repo = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cyclemask"]
    for rel in ("assets/yunet/face_detection_yunet_2023mar.onnx", "assets/yunet/LICENSE_yunet.txt"):
        assert (repo / "cyclemask" / rel).is_file(), rel
        assert any(fnmatch(rel, g) and g.count("/") == rel.count("/") for g in globs), f"{rel} not in {globs}"


def test_shipped_detector_missing_is_a_clear_error(monkeypatch, tmp_path):
    import cyclemask.face_detect as face_detect

    monkeypatch.delenv(DETECTOR_ENV, raising=False)
    monkeypatch.setattr(face_detect, "shipped_detector_path", lambda: tmp_path / "gone.onnx")
    with pytest.raises(ConfigError, match=rf"shipped with cyclemask .*gone\.onnx.* missing.*{DETECTOR_ENV}"):
        resolve_detector_path(None)


def test_detector_from_env(monkeypatch, tmp_path):
    f = tmp_path / "yunet.onnx"
    f.write_bytes(b"x")
    monkeypatch.setenv(DETECTOR_ENV, str(f))
    assert resolve_detector_path() == f
    monkeypatch.setenv(DETECTOR_ENV, str(tmp_path / "missing.onnx"))
    with pytest.raises(ConfigError, match=rf"missing\.onnx \(from \${DETECTOR_ENV}\): no such file"):
        resolve_detector_path()


def test_argument_wins_over_env(monkeypatch, tmp_path):
    monkeypatch.setenv(DETECTOR_ENV, str(tmp_path / "env.onnx"))
    with pytest.raises(ConfigError, match=r"arg\.onnx \(from the model_path argument\)"):
        resolve_detector_path(tmp_path / "arg.onnx")


def test_creating_detectors_prints_nothing_and_keeps_opencvs_log_level():
    # OpenCV writes its warnings from C++ straight to stderr: only a child process can see them.
    code = (
        "import cv2; from cyclemask.face_detect import FaceDetector; "
        "lv = cv2.utils.logging; lv.setLogLevel(lv.LOG_LEVEL_INFO); "
        "[FaceDetector() for _ in range(3)]; "
        "assert lv.getLogLevel() == lv.LOG_LEVEL_INFO, lv.getLogLevel()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "WARN" not in r.stderr and "setPreferableTarget" not in r.stderr, r.stderr


def test_corrupt_model_file_is_a_clear_error(tmp_path):
    f = tmp_path / "broken.onnx"
    f.write_bytes(b"not an onnx model")
    with pytest.raises(ConfigError, match=r"broken\.onnx: OpenCV cannot load it"):
        FaceDetector(f)


def test_bad_thresholds(tmp_path):
    with pytest.raises(ConfigError, match="score_threshold"):
        FaceDetector(tmp_path / "x.onnx", score_threshold=1.5)
    with pytest.raises(ConfigError, match="retry_pad"):
        FaceDetector(tmp_path / "x.onnx", retry_pad=-1)


# --- detection -----------------------------------------------------------------------------


def test_detects_the_one_face(detector, portrait):
    faces = detector.detect(portrait)
    assert len(faces) == 1
    f = faces[0]
    x, y, w, h = f.box
    assert f.score > 0.8
    assert 0 <= x and 0 <= y and x + w <= portrait.shape[1] and y + h <= portrait.shape[0]
    assert 100 < f.size < 300
    (rex, rey), (lex, ley), (nx, ny), (rmx, rmy), (lmx, lmy) = f.landmarks
    # Eyes above the nose above the mouth; the subject's right eye on the image's left.
    assert max(rey, ley) < ny < min(rmy, lmy)
    assert rex < nx < lex and rmx < lmx
    for px, py in f.landmarks:
        assert x <= px <= x + w and y <= py <= y + h


def test_no_face_in_noise(detector, rng):
    assert detector.detect(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) == []


def test_detect_rejects_bad_arrays(detector):
    with pytest.raises(InputError, match=r"uint8 RGB image \[H, W, 3\]; got float32"):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(InputError, match=r"got uint8 \[64, 64\]"):
        detector.detect(np.zeros((64, 64), np.uint8))


def test_large_image_boxes_are_in_its_own_pixels(detector, portrait):
    import cv2

    ref = detector.detect(portrait)[0]
    big = cv2.resize(portrait, None, fx=2.5, fy=2.5, interpolation=cv2.INTER_CUBIC)  # 1280x1500 > max_side
    faces = detector.detect(big)
    assert len(faces) == 1
    assert iou(faces[0].box, tuple(v * 2.5 for v in ref.box)) > 0.8


def test_a_face_filling_a_large_frame_is_found_where_it_is(detector, portrait):
    """A close selfie: YuNet misses a face ~1,000 px wide at the detector's working size."""
    import cv2

    ref = detector.detect(portrait)[0]
    x, y, w, h = (int(round(v)) for v in ref.box)
    tight = np.ascontiguousarray(portrait[max(0, y - h // 8): y + h + h // 8, max(0, x - w // 8): x + w + w // 8])
    f = 2400 / tight.shape[1]
    big = cv2.resize(tight, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
    faces = detector.detect(big, rotations=(-25.0, 25.0))
    assert len(faces) == 1, [fc.box for fc in faces]
    expected = ((x - max(0, x - w // 8)) * f, (y - max(0, y - h // 8)) * f, w * f, h * f)
    assert iou(faces[0].box, expected) > 0.5
    r_eye, l_eye, nose, r_mouth, l_mouth = faces[0].landmarks
    assert max(r_eye[1], l_eye[1]) < nose[1] < min(r_mouth[1], l_mouth[1])


def test_retry_on_padded_copy_maps_back(detector, portrait, monkeypatch):
    """When the first pass finds nothing, the padded retry's boxes land on the same face."""
    ref = detector.detect(portrait)[0]
    real = detector._detect_bgr
    calls = []

    def first_pass_misses(bgr):
        calls.append(bgr.shape)
        return [] if len(calls) == 1 else real(bgr)

    monkeypatch.setattr(detector, "_detect_bgr", first_pass_misses)
    faces = detector.detect(portrait)
    assert len(calls) == 2 and calls[1][0] == portrait.shape[0] + 2 * round(0.5 * 600)
    assert len(faces) == 1 and iou(faces[0].box, ref.box) > 0.8
    lx, ly = faces[0].landmarks[2]
    assert abs(lx - ref.landmarks[2][0]) < 10 and abs(ly - ref.landmarks[2][1]) < 10
    calls.clear()
    assert detector.detect(portrait, retry=False) == [] and len(calls) == 1


def test_tight_crop_still_detected(detector, portrait):
    ref = detector.detect(portrait)[0]
    x, y, w, h = (int(v) for v in ref.box)
    tight = portrait[y:y + h, x:x + w]
    faces = detector.detect(tight)
    assert len(faces) == 1
    assert faces[0].size > 0.7 * min(w, h)


# --- geometry ------------------------------------------------------------------------------


def test_square_box_pad_is_centred_with_margin():
    x0, y0, x1, y1 = square_crop_box((100, 50, 40, 60), (300, 400), margin=0.25, fit="pad")
    assert x1 - x0 == y1 - y0 == 90  # long side 60 * (1 + 2 * 0.25)
    assert (x0 + x1) / 2 == pytest.approx(120, abs=0.5) and (y0 + y1) / 2 == pytest.approx(80, abs=0.5)


def test_square_box_pad_may_leave_the_image():
    box = square_crop_box((0, 0, 50, 50), (100, 100), margin=0.5, fit="pad")
    assert box[0] < 0 and box[1] < 0 and box[2] - box[0] == 100


def test_square_box_shift_stays_inside():
    ih, iw = 100, 160
    x0, y0, x1, y1 = square_crop_box((140, 80, 30, 30), (ih, iw), margin=0.3, fit="shift")
    assert x1 - x0 == y1 - y0 == 48
    assert 0 <= x0 and 0 <= y0 and x1 <= iw and y1 <= ih


def test_square_box_shift_shrinks_to_short_side():
    # Tight crop: the face fills the image, the margin cannot fit.
    # side min(176, 120, 100) = 100, centred on the box (50, 60), then kept inside.
    assert square_crop_box((2, 5, 96, 110), (120, 100), margin=0.3, fit="shift") == (0, 10, 100, 110)


def test_square_box_errors():
    with pytest.raises(ConfigError, match="fit must be one of shift, pad; got 'crop'"):
        square_crop_box((0, 0, 10, 10), (20, 20), fit="crop")
    with pytest.raises(ConfigError, match="margin must be >= 0"):
        square_crop_box((0, 0, 10, 10), (20, 20), margin=-0.1)
    with pytest.raises(InputError, match="positive size"):
        square_crop_box((0, 0, 0, 10), (20, 20))


def test_crop_square_replicates_outside(rng):
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    inside = crop_square(img, (10, 5, 30, 25))
    assert np.array_equal(inside, img[5:25, 10:30])
    out = crop_square(img, (-5, -3, 15, 17))
    assert out.shape == (20, 20, 3)
    assert np.array_equal(out[3:, 5:], img[0:17, 0:15])
    assert np.array_equal(out[0, 5:], img[0, 0:15])  # replicated top row
    assert np.array_equal(out[3:, 0], img[0:17, 0])  # replicated left column
    with pytest.raises(InputError, match="outside the 50x40 image"):
        crop_square(img, (60, 0, 80, 20))


def test_crop_face_resizes(portrait):
    face = Face((182.9, 120.5, 170.3, 212.5), 0.9, ((0, 0),) * 5)
    crop, box = crop_face(portrait, face.box, 128, margin=0.3)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    assert box[2] - box[0] == box[3] - box[1] == round(212.5 * 1.6)


def test_face_to_dict_and_scaled():
    f = Face((10.0, 20.0, 30.0, 40.0), 0.91234567, ((1.0, 2.0),) * 5)
    g = f.scaled(2.0, dx=1.0, dy=-1.0)
    assert g.box == (21.0, 39.0, 60.0, 80.0) and g.landmarks[0] == (3.0, 3.0)
    assert f.to_dict()["score"] == 0.9123 and f.size == 30.0


def test_mask_anchors_follow_roll_and_scale():
    from cyclemask.face_detect import mask_anchors

    # A frontal face: eyes at y=100, nose at 130, mouth at 160 (eye-mouth distance 60).
    lm = [(80, 100), (120, 100), (100, 130), (85, 160), (115, 160)]
    a = mask_anchors(lm)
    assert a.shape == (6, 2)
    xa, xb, xc, xd, xe, xf = a[:, 0]
    ya, yb, yc, yd, ye, yf = a[:, 1]
    assert xa < xb < xc and xd < xe < xf  # left to right
    assert 100 < yb < 130 and ye > 160  # top below the eyes, above the nose tip; chin under the mouth
    assert abs(xb - 100) < 1e-3 and abs(xe - 100) < 1e-3  # symmetric face, centred
    # Twice the size and rotated by 30 degrees about the origin: anchors transform the same way.
    t = np.deg2rad(30)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    moved = mask_anchors((np.asarray(lm, float) @ rot.T) * 2)
    np.testing.assert_allclose(moved, (a.astype(float) @ rot.T) * 2, atol=1e-3)


def test_mask_anchors_turned_head_narrows_far_side():
    from cyclemask.face_detect import mask_anchors

    lm = [(80, 100), (120, 100), (112, 130), (90, 160), (118, 160)]  # nose towards the image-right eye
    a = mask_anchors(lm)
    assert (a[1, 0] - a[0, 0]) > (a[2, 0] - a[1, 0])  # the image-right cheek is the far one


def test_mask_anchors_refuse_degenerate_eyes():
    from cyclemask.face_detect import mask_anchors

    with pytest.raises(InputError, match="same point"):
        mask_anchors([(100, 100), (100, 100), (100, 130), (90, 160), (110, 160)])


# --- the mask zone matte -----------------------------------------------------------------------

FRONTAL = [(80, 100), (120, 100), (100, 130), (85, 160), (115, 160)]  # eye-mouth distance h = 60


def _rotated(points, degrees, centre=(100, 130)):
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (np.asarray(points, float) - centre) @ rot.T + centre


def _at(matte, box, point):
    x, y = (int(round(v)) for v in np.asarray(point) - box[:2])
    return float(matte[y, x])


@pytest.mark.parametrize("roll", [0, -30, 30])
def test_zone_covers_nose_mouth_and_chin_and_leaves_both_eyes(roll):
    from cyclemask.face_detect import mask_zone_matte

    box = (0, 0, 200, 200)
    chin, cheeks = (100, 205 - 10), [(62, 150), (138, 150)]  # ~0.6 h under the mouth; beside the mouth
    pts = _rotated(FRONTAL + [chin] + cheeks, roll)
    lm = pts[:5]
    m = mask_zone_matte(lm, box)
    assert m.shape == (200, 200) and m.dtype == np.float32 and 0.0 <= m.min() and m.max() <= 1.0
    for p in pts[2:]:  # nose tip, mouth corners, chin, cheeks: fully in the zone
        assert _at(m, box, p) == pytest.approx(1.0, abs=1e-3), p
    yy, xx = np.mgrid[0:200, 0:200]
    for ex, ey in lm[:2]:  # each eye, with its lids (0.15 x the eye distance around its centre)
        assert m[(xx - ex) ** 2 + (yy - ey) ** 2 <= 6.0 ** 2].max() == 0.0
    (ex, ey), t = lm[:2].mean(axis=0), np.deg2rad(roll)
    below = -(xx - ex) * np.sin(t) + (yy - ey) * np.cos(t)  # distance down the face from the eye line
    assert m[below < 0.1 * 60].max() == 0.0  # nothing above the eyes' lower lids (brows, forehead, hair)
    assert m[below > 0.3 * 60].max() == 1.0
    assert not m[0].any() and not m[-1].any() and not m[:, 0].any() and not m[:, -1].any()


@pytest.mark.parametrize("roll", [0, -30, 30])
def test_zone_ends_where_the_landmarks_geometry_says(roll):
    # The reference comes from the landmarks by exact geometry (tests/zone_geometry.py), not
    # from the matte: a matte grown by one pixel everywhere once passed every zone test.
    from cyclemask.face_detect import ZONE_GROW, ZONE_TOP, mask_zone_matte
    from zone_geometry import DISTANCE_SLACK, zone_reference

    box = (0, 0, 200, 200)
    lm = _rotated(FRONTAL, roll)
    m = mask_zone_matte(lm, box)
    outside, below, h = zone_reference(lm, box)
    grown = ZONE_GROW * h
    support = m > 0
    # 0 from ZONE_GROW x h outside the anchors' outline, and on or above ZONE_TOP[0] x h under
    # the eyes (1e-3: the matte's float32 against this float64).
    assert outside[support].max() < grown + DISTANCE_SLACK
    assert below[support].min() > ZONE_TOP[0] * h - 1e-3
    # ... and it does reach them: a matte drawn short would pass the two bounds above.
    assert outside[support].max() > grown - 1.0
    assert below[support].min() < ZONE_TOP[0] * h + 1.0


def test_zone_follows_scale_and_position():
    from cyclemask.face_detect import mask_zone_matte

    small = mask_zone_matte(FRONTAL, (0, 0, 200, 200))
    lm = np.asarray(FRONTAL, float) * 2 + (50, 30)  # twice the size, elsewhere in the frame
    big = mask_zone_matte(lm, (50, 30, 450, 430))
    down = cv2.resize(big, (200, 200), interpolation=cv2.INTER_AREA)
    inner = np.abs(down - small)[2:-2, 2:-2]  # the border rows are zero in both, at different widths
    assert inner.mean() < 0.01 and inner.max() < 0.25
    # A large face's matte is computed at max_side and enlarged: the same shape.
    capped = mask_zone_matte(lm, (50, 30, 450, 430), max_side=100)
    assert np.abs(capped - big).mean() < 0.01 and not capped[0].any() and not capped[:, -1].any()


def test_zone_grows_and_narrows_the_far_cheek():
    from cyclemask.face_detect import mask_zone_matte

    box = (0, 0, 200, 200)
    tight, loose = mask_zone_matte(FRONTAL, box, grow=0.1, feather=0.1), mask_zone_matte(FRONTAL, box)
    assert (loose > 0).sum() > 1.2 * (tight > 0).sum() and np.all(loose >= tight - 1e-6)
    turned = mask_zone_matte([(80, 100), (120, 100), (112, 130), (90, 160), (118, 160)], box)
    cols = np.nonzero(turned[150] > 0.5)[0]
    assert (110 - cols[0]) > (cols[-1] - 110)  # the image-right cheek is the far one: narrower


def test_zone_errors():
    from cyclemask.face_detect import mask_zone_matte

    with pytest.raises(InputError, match="square of at least 2 px"):
        mask_zone_matte(FRONTAL, (0, 0, 200, 100))
    with pytest.raises(ConfigError, match="zone grow must be >= 0"):
        mask_zone_matte(FRONTAL, (0, 0, 200, 200), grow=-1)
    with pytest.raises(ConfigError, match="zone top"):
        mask_zone_matte(FRONTAL, (0, 0, 200, 200), top=(0.3, 0.2))
    with pytest.raises(InputError, match="same point"):
        mask_zone_matte([(100, 100)] * 5, (0, 0, 200, 200))


def test_zone_on_the_portrait(detector, portrait):
    """YuNet's landmarks on a real face: the zone holds nose and mouth, not the eyes or glasses."""
    from cyclemask.face_detect import eye_mouth_distance, mask_zone_matte

    f = detector.detect(portrait)[0]
    box = square_crop_box(f.box, portrait.shape, 0.3, "pad")
    m = mask_zone_matte(f.landmarks, box)
    lm = np.asarray(f.landmarks)
    for p in lm[2:]:
        assert _at(m, box, p) == pytest.approx(1.0, abs=1e-3)
    h = eye_mouth_distance(f.landmarks)
    assert 0.8 < h / np.hypot(*(lm[1] - lm[0])) < 1.4
    assert _at(m, box, lm[3:].mean(axis=0) + (0, 0.6 * h)) == pytest.approx(1.0, abs=1e-3)  # the chin
    for p in lm[:2]:
        x, y = (int(v) for v in p - box[:2])
        assert m[y - 8:y + 9, x - 12:x + 13].max() == 0.0


@pytest.mark.shared
def test_zone_covers_a_pasted_mask_found_on_the_masked_face(detector, shared_data):
    """The unmask direction: landmarks come from the masked face, and the zone must still hold
    the mask. The observations pairs differ only where a mask was pasted."""
    from cyclemask.face_detect import mask_zone_matte

    pairs = shared_data / "faces" / "observations_pairs"
    covered = []
    for name in sorted(p.name for p in (pairs / "with_mask").glob("*.jpg"))[:8]:
        masked, bare = read_image(pairs / "with_mask" / name), read_image(pairs / "without_mask" / name)
        faces = detector.detect(masked)
        if masked.shape != bare.shape or not faces:
            continue
        box = square_crop_box(faces[0].box, masked.shape, 1.0, "pad")
        m = mask_zone_matte(faces[0].landmarks, box)
        pad = max(0, -box[0], -box[1], box[2] - masked.shape[1], box[3] - masked.shape[0])
        changed = np.abs(masked.astype(int) - bare).max(axis=2) > 40
        changed = np.pad(changed, pad)[box[1] + pad:box[3] + pad, box[0] + pad:box[2] + pad]
        covered.append((m[changed] > 0.5).mean())
    assert len(covered) >= 5, "too few pairs detected to judge"
    assert np.mean(covered) > 0.9, covered


# --- rotated passes for tilted heads ------------------------------------------------------------


def _rotate(image, degrees):
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE), m


@pytest.mark.parametrize("degrees", [40, -40])
def test_rotated_passes_find_a_tilted_face_with_its_landmarks(detector, portrait, degrees):
    from cyclemask.face_detect import FaceDetector

    ref = detector.detect(portrait)[0]
    tilted, m = _rotate(portrait, degrees)
    expected = np.c_[np.asarray(ref.landmarks), np.ones(5)] @ m.T
    rotating = FaceDetector(rotations=(25.0, -25.0))
    faces = rotating.detect(tilted)
    assert len(faces) == 1  # found by several passes, kept once
    err = np.abs(np.asarray(faces[0].landmarks) - expected).max()
    upright = detector.detect(tilted)
    up_err = np.abs(np.asarray(upright[0].landmarks) - expected).max() if upright else np.inf
    assert err < 0.06 * ref.box[2] and err < up_err, (err, up_err)  # the rotated pass places them better
    cx, cy = faces[0].box[0] + faces[0].box[2] / 2, faces[0].box[1] + faces[0].box[3] / 2
    ex, ey = m @ (ref.box[0] + ref.box[2] / 2, ref.box[1] + ref.box[3] / 2, 1.0)
    assert abs(cx - ex) < 0.1 * ref.box[2] and abs(cy - ey) < 0.1 * ref.box[3]


def test_detect_near_finds_the_face_around_a_box(detector, portrait):
    ref = detector.detect(portrait)[0]
    tilted, m = _rotate(portrait, 45)
    cx, cy = m @ (ref.box[0] + ref.box[2] / 2, ref.box[1] + ref.box[3] / 2, 1.0)
    box = (cx - ref.box[2] / 2, cy - ref.box[3] / 2, ref.box[2], ref.box[3])
    near = detector.detect_near(tilted, box)
    assert len(near) == 1 and iou(near[0].box, box) > 0.5
    assert detector.detect_near(tilted, (0, 0, 40, 40)) == []  # nothing around a corner


def test_merge_faces_keeps_the_best_of_overlapping_detections():
    from cyclemask.face_detect import merge_faces

    a = Face((10.0, 10.0, 50.0, 50.0), 0.7, ())
    b = Face((12.0, 11.0, 50.0, 50.0), 0.9, ())
    c = Face((200.0, 10.0, 50.0, 50.0), 0.6, ())
    assert merge_faces([[a, c], [b]]) == [b, c]
    assert merge_faces([[], []]) == []
    lower_half = Face((20.0, 35.0, 30.0, 25.0), 0.95, ())  # inside a, even at a higher score
    assert merge_faces([[a, lower_half, c]]) == [a, c]


def test_rotations_validation(face_detector_path):
    with pytest.raises(ConfigError, match="rotations must be non-zero angles"):
        FaceDetector(face_detector_path, rotations=(0.0,))
    with pytest.raises(ConfigError, match="rotations must be non-zero angles"):
        FaceDetector(face_detector_path, rotations=(120.0,))
