"""The audio and subtitle streams that ride along with the frames.

Reading puts their packets aside as they are demuxed and hands them out with the next frame
(`CarriedInput`): each frame carries those demuxed before the next frame decoded, the last frame
carries the rest, so they reach the writer through the pipeline's bounded queues, in order, with
no second reader. Writing (`CarriedOutput`) decides per stream: copied packet for packet when the
output container takes the codec; otherwise audio is re-encoded to AAC and text subtitles
converted (mov_text in MP4, SubRip in Matroska); what cannot be carried (picture subtitles in
MP4, data streams) is named in a note.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from cyclemask.outputs import output_error

from ._ffmpeg import _av, _codec_name, _frac, _output_failure, _reason
from .formats import _AAC_LAYOUTS, _AVI_AUDIO, _MP4_AUDIO, _TEXT_SUBTITLES


@dataclass(frozen=True)
class _Carried:
    """A non-video item travelling with a frame: a packet to copy, decoded audio to re-encode, or
    a subtitle to convert (`item` is the packet, the audio frames, or (packet, SubtitleSet))."""

    index: int  # the input stream
    kind: str  # "packet" | "audio" | "subtitle"
    item: Any


class CarriedInput:
    """The reader's half: which streams travel (`plan`: input stream index -> "packet" |
    "audio" | "subtitle"), their packets put aside since the last frame, and how many could not
    be decoded."""

    def __init__(self) -> None:
        self.plan: dict[int, str] = {}
        self._side: list = []
        self.errors = 0

    def put(self, packet) -> None:
        self._side.append(packet)

    def take(self, offset: Callable[[Fraction | None], int], stream: Callable[[int], Any],
             final: bool = False) -> list[_Carried]:
        """The carried items demuxed since the last frame, shifted by `offset(time_base)` as the
        frames are; `final` adds what the decoders held."""
        av = _av()
        out: list[_Carried] = []
        side, self._side = self._side, []
        for packet in side:
            index = packet.stream.index
            kind = self.plan.get(index)
            if kind is None:
                continue
            shift = offset(_frac(packet.time_base))
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
                self.errors += 1
        if final:
            for index, kind in self.plan.items():
                if kind == "audio":
                    try:
                        frames = stream(index).decode(None)
                    except av.FFmpegError:
                        continue
                    if frames:
                        out.append(_Carried(index, kind, frames))
        return out


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


class CarriedOutput:
    """The writer's half for one output: for each audio and subtitle stream of `source` (a
    `VideoSource`, or None for none), copy, convert or leave out, told to the source before it
    is read; then the output streams, the muxing of what each frame carries, and the notes."""

    def __init__(self, source, fmt: str, path: Path, audio: bool) -> None:
        self.source, self.format, self.path = source, fmt, path
        self.streams: list[_StreamPlan] = []
        self.dropped: list[str] = []
        self._outs: dict[int, Any] = {}
        self.errors = 0
        self._first_error: str | None = None
        if source is not None:
            self._plan(source, audio)

    def _plan(self, source, audio: bool) -> None:
        av = _av()
        fmt = self.format
        plan: dict[int, str] = {}
        candidates = []
        for st in source.extra_streams:
            codec = _codec_name(st)
            if not audio:
                if st.type in ("audio", "subtitle"):
                    self.dropped.append(f"{st.type} {codec} (--no-audio)")
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
                    self.dropped.append(f"subtitles {codec}: {where} cannot hold them "
                                        f"(--out {self.path.stem}.mkv keeps them)")
                    continue
                candidates.append(_StreamPlan(st.index, "subtitle", codec, action, _stream_label(st, codec)))
            elif st.type == "video":
                self.dropped.append(f"a further video stream ({codec}): only the first is translated")
            elif st.type in ("data", "attachment"):
                self.dropped.append(f"a {st.type} stream ({codec})")
        # The muxer has the last word on what it can copy: try each copy on a throwaway output.
        for sp in candidates:
            if sp.action == "copy" and not self._muxer_takes(av, source.stream(sp.index)):
                if sp.type == "audio":
                    sp.action = "aac"
                else:
                    self.dropped.append(f"subtitles {sp.codec}: {self.path.suffix} cannot hold them")
                    continue
            self.streams.append(sp)
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

    def open(self, av, out) -> None:
        """Add the carried streams to the output container `out`."""
        for sp in self.streams:
            self._outs[sp.index] = self._add_stream(av, out, sp)

    def _add_stream(self, av, out, sp: _StreamPlan):
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

    def mux(self, out, items) -> None:
        """Write what one frame carries into `out` (the output container, passed each time: the
        writer may have replaced it)."""
        av = _av()
        for c in items:
            stream = self._outs.get(c.index)
            if stream is None:
                continue
            sp = next(s for s in self.streams if s.index == c.index)
            try:
                if c.kind == "packet":
                    packet = c.item
                    if packet.pts is None and packet.dts is None:
                        raise ValueError("a packet without timestamps")
                    packet.stream = stream
                    out.mux(packet)
                elif c.kind == "audio":
                    for f in c.item:
                        out.mux(stream.encode(f))
                    sp.count += len(c.item) - 1
                else:
                    packet, subs = c.item
                    enc = stream.codec_context.encode_subtitle(subs)
                    enc.stream = stream
                    enc.time_base = packet.time_base
                    enc.pts = enc.dts = packet.pts
                    enc.duration = packet.duration or 0
                    out.mux(enc)
                sp.count += 1
            except (av.FFmpegError, ValueError) as exc:
                if _output_failure(exc):
                    raise output_error(self.path, exc) from None
                # A bad audio or subtitle packet costs itself, not the video.
                self._error(sp, exc)

    def _error(self, sp: _StreamPlan, exc: BaseException) -> None:
        self.errors += 1
        self._first_error = self._first_error or f"{sp.label}: {_reason(exc)}"

    def flush(self, out) -> None:
        """Empty the AAC encoders into `out`."""
        av = _av()
        for sp in self.streams:
            if sp.action == "aac":
                try:
                    out.mux(self._outs[sp.index].encode(None))
                except av.FFmpegError as exc:
                    if _output_failure(exc):
                        raise
                    self._error(sp, exc)

    def describe(self) -> list[str]:
        to = {"copy": "copied", "aac": "to AAC", "mov_text": "to mov_text", "srt": "to SubRip"}
        return [f"{sp.type} {sp.codec} {to[sp.action]}" for sp in self.streams]

    def notes(self) -> list[str]:
        notes = []
        for sp in self.streams:
            what = {"copy": "copied as it is", "aac": "re-encoded to AAC (the container does not take it as it is)",
                    "mov_text": "converted to mov_text (MP4's subtitle format)", "srt": "converted to SubRip"}[sp.action]
            unit = "packet" if sp.action == "copy" else ("decoded frame" if sp.type == "audio" else "cue")
            notes.append(f"{sp.type}: {sp.label} {what} ({sp.count} {unit}{'' if sp.count == 1 else 's'})")
        for d in self.dropped:
            notes.append(f"not copied: {d}")
        if self.errors:
            notes.append(f"{self.errors} audio or subtitle packets could not be written "
                         f"(first: {self._first_error})")
        return notes
