"""Does the mask zone leave the eyes alone? An independent check with dlib's 68-point predictor.

For every face the runtime's face stage would translate (`FaceProcessor.prepare`, `--mask`'s
zone; no model is run, as the matte does not depend on it), dlib's shape predictor
(`face-recognition-models`' shape_predictor_68_face_landmarks.dat, the `judge` extra) locates
the eyes (the centres of points 36-41 and 42-47) and the mouth corners (48, 54) inside the
face's box on the original frame, and the zone's matte is read there:

- eyes covered: faces with an eye under the matte (weight > 0.5); the target is 0;
- mouth corners covered: the share of mouth corners with weight >= 0.5; the target is >= 95 %.

--webcam adds two made-up webcam clips (640x480, 25 fps, 75 frames): matplotlib's public-domain
portrait of Grace Hopper, near (face ~170 px) and far (~80 px), drifting and rolling by up to
32 degrees each way. There the true points are known exactly: dlib's on the upright portrait,
turned with the frame (dlib itself misses points on a strongly rolled head, as on the woman in
head-pose female-and-male: points along her brow).

Two runs: "before" (the landmarks of YuNet's first look, `upright=False`) and "after" (rolled
faces looked at again on an upright crop, the default). Inputs: the shared head-pose clips
(../shared/data/video, $CYCLEMASK_SHARED) unless clips or photo folders are given.

    python benchmarks/eye_cover.py                        # the three shared clips
    python benchmarks/eye_cover.py clip.mp4 photos/ --json eye_cover.json
    python benchmarks/eye_cover.py --webcam               # the shared clips and the made-up ones
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CYCLEMASK_SHARED", REPO.parent / "shared"))
VIDEOS = SHARED / "data" / "video"
RUNS = {"before": dict(upright=False), "after": dict(upright=True)}
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def predictor_path() -> Path | None:
    """The 68-point model inside face-recognition-models, found without importing that package
    (its __init__ needs pkg_resources, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    return p if p.is_file() else None


def skip_reason() -> str | None:
    """Why the check cannot run here, or None."""
    if importlib.util.find_spec("dlib") is None:
        return "dlib is not installed (pip install 'cyclemask[judge]')"
    if predictor_path() is None:
        return "face-recognition-models (shape_predictor_68_face_landmarks.dat) is not installed (pip install 'cyclemask[judge]')"
    return None


def read_frames(path: Path) -> list[np.ndarray]:
    if path.is_dir():
        from cyclemask.image_files import read_image

        return [read_image(p) for p in sorted(path.iterdir()) if p.suffix.lower() in PHOTO_SUFFIXES]
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def dlib_points(predictor, image: np.ndarray, box) -> np.ndarray:
    """[4, 2]: right eye, left eye (image left first), right and left mouth corners."""
    import dlib

    x, y, w, h = box
    shape = predictor(image, dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h))))
    p = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float64)
    return np.stack([p[36:42].mean(axis=0), p[42:48].mean(axis=0), p[48], p[54]])


def weight_at(weight: np.ndarray, box, point) -> float:
    """The matte over box (x0, y0, x1, y1) at a frame point (bilinear; 0 outside the box)."""
    import cv2

    x0, y0 = box[0], box[1]
    px, py = point[0] - x0, point[1] - y0
    if not (0 <= px < weight.shape[1] - 1 and 0 <= py < weight.shape[0] - 1):
        return 0.0
    return float(cv2.getRectSubPix(weight, (1, 1), (float(px), float(py)))[0, 0])


def webcam_clips(predictor) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """name -> (frames, the true [4, 2] points of each frame): see the module docstring."""
    import cv2
    import matplotlib

    from cyclemask.image_files import read_image

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        return {}
    portrait = read_image(p)
    clips = {}
    for name, face_h in (("webcam near, rolling", 300), ("webcam far, rolling", 140)):
        ph, pw = face_h, round(face_h * portrait.shape[1] / portrait.shape[0])
        yy, xx = np.mgrid[0:480, 0:640]
        canvas = np.stack([90 + xx / 8, 100 + yy / 10, 110 + 0 * xx], -1).astype(np.uint8)  # a plain wall
        y0, x0 = 240 - ph // 2, 320 - pw // 2
        canvas[y0:y0 + ph, x0:x0 + pw] = cv2.resize(portrait, (pw, ph), interpolation=cv2.INTER_AREA)
        face = dlib_box_points(predictor, canvas)
        frames, truth = [], []
        for i in range(75):
            roll = 32.0 * np.sin(2 * np.pi * i / 50.0)
            m = cv2.getRotationMatrix2D((320.0, 240.0), -roll, 1.0)  # y down: -roll turns clockwise
            m[:, 2] += (12.0 * np.sin(2 * np.pi * i / 75.0), 6.0 * np.cos(2 * np.pi * i / 60.0))
            frames.append(cv2.warpAffine(canvas, m, (640, 480), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
            truth.append(np.array([m @ (x, y, 1.0) for x, y in face]))
        clips[name] = (frames, truth)
    return clips


def dlib_box_points(predictor, image: np.ndarray) -> np.ndarray:
    """dlib's [4, 2] points (as dlib_points) of the one upright face in image, boxed by YuNet."""
    from cyclemask.face_detect import FaceDetector

    return dlib_points(predictor, image, FaceDetector().detect(image)[0].box)


def measure(frames: list[np.ndarray], config, predictor, size: int = 256, truth=None) -> dict:
    from cyclemask.engine.faces import FaceProcessor

    proc = FaceProcessor(size, config)
    faces = eyes_covered = corners = corners_covered = 0
    worst = []
    for i, img in enumerate(frames):
        _, state = proc.prepare(img)
        for p in state:
            weight = proc.paste_weight(p)
            pts = truth[i] if truth is not None else dlib_points(predictor, img, p.face)
            w = [weight_at(weight, p.box, q) for q in pts]
            faces += 1
            if max(w[:2]) > 0.5:
                eyes_covered += 1
                worst.append(i)
            corners += 2
            corners_covered += sum(v >= 0.5 for v in w[2:])
    return {"faces": faces, "eyes_covered": eyes_covered,
            "mouth_corners_covered_pct": 100.0 * corners_covered / corners if corners else float("nan"),
            "upright_looks": proc.stats.upright, "frames": len(frames), "frames_eye_covered": worst[:20]}


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="*", type=Path, help="clips or photo folders (default: the shared head-pose clips)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--webcam", action="store_true", help="add the made-up rolling webcam clips (true points known)")
    args = ap.parse_args(argv)
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    import dlib

    from cyclemask.engine.faces import FaceConfig

    inputs = args.inputs or sorted(VIDEOS.glob("head-pose-face-detection-*.mp4"))
    if not inputs and not args.webcam:
        print(f"skipped: no input given and no shared clips in {VIDEOS}")
        return 0
    predictor = dlib.shape_predictor(str(predictor_path()))
    results = {}
    print(f"{'input':46s} {'run':7s} {'faces':>6s} {'eye covered':>11s} {'mouth % covered':>15s} {'upright looks':>13s}")
    for path in inputs:
        frames = read_frames(path)
        photos = path.is_dir()
        results[path.name] = {}
        for run, kw in RUNS.items():
            # A photo folder is a set of stills: no tracking, and the padded retry for tight crops.
            config = FaceConfig(**kw, **(dict(track=False, detect_retry=True) if photos else {}))
            r = measure(frames, config, predictor)
            results[path.name][run] = r
            print(f"{path.name:46s} {run:7s} {r['faces']:6d} {r['eyes_covered']:11d} "
                  f"{r['mouth_corners_covered_pct']:15.1f} {r['upright_looks']:13d}")
    for name, (frames, truth) in (webcam_clips(predictor) if args.webcam else {}).items():
        results[name] = {}
        for run, kw in RUNS.items():
            r = measure(frames, FaceConfig(**kw), predictor, truth=truth)
            results[name][run] = r
            print(f"{name:46s} {run:7s} {r['faces']:6d} {r['eyes_covered']:11d} "
                  f"{r['mouth_corners_covered_pct']:15.1f} {r['upright_looks']:13d}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
