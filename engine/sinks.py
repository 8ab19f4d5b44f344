"""Where translated frames go: an image tree mirroring the input folder, or a video file.

Both write atomically (a temporary name beside the target, renamed when complete), never write
into the input folder and never replace an input; existing outputs are replaced only with
`overwrite=True`. A video is all or nothing: a run that stops early discards the partial file,
because a video with fewer frames than its input would silently break the frame-count promise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cyclemask.errors import InputError
from cyclemask.imageio import encode_image, write_bytes_atomic
from cyclemask.outputs import commit_partial, create_partial, discard_partial, output_error, short_write_error

from .sources import Frame, VideoInfo

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi")  # containers that take OpenCV's mp4v encoder


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def default_images_out(root: Path, direction: str) -> Path:
    root = root.resolve()
    return root.parent / f"{root.name}_{direction}"


def default_video_out(video: Path, direction: str) -> Path:
    return video.resolve().parent / f"{video.stem}_{direction}.mp4"


def video_output_path(video: Path, out: Path | None, direction: str) -> Path:
    """--out for a video: a file (.mp4/.mov/.m4v/.avi), or a folder (an existing one, or a name
    without a suffix, created) that receives <stem>_<direction>.mp4. Default: beside the input."""
    if out is None:
        return default_video_out(video, direction)
    if out.is_dir() or (not out.suffix and not out.exists()):
        return out.resolve() / f"{video.stem}_{direction}.mp4"
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(
            f"--out {out}: a video output needs one of the suffixes {', '.join(VIDEO_SUFFIXES)} "
            "(or name a folder)"
        )
    return out.resolve()


class ImageFolderSink:
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


class VideoSink:
    """Writes frames with OpenCV's mp4v encoder to a temporary file, renamed on success.

    Keeps the input's frame rate and size; the frame count is the number of frames written.
    """

    fatal_write_errors = True  # a video with a hole in it is not a usable output

    def __init__(self, out_path: Path, info: VideoInfo, *, source: Path | None = None,
                 overwrite: bool = False) -> None:
        self.path = Path(out_path)
        if source is not None and self.path.resolve() == Path(source).resolve():
            raise InputError(f"--out {self.path}: is the input video; refusing to overwrite an input")
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(f"{self.path}: a video output needs one of the suffixes {', '.join(VIDEO_SUFFIXES)}")
        if self.path.is_dir():
            raise InputError(f"--out {self.path}: is a folder")
        if self.path.exists() and not overwrite:
            raise InputError(f"{self.path}: already exists; pass --overwrite to replace it")
        self.info = info
        self._writer = None
        self._tmp: Path | None = None
        self.frames_written = 0

    def describe(self) -> str:
        return str(self.path)

    def open(self) -> None:
        import cv2

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = create_partial(self.path)
        except OSError as exc:
            raise output_error(self.path, exc) from None
        writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.info.fps,
                                 (self.info.width, self.info.height))
        if not writer.isOpened():
            discard_partial(self._tmp)
            self._tmp = None
            raise InputError(f"{self.path}: OpenCV cannot open a video writer (mp4v) for this file")
        self._writer = writer

    def write(self, frame: Frame, image: np.ndarray) -> Path:
        import cv2

        if self._writer is None:
            self.open()
        if image.shape[:2] != (self.info.height, self.info.width):
            raise InputError(
                f"{self.path}: {frame.key} came out {image.shape[1]}x{image.shape[0]}, but the video "
                f"is {self.info.width}x{self.info.height}"
            )
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames_written += 1
        return self.path

    def finish(self, commit: bool) -> list[str]:
        """Close; rename into place when commit, else delete. Returns notes for the summary."""
        notes = []
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is None:
            return notes
        tmp, self._tmp = self._tmp, None
        if commit and self.frames_written:
            try:
                # OpenCV's writer reports no write error: a full disk shows only in the file.
                _check_complete(tmp, self.path, self.frames_written)
                commit_partial(tmp, self.path)
            except BaseException:
                discard_partial(tmp)
                raise
        else:
            discard_partial(tmp)
            notes.append(f"{self.path}: not written ({self.frames_written} frames were encoded, then discarded)")
        return notes


def _check_complete(tmp: Path, path: Path, frames: int) -> None:
    import cv2

    cap = cv2.VideoCapture(str(tmp))
    try:
        ok = cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) >= frames
    finally:
        cap.release()
    if not ok:
        raise short_write_error(path, tmp, f"the video encoder could not write all {frames} frames")
