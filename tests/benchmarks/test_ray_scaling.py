"""benchmarks/ray_scaling.py: its reading of cyclemask-run's summary, and the estimate's arithmetic.
(A real run starts two local Rays: run the script itself, see its docstring.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is not installed
    sys.path.insert(0, str(REPO))

from benchmarks import ray_scaling as rs  # noqa: E402
from cyclemask.engine.pipeline import RunReport  # noqa: E402
from cyclemask.engine.ray_run import RayReport, summary_extra  # noqa: E402


def test_reads_the_summary_the_cli_prints():
    rep = RayReport(RunReport(total=8, inputs=8, written=8, elapsed_s=4.0), "images", start_s=6.5,
                    pids={"vm:1", "vm:2"}, calls=4, call_s=0.4, started_at=100.0)
    # Two calls on each worker, 0.02 s apart; 8 files from 101.0 to 101.5.
    rep.spans = [("vm:1", 101.0, 101.1, 2), ("vm:1", 101.12, 101.22, 2),
                 ("vm:2", 101.3, 101.4, 2), ("vm:2", 101.42, 101.5, 2)]
    text = "\n".join(["ray:     a local Ray (2 CPUs, 0 GPUs); 2 workers x (1 CPU), 2 files per call",
                      "  throughput: 2.0 frames/s (8 frames in 4.00 s, batch 2.0 on average; model load 0.1 s)",
                      *summary_extra(rep)])
    row = rs.parse(text)
    assert row["fps"] == 2.0 and row["frames"] == 8 and row["files_per_call"] == 2
    assert row["calls"] == 4 and row["call_ms"] == 100 and row["gap_ms"] == 20
    assert row["ray_start_s"] == 6.5 and row["first_call_s"] == 1.0 and row["steady_fps"] == 16.0


def test_estimate_arithmetic():
    rows = rs.estimate(per_gpu_fps=100.0, files_per_call=10, gap_s=0.1, start_s=36.0, gpus=(1, 4), images=720)
    # A call takes 0.1 s, the gap another 0.1 s: half the time works.
    assert rows[0] == {"gpus": 1, "fps": 50.0, "efficiency": 0.5, "hours_for_images": pytest.approx((36 + 14.4) / 3600, abs=1e-3)}
    assert rows[1]["fps"] == 200.0
