"""Video I/O through FFmpeg (PyAV): H.264 MP4 out, sound and subtitles kept, timestamps kept,
colour and rotation right, frames counted by decoding, bad and damaged inputs reported, live
inputs (a stream over HTTP, a named pipe) finalised on Ctrl-C. Every clip is made here with PyAV."""

from __future__ import annotations

import _thread
import http.server
import os
import re
import threading
import time
from fractions import Fraction

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.engine import video as vid
from cyclemask.engine.cli import main
from cyclemask.engine.contracts import Sink, Source
from cyclemask.engine.pipeline import PipelineConfig, run_pipeline
from cyclemask.engine.processing import PassThroughProcessor
from cyclemask.engine.video import VideoOutputConfig, VideoSink, VideoSource
from cyclemask.outputs import PARTIAL_RE, partial_path, run_id
from cyclemask.errors import ConfigError, InputError

from video_clips import (IdentityBackend, decode, frame_times, make_clip, packets, pattern,
                         set_matroska_duration)

av = pytest.importorskip("av")


def run(*args):
    return CliRunner().invoke(main, ["--no-progress", *map(str, args)])


def passthrough(src_path, out_path, **config) -> tuple:
    """Decode -> unchanged frames -> encode, through the real pipeline."""
    source = VideoSource(src_path)
    sink = VideoSink(out_path, source.info, source=source, config=VideoOutputConfig(**config))
    with IdentityBackend() as backend:
        report = run_pipeline(source, PassThroughProcessor(backend.image_size), backend, sink,
                              PipelineConfig(batch_size=4))
    return source, report


def stream_info(path):
    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.codec.canonical_name) for s in c.streams], c.streams.video[0].codec_context


# ------------------------------------------------------------------------------------------------
# What the issue asks to see


def test_sine_tone_audio_comes_back_byte_identical_and_durations_match(tmp_path, bundle_path):
    src = make_clip(tmp_path / "talk.mp4", n=30, audio="aac")
    out = tmp_path / "talk_out.mp4"
    res = run("--model", bundle_path, "--video", src, "--out", out, "--mask", "--aligned", "--batch", "4")
    assert res.exit_code == 0, res.output
    a_in, a_out = packets(src, "audio"), packets(out, "audio")
    assert len(a_in) > 40 and [b for _, b in a_out] == [b for _, b in a_in]
    assert [t for t, _ in a_out] == pytest.approx([t for t, _ in a_in], abs=1e-6)
    with av.open(str(src)) as a, av.open(str(out)) as b:
        frame = 1 / 25
        assert abs(b.duration - a.duration) / 1e6 <= frame
        assert abs(float(b.streams.video[0].duration * b.streams.video[0].time_base)
                   - float(a.streams.video[0].duration * a.streams.video[0].time_base)) <= frame
    assert re.search(r"note: audio: aac 48 kHz mono copied as it is \(\d+ packets\)", res.output)


def test_output_is_h264_yuv420p_faststart_and_decodes_in_pyav_and_opencv(tmp_path, bundle_path):
    src = make_clip(tmp_path / "clip.mov", n=21, size=(80, 60), fps=15)
    out = tmp_path / "clip_out.mp4"
    res = run("--model", bundle_path, "--video", src, "--out", out, "--unmask", "--aligned")
    assert res.exit_code == 0, res.output
    streams, ctx = stream_info(out)
    assert streams == [("video", "h264")] and ctx.pix_fmt == "yuv420p" and ctx.color_range == 1
    data = out.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # the index first: plays while downloading
    assert len(decode(out)) == 21
    cap = cv2.VideoCapture(str(out))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (60, 80, 3)
        n += 1
    assert n == 21 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15)
    assert "video: H.264 (libx264, crf 18, preset veryfast), yuv420p, index first (faststart)" in res.output
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_variable_frame_rate_keeps_every_timestamp(tmp_path, suffix):
    stamps = [0, 40, 100, 120, 250, 260, 400, 530, 540, 700, 733, 900]  # ms: VFR
    src = make_clip(tmp_path / f"vfr{suffix}", n=len(stamps), pts=stamps, time_base=Fraction(1, 1000),
                    size=(64, 48))
    assert frame_times(src) == pytest.approx([t / 1000 for t in stamps])
    source, report = passthrough(src, tmp_path / "vfr_out.mp4")
    assert report.ok and report.written == len(stamps)
    assert frame_times(tmp_path / "vfr_out.mp4") == pytest.approx([t / 1000 for t in stamps], abs=1e-6)


def test_matroska_whose_duration_overstates_its_frames_exits_0(tmp_path, bundle_path):
    # A webcam recording: 30 frames at 30 fps, the container claiming 2.6 s. OpenCV's frame count
    # (duration x fps) makes 78 of it, which failed the run before.
    src = make_clip(tmp_path / "webcam.mkv", n=30, fps=30, size=(64, 48), audio="aac", audio_seconds=2.6)
    set_matroska_duration(src, 2.6)
    assert cv2.VideoCapture(str(src)).get(cv2.CAP_PROP_FRAME_COUNT) > 30
    out = tmp_path / "webcam_out.mp4"
    res = run("--model", bundle_path, "--video", src, "--out", out, "--mask", "--aligned")
    assert res.exit_code == 0, res.output
    assert "written:  30 " in res.output and "failed:   0" in res.output
    assert len(decode(out)) == 30


@pytest.mark.parametrize("kind", ["mp4-faststart", "mkv", "avi-mjpeg"])
def test_truncated_file_writes_what_decodes_and_fails_clearly(tmp_path, bundle_path, kind):
    if kind == "mp4-faststart":
        whole = make_clip(tmp_path / "whole.mp4", n=40, container_options={"movflags": "+faststart"},
                          frames=lambda i: np.random.default_rng(i).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    elif kind == "mkv":
        whole = make_clip(tmp_path / "whole.mkv", n=40,
                          frames=lambda i: np.random.default_rng(i).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    else:
        whole = make_clip(tmp_path / "whole.avi", n=40, codec="mjpeg", pix_fmt="yuvj420p", full_range=True, tag=None)
    cut = tmp_path / f"cut{whole.suffix}"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    out = tmp_path / "cut_out.mp4"
    res = run("--model", bundle_path, "--video", cut, "--out", out, "--mask", "--aligned")
    assert res.exit_code == 1, res.output
    n = len(decode(out))
    assert 0 < n < 40 and f"written:  {n} " in res.output
    assert f"cut{whole.suffix}: decoded {n} frames" in res.output
    assert "(a truncated or damaged file?)" in res.output


@pytest.mark.parametrize("what, message", [
    ("image.png", "is an image (png), not a video (--images takes a folder of images)"),
    ("png_renamed.mp4", "is an image (png), not a video"),
    ("photo.jpg", "is an image (mjpeg), not a video"),
    ("notes.txt", "is a text file, not a video"),
    ("notes.mp4", "cannot open as a video (Invalid data found when processing input"),
    ("song.m4a", "has no video stream (it holds only audio (aac))"),
    ("subs_only.mkv", "has no video stream (it holds only subtitle (subrip))"),
    ("empty.mp4", "is empty (0 bytes), not a video"),
])
def test_not_a_video_is_refused_with_one_line(tmp_path, bundle_path, rng, what, message):
    p = tmp_path / what
    if what in ("image.png", "png_renamed.mp4"):
        p.write_bytes(cv2.imencode(".png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))[1].tobytes())
    elif what == "photo.jpg":
        cv2.imwrite(str(p), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    elif what.startswith("notes"):
        p.write_text("a text file, not a video\n" * 20)
    elif what == "song.m4a":
        with av.open(str(p), "w", format="mp4") as c:
            a = c.add_stream("aac", rate=48000)
            for k in range(0, 48000, 1024):
                f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                f.sample_rate, f.pts, f.time_base = 48000, k, Fraction(1, 48000)
                c.mux(a.encode(f))
            c.mux(a.encode(None))
    elif what == "subs_only.mkv":
        from video_clips import ASS_HEADER

        with av.open(str(p), "w") as c:
            s = c.add_stream("subrip")
            s.codec_context.subtitle_header = ASS_HEADER
            s.codec_context.time_base = Fraction(1, 1000)
            pk = s.codec_context.encode_subtitle(av.subtitles.subtitle.SubtitleSet.create(b"0,0,Default,,0,0,0,,hi", 0, 500, 0))
            pk.stream, pk.time_base, pk.pts, pk.dts, pk.duration = s, Fraction(1, 1000), 0, 0, 500
            c.mux(pk)
    else:
        p.write_bytes(b"")
    res = run("--model", bundle_path, "--video", p, "--mask", "--aligned")
    assert res.exit_code == 1
    assert res.output.count("\n") == 1 and res.output.startswith(f"Error: {p}: "), res.output
    assert message in res.output, res.output
    assert "Traceback" not in res.output


# ------------------------------------------------------------------------------------------------
# Colour, rotation, sizes


@pytest.mark.parametrize("case", ["bt709", "bt601", "untagged-sd", "full-range-jpeg"])
def test_colour_matrix_and_range_are_honoured(tmp_path, case):
    size = (160, 120) if case != "bt709" else (320, 180)
    kw = {"bt709": dict(matrix="ITU709", tag=1), "bt601": dict(matrix="ITU601", tag=6),
          "untagged-sd": dict(matrix="ITU601", tag=None),
          "full-range-jpeg": dict(matrix="ITU601", tag=None, pix_fmt="yuvj420p", full_range=True)}[case]
    truth = np.stack([pattern(i, *size, bar=False) for i in range(6)])
    src = make_clip(tmp_path / f"{case}.mkv", n=6, size=size, options={"crf": "4"}, frames=truth.__getitem__, **kw)
    truth = truth.astype(float)
    got = np.stack(decode(src)).astype(float)
    # The frames read are the colours that were encoded: each channel's mean within 1 level
    # (a matrix mix-up moves the saturated gradients by 5-20 levels). Making the full-range clip
    # costs half a level of chroma already (swscale's RGB -> full-range YUV truncates).
    assert np.abs((got - truth).reshape(-1, 3).mean(0)).max() <= (1.5 if case == "full-range-jpeg" else 1.0)
    source, report = passthrough(src, tmp_path / "out.mp4")
    assert report.ok
    back = np.stack(decode(tmp_path / "out.mp4")).astype(float)
    shift = (back - got).reshape(-1, 3).mean(0)
    assert np.abs(shift).max() <= 1.0, shift  # a pass-through moves no channel's mean by > 1 level
    _, ctx = stream_info(tmp_path / "out.mp4")
    # Limited range, what every player expects of yuv420p H.264 (x264 leaves the default unsaid
    # when no colour tag is written at all).
    assert ctx.color_range == (0 if case == "untagged-sd" else 1)
    expected_tag = {"bt709": 1, "bt601": 6, "untagged-sd": 2, "full-range-jpeg": 6}[case]
    assert ctx.colorspace == expected_tag


def test_bt709_clip_read_as_bt601_would_be_visibly_wrong(tmp_path):
    """The colour test above can fail: decoding the BT.709 clip with the BT.601 matrix moves the
    channel means by several levels."""
    src = make_clip(tmp_path / "c.mkv", n=2, size=(320, 180), options={"crf": "4"})
    truth = pattern(0, 320, 180).astype(float)
    right = decode(src)[0].astype(float)
    with av.open(str(src)) as c:
        f = next(c.decode(video=0))
        wrong = f.to_ndarray(format="rgb24", src_colorspace="ITU601").astype(float)
    assert np.abs(right - truth).mean() < 1.5
    assert np.abs(wrong - truth).mean() > 5
    assert np.abs((wrong - truth).reshape(-1, 3).mean(0)).max() > 1.5


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_is_applied_and_the_output_is_upright(tmp_path, rotation):
    src = make_clip(tmp_path / "phone.mp4", n=5, size=(96, 64), rotation=rotation)
    source = VideoSource(src)
    k = (rotation // 90) % 4
    assert source.info.rotation == k * 90
    frames = [f.image for f in source]
    assert frames[0].shape == np.rot90(pattern(0, 96, 64), k).shape
    assert np.abs(frames[0].astype(int) - np.rot90(pattern(0, 96, 64), k)).mean() < 3
    # OpenCV applies the display matrix too: both agree on which way is up.
    ok, cv_frame = cv2.VideoCapture(str(src)).read()
    assert ok and np.abs(frames[0].astype(int) - cv_frame[..., ::-1]).mean() < 3
    _, report = passthrough(src, tmp_path / "upright.mp4")
    assert report.ok
    with av.open(str(tmp_path / "upright.mp4")) as c:
        f = next(c.decode(video=0))
        assert (f.width, f.height) == (frames[0].shape[1], frames[0].shape[0]) and not f.rotation
    assert "rotated" in " ".join(report.notes)


def test_odd_sizes_are_padded_to_even(tmp_path):
    src = make_clip(tmp_path / "odd.mkv", n=4, size=(81, 61), pix_fmt="yuv444p")
    _, report = passthrough(src, tmp_path / "odd_out.mp4")
    assert report.ok
    out = decode(tmp_path / "odd_out.mp4")
    assert out[0].shape == (62, 82, 3)
    assert np.abs(out[0][:61, :81].astype(int) - decode(src)[0]).mean() < 3
    assert any("padded to 82x62 (4:2:0 needs even sizes)" in n for n in report.notes)


# ------------------------------------------------------------------------------------------------
# Audio and subtitles into other containers


def test_audio_mp4_cannot_take_is_reencoded_and_subtitles_converted(tmp_path):
    subs = [(100, 500, "Hello"), (600, 900, "World")]
    src = make_clip(tmp_path / "in.mkv", n=25, size=(64, 48), audio="pcm_s16le", subtitles=subs)
    _, report = passthrough(src, tmp_path / "out.mp4")
    assert report.ok
    streams, _ = stream_info(tmp_path / "out.mp4")
    assert streams == [("video", "h264"), ("audio", "aac"), ("subtitle", "mov_text")]
    with av.open(str(tmp_path / "out.mp4")) as c:
        cues = [(round(float(p.pts * p.time_base), 3), round(float(p.duration * p.time_base), 3),
                 [s.dialogue for s in p.decode()])
                for p in c.demux(subtitles=0) if p.size]
        audio = c.streams.audio[0]
        assert abs(float(audio.duration * audio.time_base) - 1.0) < 0.05
    assert [(t, d, x) for t, d, x in cues if x] == [(0.1, 0.4, [b"Hello"]), (0.6, 0.3, [b"World"])]
    notes = "\n".join(report.notes)
    assert "audio: pcm_s16le 48 kHz mono re-encoded to AAC" in notes
    assert "subtitle: subrip converted to mov_text" in notes
    # Matroska takes both as they are: copied packet for packet.
    _, report = passthrough(src, tmp_path / "out.mkv")
    assert stream_info(tmp_path / "out.mkv")[0] == [("video", "h264"), ("audio", "pcm_s16le"), ("subtitle", "subrip")]
    assert [b for _, b in packets(tmp_path / "out.mkv", "audio")] == [b for _, b in packets(src, "audio")]
    assert [b for _, b in packets(tmp_path / "out.mkv", "subtitles")] == [b for _, b in packets(src, "subtitles")]


def test_no_audio_drops_audio_and_subtitles(tmp_path, bundle_path):
    src = make_clip(tmp_path / "in.mkv", n=8, size=(64, 48), audio="aac", subtitles=[(0, 200, "x")])
    out = tmp_path / "silent.mp4"
    res = run("--model", bundle_path, "--video", src, "--out", out, "--mask", "--aligned", "--no-audio")
    assert res.exit_code == 0, res.output
    assert stream_info(out)[0] == [("video", "h264")]
    assert "not copied: audio aac (--no-audio)" in res.output and "not copied: subtitle subrip (--no-audio)" in res.output


def test_mpegts_start_offset_and_adts_audio(tmp_path):
    """MPEG-TS: timestamps that do not start at 0, AAC in ADTS form (MP4 needs it converted,
    which the muxer does on the packets). Video and audio keep their relative timing."""
    src = make_clip(tmp_path / "broadcast.ts", n=25, size=(64, 48), audio="aac", audio_start=1.96,
                    container_options={"mpegts_copyts": "1"}, pts=list(range(50, 75)))
    with av.open(str(src)) as c:
        assert c.start_time > 1_000_000
    _, report = passthrough(src, tmp_path / "out.mp4")
    assert report.ok
    v_in, v_out = frame_times(src), frame_times(tmp_path / "out.mp4")
    a_in, a_out = packets(src, "audio"), packets(tmp_path / "out.mp4", "audio")
    assert v_out[0] < 0.1  # the output starts at 0 ...
    assert (v_out[0] - a_out[0][0]) == pytest.approx(v_in[0] - a_in[0][0], abs=1e-3)  # ... in sync
    assert np.diff(v_out) == pytest.approx(np.diff(v_in), abs=1e-6)


# ------------------------------------------------------------------------------------------------
# Codecs, GPU encoder fallback, output checks


@pytest.mark.parametrize("codec, name", [("hevc", "hevc"), ("av1", "libdav1d"), ("mpeg4", "mpeg4")])
def test_other_codecs(tmp_path, codec, name):
    src = make_clip(tmp_path / "in.mkv", n=6, size=(64, 48))
    _, report = passthrough(src, tmp_path / f"out_{codec}.mp4", codec=codec, preset="ultrafast")
    assert report.ok
    assert stream_info(tmp_path / f"out_{codec}.mp4")[1].name in (name, codec)
    assert len(decode(tmp_path / f"out_{codec}.mp4")) == 6


def test_nvenc_falls_back_to_the_cpu_encoder_with_a_note(tmp_path):
    src = make_clip(tmp_path / "in.mkv", n=4, size=(64, 48))
    source = VideoSource(src)
    sink = VideoSink(tmp_path / "out.mp4", source.info, source=source, config=VideoOutputConfig(nvenc=True))
    if sink.encoder == "h264_nvenc":  # a machine whose GPU has NVENC: nothing to fall back from
        pytest.skip("h264_nvenc opened here: the fallback is not exercised")
    assert sink.encoder == "libx264"
    assert re.match(r"h264_nvenc \(GPU encoder\) did not open \(.+\); encoded on the CPU with libx264", sink._notes[0])
    for f in source:
        sink.write(f, f.image)
    notes = sink.finish(commit=True)
    assert notes[0].startswith("h264_nvenc (GPU encoder) did not open")
    assert stream_info(tmp_path / "out.mp4")[1].name == "h264"
    never = VideoSink(tmp_path / "out2.mp4", source.info, config=VideoOutputConfig(nvenc=False))
    assert never.encoder == "libx264" and never._notes == []


class _FullDisk:
    """The output container, with every mux failing as FFmpeg's does on a full disk."""

    def __init__(self, out, fail_after: int):
        self._o, self.left = out, fail_after

    def mux(self, packets):
        import errno

        import av

        if self.left <= 0:
            raise av.error.OSError(errno.ENOSPC, "No space left on device")
        self.left -= 1
        return self._o.mux(packets)

    def __getattr__(self, name):
        return getattr(self._o, name)


@pytest.mark.parametrize("when", ["encoding", "finishing"])
def test_a_full_disk_is_the_same_one_line_wherever_ffmpeg_meets_it(tmp_path, when):
    """Which FFmpeg call first writes depends on the encoder's buffering (the preset, the frame
    size): the error must not."""
    from cyclemask.errors import OutputError

    src = make_clip(tmp_path / "in.mkv", n=12, size=(64, 48))
    source = VideoSource(src)
    out = tmp_path / "out.mp4"
    sink = VideoSink(out, source.info, source=source)
    frames_in = list(source)
    sink.write(frames_in[0], frames_in[0].image)
    sink._out = _FullDisk(sink._out, fail_after=0 if when == "encoding" else 10**6)
    with pytest.raises(OutputError, match=r"out\.mp4: cannot write \(No space left on device, ENOSPC\)"):
        for f in frames_in[1:]:
            sink.write(f, f.image)
        sink._out.left = 0
        sink.finish(commit=True)
    sink.finish(commit=False)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_output_config_and_container_checks(tmp_path):
    with pytest.raises(ConfigError, match="codec must be one of h264, hevc, av1, mpeg4"):
        VideoOutputConfig(codec="vp9")
    with pytest.raises(ConfigError, match=r"--crf for mpeg4 must be an integer in \[1, 31\]"):
        VideoOutputConfig(codec="mpeg4", crf=40)
    with pytest.raises(ConfigError, match="preset must be one of"):
        VideoOutputConfig(preset="warp")
    info = vid.VideoInfo(25.0, 0, 64, 48)
    with pytest.raises(InputError, match=r"a \.avi file cannot hold HEVC; use \.mp4 or \.mkv"):
        VideoSink(tmp_path / "x.avi", info, config=VideoOutputConfig(codec="hevc"))
    with pytest.raises(InputError, match="needs one of the suffixes .mp4, .m4v, .mov, .mkv, .avi"):
        VideoSink(tmp_path / "x.webm", info)


def test_staged_file_is_the_shared_partial_of_this_run(tmp_path):
    target = tmp_path / "talk_mask.mp4"
    p = partial_path(target)
    assert p.name == f".talk_mask.{run_id()}.partial.mp4" and p.parent == tmp_path
    src = make_clip(tmp_path / "in.mkv", n=3, size=(64, 48))
    source = VideoSource(src)
    sink = VideoSink(target, source.info, source=source)
    frames = list(source)
    sink.write(frames[0], frames[0].image)
    staged = [q for q in tmp_path.iterdir() if PARTIAL_RE.match(q.name)]
    assert len(staged) == 1 and PARTIAL_RE.match(staged[0].name)["name"] == "talk_mask" and not target.exists()
    sink.finish(commit=False)
    assert not staged[0].exists() and not target.exists()


# ------------------------------------------------------------------------------------------------
# Live inputs


class _SlowStream(http.server.BaseHTTPRequestHandler):
    """Serves one file in small pieces, like a camera that sends as it records."""

    data = b""
    pause = 0.004

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "video/x-matroska")
        self.end_headers()
        try:
            for i in range(0, len(self.data), 1024):
                self.wfile.write(self.data[i:i + 1024])
                self.wfile.flush()
                time.sleep(self.pause)
        except (BrokenPipeError, ConnectionResetError):  # the reader hung up: a stop
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def stream_url(tmp_path):
    clip = make_clip(tmp_path / "camera.mkv", n=60, size=(64, 48), audio="aac")
    handler = type("Handler", (_SlowStream,), {"data": clip.read_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cams/front.mkv"
    server.shutdown()


def test_http_stream_is_read_to_its_end(tmp_path, bundle_path, stream_url):
    out = tmp_path / "front_out.mp4"
    res = run("--model", bundle_path, "--video", stream_url, "--out", out, "--mask", "--aligned")
    assert res.exit_code == 0, res.output
    assert f"input:   {stream_url} (64x48, 25 fps, h264, live, audio aac)" in res.output
    assert len(decode(out)) == 60 and len(packets(out, "audio")) > 0
    assert "failed:   0" in res.output


def test_ctrl_c_on_a_live_stream_keeps_a_playable_file(tmp_path, bundle_path, stream_url, monkeypatch):
    real_write = VideoSink.write

    def write_then_interrupt(self, frame, image):
        real_write(self, frame, image)
        if self.frames_written == 8:
            _thread.interrupt_main()

    monkeypatch.setattr(VideoSink, "write", write_then_interrupt)
    monkeypatch.chdir(tmp_path)
    res = run("--model", bundle_path, "--video", stream_url, "--mask", "--aligned", "--batch", "2")
    assert res.exit_code == 0, res.output
    out = tmp_path / "front_mask.mp4"  # a stream's default output goes to the current folder
    n = len(decode(out))
    assert 8 <= n < 60 and f"written:  {n} " in res.output
    assert "live input ended by Ctrl-C" in res.output
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


class _StalledLiveSource(Source):
    """A live input that delivers `n` frames and then blocks in a read, like a camera that went
    quiet with its connection open; stop_reading() cannot end that read."""

    live = True
    total = None

    def __init__(self, n: int) -> None:
        self.n, self.release, self.stops, self.closed = n, threading.Event(), 0, False

    def describe(self):
        return "a camera gone quiet"

    def __iter__(self):
        from cyclemask.engine.sources import Frame

        for i in range(self.n):
            yield Frame(i, f"frame {i}", np.full((8, 8, 3), i, np.uint8))
        self.release.wait(30)

    def stop_reading(self):
        self.stops += 1

    def close(self):
        self.closed = True


class _KeepingSink(Sink):
    fatal_write_errors = True

    def __init__(self, on_write):
        self.written, self.on_write, self.committed = 0, on_write, None

    def describe(self):
        return "a count"

    def write(self, frame, image):
        self.written += 1
        self.on_write(self.written)

    def finish(self, commit):
        self.committed = commit
        return []


def test_a_stalled_live_input_ends_on_a_second_ctrl_c_and_keeps_its_video():
    source = _StalledLiveSource(6)

    def on_write(n):
        if n == 6:  # everything the input gave is written; its reader now waits for more
            _thread.interrupt_main()
            threading.Timer(0.5, _thread.interrupt_main).start()

    sink = _KeepingSink(on_write)
    try:
        with IdentityBackend() as backend:
            t0 = time.perf_counter()
            report = run_pipeline(source, PassThroughProcessor(backend.image_size), backend, sink,
                                  PipelineConfig(batch_size=2))
        assert time.perf_counter() - t0 < 10  # a hang guard, not a timing
        assert source.stops == 1 and report.interrupted and sink.committed is True
        assert report.written == 6 and not source.closed  # its reader is still inside a read
    finally:
        source.release.set()


class _EndlessLiveSource(_StalledLiveSource):
    """A camera that keeps delivering frames until it is told to stop reading."""

    def __iter__(self):
        from cyclemask.engine.sources import Frame

        i = 0
        while not self.stops and not self.release.is_set():
            yield Frame(i, f"frame {i}", np.full((8, 8, 3), i % 256, np.uint8))
            i += 1
            time.sleep(0.002)


class _FileLikeSource(_EndlessLiveSource):
    live = False

    def __iter__(self):
        from cyclemask.engine.sources import Frame

        for i in range(40):
            yield Frame(i, f"frame {i}", np.full((8, 8, 3), i, np.uint8))


def _run_with_hang_guard(source, sink, seconds=20):
    """run_pipeline in the main thread (where a Ctrl-C lands), failing instead of hanging."""
    import signal

    def hung(signum, frame):
        raise TimeoutError(f"the run did not end within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        with IdentityBackend() as backend:
            return run_pipeline(source, PassThroughProcessor(backend.image_size), backend, sink,
                                PipelineConfig(batch_size=2))
    except KeyboardInterrupt:
        pytest.fail("a Ctrl-C while the stages started escaped the run without finishing its output")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        source.release.set()  # ends a reader left running, whatever happened
        for t in threading.enumerate():
            if t.name.startswith("cyclemask-"):
                t.join(5)


def _patch_start(monkeypatch, stage, then):
    real_start = threading.Thread.start

    def start(self):
        if self.name != stage:
            return real_start(self)
        then(real_start, self)

    monkeypatch.setattr(threading.Thread, "start", start)


@pytest.mark.parametrize("stage", ["cyclemask-decode", "cyclemask-infer", "cyclemask-write"])
def test_ctrl_c_while_the_stages_start_ends_a_live_input_as_a_ctrl_c_later_would(monkeypatch, stage):
    """Thread.start waits for the new thread to run; under load a Ctrl-C lands in that wait."""

    def start_then_interrupt(real_start, thread):
        real_start(thread)
        _thread.interrupt_main()
        time.sleep(0.05)  # the interrupt is due here, inside start() as far as the caller can tell

    _patch_start(monkeypatch, stage, start_then_interrupt)
    source, sink = _EndlessLiveSource(0), _KeepingSink(lambda n: None)
    report = _run_with_hang_guard(source, sink)
    assert "live input ended by Ctrl-C: everything read until then was written" in report.notes
    assert sink.committed is True and source.stops >= 1 and source.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("cyclemask-") and t.is_alive()]


@pytest.mark.parametrize("stage", ["cyclemask-decode", "cyclemask-write"])
def test_a_stage_that_cannot_start_stops_the_run_as_an_error_and_commits_nothing(monkeypatch, stage):
    def cannot(real_start, thread):
        raise RuntimeError("can't start new thread")

    _patch_start(monkeypatch, stage, cannot)
    sink = _KeepingSink(lambda n: None)
    report = _run_with_hang_guard(_FileLikeSource(0), sink)
    assert report.error == f"could not start the pipeline's {stage} thread: can't start new thread"
    assert sink.committed is False and not report.interrupted
    assert not [t for t in threading.enumerate() if t.name.startswith("cyclemask-") and t.is_alive()]


def test_named_pipe_input(tmp_path, bundle_path):
    clip = make_clip(tmp_path / "feed.ts", n=30, size=(64, 48), audio="aac")
    fifo = tmp_path / "feed.pipe"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as fh:
            data = clip.read_bytes()
            for i in range(0, len(data), 4096):
                fh.write(data[i:i + 4096])

    threading.Thread(target=feed, daemon=True).start()
    out = tmp_path / "feed_out.mp4"
    res = run("--model", bundle_path, "--video", fifo, "--out", out, "--mask", "--aligned")
    assert res.exit_code == 0, res.output
    assert len(decode(out)) == 30 and len(packets(out, "audio")) > 0


def test_default_outputs_leave_a_read_only_folder_alone(tmp_path, monkeypatch):
    from cyclemask.engine.sinks import default_images_out, default_video_out

    data, here = tmp_path / "data", tmp_path / "here"
    (data / "photos").mkdir(parents=True)
    (data / "talk.mp4").write_bytes(b"")
    here.mkdir()
    monkeypatch.chdir(here)
    assert default_video_out(data / "talk.mp4", "mask") == data.resolve() / "talk_mask.mp4"
    assert default_images_out(data / "photos", "mask") == data.resolve() / "photos_mask"
    data.chmod(0o555)  # as the shared data sets are: no write bit, which root would ignore
    try:
        assert default_video_out(data / "talk.mp4", "mask") == here.resolve() / "talk_mask.mp4"
        assert default_images_out(data / "photos", "unmask") == here.resolve() / "photos_unmask"
        # A run spread over machines must not fall back to this machine's current folder.
        with pytest.raises(InputError, match=r"data is read-only, so the output cannot go beside the input: give --out"):
            default_images_out(data / "photos", "mask", fallback=False)
        with pytest.raises(InputError, match="give --out"):
            default_video_out(data / "talk.mp4", "mask", fallback=False)
        # Working inside the input folder: the output must not land in it either.
        monkeypatch.chdir(data / "photos")
        assert default_images_out(data / "photos", "mask") == data.resolve() / "photos_mask"
        monkeypatch.chdir(here)
        here.chmod(0o555)  # nowhere better: the input's folder stays, and the write error names it
        assert default_video_out(data / "talk.mp4", "mask") == data.resolve() / "talk_mask.mp4"
    finally:
        data.chmod(0o755)
        here.chmod(0o755)


def test_input_place_names_outputs_of_streams_and_devices(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert vid.input_place("rtsp://cam.local:554/live/stream1?x=1") == (tmp_path, "stream1")
    assert vid.input_place("http://10.0.0.2/") == (tmp_path, "10.0.0.2")
    assert vid.input_place(tmp_path / "a" / "talk.mov") == ((tmp_path / "a").resolve(), "talk")
    assert vid.is_live("udp://0.0.0.0:1234") and not vid.is_live(tmp_path / "talk.mov")


# ------------------------------------------------------------------------------------------------
# Memory on a long input


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS is read from /proc (Linux)")
def test_memory_stays_flat_over_a_ten_minute_clip(tmp_path):
    fps, minutes = 10, 10
    n = fps * 60 * minutes
    frames = [pattern(i, 64, 48) for i in range(50)]
    src = make_clip(tmp_path / "long.mkv", n=n, fps=fps, size=(64, 48), audio="aac",
                    frames=lambda i: frames[i % 50])
    source = VideoSource(src)
    sink = VideoSink(tmp_path / "long_out.mp4", source.info, source=source,
                     config=VideoOutputConfig(preset="ultrafast"))
    rss = {}
    done = [0]

    def progress(k):
        done[0] += k
        if done[0] == fps * 60:
            rss["1 min"] = _rss_mb()

    with IdentityBackend() as backend:
        report = run_pipeline(source, PassThroughProcessor(backend.image_size), backend, sink,
                              PipelineConfig(batch_size=8), progress=progress)
    rss["end"] = _rss_mb()
    print(f"RSS after 1 minute of video {rss['1 min']:.1f} MB, after {minutes} minutes {rss['end']:.1f} MB")
    assert report.ok and report.written == n
    assert rss["end"] - rss["1 min"] <= 50, rss
    assert len(packets(tmp_path / "long_out.mp4", "audio")) > minutes * 60 * 40


def test_the_video_package_keeps_the_old_module_names_and_small_parts():
    """engine/video.py became a package: every name other code imported from it must still come
    from `cyclemask.engine.video`, placement has one home, and no part grows back to a monolith."""
    from pathlib import Path

    from cyclemask.engine import sinks
    from cyclemask.engine.video import placement

    names = {"CODECS", "CODEC_LABELS", "CONTAINERS", "CRF_RANGE", "DEFAULT_CRF", "DEFAULT_PRESET", "PRESETS",
             "URL_SCHEMES", "VIDEO_SUFFIXES", "VideoInfo", "VideoOutputConfig", "VideoSink", "VideoSource",
             "input_place", "is_live", "is_url", "output_folder_near", "writable_place"}
    assert names <= set(vid.__all__) and all(hasattr(vid, n) for n in vid.__all__)
    assert sinks.video_output_path is placement.video_output_path is vid.video_output_path
    assert sinks.default_video_out is placement.default_video_out
    assert sinks.output_folder_near is placement.output_folder_near
    lines = {p.name: len(p.read_text().splitlines()) for p in Path(vid.__file__).parent.glob("*.py")}
    assert {"reader.py", "writer.py", "formats.py", "placement.py"} <= set(lines)
    assert max(lines.values()) < 400, lines


def test_importing_the_cli_does_not_load_ffmpeg():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, cyclemask.engine.cli, cyclemask.engine.sinks, "
                          "cyclemask.engine.sources; print('av' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
