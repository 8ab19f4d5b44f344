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

from cyclemask.errors import ConfigError

from .backends import BACKEND_NAMES, Backend, BackendOptions, create_backend
from .backends.options import OPTIONS, run_fields
from .faces import PASTE_MODES, ROTATED_MODES, FaceConfig, FaceProcessor, FaceStats

PASTE_CHOICES = ("auto",) + PASTE_MODES
from .pipeline import PipelineConfig, RunReport, run_pipeline
from .processing import AlignedProcessor, FrameProcessor
from .run_defaults import built_batch, default_batch, precision_notes
from .sources import DEFAULT_MAX_PIXELS
from .template_mask import check_method, default_method
from .video import DEFAULT_PRESET


@dataclass(frozen=True)
class _RunOptions:
    """Everything a run takes besides its input and output, named as the CLI names it. The
    backend's settings (device, precision, threads, ...) are fields too, added to `RunOptions`
    from their declarations (engine/backends/options.py)."""

    model: Path | None = None  # None: the embedded demo model
    backend: str = "auto"
    direction: str | None = None
    aligned: bool = False
    face_detector: Path | None = None
    min_face: int = FaceConfig.min_face
    margin: float = FaceConfig.margin
    no_track: bool = False
    no_face_checks: bool = False
    no_upright: bool = False
    color_match: bool = False
    # auto: zone for a generator, hole-below-eyes for an erase-then-restore graph (README, "The
    # unmasking models": on the held-out pairs it keeps the person as often as the zone does and
    # takes off more of each mask; its whole hole keeps the person less often).
    paste: str = "auto"
    detect_side: int = FaceConfig.detect_side
    detect_score: float = FaceConfig.score_threshold
    rotated_detection: str = "auto"  # full for photos, lost for tracked videos (see face_config)
    detect_workers: int = 2
    batch: int | None = None  # None: what suits the backend (engine/run_defaults.py)
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    quality: int = 95
    queue_depth: int = 2
    progress: bool = True
    # Video output (see engine/video/).
    codec: str = "h264"
    crf: int | None = None
    preset: str = DEFAULT_PRESET
    no_audio: bool = False
    nvenc: bool | None = None  # None: try it where an NVIDIA driver is present
    # --mask-method template (engine/template_mask.py): no model, a mask template per face.
    # None: what default_method picks (the template warp for masking with the embedded model,
    # face-aware; the generator otherwise), as cyclemask-run does.
    mask_method: str | None = None
    mask_templates: Path | None = None  # None: the templates shipped with cyclemask
    mask_textures: Path | None = None
    mask_seed: int | None = None  # None: 0
    mask_kinds: str | None = None  # comma-separated; None: the synth's default kinds
    # --unmask with the embedded model: "restore" (segment, erase, restore) or "cyclegan"; None:
    # the shipped default (cyclemask.demo_model.default_unmask_method, chosen by figures).
    unmask_method: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_NAMES:
            raise ConfigError(f"backend must be one of {', '.join(BACKEND_NAMES)}; got {self.backend!r}")
        if self.paste not in PASTE_CHOICES:
            raise ConfigError(f"paste must be one of {', '.join(PASTE_CHOICES)}; got {self.paste!r}")
        if self.rotated_detection not in ("auto",) + ROTATED_MODES:
            raise ConfigError(f"rotated_detection must be one of auto, {', '.join(ROTATED_MODES)}; "
                              f"got {self.rotated_detection!r}")
        if self.unmask_method is not None:
            from cyclemask.demo_model import UNMASK_METHODS

            if self.unmask_method not in UNMASK_METHODS:
                raise ConfigError(f"unmask_method must be one of {', '.join(UNMASK_METHODS)}; got {self.unmask_method!r}")
            if self.direction == "mask":
                raise ConfigError("--unmask-method applies to --unmask, not --mask")
            if self.model is not None:
                raise ConfigError("--unmask-method picks an embedded model: it cannot be given with --model")
        if self.mask_method is None:
            object.__setattr__(self, "mask_method", default_method(direction=self.direction, model=self.model,
                                                                   aligned=self.aligned))
        check_method(self.mask_method, direction=self.direction, aligned=self.aligned, model=self.model,
                     templates=self.mask_templates, textures=self.mask_textures, seed=self.mask_seed,
                     kinds=self.mask_kinds)
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
    def from_cli(cls, params: dict[str, Any]) -> "_RunOptions":
        """From the CLI's parameters: every one must be a field (a flag added to the CLI by hand
        needs its field here, or the run would silently ignore it; a declared backend option
        brings its own, engine/backends/options.py)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise TypeError(f"RunOptions has no field for {', '.join(unknown)}")
        return cls(**params)

    def backend_options(self) -> BackendOptions:
        max_batch = self.batch if self.batch is not None else built_batch(self.device, self.cuda_graphs, self.compile)
        return BackendOptions(max_batch=max_batch, **{o.name: getattr(self, o.run_field) for o in OPTIONS if o.cli})

    def batch_for(self, backend: Backend) -> tuple[int, str | None]:
        """The batch a run of this loaded backend takes, and why when --batch did not say it."""
        if self.batch is not None:
            return self.batch, None
        return default_batch(backend)

    def face_config(self, *, video: bool, backend: Backend | None = None) -> FaceConfig:
        """paste "auto" is "hole-below-eyes" for an erase-then-restore graph (it changes only its
        hole's pixels, see FaceConfig) and "zone" for a generator; before the backend is known,
        "zone"."""
        paste = paste_for(self.paste, backend)
        # Photos in a folder are unrelated to each other: following faces across them is wrong.
        follow = video and not self.no_track
        rotated = self.rotated_detection
        if rotated == "auto":
            rotated = "lost" if follow else "full"
        elif rotated == "lost" and not follow:
            raise ConfigError("--rotated-detection lost needs faces followed across video frames "
                              "(--video without --no-track); use full or off")
        return FaceConfig(min_face=self.min_face, margin=self.margin, track=follow, color_match=self.color_match,
                          paste=paste, detect_side=self.detect_side, detect_retry=not video,
                          score_threshold=self.detect_score, rotated=rotated, face_checks=not self.no_face_checks,
                          upright=not self.no_upright)

    def template_masks(self):
        """The loaded mask templates for --mask-method template (None for the generator)."""
        if self.mask_method != "template":
            return None
        from .template_mask import MaskSet, TemplateConfig

        return MaskSet(TemplateConfig(templates=self.mask_templates, textures=self.mask_textures,
                                      seed=self.mask_seed or 0,
                                      kinds=tuple(k.strip() for k in (self.mask_kinds or "").split(",") if k.strip())
                                      or None))

    def video_config(self):
        from .video import VideoOutputConfig

        return VideoOutputConfig(codec=self.codec, crf=self.crf, preset=self.preset, audio=not self.no_audio,
                                 nvenc=self.nvenc)


# The backend's fields come from their declarations, so a new backend option needs no field here.
RunOptions = dataclasses.make_dataclass("RunOptions", run_fields(), bases=(_RunOptions,), frozen=True)
RunOptions.__module__ = __name__  # pickled (Ray workers): found by module and name
RunOptions.__doc__ = _RunOptions.__doc__


def paste_for(paste: str, backend: Backend | None) -> str:
    """--paste as it runs: "auto" is "hole-below-eyes" for an erase-then-restore graph (the
    backend's metadata says method "restore"), else "zone"."""
    return paste_for_method(paste, None if backend is None else backend.metadata.get("method"))


def paste_for_method(paste: str, method: str | None) -> str:
    """paste_for, given the graph's method ("restore", "gan", ...; None when not known)."""
    if paste != "auto":
        return paste
    return "hole-below-eyes" if method == "restore" else "zone"


def output_name(direction: str | None) -> str:
    """The <direction> in output names (<input>_<direction>): what the model translates, or
    "out" when neither the command nor the model says. Local and --ray runs name outputs by it."""
    return direction or "out"


def resolve_model(options: RunOptions) -> tuple[Path, str | None]:
    """The model file to run and, for the embedded demo model, what to say about it."""
    if options.model is not None:
        return options.model, None
    from cyclemask.demo_model import default_model, describe_default

    return default_model(options.direction, options.backend, options.unmask_method), describe_default()


def face_detector_path(options: RunOptions) -> Path | None:
    """The YuNet file face-aware mode uses (None in aligned mode): --face-detector, else
    $CYCLEMASK_FACE_DETECTOR, else the model shipped with cyclemask; ConfigError when a given
    one is missing."""
    from cyclemask.face_detect import resolve_detector_path

    if options.aligned:
        return None
    if options.face_detector is not None and not options.face_detector.is_file():
        raise ConfigError(f"--face-detector {options.face_detector}: no such file (a YuNet ONNX model is expected)")
    return resolve_detector_path(options.face_detector)


def describe_mode(face_config: FaceConfig | None, detector: Path | None = None, method: str = "gan") -> str:
    """The `mode:` line: how faces are found and pasted, or aligned mode."""
    if face_config is None:
        return "aligned (whole image = face)"
    c = face_config
    track = "tracked across frames" if c.track else "each frame on its own"
    pasted = {"zone": "mask zone pasted", "hole": "the segmented mask erased and restored",
              "hole-below-eyes": "the segmented mask below the eyes erased and restored",
              "crop": "whole crop pasted"}[c.paste]
    if method == "template":
        pasted = "a mask template warped onto each face's landmarks"
    rotated = {"full": ", rotated passes on every frame", "lost": ", rotated passes around lost faces",
               "off": ""}[c.rotated]
    name = f" {Path(detector).name}" if detector is not None else ""
    return (f"face-aware (YuNet{name}, score >= {c.score_threshold:g}{rotated}, min face {c.min_face} px, "
            f"margin {c.margin:g}, {pasted}, {track}{', colour matched' if c.color_match else ''})")


def load_backend(options: RunOptions, masks=None) -> tuple[Backend, str, Path | str, str | None]:
    """The backend a run uses, not yet active, why it was chosen, the model file and what to
    say about the embedded model (None for a model the user gave). With template masks
    (`RunOptions.template_masks`), their stand-in backend, which is never called."""
    if masks is not None:
        return masks.backend(), "--mask-method template", f"{masks.config.folder} ({masks.describe()})", None
    model, model_note = resolve_model(options)
    be, reason = create_backend(model, options.backend, options.direction, options.backend_options())
    return be, reason, model, model_note


def make_processor(backend: Backend, face_config: FaceConfig | None, detector: Path | None, *,
                   one_detector: bool = False, masks=None) -> FrameProcessor:
    """The processor for an active backend: aligned (face_config None), template masks, or
    face-aware. A face-aware one holds its tracker, so a video needs a fresh one. one_detector:
    see FaceProcessor."""
    if face_config is None:
        return AlignedProcessor(backend.image_size)
    if masks is not None:
        return masks.processor(face_config, model_path=detector)
    return FaceProcessor(backend.image_size, face_config, model_path=detector, one_detector=one_detector)


def run_frames(options: RunOptions, backend: Backend, batch: int, processor: FrameProcessor, source, sink,
               progress: Callable[[int], None] | None = None) -> RunReport:
    """The pipeline over one source into one sink, faces detected ahead when face-aware."""
    if isinstance(processor, FaceProcessor):
        source = processor.detect_ahead(source, options.detect_workers)
    return run_pipeline(source, processor, backend, sink, PipelineConfig(batch, options.queue_depth),
                        progress=progress)


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
    masks = options.template_masks()  # a bad template folder is said before any input opens
    t0 = time.perf_counter()
    source = ImageFolderSource(images, max_pixels=options.max_pixels) if images is not None else VideoSource(video)
    lock = None
    try:
        be, reason, model, model_note = load_backend(options, masks)
        with be:
            if face_config is not None:
                face_config = options.face_config(video=video is not None, backend=be)
            setup_s = time.perf_counter() - t0
            batch, batch_reason = options.batch_for(be) if masks is None else (1, None)
            name = output_name(be.direction)
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
            processor = make_processor(be, face_config, detector, masks=masks)
            mode = describe_mode(face_config, detector, options.mask_method)
            label = f"{model}: {model_note}" if model_note else str(model)
            progress = None
            if on_start is not None:
                progress = on_start(RunStart(source.describe(), sink.describe(), label, be, reason, mode,
                                             source.total, batch, batch_reason, precision_notes(be)))
            report = run_frames(options, be, batch, processor, source, sink, progress)
    finally:
        source.close()
        if lock is not None:
            lock.release()
    stats = None if face_config is None else processor.stats
    faces = None if stats is None else stats.summary(options.min_face)
    return RunResult(report, be, reason, setup_s, sink.describe(), faces, model_note, stats)


# ---------------------------------------------------------------------------------------------
# Several videos in one run


@dataclass(frozen=True)
class VideoInput:
    """One video of a run of several, and the folder it was found under (None when named)."""

    path: Path
    folder: Path | None = None


@dataclass
class VideoResult:
    """What became of one video: its output, the pipeline's report (None when it never ran:
    the file could not be opened, or its output was refused) and why it failed, if it did."""

    source: str
    output: Path
    report: RunReport | None = None
    error: str | None = None  # the file's own failure (it never ran, or the run stopped on it)
    faces: str | None = None  # the face statistics' summary (face-aware mode)
    kept: bool = False  # the output file exists: the run finished, with or without failed frames
    stats: Any = dataclasses.field(default=None, repr=False)  # FaceStats (face-aware mode)

    @property
    def failures(self) -> list[str]:
        """Every problem with this file, one line each (naming the file)."""
        out = [self.error] if self.error else []
        if self.report is not None:
            out += [m if k in m else f"{k}: {m}" for k, m in self.report.failures]
        return out

    @property
    def ok(self) -> bool:
        return self.kept and not self.failures


@dataclass
class VideosResult:
    """A run over several videos: one backend, each video's result in input order."""

    videos: list[VideoResult]
    backend: Backend
    reason: str
    setup_s: float
    elapsed_s: float = 0.0
    model_note: str | None = None
    faces: str | None = None  # the face statistics over every video (face-aware mode)
    interrupted: bool = False
    not_run: list[VideoInput] = dataclasses.field(default_factory=list)  # never reached (a stop)

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.not_run and all(v.ok for v in self.videos)


def list_video_inputs(videos: list[str | os.PathLike]) -> list[VideoInput]:
    """The videos named: files, and the videos under folders (recursive, sorted). A name that is
    nothing, or a folder without videos, is an InputError before anything runs: it is a mistake
    in the command, not a bad file. A device or a stream cannot be one of several (it ends only
    when stopped)."""
    from cyclemask.errors import InputError

    from .video import VIDEO_INPUT_SUFFIXES, is_live, list_videos

    found: list[VideoInput] = []
    for v in videos:
        p = Path(v)
        if is_live(v):
            if len(videos) > 1 or p.is_dir():
                raise ConfigError(f"--video {v}: a capture device or stream must be the only --video "
                                  "(it ends only when stopped)")
            found.append(VideoInput(p))
        elif p.is_dir():
            paths = list_videos(p)
            if not paths:
                raise InputError(f"{p}: no videos found (looked recursively for {', '.join(VIDEO_INPUT_SUFFIXES)})")
            found += [VideoInput(q, p) for q in paths]
        elif p.exists():
            found.append(VideoInput(p))
        else:
            raise InputError(f"{p}: no such video file or folder")
    return found


def plan_video_outputs(inputs: list[VideoInput], out: Path | None, direction: str, *,
                       several: bool, overwrite: bool) -> list[Path]:
    """Each video's output, named as for one video (<stem>_<direction>.mp4, see
    `video_output_path`): beside a named file, or in --out; a folder's videos go under
    --out (default <folder>_<direction> beside it) in the folder's own subfolders. With several
    videos --out must be a folder. Refused before anything runs: two videos with one output, an
    output that is an input, an --out inside a folder of inputs, and existing outputs without
    overwrite."""
    from cyclemask.errors import InputError

    from .sinks import default_images_out, translated_video_name, video_output_path

    if several and out is not None and (out.suffix or out.exists()) and not out.is_dir():
        raise ConfigError(f"--out {out}: with several videos --out must be a folder (each video's output is "
                          f"named <name>_{direction}.mp4 in it)")
    outputs: list[Path] = []
    roots: dict[Path, Path] = {}  # input folder -> its output root (placed, and warned about, once)
    for item in inputs:
        if item.folder is None:
            outputs.append(video_output_path(item.path, out, direction))
            continue
        src = item.folder.resolve()
        if src not in roots:
            root = (out if out is not None else default_images_out(item.folder, direction)).resolve()
            if root == src or src in root.parents or root in src.parents:
                raise InputError(f"--out {root}: must be a folder outside the input folder {item.folder}, and "
                                 "not contain it (outputs would be read as inputs by the next run)")
            roots[src] = root
        root = roots[src]
        rel = item.path.relative_to(item.folder).parent
        outputs.append(root / rel / translated_video_name(item.path, direction))
    sources = {i.path.resolve(): i.path for i in inputs if i.path.exists()}
    seen: dict[Path, Path] = {}
    for item, target in zip(inputs, outputs):
        if target in sources:
            raise InputError(f"{item.path}: its output {target} is the input video {sources[target]}; "
                             "give --out a folder elsewhere")
        if target in seen:
            raise InputError(f"{seen[target]} and {item.path} would both be written to {target}: rename one, "
                             "or run them separately")
        seen[target] = item.path
    existing = [t for t in outputs if t.exists()]
    if existing and not overwrite:
        raise InputError(f"{len(existing)} output file(s) already exist, e.g. {existing[0]}; "
                         "pass --overwrite to replace them")
    return outputs


def run_video(options: RunOptions, backend: Backend, batch: int, face_config: FaceConfig | None,
              detector: Path | None, video: str | os.PathLike, output: Path,
              on_video: Callable[[str, Path, int | None], Callable[[int], None] | None] | None = None,
              masks=None) -> VideoResult:
    """One video through an active backend (or template `masks`) into `output`. Whatever is wrong with this file
    (it does not open, its output is refused, the run stops on it) is in the result, not raised:
    the next video still runs. A stop (Ctrl-C) is in `result.report.interrupted`.
    `on_video(source, output, frames or None)` may return a progress callback."""
    from cyclemask.errors import CycleMaskError
    from cyclemask.outputs import OutputLock

    from .video import VideoSink, VideoSource

    result = VideoResult(str(video), Path(output))
    try:
        source = VideoSource(video)
    except CycleMaskError as exc:
        result.error = str(exc)
        return result
    lock = None
    try:
        lock = OutputLock(result.output, "cyclemask-run", folder=False).probe()
        sink = VideoSink(result.output, source.info, source=source, overwrite=options.overwrite,
                         config=options.video_config())
        lock.acquire()
        processor = make_processor(backend, face_config, detector, masks=masks)  # its tracker starts afresh
        progress = on_video(result.source, result.output, source.total) if on_video is not None else None
        report = run_frames(options, backend, batch, processor, source, sink, progress)
    except CycleMaskError as exc:
        result.error = str(exc)
        return result
    finally:
        source.close()
        if lock is not None:
            lock.release()
    result.report = report
    result.kept = not report.stopped or bool(source.live)
    if isinstance(processor, FaceProcessor):
        result.faces = processor.stats.summary(options.min_face)
        result.stats = processor.stats
    if report.error is not None:
        result.error = f"{video}: {report.error}" if str(video) not in report.error else report.error
    return result


def translate_videos(options: RunOptions, videos: list[str | os.PathLike], *, out: Path | None = None,
                     on_start: Callable[[RunStart], None] | None = None,
                     on_video: Callable[[str, Path, int | None], Callable[[int], None] | None] | None = None
                     ) -> VideosResult:
    """Translate several videos (files, and folders of videos) with one backend: the inputs are
    listed first (a name that is nothing is an error before any model loads), each output is
    planned and checked once the backend is loaded, then the videos run one after the other. One
    bad video (it does not open, it is damaged, its output cannot be written) is recorded and the
    others still run; Ctrl-C (SIGTERM) stops after cleaning up the video being written."""
    from .faces import FaceStats

    inputs = list_video_inputs(videos)
    detector = face_detector_path(options)
    face_config = None if options.aligned else options.face_config(video=True)
    options.video_config()  # a bad codec setting is refused before the model loads
    t0 = time.perf_counter()
    masks = options.template_masks()
    be, reason, model, model_note = load_backend(options, masks)
    with be:
        if face_config is not None:
            face_config = options.face_config(video=True, backend=be)
        setup_s = time.perf_counter() - t0
        batch, batch_reason = options.batch_for(be) if masks is None else (1, None)
        several = len(inputs) > 1 or any(i.folder is not None for i in inputs)
        outputs = plan_video_outputs(inputs, out, output_name(be.direction), several=several,
                                     overwrite=options.overwrite)
        if on_start is not None:
            label = f"{model}: {model_note}" if model_note else str(model)
            shown = ", ".join(str(v) for v in videos)
            if out is not None:
                out_shown = str(out.resolve())
            else:
                places = list(dict.fromkeys(str(t.parent) for t in outputs))
                out_shown = ", ".join(places[:3]) + (f" and {len(places) - 3} more folders" if len(places) > 3 else "")
            on_start(RunStart(f"{shown} ({len(inputs)} videos)", out_shown, label, be, reason,
                              describe_mode(face_config, detector, options.mask_method), len(inputs), batch, batch_reason,
                              precision_notes(be)))
        result = VideosResult([], be, reason, setup_s, model_note=model_note)
        stats = FaceStats()
        start = time.perf_counter()
        for k, (item, target) in enumerate(zip(inputs, outputs)):
            try:
                one = run_video(options, be, batch, face_config, detector, item.path, target, on_video, masks=masks)
            except KeyboardInterrupt:  # between two videos, or while one was opening
                result.interrupted = True
                result.not_run = inputs[k:]
                break
            result.videos.append(one)
            if one.stats is not None:
                for f in dataclasses.fields(FaceStats):
                    if not f.name.startswith("_"):
                        setattr(stats, f.name, getattr(stats, f.name) + getattr(one.stats, f.name))
            if one.report is not None and one.report.interrupted:
                result.interrupted = True
                result.not_run = inputs[k + 1:]
                break
        result.elapsed_s = time.perf_counter() - start
    if face_config is not None:
        result.faces = stats.summary(options.min_face)
    return result
