"""Throughput of the generator on this machine's backends, raw and through the whole pipeline.

    python benchmarks/throughput.py                  # the quick table: a few minutes on 2 CPU cores
    python benchmarks/throughput.py --all            # every variant, both models, every batch
    python benchmarks/throughput.py --json           # the same as JSON
    python benchmarks/throughput.py --all --device cuda --batches 1,8,32 --out results/

Without --all it measures the paper's generator ("full") with the backend `cyclemask-run
--backend auto` picks for its ONNX graph (at the batch cyclemask-run would use) against eager
PyTorch FP32 at each batch, and runs the pipeline rows at each one's best batch. --all measures
each model (the paper's generator "full": ngf 64, 9 blocks, 256 px; "small": ngf 16, 3 blocks,
128 px) x each available variant (benchmarks/variants.py: Torch / ONNX Runtime / OpenVINO /
TensorRT, each precision and mode; a backend added to engine.backends later shows up by itself)
x each batch size. Progress goes to stderr and each row to stdout as soon as it is measured; a
first Ctrl-C or SIGTERM stops within one timing call, prints what was measured and `stopped`,
removes the temporary folder and exits 130 / 143. Each row has:

- images/s: generator only, `Backend.infer` on a uint8 batch in host memory (the copies to and
  from the device and the in-graph pre/post-processing included: what the pipeline pays).
  Untimed warm-up calls first, at least --warmup of them and for at least --warmup-seconds
  (the first calls of a backend can be far slower than the rest: oneDNN's BF16 kernels took
  ~0.9 s for each of their first few calls here, against 12 ms after); each repeat runs calls
  for at least --min-seconds, ending with the device synchronised (infer returns host memory,
  and CUDA is synchronised around each repeat); the figure is the median over repeats. Where
  the pipeline then runs faster than that figure (it cannot: it adds work around the same
  calls), the backend was still warming up: the raw figure is measured again, and a note says so. Backends that keep several batches in flight
  (TensorRT streams) are timed with that many in flight.
- p50 / p99 ms: latency of one infer() call of the batch.
- video / folder images/s: `run_pipeline` end to end (decode, resize, batch, infer, resize
  back, encode, write) on an mp4 video and on a folder of JPEG faces (../shared/data when
  present, else synthetic), with as many frames as --pipeline-seconds of raw throughput needs;
  and each divided by the raw images/s of the row (pipeline/raw: 1.0 means the rest of the
  pipeline hides completely behind the model).
- GMAC/s: multiply-accumulates per second achieved (`cyclemask.models.count_macs` x images/s).
- % peak (CUDA): 2 x MAC/s over the FLOP/s of a large FP16 matrix product measured in the same run.

Every row is measured in one process, one after another, so ratios between rows hold; the load
average at the start and end is printed, because other work on the machine moves the figures.
Face-aware rows (benchmarks/faces.py: detection, crop, paste) follow when that module and the
YuNet model are present.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks.*` importable
    sys.path.insert(0, str(REPO))

from benchmarks import inputs  # noqa: E402
from benchmarks.variants import MODELS, Artefacts, ArtefactUnavailable, Variant, seeded_generator, select  # noqa: E402
from cyclemask.cli_util import Command, debug_option, stop_exit_code, stop_name, stop_signal  # noqa: E402
from cyclemask.errors import ConfigError, CycleMaskError, own_module_missing  # noqa: E402

log = logging.getLogger("cyclemask.benchmarks.throughput")

DEFAULTS = {  # per device kind: what a few minutes of a 2-core CPU or a GPU allows
    "cpu": {"batches": (1, 4), "min_seconds": 0.5, "warmup": 1, "warmup_seconds": 2.0, "pipeline_seconds": 3.0},
    "cuda": {"batches": (1, 8, 32), "min_seconds": 0.25, "warmup": 5, "warmup_seconds": 1.0, "pipeline_seconds": 2.0},
}
#: Without --all: the paper's generator only; the `auto` backend and eager PyTorch FP32.
QUICK_MODELS = ("full",)
AUTO = "auto"
#: Pipeline faster than raw by more than this is not noise: the raw figure is measured again.
PIPELINE_OVER_RAW_LIMIT = 1.1


@dataclass
class Row:
    model: str
    variant: str
    backend: str
    precision: str
    batch: int
    images_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    calls: int
    macs_per_image: int
    video_images_per_s: float | None = None
    folder_images_per_s: float | None = None
    pipeline_frames: int | None = None
    peak_tflops: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def gmac_per_s(self) -> float:
        return self.macs_per_image * self.images_per_s / 1e9

    @property
    def peak_fraction(self) -> float | None:
        if not self.peak_tflops:
            return None
        return 2.0 * self.macs_per_image * self.images_per_s / (self.peak_tflops * 1e12)

    def ratio(self, which: str) -> float | None:
        v = self.video_images_per_s if which == "video" else self.folder_images_per_s
        return None if v is None or not self.images_per_s else v / self.images_per_s

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(gmac_per_s=round(self.gmac_per_s, 3), video_over_raw=_r(self.ratio("video"), 3),
                 folder_over_raw=_r(self.ratio("folder"), 3), peak_fraction=_r(self.peak_fraction, 5))
        return d


def _r(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


# ------------------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (0..100) with linear interpolation, as numpy's default."""
    if not values:
        raise ValueError("no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _sync() -> None:
    """Wait for queued CUDA work, when torch has initialised CUDA (no-op on CPU runs)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def warm_up(backend, x: np.ndarray, calls: int, seconds: float) -> int:
    """Untimed calls: at least `calls`, for at least `seconds`, and on past that while the last
    call is over twice the fastest (still compiling or tuning), up to 10x `seconds`. Returns
    how many were made."""
    t0, fastest, last, n = time.perf_counter(), math.inf, 0.0, 0
    while True:
        t = time.perf_counter()
        if n >= calls:
            spent = t - t0
            if spent >= seconds and (last <= 2 * fastest or spent >= 10 * seconds):
                return n
        backend.infer(x)
        last = time.perf_counter() - t
        fastest = min(fastest, last)
        n += 1


def time_raw(backend, batch: int, *, warmup: int, repeats: int, min_seconds: float,
             warmup_seconds: float = 1.0) -> tuple[float, list[float]]:
    """(median images/s over repeats, per-call latencies in s) of backend.infer on one batch."""
    size = backend.image_size
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    warm_up(backend, x, warmup, warmup_seconds)
    window = max(1, int(getattr(backend, "max_in_flight", 1)))
    rates, latencies = [], []
    for _ in range(repeats):
        _sync()
        n, t0 = 0, time.perf_counter()
        if window == 1:
            while True:
                t = time.perf_counter()
                backend.infer(x)
                latencies.append(time.perf_counter() - t)
                n += 1
                if time.perf_counter() - t0 >= min_seconds:
                    break
        else:  # keep `window` batches in flight, as the pipeline does
            pending: collections.deque = collections.deque()
            while True:
                pending.append(backend.submit(x))
                n += 1
                if len(pending) >= window:
                    pending.popleft().result()
                if time.perf_counter() - t0 >= min_seconds:
                    break
            while pending:
                pending.popleft().result()
        _sync()
        rates.append(n * batch / (time.perf_counter() - t0))
    if window > 1:  # latency of a batch alone, nothing else in flight
        for _ in range(max(5, repeats)):
            t = time.perf_counter()
            backend.infer(x)
            latencies.append(time.perf_counter() - t)
    return statistics.median(rates), latencies


class PipelineInputs:
    """Benchmark videos and image folders of a given length, made once each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[tuple[str, int], Path] = {}

    def get(self, kind: str, n: int) -> Path:
        key = (kind, n)
        if key not in self._made:
            if kind == "video":
                self._made[key] = inputs.make_video(self.root / f"clip-{n}.mp4", n)
            else:
                self._made[key] = inputs.make_image_folder(self.root / f"faces-{n}", n)
        return self._made[key]


def time_pipeline(backend, kind: str, n: int, batch: int, pinputs: PipelineInputs, scratch: Path) -> float:
    """Images/s of `run_pipeline` over a video or an image folder of n inputs, outputs written."""
    from cyclemask.engine.pipeline import PipelineConfig, run_pipeline
    from cyclemask.engine.processing import AlignedProcessor
    from cyclemask.engine.sinks import ImageFolderSink
    from cyclemask.engine.sources import ImageFolderSource
    from cyclemask.engine.video import VideoSink, VideoSource

    src_path = pinputs.get(kind, n)
    out = Path(tempfile.mkdtemp(dir=scratch, prefix=f"out-{kind}-"))
    try:
        if kind == "video":
            source = VideoSource(src_path)
            sink = VideoSink(out / "out.mp4", source.info, source=src_path)
        else:
            source = ImageFolderSource(src_path)
            sink = ImageFolderSink(src_path, out / "faces", source.paths)
        rep = run_pipeline(source, AlignedProcessor(backend.image_size), backend, sink, PipelineConfig(batch_size=batch))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if rep.interrupted:  # the pipeline took the stop signal itself: it is the whole run's stop
        raise KeyboardInterrupt
    if not rep.ok or rep.written != n:
        raise CycleMaskError(f"pipeline run on {kind} failed: wrote {rep.written} of {n} "
                             f"({rep.error or '; '.join(m for _, m in rep.failures[:2])})")
    return rep.fps


def measure_peak_tflops(device: str) -> dict | None:
    """Dense FP16 matrix-product throughput of the GPU (TFLOP/s), the `% peak` reference."""
    import torch

    if not device.startswith("cuda"):
        return None
    n, iters = 8192, 10
    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0 / iters)
    del a, b
    torch.cuda.empty_cache()
    tflops = 2.0 * n ** 3 / statistics.median(times) / 1e12
    return {"tflops": round(tflops, 1), "what": f"{n}x{n}x{n} FP16 matmul, median of 5 x {iters}",
            "gpu": torch.cuda.get_device_name()}


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    device: str  # "cpu" | "cuda" | "all"
    models: tuple[str, ...]
    batches: tuple[int, ...]
    patterns: tuple[str, ...] | None
    repeats: int
    min_seconds: float
    warmup: int
    pipeline: bool
    pipeline_seconds: float
    max_frames: int
    faces: bool
    threads: int | None
    slow: bool = False
    warmup_seconds: float = 0.0
    # "every": the pipeline rows at every batch; "best": only at each variant's fastest batch
    # (the quick table).
    pipeline_at: str = "every"


def _pipeline_frames(raw_ips: float, batch: int, s: Settings) -> int:
    """Enough frames for ~pipeline_seconds at the raw rate: at least two batches."""
    want = int(math.ceil(raw_ips * s.pipeline_seconds))
    return max(2 * batch, min(want, s.max_frames))


@dataclass(frozen=True)
class AutoVariant:
    """The backend `cyclemask-run --backend auto` picks for the FP32 graph here, built the way it
    builds it; measured at the batch cyclemask-run would use (engine/run_defaults.py)."""

    name: str = AUTO
    precision: str = "fp32"
    device: str = "any"
    batch_bound: bool = False
    slow: bool = False

    def unavailable(self) -> str | None:
        return None

    def build(self, artefacts: Artefacts, *, batch: int | None = None, threads: int | None = None):
        from cyclemask.engine.backends import BackendOptions, create_backend

        return create_backend(artefacts.path("graph-fp32"), "auto", artefacts.direction, BackendOptions(threads=threads))


def choose_variants(s: Settings) -> tuple[list[Variant], list[dict]]:
    """The variants to measure, and the others with the reason each is not measured."""
    chosen: list[Variant] = []
    skipped: list[dict] = []
    named = {p for p in s.patterns or () if not any(c in p for c in "*?[")}  # named, not matched by a pattern
    if AUTO in named:
        chosen.append(AutoVariant())
    patterns = [p for p in s.patterns or () if p != AUTO]
    if s.patterns and not patterns:
        return chosen, skipped
    for v in select(patterns or None, "all"):
        why = v.unavailable()
        if why is None and s.device != "all" and v.device not in (s.device, "any"):
            why = f"not selected (--device {s.device})"
        if why is None and v.slow and not (s.slow or v.name in named):
            why = "costly to build here (marked slow): pass --slow, or name it in --variants"
        if why:
            skipped.append({"variant": v.name, "model": "*", "reason": why})
        else:
            chosen.append(v)
    return chosen, skipped


def new_result(s: Settings) -> dict:
    return {"meta": machine_info(s), "rows": [], "skipped": [], "face_rows": [], "notes": []}


def run(s: Settings, scratch: Path, on_row: Callable[[dict], None] | None = None,
        result: dict | None = None) -> dict:
    """Measure everything `s` asks for into `result` (new_result(s) when None: pass one to keep
    what was measured when a stop interrupts the run); `on_row(result)` after each row."""
    import torch

    from cyclemask.models import count_macs

    if s.threads:
        torch.set_num_threads(s.threads)
    if result is None:
        result = new_result(s)
    cuda = s.device in ("cuda", "all") and torch.cuda.is_available()
    peak = measure_peak_tflops("cuda") if cuda else None
    result["peak"] = peak
    chosen, result["skipped"] = choose_variants(s)
    if not chosen:
        raise ConfigError("no variant can run here: " + "; ".join(f"{d['variant']}: {d['reason']}" for d in result["skipped"]))
    pinputs = PipelineInputs(scratch / "inputs")
    (scratch / "inputs").mkdir(exist_ok=True)
    artefact_seconds = {}
    for model_name in s.models:
        spec = MODELS[model_name]
        log.info("%s (%s): building the generator ...", spec.name, spec.describe())
        gen = seeded_generator(spec.config())
        macs = count_macs(gen, (1, 3, spec.image_size, spec.image_size))
        arts = Artefacts(gen, spec.image_size, scratch / model_name, engine_max_batch=max(s.batches))
        for v in chosen:
            _measure_variant(v, spec, arts, macs, peak, s, pinputs, scratch, result, on_row)
        artefact_seconds[model_name] = dict(arts.seconds)
        if s.faces:
            _face_rows(spec, arts, s, result)
    result["artefact_seconds"] = artefact_seconds
    result["meta"]["load_end"] = _loadavg()
    result["meta"]["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    return result


def _measure_variant(v: Variant, spec, arts: Artefacts, macs: int, peak: dict | None, s: Settings,
                     pinputs: PipelineInputs, scratch: Path, result: dict,
                     on_row: Callable[[dict], None] | None = None) -> None:
    backend = None
    rows: list[Row] = []
    try:
        batches = s.batches
        for batch in batches:
            if backend is None or v.batch_bound:  # CUDA graphs capture one batch size
                if backend is not None:
                    backend.deactivate()
                log.info("%s / %s: building the backend (batch %d) ...", spec.name, v.name, batch)
                backend, _ = v.build(arts, batch=batch, threads=s.threads)
                backend.activate()
                if isinstance(v, AutoVariant):  # the batch cyclemask-run takes for it, not --batches
                    from cyclemask.engine.run_defaults import default_batch

                    batch = default_batch(backend)[0]
            if backend.max_batch is not None and batch > backend.max_batch:
                result["skipped"].append({"variant": v.name, "model": spec.name,
                                          "reason": f"batch {batch} > the backend's maximum {backend.max_batch}"})
                continue
            log.info("%s / %s / batch %d: timing infer ...", spec.name, v.name, batch)
            ips, lat = time_raw(backend, batch, warmup=s.warmup, repeats=s.repeats, min_seconds=s.min_seconds,
                                warmup_seconds=s.warmup_seconds)
            name = f"{AUTO}: {backend.name}" if isinstance(v, AutoVariant) else v.name
            on_cuda = v.device == "cuda" or (isinstance(v, AutoVariant) and
                                             any("cuda" in p.lower() or "tensorrt" in p.lower() for p in backend.providers))
            row = Row(spec.name, name, backend.description, v.precision, batch, round(ips, 3),
                      round(1000 * percentile(lat, 50), 3), round(1000 * percentile(lat, 99), 3), len(lat), macs,
                      peak_tflops=peak["tflops"] if peak and on_cuda else None)
            rows.append(row)
            if s.pipeline and s.pipeline_at == "every":
                _pipeline_rows(row, backend, s, pinputs, scratch)
            if s.pipeline_at == "every" or not s.pipeline:
                result["rows"].append(row)
                if on_row is not None:
                    on_row(result)
            else:  # its pipeline rows wait for the best batch: the row comes with them
                log.info("%s / %s / batch %d: %.2f images/s", spec.name, v.name, batch, row.images_per_s)
            if isinstance(v, AutoVariant):
                break
        if s.pipeline and s.pipeline_at == "best" and rows:
            best = max(rows, key=lambda r: r.images_per_s)
            if v.batch_bound and best.batch != rows[-1].batch:  # built for one batch: build it for the best
                backend.deactivate()
                backend, _ = v.build(arts, batch=best.batch, threads=s.threads)
                backend.activate()
            _pipeline_rows(best, backend, s, pinputs, scratch)
            for r in rows:
                if r not in result["rows"]:
                    result["rows"].append(r)
            if on_row is not None:
                on_row(result)
    except (ArtefactUnavailable, CycleMaskError) as exc:
        if stop_signal() is not None:  # a library wrapped the stop in its own error
            raise KeyboardInterrupt from exc
        # A variant that cannot run here (a GPU stack without its libraries, say) is reported,
        # and the others are still measured.
        log.warning("%s / %s: skipped: %s", spec.name, v.name, exc)
        result["skipped"].append({"variant": v.name, "model": spec.name, "reason": str(exc)})
    except KeyboardInterrupt:
        # Rows timed but waiting for their pipeline rows: they were measured, so they are shown.
        for r in rows:
            if r not in result["rows"]:
                result["rows"].append(r)
        raise
    finally:
        if backend is not None:
            backend.deactivate()


def _pipeline_rows(row: Row, backend, s: Settings, pinputs: PipelineInputs, scratch: Path) -> None:
    """The video and folder figures of `row`; re-times the raw figure where the pipeline beat it."""
    n = _pipeline_frames(row.images_per_s, row.batch, s)
    row.pipeline_frames = n
    for kind in ("video", "folder"):
        log.info("%s / %s / batch %d: pipeline on a %s of %d ...", row.model, row.variant, row.batch, kind, n)
        try:
            fps = time_pipeline(backend, kind, n, row.batch, pinputs, scratch)
        except CycleMaskError as exc:
            if stop_signal() is not None:
                raise KeyboardInterrupt from exc
            row.notes.append(str(exc))
            continue
        if kind == "video":
            row.video_images_per_s = round(fps, 3)
        else:
            row.folder_images_per_s = round(fps, 3)
    fastest = max((v for v in (row.video_images_per_s, row.folder_images_per_s) if v is not None), default=None)
    if fastest is not None and fastest > PIPELINE_OVER_RAW_LIMIT * row.images_per_s:
        # The pipeline adds decode, resize and encode around the same infer calls: faster than
        # infer alone means the first timing caught the backend before it had settled.
        first = row.images_per_s
        log.info("%s / %s / batch %d: the pipeline ran %.2f images/s, the model alone %.2f: timing infer again ...",
                 row.model, row.variant, row.batch, fastest, first)
        ips, lat = time_raw(backend, row.batch, warmup=s.warmup, repeats=s.repeats, min_seconds=s.min_seconds,
                            warmup_seconds=s.warmup_seconds)
        row.images_per_s = round(ips, 3)
        row.latency_p50_ms = round(1000 * percentile(lat, 50), 3)
        row.latency_p99_ms = round(1000 * percentile(lat, 99), 3)
        row.calls = len(lat)
        if fastest > PIPELINE_OVER_RAW_LIMIT * row.images_per_s:
            row.notes.append(f"the pipeline ran faster than the model alone ({fastest:.2f} against {first:.2f} "
                             f"images/s, and {row.images_per_s:.2f} timed again): one of them is wrong; other work "
                             "on the machine (see the load average) moves figures this much")
        else:
            row.notes.append(f"images/s timed again after the pipeline rows beat it: the first timing gave {first:.2f} "
                             "(the backend was still warming up)")


def _face_rows(spec, arts: Artefacts, s: Settings, result: dict) -> None:
    """Rows of benchmarks/faces.py (the face-aware path) for this model, torch backend."""
    from benchmarks import faces
    detector = Path(os.environ.get("CYCLEMASK_FACE_DETECTOR") or faces.DEFAULT_DETECTOR)
    clips = faces.default_clips()
    if not detector.is_file() or not clips:
        _note(result, f"face-aware rows: need the YuNet model ({detector}) and the shared clips; absent here")
        return
    torch_rows = [r for r in result["rows"] if r.model == spec.name and r.variant.startswith("torch-") and r.precision == "fp32"]
    if not torch_rows:
        _note(result, f"face-aware rows for {spec.name}: no torch fp32 row was measured to run them with")
        return
    ref = max(torch_rows, key=lambda r: r.batch)
    device = "cuda" if "cuda" in ref.variant else "cpu"
    if ref.images_per_s < 5:
        _note(result, f"face-aware rows for {spec.name}: skipped, the model runs {ref.images_per_s:.1f} images/s "
                      f"on {device} here (a clip would take minutes)")
        return
    clip = min(clips, key=_frame_count) if device == "cpu" else None
    log.info("%s: face-aware pipeline (benchmarks/faces.py) ...", spec.name)
    rows = faces.run(clips=[clip] if clip else None, model=str(arts.path("checkpoint")), backend="torch",
                     device=device, batch=ref.batch, workers=(0,), detect_sides=(640,), threads=s.threads)
    for r in rows:
        r.update(model=spec.name, raw_variant=ref.variant, raw_images_per_s=ref.images_per_s,
                 faces_over_raw=round(r["faces_per_s"] / ref.images_per_s, 3) if ref.images_per_s else None)
        result["face_rows"].append(r)


def _frame_count(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 1e9)
    finally:
        cap.release()


def _note(result: dict, text: str) -> None:
    log.info(text)
    result["notes"].append(text)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(s: Settings) -> dict:
    import torch

    info = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": s.device,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_start": _loadavg(),
        "inputs": inputs.source_description(),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()},
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError as exc:
        if own_module_missing(exc):
            raise
        info["onnxruntime"] = None
    import importlib.metadata

    try:
        info["openvino"] = importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        info["openvino"] = None
    return info


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def _fmt(v, spec: str = ".1f", none: str = "–") -> str:
    return none if v is None else format(v, spec)


def markdown(result: dict) -> str:
    return "\n".join(markdown_head(result) + [row_line(r) for r in result["rows"]] + markdown_tail(result))


def markdown_head(result: dict, streaming: bool = False) -> list[str]:
    """The lines above the rows. streaming: printed before any row, so the run's state and the
    load at its end come in the tail instead."""
    m = result["meta"]
    peak = result.get("peak")
    lines = [
        f"Throughput, {m['started']}: {m['gpu'] or 'CPU only'}, {m['host_cpus']} CPUs, torch {m['torch']} "
        f"({m['torch_threads']} threads), onnxruntime {m['onnxruntime'] or 'absent'}, "
        f"openvino {m.get('openvino') or 'absent'}, Python {m['python']}.",
        f"Load average (1/5/15 min) at start {m['load_start']}"
        + ("" if streaming else f", at end {m.get('load_end')}") + f". Inputs: {m['inputs']}. "
        "All rows measured in this one run, one after another.",
    ]
    if not m.get("complete") and not streaming:
        lines.append("PARTIAL: the run has not finished (or was stopped); rows so far.")
    if peak:
        lines.append(f"Device peak: {peak['tflops']} TFLOP/s ({peak['what']}, {peak['gpu']}).")
    lines += ["", "| model | variant | backend | batch | images/s | p50 ms | p99 ms | video img/s | folder img/s "
                  "| video/raw | folder/raw | GMAC/s | % peak |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    return lines


def row_line(r: Row) -> str:
    return (f"| {r.model} | {r.variant} | {r.backend} | {r.batch} | {_fmt(r.images_per_s, '.2f')} | "
            f"{_fmt(r.latency_p50_ms, '.2f')} | {_fmt(r.latency_p99_ms, '.2f')} | {_fmt(r.video_images_per_s, '.2f')} | "
            f"{_fmt(r.folder_images_per_s, '.2f')} | {_fmt(r.ratio('video'), '.2f')} | {_fmt(r.ratio('folder'), '.2f')} | "
            f"{_fmt(r.gmac_per_s, '.1f')} | {_fmt(None if r.peak_fraction is None else 100 * r.peak_fraction, '.1f')} |")


def markdown_tail(result: dict, streaming: bool = False) -> list[str]:
    """The lines below the rows."""
    m = result["meta"]
    lines = []
    models = {r.model: r.macs_per_image for r in result["rows"]}
    if models:
        lines.append("")
        frames = sorted({r.pipeline_frames for r in result["rows"] if r.pipeline_frames})
        lines.append("MACs per image (count_macs): " + ", ".join(f"{k} {v / 1e9:.2f} G" for k, v in models.items())
                     + (f". Pipeline runs had {', '.join(str(n) for n in frames)} frames." if frames else "."))
    if result["face_rows"]:
        lines += ["", "Face-aware pipeline (benchmarks/faces.py; torch backend, detection on the decode thread):", "",
                  "| model | clip | batch | frames | faces | frames/s | faces/s | faces/raw | bottleneck |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for f in result["face_rows"]:
            lines.append(f"| {f['model']} | {f['clip']} | {f['batch']} | {f['frames']} | {f['faces_translated']} | "
                         f"{f['frames_per_s']:.2f} | {f['faces_per_s']:.2f} | {_fmt(f['faces_over_raw'], '.2f')} | "
                         f"{f['bottleneck']} |")
    for r in result["rows"]:
        for note in r.notes:
            lines.append(f"- {r.model} / {r.variant} / batch {r.batch}: {note}")
    if result["skipped"]:
        lines += ["", "Not measured:"]
        lines += [f"- {d['variant']}" + (f" ({d['model']})" if d["model"] != "*" else "") + f": {d['reason']}"
                  for d in result["skipped"]]
    for note in result["notes"]:
        lines.append(f"- {note}")
    if streaming:
        lines += ["", f"Load average at end {m.get('load_end') or _loadavg()}."]
    if m.get("stopped"):
        lines += ["", f"stopped: {m['stopped']}; {len(result['rows'])} row(s) measured before it"]
    return lines


def to_json(result: dict) -> str:
    out = dict(result)
    out["rows"] = [r.to_dict() for r in result["rows"]]
    return json.dumps(out, indent=2)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        out = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers; got {value!r}") from None
    if not out or any(b < 1 for b in out):
        raise click.BadParameter(f"batch sizes must be positive integers; got {value!r}")
    return out


def _models(ctx, param, value):
    if value is None:
        return None
    names = tuple(x.strip() for x in value.split(",") if x.strip())
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise click.BadParameter(f"unknown model {', '.join(unknown) or '(none)'}; choose from {', '.join(MODELS)}")
    return names


@click.command(cls=Command, help=__doc__.split("\n\n")[0])
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "all"]), default="auto", show_default=True,
              help="Which variants to measure: auto = cuda when torch sees a GPU, else cpu; all = both.")
@click.option("--all", "all_", is_flag=True,
              help="The whole matrix: both models (full, small), every variant that can run here, the pipeline "
                   "rows at every batch. Without it: the full model, the backend auto picks against eager "
                   "PyTorch FP32, the pipeline rows at each one's best batch (a few minutes on 2 CPU cores).")
@click.option("--models", default=None, callback=_models,
              help="Comma-separated: " + "; ".join(f"{k} ({v.describe()})" for k, v in MODELS.items())
                   + ". [default: full; with --all: full,small]")
@click.option("--batches", default=None, callback=_int_list,
              help="Comma-separated batch sizes. [default: 1,4 on cpu; 1,8,32 on cuda]")
@click.option("--variants", "patterns", default=None,
              help="Comma-separated variant names or fnmatch patterns, e.g. 'torch-*,ort-cpu-fp32'; 'auto' is the "
                   "backend cyclemask-run --backend auto picks for the graph. [default: auto and eager torch FP32; "
                   "with --all: every variant]")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1), help="Timed repeats; the median is reported.")
@click.option("--min-seconds", type=click.FloatRange(0), default=None,
              help="Seconds of calls per repeat (at least one call). [default: 0.5 on cpu; 0.25 on cuda]")
@click.option("--warmup", type=click.IntRange(0), default=None, help="Untimed calls first. [default: 1 on cpu; 5 on cuda]")
@click.option("--warmup-seconds", type=click.FloatRange(0), default=None,
              help="Untimed calls for at least this long, and on while the last one is over twice the fastest. "
                   "[default: 2 on cpu; 1 on cuda]")
@click.option("--pipeline/--no-pipeline", default=True, show_default=True, help="Also time the end-to-end pipeline.")
@click.option("--pipeline-seconds", type=click.FloatRange(0), default=None,
              help="Frames per pipeline run = this x raw images/s, at least two batches, at most --max-frames. "
                   "[default: 3 on cpu; 2 on cuda]")
@click.option("--max-frames", default=256, show_default=True, type=click.IntRange(1), help="Cap on pipeline frames.")
@click.option("--faces/--no-faces", default=True, show_default=True,
              help="Face-aware rows from benchmarks/faces.py (needs the YuNet model and the shared clips).")
@click.option("--slow/--no-slow", default=False, show_default=True,
              help="Also measure variants marked slow (costly to build here: torch.compile on the CPU). "
                   "A slow variant named in full in --variants is measured either way.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads of torch and ONNX Runtime. [default: the libraries' own]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the Markdown table.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write throughput.md and throughput.json into this folder.")
@debug_option
def main(device, all_, models, batches, patterns, repeats, min_seconds, warmup, warmup_seconds, pipeline,
         pipeline_seconds, max_frames, faces, slow, threads, as_json, out):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
    d = DEFAULTS["cuda" if device in ("cuda", "all") and torch.cuda.is_available() else "cpu"]
    pats = tuple(p.strip() for p in patterns.split(",") if p.strip()) if patterns else None
    if pats:
        try:
            select([p for p in pats if p != AUTO] or None, "all")
        except KeyError as exc:
            raise click.BadParameter(exc.args[0], param_hint="--variants") from None
    elif not all_:
        pats = (AUTO, "torch-cuda-fp32" if d is DEFAULTS["cuda"] else "torch-cpu-fp32")
    if models is None:
        models = ("full", "small") if all_ else QUICK_MODELS
    s = Settings(device, models, batches or d["batches"], pats, repeats,
                 d["min_seconds"] if min_seconds is None else min_seconds, d["warmup"] if warmup is None else warmup,
                 pipeline, d["pipeline_seconds"] if pipeline_seconds is None else pipeline_seconds, max_frames, faces,
                 threads, slow, d["warmup_seconds"] if warmup_seconds is None else warmup_seconds,
                 "every" if all_ else "best")

    def save(result: dict) -> None:
        # Rewritten after every row, so a run stopped by a time limit keeps what it measured.
        from cyclemask.image_files import write_bytes_atomic

        write_bytes_atomic(out / "throughput.md", (markdown(result) + "\n").encode())
        write_bytes_atomic(out / "throughput.json", (to_json(result) + "\n").encode())

    printed = 0

    def on_row(result: dict) -> None:
        nonlocal printed
        if not as_json:
            # Counted before it is written: a stop landing inside the echo must not print it twice.
            lines = [] if printed else markdown_head(result, streaming=True)
            lines += [row_line(r) for r in result["rows"][printed:]]
            printed = len(result["rows"])
            click.echo("\n".join(lines))
            sys.stdout.flush()
        if out is not None:
            save(result)

    if out is not None:
        from cyclemask.outputs import lock_outputs

        click.get_current_context().with_resource(lock_outputs("benchmarks/throughput.py", folders=[out]))
    from cyclemask.outputs import temporary_folder

    log.info("measuring %s on %s (%s); progress here, rows on stdout as they finish",
             ", ".join(s.patterns) if s.patterns else "every variant", ", ".join(s.models), device)
    result = new_result(s)
    stopped = False
    try:
        with temporary_folder("cyclemask-bench-") as tmp:
            run(s, tmp, on_row=on_row, result=result)
    except KeyboardInterrupt:
        stopped = True
    except Exception:
        if stop_signal() is None:
            raise
        log.debug("after the stop signal", exc_info=True)  # a library wrapped the stop in its own error
        stopped = True
    result["meta"]["load_end"] = _loadavg()
    if stopped:
        result["meta"]["stopped"] = f"interrupted ({stop_name()})"
    else:
        result["meta"]["complete"] = True
    if out is not None:
        save(result)
    if as_json:
        click.echo(to_json(result))
    else:
        if printed == 0:
            click.echo("\n".join(markdown_head(result, streaming=True)))
        for r in result["rows"][printed:]:
            click.echo(row_line(r))
        click.echo("\n".join(markdown_tail(result, streaming=True)))
    if out is not None:
        click.echo(f"written: {out / 'throughput.md'}, {out / 'throughput.json'}", err=True)
    if stopped:
        click.get_current_context().exit(stop_exit_code())


if __name__ == "__main__":
    main()
