"""The end-of-run summary is built from data: a --ray run hands its own lines and frame count
to summary_lines rather than editing the printed lines by prefix."""

from __future__ import annotations

from cyclemask.engine.pipeline import RunReport
from cyclemask.engine.ray_run import RayReport, WorkerBackend
from cyclemask.engine.summary import ray_lines, summary_lines

BE = WorkerBackend("stub backend", ["stub"], "--backend stub", 16, "mask")


def test_extra_lines_sit_before_the_backend_and_frames_set_the_throughput():
    rep = RunReport(total=2, inputs=2, written=2, elapsed_s=4.0, crops=2, batches=1)
    lines = summary_lines(rep, BE, BE.reason, 1.5, output="out", extra=["  ray:      extra"], frames=100)
    at = lines.index("  ray:      extra")
    assert lines[at + 1] == "  backend:  stub backend"
    assert lines[-1] == "  throughput: 25.0 frames/s (100 frames in 4.00 s, slowest worker start 1.50 s)"
    # Without them, the local summary is unchanged: files are the frames.
    local = summary_lines(rep, BE, BE.reason, 1.5, output="out")
    assert local == [line for line in lines if line != "  ray:      extra"][:-1] + [
        "  throughput: 0.5 frames/s (2 frames in 4.00 s, batch 2.0 on average; model load 1.50 s)"]


def test_ray_lines_come_from_the_report():
    report = RayReport(RunReport(), "videos", skipped=3, pids={"host:1", "host:2"}, calls=4, call_s=2.0,
                       frames_read=50, frames_written=48)
    lines = ray_lines(report)
    assert lines[0] == "  resumed:  3 output(s) already complete, skipped"
    assert lines[1] == "  frames:   50 read, 48 written"
    assert lines[2].startswith("  ray:      2 worker process(es) on 1 node(s), 4 call(s): 500 ms inside each")
