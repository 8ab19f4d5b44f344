"""Where translated frames go: an image tree mirroring the input folder, or a video file
(`VideoSink`, FFmpeg through PyAV: engine/video/).

Both write atomically (a temporary name beside the target, renamed when complete), never write
into the input folder and never replace an input; existing outputs are replaced only with
`overwrite=True`. A video from a file is all or nothing: a run that stops early discards the
partial file, because a video with fewer frames than its input would silently break the
frame-count promise. A live input (capture device, stream URL) has no end of its own, so a stop
is its normal end and its video is kept.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cyclemask.errors import InputError
from cyclemask.image_files import encode_image, write_bytes_atomic

from .contracts import Frame, Sink
from .video import VideoSink  # noqa: F401 - one place to import sinks from
# Where a video goes is the video package's placement; the run imports it from here.
from .video.placement import default_video_out, output_folder_near, translated_video_name, video_output_path  # noqa: F401

log = logging.getLogger(__name__)


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def default_images_out(root: Path, direction: str, fallback: bool = True) -> Path:
    """<root>_<direction> beside the input folder (see `output_folder_near` for a read-only one)."""
    root = root.resolve()
    return output_folder_near(root.parent, input_path=root, fallback=fallback) / f"{root.name}_{direction}"


class ImageFolderSink(Sink):
    """Writes `out_root / <relative input path>` with the input's format (suffix)."""

    fatal_write_errors = False  # one file that cannot be written does not stop the others

    def __init__(self, in_root: Path, out_root: Path, inputs: list[Path], *, overwrite: bool = False,
                 quality: int = 95) -> None:
        src, dst = Path(in_root).resolve(), Path(out_root).resolve()
        if _inside(dst, src):
            raise InputError(
                f"--out {out_root}: is {'the input folder' if dst == src else 'inside the input folder ' + str(in_root)}; "
                "outputs must go elsewhere (they would mix with the inputs and be read as inputs next time)"
            )
        if _inside(src, dst):
            raise InputError(
                f"--out {out_root}: contains the input folder {in_root}; choose a folder outside it, "
                "so no output can land on an input"
            )
        if dst.exists() and not dst.is_dir():
            raise InputError(f"--out {out_root}: exists and is not a folder")
        self.in_root, self.out_root = src, dst
        self.quality = quality
        self.overwrite = overwrite
        self._inputs = {p.resolve() for p in inputs}
        existing = [dst / p.relative_to(in_root) for p in inputs if (dst / p.relative_to(in_root)).exists()]
        if existing and not overwrite:
            raise InputError(
                f"--out {out_root}: {len(existing)} output file(s) already exist, e.g. {existing[0]}; "
                "pass --overwrite to replace them"
            )
        self.written: list[Path] = []

    def describe(self) -> str:
        return str(self.out_root)

    def target(self, frame: Frame) -> Path:
        return self.out_root / frame.key

    def write(self, frame: Frame, image: np.ndarray) -> Path:
        path = self.target(frame)
        if path.resolve() in self._inputs:  # belt and braces: the folder checks make this unreachable
            raise InputError(f"{path}: refusing to overwrite an input file")
        suffix = path.suffix.lower()
        if suffix == ".pgm":
            # PGM holds grey only: keep the input's format, at the cost of the colour.
            import cv2

            ok, buf = cv2.imencode(".pgm", cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
            if not ok:
                raise InputError(f"{path}: cannot encode as .pgm")
            data = buf.tobytes()
        else:
            try:
                data = encode_image(image, suffix, self.quality)
            except InputError as exc:
                raise InputError(f"{path}: {exc}") from None
        write_bytes_atomic(path, data)
        self.written.append(path)
        return path

    def finish(self, commit: bool) -> list[str]:
        # Every image was complete when written; nothing to undo.
        return []
