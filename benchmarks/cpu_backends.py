"""Whole-process `cyclemask-run --images --aligned` on the CPU, per backend and precision, against
the plain eager loop, all in one run.

    python benchmarks/cpu_backends.py                       # full generator, 12 faces, 3 rounds
    python benchmarks/cpu_backends.py --model tiny --images 4 --rounds 1 --candidates openvino --json

Every candidate is a real process, what a user runs, start-up included; the candidates run
alternately, round after round, so that other load on a shared machine falls on all of them
alike. Candidates:

- plain: benchmarks/plain_loop.py, the reference repository's test.py way (batch 1, serial,
  PIL in and out) on the same checkpoint and faces: the whole-process baseline;
- eager b1, b2, ...: `cyclemask-run --backend torch` at each --eager-batches size; the best of
  them is the steady-state baseline;
- compile, torch-bf16 (checkpoint); ort, openvino, openvino-bf16, auto, auto-bf16 (the FP32
  graph); openvino-int8, ort-int8 (the INT8 graph: NNCF, first and last convolutions in FP32,
  calibrated on the same faces), openvino-int8-adds (residual additions in FP32 too).

Per candidate, medians over rounds: frames/s in the pipeline (the run's summary: decode,
resize, model, encode, write; load excluded) and its ratio to eager at its best batch; the wall
time of the whole process and the plain loop's wall time divided by it; the time to the first
output file. Candidates run at their own default batch (--batch overrides). cyclemask-run's
start-up caches live in a fresh folder: the first round starts cold, later rounds warm.
BF16 candidates are skipped on CPUs without native BF16, INT8 ones without NNCF (each with the
reason). The load average is read before and after each run.

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

#: name -> (artefact, cyclemask-run arguments); "plain" runs benchmarks/plain_loop.py instead.
CANDIDATES = {
    "plain": ("checkpoint", None),
    "eager": ("checkpoint", ["--backend", "torch"]),
    "compile": ("checkpoint", ["--backend", "torch", "--compile"]),
    "torch-bf16": ("checkpoint", ["--backend", "torch", "--precision", "bf16"]),
    "ort": ("graph", ["--backend", "ort", "--ort-provider", "cpu"]),
    "openvino": ("graph", ["--backend", "openvino"]),
    "openvino-bf16": ("graph", ["--backend", "openvino", "--precision", "bf16"]),
    "openvino-int8": ("int8", ["--backend", "openvino"]),
    "openvino-int8-adds": ("int8-adds", ["--backend", "openvino"]),
    "ort-int8": ("int8", ["--backend", "ort", "--ort-provider", "cpu"]),
    "auto": ("graph", ["--backend", "auto"]),
    "auto-bf16": ("graph", ["--backend", "auto", "--precision", "bf16"]),
}
BASELINES = ("plain", "eager")
FPS = re.compile(r"throughput: [0-9.]+ frames/s \((\d+) frames in ([0-9.]+) s")
CHOSEN = re.compile(r"^backend: (.*?)  \[(.*)\]$", re.M)
PLAIN = re.compile(r"plain loop: (\d+) images, first output after ([0-9.]+) s, ([0-9.]+) s in all")


def _load() -> float:
    return os.getloadavg()[0]


def unavailable(name: str) -> str | None:
    """Why a candidate cannot run here, or None."""
    import importlib.util

    if "bf16" in name:
        from cyclemask.engine.cpu_features import bf16_support

        ok, why = bf16_support()
        if not ok:
            return why
    if "int8" in name and importlib.util.find_spec("nncf") is None:
        return "NNCF is not installed (pip install 'cyclemask[int8]'): no INT8 graph"
    if ("openvino" in name or name.startswith("auto")) and importlib.util.find_spec("openvino") is None:
        return "openvino is not installed"
    return None


def prepare(model: str, n_images: int, work: Path, kinds: set[str]) -> dict[str, Path]:
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
    files = {"checkpoint": ckpt, "graph": Path(graph), "images": folder}
    if kinds & {"int8", "int8-adds"}:
        from cyclemask.export.quantize import Int8Config, load_faces, quantize_graph
        from cyclemask.image_files import list_images

        # Speed only (random weights): calibrated on the benchmark's own faces.
        calib = load_faces(list_images(folder), spec.image_size)
        for kind, adds in (("int8", False), ("int8-adds", True)):
            if kind in kinds:
                files[kind] = quantize_graph(graph, work / f"mask.{kind}.onnx", calib,
                                             Int8Config(calib_count=n_images, fp32_residual_adds=adds))
    return files


def _first_output(out: Path) -> bool:
    try:
        return any(not e.name.startswith(".") for e in os.scandir(out))
    except OSError:
        return False


def run_one(name: str, files: dict[str, Path], out: Path, batch: int | None, threads: int | None,
            env: dict[str, str]) -> dict:
    kind, args = CANDIDATES[name.split(" ")[0]]
    if args is None:
        cmd = [sys.executable, str(REPO / "benchmarks" / "plain_loop.py"), "--checkpoint", str(files[kind]),
               "--direction", "mask", "--images", str(files["images"]), "--out", str(out),
               "--size", str(_size(files))]
    else:
        cmd = [sys.executable, "-m", "cyclemask.engine.cli", "--model", str(files[kind]), "--images",
               str(files["images"]), "--aligned", "--mask", "--out", str(out), "--no-progress", *args]
        if name.startswith("eager b"):
            cmd += ["--batch", name.split("b")[-1]]
        elif batch:
            cmd += ["--batch", str(batch)]
    if threads:
        cmd += ["--threads", str(threads)]
    load0, t0 = _load(), time.perf_counter()
    # Output to files, not pipes: the process is polled (to time its first output file), not
    # drained, and a full pipe would block it.
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True, env=env)
        first = None
        try:
            while proc.poll() is None:
                if first is None and _first_output(out):
                    first = time.perf_counter() - t0
                time.sleep(0.005 if first is None else 0.05)
        except KeyboardInterrupt:
            # Let the run stop itself (it removes its partial files); a Ctrl-C from the terminal
            # reached it already, and this second signal makes it exit at once.
            proc.terminate()
            proc.wait()
            raise
        fo.seek(0)
        fe.seek(0)
        stdout, stderr = fo.read(), fe.read()
    wall = time.perf_counter() - t0
    if first is None and _first_output(out):
        first = wall
    if proc.returncode != 0:
        raise click.ClickException(f"{name} failed (exit {proc.returncode}):\n{stdout[-2000:]}\n{stderr[-2000:]}")
    row = {"wall_s": round(wall, 3), "first_output_s": round(first, 3) if first is not None else None,
           "load": [round(load0, 2), round(_load(), 2)]}
    if args is None:
        m = PLAIN.search(stderr)
        n, first_in, total = int(m.group(1)), float(m.group(2)), float(m.group(3))
        # Its loop time, from the first image's start: (all - first) covers n-1 images.
        per = (total - first_in) / max(1, n - 1) if n > 1 else total
        row.update(fps=round(1.0 / per, 4) if per > 0 else 0.0, backend="plain eager loop (PIL, batch 1)", reason="")
    else:
        m, c = FPS.search(stdout), CHOSEN.search(stdout)
        row.update(fps=round(int(m.group(1)) / float(m.group(2)), 4), backend=c.group(1) if c else "",
                   reason=c.group(2) if c else "")
    return row


def _size(files: dict[str, Path]) -> int:
    from cyclemask.artifacts import read_onnx_metadata

    return int(read_onnx_metadata(files["graph"])["image_size"])


@click.command(cls=Command)
@click.option("--model", type=click.Choice(sorted(MODELS)), default="full", show_default=True,
              help="Generator size (full: ngf 64, 9 blocks, 256 px).")
@click.option("--images", "n_images", type=click.IntRange(1), default=12, show_default=True,
              help="Faces in the input folder.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Rounds; every candidate runs once per round, in turn.")
@click.option("--candidates", default=",".join(n for n in CANDIDATES if n not in BASELINES), show_default=True,
              help=f"Comma-separated candidates besides the baselines ({', '.join(BASELINES)}), which always run.")
@click.option("--eager-batches", default="1,2,4", show_default=True,
              help="Batch sizes of the eager rows; the best is the steady-state baseline.")
@click.option("--batch", type=click.IntRange(1), default=None,
              help="cyclemask-run --batch for every other candidate. [default: each backend's own]")
@click.option("--threads", type=click.IntRange(1), default=None, help="--threads for every process. [default: theirs]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a Markdown table.")
def main(model, n_images, rounds, candidates, eager_batches, batch, threads, as_json):
    """Time cyclemask-run end to end with each CPU backend and precision, against the plain loop."""
    wanted = [c for c in candidates.split(",") if c and c not in BASELINES]
    unknown = [n for n in wanted if n not in CANDIDATES]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(unknown)}; known: {', '.join(CANDIDATES)}", param_hint="--candidates")
    try:
        eb = sorted({int(b) for b in eager_batches.split(",") if b.strip()})
    except ValueError:
        raise click.BadParameter(f"{eager_batches!r}: comma-separated batch sizes", param_hint="--eager-batches") from None
    if not eb or min(eb) < 1:
        raise click.BadParameter("give at least one batch size >= 1", param_hint="--eager-batches")
    skipped = {n: why for n in wanted if (why := unavailable(n))}
    names = ["plain"] + [f"eager b{b}" for b in eb] + [n for n in wanted if n not in skipped]
    for n, why in skipped.items():
        click.echo(f"skipped {n}: {why}", err=True)
    with tempfile.TemporaryDirectory(prefix="cyclemask-cpu-") as tmp:
        work = Path(tmp)
        files = prepare(model, n_images, work, {CANDIDATES[n.split(" ")[0]][0] for n in names})
        env = {**os.environ, "CYCLEMASK_CACHE_DIR": str(work / "cache")}
        results: dict[str, list[dict]] = {n: [] for n in names}
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]  # neither first nor last every round
            for n in order:
                row = run_one(n, files, work / f"out-{n.replace(' ', '-')}-{r}", batch, threads, env)
                results[n].append(row)
                click.echo(f"round {r + 1} {n}: {row['fps']:.3f} frames/s, {row['wall_s']} s, first output "
                           f"{row['first_output_s']} s, load {row['load']}", err=True)
    med = {n: {k: statistics.median(x[k] for x in rs) for k in ("fps", "wall_s")} for n, rs in results.items()}
    for n, rs in results.items():
        firsts = [x["first_output_s"] for x in rs if x["first_output_s"] is not None]
        med[n]["first_output_s"] = statistics.median(firsts) if firsts else None
    best_eager = max((n for n in names if n.startswith("eager b")), key=lambda n: med[n]["fps"])
    base_fps, plain_wall = med[best_eager]["fps"], med["plain"]["wall_s"]
    summary = {
        "started": started, "model": MODELS[model].describe(), "images": n_images, "rounds": rounds,
        "batch": batch, "cpus": os.cpu_count(), "eager_baseline": best_eager, "skipped": skipped,
        "rows": [{"candidate": n, "fps_median": med[n]["fps"], "vs_eager_best": round(med[n]["fps"] / base_fps, 3),
                  "wall_s_median": med[n]["wall_s"], "plain_vs_this_wall": round(plain_wall / med[n]["wall_s"], 3),
                  "first_output_s_median": med[n]["first_output_s"],
                  "fps_all": [x["fps"] for x in rs], "wall_s_all": [x["wall_s"] for x in rs],
                  "load": [x["load"] for x in rs], "backend": rs[-1]["backend"], "reason": rs[-1]["reason"]}
                 for n, rs in results.items()],
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"cyclemask-run --images --aligned, {summary['model']}, {n_images} faces, {rounds} rounds alternating, "
               f"{summary['cpus']} CPUs, started {started}; steady-state baseline: {best_eager}; whole-process "
               "baseline: the plain loop")
    click.echo("")
    click.echo("| candidate | frames/s (median) | vs eager at its best batch | wall s (median, whole process) | "
               "plain loop's wall / this | first output s | wall s, all rounds | load avg (1 min) |")
    click.echo("|---|---|---|---|---|---|---|---|")
    for row in summary["rows"]:
        loads = ", ".join(f"{a:.1f}-{b:.1f}" for a, b in row["load"])
        first = "-" if row["first_output_s_median"] is None else f"{row['first_output_s_median']:.2f}"
        click.echo(f"| {row['candidate']} | {row['fps_median']:.3f} | {row['vs_eager_best']:.2f}x | "
                   f"{row['wall_s_median']:.2f} | {row['plain_vs_this_wall']:.2f}x | {first} | "
                   f"{', '.join(f'{v:.2f}' for v in row['wall_s_all'])} | {loads} |")
    for row in summary["rows"]:
        click.echo(f"- {row['candidate']}: {row['backend']}" + (f" [{row['reason']}]" if row["reason"] else ""))
    for n, why in skipped.items():
        click.echo(f"- {n}: skipped ({why})")


if __name__ == "__main__":
    main()
