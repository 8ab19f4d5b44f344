"""Which masking method looks most like a real masked face? FID / KID, success, identity, a sheet.

    python benchmarks/mask_method_quality.py --data d256 \
        --gan old=cyclemask/assets/demo/mask.onnx --gan new=runs/g2/mask.onnx \
        [--limit N] [--json out.json] [--sheet sheet.png]

Every method masks the held-out unmasked crops (DATA/testA) and is scored against the held-out
*real* masked faces (the cfmd photos of DATA/testB; observations_pairs masks are pasted on, so
they are left out), at the generator's size (128 px):

- FID_AB and KID on raw crops (the whole crop through the generator; the template method warps
  its mask onto the crop itself, the only way it can make a crop) and face-aware (the crop as
  `cyclemask-run --mask` gives it: detect, translate, paste the mask zone back; the template
  method as `cyclemask-run --mask --mask-method template` does, shipped templates, seed 0).
  The untranslated testA is the reference row.
- mask success: the share of face-aware outputs the shipped masked / unmasked classifier calls
  masked.
- identity kept: dlib's face descriptor (the `cyclemask[judge]` extra, trained by nobody here) of
  each face-aware output against its own input's; the share under 0.6 (dlib's threshold, "the
  same person"), the mean distance, and how often it matches someone else's input (impostor).
  The face's box is dlib's HOG detection on the input, or YuNet's where HOG finds none (most
  of these tight crops); input and output are described in the same box.

--gan NAME=PATH takes a mask graph (ONNX) or a generator bundle; the template method always runs.
--sheet writes 16 held-out faces (input, then each method) and a tilted-head clip (the shared
head-pose clip, each method with tracking as a video run has it) side by side: look at it before
believing the numbers. The Inception network is never a training loss here (FID would then
measure the training).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CYCLEMASK_SHARED", REPO.parent / "shared"))
CLIP = SHARED / "data" / "video" / "head-pose-face-detection-female-and-male.mp4"
SIZE = 128
TEMPLATE = "template"


def _gan(path: str, stack: contextlib.ExitStack):
    from cyclemask.engine.backends import BackendOptions, create_backend

    be, _ = create_backend(Path(path), "auto", "mask", BackendOptions(probe=False))
    stack.enter_context(be)
    return be.infer, be.image_size


def _template_processor(track: bool):
    from cyclemask.engine.faces import FaceConfig
    from cyclemask.engine.template_mask import MaskSet, TemplateConfig

    return MaskSet(TemplateConfig()).processor(FaceConfig(track=track, detect_retry=not track, rotated="full"))


def _photo(proc, infer=None):
    def run(photo: np.ndarray) -> np.ndarray:
        crops, state = proc.prepare(photo)
        outputs = list(infer(np.stack(crops))) if (crops and infer is not None) else []
        return proc.finish(photo, state, outputs)

    return run


def _gan_photo(infer, size: int, track: bool = False):
    from cyclemask.engine.faces import FaceConfig, FaceProcessor

    return _photo(FaceProcessor(size, FaceConfig(track=track, detect_retry=not track, rotated="full", paste="zone")),
                  infer)


def _identity(judge, detector, inputs, outputs) -> dict:
    import dlib

    owners, outs = [], []
    no_face = 0
    for bare, out in zip(inputs, outputs):
        rect = judge.locate(bare)
        if rect is None:
            # dlib's HOG detector misses most of these tight crops; YuNet's box on the bare
            # input stands in (the same box for the output; the descriptor and its landmarks
            # stay dlib's).
            faces = detector.detect(bare)
            if not faces:
                no_face += 1
                continue
            x, y, w, h = max(faces, key=lambda f: f.size).box
            rect = dlib.rectangle(int(x), int(y), int(x + w), int(y + h))
        owners.append(judge.describe(bare, rect))
        outs.append(judge.describe(out, rect))
    own, got = np.stack(owners), np.stack(outs)
    d = np.linalg.norm(got - own, axis=1)
    cross = np.linalg.norm(got[:, None, :] - own[None, :, :], axis=2)
    off = ~np.eye(len(d), dtype=bool)
    return {"n": int(len(d)), "judge_found_no_face": no_face, "match_rate": float((d < 0.6).mean()),
            "mean_distance": float(d.mean()), "impostor_match_rate": float((cross[off] < 0.6).mean())}


def _clip_frames(n_show: int):
    import av

    with av.open(str(CLIP)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    # From the 5th frame: a track's first frames wait for its confirmation; then evenly spaced
    # over the head's roll and turn.
    picks = np.linspace(min(4, len(frames) - 1), len(frames) - 1, n_show).round().astype(int)
    return frames, picks


def _heads(frame: np.ndarray) -> np.ndarray:
    """The clip's band where the two heads move (the shared clip is 480 x 270)."""
    h, w = frame.shape[:2]
    return frame[int(0.04 * h):int(0.63 * h), int(0.08 * w):int(0.88 * w)]


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = tile.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="Prepared split: testA/ (unmasked) and testB/ (masked).")
    ap.add_argument("--gan", action="append", default=[], metavar="NAME=PATH", help="A mask generator to score.")
    ap.add_argument("--real-prefix", default="cfmd-", help="testB files whose names start so are the real masks.")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--sheet", default=None, help="PNG: 16 held-out faces and a tilted-head clip, each method.")
    ap.add_argument("--no-identity", action="store_true")
    args = ap.parse_args(argv)

    import cv2
    import torch

    from cyclemask.metrics.classifier import MaskClassifier
    from cyclemask.metrics.evaluate import EvalOptions, FeatureCache, ImageSet, evaluate_translators, fit_size, load_folder
    from cyclemask.metrics.fid import load_inception
    from cyclemask.face_detect import FaceDetector
    from cyclemask.metrics.unmasking import FaceJudge

    torch.set_num_threads(1)
    test_a = load_folder(Path(args.data) / "testA", args.limit)
    all_b = load_folder(Path(args.data) / "testB")
    keep = [i for i, n in enumerate(all_b.names) if Path(n).name.startswith(args.real_prefix)]
    if not keep:
        sys.exit(f"{args.data}/testB: no file starts with {args.real_prefix!r}")
    test_b = ImageSet(all_b.folder + f" ({args.real_prefix}*)", [all_b.names[i] for i in keep],
                      [all_b.images[i] for i in keep])
    feats = FeatureCache(load_inception(None, "cpu"))
    clf = MaskClassifier(None)
    judge = None if args.no_identity else FaceJudge()
    detector = FaceDetector(None)
    opts = EvalOptions(batch_size=8)
    methods = [tuple(g.split("=", 1)) for g in args.gan] + [(TEMPLATE, TEMPLATE)]
    report: dict = {"data": str(args.data), "n_testA": len(test_a.images), "n_real_masked": len(test_b.images),
                    "size": SIZE, "methods": {}}
    sheet_cols: dict[str, list[np.ndarray]] = {}
    clip_cols: dict[str, list[np.ndarray]] = {}
    n_sheet = 16
    sheet_idx = np.linspace(0, len(test_a.images) - 1, n_sheet).round().astype(int)
    if args.sheet:
        frames, clip_picks = _clip_frames(6)
    with contextlib.ExitStack() as stack:
        for name, spec in methods:
            t0 = time.perf_counter()
            if spec == TEMPLATE:
                crop_proc = _photo(_template_processor(track=False))

                def raw(batch, _f=crop_proc):
                    return np.stack([_f(im) for im in batch])

                photo = _photo(_template_processor(track=False))
                video = _photo(_template_processor(track=True)) if args.sheet else None
            else:
                infer, size = _gan(spec, stack)
                if size != SIZE:
                    sys.exit(f"{spec}: a {size} px generator; this table is at {SIZE} px")
                raw = infer
                photo = _gan_photo(infer, size)
                video = _gan_photo(infer, size, track=True) if args.sheet else None
            r = evaluate_translators({"mask": raw}, SIZE, test_a, test_b, feats, None, opts, classifier=clf,
                                     photo_translators={"mask": photo})
            outs = [photo(im) for im in test_a.images]  # the face-aware outputs, full size, for the judge
            row = {"raw": {k: r["AB"][k] for k in ("fid", "kid", "kid_std")},
                   "face_aware": {k: r["face_aware"]["AB"][k] for k in ("fid", "kid", "kid_std")},
                   "success_raw": r["success"]["mask"]["success"],
                   "success": r["face_aware"]["AB"]["success"]["success"]}
            if judge is not None:
                row["identity"] = _identity(judge, detector, test_a.images, outs)
            row["seconds_under_load"] = round(time.perf_counter() - t0, 1)
            report["methods"][name] = {"spec": spec, **row}
            report.setdefault("reference", {"FID_A_vs_real_B": r["reference"]["FID_A_vs_B"],
                                            "testA_called_masked": 1 - r["success"]["reference"]["testA_called_unmasked"]["success"],
                                            "real_B_called_masked": r["success"]["reference"]["testB_called_masked"]["success"]})
            print(f"{name:<10} FID raw {row['raw']['fid']:.1f}  face-aware {row['face_aware']['fid']:.1f}  "
                  f"KID {row['face_aware']['kid']:.4f}  success {row['success']:.3f}"
                  + (f"  identity {row['identity']['match_rate']:.3f}" if judge is not None else ""), flush=True)
            if args.sheet:
                sheet_cols[name] = [cv2.resize(outs[i], (SIZE, SIZE), interpolation=cv2.INTER_AREA) for i in sheet_idx]
                clip_out = [video(f) for f in frames]
                clip_cols[name] = [clip_out[i] for i in clip_picks]
    # The untranslated testA against the same real masks: what a method must beat.
    report["untranslated"] = {"raw_fid": report["reference"]["FID_A_vs_real_B"]}
    if judge is not None:
        # Match 1.0 by construction; its impostor rate is the judge's own on these crops.
        report["untranslated"]["identity"] = _identity(judge, detector, test_a.images, test_a.images)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.sheet:
        names = list(sheet_cols)
        rows = []
        for k, i in enumerate(sheet_idx):
            tiles = [fit_size(test_a.images[i], SIZE)] + [sheet_cols[n][k] for n in names]
            if k == 0:
                tiles = [_label(t, s) for t, s in zip(tiles, ["input", *names])]
            rows.append(np.concatenate(tiles, 1))
        half = n_sheet // 2
        faces = np.concatenate([np.concatenate(rows[:half], 0), np.concatenate(rows[half:], 0)], 1)
        clip_rows = []
        for j, fi in enumerate(clip_picks):
            h, w = _heads(frames[fi]).shape[:2]
            tw = faces.shape[1] // (len(names) + 1)
            th = round(h * tw / w)
            tiles = [cv2.resize(_heads(frames[fi]), (tw, th), interpolation=cv2.INTER_AREA)]
            tiles += [cv2.resize(_heads(clip_cols[n][j]), (tw, th), interpolation=cv2.INTER_AREA) for n in names]
            if j == 0:
                tiles = [_label(t, s) for t, s in zip(tiles, ["clip", *names])]
            row = np.concatenate(tiles, 1)
            clip_rows.append(np.pad(row, ((0, 0), (0, faces.shape[1] - row.shape[1]), (0, 0))))
        sheet = np.concatenate([faces, np.full((8, faces.shape[1], 3), 255, np.uint8), *clip_rows], 0)
        cv2.imwrite(args.sheet, sheet[..., ::-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
