"""A rolled head keeps its eyes out of the mask zone: the upright look (cyclemask/upright.py)
in the face stage, on a real portrait turned by known angles, so the true eye positions are the
upright portrait's turned by the same matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cyclemask.engine.faces import FaceConfig, FaceProcessor
from cyclemask.upright import estimated_roll, needs_upright, wants_look

SIDE = 480


@pytest.fixture(scope="module")
def portrait() -> tuple[np.ndarray, np.ndarray]:
    """Grace Hopper's portrait (matplotlib's sample data) on a grey canvas, and its YuNet
    landmarks upright, where YuNet's eye points are right."""
    import cv2
    import matplotlib

    from cyclemask.face_detect import FaceDetector
    from cyclemask.image_files import read_image

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        pytest.skip(f"matplotlib's sample portrait {p} is absent in this installation")
    canvas = np.full((SIDE, SIDE, 3), 128, np.uint8)
    canvas[90:390, 112:368] = cv2.resize(read_image(p), (256, 300), interpolation=cv2.INTER_AREA)
    return canvas, np.asarray(FaceDetector().detect(canvas)[0].landmarks, np.float64)


def rolled(portrait, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The portrait turned by degrees (counter-clockwise as seen) and its true landmarks."""
    import cv2

    canvas, lms = portrait
    m = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), degrees, 1.0)
    image = cv2.warpAffine(canvas, m, (SIDE, SIDE), borderMode=cv2.BORDER_REPLICATE)
    return image, np.array([m @ (x, y, 1.0) for x, y in lms])


def eye_weights(image: np.ndarray, true: np.ndarray, **config) -> tuple[list[float], int]:
    """The zone matte at the two true eye centres, and the upright looks taken."""
    proc = FaceProcessor(64, FaceConfig(track=False, **config))
    _, state = proc.prepare(image)
    assert len(state) == 1
    paste = state[0]
    weight = proc.paste_weight(paste)
    x0, y0 = paste.box[:2]
    return [float(weight[round(y) - y0, round(x) - x0]) for x, y in true[:2]], proc.stats.upright


@pytest.mark.parametrize("degrees", [20.0, -20.0, 25.0, -25.0])
def test_a_rolled_face_keeps_both_eyes_out_of_the_zone(portrait, degrees):
    image, true = rolled(portrait, degrees)
    weights, looks = eye_weights(image, true)
    # YuNet's first look alone leaves 0.25-1.0 of the matte on the lower eye at these angles.
    assert max(weights) <= 0.1, weights
    assert looks == 1


def test_an_upright_face_is_not_looked_at_again(portrait):
    canvas, lms = portrait
    weights, looks = eye_weights(canvas, lms)
    assert looks == 0 and max(weights) <= 0.1


def _turned(lms: np.ndarray, degrees: float) -> np.ndarray:
    t = np.radians(degrees)  # image y down: a positive angle leans the head clockwise
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = lms.mean(axis=0)
    return (lms - c) @ r.T + c


FRONTAL = np.array([[40.0, 50.0], [80.0, 50.0], [60.0, 70.0], [45.0, 90.0], [75.0, 90.0]])


@pytest.mark.parametrize("degrees", [-30.0, -15.0, 15.0, 30.0])
def test_roll_has_the_head_s_sign_and_size(degrees):
    lms = _turned(FRONTAL, degrees)
    assert estimated_roll(lms) == pytest.approx(degrees, abs=0.5)
    assert needs_upright(lms) and wants_look(lms)


def test_level_eyes_over_a_rolled_mouth_are_flagged():
    """YuNet's failure: eyes level while the mouth and the face's axis turn with the head."""
    lms = _turned(FRONTAL, 20.0)
    lms[:2] = FRONTAL[:2] + (lms[:2].mean(axis=0) - FRONTAL[:2].mean(axis=0))
    assert needs_upright(lms)
    assert estimated_roll(lms) > 8.0


def test_a_frontal_face_is_not_flagged():
    assert not needs_upright(FRONTAL) and not wants_look(FRONTAL)


def test_lower_eyes_keeps_the_line_s_angle_and_only_moves_it_down():
    from cyclemask.upright import lower_eyes, roll_cues

    turned = _turned(FRONTAL, 10.0)  # the turned look: under-reads a roll of 30
    enlarged = _turned(FRONTAL, 30.0)
    merged = lower_eyes(turned, enlarged)
    assert roll_cues(merged)[0] == pytest.approx(roll_cues(turned)[0], abs=1e-6)
    assert np.array_equal(merged[2:], turned[2:])
    across = (merged[1] - merged[0]) / np.hypot(*(merged[1] - merged[0]))
    down = np.array([-across[1], across[0]])
    # Neither of the enlarged look's eyes lies below the merged eye line; one lies on it.
    below = [float(np.dot(enlarged[i] - merged[0], down)) for i in (0, 1)]
    assert max(below) == pytest.approx(0.0, abs=1e-6)
    # An enlarged look with eyes above the line leaves it where it is.
    assert np.array_equal(lower_eyes(turned, turned - (0.0, 5.0)), turned)


class _Looks:
    """Stands in for the upright look: the landmarks it 'finds' are FRONTAL turned by 20."""

    def __init__(self):
        self.calls = 0

    def __call__(self, detector, image, face, **kw):
        from cyclemask.face_detect import Face

        self.calls += 1
        return Face(face.box, face.score, tuple(map(tuple, _turned(FRONTAL, 20.0))))


def _follow_all(state, rolls):
    from cyclemask.face_detect import Face

    out = []
    for r in rolls:
        face = Face((30.0, 30.0, 60.0, 80.0), 0.9, tuple(map(tuple, _turned(FRONTAL, r))))
        f, looked = state.follow(object(), None, face)
        out.append((np.asarray(f.landmarks), looked))
    return out


def test_a_track_s_upright_look_has_hysteresis_and_blends_in(monkeypatch):
    import cyclemask.upright as up

    looks = _Looks()
    monkeypatch.setattr(up, "upright_face", looks)
    state = up.RollState()
    # One frame's spike (YuNet's mouth line tilts on a nod) starts nothing.
    out = _follow_all(state, [0.0, 0.0, 7.0, 0.0, 0.0])
    assert not any(looked for _, looked in out) and looks.calls == 0
    # A roll held frame after frame does, and the landmarks move over RAMP frames.
    out = _follow_all(state, [4.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    target = _turned(FRONTAL, 20.0)
    on = [i for i, (_, looked) in enumerate(out) if looked]
    assert on and on == list(range(on[0], 6))
    steps = [np.abs(lm - target).max() for lm, _ in out[on[0]:]]
    assert steps[0] > steps[1] > 0 and steps[-1] == pytest.approx(0.0, abs=1e-9)
    # A dip below ROLL_ON but above ROLL_OFF keeps the look; a roll that is clearly gone ends it.
    out = _follow_all(state, [3.0, 3.0])
    assert all(looked and np.allclose(lm, target) for lm, looked in out)
    # A head rolling from one shoulder to the other passes upright for a frame or two: the look
    # stays on, at full weight, through the crossing.
    out = _follow_all(state, [0.0, 0.0, -4.0, -8.0, -8.0])
    assert all(looked and np.allclose(lm, target) for lm, looked in out)
    out = _follow_all(state, [0.0] * (up.OFF_FRAMES + up.RAMP + 3))
    assert not out[-1][1] and np.allclose(out[-1][0], _turned(FRONTAL, 0.0))


def test_a_new_track_starts_at_its_first_frame_s_choice(monkeypatch):
    import cyclemask.upright as up

    monkeypatch.setattr(up, "upright_face", _Looks())
    (lm, looked), = _follow_all(up.RollState(), [15.0])
    assert looked and np.allclose(lm, _turned(FRONTAL, 20.0))  # no blend from nothing


def test_the_tracker_smooths_the_relooked_face_into_its_own_track():
    from cyclemask.engine.faces import FaceConfig
    from cyclemask.engine.tracking import FaceTracker
    from cyclemask.face_detect import Face

    seen = []

    def relook(face, track):
        seen.append(track.ident)
        track.roll = (track.roll or 0) + 1
        return Face(face.box, face.score, tuple(map(tuple, FRONTAL + 100.0)))

    tracker = FaceTracker(FaceConfig(face_checks=False))
    image = np.zeros((200, 200, 3), np.uint8)
    face = Face((30.0, 30.0, 60.0, 80.0), 0.9, tuple(map(tuple, FRONTAL)))
    for _ in range(3):
        (_, _, lm), = tracker.update(image, [face], relook=relook)
    assert seen == [0, 0, 0] and tracker._tracks[0].roll == 3
    assert np.allclose(lm, FRONTAL + 100.0)
