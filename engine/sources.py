"""Where frames come from: an image folder (recursive) or a video file.

A source yields `Frame`s in order; a file that cannot be used becomes a `Frame` with `error` set
(naming the file and what is wrong), so the run goes on and the summary can list it. Problems
that make the whole input unusable (an empty folder, a video that does not open or has no
frames) raise InputError when the source is created, before any model is loaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from cyclemask.errors import InputError
from cyclemask.imageio import IMAGE_EXTENSIONS, list_images, read_image

log = logging.getLogger(__name__)

# 64 megapixels: a 8000 x 8000 photo. Above this one image alone holds hundreds of MB per copy,
# and a face model input is 256 px wide, so such files are refused rather than risked.
DEFAULT_MAX_PIXELS = 64_000_000


@dataclass
class Frame:
    index: int
    key: str  # relative path for images, "frame N" for video
    image: np.ndarray | None
    path: Path | None = None  # the input file (images)
    error: str | None = None
    meta: dict = field(default_factory=dict)


class ImageFolderSource:
    """Every image under `root` (recursive, sorted, hidden files skipped)."""

    kind = "images"

    def __init__(self, root: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise InputError(f"{self.root}: no such folder")
        if not self.root.is_dir():
            raise InputError(f"{self.root}: not a folder (--images takes a folder; use --video for a video file)")
        self.max_pixels = max_pixels
        self.problems: list[str] = []  # whole-input problems (none for folders: files fail one by one)
        self.paths = list_images(self.root)
        self.ignored = _non_images(self.root)
        if not self.paths:
            more = f" ({len(self.ignored)} other files ignored)" if self.ignored else ""
            raise InputError(
                f"{self.root}: no images found (looked recursively for {', '.join(IMAGE_EXTENSIONS)}){more}"
            )
        if self.ignored:
            log.info("%s: ignoring %d files that are not images by name, e.g. %s",
                     self.root, len(self.ignored), self.ignored[0])

    @property
    def total(self) -> int:
        return len(self.paths)

    def describe(self) -> str:
        return f"{self.root} ({self.total} images)"

    def __iter__(self) -> Iterator[Frame]:
        for i, p in enumerate(self.paths):
            key = p.relative_to(self.root).as_posix()
            try:
                img = read_image(p)
                h, w = img.shape[:2]
                if h * w > self.max_pixels:
                    raise InputError(
                        f"{p}: image is {w}x{h} ({h * w / 1e6:.0f} Mpx), over the limit of "
                        f"{self.max_pixels / 1e6:.0f} Mpx (--max-pixels)"
                    )
            except InputError as exc:
                yield Frame(i, key, None, p, error=str(exc))
                continue
            except MemoryError:
                yield Frame(i, key, None, p, error=f"{p}: not enough memory to decode this image")
                continue
            yield Frame(i, key, img, p)

    def close(self) -> None:
        pass


def _non_images(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frame_count: int  # as the container declares it; 0 when unknown
    width: int
    height: int


class VideoSource:
    """Frames of a video file, decoded by OpenCV (FFmpeg), as RGB."""

    kind = "video"

    def __init__(self, path: str | os.PathLike) -> None:
        import cv2

        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such video file")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder (use --images for a folder of images)")
        if not os.access(self.path, os.R_OK):
            raise InputError(f"{self.path}: cannot read file (permission denied)")
        # FFmpeg only: OpenCV's image-sequence backend would "open" a single JPEG as a video.
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise InputError(
                f"{self.path}: cannot open as a video (not a video file, an unsupported codec, "
                "or a file without any frames)"
            )
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise InputError(f"{self.path}: the video has no frames")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(max(cap.get(cv2.CAP_PROP_FRAME_COUNT), 0))
        if not fps > 0 or fps > 1000:
            log.warning("%s: the container declares no usable frame rate (%s); writing 25 fps", self.path, fps)
            fps = 25.0
        self.info = VideoInfo(fps, count, first.shape[1], first.shape[0])
        self._cap = cap
        self._first = first
        self.frames_read = 0
        self.problems: list[str] = []  # found while reading; the run counts them as failures

    @property
    def total(self) -> int | None:
        return self.info.frame_count or None

    def describe(self) -> str:
        i = self.info
        return f"{self.path} ({i.width}x{i.height}, {i.fps:g} fps, {i.frame_count or 'unknown'} frames)"

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        if self._cap is None:
            raise InputError(f"{self.path}: a video source can be read once")
        frame, i = self._first, 0
        self._first = None
        try:
            while frame is not None:
                if frame.shape[1] != self.info.width or frame.shape[0] != self.info.height:
                    raise InputError(
                        f"{self.path}: frame {i} is {frame.shape[1]}x{frame.shape[0]}, but the video "
                        f"started at {self.info.width}x{self.info.height}"
                    )
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
                self.frames_read = i + 1
                yield Frame(i, f"frame {i}", rgb)
                i += 1
                ok, frame = self._cap.read()
                if not ok:
                    frame = None
        finally:
            self.close()
        declared = self.info.frame_count
        if declared and self.frames_read < declared:
            self.problems.append(
                f"{self.path}: decoded {self.frames_read} frames, but the container declares {declared} "
                "(a truncated or damaged file?)"
            )

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
