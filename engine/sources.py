"""Where frames come from: an image folder (recursive), or a video (engine/video/: a file, a
capture device or a stream URL, read through FFmpeg).

A source yields `Frame`s in order; a file that cannot be used becomes a `Frame` with `error` set
(naming the file and what is wrong), so the run goes on and the summary can list it. Problems
that make the whole input unusable (an empty folder, a video that does not open or has no
frames, a file that is not a video) raise InputError when the source is created, before any
model is loaded. Every source implements `engine.contracts.Source`, where `Frame` is defined.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

from cyclemask.errors import InputError
from cyclemask.image_files import IMAGE_EXTENSIONS, list_images, read_image

from .contracts import Frame, Source

log = logging.getLogger(__name__)

# 64 megapixels: a 8000 x 8000 photo. Above this one image alone holds hundreds of MB per copy,
# and a face model input is 256 px wide, so such files are refused rather than risked.
DEFAULT_MAX_PIXELS = 64_000_000


class ImageFolderSource(Source):
    """Every image under `root` (recursive, sorted, hidden files skipped); or, given `paths`,
    those files under it (a share of a listing made elsewhere: a Ray worker's batch)."""

    kind = "images"

    def __init__(self, root: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, *,
                 paths: list[Path] | None = None) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise InputError(f"{self.root}: no such folder")
        if not self.root.is_dir():
            raise InputError(f"{self.root}: not a folder (--images takes a folder; use --video for a video file)")
        self.max_pixels = max_pixels
        self.problems: list[str] = []  # whole-input problems (none for folders: files fail one by one)
        if paths is not None:
            self.paths, self.ignored = list(paths), []
            return
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

    @property
    def name(self) -> str:
        return str(self.root)

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


def _non_images(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)
