"""Face detection on masked faces: YuNet's recall (and its false detections) under each setting.

Three sets from ../shared/data, each with a truth to measure against:

- cfmd: cfmd/with_mask, photos of real masked faces; each holds at least one face, so the
  recall is the share of photos where anything is found. The same setting on
  cfmd/without_mask shows how many detections it adds per bare photo (a false-detection view).
- pairs: observations_pairs, the same photo without and with a pasted mask. The truth is what
  today's setting finds on the bare twin; recall is the share of those faces found again (IoU
  >= --iou) on the masked twin. "extra" counts detections that match no true face, on the masked
  twins and on the bare twins.
- clips: the head-pose clips, masked by `cyclemask-run --mask` with the model under test (the
  embedded demo model by default; --model for another, --paste for the compositing). The truth
  is what today's setting finds on the original frames; recall is the share found on the
  masked frames, by the detector alone and by the runtime's face stage (`RUNTIME`: detection,
  rotated passes around lost tracks or over whole frames, tracking with held frames): the faces
  a video run would unmask.

Settings (`SETTINGS`): today's (score >= 0.6, upright only; photo folders retry on a padded copy
when nothing is found, video frames do not), lower score thresholds, and passes on copies
rotated by +-25 degrees (`FaceDetector(rotations=...)`). Each image is detected once per pass at
the lowest threshold and the settings are derived from those detections exactly as
`FaceDetector.detect` would (a greedy NMS keeps the same boxes when its candidates are cut at a
higher score; tests/benchmarks/test_detect_recall.py checks it against the detector).

    python benchmarks/detect_recall.py                        # everything (minutes on 2 cores)
    python benchmarks/detect_recall.py --sets pairs clips --limit 100
    python benchmarks/detect_recall.py --model new_mask.onnx --json recall.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CYCLEMASK_SHARED", REPO.parent / "shared"))
FACES = SHARED / "data" / "faces"
VIDEOS = SHARED / "data" / "video"
SETS = ("cfmd", "pairs", "clips")
LOWEST = 0.3  # every pass is run once at this score threshold; settings cut higher


@dataclass(frozen=True)
class Setting:
    name: str
    score: float = 0.6
    rotations: tuple[float, ...] = ()


SETTINGS = (
    Setting("today: score 0.6"),
    Setting("score 0.5", 0.5),
    Setting("score 0.4", 0.4),
    Setting("score 0.3", 0.3),
    Setting("rotated +-25, score 0.6", 0.6, (25.0, -25.0)),
    Setting("rotated +-25, score 0.5", 0.5, (25.0, -25.0)),
    Setting("rotated +-25, score 0.4", 0.4, (25.0, -25.0)),
)
ANGLES = sorted({a for s in SETTINGS for a in s.rotations})


@dataclass
class Passes:
    """One image's raw detections per pass, at the LOWEST threshold; the padded retry on demand."""

    upright: list
    rotated: dict
    bgr: np.ndarray
    _padded: list | None = field(default=None, repr=False)

    def padded(self, detector) -> list:
        import cv2

        if self._padded is None:
            pad = max(1, round(detector.retry_pad * max(self.bgr.shape[:2])))
            big = cv2.copyMakeBorder(self.bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            self._padded = [f.scaled(1.0, -pad, -pad) for f in detector._detect_bgr(big)]
        return self._padded


def raw_passes(detector, image_rgb: np.ndarray, angles=ANGLES) -> Passes:
    import cv2

    if max(image_rgb.shape[:2]) > detector.max_side:
        raise ValueError("raw_passes expects images within the detector's max_side (no downscaling)")
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    return Passes(detector._detect_bgr(bgr), {a: detector._detect_rotated(bgr, a) for a in angles}, bgr)


def faces_for(passes: Passes, setting: Setting, detector, retry: bool) -> list:
    """What FaceDetector(score_threshold=setting.score, rotations=setting.rotations,
    retry_pad=detector.retry_pad if retry else 0).detect(image) returns, from the raw passes."""
    from cyclemask.face_detect import merge_faces

    def cut(faces):
        return [f for f in faces if f.score >= setting.score]

    passes_used = [cut(passes.upright)] + [cut(passes.rotated[a]) for a in setting.rotations]
    faces = merge_faces(passes_used, detector.nms_threshold)
    if not faces and retry:
        faces = merge_faces([cut(passes.padded(detector))], detector.nms_threshold)
    return sorted(faces, key=lambda f: -f.score)


def match(truth: list, found: list, iou_min: float) -> tuple[int, int]:
    """(true faces found, detections matching no true face), one-to-one, greedy by IoU."""
    from cyclemask.engine.faces import iou

    pairs = sorted(((iou(t.box, f.box), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f = set(), set()
    for v, i, j in pairs:
        if v < iou_min:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
    return len(used_t), len(found) - len(used_f)


def _images(folder: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files[:limit] if limit else files


def _detector():
    from cyclemask.face_detect import FaceDetector

    return FaceDetector(score_threshold=LOWEST, retry_pad=0.5, max_side=1024)


def measure_cfmd(limit: int | None = None, progress=None) -> dict:
    from cyclemask.image_files import read_image

    det = _detector()
    out = {}
    for label, folder in (("masked", FACES / "cfmd" / "with_mask"), ("bare", FACES / "cfmd" / "without_mask")):
        files = _images(folder, limit)
        hit = {s.name: 0 for s in SETTINGS}
        count = {s.name: 0 for s in SETTINGS}
        for p in files:
            passes = raw_passes(det, read_image(p))
            for s in SETTINGS:
                faces = faces_for(passes, s, det, retry=True)
                hit[s.name] += bool(faces)
                count[s.name] += len(faces)
            if progress:
                progress()
        out[label] = {s.name: {"images": len(files), "with_face": hit[s.name], "detections": count[s.name]}
                      for s in SETTINGS}
    return out


def measure_pairs(limit: int | None = None, iou_min: float = 0.4, progress=None) -> dict:
    from cyclemask.image_files import read_image

    det = _detector()
    today = SETTINGS[0]
    rows = {s.name: {"truth": 0, "found": 0, "extra_masked": 0, "extra_bare": 0} for s in SETTINGS}
    pairs = 0
    for p in _images(FACES / "observations_pairs" / "with_mask", limit):
        bare_p = FACES / "observations_pairs" / "without_mask" / p.name
        if not bare_p.is_file():
            continue
        bare, masked = read_image(bare_p), read_image(p)
        if bare.shape != masked.shape:  # 17 of the 339 "pairs" are two different photos
            continue
        bare_passes, masked_passes = raw_passes(det, bare), raw_passes(det, masked)
        truth = faces_for(bare_passes, today, det, retry=True)
        pairs += 1
        for s in SETTINGS:
            found, extra = match(truth, faces_for(masked_passes, s, det, retry=True), iou_min)
            _, extra_bare = match(truth, faces_for(bare_passes, s, det, retry=True), iou_min)
            r = rows[s.name]
            r["truth"] += len(truth)
            r["found"] += found
            r["extra_masked"] += extra
            r["extra_bare"] += extra_bare
        if progress:
            progress()
    return {"pairs": pairs, "rows": rows}


def mask_clip(clip: Path, out: Path, model: Path | None, paste: str) -> Path:
    """The clip masked by `cyclemask-run` (a subprocess, as a user runs it)."""
    cmd = [sys.executable, "-m", "cyclemask.engine.cli", "--video", str(clip), "--out", str(out), "--mask",
           "--paste", paste, "--no-progress", "--overwrite"]
    if model is not None:
        cmd += ["--model", str(model)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"cyclemask-run failed on {clip}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return out


def _frames(path: Path) -> list[np.ndarray]:
    from cyclemask.engine.video import VideoSource

    src = VideoSource(path)
    try:
        return [f.image for f in src if f.image is not None]
    finally:
        src.close()


RUNTIME = (
    ("today: score 0.6, hold 2", dict(score_threshold=0.6, hold_frames=2, rotated="off")),
    ("score 0.5, hold 2", dict(score_threshold=0.5, hold_frames=2, rotated="off")),
    ("score 0.6, hold 6", dict(score_threshold=0.6, hold_frames=6, rotated="off")),
    ("rotated on lost tracks", dict(score_threshold=0.6, hold_frames=2, rotated="lost")),
    ("rotated full frame", dict(score_threshold=0.6, hold_frames=2, rotated="full")),
    ("rotated lost, score 0.5", dict(score_threshold=0.5, hold_frames=2, rotated="lost")),
    ("rotated lost, score 0.5, hold 4", dict(score_threshold=0.5, hold_frames=4, rotated="lost")),
)


def _runtime_faces(frames: list[np.ndarray], **config) -> tuple[list[list], float]:
    """The face boxes a video run would translate in each frame (the runtime's FaceProcessor:
    detection, rotated passes, tracking), and the detection time per frame (s)."""
    from cyclemask.engine.faces import FaceConfig, FaceProcessor
    from cyclemask.face_detect import Face

    proc = FaceProcessor(64, FaceConfig(**config))
    out = []
    for f in frames:
        _, state = proc.prepare(f)
        out.append([Face(p.face, 1.0, ()) for p in state])
    return out, proc.stats.detect_s / max(1, len(frames))


def measure_clips(model: Path | None = None, paste: str = "zone", iou_min: float = 0.4,
                  clips: list[Path] | None = None, workdir: Path | None = None, runtime=RUNTIME,
                  progress=None) -> dict:
    det = _detector()
    today = SETTINGS[0]
    clips = clips if clips is not None else sorted(VIDEOS.glob("*.mp4"))
    zero = {"truth": 0, "found": 0, "extra_masked": 0, "extra_bare": 0}
    rows = {s.name: dict(zero) for s in SETTINGS}
    run_rows = {name: dict(zero, detect_ms=0.0) for name, _ in runtime}
    frames_total = 0
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for clip in clips:
            masked_path = mask_clip(clip, Path(tmp) / f"{clip.stem}_mask.mp4", model, paste)
            bare, masked = _frames(clip), _frames(masked_path)
            if len(bare) != len(masked):
                raise RuntimeError(f"{clip.name}: {len(bare)} frames, but {len(masked)} after masking")
            frames_total += len(bare)
            bare_passes = [raw_passes(det, f) for f in bare]
            masked_passes = [raw_passes(det, f) for f in masked]
            truths = [faces_for(p, today, det, retry=False) for p in bare_passes]
            for s in SETTINGS:
                r = rows[s.name]
                for truth, bp, mp in zip(truths, bare_passes, masked_passes):
                    found, extra = match(truth, faces_for(mp, s, det, retry=False), iou_min)
                    _, extra_bare = match(truth, faces_for(bp, s, det, retry=False), iou_min)
                    r["truth"] += len(truth)
                    r["found"] += found
                    r["extra_masked"] += extra
                    r["extra_bare"] += extra_bare
            for name, config in runtime:
                r = run_rows[name]
                on_masked, ms = _runtime_faces(masked, **config)
                on_bare, _ = _runtime_faces(bare, **config)
                r["detect_ms"] += 1000.0 * ms * len(bare)
                for truth, fm, fb in zip(truths, on_masked, on_bare):
                    found, extra = match(truth, fm, iou_min)
                    r["truth"] += len(truth)
                    r["found"] += found
                    r["extra_masked"] += extra
                    r["extra_bare"] += match(truth, fb, iou_min)[1]
            if progress:
                progress()
    for r in run_rows.values():
        r["detect_ms"] = round(r["detect_ms"] / max(1, frames_total), 2)
    return {"clips": len(clips), "frames": frames_total, "paste": paste,
            "model": str(model) if model else "embedded demo model", "rows": rows, "runtime": run_rows}


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:5.1f} %" if b else "   n/a"


def print_tables(res: dict, iou_min: float) -> None:
    if "cfmd" in res:
        m, b = res["cfmd"]["masked"], res["cfmd"]["bare"]
        n_m, n_b = next(iter(m.values()))["images"], next(iter(b.values()))["images"]
        print(f"\ncfmd: {n_m} photos with real masks (each holds a face), {n_b} bare photos")
        print(f"{'setting':28s} {'masked: found':>14s} {'dets/photo':>11s} {'bare: found':>12s} {'dets/photo':>11s}")
        for s in SETTINGS:
            rm, rb = m[s.name], b[s.name]
            print(f"{s.name:28s} {_pct(rm['with_face'], n_m):>14s} {rm['detections'] / max(n_m, 1):11.2f} "
                  f"{_pct(rb['with_face'], n_b):>12s} {rb['detections'] / max(n_b, 1):11.2f}")
    if "pairs" in res:
        p = res["pairs"]
        print(f"\npairs: {p['pairs']} observations pairs (of the same size); truth = today's faces on the bare twin; match IoU >= {iou_min}")
        print(f"{'setting':28s} {'recall masked':>14s} {'extra masked':>13s} {'extra bare':>11s}")
        for s in SETTINGS:
            r = p["rows"][s.name]
            print(f"{s.name:28s} {_pct(r['found'], r['truth']):>14s} {r['extra_masked']:13d} {r['extra_bare']:11d}")
    if "clips" in res:
        c = res["clips"]
        print(f"\nclips: {c['clips']} head-pose clips, {c['frames']} frames, masked by cyclemask-run with "
              f"{c['model']} (--paste {c['paste']}); truth = today's faces on the original frames "
              f"({next(iter(c['rows'].values()))['truth']} faces); match IoU >= {iou_min}")
        print("detector alone, each frame on its own:")
        print(f"{'setting':34s} {'recall masked':>14s} {'extra masked':>13s} {'extra bare':>11s}")
        for s in SETTINGS:
            r = c["rows"][s.name]
            print(f"{s.name:34s} {_pct(r['found'], r['truth']):>14s} {r['extra_masked']:13d} {r['extra_bare']:11d}")
        print("the runtime (cyclemask-run's face stage: detection, rotated passes, tracking with hold):")
        print(f"{'setting':34s} {'recall masked':>14s} {'extra masked':>13s} {'extra bare':>11s} {'detect ms':>10s}")
        for name, r in c["runtime"].items():
            print(f"{name:34s} {_pct(r['found'], r['truth']):>14s} {r['extra_masked']:13d} {r['extra_bare']:11d} "
                  f"{r['detect_ms']:10.1f}")
        print("  (detect ms: detection time per frame on the masked clip, this machine, under its load)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    ap.add_argument("--model", type=Path, default=None,
                    help="The mask model for the clips (a graph, engine or bundle cyclemask-run takes). "
                         "Default: the embedded demo model.")
    ap.add_argument("--paste", choices=("zone", "crop"), default="zone", help="How the clips are masked.")
    ap.add_argument("--limit", type=int, default=None, help="At most this many photos per folder (cfmd, pairs).")
    ap.add_argument("--iou", type=float, default=0.4, help="IoU that counts a detection as the true face.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the results as JSON here.")
    args = ap.parse_args(argv)
    if not FACES.is_dir():
        print(f"needs the shared data at {SHARED / 'data'} (set CYCLEMASK_SHARED)", file=sys.stderr)
        return 1
    res = {}
    if "cfmd" in args.sets:
        res["cfmd"] = measure_cfmd(args.limit)
    if "pairs" in args.sets:
        res["pairs"] = measure_pairs(args.limit, args.iou)
    if "clips" in args.sets:
        res["clips"] = measure_clips(args.model, args.paste, args.iou)
    print_tables(res, args.iou)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
