"""Names and places: what outputs named after an input are called and where they go (beside the
input file, or in the current folder where the input's folder is read-only, a shared data set,
or is no folder for outputs, a capture device or a stream URL), and which files of a folder are
videos. Which inputs are live (no end of their own) is decided here too, because a live input's
folder is not a place for its output.

`video_output_path` turns --out (a file, a folder, or nothing) into the video's output file;
`output_folder_near` is the read-only fallback that image folders use as well (engine/sinks.py).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

from cyclemask.errors import InputError

from .formats import VIDEO_INPUT_SUFFIXES, VIDEO_SUFFIXES

log = logging.getLogger(__name__)

# Schemes FFmpeg reads as live streams (no end of their own; a stop is the normal end).
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")


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


def translated_video_name(video: str | os.PathLike, direction: str) -> str:
    """<stem>_<direction>.mp4: what a video's output is called, wherever it goes."""
    return f"{input_name(video)}_{direction}.mp4"


def default_video_out(video: str | os.PathLike, direction: str, fallback: bool = True) -> Path:
    folder, stem = input_place(video, fallback=fallback)
    return folder / f"{stem}_{direction}.mp4"


def video_output_path(video: str | os.PathLike, out: Path | None, direction: str, fallback: bool = True) -> Path:
    """--out for a video: a file (.mp4/.m4v/.mov/.mkv/.avi), or a folder (an existing one, or a
    name without a suffix, created) that receives <stem>_<direction>.mp4. Default: beside the
    input file (for a device or a stream URL, or a file in a read-only folder, in the current
    folder; see `output_folder_near`)."""
    if out is None:
        return default_video_out(video, direction, fallback)
    if out.is_dir() or (not out.suffix and not out.exists()):
        return out.resolve() / translated_video_name(video, direction)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(
            f"--out {out}: a video output needs one of the suffixes {', '.join(VIDEO_SUFFIXES)} "
            "(or name a folder)"
        )
    return out.resolve()
