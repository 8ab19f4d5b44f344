"""benchmarks/eye_cover.py: it skips with a reason without dlib, and on a portrait rolled by
20 degrees (a photo folder of one) dlib finds the eye YuNet's first look leaves under the matte,
and none after the upright look."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is not installed
    sys.path.insert(0, str(REPO))

from benchmarks import eye_cover as ec  # noqa: E402


def test_skips_with_a_reason_without_dlib(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dlib" else real(name, *a))
    assert ec.main(["/nonexistent.mp4"]) == 0
    assert "skipped: dlib is not installed" in capsys.readouterr().out


def test_the_rolled_portrait_before_and_after(tmp_path):
    if ec.skip_reason():
        pytest.skip(ec.skip_reason())
    import cv2
    import matplotlib

    from cyclemask.image_files import read_image, write_image

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        pytest.skip(f"matplotlib's sample portrait {p} is absent in this installation")
    canvas = np.full((480, 480, 3), 128, np.uint8)
    canvas[90:390, 112:368] = cv2.resize(read_image(p), (256, 300), interpolation=cv2.INTER_AREA)
    m = cv2.getRotationMatrix2D((240, 240), -20.0, 1.0)
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "rolled.png", cv2.warpAffine(canvas, m, (480, 480), borderMode=cv2.BORDER_REPLICATE))
    out = tmp_path / "eye_cover.json"
    assert ec.main([str(folder), "--json", str(out)]) == 0
    import json

    r = json.loads(out.read_text())["photos"]
    assert (r["before"]["faces"], r["after"]["faces"]) == (1, 1)
    assert r["before"]["eyes_covered"] == 1 and r["before"]["upright_looks"] == 0
    assert r["after"]["eyes_covered"] == 0 and r["after"]["upright_looks"] == 1
    assert r["after"]["mouth_corners_covered_pct"] == 100.0


def test_the_made_up_webcam_clip_knows_its_points_and_the_look_clears_the_eyes():
    """The far webcam clip's first roll (to 32 degrees, frames 0-16): YuNet's first look leaves
    an eye under the matte, the upright looks none; the true points turn with the frame."""
    if ec.skip_reason():
        pytest.skip(ec.skip_reason())
    import dlib

    from cyclemask.engine.faces import FaceConfig

    predictor = dlib.shape_predictor(str(ec.predictor_path()))
    clips = ec.webcam_clips(predictor)
    if not clips:
        pytest.skip("matplotlib's sample portrait is absent in this installation")
    frames, truth = clips["webcam far, rolling"]
    assert len(frames) == len(truth) == 75
    # At frame 12 the head is rolled by ~32 degrees clockwise: the image-right eye is lower.
    def eye_angle(pts):
        (rx, ry), (lx, ly) = pts[:2]
        return np.degrees(np.arctan2(ly - ry, lx - rx))

    roll = eye_angle(truth[12]) - eye_angle(truth[0])  # the portrait's own eyes are not quite level
    assert roll == pytest.approx(32.0 * np.sin(2 * np.pi * 12 / 50), abs=0.5)
    before = ec.measure(frames[:17], FaceConfig(upright=False), predictor, truth=truth)
    after = ec.measure(frames[:17], FaceConfig(upright=True), predictor, truth=truth)
    assert before["faces"] == after["faces"] >= 15
    assert before["eyes_covered"] >= 3 and after["eyes_covered"] == 0, (before, after)
    assert after["mouth_corners_covered_pct"] >= 95.0


@pytest.mark.shared
def test_no_eye_under_the_matte_on_the_rolled_heads_of_the_shared_clip(shared_data):
    """head-pose female-and-male: both heads rolled by 10-35 degrees throughout; YuNet's first
    look leaves 16 of its 110 faces with an eye under the matte (dlib's eyes)."""
    if ec.skip_reason():
        pytest.skip(ec.skip_reason())
    import dlib

    from cyclemask.engine.faces import FaceConfig

    predictor = dlib.shape_predictor(str(ec.predictor_path()))
    frames = ec.read_frames(shared_data / "video" / "head-pose-face-detection-female-and-male.mp4")
    r = ec.measure(frames, FaceConfig(), predictor)
    assert r["faces"] >= 100 and r["eyes_covered"] == 0, r
    assert r["mouth_corners_covered_pct"] >= 95.0
