"""Face checks (engine/face_checks.py, engine/tracking.py): implausible landmarks are not faces,
a new track is translated only once confirmed, detect-ahead confirms it on its first frame;
the One-Euro smoothing holds a still face still and follows a moving one."""

from __future__ import annotations

import numpy as np
import pytest

from cyclemask.engine.contracts import Source
from cyclemask.engine.face_checks import BOUNDS, failed_rules, measures, worn
from cyclemask.engine.faces import FaceConfig, FaceProcessor, FaceTracker
from cyclemask.engine.sources import Frame
from cyclemask.face_detect import Face

from test_faces_engine import GREEN, SIZE, GreenSquares, landmarked, scene

FRONTAL = ((0.3, 0.4), (0.7, 0.4), (0.5, 0.58), (0.35, 0.78), (0.65, 0.78))


def with_landmarks(rel, box=(40.0, 30.0, 60.0, 60.0)) -> Face:
    x, y, w, h = box
    return Face(box, 0.9, tuple((x + u * w, y + v * h) for u, v in rel))


# What a false detection's landmarks look like: each breaks the rule named.
IMPLAUSIBLE = {
    "mouth_below": ((0.3, 0.8), (0.7, 0.8), (0.5, 0.6), (0.35, 0.4), (0.65, 0.4)),  # mouth above the eyes
    "mouth_order": ((0.3, 0.4), (0.7, 0.4), (0.5, 0.58), (0.65, 0.78), (0.35, 0.78)),  # corners crossed
    "nose_across": ((0.3, 0.4), (0.7, 0.4), (1.4, 0.58), (0.35, 0.78), (0.65, 0.78)),  # nose far off the face
    "eye_gap": ((0.49, 0.4), (0.51, 0.4), (0.5, 0.58), (0.35, 0.78), (0.65, 0.78)),  # eyes 1 px apart
    "outside": ((0.3, 1.5), (0.7, 1.5), (0.5, 1.68), (0.35, 1.88), (0.65, 1.88)),  # below the box
}


def test_a_frontal_face_passes_every_rule():
    assert failed_rules(with_landmarks(FRONTAL)) == []
    # A rolled head is judged in its own frame: the same face turned 40 degrees passes too.
    c, s = np.cos(np.radians(40)), np.sin(np.radians(40))
    rolled = tuple((0.5 + c * (u - 0.5) - s * (v - 0.5), 0.5 + s * (u - 0.5) + c * (v - 0.5)) for u, v in FRONTAL)
    assert failed_rules(with_landmarks(rolled)) == []


@pytest.mark.parametrize("rule", sorted(IMPLAUSIBLE))
def test_each_rule_catches_its_implausible_face(rule):
    assert rule in failed_rules(with_landmarks(IMPLAUSIBLE[rule]))


def test_bounds_hold_every_measure():
    assert set(measures(with_landmarks(FRONTAL))) == set(BOUNDS)


class PlacedLandmarks(GreenSquares):
    """Green squares as faces, with the landmarks given (relative to the box)."""

    def __init__(self, rel):
        super().__init__()
        self.rel = rel

    def detect(self, image):
        return [with_landmarks(self.rel, f.box) for f in super().detect(image)]


def _crops(config, rel, frames, workers=0):
    proc = FaceProcessor(SIZE, config, detector_factory=lambda: PlacedLandmarks(rel))
    source = ListSource(frames)
    return [len(proc.prepare(f.image, f.ahead)[0]) for f in proc.detect_ahead(source, workers)], proc


class ListSource(Source):
    def __init__(self, frames):
        self.frames = frames

    total = property(lambda self: len(self.frames))

    def describe(self):
        return "frames"

    def __iter__(self):
        for i, img in enumerate(self.frames):
            yield Frame(i, f"f{i}", img)


def test_a_detection_with_implausible_landmarks_is_not_translated(rng):
    img = scene(rng, [(40, 30, 60)])
    photo = FaceConfig(track=False)
    assert _crops(photo, FRONTAL, [img])[0] == [1]
    n, proc = _crops(photo, IMPLAUSIBLE["mouth_below"], [img])
    assert n == [0] and proc.stats.implausible == 1 and "1 with implausible landmarks left" in proc.stats.summary(32)
    # --no-face-checks: as before, every detection is translated.
    assert _crops(FaceConfig(track=False, face_checks=False), IMPLAUSIBLE["mouth_below"], [img])[0] == [1]


def _clip(rng, present, spot=(60, 30, 50)):
    """One still background, a green face in the frames listed."""
    bg = scene(rng, [])
    frames = []
    for i in range(len(present)):
        img = bg.copy()
        if present[i]:
            x, y, s = spot
            img[y:y + s, x:x + s] = GREEN
        frames.append(img)
    return frames


@pytest.mark.parametrize("workers", [0, 2])
def test_a_one_frame_detection_in_a_video_is_not_translated(rng, workers):
    frames = _clip(rng, [0, 0, 0, 1, 0, 0, 0, 0])
    n, proc = _crops(FaceConfig(), FRONTAL, frames, workers)
    assert n == [0] * 8 and proc.stats.unconfirmed == 1
    assert _crops(FaceConfig(face_checks=False), FRONTAL, frames, workers)[0] == [0, 0, 0, 1, 0, 0, 0, 0]


def test_a_face_appearing_mid_clip_is_translated_from_its_first_frame_with_detect_ahead(rng):
    present = [0, 0, 0, 1, 1, 1, 1, 1, 1]
    n, _ = _crops(FaceConfig(), FRONTAL, _clip(rng, present), workers=2)
    assert n == present
    # A face missed by the detector in its second frame is confirmed by its third.
    gap = [0, 0, 1, 0, 1, 1, 1, 1]
    n, _ = _crops(FaceConfig(), FRONTAL, _clip(rng, gap), workers=2)
    assert n == [0, 0, 1, 1, 1, 1, 1, 1]  # the missed frame is held, as for any confirmed face


def test_a_smaller_face_on_a_larger_ones_chest_is_worn_and_others_are_not():
    wearer = with_landmarks(FRONTAL, (100.0, 40.0, 60.0, 60.0))
    # A print: 0.7 of the face's size, centred two face heights below it.
    assert worn([wearer, with_landmarks(FRONTAL, (109.0, 139.0, 42.0, 42.0))]) == [False, True]
    # Not worn: beside the face (two people), off the chest, as large (a child in front), above it.
    for box in ((170.0, 45.0, 42.0, 42.0), (160.0, 139.0, 42.0, 42.0), (100.0, 130.0, 56.0, 56.0),
                (109.0, -70.0, 42.0, 42.0)):
        assert worn([wearer, with_landmarks(FRONTAL, box)]) == [False, False], box
    # The chest is found along the wearer's own axes: a head rolled 90 degrees (eye line vertical,
    # the face looking along +x) wears its print to its right, not below.
    c = 130.0, 70.0
    rolled = Face((100.0, 40.0, 60.0, 60.0), 0.9,
                  tuple((c[0] + 60 * (v - 0.5), c[1] - 60 * (u - 0.5)) for u, v in FRONTAL))
    right = with_landmarks(FRONTAL, (130.0 + 120.0 - 21.0, 70.0 - 21.0, 42.0, 42.0))
    below = with_landmarks(FRONTAL, (109.0, 139.0, 42.0, 42.0))
    assert worn([rolled, right, below]) == [False, True, False]


def test_a_print_on_the_shirt_is_never_translated_in_a_video(rng):
    # The wearer's face (60 px) and a print (40 px) two face heights below it, in every frame.
    frames = [scene(rng, [(70, 10, 60), (80, 130, 40)], size=(200, 200)) for _ in range(5)]
    n, proc = _crops(FaceConfig(), FRONTAL, frames, workers=2)
    assert n == [1] * 5 and proc.stats.worn == 5
    assert "5 on another face's clothing" in proc.stats.summary(32)
    assert _crops(FaceConfig(face_checks=False), FRONTAL, frames, workers=2)[0] == [2] * 5
    # Photos are not judged by it (a collage stacks faces the same way): both are translated.
    assert _crops(FaceConfig(track=False), FRONTAL, frames[:1])[0] == [2]


def test_without_detect_ahead_a_new_face_waits_one_frame(rng):
    # The stated delay: the frame of the second detection (1 frame when seen in consecutive ones).
    n, _ = _crops(FaceConfig(), FRONTAL, _clip(rng, [0, 0, 1, 1, 1, 1]), workers=0)
    assert n == [0, 0, 0, 1, 1, 1]


# --- smoothing -------------------------------------------------------------------------------


def _follow(centres, jitter, seed=0, side=80.0):
    """Tracked and raw landmarks of a face at the given centres, with detector jitter (px)."""
    rng = np.random.default_rng(seed)
    tracker = FaceTracker(FaceConfig(face_checks=False))
    frame = np.full((480, 640, 3), 100, np.uint8)
    raw, smooth = [], []
    for cx, cy in centres:
        x, y = cx - side / 2 + rng.normal(0, jitter), cy - side / 2 + rng.normal(0, jitter)
        f = landmarked(x, y, side + rng.normal(0, jitter))
        lm = np.asarray(f.landmarks)
        (_, _, got), = tracker.update(frame, [f])
        raw.append(lm)
        smooth.append(got)
    return np.array(raw), np.array(smooth)


def test_a_still_face_is_smoothed_well_below_the_raw_jitter():
    raw, smooth = _follow([(320, 240)] * 60, jitter=1.5)
    raw_std = raw[10:].std(axis=0).mean()
    smooth_std = smooth[10:].std(axis=0).mean()
    assert smooth_std < 0.35 * raw_std
    assert np.abs(smooth[10:].mean(axis=0) - raw[10:].mean(axis=0)).max() < 1.0  # on the face, not beside it


def test_a_moving_face_is_followed_with_a_bounded_lag():
    # 4 px a frame (a head turning at a walk's pace at 640 x 480), after a still start.
    centres = [(200, 240)] * 15 + [(200 + 4 * i, 240) for i in range(1, 41)]
    raw, smooth = _follow(centres, jitter=1.0)
    lag = np.abs(smooth[25:, :, 0].mean(axis=1) - raw[25:, :, 0].mean(axis=1))
    assert lag.mean() < 4.0  # within one frame's movement
    assert lag.max() < 8.0


def test_no_face_checks_reaches_the_face_config():
    from cyclemask.engine.run import RunOptions

    assert RunOptions().face_config(video=True).face_checks is True
    assert RunOptions.from_cli({"no_face_checks": True}).face_config(video=True).face_checks is False


def test_frames_ahead_are_waited_for_only_to_confirm_a_new_face(rng):
    # Waiting on every following frame's detection in every frame would stall detect-ahead's
    # pool behind `prepare`; only a face not yet confirmed needs them.
    import concurrent.futures

    from cyclemask.engine.detect_ahead import Ahead

    class Watched:
        calls = 0

        def result(self):
            Watched.calls += 1
            return []

    detector = PlacedLandmarks(FRONTAL)
    proc = FaceProcessor(SIZE, FaceConfig(), detector_factory=lambda: detector)
    counts = []
    for img in _clip(rng, [1, 1, 1, 1]):
        own = concurrent.futures.Future()
        own.set_result(detector.detect(img))
        proc.prepare(img, Ahead(own, [Watched(), Watched()]))
        counts.append(Watched.calls)
    assert counts == [2, 2, 2, 2]  # frame 0: both looked at (neither confirms); then none


def test_no_upright_reaches_the_face_config():
    from cyclemask.engine.run import RunOptions

    assert RunOptions.from_cli({}).face_config(video=True).upright is True
    assert RunOptions.from_cli({"no_upright": True}).face_config(video=True).upright is False


def test_the_summary_counts_the_faces_looked_at_again_upright():
    from cyclemask.engine.faces import FaceStats
    from cyclemask.engine.template_mask import TemplateStats

    for stats in (FaceStats(found=5, translated=5, upright=3), TemplateStats(found=5, translated=5, upright=3)):
        assert "3 rolled, looked at again upright" in stats.summary(32)
        stats.upright = 0
        assert "upright" not in stats.summary(32)
