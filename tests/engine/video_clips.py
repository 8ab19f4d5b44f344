"""Small video clips made with PyAV inside the tests: known pixels, known timestamps, a sine tone,
subtitles, rotation and colour tags; and a backend that returns its input (with
PassThroughProcessor the model never runs, so only the video I/O acts on the pixels)."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import numpy as np

from cyclemask.engine.backends import SyncBackend

ASS_HEADER = (
    "[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, "
    "Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, "
    "Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    "Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
).encode()


def pattern(i: int, width: int, height: int, bar: bool = True) -> np.ndarray:
    """Smooth, saturated colour gradients (a 601/709 mix-up moves them by many levels) with a
    bar that moves with the frame index (every frame differs; its sharp edges are where 4:2:0
    chroma loses most, so colour measurements leave it out)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    img = np.stack([40 + 180 * u, 200 - 150 * v, 60 + 150 * (1 - u) * v], axis=-1)
    if bar:
        img[np.abs(x - (i * 7) % width) < 3] = (230, 230, 40)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_clip(path: Path, n: int = 24, size: tuple[int, int] = (96, 64), fps: int = 25, *,
              fmt: str | None = None, codec: str = "libx264", pix_fmt: str = "yuv420p",
              options: dict | None = None, container_options: dict | None = None,
              matrix: str = "ITU709", tag: int | None = 1, full_range: bool = False,
              pts: list[int] | None = None, time_base: Fraction | None = None,
              audio: str | None = None, audio_seconds: float | None = None, audio_start: float = 0.0,
              subtitles: list[tuple[int, int, str]] | None = None, rotation: int | None = None,
              frames=None) -> Path:
    """A clip of n frames of `pattern` (or frames(i)); timestamps `pts` in `time_base` (default
    i in 1/fps). `tag` is the AVColorSpace written (None: untagged); `matrix` converts RGB.
    audio: "aac" | "pcm_s16le" | None, a 440 Hz sine for the video's length (or audio_seconds),
    starting at audio_start seconds.
    subtitles: (start ms, end ms, text) as SubRip."""
    import av

    w, h = size
    tb = time_base or Fraction(1, fps)
    stamps = pts if pts is not None else list(range(n))
    out = av.open(str(path), "w", format=fmt, container_options=container_options or {})
    v = out.add_stream(codec, rate=fps, options={"preset": "ultrafast", "crf": "12", **(options or {})}
                       if codec.startswith("libx26") else (options or {}))
    v.width, v.height, v.pix_fmt = w, h, pix_fmt
    v.codec_context.time_base = tb
    if tag is not None:
        v.codec_context.colorspace = tag
        v.codec_context.color_primaries = 1 if tag == 1 else 6
        v.codec_context.color_trc = 1 if tag == 1 else 6
    v.codec_context.color_range = 2 if full_range else 1
    if rotation is not None:
        v.set_display_rotation(rotation)
    a = None
    if audio:
        a = out.add_stream(audio, rate=48000)
        a.layout = "mono"
    s = None
    if subtitles:
        s = out.add_stream("subrip")
        s.codec_context.subtitle_header = ASS_HEADER
        s.codec_context.time_base = Fraction(1, 1000)
    def audio_frames():
        seconds = audio_seconds if audio_seconds is not None else float((stamps[-1] + 1) * tb) - audio_start
        first = int(round(audio_start * 48000))
        total, chunk = int(seconds * 48000), 1024
        for k in range(0, total, chunk):
            t = np.arange(k, min(k + chunk, total)) / 48000
            x = 0.3 * np.sin(2 * np.pi * 440 * t)
            if audio == "pcm_s16le":
                af = av.AudioFrame.from_ndarray((x * 32767).astype(np.int16)[None], format="s16", layout="mono")
            else:
                af = av.AudioFrame.from_ndarray(x.astype(np.float32)[None], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, first + k, Fraction(1, 48000)
            yield af

    def subtitle_packets():
        for j, (start, end, text) in enumerate(subtitles or ()):
            sub = av.subtitles.subtitle.SubtitleSet.create(f"{j},0,Default,,0,0,0,,{text}".encode(), 0, end - start, start)
            p = s.codec_context.encode_subtitle(sub)
            p.stream, p.time_base = s, Fraction(1, 1000)
            p.pts = p.dts = start
            p.duration = end - start
            yield p

    # Interleaved as a recorder writes: each stream's data up to the time of the next frame.
    pending_audio = audio_frames() if a is not None else iter(())
    pending_subs = subtitle_packets()
    next_audio, next_sub = next(pending_audio, None), next(pending_subs, None)
    for i in range(n + 1):
        until = float(stamps[i] * tb) if i < n else float("inf")
        while next_audio is not None and float(next_audio.pts / 48000) < until:
            out.mux(a.encode(next_audio))
            next_audio = next(pending_audio, None)
        while next_sub is not None and next_sub.pts / 1000 < until:
            out.mux(next_sub)
            next_sub = next(pending_subs, None)
        if i == n:
            break
        rgb = frames(i) if frames is not None else pattern(i, w, h)
        f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format=pix_fmt, dst_colorspace=matrix, dst_color_range=2 if full_range else 1)
        if tag is None:
            f.colorspace = 2
        f.pts, f.time_base = stamps[i], tb
        out.mux(v.encode(f))
    out.mux(v.encode(None))
    if a is not None:
        out.mux(a.encode(None))
    out.close()
    return path


def decode(path: Path) -> list[np.ndarray]:
    from cyclemask.engine.video import VideoSource

    return [f.image for f in VideoSource(path)]


def packets(path: Path, kind: str) -> list:
    """(pts seconds, bytes) of every packet with data of the first stream of that kind."""
    import av

    with av.open(str(path)) as c:
        st = getattr(c.streams, kind)[0]
        return [(float(p.pts * p.time_base), bytes(p)) for p in c.demux(st) if p.size]


def frame_times(path: Path) -> list[float]:
    import av

    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def set_matroska_duration(path: Path, seconds: float) -> None:
    """Overwrite the Segment Info Duration (EBML 0x4489, a float in the segment's ms units)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")
    if at >= 0:
        data[at + 3: at + 11] = struct.pack(">d", seconds * 1000.0)
    else:
        at = data.find(b"\x44\x89\x84")
        assert at >= 0, "no Duration element"
        data[at + 3: at + 7] = struct.pack(">f", seconds * 1000.0)
    path.write_bytes(bytes(data))


class IdentityBackend(SyncBackend):
    """Returns its input: with PassThroughProcessor it is never even called."""

    name = "identity"

    def __init__(self, size: int = 16) -> None:
        super().__init__(None, None)
        self._image_size = size

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _run(self, batch):
        return batch.copy()
