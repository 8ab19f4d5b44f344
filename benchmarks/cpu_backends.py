"""End-to-end `cyclemask-run --images --aligned` throughput of the CPU backends, side by side.

    python benchmarks/cpu_backends.py                       # full generator, 24 faces, 3 rounds
    python benchmarks/cpu_backends.py --model small --images 48 --rounds 2 --json

Each candidate is a real `cyclemask-run` process (what a user runs, model load included in the
wall time), and the candidates run alternately, round after round, so that other load on a
shared machine falls on all of them alike. Candidates: eager torch on the checkpoint (the
baseline), torch.compile, ONNX Runtime CPU and OpenVINO on the FP32 graph, and `auto` on the
graph (what it picked is read from its output). Per candidate: the median over rounds of the
pipeline's frames/s (the run's summary: decode, resize, model, encode, write; load excluded),
the median wall time of the whole process, and the ratio to eager. The load average is read
before and after each run.

Not part of the installed package: run it from the repository root.
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
from cyclemask.cli_util import Command  # noqa: E402
from benchmarks.variants import MODELS, seeded_generator  # noqa: E402

CANDIDATES = {
    "eager": ("checkpoint", ["--backend", "torch"]),
    "compile": ("checkpoint", ["--backend", "torch", "--compile"]),
    "ort": ("graph", ["--backend", "ort", "--ort-provider", "cpu"]),
    "openvino": ("graph", ["--backend", "openvino"]),
    "auto": ("graph", ["--backend", "auto"]),
}
FPS = re.compile(r"throughput: [0-9.]+ frames/s \((\d+) frames in ([0-9.]+) s")
CHOSEN = re.compile(r"^backend: (.*?)  \[(.*)\]$", re.M)


def _load() -> float:
    return os.getloadavg()[0]


def prepare(model: str, n_images: int, work: Path) -> dict[str, Path]:
    import torch

    from cyclemask.checkpoint import save_generators
    from cyclemask.export.onnx import export_onnx

    spec = MODELS[model]
    torch.manual_seed(0)
    gen = seeded_generator(spec.config())
    ckpt = work / "generators.pt"
    save_generators(ckpt, {"mask": gen}, extra={"image_size": spec.image_size})
    graph = export_onnx(gen, work / "mask.onnx", image_size=spec.image_size, metadata={"direction": "mask"})
    folder = inputs.make_image_folder(work / "faces", n_images)
    return {"checkpoint": ckpt, "graph": Path(graph), "images": folder}


def run_one(name: str, files: dict[str, Path], out: Path, batch: int, threads: int | None) -> dict:
    kind, args = CANDIDATES[name]
    cmd = [sys.executable, "-m", "cyclemask.engine.cli", "--model", str(files[kind]), "--images",
           str(files["images"]), "--aligned", "--mask", "--out", str(out), "--no-progress", "--batch", str(batch),
           *args]
    if threads:
        cmd += ["--threads", str(threads)]
    load0, t0 = _load(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate()
    except KeyboardInterrupt:
        # Let the run stop itself (it removes its partial files); a Ctrl-C from the terminal
        # reached it already, and this second signal makes it exit at once.
        proc.terminate()
        proc.communicate()
        raise
    res = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise click.ClickException(f"{name} failed (exit {res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    m, c = FPS.search(res.stdout), CHOSEN.search(res.stdout)
    return {"fps": round(int(m.group(1)) / float(m.group(2)), 4), "wall_s": round(wall, 2), "load": [round(load0, 2), round(_load(), 2)],
            "backend": c.group(1) if c else "", "reason": c.group(2) if c else ""}


@click.command(cls=Command)
@click.option("--model", type=click.Choice(sorted(MODELS)), default="full", show_default=True,
              help="Generator size (full: ngf 64, 9 blocks, 256 px).")
@click.option("--images", "n_images", type=click.IntRange(1), default=24, show_default=True,
              help="Faces in the input folder.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Rounds; every candidate runs once per round, in turn.")
@click.option("--candidates", default=",".join(CANDIDATES), show_default=True,
              help="Comma-separated candidates (eager is always included: it is the baseline).")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True, help="cyclemask-run --batch.")
@click.option("--threads", type=click.IntRange(1), default=None, help="cyclemask-run --threads. [default: theirs]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a Markdown table.")
def main(model, n_images, rounds, candidates, batch, threads, as_json):
    """Time cyclemask-run end to end with each CPU backend, alternating."""
    names = ["eager"] + [c for c in candidates.split(",") if c and c != "eager"]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(unknown)}; known: {', '.join(CANDIDATES)}", param_hint="--candidates")
    with tempfile.TemporaryDirectory(prefix="cyclemask-cpu-") as tmp:
        work = Path(tmp)
        files = prepare(model, n_images, work)
        results: dict[str, list[dict]] = {n: [] for n in names}
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]  # neither first nor last every round
            for n in order:
                out = work / f"out-{n}-{r}"
                results[n].append(run_one(n, files, out, batch, threads))
                click.echo(f"round {r + 1} {n}: {results[n][-1]['fps']:.3f} frames/s, {results[n][-1]['wall_s']} s, "
                           f"load {results[n][-1]['load']}", err=True)
    base = statistics.median(x["fps"] for x in results["eager"])
    summary = {
        "started": started, "model": MODELS[model].describe(), "images": n_images, "rounds": rounds,
        "batch": batch, "cpus": os.cpu_count(),
        "rows": [{"candidate": n, "fps_median": statistics.median(x["fps"] for x in rs),
                  "fps_all": [x["fps"] for x in rs], "wall_s_median": statistics.median(x["wall_s"] for x in rs),
                  "vs_eager": round(statistics.median(x["fps"] for x in rs) / base, 3),
                  "load": [x["load"] for x in rs], "backend": rs[-1]["backend"], "reason": rs[-1]["reason"]}
                 for n, rs in results.items()],
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"cyclemask-run --images --aligned, {summary['model']}, {n_images} images, batch {batch}, "
               f"{rounds} rounds alternating, {summary['cpus']} CPUs, started {started}")
    click.echo("")
    click.echo("| candidate | frames/s (median) | all rounds | wall s (median, incl. load) | vs eager | load avg (1 min) |")
    click.echo("|---|---|---|---|---|---|")
    for row in summary["rows"]:
        loads = ", ".join(f"{a:.1f}-{b:.1f}" for a, b in row["load"])
        click.echo(f"| {row['candidate']} | {row['fps_median']:.3f} | {', '.join(f'{v:.3f}' for v in row['fps_all'])} | "
                   f"{row['wall_s_median']:.1f} | {row['vs_eager']:.2f}x | {loads} |")
    for row in summary["rows"]:
        click.echo(f"- {row['candidate']}: {row['backend']} [{row['reason']}]")


if __name__ == "__main__":
    main()
