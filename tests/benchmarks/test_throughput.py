"""benchmarks/throughput.py: the timing loop, the derived figures, the table and the CLI's
errors. (The full run is exercised by the device check's dry run, tests/scripts.)"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is not installed
    sys.path.insert(0, str(REPO))

from benchmarks import throughput as tp  # noqa: E402


class FakeBackend:
    """Records calls; `max_in_flight` > 1 exercises the submit window."""

    image_size = 8
    max_batch = None

    def __init__(self, in_flight: int = 1) -> None:
        self.max_in_flight = in_flight
        self.calls = 0
        self.open = 0
        self.most_open = 0

    def infer(self, x):
        self.calls += 1
        return x

    def submit(self, x):
        self.calls += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        backend = self

        class Handle:
            def result(self):
                backend.open -= 1
                return x

        return Handle()


def test_percentile_matches_numpy_and_refuses_nothing():
    vals = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert tp.percentile(vals, 50) == 3.0
    assert tp.percentile(vals, 99) == pytest.approx(np.percentile(vals, 99))
    with pytest.raises(ValueError, match="no values"):
        tp.percentile([], 50)


def test_time_raw_warms_up_repeats_and_times_each_call():
    be = FakeBackend()
    ips, lat = tp.time_raw(be, 2, warmup=3, repeats=4, min_seconds=0.0, warmup_seconds=0.0)
    assert be.calls == 3 + 4 and len(lat) == 4 and ips > 0


class WarmingBackend(FakeBackend):
    """Its first `slow` calls take `slow_s`, the rest `fast_s`: oneDNN's BF16 kernels on this
    machine took ~0.9 s for each of their first few calls and 12 ms after."""

    def __init__(self, slow: int, slow_s: float, fast_s: float) -> None:
        super().__init__()
        self.slow, self.slow_s, self.fast_s = slow, slow_s, fast_s
        self.description = "warming"

    def infer(self, x):
        import time

        self.calls += 1
        time.sleep(self.slow_s if self.calls <= self.slow else self.fast_s)
        return x


def test_time_raw_times_the_backend_after_its_slow_first_calls():
    # The old loop warmed up with one call and timed repeats of "at least min_seconds": each
    # repeat was then one of the slow calls, and the median said ~7 images/s for a backend
    # running ~300 (the BF16 rows' pipeline/raw of 78).
    be = WarmingBackend(slow=4, slow_s=0.15, fast_s=0.003)
    ips, _ = tp.time_raw(be, 1, warmup=1, repeats=3, min_seconds=0.05)
    assert ips > 100, ips


def test_pipeline_faster_than_raw_is_timed_again(tmp_path, monkeypatch):
    # A warm-up too short for the backend (here: none) leaves the raw figure low; the pipeline,
    # timed after, then beats it, which cannot be true. The row must not show that.
    be = WarmingBackend(slow=3, slow_s=0.15, fast_s=0.003)
    monkeypatch.setattr(tp, "time_pipeline", lambda backend, kind, n, batch, pinputs, scratch: 150.0)
    s = tp.Settings("cpu", ("tiny",), (1,), None, 3, 0.05, 0, True, 0.2, 8, False, None)
    row = tp.Row("tiny", "warming", "warming", "fp32", 1, 0.0, 0.0, 0.0, 0, 1)
    ips, _ = tp.time_raw(be, 1, warmup=0, repeats=3, min_seconds=0.05, warmup_seconds=0.0)
    row.images_per_s = round(ips, 3)
    assert row.images_per_s < 10  # the planted mistake: timed during the slow calls
    tp._pipeline_rows(row, be, s, None, tmp_path)
    assert row.video_images_per_s == 150.0 and row.folder_images_per_s == 150.0
    assert row.images_per_s > 150.0 and row.ratio("video") < 1.0, row
    assert any("timed again" in n for n in row.notes), row.notes


def test_time_raw_keeps_the_backend_window_in_flight():
    be = FakeBackend(in_flight=3)
    ips, lat = tp.time_raw(be, 1, warmup=0, repeats=2, min_seconds=0.01)
    assert be.most_open == 3 and be.open == 0  # every submitted batch was collected
    assert len(lat) == 5 and ips > 0  # latency measured alone afterwards


def test_pipeline_frames_cover_the_target_time_within_limits():
    s = tp.Settings("cpu", ("tiny",), (4,), None, 1, 0.1, 0, True, 2.0, 100, False, None)
    assert tp._pipeline_frames(10.0, 4, s) == 20
    assert tp._pipeline_frames(0.5, 4, s) == 8  # at least two batches
    assert tp._pipeline_frames(1e6, 4, s) == 100  # at most --max-frames


def test_choose_variants_by_device_pattern_and_slowness():
    def settings(patterns=None, device="cpu", slow=False):
        return tp.Settings(device, ("tiny",), (1,), patterns, 1, 0.1, 0, False, 1.0, 8, False, None, slow)

    chosen, skipped = tp.choose_variants(settings())
    names, why = [v.name for v in chosen], {d["variant"]: d["reason"] for d in skipped}
    assert "torch-cpu-fp32" in names and all(v.device in ("cpu", "any") for v in chosen)
    assert set(names) | set(why) == {v.name for v in tp.select(None, "all")}  # each one accounted for
    slow = [v.name for v in tp.select(None, "all") if v.slow and not v.unavailable() and v.device == "cpu"]
    for name in slow:  # e.g. torch-cpu-fp32-compile: only on request
        assert "marked slow" in why[name]
        assert name in [v.name for v in tp.choose_variants(settings(slow=True))[0]]
        assert name in [v.name for v in tp.choose_variants(settings(patterns=(name,)))[0]]
        assert name not in [v.name for v in tp.choose_variants(settings(patterns=("torch-*",)))[0]]
    import torch

    if not torch.cuda.is_available():
        assert why["torch-cuda-fp32"].startswith("needs a CUDA GPU")


def test_run_reports_each_row_as_it_is_measured(tmp_path):
    s = tp.Settings("cpu", ("tiny",), (1, 2), ("torch-cpu-fp32",), 1, 0.0, 0, False, 1.0, 8, False, None)
    seen = []
    result = tp.run(s, tmp_path, on_row=lambda r: seen.append([(x.variant, x.batch) for x in r["rows"]]))
    assert seen == [[("torch-cpu-fp32", 1)], [("torch-cpu-fp32", 1), ("torch-cpu-fp32", 2)]]
    assert [r.batch for r in result["rows"]] == [1, 2] and result["rows"][0].video_images_per_s is None
    assert result["meta"]["load_end"] is not None and result["artefact_seconds"]["tiny"]["checkpoint"] >= 0


def _row(**kw):
    base = dict(model="full", variant="torch-cuda-fp16", backend="torch (cuda:0, fp16)", precision="fp16", batch=8,
                images_per_s=1000.0, latency_p50_ms=8.0, latency_p99_ms=9.0, calls=10, macs_per_image=50_000_000_000)
    base.update(kw)
    return tp.Row(**base)


def test_row_derived_figures():
    r = _row(video_images_per_s=500.0, folder_images_per_s=250.0, peak_tflops=800.0)
    assert r.gmac_per_s == pytest.approx(50_000.0)
    assert r.peak_fraction == pytest.approx(2 * 50e9 * 1000 / 800e12)
    assert r.ratio("video") == 0.5 and r.ratio("folder") == 0.25
    d = r.to_dict()
    assert d["video_over_raw"] == 0.5 and d["peak_fraction"] == pytest.approx(0.125) and d["gmac_per_s"] == 50000.0
    cpu = _row(peak_tflops=None)
    assert cpu.peak_fraction is None and cpu.ratio("video") is None


def test_markdown_lists_rows_faces_and_what_was_not_measured():
    result = {
        "meta": {"started": "t", "gpu": "H100", "host_cpus": 16, "torch": "2", "torch_threads": 16,
                 "onnxruntime": None, "python": "3.12", "load_start": [0.1, 0.1, 0.1], "load_end": [1, 1, 1],
                 "inputs": "synthetic"},
        "peak": {"tflops": 800.0, "what": "8192^3 FP16 matmul", "gpu": "H100"},
        "rows": [_row(video_images_per_s=500.0, folder_images_per_s=250.0, peak_tflops=800.0, pipeline_frames=256)],
        "face_rows": [{"model": "full", "clip": "c.mp4", "batch": 8, "frames": 23, "faces_translated": 20,
                       "frames_per_s": 100.0, "faces_per_s": 90.0, "faces_over_raw": 0.09, "bottleneck": "backend"}],
        "skipped": [{"variant": "trt-fp16", "model": "*", "reason": "needs TensorRT"}],
        "notes": ["a note"],
    }
    md = tp.markdown(result)
    assert "| full | torch-cuda-fp16 | torch (cuda:0, fp16) | 8 | 1000.00 | 8.00 | 9.00 | 500.00 | 250.00 | 0.50 | 0.25 | 50000.0 | 12.5 |" in md
    assert "Device peak: 800.0 TFLOP/s" in md and "onnxruntime absent" in md
    assert "| full | c.mp4 | 8 | 23 | 20 | 100.00 | 90.00 | 0.09 | backend |" in md
    assert "- trt-fp16: needs TensorRT" in md and "- a note" in md
    assert '"images_per_s": 1000.0' in tp.to_json(result)
    assert "PARTIAL: the run has not finished" in md  # saved after each row until complete
    result["meta"]["complete"] = True
    assert "PARTIAL" not in tp.markdown(result)


@pytest.mark.parametrize("args, message", [
    (["--models", "huge"], "unknown model huge; choose from full, small, tiny"),
    (["--batches", "1,x"], "expected comma-separated integers"),
    (["--batches", "0"], "batch sizes must be positive integers"),
    (["--variants", "nope-*"], "no variant matches nope-*"),
    (["--repeats", "0"], "0 is not in the range x>=1"),
])
def test_cli_usage_errors(args, message):
    res = CliRunner().invoke(tp.main, args)
    assert res.exit_code == 2 and message in res.output, res.output


def test_cli_reports_when_nothing_can_run():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CUDA variant can run")
    res = CliRunner().invoke(tp.main, ["--device", "all", "--variants", "torch-cuda-fp32", "--models", "tiny"])
    assert res.exit_code == 1
    assert "Error: no variant can run here: torch-cuda-fp32: needs a CUDA GPU" in res.output
    res = CliRunner().invoke(tp.main, ["--device", "cuda"])
    assert res.exit_code == 1 and "--device cuda: torch sees no CUDA GPU here" in res.output


@pytest.mark.slow  # the benchmark in a subprocess (~11 s); test_a_stop_inside_a_pipeline_run_stops_the_benchmark checks the stop in-process
def test_first_sigterm_stops_prints_the_rows_and_removes_the_temporary_folder(tmp_path):
    import os
    import signal
    import subprocess
    import time

    # Long rows, each printed when measured (--all): the signal lands inside the second one.
    args = [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--all", "--models", "tiny", "--variants",
            "torch-cpu-fp32", "--batches", "1,2", "--repeats", "20", "--min-seconds", "0.3", "--warmup-seconds", "0",
            "--no-pipeline", "--no-faces"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TMPDIR=str(tmp_path)), cwd=tmp_path)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("| tiny | torch-cpu-fp32 |"):
                break
        assert list(tmp_path.glob("cyclemask-bench-*")), "the run should be using its temporary folder now"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert time.monotonic() - t0 < 15  # one timing call of 0.3 s, then the way out
    out = "".join(lines) + rest
    assert out.count("| tiny | torch-cpu-fp32 |") == 1, out  # batch 1 measured, batch 2 not
    assert "stopped: interrupted (SIGTERM); 1 row(s) measured before it" in out, out
    assert not list(tmp_path.glob("cyclemask-bench-*")), "the temporary folder was left behind"


def test_a_stop_inside_a_pipeline_run_stops_the_benchmark(tmp_path, monkeypatch):
    # run_pipeline takes Ctrl-C / SIGTERM itself and returns a report marked interrupted; read
    # as a failed run, it became a note on the row and the benchmark went on to the next one.
    from cyclemask.engine import pipeline
    from cyclemask.image_files import write_image

    folder = tmp_path / "faces"
    for i in range(2):
        write_image(folder / f"{i}.png", np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setattr(tp.PipelineInputs, "get", lambda self, kind, n: folder)
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: pipeline.RunReport(total=2, inputs=1, interrupted=True))
    with pytest.raises(KeyboardInterrupt):
        tp.time_pipeline(FakeBackend(), "folder", 2, 1, tp.PipelineInputs(tmp_path), tmp_path)


def test_cli_help_documents_every_option():
    res = CliRunner().invoke(tp.main, ["--help"])
    assert res.exit_code == 0
    for opt in ("--device", "--all", "--models", "--batches", "--variants", "--repeats", "--min-seconds", "--warmup",
                "--warmup-seconds",
                "--pipeline / --no-pipeline", "--pipeline-seconds", "--max-frames", "--faces / --no-faces",
                "--slow / --no-slow", "--threads", "--json", "--out", "--debug"):
        assert opt in res.output, opt
