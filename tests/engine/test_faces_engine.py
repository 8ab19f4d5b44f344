"""Face-aware processing (engine/faces.py) with a stub detector: crops, paste-back, tracking,
colour matching, detection ahead of the pipeline. Real YuNet cases are in test_faces_cli.py."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from cyclemask.engine.backends import SyncBackend, TorchBackend
from cyclemask.engine.contracts import Sink, Source
from cyclemask.errors import ConfigError, InputError
from cyclemask.face_detect import DETECTOR_ENV, Face, square_crop_box
from cyclemask.engine.faces import (
    FaceConfig,
    FaceProcessor,
    FaceTracker,
    apply_gain,
    feather_mask,
    iou,
    mean_luminance,
)
from cyclemask.engine.pipeline import PipelineConfig, run_pipeline
from cyclemask.engine.sources import Frame
from cyclemask.image_tensors import eager_translate

SIZE = 64
GREEN = (0, 255, 0)


def face(x, y, w, h=None, score=0.9) -> Face:
    h = w if h is None else h
    return Face((float(x), float(y), float(w), float(h)), score, ((0.0, 0.0),) * 5)


class GreenSquares:
    """A stub detector: every pure-green square patch of the image is a face. Stateless, so
    it is safe on several threads; records the threads it ran on."""

    def __init__(self, threads: set | None = None) -> None:
        self.threads = threads

    def detect(self, image):
        if self.threads is not None:
            self.threads.add(threading.current_thread().name)
        hit = np.all(image == np.array(GREEN, np.uint8), axis=2).astype(np.uint8)
        contours, _ = cv2.findContours(hit, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes = sorted(cv2.boundingRect(c) for c in contours)
        return [face(x, y, w, h) for x, y, w, h in boxes]


def processor(config: FaceConfig | None = None, threads: set | None = None) -> FaceProcessor:
    return FaceProcessor(SIZE, config or FaceConfig(track=False, paste="crop"), detector_factory=lambda: GreenSquares(threads))


def scene(rng, faces=(), size=(120, 200)) -> np.ndarray:
    """Noise (never pure green) with a green square per (x, y, side)."""
    img = rng.integers(0, 200, (*size, 3), dtype=np.uint8)
    for x, y, s in faces:
        img[y:y + s, x:x + s] = GREEN
    return img


def invert(crops):
    return [255 - c for c in crops]


def outside(boxes, shape) -> np.ndarray:
    """True where no crop box reaches."""
    keep = np.ones(shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        keep[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = False
    return keep


# --- configuration and the blend mask --------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"min_face": 0}, "min_face must be a positive integer; got 0"),
    ({"margin": -0.1}, r"margin must be in \[0, 2\]"),
    ({"detect_side": 16}, "detect_side must be at least 32"),
    ({"smoothing": 1.0}, r"smoothing must be in \[0, 1\)"),
    ({"hold_frames": -1}, "hold_frames must be an integer >= 0"),
    ({"iou_threshold": 0.0}, r"iou_threshold must be in \(0, 1\)"),
    ({"feather": 0.0}, r"feather must be in \(0, 1\]"),
    ({"blend_shape": "star"}, "blend_shape must be one of ellipse, rect; got 'star'"),
    ({"max_gain": 0.5}, "max_gain must be >= 1"),
    ({"scene_cut": 2.0}, r"scene_cut must be in \(0, 1\]"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FaceConfig(**kwargs)


@pytest.mark.parametrize("shape", ["ellipse", "rect"])
def test_feather_mask_is_zero_on_the_border_and_one_in_the_middle(shape):
    for side in (7, 64, 151, 601):
        w = feather_mask(side, shape, 0.3)[..., 0]
        assert w.shape == (side, side) and w.dtype == np.float32
        assert w.min() >= 0.0 and w.max() <= 1.0
        assert not w[0].any() and not w[-1].any() and not w[:, 0].any() and not w[:, -1].any()
        c = side // 2
        assert w[c, c] == pytest.approx(1.0, abs=0.05 if side < 10 else 0.0)
        row = w[c, : c + 1]  # rises monotonically from the edge to the middle, no step
        assert np.all(np.diff(row) >= 0)
        # Feathered, no seam: no step steeper than the smoothstep's slope over the feather band.
        assert np.abs(np.diff(row)).max() <= 1.5 / (0.3 * (side - 1) / 2) + 1e-6
    assert feather_mask(64, "ellipse")[0, 0, 0] == 0 and feather_mask(64, "rect")[10, 10, 0] > 0  # corners differ
    with pytest.raises(ConfigError, match="blend shape must be one of"):
        feather_mask(8, "star")


# --- prepare / finish -----------------------------------------------------------------------


def test_two_faces_are_both_translated_and_nothing_else_changes(rng):
    img = scene(rng, [(20, 30, 40), (130, 40, 50)])
    proc = processor()
    crops, state = proc.prepare(img)
    assert len(crops) == 2 and all(c.shape == (SIZE, SIZE, 3) and c.flags.c_contiguous for c in crops)
    assert [p.box for p in state] == [square_crop_box((20, 30, 40, 40), img.shape, 0.3, "pad"),
                                      square_crop_box((130, 40, 50, 50), img.shape, 0.3, "pad")]
    out = proc.finish(img, state, invert(crops))
    assert out.shape == img.shape and out.dtype == np.uint8 and out is not img
    keep = outside([p.box for p in state], img.shape)
    np.testing.assert_array_equal(out[keep], img[keep])
    for x, y, s in ((20, 30, 40), (130, 40, 50)):  # both faces' middles are the inverted green
        centre = out[y + s // 2 - 3:y + s // 2 + 3, x + s // 2 - 3:x + s // 2 + 3]
        assert np.abs(centre.astype(int) - (255 - np.array(GREEN))).max() <= 3
    # Where the blend weight is zero (the crop's corners for an ellipse), pixels are untouched too.
    x0, y0, x1, y1 = state[0].box
    zero = feather_mask(x1 - x0, "ellipse", 0.3)[..., 0] == 0
    np.testing.assert_array_equal(out[y0:y1, x0:x1][zero], img[y0:y1, x0:x1][zero])
    assert proc.stats.found == 2 and proc.stats.translated == 2 and proc.stats.frames_with_faces == 1


def test_frame_without_faces_passes_through_byte_identical(rng):
    img = scene(rng)
    proc = processor()
    crops, state = proc.prepare(img)
    assert crops == [] and state == []
    out = proc.finish(img, state, [])
    assert out is img and out.tobytes() == img.tobytes()
    assert proc.stats.frames == 1 and proc.stats.found == 0 and proc.stats.frames_with_faces == 0


def test_faces_below_min_face_are_left_alone(rng):
    img = scene(rng, [(10, 10, 20), (100, 30, 60)])
    proc = processor(FaceConfig(track=False, min_face=32, paste="crop"))
    crops, state = proc.prepare(img)
    assert len(crops) == 1 and state[0].box == square_crop_box((100, 30, 60, 60), img.shape, 0.3, "pad")
    out = proc.finish(img, state, invert(crops))
    np.testing.assert_array_equal(out[10:30, 10:30], img[10:30, 10:30])
    assert proc.stats.too_small == 1 and proc.stats.found == 1
    assert "1 found in 1 of 1 frames; 1 under --min-face 32 px left as they were; 1 translated" == \
        proc.stats.summary(32)


def test_margin_sets_the_crop(rng):
    img = scene(rng, [(60, 30, 40)])
    for margin, side in ((0.0, 40), (0.3, 64), (1.0, 120)):
        _, state = processor(FaceConfig(track=False, margin=margin)).prepare(img)
        x0, y0, x1, y1 = state[0].box
        assert x1 - x0 == y1 - y0 == side and (x0 + x1) / 2 == 80 and (y0 + y1) / 2 == 50


def test_face_at_the_frame_edge_is_padded_and_pasted_clipped(rng):
    img = scene(rng, [(0, 0, 50), (160, 80, 40)])  # touches the top-left and bottom-right corners
    proc = processor()
    crops, state = proc.prepare(img)
    assert len(crops) == 2 and state[0].box[0] < 0 and state[1].box[3] > img.shape[0]
    out = proc.finish(img, state, invert(crops))
    keep = outside([p.box for p in state], img.shape)
    np.testing.assert_array_equal(out[keep], img[keep])
    assert (out[20:30, 20:30] != img[20:30, 20:30]).any()


def test_finish_needs_one_output_per_crop(rng):
    img = scene(rng, [(20, 30, 40), (130, 40, 50)])
    proc = processor()
    crops, state = proc.prepare(img)
    with pytest.raises(ValueError):
        proc.finish(img, state, invert(crops)[:1])


def test_detector_model_errors(monkeypatch, tmp_path):
    monkeypatch.delenv(DETECTOR_ENV, raising=False)
    assert FaceProcessor(SIZE).detect(np.zeros((64, 64, 3), np.uint8)) == []  # the shipped detector
    with pytest.raises(ConfigError, match=r"nothere.onnx \(from the model_path argument\): no such file"):
        FaceProcessor(SIZE, model_path=tmp_path / "nothere.onnx")
    monkeypatch.setenv(DETECTOR_ENV, str(tmp_path / "env.onnx"))
    with pytest.raises(ConfigError, match=rf"env.onnx \(from \${DETECTOR_ENV}\): no such file"):
        FaceProcessor(SIZE)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="junk.onnx: OpenCV cannot load it"):
        FaceProcessor(SIZE, model_path=junk)


# --- tracking --------------------------------------------------------------------------------


def _track(boxes_per_frame, config=None, shape=(240, 320, 3), frames=None):
    # Without face checks, every detection is translated from its first frame: these tests are
    # about following; confirmation has its own tests (test_face_checks.py).
    tracker = FaceTracker(config or FaceConfig(face_checks=False))
    frame = np.full(shape, 100, np.uint8)
    out = []
    for i, boxes in enumerate(boxes_per_frame):
        img = frames[i] if frames is not None else frame
        out.append(tracker.update(img, [face(*b) for b in boxes]))
    return tracker, out


def test_tracking_smooths_jitter_and_follows_real_motion():
    rng = np.random.default_rng(3)
    raw = [(100 + rng.uniform(-3, 3), 80 + rng.uniform(-3, 3), 60 + rng.uniform(-2, 2)) for _ in range(40)]
    _, out = _track([[r] for r in raw])
    tracked = np.array([o[0][0][:2] for o in out])
    raw_xy = np.array([r[:2] for r in raw])
    assert all(len(o) == 1 and o[0][1] is False for o in out)
    # Frame-to-frame movement of the box: much smaller than the detector's jitter.
    assert np.abs(np.diff(tracked, axis=0)).mean() < 0.5 * np.abs(np.diff(raw_xy, axis=0)).mean()
    assert np.abs(tracked - np.array([100, 80])).max() < 4  # and it stays on the face
    # A movement of half the face's size is followed at once, not smoothed into a lag.
    _, out = _track([[(100, 80, 60)]] * 5 + [[(130, 80, 60)]])
    assert out[-1][0][0] == pytest.approx((130, 80, 60, 60))


def test_tracking_without_smoothing_is_the_detection():
    raw = [(100, 80, 60), (102, 79, 61), (99, 81, 60)]
    _, out = _track([[r] for r in raw], FaceConfig(smoothing=0.0, face_checks=False))
    for (x, y, s), o in zip(raw, out):
        assert o[0][0] == pytest.approx((x, y, s, s))


def test_lost_face_is_held_then_dropped():
    _, out = _track([[(100, 80, 60)], [(101, 80, 60)], [], [], [], []], FaceConfig(hold_frames=2, face_checks=False))
    assert [len(o) for o in out] == [1, 1, 1, 1, 0, 0]
    assert [o[0][1] for o in out[:4]] == [False, False, True, True]  # held frames are flagged
    _, out = _track([[(100, 80, 60)], [(100, 80, 60)], [], [(100, 80, 60)]], FaceConfig(hold_frames=0, face_checks=False))
    assert [len(o) for o in out] == [1, 1, 0, 1]
    _, out = _track([[(100, 80, 60)], [], []], FaceConfig(hold_frames=2, face_checks=False))
    assert [len(o) for o in out] == [1, 0, 0]  # seen once (a false detection?): not held


def test_a_held_face_moves_on_along_its_velocity():
    # A face walking across the frame and missed for two frames (motion blur, a hand): the crop
    # and its zone must keep moving with it, not wait where it was last seen.
    tracker = FaceTracker(FaceConfig(smoothing=0.0, hold_frames=2, face_checks=False))  # velocity: the last step exactly
    frame = np.full((240, 320, 3), 100, np.uint8)
    seen = [landmarked(100 + 4 * i, 80 + 2 * i, 60) for i in range(3)]  # 4 px right, 2 px down a frame
    for f in seen:
        tracker.update(frame, [f])
    last = np.asarray(seen[-1].landmarks)
    (box1, held1, lm1), = tracker.update(frame, [])
    (box2, held2, lm2), = tracker.update(frame, [])
    assert held1 and held2
    # One step on, then half a step more (the velocity halves with each frame held).
    assert box1 == pytest.approx((112, 86, 60, 60))
    assert box2 == pytest.approx((114, 87, 60, 60))
    np.testing.assert_allclose(lm1, last + (4, 2))
    np.testing.assert_allclose(lm2, last + (6, 3))


def test_two_faces_keep_their_own_tracks():
    frames = [[(40 + i, 60, 50), (200 - i, 70, 60)] for i in range(10)]
    _, out = _track(frames)
    assert all(len(o) == 2 for o in out)
    assert all(o[0][0][0] < 120 < o[1][0][0] for o in out)


def test_scene_cut_and_size_change_reset_tracks():
    dark, bright = np.full((240, 320, 3), 20, np.uint8), np.full((240, 320, 3), 220, np.uint8)
    tracker, out = _track([[(100, 80, 60)], [(100, 80, 60)], []], frames=[dark, dark, bright])
    assert out[2] == [] and tracker.cuts == 1  # a cut: the lost face is not held into the new scene
    tracker, out = _track([[(100, 80, 60)], [(100, 80, 60)], []], frames=[dark, dark, dark])
    assert len(out[2]) == 1 and tracker.cuts == 0
    tracker = FaceTracker(FaceConfig())
    tracker.update(dark, [face(100, 80, 60)])
    assert tracker.update(np.full((100, 100, 3), 20, np.uint8), []) == [] and tracker.cuts == 1
    # A size change that the thumbnail's first reduction (by 240 // 64 = 3) hides is one too.
    tracker = FaceTracker(FaceConfig())
    tracker.update(dark, [face(100, 80, 60)])
    assert tracker.update(np.full((241, 319, 3), 20, np.uint8), []) == [] and tracker.cuts == 1


def test_processor_tracks_and_counts_held_faces(rng):
    proc = processor(FaceConfig(hold_frames=1, face_checks=False))
    with_face = scene(rng, [(60, 30, 50)])
    empty = with_face.copy()
    empty[30:80, 60:110] = 90  # same scene, the detector sees nothing
    n = [len(proc.prepare(img)[0]) for img in (with_face, with_face, empty, empty, with_face)]
    assert n == [1, 1, 1, 0, 1]
    assert proc.stats.held == 1 and proc.stats.found == 3 and proc.stats.crops == 4


# --- colour matching ---------------------------------------------------------------------------


def _portrait(rng, exposure=1.0):
    img = np.full((160, 200, 3), (170, 160, 150), np.uint8)
    img[40:110, 70:130] = GREEN  # the "face"
    img = (img.astype(np.int16) + rng.integers(-5, 6, img.shape)).clip(0, 255).astype(np.uint8)
    img[40:110, 70:130] = GREEN
    if exposure != 1.0:
        img = apply_gain(img, 1.0 / exposure, inverse=True)
        img[40:110, 70:130] = apply_gain(np.array([[GREEN]], np.uint8), 1.0 / exposure, inverse=True)[0, 0]
    return img


class DarkGreen:
    def detect(self, image):
        g = image[..., 1].astype(int) - image[..., 0]
        ys, xs = np.nonzero(g > 40)
        if len(xs) == 0:
            return []
        return [face(xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)]


def _paint_white(crops):
    out = []
    for c in crops:
        c = c.copy()
        c[36:50, 20:44] = 240  # what the paper saw: a mask of the same luminosity in any frame
        out.append(c)
    return out


def test_colour_match_gives_the_painted_mask_the_frames_exposure(rng):
    bright, dark = _portrait(rng), _portrait(rng, exposure=1 / 6)
    results = {}
    for name, img in (("bright", bright), ("dark", dark)):
        for cm in (False, True):
            proc = FaceProcessor(SIZE, FaceConfig(track=False, color_match=cm), detector_factory=DarkGreen)
            crops, state = proc.prepare(img)
            assert len(crops) == 1
            results[name, cm] = (proc.finish(img, state, _paint_white(crops)), state[0])
    x0, y0, x1, y1 = results["dark", True][1].box
    s = x1 - x0
    patch = (slice(y0 + int(s * 0.6), y0 + int(s * 0.75)), slice(x0 + int(s * 0.35), x0 + int(s * 0.65)))
    lum = {k: mean_luminance(np.ascontiguousarray(v[0][patch])) for k, v in results.items()}
    assert results["dark", True][1].gain > 2 and results["bright", True][1].gain == 1.0
    assert lum["dark", False] > 0.8  # without matching: a glowing white patch in a dark frame
    assert lum["dark", True] < 0.35 * lum["dark", False]  # with it: as dark as the frame
    assert lum["bright", True] == pytest.approx(lum["bright", False], rel=0.1)  # well exposed: unchanged


def test_colour_match_round_trip_of_an_identity_model_is_close_to_the_input(rng):
    for exposure in (1.0, 0.15):
        img = _portrait(rng, exposure)
        proc = FaceProcessor(SIZE, FaceConfig(track=False, color_match=True), detector_factory=DarkGreen)
        crops, state = proc.prepare(img)
        ident = FaceProcessor(SIZE, FaceConfig(track=False), detector_factory=DarkGreen)
        plain_crops, plain_state = ident.prepare(img)
        ref = ident.finish(img, plain_state, plain_crops)  # the resize round trip alone
        out = proc.finish(img, state, crops)
        diff = np.abs(out.astype(int) - ref.astype(int))
        assert diff.mean() < 0.5 and diff.max() <= 6, (exposure, diff.mean(), diff.max())


def test_gain_tables_invert():
    v = np.arange(256, dtype=np.uint8)[None, :, None].repeat(3, 2)
    back = apply_gain(apply_gain(v, 4.0), 4.0, inverse=True)
    unclipped = apply_gain(v, 4.0) < 255
    assert np.abs(back.astype(int) - v)[unclipped].max() <= 2
    assert apply_gain(v, 1.0) is v


# --- mask-zone paste ---------------------------------------------------------------------------


def landmarked(x, y, w, h=None, score=0.9) -> Face:
    """A face box with the five landmarks of a frontal face inside it."""
    h = w if h is None else h
    rel = ((0.3, 0.4), (0.7, 0.4), (0.5, 0.58), (0.35, 0.78), (0.65, 0.78))
    return Face((float(x), float(y), float(w), float(h)), score, tuple((x + u * w, y + v * h) for u, v in rel))


class GreenFaces(GreenSquares):
    def detect(self, image):
        return [landmarked(*f.box) for f in super().detect(image)]


def zone_processor(config: FaceConfig | None = None) -> FaceProcessor:
    return FaceProcessor(SIZE, config or FaceConfig(track=False), detector_factory=GreenFaces)


def frame_matte(paste, shape, config=FaceConfig()) -> np.ndarray:
    """A paste's zone matte placed in frame coordinates."""
    from cyclemask.face_detect import mask_zone_matte

    x0, y0, x1, y1 = paste.box
    m = mask_zone_matte(paste.landmarks, paste.box, config.zone_grow, config.zone_feather)
    out = np.zeros(shape[:2], np.float32)
    ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    out[ay0:ay1, ax0:ax1] = m[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
    return out


def outside_the_zone(paste, shape, config=FaceConfig()) -> np.ndarray:
    """Frame pixels a paste must leave as they were, from its landmarks by exact geometry
    (tests/zone_geometry.py): beyond the grown outline or above the zone's top line."""
    from cyclemask.face_detect import ZONE_TOP
    from zone_geometry import DISTANCE_SLACK, zone_reference

    x0, y0, x1, y1 = paste.box
    outside, below, h = zone_reference(paste.landmarks, paste.box)
    free = (outside >= config.zone_grow * h + DISTANCE_SLACK) | (below <= ZONE_TOP[0] * h - 1e-3)
    keep = np.ones(shape[:2], bool)
    ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    keep[ay0:ay1, ax0:ax1] = free[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
    return keep


@pytest.mark.parametrize("colour", ["field", "mean", "none"])
def test_zone_paste_changes_the_zone_only(rng, colour):
    img = scene(rng, [(30, 20, 80), (190, 100, 50)], size=(160, 240))  # the second face at the edge
    proc = zone_processor(FaceConfig(track=False, zone_colour=colour))
    crops, state = proc.prepare(img)
    assert len(crops) == 2 and all(p.landmarks is not None for p in state)
    out = proc.finish(img, state, invert(crops))
    matte = np.maximum(*(frame_matte(p, img.shape) for p in state))
    # Outside the matte: the frame's own pixels, exactly (eyes, hair, background in the crop too).
    np.testing.assert_array_equal(out[matte == 0], img[matte == 0])
    assert (matte == 0).sum() > 0.5 * matte.size
    # The same outside the zone as the landmarks place it, by geometry: a matte that grew would
    # move the region above with it.
    keep = np.logical_and.reduce([outside_the_zone(p, img.shape) for p in state])
    np.testing.assert_array_equal(out[keep], img[keep])
    assert keep.sum() > 0.5 * keep.size
    f = state[0].landmarks
    for ex, ey in f[:2]:  # both eyes of the first face are untouched
        np.testing.assert_array_equal(out[int(ey) - 3:int(ey) + 4, int(ex) - 3:int(ex) + 4],
                                      img[int(ey) - 3:int(ey) + 4, int(ex) - 3:int(ex) + 4])
    nx, ny = (int(v) for v in f[2])  # the nose takes the model's output (the inverted green)
    assert np.abs(out[ny - 2:ny + 3, nx - 2:nx + 3].astype(int) - np.array(GREEN)).min() > 100
    assert proc.stats.whole_crop == 0 and proc.stats.translated == 2


def test_zone_colour_removes_the_generators_drift(rng):
    """A model that paints a patch on the mouth and also brightens everything by 40 levels: the
    zone keeps the patch, and its edge meets the frame without a bright ring."""
    from dataclasses import replace

    img = np.zeros((160, 200, 3), np.uint8)
    img[:] = (150, 110, 90)  # a plain "face" on a plain ground: the resize is exact, only colour counts
    green = img.copy()
    green[20:120, 40:140] = GREEN  # what the stub detector sees
    results = {}
    for c in ("field", "none"):
        _, state = zone_processor(FaceConfig(track=False, zone_colour=c)).prepare(green)
        crop = resize_crop(img, state[0].box)
        gen = np.clip(crop.astype(int) + 40, 0, 255).astype(np.uint8)
        mouth = ((np.asarray(state[0].landmarks[3:]).mean(axis=0) - state[0].box[:2])
                 * SIZE / (state[0].box[2] - state[0].box[0])).astype(int)
        gen[mouth[1] - 4:mouth[1] + 5, mouth[0] - 8:mouth[0] + 9] = 250  # the painted patch
        paste = replace(state[0], source=crop if c != "none" else None)
        results[c] = zone_processor(FaceConfig(track=False, zone_colour=c)).finish(img, [paste], [gen])
    matte = frame_matte(paste, img.shape)
    edge = (matte > 0.2) & (matte < 0.8)
    err = {c: np.abs(r.astype(int) - img)[edge].mean() for c, r in results.items()}
    assert err["none"] > 15 and err["field"] < 2, err
    mx, my = np.asarray(paste.landmarks[3:]).mean(axis=0).astype(int)
    assert results["field"][my, mx].min() > 200  # the painted patch survives


def resize_crop(image, box):
    from cyclemask.face_detect import crop_square, resize_square

    return resize_square(crop_square(image, box), SIZE)


def test_faces_without_landmarks_are_pasted_as_whole_crops(rng):
    img = scene(rng, [(20, 30, 40)])
    proc = zone_processor()
    proc._local.detector = GreenSquares()  # its faces carry degenerate landmarks
    crops, state = proc.prepare(img)
    assert state[0].landmarks is None and proc.stats.whole_crop == 1
    out = proc.finish(img, state, invert(crops))
    x0, y0, x1, y1 = state[0].box
    zero = feather_mask(x1 - x0, "ellipse", 0.3)[..., 0] == 0
    np.testing.assert_array_equal(out[y0:y1, x0:x1][zero], img[y0:y1, x0:x1][zero])
    assert "1 pasted as whole crops (no usable landmarks)" in proc.stats.summary(32)


def test_paste_config_validation():
    with pytest.raises(ConfigError, match="paste must be one of zone, crop, hole, hole-below-eyes; got 'face'"):
        FaceConfig(paste="face")
    with pytest.raises(ConfigError, match="zone_colour must be one of field, mean, none"):
        FaceConfig(zone_colour="poisson")
    with pytest.raises(ConfigError, match=r"zone_grow must be in \[0, 2\]"):
        FaceConfig(zone_grow=-0.1)
    with pytest.raises(ConfigError, match=r"zone_feather must be in \(0, zone_grow \+ 1\]"):
        FaceConfig(zone_feather=0.0)


def test_tracker_carries_landmarks_smoothed_and_held():
    tracker = FaceTracker(FaceConfig(hold_frames=2, face_checks=False))
    frame = np.full((240, 320, 3), 100, np.uint8)
    out = [tracker.update(frame, [landmarked(100 + 2 * i, 80, 60)]) for i in range(5)]
    for (box, held, lm) in (o[0] for o in out):
        assert lm.shape == (5, 2) and held is False
        # The landmarks sit where they sit in the (smoothed) box: they move with it.
        rel = (lm - box[:2]) / box[2]
        np.testing.assert_allclose(rel[0], (0.3, 0.4), atol=0.02)
    held = tracker.update(frame, [])[0]
    assert held[1] is True and held[2] is not None
    moved = held[2] - out[-1][0][2]
    box_moved = np.subtract(held[0][:2], out[-1][0][0][:2])
    np.testing.assert_allclose(moved, np.broadcast_to(box_moved, moved.shape), atol=1e-6)
    # A detector without landmarks gives tracks without them.
    assert FaceTracker(FaceConfig(face_checks=False)).update(frame, [Face((10.0, 10.0, 50.0, 50.0), 0.9, ())])[0][2] is None


# --- rotated passes around lost tracks ---------------------------------------------------------


class MissesTilted(GreenFaces):
    """Finds green faces in frames the test marks upright; elsewhere only detect_near finds them
    (as YuNet's rotated passes find a tilted head the upright pass misses)."""

    def __init__(self, log):
        super().__init__()
        self.log = log
        self.upright = True

    def detect(self, image):
        return super().detect(image) if self.upright else []

    def detect_near(self, image, box, rotations):
        self.log.append((tuple(round(v) for v in box), tuple(rotations)))
        return [f for f in super().detect(image) if iou(f.box, box) > 0.2]


def test_lost_tracks_are_found_again_on_rotated_passes(rng):
    log = []
    stub = MissesTilted(log)
    proc = FaceProcessor(SIZE, FaceConfig(hold_frames=0, face_checks=False), detector_factory=lambda: stub)
    frames = [scene(rng, [(60 + 2 * i, 30, 50)]) for i in range(6)]
    counts = []
    for i, img in enumerate(frames):
        stub.upright = i < 2
        counts.append(len(proc.prepare(img)[0]))
    assert counts == [1] * 6  # hold 0: without the rotated passes, frames 2-5 would lose the face
    assert proc.stats.recovered == 4 and proc.stats.held == 0 and len(log) == 4
    assert all(rot == (25.0, -25.0) for _, rot in log)
    assert "4 found again on rotated copies" in proc.stats.summary(32)
    # Off: the face is lost; a face never tracked is not searched for.
    stub.upright, log[:] = True, []
    off = FaceProcessor(SIZE, FaceConfig(hold_frames=0, rotated="off", face_checks=False), detector_factory=lambda: stub)
    off.prepare(frames[0])
    off.prepare(frames[1])
    stub.upright = False
    assert len(off.prepare(frames[2])[0]) == 0 and log == []
    fresh = FaceProcessor(SIZE, FaceConfig(hold_frames=0, face_checks=False), detector_factory=lambda: stub)
    assert len(fresh.prepare(frames[0])[0]) == 0 and log == []


def test_tracker_lost_names_confirmed_unmatched_tracks():
    tracker = FaceTracker(FaceConfig(face_checks=False))
    frame = np.full((240, 320, 3), 100, np.uint8)
    a, b = landmarked(40, 60, 50), landmarked(200, 70, 60)
    tracker.update(frame, [a])
    assert tracker.lost([]) == []  # seen once: not confirmed
    tracker.update(frame, [a, b])
    lost = tracker.lost([b])
    assert len(lost) == 1 and iou(lost[0], a.box) > 0.9
    assert tracker.lost([a, b]) == [] and len(tracker.update(frame, [a, b])) == 2  # lost() changed nothing


def test_rotated_config():
    with pytest.raises(ConfigError, match="rotated must be one of full, lost, off; got 'always'"):
        FaceConfig(rotated="always")
    with pytest.raises(ConfigError, match="rotations must be non-zero angles"):
        FaceConfig(rotations=())
    proc = FaceProcessor(SIZE, FaceConfig(rotated="full"))
    assert proc._detector().rotations == (25.0, -25.0)
    assert FaceProcessor(SIZE, FaceConfig(rotated="lost"))._detector().rotations == ()


# --- in the pipeline --------------------------------------------------------------------------


class FaceSource(Source):
    """Frames with 0, 1 or 2 green faces (by index), one broken frame."""

    def __init__(self, n, rng, broken=()):
        self.n, self.broken, self.problems, self.closed = n, set(broken), [], False
        self.frames = []
        for i in range(n):
            k = (0, 1, 2)[i % 3]
            spots = [(10 + i, 20, 40), (130, 50 - i // 2, 50)][:k]
            self.frames.append(scene(rng, spots))

    total = property(lambda self: self.n)

    def describe(self):
        return f"{self.n} scenes"

    def __iter__(self):
        for i, img in enumerate(self.frames):
            if i in self.broken:
                yield Frame(i, f"f{i}", None, error=f"f{i}: broken on purpose")
            else:
                yield Frame(i, f"f{i}", img)

    def close(self):
        self.closed = True


class InvertBackend(SyncBackend):
    name = "invert"

    def __init__(self):
        super().__init__(None, "mask")
        self._image_size = SIZE
        self.batch_sizes = []

    def _activate(self):
        pass

    def _deactivate(self):
        pass

    def _run(self, batch):
        self.batch_sizes.append(len(batch))
        return 255 - batch


class KeepSink(Sink):
    fatal_write_errors = False

    def __init__(self):
        self.images = {}

    def describe(self):
        return "kept in memory"

    def write(self, frame, image):
        self.images[frame.index] = image

    def finish(self, commit):
        return []


@pytest.mark.parametrize("workers", [0, 2])
def test_pipeline_translates_every_face_and_keeps_the_rest(rng, workers):
    src = FaceSource(13, rng, broken={4})
    threads: set = set()
    proc = processor(FaceConfig(track=False), threads)
    sink = KeepSink()
    with InvertBackend() as be:
        rep = run_pipeline(proc.detect_ahead(src, workers), proc, be, sink, PipelineConfig(batch_size=3))
    faces = sum((0, 1, 2)[i % 3] for i in range(13) if i != 4)
    assert rep.written == 12 and [k for k, _ in rep.failures] == ["f4"] and src.closed
    assert rep.crops == faces and proc.stats.translated == faces and proc.stats.found == faces
    assert max(be.batch_sizes) == 3 and len(be.batch_sizes) == -(-faces // 3)  # batches span frames
    for i, out in sink.images.items():
        img = src.frames[i]
        if i % 3 == 0:
            assert out.tobytes() == img.tobytes()  # no face: byte-identical
            continue
        crops, state = processor().prepare(img)
        keep = outside([p.box for p in state], img.shape)
        np.testing.assert_array_equal(out[keep], img[keep])
        assert (out[~keep] != img[~keep]).any()
    if workers:
        assert any(t.startswith("cyclemask-detect") for t in threads)
    assert not [t for t in threading.enumerate() if t.name.startswith("cyclemask-detect")]


def test_detection_ahead_gives_the_same_result_as_inline(rng):
    src = FaceSource(9, rng)
    results = []
    for workers in (0, 3):
        proc = processor(FaceConfig(track=True, face_checks=False))
        results.append([(len(c), [p.box for p in s])
                        for c, s in (proc.prepare(f.image, f.ahead) for f in proc.detect_ahead(src, workers))])
    assert results[0] == results[1]


def test_detection_ahead_passes_on_a_source_failure_after_the_good_frames(rng):
    class Failing(FaceSource):
        def __iter__(self):
            yield from list(super().__iter__())[:4]
            raise InputError("clip.mp4: frame 4 is damaged")

    proc = processor()
    wrapped = proc.detect_ahead(Failing(10, rng), 2)
    got = []
    with pytest.raises(InputError, match="frame 4 is damaged"):
        for frame in wrapped:
            got.append(len(proc.prepare(frame.image, frame.ahead)[0]))
    assert got == [0, 1, 2, 0]
    assert wrapped.total == 10 and wrapped.problems == []  # the source's attributes show through
    wrapped.close()
    with pytest.raises(ConfigError, match="detection workers must be an integer >= 0"):
        proc.detect_ahead(Failing(1, rng), -1)


def test_real_tiny_generator_translates_the_crops(rng, tiny_generator):
    img = scene(rng, [(20, 30, 40), (130, 40, 50)])
    proc = processor()
    crops, state = proc.prepare(img)
    with TorchBackend(generator=tiny_generator, image_size=SIZE, direction="mask") as be:
        outputs = list(be.infer(np.stack(crops)))
    np.testing.assert_array_equal(np.stack(outputs), eager_translate(tiny_generator, np.stack(crops)))
    out = proc.finish(img, state, outputs)
    keep = outside([p.box for p in state], img.shape)
    np.testing.assert_array_equal(out[keep], img[keep])
    for x, y, s in ((20, 30, 40), (130, 40, 50)):
        assert (out[y:y + s, x:x + s] != img[y:y + s, x:x + s]).mean() > 0.5


def test_photos_get_the_detectors_second_looks_and_video_frames_do_not(face_detector_path):
    """A padded copy and a smaller size, for a tight crop or a face filling a large photo: a
    video's faces are followed across frames instead, and the looks would cost every frame."""
    photos = FaceProcessor(64, FaceConfig(track=False, detect_retry=True), model_path=face_detector_path)._detector()
    video = FaceProcessor(64, FaceConfig(track=True, detect_retry=False), model_path=face_detector_path)._detector()
    assert photos.retry_pad > 0 and photos.coarse_side == 640
    assert video.retry_pad == 0 and video.coarse_side is None


class OneFace:
    """A stub detector: one fixed face, whatever the image."""

    def detect(self, image):
        return [face(40, 30, 60)]


def test_grey_photo_gets_grey_output_colour_photo_keeps_the_colours(rng):
    proc = FaceProcessor(SIZE, FaceConfig(track=False, paste="crop"), detector_factory=OneFace)
    grey = np.repeat(rng.integers(40, 200, (140, 160, 1), dtype=np.uint8), 3, axis=2)

    def blue(crops):
        return [np.broadcast_to(np.array((30, 60, 220), np.uint8), c.shape).copy() for c in crops]

    crops, state = proc.prepare(grey)
    out = proc.finish(grey, state, blue(crops))
    changed = np.any(out != grey, axis=2)
    assert changed.sum() > 500
    assert np.abs(out[..., 0].astype(int) - out[..., 2].astype(int)).max() == 0  # no blue in a grey photo
    colour = grey.copy()
    colour[..., 0] = np.clip(colour[..., 0].astype(int) + 30, 0, 255)
    crops, state = proc.prepare(colour)
    out = proc.finish(colour, state, blue(crops))
    x0, y0, x1, y1 = state[0].box
    c = out[(y0 + y1) // 2, (x0 + x1) // 2].astype(int)
    assert c[2] - c[0] > 150  # the blue stays blue in a colour photo
