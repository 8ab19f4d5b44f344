"""`cyclemask-run --ray`: the same run spread over a Ray cluster.

A thin layer over Ray Data, not a scheduler. The list of input files becomes a dataset
(`ray.data.from_items`) and `map_batches` hands batches of files to a fixed pool of actors
(`ActorPoolStrategy(size=workers)`, `num_gpus` / `num_cpus` per actor). Each actor builds what a
local run builds, once: the backend, the processor (face-aware or aligned) and the sink; then it
runs the local pipeline (engine/pipeline.py) over each batch it is given. So every output is made
and encoded by the code a local run uses, and holds the bytes a local run writes.

Actors write their outputs themselves, atomically (a partial name carrying the run's id, then a
rename: cyclemask.outputs), and return one status row per file. The CLI process turns the rows
into the summary a local run prints, and records each finished output in the output root's
journal (`ROOT/.cyclemask-journal`, held locked by the CLI process for the whole run), which
`--resume` reads: completeness is recorded, never guessed from a file's existence.

A worker that dies (its process killed, its node lost) is restarted by Ray and its batch retried
(Ray Data's actor defaults: `max_restarts=-1`, `max_task_retries=-1`). A retried batch writes the
same bytes under the same names, each by an atomic rename, so a retry never leaves a half file
or a second copy, and the journal records each output once, when its row reaches the CLI. The
partial files a killed worker leaves carry this run's id and are removed when the run ends.

Videos are whole tasks: one video per call, so a folder of videos spreads over the workers.

Signals are the CLI process's business: workers install no handler. Ctrl-C stops the dataset,
the workers go with the Ray job, and the summary says what was written.

Everything a worker reads or writes (inputs, outputs, the model, the face detector) must be at
the same path on every node: on a cluster of several machines, a shared filesystem.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cyclemask import outputs
from cyclemask.errors import ConfigError, CycleMaskError, InputError, own_module_missing

from .pipeline import RunReport
from .ray_worker import Worker, WorkerSpec, worker_class  # noqa: F401 - the worker, and its recipe
from .summary import ray_lines as summary_extra  # noqa: F401 - its old name here (benchmarks)
from .video import VIDEO_INPUT_SUFFIXES, list_videos  # noqa: F401 - also cyclemask-run's, without --ray

log = logging.getLogger(__name__)

RAY_INSTALL = ("--ray needs Ray Data, which is not installed here: pip install 'cyclemask[ray]' "
               "(on every node of the cluster, in the same environment as cyclemask)")

#: Files per actor call for image folders, as a multiple of --batch: enough that the actor's
#: pipeline overlaps decode, inference and writing, few enough that a retried call redoes little.
FILES_PER_CALL_BATCHES = 4
MIN_FILES_PER_CALL = 16
#: CPUs an actor reserves by default: with GPUs the model runs there and one CPU feeds it; on a
#: CPU-only cluster each actor runs the model on this many threads.
DEFAULT_CPUS_GPU_WORKER = 1.0
DEFAULT_CPUS_CPU_WORKER = 4.0

COMMAND = "cyclemask-run --ray"


@dataclass(frozen=True)
class RayOptions:
    """The cluster and how the work is cut.

    address: None starts a local Ray on this machine; "auto" joins the cluster `ray start`
        made on this machine; "HOST:PORT" or "ray://HOST:10001" (Ray Client) joins that one.
    workers, gpus_per_worker, cpus_per_worker: the actor pool (None: see `plan_workers`).
    files_per_call: images per actor call (None: FILES_PER_CALL_BATCHES x the model batch).
    resume: skip inputs whose outputs the output root's journal records as complete.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    files_per_call: int | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if self.address is not None and not str(self.address).strip():
            raise ConfigError("--ray ADDRESS must not be empty (leave it out to start a local Ray)")
        if self.workers is not None and (not isinstance(self.workers, int) or isinstance(self.workers, bool)
                                         or self.workers < 1):
            raise ConfigError(f"--workers must be a positive integer; got {self.workers!r}")
        for name in ("gpus_per_worker", "cpus_per_worker"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a number >= 0; got {v!r}")
        if self.cpus_per_worker == 0 and self.gpus_per_worker == 0:
            raise ConfigError("--cpus-per-worker 0 with --gpus-per-worker 0 reserves nothing for a worker; "
                              "give at least a fraction of a CPU (e.g. 0.5)")
        if self.files_per_call is not None and (not isinstance(self.files_per_call, int) or self.files_per_call < 1):
            raise ConfigError(f"files per call must be a positive integer; got {self.files_per_call!r}")


@dataclass(frozen=True)
class WorkerPlan:
    """The actor pool as it will be asked of Ray, and why (notes for the user)."""

    workers: int
    gpus: float
    cpus: float
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        gpu = f", {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.workers} worker{'s' if self.workers != 1 else ''} x ({self.cpus:g} CPU{gpu})"


def plan_workers(opts: RayOptions, cluster_cpus: float, cluster_gpus: float, local: bool) -> WorkerPlan:
    """Fill in what the user left out, from the cluster's resources.

    GPUs in the cluster: one worker per GPU (`gpus_per_worker` 1) with one CPU each. No GPU: one
    worker per DEFAULT_CPUS_CPU_WORKER CPUs. Where the workers would need more CPUs than the
    cluster has (a small machine), each gets a fraction, so they all start. On a cluster this
    process started itself, a pool that cannot fit is an error; on a running cluster only a
    warning (an autoscaler may add nodes).
    """
    notes: list[str] = []
    gpus = opts.gpus_per_worker if opts.gpus_per_worker is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    if opts.workers is not None:
        workers = opts.workers
    elif gpus > 0 and cluster_gpus > 0:
        workers = max(1, int(cluster_gpus // gpus))
    else:
        workers = max(1, int(cluster_cpus // DEFAULT_CPUS_CPU_WORKER))
    if opts.cpus_per_worker is not None:
        cpus = float(opts.cpus_per_worker)
    else:
        cpus = DEFAULT_CPUS_GPU_WORKER if gpus > 0 else DEFAULT_CPUS_CPU_WORKER
        if cluster_cpus > 0 and workers * cpus > cluster_cpus:
            cpus = math.floor(cluster_cpus / workers * 1000) / 1000  # never above the total
            notes.append(f"each worker reserves {cpus:g} CPU so that the {workers} worker(s) fit on the "
                         f"cluster's {cluster_cpus:g} CPUs (--cpus-per-worker to choose)")
    problems = []
    if gpus > 0 and workers * gpus > cluster_gpus:
        problems.append(f"{workers} worker(s) x {gpus:g} GPU need {workers * gpus:g} GPUs; the cluster has "
                        f"{cluster_gpus:g}")
    if workers * cpus > cluster_cpus + 1e-9:
        problems.append(f"{workers} worker(s) x {cpus:g} CPU need {workers * cpus:g} CPUs; the cluster has "
                        f"{cluster_cpus:g}")
    if problems:
        what = "; ".join(problems)
        if local:
            raise ConfigError(f"--ray: {what} (fewer --workers, or less per worker: --gpus-per-worker, "
                              "--cpus-per-worker)")
        notes.append(f"{what}: the workers that do not fit wait until the cluster grows")
    return WorkerPlan(workers, gpus, cpus, tuple(notes))


@dataclass
class RayReport:
    """What a --ray run did: the CLI prints it, tests assert on it."""

    run: RunReport
    kind: str
    skipped: int = 0  # complete by the journal (--resume)
    backend: "WorkerBackend | None" = None
    setup_s: float = 0.0  # slowest worker start (model load), seconds
    start_s: float = 0.0  # connecting to or starting Ray
    pids: set = field(default_factory=set)  # (node, pid) of every worker process that answered
    calls: int = 0
    call_s: float = 0.0  # time spent inside the workers' calls, summed
    started_at: float = 0.0  # wall clock when the dataset started
    spans: list = field(default_factory=list)  # (worker, start, end, files) of every call, wall clock

    def gap_per_call_s(self) -> float | None:
        """Ray's cost per call: the mean idle time between one call's end and the next call's
        start on the same worker (scheduling, moving the batch and the rows), while work was
        waiting. None with fewer than two calls on any worker."""
        gaps = []
        by_worker: dict[str, list] = {}
        for where, t0, t1, _ in self.spans:
            by_worker.setdefault(where, []).append((t0, t1))
        for calls in by_worker.values():
            calls.sort()
            gaps += [max(0.0, b[0] - a[1]) for a, b in zip(calls, calls[1:])]
        return sum(gaps) / len(gaps) if gaps else None

    def steady_fps(self) -> float | None:
        """Files per second from the first call's start to the last call's end: the rate once
        the workers were up (Ray's start and the workers' model loads left out)."""
        if not self.spans or not any(s[3] for s in self.spans):
            return None
        span = max(s[2] for s in self.spans) - min(s[1] for s in self.spans)
        return sum(s[3] for s in self.spans) / span if span > 0 else None
    faces: dict = field(default_factory=dict)  # summed FaceStats counts
    videos_written: int = 0
    frames_read: int = 0
    frames_written: int = 0


@dataclass
class WorkerBackend:
    """What the workers said about their backend, for the summary (summary_lines reads these)."""

    description: str
    providers: list
    reason: str
    image_size: int | None
    direction: str | None


# ---------------------------------------------------------------------------------------------
# Ray itself
# ---------------------------------------------------------------------------------------------


def require_ray():
    """Import ray and ray.data, or say how to install them."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(RAY_INSTALL)
    try:
        import ray
        import ray.data  # noqa: F401 - needs pyarrow and friends: the [data] extra
    except ImportError as exc:
        if own_module_missing(exc):
            raise
        raise ConfigError(f"{RAY_INSTALL} ({exc})") from None
    return ray


def connect(address: str | None, debug: bool = False) -> tuple[bool, float, float]:
    """Join the cluster at `address`, or start a local Ray (None). Returns (whether this call
    started or joined Ray, so the caller shuts it down; cluster CPUs; cluster GPUs). A Ray this
    process already runs (tests, notebooks) is used as it is."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                                  "logging_level": logging.DEBUG if debug else logging.WARNING}
        try:
            ray.init(address=address or "local", **kwargs)
        except ConnectionError as exc:
            raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster there ({exc}); start one "
                              "with `ray start --head` or leave the address out to start a local Ray") from None
        started = True
    from ray.data import DataContext
    from ray.util.debug import log_once

    if not debug:  # Ray Data logs every execution's plan at INFO; keep its warnings
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    # The progress bar is ours, over files; Ray Data warns once that its own are off.
    log_once("ray_data_progress_manager_disabled")
    DataContext.get_current().enable_progress_bars = False
    res = ray.cluster_resources()
    return started, float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))


# ---------------------------------------------------------------------------------------------
# Inputs, outputs and the journal
# ---------------------------------------------------------------------------------------------


def video_output_name(rel: str) -> str:
    """The output of a video under a folder: the same relative name, in a container we can write
    (the input's when cyclemask writes it, else .mp4)."""
    from .video import CONTAINERS

    p = Path(rel)
    return (p if p.suffix.lower() in CONTAINERS else p.with_suffix(".mp4")).as_posix()


def model_direction(model: Path) -> str | None:
    """The direction a model file records, read without loading it into a runtime (None when it
    records none, or holds both)."""
    from cyclemask import DIRECTIONS

    found = _model_record(model).get("direction")
    return found if found in DIRECTIONS else None


def model_method(model: Path) -> str | None:
    """The method a model file records ("restore" for an erase-then-restore graph, "cyclegan"),
    read without loading it into a runtime; None when it records none."""
    found = _model_record(model).get("method")
    return found if isinstance(found, str) else None


def _model_record(model: Path) -> dict:
    """What a model file records of its direction and method, read without a runtime."""
    # Imported before the `try` below: its broad `except` is for a model file that cannot be
    # read, and must never hide a module of ours that is missing (it once hid a stale path to
    # the sidecar reader, and engines under --ray lost their direction).
    import onnx

    from cyclemask.artifacts import load_engine_sidecar  # the sidecar reader the TensorRT backend uses

    from .backends import model_kind

    kind = model_kind(model)
    if kind == "checkpoint":
        from cyclemask.checkpoint import RESTORE_FORMAT, read_checkpoint  # imports torch: only for a checkpoint
    found: dict = {}
    try:
        if kind == "graph":
            meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
            found = {k: meta.get(k) for k in ("direction", "method")}
        elif kind == "engine":
            sidecar = load_engine_sidecar(model)
            found = {k: sidecar.get(k) for k in ("direction", "method")}
        else:
            obj = read_checkpoint(model)
            if isinstance(obj, dict):
                if obj.get("format") == RESTORE_FORMAT:
                    return {"direction": "unmask", "method": "restore"}
                found = {"direction": obj.get("direction"), "method": "cyclegan"}
                gens = obj.get("generators")
                if found["direction"] is None and isinstance(gens, dict) and len(gens) == 1:
                    found["direction"] = next(iter(gens))
    except Exception as exc:  # noqa: BLE001 - the workers report a bad model properly
        log.debug("cannot read what %s records: %s", model, exc)
    return found


@dataclass
class Job:
    """One --ray run: the inputs (relative keys), where each goes, and the worker's recipe."""

    spec: WorkerSpec
    keys: list[str]  # relative to spec.in_root, in input order
    outs: list[str]  # relative to spec.out_root
    lock_root: Path  # the output root locked and journalled (a folder, or a single video file)
    lock_folder: bool
    overwrite: bool = False
    describe_input: str = ""
    shown_root: str = ""  # the input folder as the user wrote it: messages name files the same way


def _journal_key(job: Job, out: str) -> str:
    return out if job.lock_folder else "."


def _outputs_to_do(job: Job, lock, resume: bool) -> tuple[list[int], int, list[str]]:
    """Indices of inputs to run, how many the journal skips (--resume), and notes.

    Without --resume, existing outputs are refused unless --overwrite (as a local run does).
    With it, an output the journal does not record is made again, replacing any file of that
    name: it may be what a worker wrote just before the run was stopped, unrecorded."""
    if not resume:
        if not job.overwrite:
            _refuse_existing(job)
        return list(range(len(job.keys))), 0, []
    done = _recorded(job)
    todo = [i for i, out in enumerate(job.outs) if _journal_key(job, out) not in done]
    notes = []
    if not done:
        notes.append(f"--resume: {lock.journal} records no finished output (no earlier run kept one here): "
                     "every input is translated")
    return todo, len(job.keys) - len(todo), notes


def _recorded(job: Job) -> set[str]:
    """What the output root's journal records as complete."""
    from cyclemask.outputs import read_journal

    return {r["done"] for r in read_journal(job.lock_root, job.lock_folder) if isinstance(r.get("done"), str)}


def _refuse_existing(job: Job) -> None:
    root = Path(job.spec.out_root)
    existing = [root / o for o in job.outs if (root / o).exists()]
    if existing:
        raise InputError(
            f"--out {job.lock_root}: {len(existing)} output file(s) already exist, e.g. {existing[0]}; "
            "pass --overwrite to replace them, or --resume to finish a run that stopped"
        )


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def run(job: Job, opts: RayOptions, *, echo: Callable[[str], None] = print,
        progress: Callable[[int], None] | None = None, debug: bool = False) -> RayReport:
    """Run `job` on the cluster `opts` names; returns the report (the CLI prints it).

    Takes the output root's lock for the whole run (a second run on it is refused), skips what
    its journal records as complete when resuming, records every output a worker finishes, and
    at the end removes the partial files of workers that were killed.
    """
    from cyclemask.outputs import OutputLock, run_id

    ray = require_ray()
    lock = OutputLock(job.lock_root, COMMAND, folder=job.lock_folder, keep_journal=True).probe()
    t0 = time.perf_counter()
    started, cpus, gpus = connect(opts.address, debug)
    report = RayReport(RunReport(total=0), job.spec.kind, start_s=time.perf_counter() - t0)
    status = "failed"
    try:
        plan = plan_workers(opts, cpus, gpus, local=opts.address is None)
        lock.acquire()
        recorded_before = bool(_recorded(job))
        try:
            todo, report.skipped, notes = _outputs_to_do(job, lock, opts.resume)
            report.run.notes += list(plan.notes) + notes
            spec = _finish_spec(job.spec, plan, run_id())
            per_call = 1 if spec.kind == "videos" else (
                opts.files_per_call or max(MIN_FILES_PER_CALL, FILES_PER_CALL_BATCHES * _call_batch(spec, plan)))
            where = "a local Ray" if opts.address is None else f"the Ray cluster at {opts.address}"
            echo(f"ray:     {where} ({cpus:g} CPUs, {gpus:g} GPUs); {plan.describe()}, "
                 f"{per_call} file{'s' if per_call != 1 else ''} per call")
            if report.skipped:
                echo(f"resume:  {report.skipped} of {len(job.keys)} outputs already complete "
                     f"(recorded in {lock.journal}); {len(todo)} to go")
            report.run.total = len(todo)
            if progress is not None and report.skipped:
                progress(report.skipped)  # the bar counts every input; those already done count as done
            if todo:
                _execute(ray, job, spec, plan, per_call, todo, report, lock, progress)
            status = "interrupted" if report.run.interrupted else "ended"
        finally:
            if started:
                ray.shutdown()  # the workers end with the job: nothing writes after this
            swept = lock.sweep({run_id()}) if lock.held else []
            if swept:
                report.run.notes.append(f"removed {len(swept)} partial file(s) left by worker(s) that were "
                                        "stopped or killed mid-write")
            if not recorded_before and lock.completed == 0:
                lock.keep_journal = False  # nothing to resume from: leave no journal (nor a new, empty folder)
            lock.release(status)
    except BaseException:
        if started and ray.is_initialized():
            ray.shutdown()
        raise
    return report


def _finish_spec(spec: WorkerSpec, plan: WorkerPlan, run: str) -> WorkerSpec:
    opts = spec.options
    # Several workers share a machine: each takes the threads it reserved, not every core; and
    # `auto` must pick the same runtime on every worker, so it is not left to a timing race.
    threads = opts.threads if opts.threads is not None else max(1, int(plan.cpus))
    return dataclasses.replace(spec, options=dataclasses.replace(opts, threads=threads, probe=False), run_id=run)


def _call_batch(spec: WorkerSpec, plan: WorkerPlan) -> int:
    """The batch the calls are sized by: --batch, else what the workers' backends will take
    (each settles its own once loaded, engine/run_defaults.py)."""
    from .run_defaults import CPU_BATCH, GPU_BATCH

    return spec.options.batch or (GPU_BATCH if plan.gpus else CPU_BATCH)


def _execute(ray, job: Job, spec: WorkerSpec, plan: WorkerPlan, per_call: int, todo: list[int],
             report: RayReport, lock, progress) -> None:
    from ray.data import ActorPoolStrategy

    rep = report.run
    index = {job.keys[i]: i for i in todo}
    items = [{"key": job.keys[i], "out": job.outs[i]} for i in todo]
    ds = ray.data.from_items(items)
    # A dead worker is restarted and its calls retried, without end: Ray Data's defaults for actor
    # pools (max_restarts=-1, max_task_retries=-1), which nothing here overrides; the promise that
    # nothing is lost rests on them (the killed-worker test checks it).
    ds = ds.map_batches(worker_class(spec), batch_size=per_call, batch_format="numpy",
                        compute=ActorPoolStrategy(size=plan.workers),
                        num_cpus=plan.cpus, num_gpus=plan.gpus or None)
    seen: set[str] = set()
    failures: list[tuple[int, str, str]] = []
    out_root = Path(spec.out_root)
    start = time.perf_counter()
    report.started_at = time.time()
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for detail in batch["detail"]:
                if detail:
                    _take_detail(report, json.loads(detail))
            for key, status, message in zip(batch["key"], batch["status"], batch["message"]):
                key = str(key)
                if key in seen:  # never expected from Ray Data; counted once if it happens
                    continue
                seen.add(key)
                rep.inputs += 1
                if status == "written":
                    rep.written += 1
                    lock.record(out_root / job.outs[index[key]] if job.lock_folder else job.lock_root)
                elif status == "failed":
                    failures.append((index[key], key, _as_given(job, str(message))))
                else:
                    rep.error = rep.error or str(message)
                if progress is not None:
                    progress(1)
                outputs.raise_lost_stop()
            if rep.error is not None:
                break  # a backend that fails fails everywhere: stop, as a local run does
    except KeyboardInterrupt:
        rep.interrupted = True
    except Exception as exc:
        rep.error = _ray_error(exc)
    finally:
        rep.elapsed_s = time.perf_counter() - start
    rep.failures = [(key, msg) for _, key, msg in sorted(failures)]
    if rep.interrupted:
        rep.notes.append(f"the {rep.written} output(s) counted are recorded in {lock.journal}; files the workers "
                         "finished after the stop are not, and are made again: to finish, run the same command "
                         "with --resume")


def _as_given(job: Job, message: str) -> str:
    """Workers name files by absolute path; a local run names them under the folder as given."""
    root = job.spec.in_root + os.sep
    if job.shown_root and message.startswith(root):
        return os.path.join(job.shown_root, message[len(root):])
    return message


def _take_detail(report: RayReport, info: dict) -> None:
    report.calls += 1
    report.call_s += float(info.get("call_s", 0.0))
    if "t0" in info:
        report.spans.append((info.get("where"), float(info["t0"]), float(info["t1"]), int(info.get("n", 0))))
    report.pids.add(info.get("where"))
    report.run.crops += int(info.get("crops", 0))
    report.run.batches += int(info.get("batches", 0))
    for k, v in info.get("faces", {}).items():
        report.faces[k] = report.faces.get(k, 0) + v
    for v in info.get("videos", []):
        report.frames_read += v.get("frames", 0)
        report.frames_written += v.get("written", 0)
        report.run.crops += int(v.get("crops", 0))
        report.run.batches += int(v.get("batches", 0))
        for k, n in v.get("faces", {}).items():
            report.faces[k] = report.faces.get(k, 0) + n
        for note in v.get("notes", []):
            report.run.notes.append(f"{v.get('key')}: {note}")
    if "init_s" in info:
        report.setup_s = max(report.setup_s, float(info["init_s"]))
        if report.backend is None and info.get("description"):
            report.backend = WorkerBackend(info["description"], info.get("providers", []), info.get("reason", ""),
                                           info.get("image_size"), info.get("direction"))


def _ray_error(exc: BaseException) -> str:
    """One line for an error Ray raised (a worker's own error is inside it)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, CycleMaskError):
        return str(cause)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:500]


# ---------------------------------------------------------------------------------------------
# Building a job from the CLI's choices
# ---------------------------------------------------------------------------------------------


def image_job(images: Path, out: Path, spec: WorkerSpec, max_pixels: int, overwrite: bool) -> Job:
    """An image folder: every image under it, mirrored under `out` (checked as a local run checks)."""
    from .sinks import ImageFolderSink
    from .sources import ImageFolderSource

    source = ImageFolderSource(images, max_pixels=max_pixels)
    # The local run's checks of the output folder (not the input, not inside it), nothing more:
    # existing outputs are checked against the journal once the lock is held.
    ImageFolderSink(images, out, [], overwrite=True)
    keys = [p.relative_to(source.root).as_posix() for p in source.paths]
    spec = dataclasses.replace(spec, kind="images", in_root=str(source.root.resolve()), out_root=str(out.resolve()))
    return Job(spec, keys, list(keys), out.resolve(), True, overwrite, source.describe(), str(images))


def video_job(video: str, out: Path | None, direction: str, spec: WorkerSpec, overwrite: bool) -> Job:
    """A video file, or a folder of videos (each a task; outputs mirror the folder under --out,
    default <folder>_<direction>)."""
    from .sinks import default_images_out, video_output_path
    from .video import is_live

    p = Path(video)
    if is_live(video):
        raise ConfigError(f"--ray: {video} is a live input (a device, stream or pipe): it can only be read "
                          "where it is; run it without --ray")
    if p.is_dir():
        paths = list_videos(p)
        if not paths:
            raise InputError(f"{p}: no videos found (looked recursively for {', '.join(VIDEO_INPUT_SUFFIXES)})")
        root = (out if out is not None else default_images_out(p, direction, fallback=False)).resolve()
        src_root = p.resolve()
        if root == src_root or src_root in root.parents or root in src_root.parents:
            raise InputError(f"--out {root}: must be a folder outside the input folder {p}, and not contain it")
        keys = [q.relative_to(p).as_posix() for q in paths]
        outs = [video_output_name(k) for k in keys]
        spec = dataclasses.replace(spec, kind="videos", in_root=str(src_root), out_root=str(root))
        return Job(spec, keys, outs, root, True, overwrite, f"{p} ({len(keys)} videos)", str(p))
    if not p.is_file():
        raise InputError(f"{p}: no such video file or folder")
    target = video_output_path(p, out, direction, fallback=False)
    spec = dataclasses.replace(spec, kind="videos", in_root=str(p.resolve().parent), out_root=str(target.parent))
    return Job(spec, [p.name], [target.name], target, False, overwrite, str(p), str(p.parent))
