"""Compositing quality: whole-crop paste against mask-zone paste, on pairs with a known answer.

The observations pairs hold the same photo with and without a (pasted) mask, so unmasking the
masked twin has a right answer: the unmasked twin. For each pair this detects the face on the
masked twin (as a real run would), unmasks it with the model through the face-aware processor
under each paste setting, and compares the result with the unmasked twin inside the face's
crop box:

- psnr_crop: PSNR over the whole crop box (eyes, hair and background count too: a whole-crop
  paste loses them to the model's resolution; a zone paste keeps them);
- psnr_zone: PSNR inside the mask zone (matte > 0.5): the model's own work;
- seam: mean absolute error of the low-pass (Gaussian, sigma 0.1 x eye-to-mouth distance)
  result against the answer where the matte is strictly between 0 and 1: a halo or colour
  step at the zone's edge shows here;
- kept: the share of crop-box pixels left exactly as they were.

    python benchmarks/zone_paste.py                       # the embedded unmask model, 120 pairs
    python benchmarks/zone_paste.py --model unmask.onnx --pairs 339 --json zone.json

Without a right answer for masking, look at the mask direction (`cyclemask-run --demo --mask-method gan`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CYCLEMASK_SHARED", REPO.parent / "shared"))
PAIRS = SHARED / "data" / "faces" / "observations_pairs"

SETTINGS = {
    "crop": dict(paste="crop"),
    "zone, no colour": dict(paste="zone", zone_colour="none"),
    "zone, mean colour": dict(paste="zone", zone_colour="mean"),
    "zone, field colour": dict(paste="zone", zone_colour="field"),
}


class _Given:
    def __init__(self, faces) -> None:
        self.faces = faces

    def detect(self, image):
        return list(self.faces)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def run(model: Path, pairs: int = 120, settings: dict | None = None, threads: int = 1) -> dict:
    """{setting: {metric: mean over pairs}} plus 'pairs' (how many were measured)."""
    import cv2

    from cyclemask.engine.backends import OrtBackend
    from cyclemask.engine.faces import FaceConfig, FaceProcessor
    from cyclemask.face_detect import FaceDetector, crop_square, eye_mouth_distance, mask_zone_matte, square_crop_box
    from cyclemask.image_files import read_image

    settings = settings or SETTINGS
    names = sorted(p.name for p in (PAIRS / "with_mask").glob("*.jpg"))[:pairs]
    det = FaceDetector(score_threshold=0.6, retry_pad=0.5)
    rows: dict[str, list[dict]] = {k: [] for k in settings}
    with OrtBackend(model, "unmask", provider="cpu", threads=threads) as be:
        for name in names:
            masked = read_image(PAIRS / "with_mask" / name)
            truth = read_image(PAIRS / "without_mask" / name)
            if masked.shape != truth.shape:
                continue
            faces = [f for f in det.detect(masked) if f.size >= 32][:1]
            if not faces:
                continue
            f = faces[0]
            box = square_crop_box(f.box, masked.shape, 0.3, "pad")
            matte = mask_zone_matte(f.landmarks, box)
            h = eye_mouth_distance(f.landmarks)
            band = (matte > 0) & (matte < 1)
            zone = matte > 0.5
            truth_crop = crop_square(truth, box)
            masked_crop = crop_square(masked, box)
            sig = max(1.0, 0.1 * h)
            truth_low = cv2.GaussianBlur(truth_crop.astype(np.float32), (0, 0), sig)
            outputs = None
            for key, kw in settings.items():
                proc = FaceProcessor(be.image_size, FaceConfig(track=False, **kw),
                                     detector_factory=lambda: _Given(faces))
                crops, state = proc.prepare(masked)
                if outputs is None:
                    outputs = list(be.infer(np.stack(crops)))
                res = crop_square(proc.finish(masked, state, outputs), box)
                low = cv2.GaussianBlur(res.astype(np.float32), (0, 0), sig)
                rows[key].append({
                    "psnr_crop": _psnr(res, truth_crop),
                    "psnr_zone": _psnr(res[zone], truth_crop[zone]),
                    "seam": float(np.abs(low - truth_low)[band].mean()) if band.any() else 0.0,
                    "kept": float(np.all(res == masked_crop, axis=2).mean()),
                })
    out = {"pairs": len(next(iter(rows.values())))}
    for key, rs in rows.items():
        out[key] = {m: round(float(np.mean([r[m] for r in rs])), 3) for m in rs[0]} if rs else {}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="An unmask ONNX graph (default: the embedded demo model's unmask.onnx).")
    ap.add_argument("--pairs", type=int, default=120, help="How many pairs (sorted by name) to measure.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="Also write the table as JSON here.")
    args = ap.parse_args(argv)
    if not PAIRS.is_dir():
        print(f"needs the observations pairs at {PAIRS} (set CYCLEMASK_SHARED)", file=sys.stderr)
        return 1
    if args.model is None:
        from cyclemask.demo_model import default_model

        args.model = default_model("unmask", "ort")
    res = run(args.model, args.pairs, threads=args.threads)
    print(f"unmask {res['pairs']} masked twins with {args.model}; compared with their unmasked twins")
    print(f"{'setting':22s} {'PSNR crop':>10s} {'PSNR zone':>10s} {'seam':>7s} {'kept':>6s}")
    for key in SETTINGS:
        r = res[key]
        print(f"{key:22s} {r['psnr_crop']:10.2f} {r['psnr_zone']:10.2f} {r['seam']:7.2f} {r['kept']:6.1%}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
