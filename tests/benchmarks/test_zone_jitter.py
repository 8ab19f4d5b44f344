"""benchmarks/zone_jitter.py: its still segments and jitter figures are right on rows with a
known answer (the figures on real clips are the benchmark's to report, not the tests')."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is not installed
    sys.path.insert(0, str(REPO))

from benchmarks import zone_jitter as zj  # noqa: E402


def _rows(centres, h=30.0, angle=0.0, shape=(20, 20)):
    zone = np.zeros(shape, bool)
    zone[5:15, 5:15] = True
    return [{"centre": np.asarray(c, float), "h": h, "angle": angle, "zone": zone,
             "out": np.zeros((*shape, 3), np.uint8)} for c in centres]


def test_still_segments_are_the_still_runs_only():
    still = [(100.0, 100.0)] * 12
    moving = [(100.0 + 6 * i, 100.0) for i in range(1, 13)]  # 6 px a frame: 20 % of h
    segs = zj.still_segments(_rows(still + moving + still), window=8)
    assert [(s.start, s.stop) for s in segs] == [(0, 12), (24, 36)]
    assert zj.still_segments(_rows(moving), window=8) == []


def test_jitter_is_the_std_of_the_centre_scaled_to_640_wide():
    rng = np.random.default_rng(0)
    jitter = rng.normal(0, 1.0, (200, 2))
    rows = _rows([(100 + x, 100 + y) for x, y in jitter])
    frames = [np.full((20, 20, 3), i % 2 * 10, np.uint8) for i in range(200)]
    r = zj.measure(rows, frames, [range(200)], scale=2.0, zones_from=rows)
    assert abs(r["centre_px"] - 2.0 * np.sqrt(2.0)) < 0.3  # two axes of std 1, doubled
    assert r["scale_pct"] == 0.0 and r["angle_deg"] == 0.0
    assert r["flicker"] == 0.0  # the output never changed while the input did
