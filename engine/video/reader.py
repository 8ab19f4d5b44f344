"""Reading a video (`VideoSource`): a file, a capture device, a stream URL or a named pipe,
decoded by FFmpeg into RGB frames with their timestamps.

- Frames are counted by decoding. A container's own frame count serves only as a check, and only
  where the container stores one (MP4, MOV, AVI): fewer packets than it declares means a cut-off
  file. Durations are never used to count (Matroska recordings often overstate theirs).
- A damaged or cut-off file gives every frame up to the damage, and the damage is reported (the
  run exits 1). Something that is not a video (an image, text, audio only, no streams at all) is
  refused with one line.
- Rotation metadata (the display matrix of a phone video shot upright) is applied to the
  frames: the face detector and the model see upright faces, and the output is written upright
  with no matrix, so it shows the same in every player.
- Colour: YUV is converted with the matrix the stream is tagged with (BT.709, BT.601, BT.2020,
  ...) and its range (limited or full). An untagged stream gets what players assume: BT.601 for
  JPEG-style full range and for SD sizes, BT.709 from 1280 wide or over 576 lines. swscale's
  accurate path is used both ways: its fast YUV -> RGB path is biased dark by about 1 level.
- Timestamps: every frame keeps its pts (variable frame rate stays variable); all streams are
  shifted by the same amount so the output starts at 0, as ffmpeg does.
- Audio and subtitle packets ride along with the frames (carry.py).

Live inputs (a capture device, a stream URL, a named pipe) have no end of their own:
`stop_reading()` ends one normally, the pipeline drains what was read, and the writer finalises
a playable file.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import threading
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from cyclemask.errors import ConfigError, InputError

from ..contracts import Frame, Source
from ._ffmpeg import _av, _codec_name, _frac, _reason
from .carry import CarriedInput
from .formats import _UNSPECIFIED, VideoInfo, _colour
from .placement import is_url

log = logging.getLogger(__name__)


class VideoSource(Source):
    """Frames of a video file, capture device, stream URL or named pipe, decoded by FFmpeg, as
    RGB, with their timestamps; audio and subtitle packets travel with them (`carry`).

    `problems` lists what went wrong while reading (the run counts them as failures); `notes`
    what a user should know. Not thread-safe: iterate from one thread at a time.
    """

    kind = "video"

    def __init__(self, spec: str | os.PathLike, *, open_timeout: float = 15.0,
                 read_timeout: float = 15.0) -> None:
        av = _av()
        self.spec = os.fspath(spec)
        self.url = is_url(self.spec)
        self.path: Path | None = None if self.url else Path(self.spec)
        device = fifo = False
        if self.path is not None:
            p = self.path
            if not p.exists():
                raise InputError(f"{p}: no such video file")
            if p.is_dir():
                raise InputError(f"{p}: is a folder (use --images for a folder of images)")
            if not os.access(p, os.R_OK):
                raise InputError(f"{p}: cannot read file (permission denied)")
            mode = os.stat(p).st_mode
            device, fifo = stat.S_ISCHR(mode), stat.S_ISFIFO(mode)
            if stat.S_ISREG(mode) and os.path.getsize(p) == 0:
                raise InputError(f"{p}: is empty (0 bytes), not a video")
        self.live = self.url or device or fifo
        fmt = "v4l2" if device and sys.platform.startswith("linux") else None
        options = {"rtsp_transport": "tcp"} if self.spec.lower().startswith("rtsp") else {}
        try:
            container = av.open(self.spec, "r", format=fmt, options=options,
                                timeout=(open_timeout, read_timeout) if self.live else None)
        except av.FFmpegError as exc:
            raise InputError(f"{self.spec}: cannot open as a video ({_reason(exc)})") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.spec}: cannot open as a video ({exc})") from None
        try:
            self._setup(av, container)
        except BaseException:
            container.close()
            raise

    def _setup(self, av, container) -> None:
        self._container = container
        label = self.spec
        fmt_name = container.format.name
        attached = av.stream.Disposition.attached_pic
        videos = [s for s in container.streams.video if not (s.disposition & attached)]
        if fmt_name == "tty":  # FFmpeg shows a .txt file as ANSI art
            raise InputError(f"{label}: is a text file, not a video")
        if fmt_name == "image2" or fmt_name.endswith("_pipe") or (
                fmt_name in ("gif", "apng", "webp") and videos and videos[0].frames <= 1):
            codec = videos[0].codec_context.name if videos else fmt_name
            raise InputError(f"{label}: is an image ({codec}), not a video (--images takes a folder of images)")
        if not videos:
            held = [f"{s.type} ({_codec_name(s)})" for s in container.streams if s.type != "video"]
            if any(s.disposition & attached for s in container.streams.video):
                held.append("a cover picture")
            raise InputError(f"{label}: has no video stream ("
                             + (f"it holds only {', '.join(held)}" if held else "it holds no streams at all") + ")")
        best = container.streams.best("video")
        vs = best if best in videos else videos[0]
        vs.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with the model
        self._vs = vs
        self.extra_streams = [s for s in container.streams if s is not vs]
        self._carried = CarriedInput()  # the other streams' packets, handed out with the frames
        self._stop = threading.Event()
        self._used = False
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.frames_read = 0
        self._packets = 0  # video packets with data
        self._corrupt = 0
        self._decode_errors = 0
        self._first_decode_error: str | None = None
        self._demux_errors: list[str] = []
        self._read_error: str | None = None
        self._resized = 0
        self._capture = None
        self._capture_thread = None
        self._reading = False  # a read of the input is under way (on the reading thread)
        from av.video.reformatter import Interpolation, VideoReformatter

        self._reformatter = VideoReformatter()
        self._interp = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
        start = container.start_time  # microseconds; None when unknown
        self._start = Fraction(start, 1_000_000) if start else Fraction(0)
        self._reader = self._decoded()
        try:
            first = next(self._reader)
        except StopIteration:
            why = self._read_error or self._first_decode_error
            why = f" ({why})" if why else ""
            raise InputError(f"{label}: the video has no frames{why}") from None
        self._first = first
        rot = int(first.rotation or 0)
        if rot % 90:
            self.notes.append(f"{label}: rotation metadata of {rot} degrees is not a multiple of 90; ignored")
            rot = 0
        self._k = (rot // 90) % 4
        self._size = (first.width, first.height)
        matrix, tag, full = _colour(vs, first)
        self._matrix = matrix
        w, h = (first.height, first.width) if self._k % 2 else (first.width, first.height)
        rate = _frac(vs.average_rate) or _frac(vs.guessed_rate) or _frac(vs.base_rate)
        fps = float(rate) if rate else 0.0
        self.info = VideoInfo(
            fps=fps, frame_count=0 if self.live else max(int(vs.frames or 0), 0), width=w, height=h,
            time_base=_frac(vs.time_base) or (Fraction(1, round(fps)) if fps else Fraction(1, 25)),
            rotation=self._k * 90, codec=vs.codec_context.name, matrix=matrix, colorspace=tag,
            color_primaries=first.color_primaries or _UNSPECIFIED, color_trc=first.color_trc or _UNSPECIFIED,
            full_range=full, live=self.live)

    # -- what the sink asks for ---------------------------------------------------------------
    def carry(self, plan: dict[int, str]) -> None:
        """Which other streams travel with the frames: index -> "packet" (copied as it is),
        "audio" (decoded here, re-encoded by the writer) or "subtitle" (decoded here, converted by
        the writer). Streams not named are dropped. Call before iterating."""
        by_index = {s.index: s for s in self.extra_streams}
        for index, kind in plan.items():
            if index not in by_index or kind not in ("packet", "audio", "subtitle"):
                raise ConfigError(f"cannot carry stream {index} as {kind!r}")
            if kind == "subtitle":
                # Opening the decoder makes its subtitle header (styles) known to the writer.
                by_index[index].codec_context.open(strict=False)
        self._carried.plan = dict(plan)

    def stream(self, index: int):
        if getattr(self, "_container", None) is None:
            raise InputError(f"{self.spec}: the input is closed")
        for s in self.extra_streams:
            if s.index == index:
                return s
        raise ConfigError(f"{self.spec}: no stream {index}")

    def subtitle_header(self, index: int) -> bytes | None:
        return self.stream(index).codec_context.subtitle_header

    def stop_reading(self) -> None:
        """End a live input now (safe from any thread): the frames read so far still come out."""
        self._stop.set()  # seen before the next packet is read (a stalled stream: within the read timeout)

    # -- the frames -------------------------------------------------------------------------------
    @property
    def total(self) -> int | None:
        return self.info.frame_count or None

    @property
    def name(self) -> str:
        return str(self.path or self.spec)

    def describe(self) -> str:
        i = self.info
        bits = [f"{i.width}x{i.height}", f"{i.fps:g} fps" if i.fps else "frame rate unknown", i.codec]
        if i.rotation:
            bits.append(f"rotated {i.rotation} degrees to upright")
        bits.append("live" if self.live else (f"{i.frame_count} frames declared" if i.frame_count else "frame count not stored"))
        others = [f"{s.type} {_codec_name(s)}" for s in self.extra_streams if s.type in ("audio", "subtitle")]
        if others:
            bits.append(", ".join(others))
        return f"{self.spec} ({', '.join(bits)})"

    def __iter__(self) -> Iterator[Frame]:
        if self._used or getattr(self, "_container", None) is None:
            raise InputError(f"{self.spec}: a video source can be read once")
        self._used = True
        held, i = self._first, 0
        self._first = None
        # The input stays open until close(): the writer copies its streams' parameters when it
        # starts, which may be after the last frame was read.
        for nxt in self._reader:
            yield self._frame(i, held, self._carried.take(self._offset, self.stream))
            i += 1
            self.frames_read = i
            held = nxt
        yield self._frame(i, held, self._carried.take(self._offset, self.stream, final=True))
        self.frames_read = i + 1
        self._report()

    def _frame(self, i: int, vf, carried: list) -> Frame:
        if (vf.width, vf.height) != self._size:
            # A stream that changes resolution mid-way (live streams do) is scaled back to the size
            # it started at: one video has one size.
            vf = self._reformatter.reformat(vf, width=self._size[0], height=self._size[1])
            self._resized += 1
        rgb = self._reformatter.reformat(vf, format="rgb24", src_colorspace=self._matrix,
                                         interpolation=self._interp).to_ndarray()
        if self._k:
            rgb = np.ascontiguousarray(np.rot90(rgb, self._k))
        tb = _frac(vf.time_base)
        pts = None if vf.pts is None else vf.pts - self._offset(tb)
        meta = {"pts": pts, "time_base": tb, "duration": vf.duration or None, "carry": carried}
        return Frame(i, f"frame {i}", rgb, meta=meta)

    def _offset(self, time_base: Fraction | None) -> int:
        return int(round(self._start / time_base)) if self._start and time_base else 0

    def _next_packet(self, av, packets):
        """The next packet, with the demuxer's error log lines of this read kept (the decoder
        logs on its own threads and is not captured)."""
        tid = threading.get_ident()
        if self._capture_thread != tid:
            self._capture, self._capture_thread = av.logging.Capture(local=True), tid
        with self._capture as lines:
            self._reading = True
            try:
                return next(packets)
            finally:
                self._reading = False
                if lines:
                    for level, name, message in lines:
                        if level <= av.logging.ERROR and len(self._demux_errors) < 5:
                            self._demux_errors.append(f"{name}: {message.strip()}" if name else message.strip())
                    lines.clear()

    def _decoded(self):
        """Video frames in presentation order; other packets are put aside for the frames to carry."""
        av = _av()
        vs = self._vs
        packets = self._container.demux()
        stopped = False
        while True:
            if self._stop.is_set():
                stopped = True
                break
            try:
                packet = self._next_packet(av, packets)
            except StopIteration:
                break
            except av.FFmpegError as exc:
                if self._stop.is_set():  # the read was cut short on purpose
                    stopped = True
                else:
                    self._read_error = _reason(exc)
                break
            if packet.stream is not vs:
                if packet.size:
                    self._carried.put(packet)
                continue
            if packet.size:
                self._packets += 1
                self._corrupt += int(packet.is_corrupt)
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                # One undecodable packet costs its frame; the decoder picks up at the next one.
                self._decode_errors += 1
                self._first_decode_error = self._first_decode_error or _reason(exc)
                continue
            yield from frames
        if stopped or self._read_error:
            try:  # the frames still inside the decoder
                yield from vs.decode(None)
            except av.FFmpegError:
                pass

    def _report(self) -> None:
        n, label = self.frames_read, self.spec
        if self._resized:
            self.notes.append(f"{label}: {self._resized} frames came in another size and were scaled "
                              f"to {self._size[0]}x{self._size[1]}")
        if self._carried.errors:
            self.notes.append(f"{label}: {self._carried.errors} audio or subtitle packets could not be decoded and were left out")
        damage = []
        if self._read_error:
            damage.append(f"reading failed: {self._read_error}")
        if self._decode_errors:
            k = self._decode_errors
            damage.append(f"{k} packet{'s' if k > 1 else ''} could not be decoded ({self._first_decode_error})")
        if self._corrupt:
            damage.append(f"{self._corrupt} packet{'s are' if self._corrupt > 1 else ' is'} marked damaged")
        damage += self._demux_errors[:1]
        declared = self.info.frame_count
        short = bool(declared) and self._packets < declared and not self._stop.is_set()
        if not damage and not short:
            return
        if self.live:
            # Live streams lose packets now and then, and end by closing the connection (which
            # FFmpeg reports as an error): what arrived was written, and that is the video.
            self.notes.append(f"{label}: the stream ended after {n} frames ({'; '.join(damage)})"
                              if self._read_error else f"{label}: {'; '.join(damage)}")
            return
        head = f"{label}: decoded {n} frames" + (f" of the {declared} the container declares" if short else "")
        self.problems.append(f"{head}{''.join('; ' + d for d in damage)} (a truncated or damaged file?)")

    def close(self) -> None:
        c = getattr(self, "_container", None)
        if c is not None and getattr(self, "_reading", False) and threading.get_ident() != self._capture_thread:
            # Another thread is blocked in a read of a live input that was abandoned: closing the
            # input under it would pull the memory from under FFmpeg. The process ends instead.
            return
        if c is not None:
            self._container = None
            self._reader = iter(())
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a broken input must not hide why it broke
                log.debug("closing %s failed", self.spec, exc_info=True)
