"""Landmark geometry of real faces: each plausibility rule's measure (engine/face_checks.py) on
every detection YuNet makes in the shared data, and how many of those real faces each rule, at
its current bounds, would reject; and how many the worn rule (a face on the chest of a larger
face in the same photo or frame: a print on clothing) would leave. The runtime applies that rule
to followed videos only; the photo sets show what it would do to photos (collages).

Sets (../shared/data, $CYCLEMASK_SHARED): cfmd and observations_pairs, with and without masks
(photos: the runtime's photo settings, score 0.5, a retry on a padded copy, passes rotated by
+-25 degrees), and every frame of the head-pose clips (video settings: no retry, rotated passes
too, since the runtime looks there for tracks it lost).

    python benchmarks/face_geometry.py                 # minutes on 2 cores
    python benchmarks/face_geometry.py --limit 200 --json geometry.json
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
FACES = SHARED / "data" / "faces"
VIDEOS = SHARED / "data" / "video"
PHOTO_SETS = ("cfmd/without_mask", "cfmd/with_mask", "observations_pairs/without_mask",
              "observations_pairs/with_mask")


def photo_faces(folder: Path, limit: int | None):
    from cyclemask.face_detect import FaceDetector
    from cyclemask.image_files import read_image

    det = FaceDetector(score_threshold=0.5, retry_pad=0.5, max_side=640, coarse_side=None,
                       rotations=(25.0, -25.0))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    for p in files:
        try:
            image = read_image(p)
        except Exception:
            continue
        for f in det.detect(image):
            yield p.name, f


def clip_faces(limit: int | None):
    import av

    from cyclemask.face_detect import FaceDetector

    det = FaceDetector(score_threshold=0.5, retry_pad=0.0, max_side=640, coarse_side=None,
                       rotations=(25.0, -25.0))
    for clip in sorted(VIDEOS.glob("*.mp4")):
        with av.open(str(clip)) as c:
            for i, frame in enumerate(c.decode(video=0)):
                if limit is not None and i >= limit:
                    break
                for f in det.detect(frame.to_ndarray(format="rgb24")):
                    yield f"{clip.name}#{i}", f


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO))
    from cyclemask.engine.face_checks import BOUNDS, RULES, failed_rules, measures, worn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="at most this many photos (frames) per set")
    ap.add_argument("--min-face", type=int, default=32,
                    help="faces with a shorter box side are counted apart: the runtime never judges them")
    ap.add_argument("--json", type=Path, default=None, help="write every face's measures here")
    args = ap.parse_args(argv)

    sets = {name: photo_faces(FACES / name, args.limit) for name in PHOTO_SETS}
    sets["clips"] = clip_faces(args.limit)
    dump = {}
    print(f"{'set':34s} {'faces':>6s} " + " ".join(f"{r:>12s}" for r in RULES) + "  any   worn")
    allm: list[dict] = []
    for name, faces in sets.items():
        ms, rejected = [], {r: 0 for r in RULES}
        anyrej = small = 0
        # The worn rule judges a face against the others of its photo (frame): the faces that
        # pass the landmark rules, grouped by where they were found.
        passed: dict[str, list] = {}
        for where, f in faces:
            m = measures(f)
            if m is None:
                continue
            ms.append(dict(m, where=where, box=list(f.box), landmarks=[list(p) for p in f.landmarks]))
            if f.size < args.min_face:
                small += 1
                continue
            bad = failed_rules(f)
            anyrej += bool(bad)
            if not bad:
                passed.setdefault(where, []).append(f)
            for r in bad:
                rejected[r] += 1
        n_worn = sum(sum(worn(fs)) for fs in passed.values())
        dump[name] = ms
        allm += [m for m in ms if min(m["box"][2:]) >= args.min_face]
        print(f"{name:34s} {len(ms) - small:6d} " + " ".join(f"{rejected[r]:12d}" for r in RULES)
              + f"  {anyrej:3d}  {n_worn:5d}   ({small} under {args.min_face} px not judged)")
    print(f"\nmeasures over the {len(allm)} real faces of at least {args.min_face} px (min, 0.1 %, 99.9 %, max) and the bounds:")
    for r in RULES:
        v = np.array([m[r] for m in allm])
        lo, hi = BOUNDS[r]
        print(f"  {r:12s} {v.min():7.3f} {np.percentile(v, 0.1):7.3f} {np.percentile(v, 99.9):7.3f} "
              f"{v.max():7.3f}   bounds {lo} .. {hi}")
    if args.json:
        args.json.write_text(json.dumps(dump))
    return 0


if __name__ == "__main__":
    sys.exit(main())
