"""cyclemask-run against deface on the same video clips: whole process and steady frame rate.

    python benchmarks/peer_video.py                                  # deface from PATH
    python benchmarks/peer_video.py --deface ~/deface-venv/bin/deface --repeats 7
    python benchmarks/peer_video.py --mask-method gan --json

deface (https://github.com/ORB-HD/deface) blurs faces in videos; it is a peer to compare with,
never a dependency of cyclemask. Install it in a virtual environment of its own (its onnxruntime
backend is its fast one; without it deface falls back to OpenCV's DNN module):

    python3 -m venv ~/deface-venv && ~/deface-venv/bin/pip install deface onnxruntime

The benchmark runs the `deface` command found on PATH, or $CYCLEMASK_DEFACE, or --deface PATH;
without one it prints why it skips and exits 0.

Clips: two H.264 clips at 854x480, 25 fps, made from the shared head-pose clip of one man
(../shared/data/video, cycled back and forth and scaled up; a webcam-style head and shoulders):
a short one (--short-seconds, default 2) and a long one (--long-seconds, default 20). Both tools
work at their own defaults on them: deface blurs (threshold 0.2, detection at full size),
`cyclemask-run --video CLIP --mask` masks (--mask-method, default template, as cyclemask-run's
own default: a warped mask template, no generator; gan: the embedded demo generator on each face).

For each repeat the two tools run one after the other, the order swapped every repeat (ABBA), on
the short clip and then on the long one, each as a whole fresh process timed from start to exit.
Before the timed repeats each tool runs once untimed (the disk cache, and cyclemask's own cache
of the backend choice and compiled OpenVINO model, are warm, as on a user's second run).

Figures, medians over the repeats:
- whole process: seconds for the short clip, per tool, and deface's over cyclemask's (> 1: cyclemask
  is faster);
- steady frames/s: (long frames - short frames) / (long seconds - short seconds) in the same
  repeat, which cancels each tool's start-up, and cyclemask's over deface's.

The ratios are taken per repeat (the two runs of a pair saw about the same load), then the
median. The load average is printed before and after: on a busy machine compare ratios only.
Not part of the installed package: run it from the repository root.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks.*` importable
    sys.path.insert(0, str(REPO))

from benchmarks.inputs import SHARED_DATA  # noqa: E402

SOURCE_CLIP = SHARED_DATA / "video" / "head-pose-face-detection-male.mp4"
SIZE = (854, 480)
FPS = 25
INSTALL_HINT = ("install it in a virtual environment of its own: python3 -m venv ~/deface-venv && "
                "~/deface-venv/bin/pip install deface onnxruntime; then pass --deface ~/deface-venv/bin/deface "
                "or set CYCLEMASK_DEFACE")


def find_deface(explicit: str | None) -> tuple[str | None, str]:
    """(the deface command, where it came from) or (None, why there is none)."""
    if explicit:
        p = Path(explicit).expanduser()
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise click.BadParameter(f"{p}: not an executable file", param_hint="--deface")
        return str(p), "--deface"
    env = os.environ.get("CYCLEMASK_DEFACE")
    if env:
        p = Path(env).expanduser()
        if p.is_file() and os.access(p, os.X_OK):
            return str(p), "$CYCLEMASK_DEFACE"
        return None, f"$CYCLEMASK_DEFACE={env} is not an executable file"
    found = shutil.which("deface")
    if found:
        return found, "PATH"
    return None, "no `deface` command on PATH (nor $CYCLEMASK_DEFACE, nor --deface)"


def make_clip(path: Path, seconds: float, source: Path = SOURCE_CLIP, size: tuple[int, int] = SIZE,
              fps: int = FPS) -> int:
    """An H.264 clip of round(seconds * fps) frames: `source`'s frames forth and back, resized.
    Returns the frame count."""
    import av
    import cv2

    with av.open(str(source)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    if not frames:
        raise click.ClickException(f"{source}: no video frames")
    cycle = frames + frames[-2:0:-1]
    n = max(1, int(round(seconds * fps)))
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "18", "preset": "veryfast"}
        for i in range(n):
            img = cv2.resize(cycle[i % len(cycle)], size, interpolation=cv2.INTER_CUBIC)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return n


def commands(tool: str, deface: str, clip: Path, out: Path, mask_method: str) -> list[str]:
    if tool == "deface":
        return [deface, str(clip), "-o", str(out)]
    return [sys.executable, "-m", "cyclemask.engine.cli", "--video", str(clip), "--mask", "--mask-method",
            mask_method, "--out", str(out), "--overwrite", "--no-progress"]


def run_once(cmd: list[str], out: Path) -> float:
    """Seconds from start to exit of one process; its output must exist afterwards."""
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0 or not out.is_file():
        tail = "\n".join(res.stdout.splitlines()[-15:])
        raise click.ClickException(f"{' '.join(cmd)} failed (exit {res.returncode}):\n{tail}")
    return wall


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def bench(deface: str, short: tuple[Path, int], long: tuple[Path, int], repeats: int, mask_method: str,
          work: Path, echo=click.echo) -> dict:
    tools = ("deface", "cyclemask")
    times: dict[str, dict[str, list[float]]] = {t: {"short": [], "long": []} for t in tools}
    clips = {"short": short, "long": long}

    def once(tool: str, which: str) -> float:
        clip, _ = clips[which]
        out = work / f"{tool}_{which}.mp4"
        return run_once(commands(tool, deface, clip, out, mask_method), out)

    for tool in tools:  # untimed warm-up: disk cache, cyclemask's backend cache
        once(tool, "short")
    for r in range(repeats):
        order = tools if r % 2 == 0 else tools[::-1]
        for which in ("short", "long"):
            for tool in order:
                times[tool][which].append(once(tool, which))
        echo(f"  repeat {r + 1}/{repeats}: " + ", ".join(
            f"{t} {times[t]['short'][-1]:.2f} s / {times[t]['long'][-1]:.2f} s" for t in tools), err=True)

    n_short, n_long = short[1], long[1]

    def steady(tool: str, i: int) -> float:
        dt = times[tool]["long"][i] - times[tool]["short"][i]
        return (n_long - n_short) / dt if dt > 0 else float("nan")

    result: dict = {"repeats": repeats, "mask_method": mask_method, "short_frames": n_short, "long_frames": n_long}
    for tool in tools:
        result[tool] = {
            "whole_s": statistics.median(times[tool]["short"]),
            "long_s": statistics.median(times[tool]["long"]),
            "steady_fps": statistics.median(steady(tool, i) for i in range(repeats)),
            "runs_short_s": times[tool]["short"], "runs_long_s": times[tool]["long"],
        }
    result["whole_ratio"] = statistics.median(
        times["deface"]["short"][i] / times["cyclemask"]["short"][i] for i in range(repeats))
    result["steady_ratio"] = statistics.median(
        steady("cyclemask", i) / steady("deface", i) for i in range(repeats))
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--deface", "deface_opt", default=None, metavar="PATH",
              help="The deface command to compare with. Default: $CYCLEMASK_DEFACE, else `deface` on PATH.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1))
@click.option("--short-seconds", default=2.0, show_default=True, type=click.FloatRange(0.04))
@click.option("--long-seconds", default=20.0, show_default=True, type=click.FloatRange(0.08))
@click.option("--mask-method", type=click.Choice(["gan", "template"]), default="template", show_default=True)
@click.option("--source", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The clip the benchmark clips are made from. Default: the shared head-pose clip of one man.")
@click.option("--json", "as_json", is_flag=True, help="Also print the figures as JSON.")
def main(deface_opt, repeats, short_seconds, long_seconds, mask_method, source, as_json):
    deface, origin = find_deface(deface_opt)
    if deface is None:
        click.echo(f"skipped: {origin}; {INSTALL_HINT}")
        return
    if long_seconds <= short_seconds:
        raise click.BadParameter("must be longer than --short-seconds", param_hint="--long-seconds")
    source = source or SOURCE_CLIP
    if not source.is_file():
        click.echo(f"skipped: the source clip {source} is absent (pass --source CLIP)")
        return
    click.echo(f"deface: {deface} (from {origin})")
    click.echo(f"cyclemask: {sys.executable} -m cyclemask.engine.cli (--mask --mask-method {mask_method})")
    click.echo(f"load average before: {load()}")
    with tempfile.TemporaryDirectory(prefix="peer_video_") as tmp:
        work = Path(tmp)
        short = (work / "short.mp4", make_clip(work / "short.mp4", short_seconds, source))
        long = (work / "long.mp4", make_clip(work / "long.mp4", long_seconds, source))
        click.echo(f"clips: {SIZE[0]}x{SIZE[1]} {FPS} fps H.264 from {source.name}: "
                   f"{short[1]} and {long[1]} frames")
        result = bench(deface, short, long, repeats, mask_method, work)
    result["load_after"] = load()
    d, c = result["deface"], result["cyclemask"]
    click.echo(f"load average after: {result['load_after']}")
    click.echo(f"\nmedians of {repeats} alternating repeats        deface   cyclemask   ratio")
    click.echo(f"whole process, {result['short_frames']:4d} frames (s)        {d['whole_s']:7.2f}   {c['whole_s']:9.2f}   "
               f"{result['whole_ratio']:.2f}x  (deface / cyclemask seconds)")
    click.echo(f"whole process, {result['long_frames']:4d} frames (s)        {d['long_s']:7.2f}   {c['long_s']:9.2f}")
    click.echo(f"steady frames/s (long - short)         {d['steady_fps']:7.1f}   {c['steady_fps']:9.1f}   "
               f"{result['steady_ratio']:.2f}x  (cyclemask / deface frames/s)")
    if as_json:
        click.echo(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
