"""The tables reading and writing share: containers, codecs and their encoders, quality and
preset scales, which audio each container takes, the YUV <-> RGB matrices; and the two records
built on them, `VideoInfo` (what a decoded video is) and `VideoOutputConfig` (how one is
encoded)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from cyclemask.errors import ConfigError

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
