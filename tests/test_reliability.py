"""Faults a user's scheduler, a full disk or a second user cause, on real commands in real
processes: SIGINT / SIGTERM (stop at a safe point, summary, exit 130 / 143), a second signal
(exit at once, partial files removed), SIGKILL (the next run sweeps what it left), a full disk
(a real tmpfs where root may mount one; EFBIG through RLIMIT_FSIZE always), a folder the run may
not write (EACCES: root without CAP_DAC_OVERRIDE), and two runs on one output.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.image_files import read_image, write_image
from proc_helpers import Child, can_drop_dac, command, partials

SIZE = 128
RUN = command("cyclemask-run")
JOURNAL = ".cyclemask-journal"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A small generator pair (about 50 ms an image on one CPU thread here): slow enough that
    a run over a few hundred inputs can be signalled half way."""
    import torch

    from cyclemask.checkpoint import save_generators
    from cyclemask.config import GeneratorConfig
    from cyclemask.models import build_generator

    torch.manual_seed(0)
    gens = {d: build_generator(GeneratorConfig(ngf=16, n_blocks=3)).eval() for d in ("mask", "unmask")}
    path = tmp_path_factory.mktemp("model") / "generators.pt"
    save_generators(path, gens, extra={"train_config": {"crop_size": SIZE, "load_size": SIZE}})
    return path


def make_images(folder: Path, n: int, noise: bool = True, size: int = SIZE, prefix: str = "img", seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = (rng.integers(0, 256, (size, size, 3), dtype=np.uint8) if noise
               else np.full((size, size, 3), (i * 37) % 256, np.uint8))
        p = folder / f"{prefix}_{i:04d}.png"
        write_image(p, img)
        paths.append(p)
    return paths


def make_video(path: Path, n: int, size: int = SIZE) -> Path:
    rng = np.random.default_rng(0)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size, size))
    assert w.isOpened()
    for _ in range(n):
        w.write(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    w.release()
    return path


def frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler for sig (its handlers are installed: it is ready)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)
    return bool(mask & (1 << (sig - 1)))


def run_args(bundle: Path, *args) -> list:
    return [RUN, "--model", bundle, "--mask", "--aligned", "--no-progress", *args]


def run_here(bundle: Path, *args):
    from cyclemask.engine.cli import main

    return CliRunner().invoke(main, [str(a) for a in run_args(bundle, *args)[1:]])


def written(summary: str) -> int:
    return int(re.search(r"^\s*written:\s+(\d+)", summary, re.M).group(1))


def assert_complete_images(folder: Path, size: int = SIZE) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.png") if not p.name.startswith("."))
    for p in files:
        assert read_image(p).shape == (size, size, 3), p
    return files


# -- SIGINT / SIGTERM ------------------------------------------------------------------------------


# Slow: a run in a subprocess, signalled (~2.5 s of CPU each).
# test_a_stop_signal_sent_during_an_image_run_in_this_process_stops_it_at_a_safe_point is its fast twin.
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_stops_an_image_run_at_a_safe_point(tmp_path, bundle, sig):
    make_images(tmp_path / "in", 200)
    out = tmp_path / "out"
    with Child(run_args(bundle, "--images", tmp_path / "in", "--out", out, "--batch", "1"), tmp_path / "logs") as child:
        child.wait_for(lambda: len(list(out.glob("*.png"))) >= 3, "three outputs")
        child.send(sig, group=sig == signal.SIGINT)  # a terminal's Ctrl-C goes to the process group
        code = child.finish()
    assert code == 128 + sig, child.stderr[-2000:]
    name = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert f"stopped: interrupted ({name})" in child.stdout
    assert "not written (run stopped first):" in child.stdout
    done = assert_complete_images(out)
    assert 3 <= len(done) < 200 and written(child.stdout) == len(done)
    assert not partials(out) and not (out / JOURNAL).exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_sent_during_an_image_run_in_this_process_stops_it_at_a_safe_point(tmp_path, bundle, sig,
                                                                                          monkeypatch):
    import os

    from cyclemask.engine import sinks

    real_write = sinks.ImageFolderSink.write

    def write_then_signal(self, frame, image):
        path = real_write(self, frame, image)
        if len(self.written) == 3:
            os.kill(os.getpid(), sig)
        return path

    monkeypatch.setattr(sinks.ImageFolderSink, "write", write_then_signal)
    make_images(tmp_path / "in", 20)
    out = tmp_path / "out"
    res = run_here(bundle, "--images", tmp_path / "in", "--out", out, "--batch", "1")
    assert res.exit_code == 128 + sig, res.output
    name = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert f"stopped: interrupted ({name})" in res.output
    assert "not written (run stopped first):" in res.output
    done = assert_complete_images(out)
    assert 3 <= len(done) < 20 and written(res.output) == len(done)
    assert not partials(out) and not (out / JOURNAL).exists()


def test_a_stop_swallowed_by_a_finalizer_stops_an_image_run_in_this_process(tmp_path, bundle, monkeypatch):
    import time

    from cyclemask.engine import sinks
    from tests.test_stop_signals import _swallowed_stop

    real_write = sinks.ImageFolderSink.write

    def write_then_lose_a_stop(self, frame, image):
        path = real_write(self, frame, image)
        if len(self.written) == 3:
            _swallowed_stop()  # the writer thread goes on: only the main thread can stop the run
        if len(self.written) >= 3:
            time.sleep(0.05)  # so that the main thread's wait sees it long before the end
        return path

    monkeypatch.setattr(sinks.ImageFolderSink, "write", write_then_lose_a_stop)
    make_images(tmp_path / "in", 40)
    out = tmp_path / "out"
    res = run_here(bundle, "--images", tmp_path / "in", "--out", out, "--batch", "1")
    assert res.exit_code == 143, res.output
    assert "stopped: interrupted (SIGTERM)" in res.output and "not written (run stopped first):" in res.output
    done = assert_complete_images(out)
    assert 3 <= len(done) < 20 and written(res.output) == len(done)
    assert not partials(out) and not (out / JOURNAL).exists()


@pytest.mark.slow  # a video run in a subprocess, signalled twice (~11 s); test_a_stop_signal_stops_an_image_run_at_a_safe_point keeps the signal path fast
def test_video_sigterm_discards_sigkill_leaves_a_partial_the_next_run_sweeps(tmp_path, bundle):
    clip = make_video(tmp_path / "clip.mp4", 150)
    out = tmp_path / "out"
    cmd = run_args(bundle, "--video", clip, "--out", out, "--batch", "2")
    # SIGTERM: the partial video is discarded, the summary says so, the folder it made goes too.
    with Child(cmd, tmp_path / "logs") as child:
        child.wait_for(lambda: out.is_dir() and partials(out), "the partial video")
        child.send(signal.SIGTERM)
        assert child.finish() == 143, child.stderr[-2000:]
    assert "stopped: interrupted (SIGTERM)" in child.stdout and "clip_mask.mp4: not written" in child.stdout
    assert not out.exists()
    # SIGKILL: nothing runs; the partial and the journal (naming the dead run) stay behind.
    with Child(cmd, tmp_path / "logs") as child:
        child.wait_for(lambda: out.is_dir() and partials(out), "the partial video")
        child.send(signal.SIGKILL)
        assert child.finish() == -signal.SIGKILL
        killed = child.pid
    left = sorted(p.name for p in out.iterdir())
    assert len(left) == 2 and ".clip_mask.mp4.cyclemask-journal" in left
    assert [n for n in left if re.fullmatch(r"\.clip_mask\.[0-9a-f]{12}\.partial\.mp4", n)]
    # Files it did not create stay whatever they are called.
    foreign = [out / ".clip_mask.abcdef012345.partial.mp4", out / ".clip_mask.x.partial.mp4", out / "notes.txt"]
    for f in foreign:
        f.write_bytes(b"not cyclemask's")
    with Child(cmd, tmp_path / "logs") as child:
        assert child.finish() == 0, child.stderr[-2000:]
    assert f"removed 1 partial file(s) left by an earlier run that did not finish (pid {killed}" in child.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(["clip_mask.mp4", *(f.name for f in foreign)])
    assert frames(out / "clip_mask.mp4") == 150


SLOW_FINISH = """
import pathlib, sys, time
from cyclemask.engine import sinks

real = sinks.VideoSink.finish

def slow_finish(self, commit):  # a stop that takes long: the second signal lands during it
    pathlib.Path(sys.argv[1]).write_text("finishing")
    time.sleep(120)
    return real(self, commit)

sinks.VideoSink.finish = slow_finish
from cyclemask.engine.cli import main
main(sys.argv[2:], prog_name="cyclemask-run")
"""


def test_a_second_signal_exits_at_once_and_removes_the_partial_file(tmp_path, bundle):
    clip = make_video(tmp_path / "clip.mp4", 150)
    out = tmp_path / "out"
    marker = tmp_path / "finishing"
    cmd = [sys.executable, "-c", SLOW_FINISH, marker, *run_args(bundle, "--video", clip, "--out", out)[1:]]
    with Child(cmd, tmp_path / "logs") as child:
        child.wait_for(lambda: out.is_dir() and partials(out), "the partial video")
        child.send(signal.SIGTERM)
        child.wait_for(marker.exists, "the stop to reach the sink")
        assert partials(out)  # still there while the stop is under way
        t0 = time.monotonic()
        child.send(signal.SIGTERM)
        code = child.finish(timeout=60)  # the sink sleeps 120 s: an exit before is "at once"
    assert code == 143, child.stderr[-2000:]
    assert time.monotonic() - t0 < 60
    assert "SIGTERM again: stopping at once; removed 1 partial file(s)" in child.stderr
    assert not partials(out) and not (out / "clip_mask.mp4").exists()


# -- two runs, one output ------------------------------------------------------------------------


@pytest.mark.slow  # two CLI subprocesses (~9 s); tests/test_outputs.py checks the lock's refusal in-process
def test_a_second_run_on_a_live_runs_output_is_refused_and_proceeds_once_it_died(tmp_path, bundle):
    make_images(tmp_path / "in", 400)
    out = tmp_path / "out"
    with Child(run_args(bundle, "--images", tmp_path / "in", "--out", out, "--batch", "1"), tmp_path / "logs") as first:
        first.wait_for(lambda: len(list(out.glob("*.png"))) >= 2, "two outputs")
        for extra in ([], ["--overwrite"]):  # the lock is named before "outputs exist"
            res = run_here(bundle, "--images", tmp_path / "in", "--out", out, *extra)
            assert res.exit_code == 1, res.output
            assert f"another run (pid {first.pid}, cyclemask-run, started " in res.output
            assert "is writing this output; wait for it to finish or stop it" in res.output
        assert first.proc.poll() is None  # untouched by the refusals
        first.send(signal.SIGKILL)
        first.finish()
    assert (out / JOURNAL).exists()
    res = run_here(bundle, "--images", tmp_path / "in", "--out", out, "--overwrite")
    assert res.exit_code == 0, res.output
    assert len(assert_complete_images(out)) == 400
    assert not partials(out) and not (out / JOURNAL).exists()


# -- full disk, file size limit, no permission -------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs, where this machine lets root mount one."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip() or res.returncode}); "
                    "the RLIMIT_FSIZE tests cover a failing write")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_what_was_done(tmp_path, bundle, small_disk):
    make_images(tmp_path / "in", 12)  # ~49 kB each: four or five fit
    out = small_disk / "out"
    res = run_here(bundle, "--images", tmp_path / "in", "--out", out, "--batch", "1")
    assert res.exit_code == 1, res.output
    assert res.output.count("No space left on device, ENOSPC") == 1
    m = re.search(r"stopped by an error: (\S+): cannot write \(No space left on device, ENOSPC\)", res.output)
    assert m and Path(m.group(1)).parent == out
    done = assert_complete_images(out)
    assert 1 <= len(done) < 12 and written(res.output) == len(done)
    assert Path(m.group(1)) not in done  # no half-written file under the output's name
    assert not partials(out) and not (out / JOURNAL).exists()
    # A video too: FFmpeg's write fails with ENOSPC; nothing is left under the output's name.
    res = run_here(bundle, "--video", make_video(tmp_path / "clip.mp4", 60), "--out", small_disk / "v.mp4")
    assert res.exit_code == 1, res.output
    assert re.search(r"v\.mp4: cannot write \(No space left on device, ENOSPC\)", res.output)
    assert written(res.output) == 0 and re.search(r"discarded with the unfinished video\): \d+", res.output)
    assert not (small_disk / "v.mp4").exists() and not partials(small_disk)


@pytest.mark.slow  # a subprocess under a file-size limit (~7 s); the full-disk and EACCES tests keep the write-error path fast
def test_a_file_size_limit_fails_the_write_with_efbig(tmp_path, bundle):
    # Outputs keep their input's size: 16 px ones stay under 1 kB, a 256 px one is ~200 kB.
    make_images(tmp_path / "in", 3, prefix="a", size=16)
    make_images(tmp_path / "in", 1, prefix="b", size=256)
    make_images(tmp_path / "in", 3, prefix="c", size=16)
    out = tmp_path / "out"
    with Child(run_args(bundle, "--images", tmp_path / "in", "--out", out), tmp_path / "logs", fsize=16384) as child:
        assert child.finish() == 1, child.stderr[-2000:]
    assert f"stopped by an error: {out / 'b_0000.png'}: cannot write (File too large, EFBIG)" in child.stdout
    assert [p.name for p in assert_complete_images(out, 16)] == ["a_0000.png", "a_0001.png", "a_0002.png"]
    assert not partials(out) and not (out / JOURNAL).exists()
    clip = make_video(tmp_path / "clip.mp4", 60)
    with Child(run_args(bundle, "--video", clip, "--out", out / "v.mp4"), tmp_path / "logs", fsize=16384) as child:
        assert child.finish() == 1, child.stderr[-2000:]
    assert "v.mp4: cannot write (File too large, EFBIG)" in child.stdout
    assert not (out / "v.mp4").exists() and not partials(out)


# Slow: a run in a subprocess without CAP_DAC_OVERRIDE (~2.5 s of CPU).
# test_a_permission_error_in_this_process_stops_the_run_with_eacces is its fast twin.
@pytest.mark.slow
def test_an_unwritable_folder_stops_the_run_with_eacces(tmp_path, bundle):
    why = can_drop_dac()
    if why:
        pytest.skip(why)
    make_images(tmp_path / "in" / "a", 3)
    make_images(tmp_path / "in" / "b", 3)
    out = tmp_path / "out"
    (out / "b").mkdir(parents=True)
    (out / "b").chmod(0o555)
    try:
        with Child(run_args(bundle, "--images", tmp_path / "in", "--out", out), tmp_path / "logs", drop_dac=True) as child:
            assert child.finish() == 1, child.stderr[-2000:]
    finally:
        (out / "b").chmod(0o755)
    assert f"stopped by an error: {out / 'b' / 'img_0000.png'}: cannot write (Permission denied, EACCES)" in child.stdout
    assert [p.relative_to(out).as_posix() for p in assert_complete_images(out)] == [f"a/img_000{i}.png" for i in range(3)]
    assert not partials(out) and not (out / JOURNAL).exists()


def test_a_permission_error_in_this_process_stops_the_run_with_eacces(tmp_path, bundle, monkeypatch):
    import errno

    from cyclemask import outputs

    real_create = outputs.create_partial

    def create_partial(target, directory=False):
        # What the kernel answers for a folder of mode 0555 (as root without CAP_DAC_OVERRIDE).
        if Path(target).parent == out / "b":
            raise PermissionError(errno.EACCES, "Permission denied", str(outputs.partial_path(target)))
        return real_create(target, directory)

    make_images(tmp_path / "in" / "a", 3)
    make_images(tmp_path / "in" / "b", 3)
    out = tmp_path / "out"
    monkeypatch.setattr(outputs, "create_partial", create_partial)
    res = run_here(bundle, "--images", tmp_path / "in", "--out", out)
    assert res.exit_code == 1, res.output
    assert f"stopped by an error: {out / 'b' / 'img_0000.png'}: cannot write (Permission denied, EACCES)" in res.output
    assert [p.relative_to(out).as_posix() for p in assert_complete_images(out)] == [f"a/img_000{i}.png" for i in range(3)]
    assert not partials(out) and not (out / JOURNAL).exists()


# -- the other commands on SIGTERM -------------------------------------------------------------------


@pytest.mark.slow  # cyclemask-export in a subprocess (~10 s); tests/test_stop_signals.py checks the safe points in-process
def test_export_sigterm_leaves_no_staging_folder(tmp_path, bundle):
    out = tmp_path / "out"
    with Child([command("cyclemask-export"), "--checkpoint", bundle, "--out", out, "--fp16", "--no-engine",
                "--verify-count", 0], tmp_path / "logs") as child:
        child.wait_for(lambda: out.is_dir() and partials(out), "the staging folder")
        child.send(signal.SIGTERM)
        assert child.finish() == 143, child.stderr[-2000:]
    assert "SIGTERM received: stopping after the current step" in child.stderr
    assert "stopped: interrupted (SIGTERM)" in child.stderr
    assert "output file(s) completed by this run kept; nothing half-written left" in child.stderr
    assert not partials(tmp_path)
    import onnx

    for p in out.glob("*.onnx") if out.exists() else []:  # a direction finished before the stop is whole
        onnx.load(str(p))


# Slow: cyclemask-data in a subprocess, twice (~1.6 s of CPU).
# test_data_prepare_stopped_in_this_process_keeps_finished_crops_and_a_rerun_completes is its fast twin.
@pytest.mark.slow
def test_data_prepare_sigterm_keeps_finished_crops_and_a_rerun_completes(tmp_path):
    make_images(tmp_path / "A", 300, prefix="a")
    make_images(tmp_path / "B", 300, prefix="b", seed=1)
    out = tmp_path / "data"
    cmd = [command("cyclemask-data"), "prepare", "--a", tmp_path / "A", "--b", tmp_path / "B", "--out", out,
           "--no-detect", "--size", 64, "--format", "png"]
    with Child(cmd, tmp_path / "logs") as child:
        child.wait_for(lambda: len(list(out.rglob("*.png"))) >= 5, "five crops")
        child.send(signal.SIGTERM)
        assert child.finish() == 143, child.stderr[-2000:]
    assert "stopped: interrupted (SIGTERM)" in child.stderr
    m = re.search(r"(\d+) output file\(s\) completed by this run kept; nothing half-written left", child.stderr)
    crops = [p for p in out.rglob("*.png")]
    assert m and int(m.group(1)) >= len(crops) >= 5 and all(read_image(p).shape == (64, 64, 3) for p in crops)
    assert not partials(out) and json.loads((out / "manifest.json").read_text())["status"] == "writing"
    with Child(cmd, tmp_path / "logs") as child:
        assert child.finish() == 0, child.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert not partials(out) and not (out / JOURNAL).exists()


def test_data_prepare_stopped_in_this_process_keeps_finished_crops_and_a_rerun_completes(tmp_path, monkeypatch):
    import os

    from cyclemask.train import prepare
    from cyclemask.train.data_cli import main as data_cli

    make_images(tmp_path / "A", 30, prefix="a")
    make_images(tmp_path / "B", 30, prefix="b", seed=1)
    out = tmp_path / "data"
    real_write = prepare.write_bytes_atomic

    def write_then_signal(path, data):
        real_write(path, data)
        if Path(path).suffix == ".png" and len(list(out.rglob("*.png"))) == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(prepare, "write_bytes_atomic", write_then_signal)
    args = ["prepare", "--a", tmp_path / "A", "--b", tmp_path / "B", "--out", out, "--no-detect", "--size", 64,
            "--format", "png"]
    res = CliRunner().invoke(data_cli, [str(a) for a in args])
    assert res.exit_code == 143, res.output
    assert "stopped: interrupted (SIGTERM)" in res.output
    m = re.search(r"(\d+) output file\(s\) completed by this run kept; nothing half-written left", res.output)
    crops = [p for p in out.rglob("*.png")]
    assert m and int(m.group(1)) >= len(crops) >= 5 and all(read_image(p).shape == (64, 64, 3) for p in crops)
    assert len(crops) < 60
    assert not partials(out) and json.loads((out / "manifest.json").read_text())["status"] == "writing"
    monkeypatch.setattr(prepare, "write_bytes_atomic", real_write)
    res = CliRunner().invoke(data_cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert len(list(out.rglob("*.png"))) == 60
    assert not partials(out) and not (out / JOURNAL).exists()


def test_eval_sigterm_writes_no_report(tmp_path):
    make_images(tmp_path / "A", 64, prefix="a")
    make_images(tmp_path / "B", 64, prefix="b", seed=1)
    report = tmp_path / "fid.json"
    with Child([command("cyclemask-eval"), "fid", tmp_path / "A", tmp_path / "B", "--json", report,
                "--feature-device", "cpu"], tmp_path / "logs") as child:
        child.wait_for(lambda: (tmp_path / ".fid.json.cyclemask-journal").exists(), "the report's lock")
        child.send(signal.SIGTERM)
        assert child.finish() == 143, child.stderr[-2000:]
    assert "stopped: interrupted (SIGTERM)" in child.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A", "B", "logs"]


# Slow: the script in a subprocess (~1.8 s of CPU).
# test_a_benchmark_script_run_as_main_in_this_process_handles_sigterm is its fast twin.
@pytest.mark.slow
def test_a_benchmark_script_handles_sigterm(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
    with Child([sys.executable, script, "--device", "cpu", "--size", 32, "--ngf", 8, "--ndf", 8, "--n-blocks", 1,
                "--batch", 1, "--warmup", 0, "--iters", 100000, "--threads", 1], tmp_path / "logs") as child:
        child.wait_for(lambda: catches(child.pid, signal.SIGTERM), "its signal handlers")
        child.send(signal.SIGTERM)
        assert child.finish() == 143, child.stderr[-2000:]
    assert "stopped: interrupted (SIGTERM)" in child.stderr


def test_a_benchmark_script_run_as_main_in_this_process_handles_sigterm(monkeypatch, capsys):
    import os
    import runpy

    from cyclemask import cli_util
    from cyclemask.train.trainer import Trainer

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
    real_step = Trainer.train_step
    steps = []

    def step_then_signal(self, *batch):
        steps.append(1)
        if len(steps) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    monkeypatch.setattr(cli_util._stop, "signum", None)
    monkeypatch.setattr(sys, "argv", [str(script), "--device", "cpu", "--size", "32", "--ngf", "8", "--ndf", "8",
                                      "--n-blocks", "1", "--batch", "1", "--warmup", "0", "--iters", "100000",
                                      "--threads", "1"])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(script), run_name="__main__")
    assert stopped.value.code == 143 and len(steps) == 3
    assert "stopped: interrupted (SIGTERM)" in capsys.readouterr().err
