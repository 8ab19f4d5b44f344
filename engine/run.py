"""A run of `cyclemask-run` as a library call: options in, a report out, no printing.

`RunOptions` holds everything a run takes besides its input and output; the CLI builds it from
its flags (`RunOptions.from_cli`) and the demo from its own few, so both build their backends
the same way (`backend_options`). `translate` opens the source, the backend and the sink, runs
the pipeline and returns what happened; the CLI prints it (docs/ARCHITECTURE.md, "The path of a
run").
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cyclemask.artifacts import DEFAULT_STREAMS
from cyclemask.errors import ConfigError

from .backends import BACKEND_NAMES, Backend, BackendOptions, create_backend
from .faces import PASTE_MODES, ROTATED_MODES, FaceConfig, FaceProcessor, FaceStats
from .pipeline import PipelineConfig, RunReport, run_pipeline
from .processing import AlignedProcessor, FrameProcessor
from .run_defaults import built_batch, default_batch, precision_notes
from .sources import DEFAULT_MAX_PIXELS
from .video import DEFAULT_PRESET


@dataclass(frozen=True)
class RunOptions:
    """Everything a run takes besides its input and output, named as the CLI names it."""

    model: Path | None = None  # None: the embedded demo model
    backend: str = "auto"
    direction: str | None = None
    aligned: bool = False
    face_detector: Path | None = None
    min_face: int = FaceConfig.min_face
    margin: float = FaceConfig.margin
    no_track: bool = False
    color_match: bool = False
    paste: str = FaceConfig.paste
    detect_side: int = FaceConfig.detect_side
    detect_score: float = FaceConfig.score_threshold
    rotated_detection: str = "auto"  # full for photos, lost for tracked videos (see face_config)
    detect_workers: int = 2
    batch: int | None = None  # None: what suits the backend (engine/run_defaults.py)
    device: str = "auto"
    precision: str = "fp32"
    ort_provider: str = "auto"
    size: int | None = None
    streams: int = DEFAULT_STREAMS
    threads: int | None = None
    cuda_graphs: bool = False
    channels_last: bool = False
    compile: bool = False
    ov_mode: str = "throughput"
    ov_requests: int | None = None
    probe: bool = True
    cache: bool = True
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    quality: int = 95
    queue_depth: int = 2
    progress: bool = True
    # Video output (see engine/video.py).
    codec: str = "h264"
    crf: int | None = None
    preset: str = DEFAULT_PRESET
    no_audio: bool = False
    nvenc: bool | None = None  # None: try it where an NVIDIA driver is present

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_NAMES:
            raise ConfigError(f"backend must be one of {', '.join(BACKEND_NAMES)}; got {self.backend!r}")
        if self.paste not in PASTE_MODES:
            raise ConfigError(f"paste must be one of {', '.join(PASTE_MODES)}; got {self.paste!r}")
        if self.rotated_detection not in ("auto",) + ROTATED_MODES:
            raise ConfigError(f"rotated_detection must be one of auto, {', '.join(ROTATED_MODES)}; "
                              f"got {self.rotated_detection!r}")
        if self.model is not None:
            object.__setattr__(self, "model", Path(self.model))
        if self.face_detector is not None:
            object.__setattr__(self, "face_detector", Path(self.face_detector))
        for name in ("batch", "queue_depth", "streams", "max_pixels"):
            v = getattr(self, name)
            if name == "batch" and v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer; got {v!r}")

    @classmethod
    def from_cli(cls, params: dict[str, Any]) -> "RunOptions":
        """From the CLI's parameters: every one must be a field (a flag added to the CLI needs
        its field here, or the run would silently ignore it)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        params = {("compile" if k == "compile_" else k): v for k, v in params.items()}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise TypeError(f"RunOptions has no field for {', '.join(unknown)}")
        return cls(**params)

    def backend_options(self) -> BackendOptions:
        max_batch = self.batch if self.batch is not None else built_batch(self.device, self.cuda_graphs, self.compile)
        return BackendOptions(device=self.device, precision=self.precision, image_size=self.size,
                              max_batch=max_batch, ort_provider=self.ort_provider, threads=self.threads,
                              streams=self.streams, cuda_graphs=self.cuda_graphs, channels_last=self.channels_last,
                              compile=self.compile, ov_mode=self.ov_mode, ov_requests=self.ov_requests,
                              probe=self.probe, cache=self.cache)

    def batch_for(self, backend: Backend) -> tuple[int, str | None]:
        """The batch a run of this loaded backend takes, and why when --batch did not say it."""
        if self.batch is not None:
            return self.batch, None
        return default_batch(backend)

    def face_config(self, *, video: bool) -> FaceConfig:
        # Photos in a folder are unrelated to each other: following faces across them is wrong.
        follow = video and not self.no_track
        rotated = self.rotated_detection
        if rotated == "auto":
            rotated = "lost" if follow else "full"
        elif rotated == "lost" and not follow:
            raise ConfigError("--rotated-detection lost needs faces followed across video frames "
                              "(--video without --no-track); use full or off")
        return FaceConfig(min_face=self.min_face, margin=self.margin, track=follow, color_match=self.color_match,
                          paste=self.paste, detect_side=self.detect_side, detect_retry=not video,
                          score_threshold=self.detect_score, rotated=rotated)

    def video_config(self):
        from .video import VideoOutputConfig

        return VideoOutputConfig(codec=self.codec, crf=self.crf, preset=self.preset, audio=not self.no_audio,
                                 nvenc=self.nvenc)


def resolve_model(options: RunOptions) -> tuple[Path, str | None]:
    """The model file to run and, for the embedded demo model, what to say about it."""
    if options.model is not None:
        return options.model, None
    from cyclemask.demo_model import default_model, describe_default

    return default_model(options.direction, options.backend), describe_default()


def face_detector_path(options: RunOptions) -> Path | None:
    """The YuNet file face-aware mode uses (None in aligned mode): --face-detector, else
    $CYCLEMASK_FACE_DETECTOR, else the model shipped with cyclemask; ConfigError when a given
    one is missing."""
    from cyclemask.faces import resolve_detector_path

    if options.aligned:
        return None
    if options.face_detector is not None and not options.face_detector.is_file():
        raise ConfigError(f"--face-detector {options.face_detector}: no such file (a YuNet ONNX model is expected)")
    return resolve_detector_path(options.face_detector)


def describe_mode(face_config: FaceConfig | None, detector: Path | None = None) -> str:
    """The `mode:` line: how faces are found and pasted, or aligned mode."""
    if face_config is None:
        return "aligned (whole image = face)"
    c = face_config
    track = "tracked across frames" if c.track else "each frame on its own"
    pasted = "mask zone pasted" if c.paste == "zone" else "whole crop pasted"
    rotated = {"full": ", rotated passes on every frame", "lost": ", rotated passes around lost faces",
               "off": ""}[c.rotated]
    name = f" {Path(detector).name}" if detector is not None else ""
    return (f"face-aware (YuNet{name}, score >= {c.score_threshold:g}{rotated}, min face {c.min_face} px, "
            f"margin {c.margin:g}, {pasted}, {track}{', colour matched' if c.color_match else ''})")


@dataclass
class RunStart:
    """What a run is about to do, once its backend is loaded (the CLI prints it)."""

    source: str
    output: str
    model: str
    backend: Backend
    reason: str
    mode: str
    total: int | None
    batch: int = 1
    batch_reason: str | None = None  # why this batch, when --batch did not say it
    notes: list[str] = dataclasses.field(default_factory=list)  # about the precision that runs


@dataclass
class RunResult:
    report: RunReport
    backend: Backend
    reason: str
    setup_s: float
    output: str
    faces: str | None  # the face statistics' summary (face-aware mode)
    model_note: str | None  # what the embedded demo model is, when it ran
    face_stats: FaceStats | None = None  # face-aware mode: the counts behind `faces`


def translate(options: RunOptions, *, images: Path | None = None, video: str | os.PathLike | None = None,
              out: Path | None = None,
              on_start: Callable[[RunStart], Callable[[int], None] | None] | None = None) -> RunResult:
    """Translate an image folder or a video (a file, a capture device or a stream URL): open the
    source (input errors come before any model loads), the backend, the sink and the output's
    lock (a second live run on the same output is refused); run the pipeline; close everything.
    `on_start` is told what runs once the model is loaded and may return a progress callback
    (called with the number of inputs finished)."""
    from cyclemask.outputs import OutputLock

    from .sinks import ImageFolderSink, default_images_out, video_output_path
    from .sources import ImageFolderSource
    from .video import VideoSink, VideoSource

    if (images is None) == (video is None):
        raise ConfigError("give exactly one input: an image folder or a video")
    detector = face_detector_path(options)
    face_config = None if options.aligned else options.face_config(video=video is not None)
    video_config = options.video_config() if video is not None else None
    t0 = time.perf_counter()
    source = ImageFolderSource(images, max_pixels=options.max_pixels) if images is not None else VideoSource(video)
    lock = None
    try:
        model, model_note = resolve_model(options)
        be, reason = create_backend(model, options.backend, options.direction, options.backend_options())
        with be:
            setup_s = time.perf_counter() - t0
            batch, batch_reason = options.batch_for(be)
            name = be.direction or "out"
            if images is not None:
                out_root = out if out is not None else default_images_out(images, name)
                lock = OutputLock(out_root, "cyclemask-run").probe()  # busy: say so before "exists"
                sink = ImageFolderSink(images, out_root, source.paths, overwrite=options.overwrite,
                                       quality=options.quality)
            else:
                out_path = video_output_path(video, out, name)
                lock = OutputLock(out_path, "cyclemask-run", folder=False).probe()
                sink = VideoSink(out_path, source.info, source=source, overwrite=options.overwrite,
                                 config=video_config)
            lock.acquire()  # after the sink's checks: nothing is created beside a refused output
            processor: FrameProcessor
            if face_config is None:
                processor = AlignedProcessor(be.image_size)
            else:
                processor = FaceProcessor(be.image_size, face_config, model_path=detector)
            mode = describe_mode(face_config, detector)
            label = f"{model}: {model_note}" if model_note else str(model)
            progress = None
            if on_start is not None:
                progress = on_start(RunStart(source.describe(), sink.describe(), label, be, reason, mode,
                                             source.total, batch, batch_reason, precision_notes(be)))
            run_source = source
            if isinstance(processor, FaceProcessor):
                run_source = processor.detect_ahead(source, options.detect_workers)
            report = run_pipeline(run_source, processor, be, sink, PipelineConfig(batch, options.queue_depth),
                                  progress=progress)
    finally:
        source.close()
        if lock is not None:
            lock.release()
    stats = None if face_config is None else processor.stats
    faces = None if stats is None else stats.summary(options.min_face)
    return RunResult(report, be, reason, setup_s, sink.describe(), faces, model_note, stats)
