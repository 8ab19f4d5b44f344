"""Face-stage benchmark: where the time of face-aware `cyclemask-run` goes, on real clips.

Runs the real pipeline (decode -> detect -> track/crop -> batched backend -> paste-back) over
each clip with a sink that discards frames (encoding is not the face stage), and measures each
piece where it runs:

- decode_ms_per_frame: the video source (FFmpeg decode + BGR->RGB), on the decode thread
- detect_ms_per_frame: YuNet busy time, on whichever thread ran it (the decode thread, or the
  detection workers with --workers N > 0; then detect_wait_ms_per_frame is what the decode
  thread still waited for it)
- crop_ms_per_face: tracking, square crop, resize to the model size (decode thread)
- backend_ms_per_face: the model (infer thread)
- paste_ms_per_face: resize back and feathered blend (writer thread)
- frames_per_s, faces_per_s: end to end; `bottleneck` names the busiest pipeline stage, and
  `stage_busy` gives each stage's busy fraction of the run (the decode stage = decode + detection
  it waited for + crop; detection on workers overlaps it).

    python benchmarks/faces.py                                 # tiny seeded generator, shared clips
    python benchmarks/faces.py --model model.onnx --workers 0 2 4 --detect-side 320 640
    python benchmarks/faces.py --json faces.json

Other benchmarks import `run(...)`, which returns one dict per (clip, workers, detect side).
Without --model the generator is a seeded random one (ngf 8, 2 blocks, 64 px): the face stage's
own cost shows; pass the real model (or --ngf 64 --n-blocks 9 --size 256, the paper's size) to
see the backend's share.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from cyclemask.engine.contracts import Sink

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CYCLEMASK_SHARED", REPO.parent / "shared"))
DEFAULT_DETECTOR = REPO / "cyclemask" / "assets" / "yunet" / "face_detection_yunet_2023mar.onnx"  # shipped


def default_clips() -> list[Path]:
    return sorted((SHARED / "data" / "video").glob("*.mp4"))


class _TimedSource:
    """Times the wrapped source's iteration (decoding) on the thread that iterates."""

    def __init__(self, source) -> None:
        self._source, self.busy_s = source, 0.0

    def __getattr__(self, name):
        if name == "_source":
            raise AttributeError(name)
        return getattr(self._source, name)

    def __iter__(self):
        it = iter(self._source)
        while True:
            t0 = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                self.busy_s += time.perf_counter() - t0
                return
            self.busy_s += time.perf_counter() - t0
            yield frame


class _TimedBackend:
    """Delegates to an active backend; sums the time spent in submit() and result()."""

    class _Handle:
        def __init__(self, owner, handle) -> None:
            self._owner, self._handle = owner, handle

        def result(self):
            t0 = time.perf_counter()
            try:
                return self._handle.result()
            finally:
                self._owner.busy_s += time.perf_counter() - t0

    def __init__(self, backend) -> None:
        self._backend, self.busy_s, self.batches = backend, 0.0, 0

    def __getattr__(self, name):
        if name == "_backend":
            raise AttributeError(name)
        return getattr(self._backend, name)

    def _timed(self, submit, arg):
        t0 = time.perf_counter()
        handle = submit(arg)
        self.busy_s += time.perf_counter() - t0
        self.batches += 1
        return self._Handle(self, handle)

    def submit(self, batch):
        return self._timed(self._backend.submit, batch)

    def submit_images(self, images):  # what the pipeline calls
        return self._timed(self._backend.submit_images, images)


class _NullSink(Sink):
    fatal_write_errors = True

    def __init__(self) -> None:
        self.frames = 0

    def describe(self) -> str:
        return "nowhere"

    def write(self, frame, image) -> None:
        self.frames += 1

    def finish(self, commit: bool) -> list[str]:
        return []


def _backend(model: str | None, direction: str, batch: int, threads: int | None, size: int, ngf: int,
             n_blocks: int, backend: str, device: str):
    from cyclemask.engine.backends import BackendOptions, TorchBackend, create_backend

    if model is not None:
        be, _ = create_backend(model, backend, direction,
                               BackendOptions(device=device, max_batch=batch, threads=threads))
        return be, str(model)
    import torch

    from cyclemask.config import GeneratorConfig
    from cyclemask.models import build_generator

    torch.manual_seed(0)
    gen = build_generator(GeneratorConfig(ngf=ngf, n_blocks=n_blocks)).eval()
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    return (TorchBackend(generator=gen.to(dev), image_size=size, direction=direction, device=dev, threads=threads),
            f"seeded generator ngf {ngf}, {n_blocks} blocks, {size}px")


def run(clips: list[str | os.PathLike] | None = None, model: str | None = None, direction: str = "mask",
        detector: str | os.PathLike | None = None, batch: int = 8, workers: tuple[int, ...] = (0, 2),
        detect_sides: tuple[int, ...] = (640,), track: bool = True, color_match: bool = False,
        min_face: int = 32, threads: int | None = None, size: int = 64, ngf: int = 8, n_blocks: int = 2,
        backend: str = "auto",
        device: str = "auto", repeat: int = 1) -> list[dict]:
    """One row per (clip, detection workers, detection side): see the module docstring."""
    import cv2
    import torch

    from cyclemask.engine.faces import FaceConfig, FaceProcessor
    from cyclemask.engine.pipeline import PipelineConfig, run_pipeline
    from cyclemask.engine.video import VideoSource

    clips = [Path(c) for c in (clips or default_clips())]
    if not clips:
        raise SystemExit(f"no clips given and none found under {SHARED / 'data' / 'video'}")
    detector = detector or os.environ.get("CYCLEMASK_FACE_DETECTOR") or DEFAULT_DETECTOR
    be, model_desc = _backend(model, direction, batch, threads, size, ngf, n_blocks, backend, device)
    rows = []
    with be:
        img = be.image_size
        be.infer(np.zeros((batch, img, img, 3), np.uint8))  # warm-up: first-call allocations
        for clip in clips:
            for side in detect_sides:
                for n_workers in workers:
                    for rep in range(repeat):
                        cfg = FaceConfig(min_face=min_face, track=track, color_match=color_match, detect_side=side)
                        proc = FaceProcessor(img, cfg, model_path=detector)
                        src = VideoSource(clip)
                        timed_src = _TimedSource(src)
                        proc.detect(np.zeros((src.info.height, src.info.width, 3), np.uint8))  # warm-up
                        proc.stats.detect_s = 0.0
                        timed_be, sink = _TimedBackend(be), _NullSink()
                        report = run_pipeline(proc.detect_ahead(timed_src, n_workers), proc, timed_be, sink,
                                              PipelineConfig(batch_size=batch))
                        rows.append(_row(clip, src, proc, report, timed_src, timed_be, n_workers, side, batch,
                                         be.description, model_desc, rep, cv2, torch))
    return rows


def _row(clip, src, proc, report, timed_src, timed_be, n_workers, side, batch, backend_desc, model_desc, rep,
         cv2, torch) -> dict:
    st, el = proc.stats, report.elapsed_s
    frames, faces = max(report.written, 1), max(st.translated, 1)
    decode_stage = timed_src.busy_s + st.crop_s + (st.detect_wait_s if n_workers else st.detect_s)
    stages = {"decode+detect+crop": decode_stage, "backend": timed_be.busy_s, "paste": st.paste_s}
    busy = {k: round(v / el, 3) if el > 0 else 0.0 for k, v in stages.items()}
    return {
        "clip": clip.name,
        "frame_size": f"{src.info.width}x{src.info.height}",
        "frames": report.written,
        "faces_found": st.found,
        "faces_translated": st.translated,
        "detect_workers": n_workers,
        "detect_side": side,
        "batch": batch,
        "repeat": rep,
        "elapsed_s": round(el, 3),
        "frames_per_s": round(report.written / el, 2) if el > 0 else 0.0,
        "faces_per_s": round(st.translated / el, 2) if el > 0 else 0.0,
        "decode_ms_per_frame": round(1000 * timed_src.busy_s / frames, 3),
        "detect_ms_per_frame": round(1000 * st.detect_s / frames, 3),
        "detect_wait_ms_per_frame": round(1000 * st.detect_wait_s / frames, 3),
        "crop_ms_per_face": round(1000 * st.crop_s / faces, 3),
        "backend_ms_per_face": round(1000 * timed_be.busy_s / faces, 3),
        "backend_ms_per_batch": round(1000 * timed_be.busy_s / max(timed_be.batches, 1), 3),
        "paste_ms_per_face": round(1000 * st.paste_s / faces, 3),
        "stage_busy": busy,
        "bottleneck": max(stages, key=stages.get),
        "backend": backend_desc,
        "model": model_desc,
        "cv2_threads": cv2.getNumThreads(),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "ok": report.ok,
    }


COLUMNS = [("clip", 12), ("frames", 6), ("faces_translated", 5), ("detect_workers", 3), ("detect_side", 5),
           ("frames_per_s", 8), ("faces_per_s", 8), ("decode_ms_per_frame", 7), ("detect_ms_per_frame", 7),
           ("detect_wait_ms_per_frame", 7), ("crop_ms_per_face", 7), ("backend_ms_per_face", 7),
           ("paste_ms_per_face", 7), ("bottleneck", 18)]
HEADERS = ["clip", "frames", "faces", "wk", "side", "frames/s", "faces/s", "decode", "detect", "det-wait",
           "crop", "backend", "paste", "bottleneck"]


def format_table(rows: list[dict]) -> str:
    lines = ["ms per frame: decode, detect, det-wait; ms per face: crop, backend, paste",
             "  ".join(h.rjust(w) for h, (_, w) in zip(HEADERS, COLUMNS))]
    for r in rows:
        cells = []
        for key, w in COLUMNS:
            v = r[key]
            if key == "clip":
                v = str(v).replace("head-pose-face-detection-", "").replace(".mp4", "")[:w]
            cells.append(str(v).rjust(w))
        lines.append("  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", nargs="*", default=None, help="video files [the shared clips]")
    ap.add_argument("--model", default=None, help="graph / engine / checkpoint [a seeded tiny generator]")
    ap.add_argument("--direction", default="mask", help="mask | unmask [mask]")
    ap.add_argument("--backend", default="auto", help="auto | trt | ort | torch, with --model [auto]")
    ap.add_argument("--device", default="auto", help="torch backend device [auto]")
    ap.add_argument("--detector", default=None, help="YuNet ONNX [$CYCLEMASK_FACE_DETECTOR, else the shipped model]")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="detection workers to compare [0 2]")
    ap.add_argument("--detect-side", type=int, nargs="+", default=[640], help="detection long sides [640]")
    ap.add_argument("--no-track", action="store_true")
    ap.add_argument("--color-match", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="backend CPU threads [library default]")
    ap.add_argument("--ngf", type=int, default=8, help="seeded generator width, without --model [8]")
    ap.add_argument("--n-blocks", type=int, default=2, help="seeded generator residual blocks [2]")
    ap.add_argument("--size", type=int, default=64, help="seeded generator image size [64]")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    rows = run(args.clips, args.model, args.direction, args.detector, args.batch, tuple(args.workers),
               tuple(args.detect_side), not args.no_track, args.color_match, threads=args.threads,
               size=args.size, ngf=args.ngf, n_blocks=args.n_blocks, backend=args.backend, device=args.device,
               repeat=args.repeat)
    print(f"backend: {rows[0]['backend']}  model: {rows[0]['model']}  cpus: {rows[0]['cpus']}  "
          f"cv2 threads: {rows[0]['cv2_threads']}  torch threads: {rows[0]['torch_threads']}  "
          f"python {platform.python_version()}")
    print(format_table(rows))
    for r in rows:
        print(f"  {r['clip']} workers {r['detect_workers']} side {r['detect_side']}: stage busy {r['stage_busy']}")
    if args.json:
        from cyclemask.image_files import write_bytes_atomic

        write_bytes_atomic(args.json, json.dumps(rows, indent=2).encode())
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    from cyclemask.cli_util import run_stoppable

    sys.exit(run_stoppable(main))
