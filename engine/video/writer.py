"""Writing a video (`VideoSink`): frames encoded to H.264 yuv420p in MP4, index first
(faststart), by default, through libx264 with a CRF and a preset; `--codec hevc | av1 | mpeg4`.
Where an NVIDIA driver is present, NVENC is tried first, and a CPU encoder takes over with a note
when it does not open. The audio and subtitle streams of the input are carried (carry.py); the
summary says which stream went which way. The file is written under a staged name beside the
target (`cyclemask.outputs.create_partial`) and renamed into place when complete.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from cyclemask.errors import InputError
from cyclemask.image_files import FILE_MODE
from cyclemask.outputs import commit_partial, create_partial, discard_partial, output_error

from ..contracts import Frame, Sink
from ._ffmpeg import _av, _frac, _output_failure, _reason, _rescale
from .carry import CarriedOutput
from .formats import (_CONTAINER_CODECS, _RANGE_MPEG, CODEC_LABELS, CODECS, CONTAINERS, VIDEO_SUFFIXES,
                      VideoInfo, VideoOutputConfig, _encoder_options)
from .reader import VideoSource


def _has_nvidia_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def _even(n: int) -> int:
    return n + (n & 1)


class VideoSink(Sink):
    """Encodes frames to a staged file beside the target, renamed into place when complete.

    Each frame keeps its input timestamp; the audio and subtitle streams of a `VideoSource`
    given as `source` are carried (carry.py). `finish(commit)` returns notes for
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
        self._carried = CarriedOutput(self.source, self.format, self.path, self.config.audio)
        self._out = None
        self._vout = None
        self._tmp: Path | None = None
        self._last_pts: int | None = None
        self._nudged = 0
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

    def describe(self) -> str:
        c = self.config
        enc = f"{CODEC_LABELS[c.codec]} {self.encoder}, {'q' if c.codec == 'mpeg4' else 'crf'} {c.quality}"
        if c.codec != "mpeg4":
            enc += f", {c.preset}"
        carried = self._carried.describe()
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
            self._carried.open(av, out)
        except (av.FFmpegError, ValueError, OSError) as exc:
            self._abandon()
            raise InputError(f"{self.path}: cannot start the video ({_reason(exc)})") from None

    def write(self, frame: Frame, image: np.ndarray) -> Path:
        av = _av()
        if self._out is None:
            self.open()
        if image.shape[:2] != (self.info.height, self.info.width):
            raise InputError(
                f"{self.path}: {frame.key} came out {image.shape[1]}x{image.shape[0]}, but the video "
                f"is {self.info.width}x{self.info.height}"
            )
        self._carried.mux(self._out, frame.meta.get("carry", ()))
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
        self._carried.mux(self._out, frame.meta.get("carry", ()))

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

    def _flush(self) -> None:
        self._out.mux(self._vout.encode(None))
        self._carried.flush(self._out)

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
        notes += self._carried.notes()
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
