#!/usr/bin/env python3
"""Calibrate the parity bounds on trained generators: by default the embedded demo generators.

    python scripts/calibrate_parity.py [--checkpoint generators.pt] [--faces 64] [--out DIR]

Rerun it whenever the embedded model changes (or to check the bounds against any trained
checkpoint). For each direction the checkpoint holds it

1. takes N real faces of the direction's domain (../shared/data; synthetic textured faces when
   that is absent) at the model's size, plus two uniform-noise images, and the eager outputs
   (`cyclemask.image_tensors.eager_translate`, FP32 on the CPU);
2. runs every CPU backend variant of benchmarks/variants.py (ONNX Runtime FP32 and FP16 graphs,
   OpenVINO, torch) over them and compares with eager: max |diff|, share within 1 LSB, share
   exact, PSNR, and KID between the outputs' Inception features (paired, with its standard
   error, on the faces only);
3. does the same for each deliberately broken graph of benchmarks/faults.py;
4. prints the figures, the bounds they suggest (worst genuine figure with margin: 2x the max
   |diff|, 5x the share off by more than 1 LSB, PSNR 6 dB lower = 4x the mean squared error),
   and which of the CURRENT bounds (cyclemask.export.verify) each broken graph breaks.

Exit status 1 when a genuine variant breaks a current bound or a broken graph that must be
caught passes every bound; 0 otherwise. `--out DIR` writes calibration.json and
calibration.md there. Several minutes on 2 CPU cores (Inception features cost ~0.3-0.8 s per
face image).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.faults import FAULTS, make_fault  # noqa: E402
from benchmarks.inputs import direction_faces, face_inputs, source_description  # noqa: E402
from benchmarks.variants import Artefacts, ArtefactUnavailable, select  # noqa: E402

#: Broken graphs that any bound set worth having must catch; the others are reported only
#: (on a small trained model FP16 InstanceNorm, for one, is harmless).
MUST_CATCH = ("truncate", "norm-128", "zero-pad", "bgr")
#: The bounds a fault is judged by: the precision of the graph it is made from.
FAULT_PRECISION = {f: ("fp16" if f.startswith("fp16") else "fp32") for f in FAULTS}
#: KID bound: the paired KID of eager outputs with +-k LSB uniform noise (per precision).
KID_NOISE_LSB = {"fp32": 1, "fp16": 2, "fp16-trt": 2}


def shipped_checkpoint() -> tuple[Path, int | None]:
    import importlib.resources

    root = Path(str(importlib.resources.files("cyclemask"))) / "assets" / "demo"
    info = json.loads((root / "demo.json").read_text()) if (root / "demo.json").is_file() else {}
    return root / "generators.pt", info.get("image_size")


def bounds_for(precision: str):
    from cyclemask.export.verify import ENGINE_BOUNDS, FP16_BOUNDS, FP32_BOUNDS

    return {"fp32": FP32_BOUNDS, "fp16": FP16_BOUNDS, "fp16-trt": ENGINE_BOUNDS}[precision]


class Features:
    """Inception features of face outputs, reusing eager's for images that are bit-identical."""

    def __init__(self, eager: np.ndarray, faces: np.ndarray) -> None:
        from cyclemask.metrics.fid import extract_features, load_inception

        self._extract = extract_features
        self.net = load_inception()
        self.faces = faces
        self.eager_out = eager
        self.eager = extract_features([eager[i] for i in faces], self.net, batch_size=16)

    def of(self, outputs: np.ndarray) -> np.ndarray:
        feats = self.eager.copy()
        changed = [k for k, i in enumerate(self.faces) if not np.array_equal(outputs[i], self.eager_out[i])]
        if changed:
            feats[changed] = self._extract([outputs[self.faces[k]] for k in changed], self.net, batch_size=16)
        return feats


def kid_row(feats: Features | None, outputs: np.ndarray) -> dict:
    if feats is None:
        return {}
    from cyclemask.metrics.fid import paired_kid

    kid, se = paired_kid(feats.of(outputs), feats.eager)
    return {"kid": kid, "kid_se": se}


def kid_bounds(feats: Features | None, eager: np.ndarray) -> dict[str, float]:
    if feats is None:
        return {}
    from cyclemask.metrics.fid import paired_kid

    out = {}
    for k in sorted(set(KID_NOISE_LSB.values())):
        rng = np.random.default_rng(k)
        noisy = np.clip(eager.astype(np.int16) + rng.integers(-k, k + 1, eager.shape), 0, 255).astype(np.uint8)
        out[str(k)] = paired_kid(feats.of(noisy), feats.eager)[0]
    return out


def run_batches(backend, images: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([backend.infer(images[i:i + batch]) for i in range(0, len(images), batch)])


def figures(got: np.ndarray, want: np.ndarray) -> dict:
    from cyclemask.export.verify import compare_uint8

    s = compare_uint8(got, want)
    return {"max_abs": s.max_abs, "within_1": s.frac_within_1, "exact": s.frac_exact,
            "psnr_db": None if math.isinf(s.psnr_db) else s.psnr_db, "_stats": s}


def judge(row: dict, kid_bound: float | None) -> list[str]:
    """The names of the bounds the row breaks (pixel bounds of its precision, then KID)."""
    names = []
    for b in row["_stats"].failures(bounds_for(row["precision"])):
        names.append("max_abs" if b.startswith("max") else "within_1" if "within" in b else "psnr")
    if kid_bound is not None and "kid" in row and row["kid"] - 2 * row["kid_se"] > kid_bound:
        names.append("kid")
    return names


def run_direction(direction: str, generator, size: int, n_faces: int, kid: bool, workdir: Path,
                  threads: int | None) -> dict:
    from cyclemask.engine.backends import OrtBackend
    from cyclemask.export.verify import eager_outputs

    faces_dir = direction_faces(direction)
    images, labels, is_face = face_inputs(size, n_faces, 2, faces_dir=faces_dir)
    t0 = time.perf_counter()
    eager = eager_outputs(generator, images, batch_size=8)
    feats = Features(eager, np.flatnonzero(is_face)) if kid else None
    kb = kid_bounds(feats, eager)
    arts = Artefacts(generator, size, workdir / direction, direction=direction, engine_max_batch=8)
    rows = []
    for v in select(device="cpu"):
        # BF16 and INT8 have bounds of their own, measured by `python -m cyclemask.export.calibrate_lowp`.
        if v.slow or v.trained_only or v.unavailable():
            continue
        try:
            backend, _ = v.build(arts, batch=8, threads=threads)
        except ArtefactUnavailable as exc:
            print(f"  {v.name}: skipped ({exc})", flush=True)
            continue
        with backend:
            out = run_batches(backend, images, 8)
        row = {"kind": "variant", "name": v.name, "precision": v.precision, **figures(out, eager), **kid_row(feats, out)}
        row["fails"] = judge(row, kb.get(str(KID_NOISE_LSB[v.precision])))
        rows.append(row)
        print(f"  {_line(row)}", flush=True)
    for f in FAULTS:
        path = make_fault(f, arts.path("graph-fp32"), workdir / direction / f"{direction}.{f}.onnx")
        with OrtBackend(path, direction, provider="cpu", threads=threads) as be:
            out = run_batches(be, images, 8)
        prec = FAULT_PRECISION[f]
        row = {"kind": "fault", "name": f, "precision": prec, **figures(out, eager), **kid_row(feats, out)}
        row["fails"] = judge(row, kb.get(str(KID_NOISE_LSB[prec])))
        rows.append(row)
        print(f"  {_line(row)}", flush=True)
    return {"direction": direction, "size": size, "inputs": source_description(faces_dir), "n_faces": int(is_face.sum()),
            "n_noise": int((~is_face).sum()), "kid_bounds": kb, "rows": rows, "seconds": time.perf_counter() - t0}


def _line(r: dict) -> str:
    psnr = "inf" if r["psnr_db"] is None else f"{r['psnr_db']:.1f}"
    kid = f", KID {r['kid']:.2e} +- {r['kid_se']:.1e}" if "kid" in r else ""
    fails = ", ".join(r["fails"]) or "none"
    return (f"{r['kind']:7s} {r['name']:26s} {r['precision']:5s} max {r['max_abs']:3d} LSB, within 1 {r['within_1']:.4%}, "
            f"exact {r['exact']:.2%}, PSNR {psnr} dB{kid}; breaks: {fails}")


def suggest(results: list[dict]) -> dict:
    """Bounds that follow from the genuine variants' worst figures, with margin."""
    out = {}
    for prec in ("fp32", "fp16"):
        rows = [r for d in results for r in d["rows"] if r["kind"] == "variant" and r["precision"] == prec]
        if not rows:
            continue
        worst_max = max(r["max_abs"] for r in rows)
        worst_off = max(1.0 - r["within_1"] for r in rows)
        worst_psnr = min((r["psnr_db"] for r in rows if r["psnr_db"] is not None), default=None)
        out[prec] = {
            "max_abs": 1 if prec == "fp32" else max(2, 2 * worst_max),
            "min_within_1": None if prec == "fp32" else round(1.0 - max(5 * worst_off, 1e-4), 4),
            "min_psnr_db": None if worst_psnr is None else math.floor(worst_psnr - 6.0),
            "worst": {"max_abs": worst_max, "off_gt1": worst_off, "psnr_db": worst_psnr},
        }
    return out


def markdown(results: list[dict], suggested: dict, problems: list[str]) -> str:
    from cyclemask.export.verify import FP16_BOUNDS, FP32_BOUNDS

    lines = ["# Parity bound calibration", "",
             f"Current bounds: FP32 {FP32_BOUNDS.describe()}; FP16 {FP16_BOUNDS.describe()}; KID + 2 SE <= paired KID "
             f"of eager with +-k LSB noise (k = {KID_NOISE_LSB['fp32']} for FP32, {KID_NOISE_LSB['fp16']} for FP16).", ""]
    for d in results:
        lines += [f"## {d['direction']} ({d['size']} px; {d['n_faces']} faces, {d['inputs']}, + {d['n_noise']} noise)", "",
                  "KID bounds: " + ", ".join(f"+-{k} LSB {v:.2e}" for k, v in d["kid_bounds"].items()), "",
                  "| kind | name | precision | max LSB | within 1 LSB | exact | PSNR dB | KID (SE) | breaks |",
                  "|---|---|---|---:|---:|---:|---:|---|---|"]
        for r in d["rows"]:
            psnr = "inf" if r["psnr_db"] is None else f"{r['psnr_db']:.1f}"
            kid = f"{r['kid']:.2e} ({r['kid_se']:.1e})" if "kid" in r else "-"
            lines.append(f"| {r['kind']} | {r['name']} | {r['precision']} | {r['max_abs']} | {r['within_1']:.4%} | "
                         f"{r['exact']:.2%} | {psnr} | {kid} | {', '.join(r['fails']) or '-'} |")
        lines.append("")
    lines += ["## Suggested bounds (worst genuine figure with margin)", "",
              "The bounds in export/verify.py gate every export, so they must also hold for other trained "
              "models and for the parity suite's seeded generators (random weights: FP16 measured down to "
              "57.5 dB at 256 px): keep them at or below these suggestions, and above every must-catch fault.",
              "", "```", json.dumps(suggested, indent=1), "```", ""]
    lines += ["## Problems", ""] + ([f"- {p}" for p in problems] or ["none: every genuine variant passes and every "
                                                                       "must-catch fault is caught"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--checkpoint", type=Path, default=None, help="generator bundle (default: the embedded demo one)")
    ap.add_argument("--size", type=int, default=None, help="model input size (default: what the checkpoint records)")
    ap.add_argument("--faces", type=int, default=64, help="face images per direction (default 64)")
    ap.add_argument("--no-kid", action="store_true", help="skip the Inception features (pixel figures only)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write calibration.json and calibration.md here")
    a = ap.parse_args(argv)

    import torch

    from cyclemask.checkpoint import load_generators

    if a.threads:
        torch.set_num_threads(a.threads)
    ckpt, shipped_size = shipped_checkpoint() if a.checkpoint is None else (a.checkpoint, None)
    from cyclemask.checkpoint import recorded_image_size

    size = a.size or recorded_image_size(ckpt) or shipped_size
    if not size:
        ap.error(f"{ckpt} records no image size: pass --size")
    gens = load_generators(ckpt)
    print(f"calibrating on {ckpt} ({size} px): {', '.join(gens)}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for d, g in gens.items():
            print(f"[{d}]", flush=True)
            results.append(run_direction(d, g.generator.eval(), size, a.faces, not a.no_kid, Path(tmp), a.threads))
    problems = []
    for d in results:
        for r in d["rows"]:
            if r["kind"] == "variant" and r["fails"]:
                problems.append(f"{d['direction']}: genuine variant {r['name']} breaks {', '.join(r['fails'])}")
            if r["kind"] == "fault" and r["name"] in MUST_CATCH and not r["fails"]:
                problems.append(f"{d['direction']}: broken graph {r['name']} passes every bound")
    suggested = suggest(results)
    text = markdown(results, suggested, problems)
    print(text)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        clean = [{**d, "rows": [{k: v for k, v in r.items() if k != "_stats"} for r in d["rows"]]} for d in results]
        (a.out / "calibration.json").write_text(json.dumps({"checkpoint": str(ckpt), "size": size, "results": clean,
                                                            "suggested": suggested, "problems": problems}, indent=1))
        (a.out / "calibration.md").write_text(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
