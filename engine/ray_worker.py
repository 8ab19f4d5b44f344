"""The worker of `cyclemask-run --ray` (a Ray actor): one backend, built once from the run's own
`RunOptions` as a local run builds it (engine/run.py `load_backend`, `make_processor`,
`run_frames`), then the local pipeline over each batch of files it is handed. engine/ray_run.py
drives it."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cyclemask.errors import CycleMaskError

from .run import RunOptions


@dataclass(frozen=True)
class WorkerSpec:
    """Everything an actor needs (small, picklable): the run's options, with the model and the
    face detector as absolute paths (every node reads the same paths), and what to run on."""

    kind: str  # "images" | "videos"
    in_root: str
    out_root: str
    options: RunOptions
    run_id: str = ""


def _face_counts(stats) -> dict:
    return {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)
            if not f.name.startswith("_") and isinstance(getattr(stats, f.name), int)}


class Worker:
    """One Ray actor: one backend, built once; the local pipeline over each batch of files.

    `spec` is a class attribute of the subclass `worker_class` makes, not a constructor
    argument, so that a restarted actor rebuilds itself from its class alone.
    """

    spec: WorkerSpec

    def __init__(self) -> None:
        from cyclemask.outputs import set_run_id

        from .run import face_detector_path, load_backend

        t0 = time.perf_counter()
        spec = self.spec
        set_run_id(spec.run_id)  # partial names carry the run's id: the CLI sweeps them
        self.error: str | None = None
        self.backend = None
        self.processor = None
        self.reason = ""
        self.batch = 1
        self.face = None
        self.detector = None
        try:
            opts = spec.options
            self.detector = face_detector_path(opts)
            self.backend, self.reason, _, _ = load_backend(opts)
            self.backend.activate()
            self.batch = opts.batch_for(self.backend)[0]
            if not opts.aligned:
                self.face = opts.face_config(video=spec.kind == "videos", backend=self.backend)
            if spec.kind == "images":
                self.processor = self._processor()
        except CycleMaskError as exc:
            # A bad model or detector: every call says so and the CLI stops the run with it.
            self.error = str(exc)
        self.init_s = time.perf_counter() - t0
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self._told = False

    def _processor(self):
        from .run import make_processor

        return make_processor(self.backend, self.face, self.detector)

    def __call__(self, batch: dict) -> dict:
        keys = [str(k) for k in batch["key"]]
        outs = [str(o) for o in batch["out"]]
        t0, wall0 = time.perf_counter(), time.time()
        if self.error is not None:
            rows = [("error", self.error)] * len(keys)
            info: dict = {}
        elif self.spec.kind == "images":
            rows, info = self._images(keys)
        else:
            rows, info = [], {"videos": []}
            for key, out in zip(keys, outs):
                row, vinfo = self._video(key, out)
                rows.append(row)
                info["videos"].append(vinfo)
        info.update(where=self.where, call_s=time.perf_counter() - t0, t0=wall0, t1=time.time(),
                    n=sum(1 for r in rows if r[0] != "error"))
        if not self._told:  # once per process: what it runs on
            self._told = True
            be = self.backend
            info.update(init_s=self.init_s, reason=self.reason,
                        description=be.description if be is not None else "",
                        providers=list(be.providers) if be is not None else [],
                        image_size=be.image_size if be is not None and be.is_active else None,
                        direction=be.direction if be is not None else None)
        details = [json.dumps(info)] + [""] * (len(keys) - 1)
        return {"key": np.array(keys, dtype=object), "status": np.array([r[0] for r in rows], dtype=object),
                "message": np.array([r[1] for r in rows], dtype=object), "detail": np.array(details, dtype=object)}

    def _images(self, keys: list[str]) -> tuple[list, dict]:
        from .faces import FaceProcessor, FaceStats
        from .run import run_frames
        from .sinks import ImageFolderSink
        from .sources import ImageFolderSource

        spec, opts = self.spec, self.spec.options
        in_root, out_root = Path(spec.in_root), Path(spec.out_root)
        paths = [in_root / k for k in keys]
        source = ImageFolderSource(in_root, opts.max_pixels, paths=paths)
        # Outputs of this call may exist already: a retried call, or --resume after a stop.
        sink = ImageFolderSink(in_root, out_root, paths, overwrite=True, quality=opts.quality)
        processor = self.processor
        if isinstance(processor, FaceProcessor):
            processor.stats = FaceStats()  # each call reports its own counts; the CLI sums them
        report = run_frames(opts, self.backend, self.batch, processor, source, sink)
        written = {p.relative_to(out_root).as_posix() for p in sink.written}
        failed = dict(report.failures)
        rows = []
        for key in keys:
            if key in written:
                rows.append(("written", ""))
            elif key in failed:
                rows.append(("failed", failed[key]))
            else:  # the pipeline stopped (the backend failed): the run stops, as a local one does
                rows.append(("error", report.error or "the worker's pipeline stopped"))
        info = {"crops": report.crops, "batches": report.batches}
        if isinstance(processor, FaceProcessor):
            info["faces"] = _face_counts(processor.stats)
        return rows, info

    def _video(self, key: str, out: str) -> tuple[tuple[str, str], dict]:
        from .faces import FaceProcessor
        from .run import run_frames
        from .video import VideoSink, VideoSource

        spec, opts = self.spec, self.spec.options
        src = Path(spec.in_root) / key
        target = Path(spec.out_root) / out
        info: dict = {"key": key, "frames": 0, "written": 0, "failures": [], "notes": []}
        try:
            source = VideoSource(src)
        except CycleMaskError as exc:
            return ("failed", str(exc)), info
        try:
            sink = VideoSink(target, source.info, source=source, overwrite=True, config=opts.video_config())
            processor = self._processor()  # a fresh tracker for every video
            report = run_frames(opts, self.backend, self.batch, processor, source, sink)
        except CycleMaskError as exc:
            return ("failed", str(exc)), info
        finally:
            source.close()
        info.update(frames=report.inputs, written=report.written, notes=report.notes,
                    failures=[m if k in m else f"{k}: {m}" for k, m in report.failures],
                    crops=report.crops, batches=report.batches)
        if isinstance(processor, FaceProcessor):
            info["faces"] = _face_counts(processor.stats)
        if report.stopped:
            return ("failed", f"{src}: {report.error or 'stopped'}; not written"), info
        if report.failures:
            return ("failed", f"{src}: written with {len(report.failures)} frame(s) missing: "
                              + "; ".join(info["failures"][:3])), info
        return ("written", ""), info


def worker_class(spec: WorkerSpec) -> type:
    """A Worker subclass that carries `spec`: what Ray Data starts and restarts."""
    return type("CycleMaskWorker", (Worker,), {"spec": spec, "__module__": __name__})
