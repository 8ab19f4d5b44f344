"""--mask-method gan against template: whole `cyclemask-run --mask` processes on a 720p face video.

    python benchmarks/mask_method.py [--repeats 5] [--frames 112] [--model mask.onnx] [--json out.json]

The clip: the shared head-pose clip (two people, 480 x 270) upscaled to 1280 x 720 and looped to
--frames frames, encoded once into a temporary folder; without ../shared, matplotlib's portrait
drifting across a 720p frame. Each repeat runs both methods as fresh processes, the order
alternating from one repeat to the next (gan, template; template, gan; ...) so that a change of
load on the machine falls on both alike, and times each from process start to exit: start-up,
detection, the generator or the warp, and encoding, everything a user waits for. The medians and
their ratio (gan time / template time: how many times faster the template method is) are
printed, with the load average before and after. The generator is --model, else the embedded
demo graph, on the backend `auto` picks (--backend to choose).

Timings move with the load: on a shared or busy machine, say so beside any figure quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CYCLEMASK_SHARED", REPO.parent / "shared"))
SHARED_CLIP = SHARED / "data" / "video" / "head-pose-face-detection-female-and-male.mp4"
SIZE = (1280, 720)
METHODS = ("gan", "template")


def _frames_from_shared(n: int):
    import av
    import cv2

    with av.open(str(SHARED_CLIP)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    if not frames:
        raise RuntimeError(f"{SHARED_CLIP}: no frames decoded")
    # Looped back and forth, so the clip has no jump a tracker would see as a scene cut.
    cycle = frames + frames[-2:0:-1]
    for i in range(n):
        yield cv2.resize(cycle[i % len(cycle)], SIZE, interpolation=cv2.INTER_CUBIC)


def _frames_synthetic(n: int):
    import cv2
    import matplotlib
    import numpy as np

    from cyclemask.image_files import read_image

    face = read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    face = cv2.resize(face, (300, 352), interpolation=cv2.INTER_AREA)
    for i in range(n):
        frame = np.full((SIZE[1], SIZE[0], 3), 96, np.uint8)
        x = 200 + int(600 * (0.5 - 0.5 * np.cos(2 * np.pi * i / max(n, 1))))
        frame[180:180 + 352, x:x + 300] = face
        yield frame


def make_clip(path: Path, frames: int, fps: int = 25) -> tuple[Path, str]:
    """A 720p H.264 face video at `path`; returns it and what it shows."""
    import av

    source = _frames_from_shared(frames) if SHARED_CLIP.is_file() else _frames_synthetic(frames)
    what = (f"{SHARED_CLIP.name} upscaled to 1280x720" if SHARED_CLIP.is_file()
            else "matplotlib's grace_hopper.jpg drifting across a 1280x720 frame")
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        s.options = {"crf": "18", "preset": "veryfast"}
        for image in source:
            for p in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path, f"{what}, {frames} frames"


def run_once(method: str, clip: Path, out: Path, model: Path | None, backend: str) -> float:
    """Seconds from the start of one `cyclemask-run --mask` process to its exit."""
    cmd = [sys.executable, "-m", "cyclemask.engine.cli", "--mask", "--mask-method", method, "--video", str(clip),
           "--out", str(out), "--overwrite", "--no-progress"]
    if method == "gan":
        cmd += ["--backend", backend] + (["--model", str(model)] if model is not None else [])
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{(res.stdout + res.stderr)[-1500:]}")
    return wall


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs of each method (alternating)")
    ap.add_argument("--frames", type=int, default=112)
    ap.add_argument("--model", type=Path, default=None, help="the mask generator (default: the embedded demo graph)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory(prefix="cyclemask-mask-method-") as tmp:
        clip, what = make_clip(Path(tmp) / "clip720.mp4", a.frames)
        for r in range(a.repeats):
            order = METHODS if r % 2 == 0 else METHODS[::-1]
            for m in order:
                times[m].append(run_once(m, clip, Path(tmp) / f"{m}.mp4", a.model, a.backend))
                print(f"repeat {r + 1}: {m:8s} {times[m][-1]:.2f} s", flush=True)
    med = {m: statistics.median(v) for m, v in times.items()}
    result = {
        "clip": what, "frames": a.frames, "repeats": a.repeats,
        "model": str(a.model) if a.model else "embedded demo graph", "backend": a.backend,
        "seconds": times, "median_s": med,
        "fps": {m: a.frames / med[m] for m in METHODS},
        "template_speedup": med["gan"] / med["template"],
        "load_before": load_before, "load_after": os.getloadavg(), "cpus": os.cpu_count(),
    }
    print(f"clip: {what}")
    for m in METHODS:
        print(f"{m:8s} median {med[m]:.2f} s  ({result['fps'][m]:.1f} frames/s, whole process)")
    print(f"ratio gan / template: {result['template_speedup']:.2f}x")
    print(f"load average before {load_before[0]:.1f}, after {result['load_after'][0]:.1f} ({os.cpu_count()} CPUs)")
    # Only the load before counts: the runs themselves keep both cores busy, so the load after is ours.
    if load_before[0] > (os.cpu_count() or 1) / 2:
        print("note: the machine was busy before the runs (load average above half its CPUs): these timings are not figures")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
