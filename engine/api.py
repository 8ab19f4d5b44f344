"""The Python API: `cyclemask.Masker`, the pipeline of `cyclemask-run` as an object.

A `Masker` loads one backend (chosen as `cyclemask-run --backend` chooses it) and keeps it until
`close()` (or the end of a `with` block). Images and videos go through the same processor, the
same pipeline and the same backend code as the command line (engine/run.py): `masker(image)`
gives what `cyclemask-run --images` writes for that image, `masker.video(...)` what
`cyclemask-run --video` writes. Nothing here imports torch, OpenCV or a runtime before a Masker
is built, and the embedded ONNX models need no torch at all.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal

import numpy as np

from cyclemask import DIRECTIONS
from cyclemask.errors import BackendError, ConfigError, InputError

from .run import RunOptions, VideoResult

if TYPE_CHECKING:
    from .backends import Backend
    from .processing import FrameProcessor

__all__ = ["Masker", "FaceRegion", "FaceLayout", "VideoResult"]


@dataclass(frozen=True)
class FaceRegion:
    """One face as a Masker translates it, in the image's pixels.

    box: the face as detected (x, y, width, height). crop: the square (x0, y0, x1, y1) cut around
    it, translated and pasted back (it may reach past the image's edge). landmarks: [5, 2] (x, y)
    of the right eye, left eye, nose tip, right and left mouth corners (the subject's right and
    left), from which the mask zone is built; None when the whole crop is pasted instead
    (paste="crop", or landmarks that cannot make a zone). matte: float32 [y1 - y0, x1 - x0] in
    0..1 over `crop`, the weight the translated crop gets there; pixels where it is 0 keep
    their values exactly.
    """

    box: tuple[float, float, float, float]
    crop: tuple[int, int, int, int]
    landmarks: np.ndarray | None
    matte: np.ndarray


@dataclass(frozen=True)
class FaceLayout:
    """The faces a Masker found in one image, and `matte`: float32 [H, W] in 0..1, the share of
    each output pixel that comes from the model (0: the input's pixel, unchanged)."""

    faces: list[FaceRegion]
    matte: np.ndarray

    def __len__(self) -> int:
        return len(self.faces)

    def __iter__(self) -> Iterator[FaceRegion]:
        return iter(self.faces)

    def __getitem__(self, i: int) -> FaceRegion:
        return self.faces[i]


def _describe(image: Any) -> str:
    if isinstance(image, np.ndarray):
        return f"a {image.dtype} array of shape {tuple(image.shape)}"
    return f"a {type(image).__name__}"


def check_image(image: Any, name: str = "image") -> np.ndarray:
    """`image` as a C-contiguous uint8 [H, W, 3] RGB array; InputError naming what was expected
    and what came."""
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3
            or image.shape[0] < 1 or image.shape[1] < 1):
        hint = ""
        if isinstance(image, np.ndarray) and image.dtype != np.uint8 and np.issubdtype(image.dtype, np.floating):
            hint = " (floats in 0..1: (image * 255).round().astype(np.uint8))"
        elif isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[0] == 3 and image.shape[2] != 3:
            hint = " (channels first: image.transpose(1, 2, 0))"
        raise InputError(f"{name}: expected a uint8 RGB array of shape (H, W, 3); got {_describe(image)}{hint}")
    return np.ascontiguousarray(image)


class Masker:
    """Puts a mask on the faces of images and videos, or takes it off (`direction`).

    model: an ONNX graph, a TensorRT engine or a checkpoint, as `cyclemask-run --model` takes;
    None: the embedded model of `direction` (an ONNX graph: no torch needed); for "mask" that
    means a mask template warped onto each face unless `mask_method="gan"`, as on the command line.
    backend: "auto", "ort", "openvino", "torch" or "trt", chosen as `cyclemask-run --backend`
    chooses. aligned: every image is an aligned face crop, translated whole; otherwise faces are
    found (YuNet), translated and their mask zone pasted back. Any other option of `cyclemask-run`
    is a keyword here under its flag's name with underscores (`paste="crop"`, `margin=0.3`,
    `min_face=32`, `color_match=True`, `detect_score=0.5`, `batch=4`, `threads=2`,
    `ort_provider="cpu"`, `codec="hevc"`, `overwrite=True`, ...).

    The backend is loaded here and freed by `close()`, or at the end of a `with` block. Calls
    from several threads are served one at a time. Every problem a caller can cause raises a
    `cyclemask.errors.CycleMaskError`.
    """

    def __init__(self, direction: Literal["mask", "unmask"], model: str | os.PathLike | None = None,
                 backend: str = "auto", *, aligned: bool = False, **options: Any) -> None:
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction must be one of {', '.join(map(repr, DIRECTIONS))}; got {direction!r}")
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise ConfigError(f"model must be a path to a graph, engine or checkpoint, or None for the embedded "
                              f"one; got {_describe(model)}")
        fields = {f.name for f in dataclasses.fields(RunOptions)}
        own = {"direction", "model", "backend", "aligned", "progress"}
        unknown = sorted(set(options) - (fields - own))
        if unknown:
            raise ConfigError(f"Masker has no option {', '.join(map(repr, unknown))}; it takes "
                              f"{', '.join(sorted(fields - own))}")
        # Images are detected on the pipeline's own thread by the one detector this Masker keeps
        # (see FaceProcessor's one_detector): a detector per call would cost more than a small
        # image's detection. Videos are long: they detect ahead on threads, as cyclemask-run does.
        self._video_detect_workers = options.get("detect_workers", RunOptions.detect_workers)
        options.setdefault("detect_workers", 0)
        self.options = RunOptions(model=Path(model) if model is not None else None, backend=backend,
                                  direction=direction, aligned=aligned, progress=False, **options)
        from .run import face_detector_path, load_backend, make_processor

        self._lock = threading.Lock()
        self._detector = face_detector_path(self.options)
        self._image_faces = None if aligned else self.options.face_config(video=False)
        self._backend: Backend | None = None
        if self.options.mask_method == "template":
            from .template_mask import ignored_by_template, model_only_fields

            given = [k for k in options if k in model_only_fields()] + (["backend"] if backend != "auto" else [])
            warning = ignored_by_template(given, "mask_method" not in options)
            if warning:
                warnings.warn(warning.replace("--mask-method gan", "mask_method='gan'"), stacklevel=2)
        self._masks = masks = self.options.template_masks()  # mask_method="template": a template per face
        be, self.reason, self.model, self.model_note = load_backend(self.options, masks)
        be.activate()
        self._backend = be
        try:
            self.batch_size = self.options.batch_for(be)[0]
            if self._image_faces is not None:  # the paste follows the graph (see RunOptions.face_config)
                self._image_faces = self.options.face_config(video=False, backend=be)
            self._processor: FrameProcessor = make_processor(be, self._image_faces, self._detector,
                                                             one_detector=self.options.detect_workers == 0,
                                                             masks=masks)
        except BaseException:
            self.close()
            raise

    # -- what runs ------------------------------------------------------------------------------
    @property
    def direction(self) -> str:
        return self.options.direction or ""

    @property
    def image_size(self) -> int:
        """The model's input side in pixels (faces are cut out and resized to it)."""
        return self._active().image_size

    @property
    def backend(self) -> str:
        """What runs the model, in words (as cyclemask-run's `backend:` line says)."""
        return self._active().description

    def __repr__(self) -> str:
        state = self._backend.description if self._backend is not None else "closed"
        return f"Masker(direction={self.direction!r}, model={str(self.model)!r}, backend={state!r})"

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the backend (its memory, its GPU); the Masker cannot be used afterwards."""
        be, self._backend = self._backend, None
        if be is not None and be.is_active:
            be.deactivate()

    def __enter__(self) -> "Masker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _active(self) -> "Backend":
        if self._backend is None:
            raise ConfigError("this Masker is closed: make a new one")
        return self._backend

    # -- images ---------------------------------------------------------------------------------
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The translated image: uint8 [H, W, 3] RGB in, the same shape out (a new array).
        Without a face (face-aware mode) it is a copy of the input."""
        return self._run([("image", check_image(image))])[0]

    def batch(self, images: Iterable[np.ndarray]) -> list[np.ndarray]:
        """Each image translated, in order: a sequence of uint8 [H, W, 3] arrays (sizes may
        differ) or one [N, H, W, 3] array. Faces of several images share model calls (up to
        `batch` crops per call); each image is on its own, as in `cyclemask-run --images`."""
        items = [(f"images[{i}]", check_image(im, f"images[{i}]")) for i, im in enumerate(images)]
        return self._run(items) if items else []

    def _run(self, items: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        from .memory import MemorySink, MemorySource
        from .run import run_frames

        with self._lock:
            be = self._active()
            sink = MemorySink()
            report = run_frames(self.options, be, self.batch_size, self._processor, MemorySource(items), sink)
        if report.interrupted:
            raise KeyboardInterrupt
        if report.error is not None:
            raise BackendError(report.error)
        if report.failures:
            raise InputError("; ".join(m if k in m else f"{k}: {m}" for k, m in report.failures))
        out = []
        for key, image in items:
            result = sink.images[key]
            # A frame without faces comes back as the very input array: never hand that out.
            out.append(result.copy() if result is image else result)
        return out

    def faces(self, image: np.ndarray) -> FaceLayout:
        """The faces `masker(image)` translates: their boxes, the crops cut around them, the
        landmarks the mask zone is built from, and the mattes the results are pasted with
        (aligned mode: the whole image, matte 1 everywhere; an erase-then-restore graph pasted in
        its hole: the most that hole can take, as its output decides the rest)."""
        from .faces import FaceProcessor
        from .template_mask import TemplateMaskProcessor

        image = check_image(image)
        h, w = image.shape[:2]
        with self._lock:
            self._active()
            processor = self._processor
            if not isinstance(processor, FaceProcessor):
                ones = np.ones((h, w), np.float32)
                return FaceLayout([FaceRegion((0.0, 0.0, float(w), float(h)), (0, 0, w, h), None, ones)], ones.copy())
            if isinstance(processor, TemplateMaskProcessor):
                return _template_layout(processor, image)
            _, pastes = processor.prepare(image)
            regions = []
            keep = np.ones((h, w), np.float32)  # the share of each pixel the input keeps
            for paste in pastes:
                weight = processor.paste_weight(paste).astype(np.float32)
                x0, y0, x1, y1 = paste.box
                ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
                if ax1 > ax0 and ay1 > ay0:  # finish blends the faces one after the other
                    keep[ay0:ay1, ax0:ax1] *= 1.0 - weight[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
                lm = None if paste.landmarks is None else np.array(paste.landmarks, np.float64)
                box = tuple(float(v) for v in (paste.face if paste.face is not None else (x0, y0, x1 - x0, y1 - y0)))
                regions.append(FaceRegion(box, tuple(int(v) for v in paste.box), lm, weight))
        return FaceLayout(regions, 1.0 - keep)

    # -- videos ---------------------------------------------------------------------------------
    def video(self, src: str | os.PathLike, dst: str | os.PathLike | None = None, *,
              overwrite: bool | None = None) -> VideoResult:
        """Translate every frame of the video file `src` into `dst` (a video file, or a folder
        that receives <name>_<direction>.mp4; None: beside `src`), with the sound, subtitles and
        timestamps kept, as `cyclemask-run --video` does. Faces are followed from frame to
        frame. Returns what was written (`result.output`, `result.report.written` frames) and
        any frames that failed (`result.failures`; the file is still written). Raises a
        CycleMaskError when no video could be written (src unreadable, dst refused or existing
        without overwrite, the run stopped)."""
        from .run import plan_video_outputs, run_video, VideoInput

        with self._lock:
            be = self._active()
            options = dataclasses.replace(self.options, detect_workers=self._video_detect_workers)
            if overwrite is not None:
                options = dataclasses.replace(options, overwrite=bool(overwrite))
            source = Path(src)
            if not source.is_file():
                raise InputError(f"{source}: no such video file" + (" (a folder: give one file)" if source.is_dir() else ""))
            out = Path(dst) if dst is not None else None
            target = plan_video_outputs([VideoInput(source)], out, be.direction or self.direction, several=False,
                                        overwrite=True)[0]
            if target.exists() and not options.overwrite:
                raise InputError(f"{target}: already exists; pass overwrite=True to replace it")
            face_config = None if options.aligned else options.face_config(video=True, backend=be)
            result = run_video(options, be, self.batch_size, face_config, self._detector, source, target,
                               masks=self._masks)
        if result.report is not None and result.report.interrupted:
            raise KeyboardInterrupt
        if not result.kept:
            raise InputError(result.error or f"{source}: not written")
        return result


def _template_layout(processor, image: np.ndarray) -> FaceLayout:
    """Masker.faces for the template method: each face's crop is the box its mask covers."""
    h, w = image.shape[:2]
    _, state = processor.prepare(image)
    keep = np.ones((h, w), np.float32)
    regions = []
    for box, landmarks, alpha in processor.mattes(image, state):
        ys, xs = np.nonzero(alpha > 0)
        x0, y0, x1, y1 = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, 0, 0)
        keep *= 1.0 - alpha
        regions.append(FaceRegion(tuple(float(v) for v in box), (x0, y0, x1, y1), landmarks,
                                  alpha[y0:y1, x0:x1].astype(np.float32)))
    return FaceLayout(regions, 1.0 - keep)
