"""Does the mask hold still? The mask zone's jitter on still heads, raw landmarks against the
runtime's smoothed ones, and the flicker the model's output adds inside the zone.

Clips: every shared head-pose clip (../shared/data/video, $CYCLEMASK_SHARED) and a synthetic
still clip (a shared photo on a 640 x 480 canvas, repeated with pixel noise and sub-pixel
shifts, so only the detector's own jitter moves the zone). Each clip runs through the runtime's
face stage twice: "raw" (smoothing 0: every frame's own landmarks) and "smoothed" (the
defaults: One-Euro filter, engine/tracking.py), with the mask model (the embedded demo model
by default) on ONNX Runtime.

Still segments: runs of at least --window frames over which the raw zone centre, after a
5-frame running median, stays within 5 % of the eye-to-mouth distance of its mean and the eye
line within 2 degrees (the synthetic clip is still throughout). On them:

- centre: std of the zone's centre (the mean of its six anchors), px, scaled to a 640 px wide
  frame (the clips are 480 x 270);
- scale: std of the eye-to-mouth distance (the zone's unit), % of its mean;
- angle: std of the eye line's angle, degrees;
- flicker: mean |output(t) - output(t-1)| inside the zone (matte > 0.5) over the same for the
  input: 1 means the output changes no more than the input does.

    python benchmarks/zone_jitter.py                      # a minute or two on 2 cores
    python benchmarks/zone_jitter.py --model mask.onnx --json jitter.json
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
VIDEOS = SHARED / "data" / "video"
PHOTOS = SHARED / "data" / "faces" / "observations_pairs" / "without_mask"
REFERENCE_WIDTH = 640
RUNS = {"raw": dict(smoothing=0.0), "smoothed": {}}


def read_clip(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def synthetic_clip(frames: int = 60, seed: int = 0) -> list[np.ndarray]:
    """A still face: one shared photo on a 640 x 480 canvas, each frame with noise (std 2 levels)
    and a random shift of at most 0.3 px (what a camera on a tripod sees)."""
    import cv2

    from cyclemask.image_files import read_image

    photo = read_image(sorted(PHOTOS.glob("*.jpg"))[0])
    s = 300 / max(photo.shape[:2])
    photo = cv2.resize(photo, (round(photo.shape[1] * s), round(photo.shape[0] * s)), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 128, np.uint8)
    y0, x0 = (480 - photo.shape[0]) // 2, (640 - photo.shape[1]) // 2
    canvas[y0:y0 + photo.shape[0], x0:x0 + photo.shape[1]] = photo
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        m = np.float32([[1, 0, rng.uniform(-0.3, 0.3)], [0, 1, rng.uniform(-0.3, 0.3)]])
        moved = cv2.warpAffine(canvas, m, (640, 480), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out.append(np.clip(moved + rng.normal(0, 2, moved.shape), 0, 255).astype(np.uint8))
    return out


def zone_geometry(landmarks) -> tuple[np.ndarray, float, float]:
    """(centre [2], eye-to-mouth distance, eye-line angle in degrees) of one face's zone."""
    from cyclemask.face_detect import _face_frame, mask_anchors

    _, ux, _, h, _ = _face_frame(landmarks)
    return mask_anchors(landmarks).mean(axis=0).astype(np.float64), h, float(np.degrees(np.arctan2(ux[1], ux[0])))


def run_clip(frames, backend, config) -> list[dict]:
    """Per frame: the first face's zone (centre, h, angle), its zone mask in frame pixels, and
    the output frame."""
    from cyclemask.engine.faces import FaceProcessor

    proc = FaceProcessor(backend.image_size, config)
    rows = []
    for img in frames:
        crops, state = proc.prepare(img)
        outputs = list(backend.infer(np.stack(crops))) if crops else []
        out = proc.finish(img, state, outputs)
        row = {"out": out, "zone": None}
        faces = [p for p in state if p.landmarks is not None]
        if faces:
            p = faces[0]
            centre, h, angle = zone_geometry(p.landmarks)
            weight = proc.paste_weight(p)
            x0, y0, x1, y1 = p.box
            mask = np.zeros(img.shape[:2], bool)
            ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x1, img.shape[1]), min(y1, img.shape[0])
            mask[ay0:ay1, ax0:ax1] = weight[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] > 0.5
            row.update(centre=centre, h=h, angle=angle, zone=mask)
        rows.append(row)
    return rows


def still_segments(rows, window: int) -> list[range]:
    """Runs of >= window frames where the raw zone holds still (see the module docstring)."""
    ok = [r["zone"] is not None for r in rows]
    n = len(rows)
    centres = np.array([r["centre"] if k else (np.nan, np.nan) for r, k in zip(rows, ok)])
    angles = np.array([r["angle"] if k else np.nan for r, k in zip(rows, ok)])
    hs = np.array([r["h"] if k else np.nan for r, k in zip(rows, ok)])
    med = np.array([np.median(centres[max(0, i - 2):i + 3], axis=0) for i in range(n)])
    segs, i = [], 0
    while i + window <= n:
        j = i + window
        if all(ok[i:j]):
            dev = np.abs(med[i:j] - med[i:j].mean(axis=0)).max()
            turn = np.abs(angles[i:j] - np.median(angles[i:j])).max()
            if dev <= 0.05 * np.nanmean(hs[i:j]) and turn <= 2.0:
                while j < n and ok[j]:  # grow it while it stays still
                    dev = np.abs(med[i:j + 1] - med[i:j + 1].mean(axis=0)).max()
                    if dev > 0.05 * np.nanmean(hs[i:j + 1]) or abs(angles[j] - np.median(angles[i:j])) > 2.0:
                        break
                    j += 1
                segs.append(range(i, j))
                i = j
                continue
        i += 1
    return segs


def measure(rows, frames, segs, scale: float, zones_from) -> dict:
    """Jitter and flicker of one run over the still segments (zones_from: the run whose zone
    masks define where flicker is measured, so both runs compare the same pixels)."""
    cs, ss, angs, weights = [], [], [], []
    out_change, in_change = 0.0, 0.0
    for seg in segs:
        if any(rows[i]["zone"] is None for i in seg):
            continue
        c = np.array([rows[i]["centre"] for i in seg]) * scale
        h = np.array([rows[i]["h"] for i in seg])
        a = np.array([rows[i]["angle"] for i in seg])
        cs.append(float(np.sqrt(c.var(axis=0).sum())))
        ss.append(float(h.std() / h.mean() * 100))
        angs.append(float(a.std()))
        weights.append(len(seg))
        for i in list(seg)[1:]:
            zone = zones_from[i]["zone"]
            if zone is None or not zone.any():
                continue
            o = np.abs(rows[i]["out"].astype(np.int16) - rows[i - 1]["out"].astype(np.int16))[zone]
            d = np.abs(frames[i].astype(np.int16) - frames[i - 1].astype(np.int16))[zone]
            out_change += float(o.mean())
            in_change += float(d.mean())
    if not weights:
        return {}
    w = np.asarray(weights, np.float64) / sum(weights)
    return {"centre_px": float(np.dot(w, cs)), "scale_pct": float(np.dot(w, ss)), "angle_deg": float(np.dot(w, angs)),
            "flicker": out_change / in_change if in_change else float("nan"), "frames": int(sum(weights))}


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO))
    from cyclemask.engine.backends import OrtBackend
    from cyclemask.engine.faces import FaceConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="a mask ONNX graph (default: the embedded demo model)")
    ap.add_argument("--window", type=int, default=8, help="the shortest still segment, in frames")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.model is None:
        from cyclemask.demo_model import default_model

        args.model = default_model("mask", "ort")
    clips = {p.name: read_clip(p) for p in sorted(VIDEOS.glob("*.mp4"))}
    clips["synthetic still (640x480)"] = synthetic_clip()
    results = {}
    print(f"{'clip':46s} {'run':9s} {'frames':>6s} {'centre px':>9s} {'scale %':>8s} {'angle deg':>9s} {'flicker':>8s}")
    with OrtBackend(args.model, "mask", provider="cpu", threads=args.threads) as be:
        for name, frames in clips.items():
            runs = {k: run_clip(frames, be, FaceConfig(**kw)) for k, kw in RUNS.items()}
            synthetic = name.startswith("synthetic")
            # The synthetic clip is still by construction; skip the frames before smoothing settles.
            segs = [range(3, len(frames))] if synthetic else still_segments(runs["raw"], args.window)
            scale = REFERENCE_WIDTH / frames[0].shape[1]
            results[name] = {}
            for k, rows in runs.items():
                r = measure(rows, frames, segs, scale, runs["smoothed"])
                results[name][k] = r
                if r:
                    print(f"{name:46s} {k:9s} {r['frames']:6d} {r['centre_px']:9.2f} {r['scale_pct']:8.2f} "
                          f"{r['angle_deg']:9.2f} {r['flicker']:8.2f}")
                else:
                    print(f"{name:46s} {k:9s} no still segment of {args.window} frames")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
