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

    from cyclemask.imageio import read_image, write_image

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
