"""Video in and out through FFmpeg (PyAV): files, capture devices, stream URLs and named pipes
in; H.264 in MP4 (or another codec and container) out, with the sound and subtitles kept.

Reading (`VideoSource`)
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
- Audio and subtitle packets ride along with the frames (each frame carries those demuxed
  before the next frame decoded; the last frame carries the rest), so they reach the writer
  through the pipeline's bounded queues, in order, with no second reader.

Live inputs (a capture device, a stream URL, a named pipe) have no end of their own:
`stop_reading()` ends one normally, the pipeline drains what was read, and the writer finalises
a playable file.

Writing (`VideoSink`)
- H.264 yuv420p in MP4 with the index first (faststart) by default, through libx264 with a CRF
  and a preset; `--codec hevc | av1 | mpeg4`. Where an NVIDIA driver is present, NVENC is tried
  first, and a CPU encoder takes over with a note when it does not open.
- Audio and subtitle streams are copied packet for packet when the output container takes the
  codec; otherwise audio is re-encoded to AAC and text subtitles converted (mov_text in MP4,
  SubRip in Matroska); what cannot be carried (picture subtitles in MP4, data streams) is named
  in a note. The summary says which stream went which way.
- The file is written under a staged name beside the target (`cyclemask.outputs.create_partial`) and renamed into
  place when complete.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import stat
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cyclemask.errors import ConfigError, InputError
from cyclemask.imageio import FILE_MODE
from cyclemask.outputs import commit_partial, create_partial, discard_partial, output_error

from .sources import Frame

log = logging.getLogger(__name__)

# Schemes FFmpeg reads as live streams (no end of their own; a stop is the normal end).
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")

# Output suffix -> FFmpeg muxer.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
VIDEO_SUFFIXES = tuple(CONTAINERS)
#: Suffixes taken as videos when --video names a folder (FFmpeg reads many more; name a file
#: to run any other).
VIDEO_INPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".mts",
                        ".m2ts", ".flv", ".wmv", ".3gp")

# --codec -> (CPU encoder, NVENC encoder or None), and what the summary calls it.
CODECS = {
    "h264": ("libx264", "h264_nvenc"),
    "hevc": ("libx265", "hevc_nvenc"),
    "av1": ("libsvtav1", "av1_nvenc"),
    "mpeg4": ("mpeg4", None),
}
CODEC_LABELS = {"h264": "H.264", "hevc": "HEVC", "av1": "AV1", "mpeg4": "MPEG-4 Part 2"}
# The default quality: near-transparent for each encoder (x264 CRF 18, x265 about 4 higher for
# the same look, SVT-AV1's 0-63 scale; mpeg4 takes a quantiser, 1-31).
DEFAULT_CRF = {"h264": 18, "hevc": 22, "av1": 30, "mpeg4": 3}
CRF_RANGE = {"h264": (0, 51), "hevc": (0, 51), "av1": (1, 63), "mpeg4": (1, 31)}
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# x264 spends most of a CPU run at "medium" (1080p: 52 ms/frame against 30 for
# "veryfast", the generator ~9); at crf 18 the sample face clip looks the same
# (PSNR against the source 46.0 vs 44.6 dB) and came out 10% smaller.
DEFAULT_PRESET = "veryfast"
_SVT_PRESET = dict(zip(PRESETS, (12, 11, 10, 9, 8, 7, 5, 4, 2)))  # 0 slowest .. 13 fastest
_NVENC_PRESET = dict(zip(PRESETS, ("p1", "p1", "p2", "p3", "p3", "p4", "p5", "p6", "p7")))
# AVI cannot hold HEVC, and its AV1 support is not something players know.
_CONTAINER_CODECS = {"avi": ("h264", "mpeg4")}

# Audio copied into MP4 as it is: codecs MP4 registers and phones and browsers play. Anything
# else (PCM, Vorbis, ...) is re-encoded to AAC. MOV also takes PCM; Matroska takes everything.
_MP4_AUDIO = {"aac", "mp3", "opus", "flac", "alac", "ac3", "eac3"}
_AVI_AUDIO = {"mp3", "ac3", "pcm_s16le", "pcm_u8"}
_TEXT_SUBTITLES = {"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"}
_AAC_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}

# AVColorSpace (FFmpeg pixfmt.h) -> the swscale matrix that converts it.
_MATRICES = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020"}
_MATRIX_TAGS = {"ITU709": 1, "FCC": 4, "ITU601": 6, "SMPTE240M": 7, "BT2020": 9}
_UNSPECIFIED = 2
_RANGE_MPEG, _RANGE_JPEG = 1, 2


_logging_ready = False
_logging_lock = threading.Lock()


def _av():
    """PyAV, imported on first use, with FFmpeg's log set up once.

    FFmpeg explains its failures in log lines (PyAV appends the last one to its exceptions), but
    it is far too chatty to print: errors are kept for the exceptions and shown only with
    --debug. Encoders that log on their own (SVT-AV1) are asked for errors only.
    """
    global _logging_ready
    import av

    if not _logging_ready:
        with _logging_lock:
            if not _logging_ready:
                if av.logging.get_level() is None:
                    av.logging.set_level(av.logging.ERROR)
                    if not logging.getLogger().isEnabledFor(logging.DEBUG):
                        logging.getLogger("libav").setLevel(logging.CRITICAL)
                os.environ.setdefault("SVT_LOG", "1")
                _logging_ready = True
    return av


def _reason(exc: BaseException) -> str:
    """FFmpeg's message for an error, with its last log line, without PyAV's errno prefix."""
    msg = getattr(exc, "strerror", None) or str(exc)
    last = getattr(exc, "log", None)
    if last and len(last) == 3 and last[2] and last[2].strip() not in msg:
        msg = f"{msg}: {last[2].strip()}"
    return msg


# -------------------------------------------------------------------------------------------
# Names and places


def is_url(spec: str) -> bool:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", spec)
    return bool(m) and m.group(1).lower() in URL_SCHEMES


def is_live(spec: str | os.PathLike) -> bool:
    """A stream URL, a capture device or a named pipe: an input with no end of its own."""
    s = os.fspath(spec)
    if is_url(s):
        return True
    try:
        mode = os.stat(s).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def input_name(spec: str | os.PathLike) -> str:
    """The name outputs named after an input start with: a file's stem; for a URL a name taken
    from its path, for a device its name."""
    s = os.fspath(spec)
    if is_url(s):
        path = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", s).split("?")[0].rstrip("/")
        parts = [p for p in path.split("/") if p]
        raw = Path(parts[-1]).stem if len(parts) > 1 else (parts[0] if parts else "stream")
        return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._") or "stream"
    p = Path(s)
    return p.name if _is_device(p) else p.stem


def _is_device(p: Path) -> bool:
    return is_live(p) and str(p.resolve().parent).startswith("/dev")


def input_place(spec: str | os.PathLike, fallback: bool = True) -> tuple[Path, str]:
    """(folder, name) for outputs named after an input: a file's own folder and stem; for a URL
    or a device (whose folder is no place for outputs) the current folder and a name taken from
    the URL's path or the device."""
    s = os.fspath(spec)
    if is_url(s) or _is_device(Path(s)):
        return Path.cwd(), input_name(s)
    p = Path(s)
    return output_folder_near(p.resolve().parent, fallback=fallback), p.stem


def list_videos(folder: Path) -> list[Path]:
    """Video files under folder (recursive, sorted, hidden names skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_INPUT_SUFFIXES:
                found.append(Path(dirpath) / name)
    return sorted(found)


# Errors of the output file itself (a full disk, a quota, a size limit, no permission): they end
# the run with the one line every output error gets, whichever FFmpeg call met them first.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM})


def _output_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS


def writable_place(folder: Path) -> bool:
    """Whether default outputs may go into `folder`: this process may write there, and the folder
    is not marked read-only (no write bit for anyone: root could still write, but the owner of a
    data set made that way said not to)."""
    try:
        mode = os.stat(folder).st_mode
    except OSError:
        return False
    return bool(mode & 0o222) and os.access(folder, os.W_OK)


def output_folder_near(folder: Path, *, input_path: Path | None = None, fallback: bool = True) -> Path:
    """`folder`, or the current folder where `folder` is read-only and the current one is
    writable and not `input_path` or inside it. fallback=False (a run spread over machines, where
    the current folder exists on this one only): a read-only `folder` is an error asking for --out."""
    if not folder.is_dir() or writable_place(folder):
        return folder
    if not fallback:
        raise InputError(f"{folder} is read-only, so the output cannot go beside the input: give --out "
                         "(a folder every machine can write at the same path)")
    here = Path.cwd().resolve()
    in_input = input_path is not None and (here == input_path or input_path in here.parents)
    if writable_place(here) and not in_input:
        log.warning("%s is read-only: the output goes to the current folder %s instead (--out to choose)", folder, here)
        return here
    return folder


def _has_nvidia_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def _even(n: int) -> int:
    return n + (n & 1)


def _frac(r) -> Fraction | None:
    """A PyAV rational (a Fraction, or an AVRational in later PyAV) as a Fraction; None when
    unset."""
    if r is None:
        return None
    num, den = getattr(r, "numerator", None), getattr(r, "denominator", None)
    if num is None:
        num, den = r.num, r.den
    return Fraction(int(num), int(den)) if num and den else None


def _rescale(value: int, src: Fraction, dst: Fraction) -> int:
    return int(round(value * src / dst))


# -------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class VideoInfo:
    """What a sink needs to know about the video it writes (the frames' geometry and timing)."""

    fps: float
    frame_count: int  # what the container stores (MP4, MOV, AVI); 0 when it stores no count
    width: int  # of the frames as delivered: after rotation
    height: int
    time_base: Fraction | None = None  # of the input's timestamps (Frame.meta["pts"])
    rotation: int = 0  # degrees counter-clockwise applied to the decoded frames
    codec: str = ""
    matrix: str = "ITU601"  # the YUV <-> RGB matrix used to decode (and to encode again)
    colorspace: int = _UNSPECIFIED  # the AVColorSpace tag to write (unspecified: players guess as we did)
    color_primaries: int = _UNSPECIFIED
    color_trc: int = _UNSPECIFIED
    full_range: bool = False  # the input's range (the output is always limited range)
    live: bool = False


@dataclass(frozen=True)
class _Carried:
    """A non-video item travelling with a frame: a packet to copy, decoded audio to re-encode, or
    a subtitle to convert (`item` is the packet, the audio frames, or (packet, SubtitleSet))."""

    index: int  # the input stream
    kind: str  # "packet" | "audio" | "subtitle"
    item: Any


def _colour(stream, frame) -> tuple[str, int, bool]:
    """(swscale matrix, AVColorSpace tag to write, full range) for a decoded stream."""
    cs = frame.colorspace if frame.colorspace not in (None, _UNSPECIFIED) else stream.codec_context.colorspace
    fmt = frame.format.name
    full = fmt.startswith("yuvj") or frame.color_range == _RANGE_JPEG
    if cs in _MATRICES:
        return _MATRICES[cs], cs, full
    if full or fmt in ("gbrp", "rgb24", "bgr24", "rgba", "bgra", "pal8", "gray") or fmt.startswith(("gbr", "rgb", "bgr")):
        # JPEG-style YUV is BT.601 by definition; RGB input has no matrix of its own. Both are
        # written as limited-range YUV, so the matrix must be tagged for players to get it right.
        m = "ITU601" if full else ("ITU709" if frame.width >= 1280 or frame.height > 576 else "ITU601")
        return m, _MATRIX_TAGS[m], full
    # Untagged YUV: decode and encode with what players assume, and leave it untagged, so every
    # player shows the output as it shows the input.
    return ("ITU709" if frame.width >= 1280 or frame.height > 576 else "ITU601"), _UNSPECIFIED, full


class VideoSource:
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
            held = [f"{s.type} ({self._codec_name(s)})" for s in container.streams if s.type != "video"]
            if any(s.disposition & attached for s in container.streams.video):
                held.append("a cover picture")
            raise InputError(f"{label}: has no video stream ("
                             + (f"it holds only {', '.join(held)}" if held else "it holds no streams at all") + ")")
        best = container.streams.best("video")
        vs = best if best in videos else videos[0]
        vs.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with the model
        self._vs = vs
        self.extra_streams = [s for s in container.streams if s is not vs]
        self._plan: dict[int, str] = {}  # input stream index -> "packet" | "audio" | "subtitle"
        self._side: list = []  # non-video packets demuxed since the last frame was handed out
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
        self._side_errors = 0
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

    @staticmethod
    def _codec_name(stream) -> str:
        ctx = stream.codec_context
        if ctx is not None:
            try:
                return ctx.codec.canonical_name
            except Exception:  # noqa: BLE001 - an unknown codec still has a type to report
                return ctx.name or "unknown codec"
        return "no codec"

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
        self._plan = dict(plan)

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

    def describe(self) -> str:
        i = self.info
        bits = [f"{i.width}x{i.height}", f"{i.fps:g} fps" if i.fps else "frame rate unknown", i.codec]
        if i.rotation:
            bits.append(f"rotated {i.rotation} degrees to upright")
        bits.append("live" if self.live else (f"{i.frame_count} frames declared" if i.frame_count else "frame count not stored"))
        others = [f"{s.type} {self._codec_name(s)}" for s in self.extra_streams if s.type in ("audio", "subtitle")]
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
            yield self._frame(i, held, self._take_side())
            i += 1
            self.frames_read = i
            held = nxt
        yield self._frame(i, held, self._take_side(final=True))
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
        """Video frames in presentation order; other packets are put aside for `_take_side`."""
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
                    self._side.append(packet)
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

    def _take_side(self, final: bool = False) -> list:
        """The carried items demuxed since the last frame; `final` adds what the decoders held."""
        av = _av()
        out: list[_Carried] = []
        side, self._side = self._side, []
        for packet in side:
            index = packet.stream.index
            kind = self._plan.get(index)
            if kind is None:
                continue
            shift = self._offset(_frac(packet.time_base))
            if shift:
                if packet.pts is not None:
                    packet.pts -= shift
                if packet.dts is not None:
                    packet.dts -= shift
            try:
                if kind == "packet":
                    out.append(_Carried(index, kind, packet))
                elif kind == "audio":
                    frames = packet.decode()
                    if frames:
                        out.append(_Carried(index, kind, frames))
                else:
                    subs = packet.stream.codec_context.decode2(packet)
                    if subs is not None and len(subs):
                        out.append(_Carried(index, kind, (packet, subs)))
            except (av.FFmpegError, ValueError):
                self._side_errors += 1
        if final:
            for index, kind in self._plan.items():
                if kind == "audio":
                    try:
                        frames = self.stream(index).decode(None)
                    except av.FFmpegError:
                        continue
                    if frames:
                        out.append(_Carried(index, kind, frames))
        return out

    def _report(self) -> None:
        n, label = self.frames_read, self.spec
        if self._resized:
            self.notes.append(f"{label}: {self._resized} frames came in another size and were scaled "
                              f"to {self._size[0]}x{self._size[1]}")
        if self._side_errors:
            self.notes.append(f"{label}: {self._side_errors} audio or subtitle packets could not be decoded and were left out")
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


# -------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class VideoOutputConfig:
    """How a video is encoded.

    codec: h264 | hevc | av1 | mpeg4. crf: the encoder's constant-quality value (lower is
    better; None takes DEFAULT_CRF; for mpeg4 it is the quantiser, 1-31). preset: x264's names,
    mapped onto the other encoders. audio: carry audio and subtitle streams (False drops them).
    nvenc: None tries NVENC where an NVIDIA driver is present, True tries it anywhere, False
    never does; a CPU encoder takes over when it does not open. faststart: MP4/MOV index first.
    """

    codec: str = "h264"
    crf: int | None = None
    preset: str = DEFAULT_PRESET
    audio: bool = True
    nvenc: bool | None = None
    faststart: bool = True

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ConfigError(f"codec must be one of {', '.join(CODECS)}; got {self.codec!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        if self.crf is not None:
            lo, hi = CRF_RANGE[self.codec]
            if not isinstance(self.crf, int) or isinstance(self.crf, bool) or not lo <= self.crf <= hi:
                raise ConfigError(f"--crf for {self.codec} must be an integer in [{lo}, {hi}]; got {self.crf!r}")

    @property
    def quality(self) -> int:
        return DEFAULT_CRF[self.codec] if self.crf is None else self.crf


@dataclass
class _StreamPlan:
    index: int
    type: str  # audio | subtitle
    codec: str  # the input codec
    action: str  # copy | aac | mov_text | srt
    label: str  # for notes: "aac 48 kHz stereo (eng)"
    count: int = 0


def _stream_label(stream, codec: str) -> str:
    bits = [codec]
    if stream.type == "audio":
        ctx = stream.codec_context
        if ctx.sample_rate:
            bits.append(f"{ctx.sample_rate / 1000:g} kHz")
        ch = ctx.channels or 0
        if ch:
            bits.append({1: "mono", 2: "stereo"}.get(ch) or (ctx.layout.name if ctx.layout is not None else f"{ch} channels"))
    lang = (stream.metadata or {}).get("language")
    if lang and lang != "und":
        bits.append(f"({lang})")
    return " ".join(bits)


def _encoder_options(name: str, codec: str, crf: int, preset: str) -> dict[str, str]:
    if name.endswith("_nvenc"):
        # Constant quality: VBR with a CQ target and no bitrate cap, as `-rc vbr -cq N -b:v 0`.
        return {"preset": _NVENC_PRESET[preset], "tune": "hq", "rc": "vbr", "cq": str(crf), "b": "0"}
    if name == "libx264":
        return {"crf": str(crf), "preset": preset}
    if name == "libx265":
        return {"crf": str(crf), "preset": preset, "x265-params": "log-level=error"}
    if name == "libsvtav1":
        return {"crf": str(crf), "preset": str(_SVT_PRESET[preset])}
    # mpeg4: a fixed quantiser (-q:v N), the only quality control it has.
    return {"flags": "+qscale", "global_quality": str(crf * 118)}


class VideoSink:
    """Encodes frames to a staged file beside the target, renamed into place when complete.

    Each frame keeps its input timestamp; the audio and subtitle streams of a `VideoSource`
    given as `source` are carried (see the module docstring). `finish(commit)` returns notes for
    the summary: the video codec, and which stream was copied, converted or left out.
    """

    fatal_write_errors = True  # a video with a hole in it is not a usable output
    all_or_nothing = True  # a video is kept whole or not at all (the report counts it so)

    def __init__(self, out_path: str | os.PathLike, info: VideoInfo, *, source=None,
                 overwrite: bool = False, config: VideoOutputConfig | None = None) -> None:
        self.path = Path(out_path)
        self.config = config or VideoOutputConfig()
        self.source = source if isinstance(source, VideoSource) else None
        src_path = self.source.path if self.source is not None else (Path(source) if source is not None else None)
        if src_path is not None and self.path.exists() and self.path.resolve() == src_path.resolve():
            raise InputError(f"--out {self.path}: is the input video; refusing to overwrite an input")
        suffix = self.path.suffix.lower()
        if suffix not in CONTAINERS:
            raise InputError(f"{self.path}: a video output needs one of the suffixes {', '.join(VIDEO_SUFFIXES)}")
        if self.path.is_dir():
            raise InputError(f"--out {self.path}: is a folder")
        if self.path.exists() and not overwrite:
            raise InputError(f"{self.path}: already exists; pass --overwrite to replace it")
        self.format = CONTAINERS[suffix]
        allowed = _CONTAINER_CODECS.get(self.format)
        if allowed is not None and self.config.codec not in allowed:
            raise InputError(f"{self.path}: a {suffix} file cannot hold {CODEC_LABELS[self.config.codec]}; "
                             f"use .mp4 or .mkv (or --codec {' or '.join(allowed)})")
        self.info = info
        w, h = info.width, info.height
        self._pad = (_even(w) - w, _even(h) - h)  # 4:2:0 needs even sizes
        self.width, self.height = w + self._pad[0], h + self._pad[1]
        tb = _frac(info.time_base) or Fraction(1, 25)
        if self.config.codec == "mpeg4" and tb.denominator > 65535:
            tb = Fraction(1, 60000)  # the MPEG-4 Part 2 standard's time base limit
        self._tb = tb
        self._src_tb = _frac(info.time_base)
        rate = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else None
        self._rate = rate
        self._step = max(1, int(round(1 / (rate * self._tb)))) if rate else 1
        self.encoder, self._enc_options, self._notes = self._choose_encoder()
        self._streams: list[_StreamPlan] = []
        self._dropped: list[str] = []
        if self.source is not None:
            self._plan_streams(self.source)
        self._out = None
        self._vout = None
        self._outs: dict[int, Any] = {}
        self._tmp: Path | None = None
        self._last_pts: int | None = None
        self._nudged = 0
        self._carry_errors = 0
        self._first_carry_error: str | None = None
        self._reformatter = None
        self.frames_written = 0

    # -- decisions made before any frame --------------------------------------------------------
    def _choose_encoder(self) -> tuple[str, dict, list[str]]:
        av = _av()
        c = self.config
        cpu, gpu = CODECS[c.codec]
        notes = []
        want_gpu = c.nvenc if c.nvenc is not None else _has_nvidia_driver()
        if gpu and want_gpu:
            opts = _encoder_options(gpu, c.codec, c.quality, c.preset)
            try:
                ctx = av.CodecContext.create(gpu, "w")
                ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
                ctx.time_base = self._tb
                if self._rate:
                    ctx.framerate = self._rate
                ctx.options = dict(opts)
                ctx.open()
                del ctx
                return gpu, opts, notes
            except (av.FFmpegError, ValueError, OSError) as exc:
                notes.append(f"{gpu} (GPU encoder) did not open ({_reason(exc)}); encoded on the CPU with {cpu}")
        return cpu, _encoder_options(cpu, c.codec, c.quality, c.preset), notes

    def _plan_streams(self, source: VideoSource) -> None:
        """Decide, for each audio and subtitle stream of the input, copy / convert / leave out,
        and tell the source what to carry."""
        av = _av()
        fmt = self.format
        plan: dict[int, str] = {}
        candidates = []
        for st in source.extra_streams:
            codec = VideoSource._codec_name(st)
            if not self.config.audio:
                if st.type in ("audio", "subtitle"):
                    self._dropped.append(f"{st.type} {codec} (--no-audio)")
                continue
            if st.type == "audio":
                if fmt == "mp4":
                    action = "copy" if codec in _MP4_AUDIO else "aac"
                elif fmt == "mov":
                    action = "copy" if codec in _MP4_AUDIO or codec.startswith("pcm_") else "aac"
                elif fmt == "avi":
                    action = "copy" if codec in _AVI_AUDIO else "aac"
                else:
                    action = "copy"
                candidates.append(_StreamPlan(st.index, "audio", codec, action, _stream_label(st, codec)))
            elif st.type == "subtitle":
                text = codec in _TEXT_SUBTITLES
                if fmt in ("mp4", "mov") and text:
                    action = "copy" if codec == "mov_text" else "mov_text"
                elif fmt == "matroska":
                    action = "srt" if codec == "mov_text" else "copy"
                else:
                    where = "an AVI" if fmt == "avi" else f"a {self.path.suffix} file"
                    self._dropped.append(f"subtitles {codec}: {where} cannot hold them "
                                         f"(--out {self.path.stem}.mkv keeps them)")
                    continue
                candidates.append(_StreamPlan(st.index, "subtitle", codec, action, _stream_label(st, codec)))
            elif st.type == "video":
                self._dropped.append(f"a further video stream ({codec}): only the first is translated")
            elif st.type in ("data", "attachment"):
                self._dropped.append(f"a {st.type} stream ({codec})")
        # The muxer has the last word on what it can copy: try each copy on a throwaway output.
        for sp in candidates:
            if sp.action == "copy" and not self._muxer_takes(av, source.stream(sp.index)):
                if sp.type == "audio":
                    sp.action = "aac"
                else:
                    self._dropped.append(f"subtitles {sp.codec}: {self.path.suffix} cannot hold them")
                    continue
            self._streams.append(sp)
            plan[sp.index] = "packet" if sp.action == "copy" else ("audio" if sp.type == "audio" else "subtitle")
        source.carry(plan)

    def _muxer_takes(self, av, stream) -> bool:
        try:
            out = av.open(io.BytesIO(), "w", format=self.format)
        except av.FFmpegError:
            return False
        try:
            out.add_stream_from_template(stream)
            return True
        except (ValueError, av.FFmpegError):
            return False
        finally:
            try:
                out.close()
            except Exception:  # noqa: BLE001 - nothing was written
                pass

    def describe(self) -> str:
        c = self.config
        enc = f"{CODEC_LABELS[c.codec]} {self.encoder}, {'q' if c.codec == 'mpeg4' else 'crf'} {c.quality}"
        if c.codec != "mpeg4":
            enc += f", {c.preset}"
        to = {"copy": "copied", "aac": "to AAC", "mov_text": "to mov_text", "srt": "to SubRip"}
        carried = [f"{sp.type} {sp.codec} {to[sp.action]}" for sp in self._streams]
        return f"{self.path} ({enc}{'; ' + ', '.join(carried) if carried else ''})"

    # -- writing --------------------------------------------------------------------------------
    def open(self) -> None:
        av = _av()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = create_partial(self.path)
        except OSError as exc:
            raise output_error(self.path, exc) from None
        self._tmp = tmp
        try:
            opts = {}
            if self.format in ("mp4", "mov"):
                if self.config.faststart:
                    opts["movflags"] = "+faststart"
                # The edit list that places the first frame is counted in the movie's timescale
                # (1/1000 s by default): give it the video track's, so no timestamp is rounded.
                scale = self._tb.denominator
                while scale < 10000:
                    scale *= 2
                opts["movie_timescale"] = str(scale)
            out = av.open(str(tmp), "w", format=self.format, container_options=opts)
            self._out = out
            v = out.add_stream(self.encoder, rate=self._rate, options=self._enc_options)
            v.width, v.height, v.pix_fmt = self.width, self.height, "yuv420p"
            ctx = v.codec_context
            ctx.time_base = self._tb
            i = self.info
            ctx.color_range = _RANGE_MPEG
            ctx.colorspace = i.colorspace
            ctx.color_primaries = i.color_primaries
            ctx.color_trc = i.color_trc
            if self.encoder == "libx265" and self.format in ("mp4", "mov"):
                v.codec_tag = "hvc1"  # what Apple players look for
            self._vout = v
            from av.video.reformatter import VideoReformatter

            self._reformatter = VideoReformatter()
            for sp in self._streams:
                self._outs[sp.index] = self._add_carried_stream(av, out, sp)
        except (av.FFmpegError, ValueError, OSError) as exc:
            self._abandon()
            raise InputError(f"{self.path}: cannot start the video ({_reason(exc)})") from None

    def _add_carried_stream(self, av, out, sp: _StreamPlan):
        src = self.source.stream(sp.index)
        if sp.action == "copy":
            o = out.add_stream_from_template(src)
        elif sp.action == "aac":
            ctx = src.codec_context
            ch = ctx.channels or 2
            o = out.add_stream("aac", rate=ctx.sample_rate or 48000)
            o.layout = _AAC_LAYOUTS.get(ch, "stereo")
            o.bit_rate = min(96_000 * (ch if ch in _AAC_LAYOUTS else 2), 512_000)
        else:  # mov_text | srt: text subtitles converted
            o = out.add_stream("mov_text" if sp.action == "mov_text" else "srt")
            header = self.source.subtitle_header(sp.index)
            if header:
                o.codec_context.subtitle_header = header
            o.codec_context.time_base = src.time_base
        lang = (src.metadata or {}).get("language")
        if lang:
            o.metadata["language"] = lang
        return o

    def write(self, frame: Frame, image: np.ndarray) -> Path:
        av = _av()
        if self._out is None:
            self.open()
        if image.shape[:2] != (self.info.height, self.info.width):
            raise InputError(
                f"{self.path}: {frame.key} came out {image.shape[1]}x{image.shape[0]}, but the video "
                f"is {self.info.width}x{self.info.height}"
            )
        self._mux_carried(frame)
        if self._pad != (0, 0):
            image = np.pad(image, ((0, self._pad[1]), (0, self._pad[0]), (0, 0)), mode="edge")
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        yuv = self._reformatter.reformat(rgb, format="yuv420p", dst_colorspace=self.info.matrix,
                                         dst_color_range=_RANGE_MPEG)
        yuv.pts, yuv.duration = self._timestamps(frame.meta)
        yuv.time_base = self._tb
        try:
            for packet in self._vout.encode(yuv):
                self._out.mux(packet)
        except (av.FFmpegError, ValueError) as exc:
            if _output_failure(exc):  # met by the muxer's write (an encoder has no file to fill)
                raise output_error(self.path, exc) from None
            raise InputError(f"{self.path}: encoding {frame.key} failed ({_reason(exc)})") from None
        self.frames_written += 1
        return self.path

    def skip(self, frame: Frame) -> None:
        """A frame that could not be made: its audio and subtitles are still written."""
        if self._out is None:
            self.open()
        self._mux_carried(frame)

    def _timestamps(self, meta: dict) -> tuple[int, int]:
        """(pts, duration) in the encoder's time base: the input's, kept strictly increasing
        (encoders refuse anything else; a broken input's repeats are nudged and counted)."""
        pts, tb, dur = meta.get("pts"), meta.get("time_base"), meta.get("duration")
        tb = _frac(tb) or self._src_tb
        if pts is not None and tb is not None:
            pts = _rescale(pts, tb, self._tb)
        elif self._last_pts is not None:
            pts = self._last_pts + self._step
        else:
            pts = 0
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
            self._nudged += 1
        self._last_pts = pts
        duration = _rescale(dur, tb, self._tb) if dur and tb is not None else self._step
        return pts, max(1, duration)

    def _mux_carried(self, frame: Frame) -> None:
        av = _av()
        for c in frame.meta.get("carry", ()):
            out = self._outs.get(c.index)
            if out is None:
                continue
            sp = next(s for s in self._streams if s.index == c.index)
            try:
                if c.kind == "packet":
                    packet = c.item
                    if packet.pts is None and packet.dts is None:
                        raise ValueError("a packet without timestamps")
                    packet.stream = out
                    self._out.mux(packet)
                elif c.kind == "audio":
                    for f in c.item:
                        self._out.mux(out.encode(f))
                    sp.count += len(c.item) - 1
                else:
                    packet, subs = c.item
                    enc = out.codec_context.encode_subtitle(subs)
                    enc.stream = out
                    enc.time_base = packet.time_base
                    enc.pts = enc.dts = packet.pts
                    enc.duration = packet.duration or 0
                    self._out.mux(enc)
                sp.count += 1
            except (av.FFmpegError, ValueError) as exc:
                if _output_failure(exc):
                    raise output_error(self.path, exc) from None
                # A bad audio or subtitle packet costs itself, not the video.
                self._carry_error(sp, exc)

    def _carry_error(self, sp: _StreamPlan, exc: BaseException) -> None:
        self._carry_errors += 1
        self._first_carry_error = self._first_carry_error or f"{sp.label}: {_reason(exc)}"

    def _flush(self) -> None:
        av = _av()
        self._out.mux(self._vout.encode(None))
        for sp in self._streams:
            if sp.action == "aac":
                try:
                    self._out.mux(self._outs[sp.index].encode(None))
                except av.FFmpegError as exc:
                    if _output_failure(exc):
                        raise
                    self._carry_error(sp, exc)

    def _abandon(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            try:
                out.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                pass
        if self._tmp is not None:
            discard_partial(self._tmp)
            self._tmp = None

    def summary_notes(self) -> list[str]:
        c = self.config
        notes = list(self._notes)
        q = f"q {c.quality}" if c.codec == "mpeg4" else f"crf {c.quality}, preset {c.preset}"
        extra = []
        if self._pad != (0, 0):
            extra.append(f"padded to {self.width}x{self.height} (4:2:0 needs even sizes)")
        if self.info.rotation:
            extra.append(f"rotated {self.info.rotation} degrees to upright")
        notes.append(f"video: {CODEC_LABELS[c.codec]} ({self.encoder}, {q}), yuv420p"
                     + (", index first (faststart)" if c.faststart and self.format in ("mp4", "mov") else "")
                     + "".join(f", {e}" for e in extra))
        for sp in self._streams:
            what = {"copy": "copied as it is", "aac": "re-encoded to AAC (the container does not take it as it is)",
                    "mov_text": "converted to mov_text (MP4's subtitle format)", "srt": "converted to SubRip"}[sp.action]
            unit = "packet" if sp.action == "copy" else ("decoded frame" if sp.type == "audio" else "cue")
            notes.append(f"{sp.type}: {sp.label} {what} ({sp.count} {unit}{'' if sp.count == 1 else 's'})")
        for d in self._dropped:
            notes.append(f"not copied: {d}")
        if self._carry_errors:
            notes.append(f"{self._carry_errors} audio or subtitle packets could not be written "
                         f"(first: {self._first_carry_error})")
        if self._nudged:
            notes.append(f"{self._nudged} frames had timestamps that did not increase; each was moved one tick on")
        return notes

    def finish(self, commit: bool) -> list[str]:
        """Close; rename into place when commit, else delete. Returns notes for the summary."""
        av = _av()
        if self._out is None and self._tmp is None:
            return []
        failure = None
        try:
            if commit and self.frames_written:
                self._flush()
            out, self._out = self._out, None
            if out is not None:
                out.close()
        except (av.FFmpegError, ValueError, OSError) as exc:
            failure = exc
        tmp, self._tmp = self._tmp, None
        if failure is not None and commit:
            discard_partial(tmp)
            self._abandon()
            if isinstance(failure, OSError) and failure.errno:  # a full disk, a quota, no permission
                raise output_error(self.path, failure) from None
            raise InputError(f"{self.path}: could not finish the video ({_reason(failure)}); nothing was written there")
        if commit and self.frames_written:
            os.chmod(tmp, FILE_MODE)
            commit_partial(tmp, self.path)
            return self.summary_notes()
        discard_partial(tmp)
        return [f"{self.path}: not written ({self.frames_written} frames were encoded, then discarded)"]
