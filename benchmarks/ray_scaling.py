"""`cyclemask-run --images --aligned` on this machine, locally and with `--ray` (1 and 2 workers),
and a scaling estimate for N GPUs.

    python benchmarks/ray_scaling.py                         # small model, 256 images, 2 rounds
    python benchmarks/ray_scaling.py --model tiny --images 16 --rounds 1 --json
    python benchmarks/ray_scaling.py --gpu-fps 900 --gpu-fps 2500   # add GPU rows to the estimate
    python benchmarks/ray_scaling.py --ort-provider cuda --gpus-per-worker 0.5   # on a 1-GPU machine (not run)

Each candidate is a real `cyclemask-run` process (each --ray one starts its own local Ray), and
the candidates take turns, round after round, so that other load on a shared machine falls on all
of them alike. All run the FP32 graph on ONNX Runtime (the CPU provider unless --ort-provider)
with the same threads per model, so the bytes and the work per frame are the same. Per candidate, medians over rounds of:

- run frames/s: the summary's throughput. Local: the pipeline (model load excluded). --ray:
  from the dataset's start, so the workers' start and model load are inside;
- steady frames/s: --ray from the first call's start to the last call's end (the rate once the
  workers are up); local: the pipeline's;
- wall s: the whole process, Ray's start included;
- per call: the time inside a worker's call, and the idle gap between two calls on one worker
  (what Ray costs per call: scheduling, moving the batch in and the status rows out).

Overhead ratio: local frames/s over the 1-worker Ray run's (steady, and whole run).

The scaling estimate is arithmetic, not a measurement: N workers, each running F files per
call at T frames/s, spend F/T in a call and g between calls, so N of them give about
N x F / (F/T + g) frames/s once started, plus a fixed start per run (Ray's start and the first
call). T is this machine's 1-worker rate inside its calls, or each --gpu-fps given; g is the gap
measured here. It leaves out what it cannot see from one machine: the shared filesystem's bandwidth, the
network, and the CLI process taking every status row (light, but one process).

Not part of the installed package: run it from the repository root, with `cyclemask[ray]`.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import inputs  # noqa: E402
from benchmarks.variants import MODELS, seeded_generator  # noqa: E402

CANDIDATES = {"local": None, "ray1": 1, "ray2": 2}  # name -> Ray workers (None: no Ray)
FPS = re.compile(r"throughput: [0-9.]+ frames/s \((\d+) frames in ([0-9.]+) s")
CALLS = re.compile(r"ray: .*?(\d+) call\(s\)(?:: (\d+) ms inside each(?:, (\d+) ms between calls)?)?")
TIMES = re.compile(r"ray time: Ray start ([0-9.]+) s(?:, first call ([0-9.]+) s after the dataset started)?"
                   r"(?:; ([0-9.]+) files/s from the first call to the last)?")
PER_CALL = re.compile(r"ray:\s+a local Ray .*?, (\d+) files? per call")
ESTIMATE_GPUS = (1, 2, 4, 8, 16, 32, 64)


def _load() -> float:
    return os.getloadavg()[0]


def prepare(model: str, n_images: int, work: Path) -> dict[str, Path]:
    import torch

    from cyclemask.export.onnx import export_onnx

    spec = MODELS[model]
    torch.manual_seed(0)
    graph = export_onnx(seeded_generator(spec.config()), work / "mask.onnx", image_size=spec.image_size,
                        metadata={"direction": "mask"})
    return {"graph": Path(graph), "images": inputs.make_image_folder(work / "faces", n_images)}


def parse(stdout: str) -> dict:
    """The figures of one run's summary."""
    m = FPS.search(stdout)
    if m is None:
        raise click.ClickException(f"no throughput line in the output:\n{stdout[-2000:]}")
    frames, seconds = int(m.group(1)), float(m.group(2))
    row = {"frames": frames, "fps": round(frames / seconds, 4) if seconds > 0 else 0.0}
    c, t, pc = CALLS.search(stdout), TIMES.search(stdout), PER_CALL.search(stdout)
    if c is not None:
        row.update(calls=int(c.group(1)), call_ms=float(c.group(2) or 0), gap_ms=float(c.group(3)) if c.group(3) else None)
    if t is not None:
        row.update(ray_start_s=float(t.group(1)), first_call_s=float(t.group(2) or 0),
                   steady_fps=float(t.group(3)) if t.group(3) else None)
    if pc is not None:
        row["files_per_call"] = int(pc.group(1))
    return row


def run_one(name: str, files: dict[str, Path], out: Path, batch: int, threads: int,
            files_per_call: int | None, provider: str = "cpu", gpus_per_worker: float = 0.0) -> dict:
    cmd = [sys.executable, "-m", "cyclemask.engine.cli", "--model", str(files["graph"]), "--images",
           str(files["images"]), "--aligned", "--mask", "--out", str(out), "--no-progress", "--batch", str(batch),
           "--backend", "ort", "--ort-provider", provider, "--threads", str(threads)]
    workers = CANDIDATES[name]
    if workers is not None:
        cmd += ["--ray", "--workers", str(workers), "--cpus-per-worker", str(threads),
                "--gpus-per-worker", f"{gpus_per_worker:g}"]
        if files_per_call:
            cmd += ["--files-per-call", str(files_per_call)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load0, t0 = _load(), time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise click.ClickException(f"{name} failed (exit {res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    row = parse(res.stdout)
    row.update(wall_s=round(wall, 2), load=[round(load0, 2), round(_load(), 2)])
    if workers is None:
        row["steady_fps"] = row["fps"]
    return row


def _median(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def estimate(per_gpu_fps: float, files_per_call: int, gap_s: float, start_s: float,
             gpus: tuple[int, ...] = ESTIMATE_GPUS, images: int = 1_000_000) -> list[dict]:
    """N x F / (F/T + g) frames/s, and the hours for `images` with the fixed start."""
    call_s = files_per_call / per_gpu_fps
    rows = []
    for n in gpus:
        fps = n * files_per_call / (call_s + gap_s)
        rows.append({"gpus": n, "fps": round(fps, 1), "efficiency": round(call_s / (call_s + gap_s), 3),
                     "hours_for_images": round((start_s + images / fps) / 3600, 3)})
    return rows


@click.command()
@click.option("--model", type=click.Choice(sorted(MODELS)), default="small", show_default=True,
              help="Generator size (small: ngf 16, 3 blocks, 128 px).")
@click.option("--images", "n_images", type=click.IntRange(1), default=256, show_default=True,
              help="Images in the input folder.")
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True,
              help="Rounds; every candidate runs once per round, in turn.")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True, help="cyclemask-run --batch.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="Model threads per process (local) and per worker (--ray; also its --cpus-per-worker).")
@click.option("--files-per-call", type=click.IntRange(1), default=None,
              help="cyclemask-run --files-per-call for the --ray runs. [default: its own]")
@click.option("--ort-provider", "provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu",
              show_default=True, help="ONNX Runtime provider of every run (cuda / tensorrt on a GPU machine).")
@click.option("--gpus-per-worker", type=click.FloatRange(0), default=0.0, show_default=True,
              help="--ray runs: GPUs per worker (0.5 lets the 2-worker run share one GPU).")
@click.option("--gpu-fps", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="Per-GPU frames/s to add to the estimate (e.g. a device check's figure); repeatable.")
@click.option("--estimate-files-per-call", "est_fpc", type=click.IntRange(1), multiple=True,
              help="Files per call to estimate with, besides the runs' own; repeatable. [default: 256]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of Markdown tables.")
def main(model, n_images, rounds, batch, threads, files_per_call, provider, gpus_per_worker, gpu_fps, est_fpc,
         as_json):
    """Time cyclemask-run locally and on a local Ray with 1 and 2 workers; estimate N GPUs."""
    names = list(CANDIDATES)
    with tempfile.TemporaryDirectory(prefix="cyclemask-ray-") as tmp:
        work = Path(tmp)
        files = prepare(model, n_images, work)
        results: dict[str, list[dict]] = {n: [] for n in names}
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        for r in range(rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                results[n].append(run_one(n, files, work / f"out-{n}-{r}", batch, threads, files_per_call,
                                          provider, gpus_per_worker))
                last = results[n][-1]
                click.echo(f"round {r + 1} {n}: {last['fps']:.2f} frames/s (steady {last.get('steady_fps')}), "
                           f"wall {last['wall_s']} s, load {last['load']}", err=True)
    rows = []
    for n, rs in results.items():
        rows.append({"candidate": n, "workers": CANDIDATES[n], "fps": _median(rs, "fps"),
                     "steady_fps": _median(rs, "steady_fps"), "wall_s": _median(rs, "wall_s"),
                     "ray_start_s": _median(rs, "ray_start_s"), "first_call_s": _median(rs, "first_call_s"),
                     "call_ms": _median(rs, "call_ms"), "gap_ms": _median(rs, "gap_ms"),
                     "files_per_call": _median(rs, "files_per_call"), "load": [x["load"] for x in rs]})
    by = {r["candidate"]: r for r in rows}
    local, ray1 = by["local"], by["ray1"]
    overhead = {
        "steady": round(local["fps"] / ray1["steady_fps"], 3) if ray1["steady_fps"] else None,
        "whole_run": round(local["fps"] / ray1["fps"], 3) if ray1["fps"] else None,
    }
    # The gap is Ray's per-call cost; with too few calls per worker to have one, call it 0 and say so.
    gap_s = (ray1["gap_ms"] if ray1["gap_ms"] is not None else by["ray2"]["gap_ms"] or 0.0) / 1000
    fpc = int(ray1["files_per_call"] or files_per_call or max(16, 4 * batch))
    start_s = (ray1["ray_start_s"] or 0.0) + (ray1["first_call_s"] or 0.0)
    # A worker's own rate is its files per call over the time inside a call (the gap is added back
    # by the estimate); the local pipeline's rate where no call was timed.
    own = fpc / (ray1["call_ms"] / 1000) if ray1["call_ms"] else local["fps"]
    per_gpu = [("this machine, 1 CPU worker (measured inside its calls)", round(own, 2))]
    per_gpu += [(f"{v:g} frames/s per GPU (given)", v) for v in gpu_fps]
    sizes = [fpc] + [n for n in (est_fpc or (256,)) if n != fpc]
    estimates = [{"per_gpu": label, "per_gpu_fps": t, "files_per_call": n, "rows": estimate(t, n, gap_s, start_s)}
                 for label, t in per_gpu for n in sizes]
    summary = {"started": started, "model": MODELS[model].describe(), "images": n_images, "rounds": rounds,
               "batch": batch, "threads": threads, "cpus": os.cpu_count(), "rows": rows, "overhead_ratio": overhead,
               "estimate_inputs": {"files_per_call": fpc, "gap_s": gap_s, "start_s": start_s},
               "estimates": estimates}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"cyclemask-run --images --aligned, {summary['model']}, {n_images} images, batch {batch}, "
               f"{threads} thread(s) per model, {rounds} rounds alternating, {summary['cpus']} CPUs, started {started}")
    click.echo("")
    click.echo("| run | frames/s (run) | frames/s (steady) | wall s | Ray start s | ms per call | ms between calls | load avg |")
    click.echo("|---|---|---|---|---|---|---|---|")

    def f(v, fmt="{:.2f}"):
        return "-" if v is None else fmt.format(v)

    for r in rows:
        loads = ", ".join(f"{a:.1f}-{b:.1f}" for a, b in r["load"])
        click.echo(f"| {r['candidate']} | {f(r['fps'])} | {f(r['steady_fps'])} | {f(r['wall_s'], '{:.1f}')} | "
                   f"{f(r['ray_start_s'], '{:.1f}')} | {f(r['call_ms'], '{:.0f}')} | {f(r['gap_ms'], '{:.0f}')} | {loads} |")
    click.echo("")
    click.echo(f"overhead ratio (local / 1 Ray worker): steady {f(overhead['steady'], '{:.2f}')}x, "
               f"whole run {f(overhead['whole_run'], '{:.2f}')}x")
    for est in estimates:
        click.echo("")
        click.echo(f"ESTIMATE, not measured: {est['per_gpu']}, {est['files_per_call']} files per call, "
                   f"{gap_s * 1000:.0f} ms between "
                   f"calls, {start_s:.1f} s to start")
        click.echo("")
        click.echo("| GPUs | frames/s | efficiency | hours for 1M images |")
        click.echo("|---|---|---|---|")
        for e in est["rows"]:
            click.echo(f"| {e['gpus']} | {e['fps']:.0f} | {e['efficiency']:.0%} | {e['hours_for_images']:.2f} |")


if __name__ == "__main__":
    main()
