"""benchmarks/mask_method_quality.py: the identity figure of its table (the rest is cyclemask-eval's)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dlib")


class FakeJudge:
    """Descriptors are the image's mean colour; HOG 'finds' a face only on odd-valued images."""

    def locate(self, image):
        return "rect" if int(image[0, 0, 0]) % 2 else None

    def describe(self, image, rect):
        return image.reshape(-1, 3).mean(axis=0) / 100.0


class FakeDetector:
    def __init__(self):
        self.calls = 0

    def detect(self, image):
        from cyclemask.face_detect import Face

        self.calls += 1
        return [Face((2.0, 2.0, 10.0, 10.0), 0.9, ((0.0, 0.0),) * 5)]


def test_identity_counts_owner_matches_and_impostors():
    from benchmarks.mask_method_quality import _identity

    inputs = [np.full((16, 16, 3), v, np.uint8) for v in (11, 101, 201)]  # descriptors 1.0 apart: no impostors
    outputs = [inputs[0] + 30, inputs[1] + 50, inputs[2]]  # distances 0.52, 0.87, 0
    det = FakeDetector()
    r = _identity(FakeJudge(), det, inputs, outputs)
    assert r["n"] == 3 and r["judge_found_no_face"] == 0
    assert r["match_rate"] == pytest.approx(2 / 3)
    assert r["mean_distance"] == pytest.approx((0.3 + 0.5) * 3 ** 0.5 / 3, rel=1e-6)
    assert r["impostor_match_rate"] == 0.0
    assert det.calls == 0  # odd-valued: dlib's detector found each face itself
    same = [inputs[0]] * 3
    r = _identity(FakeJudge(), det, same, same)
    assert r["match_rate"] == 1.0 and r["impostor_match_rate"] == 1.0  # three copies of one face
    even = [np.full((16, 16, 3), 10, np.uint8)] * 2
    r = _identity(FakeJudge(), det, even, even)
    assert det.calls == 2 and r["n"] == 2  # YuNet's box stands in where HOG finds none
