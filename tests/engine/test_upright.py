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

    from cyclemask.faces import FaceDetector
    from cyclemask.imageio import read_image

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
