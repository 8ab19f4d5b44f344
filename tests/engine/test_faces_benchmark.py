"""benchmarks/faces.py: `run()` gives the rows the throughput benchmark imports (timings are
not asserted: speed is measured by the benchmark, not by tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "faces.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_faces", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.shared
def test_run_returns_one_row_per_setting(bench, shared_data, face_detector_path):
    clip = shared_data / "video" / "head-pose-face-detection-female.mp4"
    rows = bench.run([clip], detector=face_detector_path, batch=4, workers=(0, 1), threads=1)
    assert [(r["clip"], r["detect_workers"]) for r in rows] == [(clip.name, 0), (clip.name, 1)]
    for r in rows:
        # Without detect-ahead a new face is translated from its second detection (face checks).
        translated = 22 if r["detect_workers"] == 0 else 23
        assert r["ok"] and r["frames"] == 23 and r["faces_translated"] == translated and r["faces_found"] == 23
        assert r["frames_per_s"] > 0 and r["faces_per_s"] > 0 and r["detect_ms_per_frame"] > 0
        assert r["backend_ms_per_face"] > 0 and r["paste_ms_per_face"] > 0
        assert r["bottleneck"] in r["stage_busy"] and "seeded generator" in r["model"]
    assert rows[0]["detect_wait_ms_per_frame"] == 0.0  # inline detection never waits on a worker
    table = bench.format_table(rows)
    assert "female" in table and "bottleneck" in table
