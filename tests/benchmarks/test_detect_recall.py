"""benchmarks/detect_recall.py: its settings are derived from one detection per pass exactly as
the detector would find them, its matching counts right, and it runs end to end on the shared
data (the figures themselves are the benchmark's to report, not the tests')."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is not installed
    sys.path.insert(0, str(REPO))

from benchmarks import detect_recall as dr  # noqa: E402
from cyclemask.face_detect import Face, FaceDetector  # noqa: E402


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """The portrait upright, tilted both ways, small in a large frame, and a blank frame."""
    import matplotlib

    from cyclemask.image_files import read_image

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        pytest.skip(f"matplotlib's sample portrait {p} is absent in this installation")
    img = read_image(p)
    h, w = img.shape[:2]
    out = [img, np.full((200, 300, 3), 90, np.uint8)]
    for deg in (35, -50):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
        out.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
    small = np.full((400, 500, 3), 128, np.uint8)
    small[150:270, 200:302] = cv2.resize(img, (102, 120), interpolation=cv2.INTER_AREA)
    return out + [small, img[120:330, 180:360].copy()]  # the last: a tight crop (the retry's case)


def _key(faces):
    return [tuple(round(v, 3) for v in f.box) + (round(f.score, 4),) for f in faces]


@pytest.mark.parametrize("setting", [s for s in dr.SETTINGS if s.score in (0.6, 0.4)], ids=lambda s: s.name)
def test_derived_settings_equal_the_detector(images, setting):
    raw = dr._detector()
    for retry in (True, False):
        real = FaceDetector(score_threshold=setting.score, rotations=setting.rotations,
                            retry_pad=0.5 if retry else 0.0)
        for img in images:
            derived = dr.faces_for(dr.raw_passes(raw, img), setting, raw, retry=retry)
            assert _key(derived) == _key(real.detect(img)), (setting, retry, img.shape)


def test_match_is_one_to_one():
    t = [Face((0.0, 0.0, 10.0, 10.0), 1.0, ()), Face((100.0, 0.0, 10.0, 10.0), 1.0, ())]
    found = [Face((1.0, 0.0, 10.0, 10.0), 0.9, ()), Face((0.0, 1.0, 10.0, 10.0), 0.8, ()),
             Face((300.0, 0.0, 10.0, 10.0), 0.7, ())]
    assert dr.match(t, found, 0.4) == (1, 2)  # two boxes on one face: one found, one extra
    assert dr.match(t, [], 0.4) == (0, 0) and dr.match([], found, 0.4) == (0, 3)


@pytest.mark.slow  # the benchmark end to end on the shared data (~5 s); the matching and settings tests stay fast
@pytest.mark.shared
def test_runs_on_pairs_and_one_masked_clip(shared_data, tmp_path, capsys):
    pairs = dr.measure_pairs(limit=12)
    assert pairs["pairs"] >= 8
    today = pairs["rows"][dr.SETTINGS[0].name]
    assert today["truth"] >= pairs["pairs"] and 0 < today["found"] <= today["truth"]
    assert today["extra_bare"] == 0  # the truth is today's setting on the bare twins
    clip = shared_data / "video" / "head-pose-face-detection-female.mp4"
    clips = dr.measure_clips(clips=[clip], runtime=dr.RUNTIME[:2], workdir=tmp_path)
    assert clips["frames"] == 23 and set(clips["runtime"]) == {n for n, _ in dr.RUNTIME[:2]}
    for rows in (clips["rows"], clips["runtime"]):
        for r in rows.values():
            assert r["truth"] >= 23 and 0 <= r["found"] <= r["truth"]
    dr.print_tables({"pairs": pairs, "clips": clips}, 0.4)
    text = capsys.readouterr().out
    assert "recall masked" in text and "today: score 0.6" in text and "the runtime" in text
