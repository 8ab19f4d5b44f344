"""`cyclemask-run --video` with several videos: repeated flags and folders, one summary, one
bad file among good ones, where the outputs go."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.engine.cli import main

from engine_helpers import video_props


def run(*args):
    return CliRunner().invoke(main, ["--no-progress", *map(str, args)])


def make_video(path: Path, n: int, size=(64, 48), fps=10, codec="mp4v", seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    assert w.isOpened()
    for _ in range(n):
        w.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    w.release()
    return path


@pytest.fixture
def clips(tmp_path):
    """A folder holding good videos (one in a subfolder), a text file named .mp4 and a truncated
    video; and a good video elsewhere."""
    root = tmp_path / "clips"
    make_video(root / "a.mp4", 5)
    make_video(root / "sub" / "b.mp4", 4, seed=1)
    (root / "junk.mp4").write_text("this is not a video\n" * 50)
    whole = make_video(tmp_path / "whole.avi", 30, codec="MJPG", seed=2)
    (root / "cut.avi").write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    whole.unlink()
    (root / "notes.txt").write_text("not a video by name: never read")
    other = make_video(tmp_path / "elsewhere" / "c.mp4", 3, seed=3)
    return root, other


def test_one_bad_file_never_stops_the_others(clips, tmp_path, bundle_path):
    root, other = clips
    out = tmp_path / "out"
    res = run("--model", bundle_path, "--video", root, "--video", other, "--out", out, "--mask", "--aligned")
    assert res.exit_code == 1, res.output
    # Every good video is written, named as one video's output would be, the folder's own
    # subfolders kept; the broken ones are named with what is wrong with them.
    assert video_props(out / "a_mask.mp4")[0] == 5
    assert video_props(out / "sub" / "b_mask.mp4")[0] == 4
    assert video_props(out / "c_mask.mp4")[0] == 3
    assert not (out / "junk_mask.mp4").exists()
    cut = video_props(out / "cut_mask.mp4")[0]
    assert 0 < cut < 30
    assert "inputs:   5 videos" in res.output
    assert "written:  4" in res.output and "failed:   2" in res.output
    assert "junk.mp4: cannot open as a video" in res.output
    assert f"cut.avi: decoded {cut} frames of the 30 the container declares" in res.output
    assert f"{root / 'junk.mp4'}: failed, not written" in res.output
    assert f"{other} -> {out / 'c_mask.mp4'}: 3 frames" in res.output
    assert f"frames:   {5 + 4 + 3 + cut} written" in res.output
    assert not [p for p in out.rglob("*") if "partial" in p.name]


def test_several_good_videos_exit_zero_beside_their_inputs(tmp_path, bundle_path):
    a = make_video(tmp_path / "one" / "a.mp4", 3)
    b = make_video(tmp_path / "two" / "b.mkv", 2, seed=1)
    res = run("--model", bundle_path, "--video", a, "--video", b, "--unmask", "--aligned")
    assert res.exit_code == 0, res.output
    assert video_props(tmp_path / "one" / "a_unmask.mp4")[0] == 3
    assert video_props(tmp_path / "two" / "b_unmask.mp4")[0] == 2
    assert "inputs:   2 videos" in res.output and "failed:   0" in res.output


def test_a_folder_of_videos_goes_beside_it_by_default(clips, bundle_path):
    root, _ = clips
    for bad in ("junk.mp4", "cut.avi"):
        (root / bad).unlink()
    res = run("--model", bundle_path, "--video", root, "--mask", "--aligned")
    assert res.exit_code == 0, res.output
    default = root.parent / "clips_mask"
    assert video_props(default / "a_mask.mp4")[0] == 5
    assert video_props(default / "sub" / "b_mask.mp4")[0] == 4
    assert not list(root.rglob("*_mask.mp4"))  # nothing written among the inputs


def test_several_videos_need_an_out_folder_and_distinct_outputs(clips, tmp_path, bundle_path):
    root, other = clips
    res = run("--model", bundle_path, "--video", other, "--video", root / "a.mp4", "--out", tmp_path / "x.mp4",
              "--mask", "--aligned")
    assert res.exit_code == 1 and "with several videos --out must be a folder" in res.output
    twin = make_video(tmp_path / "twin" / "c.mp4", 2)
    res = run("--model", bundle_path, "--video", other, "--video", twin, "--out", tmp_path / "o", "--mask", "--aligned")
    assert res.exit_code == 1 and "would both be written to" in res.output
    assert not (tmp_path / "o" / "c_mask.mp4").exists()
    res = run("--model", bundle_path, "--video", root, "--out", root / "inside", "--mask", "--aligned")
    assert res.exit_code == 1 and "must be a folder outside the input folder" in res.output
    res = run("--model", bundle_path, "--video", other, "--video", tmp_path / "missing.mp4", "--mask", "--aligned")
    assert res.exit_code == 1 and "missing.mp4: no such video file or folder" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run("--model", bundle_path, "--video", empty, "--mask", "--aligned")
    assert res.exit_code == 1 and "no videos found" in res.output


def test_existing_outputs_are_refused_before_anything_runs(tmp_path, bundle_path):
    a = make_video(tmp_path / "a.mp4", 3)
    b = make_video(tmp_path / "b.mp4", 3, seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_mask.mp4").write_bytes(b"keep me")
    res = run("--model", bundle_path, "--video", a, "--video", b, "--out", out, "--mask", "--aligned")
    assert res.exit_code == 1 and "1 output file(s) already exist" in res.output
    assert not (out / "a_mask.mp4").exists() and (out / "b_mask.mp4").read_bytes() == b"keep me"
    res = run("--model", bundle_path, "--video", a, "--video", b, "--out", out, "--mask", "--aligned", "--overwrite")
    assert res.exit_code == 0, res.output
    assert video_props(out / "b_mask.mp4")[0] == 3


def test_an_output_that_is_another_input_is_refused(tmp_path, bundle_path):
    a = make_video(tmp_path / "a.mp4", 2)
    a_mask = make_video(tmp_path / "a_mask.mp4", 2, seed=1)
    before = a_mask.read_bytes()
    res = run("--model", bundle_path, "--video", a, "--video", a_mask, "--mask", "--aligned", "--overwrite")
    assert res.exit_code == 1 and "is the input video" in res.output
    assert a_mask.read_bytes() == before


def test_ray_takes_one_video(tmp_path, bundle_path):
    a = make_video(tmp_path / "a.mp4", 2)
    res = run("--model", bundle_path, "--video", a, "--video", a, "--ray", "--mask", "--aligned")
    assert res.exit_code == 2 and "--ray takes one --video" in res.output


def face_clip(path: Path, picture: np.ndarray, n: int) -> Path:
    h, w = picture.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for i in range(n):
        writer.write(cv2.cvtColor(np.roll(picture, 2 * i, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_the_faces_line_counts_every_video(tmp_path, bundle_path, two_faces, monkeypatch):
    monkeypatch.delenv("CYCLEMASK_FACE_DETECTOR", raising=False)
    a = face_clip(tmp_path / "a.mp4", two_faces, 3)
    b = face_clip(tmp_path / "b.mp4", two_faces[:, :256], 2)
    res = run("--model", bundle_path, "--video", a, "--video", b, "--out", tmp_path / "out", "--mask")
    assert res.exit_code == 0, res.output
    # Two faces in each frame of the first clip, one in each of the second's.
    assert "faces:    8 found in 5 of 5 frames; 8 translated" in res.output


def test_a_stop_names_the_videos_not_reached(tmp_path, bundle_path, monkeypatch):
    import _thread

    from cyclemask.engine import sinks

    clips = [make_video(tmp_path / f"{name}.mp4", 6, seed=i) for i, name in enumerate("abc")]
    real_write = sinks.VideoSink.write

    def write_then_interrupt(self, frame, image):
        real_write(self, frame, image)
        if self.path.name == "b_mask.mp4" and self.frames_written == 2:
            _thread.interrupt_main()

    monkeypatch.setattr(sinks.VideoSink, "write", write_then_interrupt)
    out = tmp_path / "out"
    res = run("--model", bundle_path, *[a for c in clips for a in ("--video", c)], "--out", out, "--mask",
              "--aligned", "--batch", "2")
    assert res.exit_code == 130, res.output
    assert "stopped: interrupted (Ctrl-C)" in res.output
    assert video_props(out / "a_mask.mp4")[0] == 6
    assert not (out / "b_mask.mp4").exists() and not (out / "c_mask.mp4").exists()
    assert f"{clips[1]}: stopped, not written" in res.output and f"{clips[2]}: not reached" in res.output
    assert "not written (run stopped first): 1" in res.output
    assert not [p for p in out.iterdir() if "partial" in p.name]


def test_a_read_only_folder_of_videos_writes_to_the_current_folder_and_says_so_once(tmp_path, bundle_path,
                                                                                   monkeypatch):
    data = tmp_path / "data"
    make_video(data / "clips" / "a.mp4", 2)
    make_video(data / "clips" / "b.mp4", 2, seed=1)
    data.chmod(0o555)  # no write bit for anyone: a data set its owner marked read-only
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    try:
        res = run("--model", bundle_path, "--video", data / "clips", "--mask", "--aligned")
    finally:
        data.chmod(0o755)
    assert res.exit_code == 0, res.output
    assert video_props(here / "clips_mask" / "a_mask.mp4")[0] == 2
    assert video_props(here / "clips_mask" / "b_mask.mp4")[0] == 2
    assert res.output.count("is read-only: the output goes to the current folder") == 1, res.output
