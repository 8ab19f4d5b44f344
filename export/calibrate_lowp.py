"""Measure BF16 and INT8 against eager FP32 on the shipped generators, and what each INT8
quality lever buys: ``python -m cyclemask.export.calibrate_lowp``.

    python -m cyclemask.export.calibrate_lowp \\
        --faces-a crops/trainA --holdout-a crops/testA \\
        --faces-b crops/trainB --holdout-b crops/testB --json lowp.json

Reads the generators shipped in cyclemask/assets/demo/ (or --checkpoint), so it can be rerun
whenever they change; the bounds in export/verify.py (BF16_BOUNDS, INT8_BOUNDS) and
export/lowp.py (TASK_MAX_DROP) were set from its output. Per direction (`mask` takes unmasked
faces A, `unmask` masked faces B), on the held-out faces:

- BF16: the FP32 graph on OpenVINO under the BF16 hint, and the checkpoint on torch in bfloat16;
- INT8 (NNCF on the FP32 graph, run on OpenVINO and on ONNX Runtime), one row per lever:
  NNCF's defaults, first/last convolutions in FP32, residual additions in FP32 too, the mixed
  preset, full bias correction, fewer and more calibration faces, accuracy-aware quantisation
  (to --target-psnr);

each with PSNR, the share within 1 and 2 LSB, the largest difference and the change in the
masked/unmasked classifier's success rate. Speed is not measured here (benchmarks/cpu_backends.py
does that on the full generator).

`--random-full` runs the paper's full-size generator with seeded random weights instead (the
worst case for low precision: its outputs are noise-like), slowly: minutes per row on 2 cores.
Faces come from folders of face crops (e.g. `cyclemask-data prepare` output); nothing here
needs a GPU. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cyclemask.errors import CycleMaskError

from .lowp import check_graph, check_outputs, run_backend
from .quantize import Int8Config, load_face_sets, quantize_graph

log = logging.getLogger(__name__)

#: The INT8 rows: what changes against the first (NNCF's defaults, 64 faces).
LEVERS: dict[str, dict] = {
    "nncf defaults": dict(fp32_convs="none"),
    "first+last conv FP32": dict(fp32_convs="first,last"),
    "+ residual adds FP32": dict(fp32_convs="first,last", fp32_residual_adds=True),
    "+ mixed preset": dict(fp32_convs="first,last", preset="mixed"),
    "+ full bias correction": dict(fp32_convs="first,last", bias_correction="full"),
    "+ 16 faces": dict(fp32_convs="first,last", calib_count=16),
    "+ 256 faces": dict(fp32_convs="first,last", calib_count=256),
    "+ accuracy-aware": dict(fp32_convs="first,last", accuracy_aware=True),
}


def _generators(checkpoint: str | None, random_full: bool) -> tuple[dict, int, str]:
    import torch

    from cyclemask.checkpoint import load_generators
    from cyclemask.config import GeneratorConfig
    from cyclemask.models import build_generator

    if random_full:
        gens = {}
        for i, d in enumerate(("mask", "unmask")):
            torch.manual_seed(i)
            g = build_generator(GeneratorConfig()).eval()
            with torch.no_grad():
                g.model[-2].weight.mul_(1.5)  # outputs spread over 0..255, part saturated, as trained ones
            gens[d] = g
        return gens, 256, "the full generator (ngf 64, 9 blocks, 256 px) with seeded random weights"
    from cyclemask.checkpoint import recorded_image_size
    from cyclemask.demo_model import BUNDLE_NAME, assets_dir

    path = Path(checkpoint) if checkpoint else assets_dir() / BUNDLE_NAME
    loaded = load_generators(path)
    size = recorded_image_size(path) or 256
    return {d: g.generator for d, g in loaded.items()}, size, str(path)


def _row(name: str, check, extra: dict | None = None) -> dict:
    s = check.stats
    row = {"row": name, "runtime": check.runtime.split(" (")[0], "psnr_db": round(s.psnr_db, 2),
           "within_1": round(s.frac_within_1, 4), "within_2": round(s.frac_within_2, 4), "max_lsb": s.max_abs,
           "mean_lsb": round(s.mean_abs, 3), "passed": check.passed, "failures": check.failures()}
    if check.task is not None:
        row.update(task_fp32=check.task.fp32, task_lowp=check.task.lowp,
                   task_change_points=round(100 * check.task.change, 2), task_flipped=check.task.flipped)
    row.update(extra or {})
    return row


def run(args) -> dict:
    import torch

    from cyclemask.export.onnx import export_onnx
    from cyclemask.export.verify import eager_outputs

    torch.set_num_threads(args.threads)
    gens, size, source = _generators(args.checkpoint, args.random_full)
    folders = {"mask": (args.faces_a, args.holdout_a), "unmask": (args.faces_b, args.holdout_b)}
    levers = {k: v for k, v in LEVERS.items() if not args.levers or k in args.levers}
    out = {"generators": source, "image_size": size, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "directions": {}}
    with tempfile.TemporaryDirectory(prefix="cyclemask-lowp-") as tmp:
        for d, gen in gens.items():
            calib_dir, hold_dir = folders[d]
            if calib_dir is None:
                print(f"[{d}] skipped: no faces given (--faces-{'a' if d == 'mask' else 'b'})", flush=True)
                continue
            faces = load_face_sets(calib_dir, size, holdout_dir=hold_dir, calib_count=256, holdout_count=args.holdout)
            ref = eager_outputs(gen, faces.holdout, batch_size=4)
            graph = export_onnx(gen, Path(tmp) / f"{d}.onnx", image_size=size, metadata={"direction": d})
            rows = []
            print(f"[{d}] {len(faces.holdout)} held-out faces from {faces.holdout_from}; "
                  f"calibration from {faces.calib_from}", flush=True)

            def show(row):
                rows.append(row)
                task = (f", task {row['task_change_points']:+.1f} pts ({row['task_fp32']:.1%} -> {row['task_lowp']:.1%})"
                        if "task_change_points" in row else "")
                print(f"  {row['row']:28s} {row['runtime']:9s} PSNR {row['psnr_db']:6.2f} dB  within 1 LSB "
                      f"{row['within_1']:7.2%}  within 2 LSB {row['within_2']:7.2%}  max {row['max_lsb']:3d}{task}"
                      f"{'' if row['passed'] else '  OUT OF BOUNDS: ' + '; '.join(row['failures'])}", flush=True)

            if "bf16" in args.only:
                from cyclemask.engine.cpu_features import bf16_support

                ok, why = bf16_support()
                if not ok:
                    print(f"  BF16 skipped: {why}", flush=True)
                else:
                    show(_row("bf16", check_graph(graph, "openvino", "bf16", faces.holdout, ref, direction=d,
                                                  threads=args.threads)))
                    t0 = time.perf_counter()
                    got, desc = _torch_bf16(gen, faces.holdout, args.threads)
                    c = check_outputs(got, ref, artefact=f"{d} checkpoint", precision="bf16", runtime=desc,
                                      direction=d, seconds=time.perf_counter() - t0)
                    show(_row("bf16", c))
            if "int8" in args.only:
                for name, change in levers.items():
                    cfg = Int8Config(**{"calib_count": 64, **change, "target_psnr_db": args.target_psnr})
                    q = Path(tmp) / f"{d}.int8.onnx"
                    validation = None
                    if cfg.accuracy_aware:
                        val = faces.calib[-max(1, min(64, len(faces.calib)) // 4):]
                        validation = (val, run_backend(graph, "ort", val, threads=args.threads)[0])
                    t0 = time.perf_counter()
                    try:
                        quantize_graph(graph, q, faces.calib, cfg, validation=validation)
                    except CycleMaskError as exc:
                        print(f"  {name:28s} failed: {exc}", flush=True)
                        continue
                    secs = round(time.perf_counter() - t0, 1)
                    for rt in args.runtimes:
                        show(_row(name, check_graph(q, rt, "int8", faces.holdout, ref, direction=d,
                                                    threads=args.threads),
                                  {"quantise_s": secs, "config": cfg.describe()}))
            out["directions"][d] = {"holdout_from": faces.holdout_from, "calib_from": faces.calib_from, "rows": rows}
    return out


def _torch_bf16(gen, images: np.ndarray, threads: int) -> tuple[np.ndarray, str]:
    from cyclemask.engine.backends import TorchBackend

    with TorchBackend(generator=gen, precision="bf16", image_size=images.shape[1], threads=threads) as be:
        return np.concatenate([be.infer(images[i:i + 4]) for i in range(0, len(images), 4)]), be.description


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="generator bundle (default: the shipped demo generators)")
    ap.add_argument("--random-full", action="store_true", help="the full-size generator with seeded random weights")
    ap.add_argument("--faces-a", default=None, help="unmasked face crops (the mask generator's input): calibration")
    ap.add_argument("--holdout-a", default=None, help="held-out unmasked faces (default: 20%% of --faces-a)")
    ap.add_argument("--faces-b", default=None, help="masked face crops (the unmask generator's input): calibration")
    ap.add_argument("--holdout-b", default=None, help="held-out masked faces (default: 20%% of --faces-b)")
    ap.add_argument("--holdout", type=int, default=100, help="held-out faces per direction")
    ap.add_argument("--only", default="bf16,int8", help="bf16, int8 or both (comma-separated)")
    ap.add_argument("--levers", default="", help=f"INT8 rows to run (comma-separated; default all: {', '.join(LEVERS)})")
    ap.add_argument("--runtimes", default="openvino,ort", help="runtimes that run the INT8 graph")
    ap.add_argument("--target-psnr", type=float, default=38.0, help="accuracy-aware row: PSNR (dB) to reach against FP32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    a.only = [x for x in a.only.split(",") if x]
    a.levers = [x.strip() for x in a.levers.split(",") if x.strip()]
    a.runtimes = [x for x in a.runtimes.split(",") if x]
    unknown = [x for x in a.levers if x not in LEVERS]
    if unknown:
        ap.error(f"unknown lever {unknown[0]!r}; known: {', '.join(LEVERS)}")
    if a.faces_a is None and a.faces_b is None:
        ap.error("give --faces-a and/or --faces-b (folders of face crops)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(a)
    except CycleMaskError as exc:
        sys.exit(f"error: {exc}")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
