"""--unmask-method restore against cyclegan: whole `cyclemask-run --unmask` processes on a 720p
video of one masked face.

    python benchmarks/unmask_method.py [--repeats 3] [--frames 112] [--json out.json]

The clip: the shared one-person head-pose clip upscaled to 1280 x 720 and looped to --frames
frames, then masked once with `cyclemask-run --mask --mask-method template` (a real-looking mask
to take off); without ../shared, matplotlib's portrait drifting across a 720p frame. Each repeat
runs both methods as fresh processes, alternating their order, and takes from each: the wall
time from process start to exit (start-up, detection, segmenter and restorer or the generator,
encoding: what a user waits for) and the run's own steady throughput (its summary's frames/s,
model load excluded). Medians, their ratio and the load average are printed.

Timings move with the load: on a shared or busy machine, say so beside any figure quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import mask_method  # noqa: E402  (the 720p clip maker)

METHODS = ("restore", "cyclegan")
ONE_FACE = mask_method.SHARED / "data" / "video" / "head-pose-face-detection-female.mp4"


def masked_clip(tmp: Path, frames: int) -> tuple[Path, str]:
    """A 720p clip of one face wearing a template mask."""
    if ONE_FACE.is_file():
        mask_method.SHARED_CLIP = ONE_FACE  # one face: the figure is per face, as the target says
    bare, what = mask_method.make_clip(tmp / "bare720.mp4", frames)
    out = tmp / "masked720.mp4"
    cmd = [sys.executable, "-m", "cyclemask.engine.cli", "--mask", "--mask-method", "template", "--video", str(bare),
           "--out", str(out), "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"masking the clip failed:\n{(res.stdout + res.stderr)[-1500:]}")
    return out, f"{what}, masked by --mask-method template"


def run_once(method: str, clip: Path, out: Path, backend: str) -> tuple[float, float]:
    """(seconds from process start to exit, the run's own steady frames/s)."""
    cmd = [sys.executable, "-m", "cyclemask.engine.cli", "--unmask", "--unmask-method", method, "--video", str(clip),
           "--out", str(out), "--overwrite", "--no-progress", "--backend", backend]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{(res.stdout + res.stderr)[-1500:]}")
    m = re.search(r"throughput: ([0-9.]+) frames/s", res.stdout)
    return wall, float(m.group(1)) if m else float("nan")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each method (alternating)")
    ap.add_argument("--frames", type=int, default=112)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    load_before = os.getloadavg()
    wall: dict[str, list[float]] = {m: [] for m in METHODS}
    steady: dict[str, list[float]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory(prefix="cyclemask-unmask-method-") as tmp:
        clip, what = masked_clip(Path(tmp), a.frames)
        for r in range(a.repeats):
            for m in (METHODS if r % 2 == 0 else METHODS[::-1]):
                w, f = run_once(m, clip, Path(tmp) / f"{m}.mp4", a.backend)
                wall[m].append(w)
                steady[m].append(f)
                print(f"repeat {r + 1}: {m:8s} {w:.2f} s whole process, {f:.1f} frames/s steady", flush=True)
    med = {m: statistics.median(v) for m, v in wall.items()}
    med_fps = {m: statistics.median(v) for m, v in steady.items()}
    result = {"clip": what, "frames": a.frames, "repeats": a.repeats, "backend": a.backend,
              "seconds": wall, "median_s": med, "whole_process_fps": {m: a.frames / med[m] for m in METHODS},
              "steady_fps": steady, "median_steady_fps": med_fps,
              "restore_over_cyclegan_time": med["restore"] / med["cyclegan"],
              "load_before": load_before, "load_after": os.getloadavg(), "cpus": os.cpu_count()}
    print(f"clip: {what}")
    for m in METHODS:
        print(f"{m:9s} median {med[m]:.2f} s whole process ({a.frames / med[m]:.1f} frames/s), "
              f"steady {med_fps[m]:.1f} frames/s")
    print(f"restore takes {result['restore_over_cyclegan_time']:.2f}x the cyclegan time")
    print(f"load average before {load_before[0]:.1f}, after {result['load_after'][0]:.1f} ({os.cpu_count()} CPUs)")
    # Only the load before counts: the runs themselves keep both cores busy, so the load after is ours.
    if load_before[0] > (os.cpu_count() or 1) / 2:
        print("note: the machine was busy before the runs (load average above half its CPUs): these timings are not figures")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
