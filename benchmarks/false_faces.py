"""False faces in a webcam-style video: a printed face on the shirt and hands near the face.

    python benchmarks/false_faces.py make /tmp/false_faces.mp4            # the clip and its truth
    python benchmarks/false_faces.py count /tmp/false_faces.mp4           # with and without checks

`make` builds a clip (no camera needed) from the shared material: the shared head-pose clip of
one man (../shared/data/video, webcam-style head and shoulders, frames forth and back, scaled up
to 854x480 at 25 fps), onto which it composites

- a printed face: another person's photo from the shared faces (one YuNet finds clearly), a
  little washed out as ink on cloth, shaded by the shirt's folds, bent by a slow wave as cloth
  bends, on the chest, following the body;
- two hands drawn in the man's skin colour (palm, fingers, thumb, shading): one rises to the
  cheek and chin and rests there, the other waves beside the head, and now and then a hand
  covers part of the face.

Everything follows a seed (--seed): the same command makes the same clip. The real face's box in
each frame (YuNet on the frame before compositing), the printed face's box and the hands' boxes
are written beside the clip (CLIP.json). The clip itself belongs outside the repository.

`count` runs `cyclemask-run --video CLIP --mask` in this process (same flags, same code path: the
face processor of the run is only watched, each frame's faces to translate recorded) once
with the face checks and once with --no-face-checks, and counts per frame:

- false crops: translated boxes that overlap the real face by IoU < 0.3 (each one is a mask
  drawn where no real face is), split by what they lie on (the print, a hand, elsewhere);
- real-face recall: frames whose real face has a translated box with IoU >= 0.3, out of the
  frames where the real face is known.

Not part of the installed package: run it from the repository root.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks.*` importable
    sys.path.insert(0, str(REPO))

from benchmarks.inputs import SHARED_DATA  # noqa: E402

SOURCE_CLIP = SHARED_DATA / "video" / "head-pose-face-detection-male.mp4"
PRINT_FACES = SHARED_DATA / "faces" / "observations_pairs" / "without_mask"
SIZE = (854, 480)
FPS = 25
IOU_REAL = 0.3


# ------------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------------


def iou(a, b) -> float:
    """IoU of two (x, y, w, h) boxes."""
    from cyclemask.face_detect import box_iou

    return box_iou(a, b)


def covered(a, b) -> float:
    """The fraction of box a that box b covers."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(a[2] * a[3], 1e-9)


def _smoothstep(t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    return t * t * (3 - 2 * t)


def _keyframes(i: int, keys: list[tuple[int, tuple[float, ...]]]) -> tuple[float, ...]:
    """Eased interpolation between (frame, values) keys; held before the first and after the last."""
    if i <= keys[0][0]:
        return keys[0][1]
    for (f0, v0), (f1, v1) in zip(keys, keys[1:]):
        if i <= f1:
            t = _smoothstep((i - f0) / max(f1 - f0, 1))
            return tuple(a + (b - a) * t for a, b in zip(v0, v1))
    return keys[-1][1]


# ------------------------------------------------------------------------------------------------
# the clip
# ------------------------------------------------------------------------------------------------


def _base_frames(n: int) -> list[np.ndarray]:
    import av
    import cv2

    with av.open(str(SOURCE_CLIP)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    cycle = frames + frames[-2:0:-1]
    return [cv2.resize(cycle[i % len(cycle)], SIZE, interpolation=cv2.INTER_CUBIC) for i in range(n)]


def _largest(faces):
    return max(faces, key=lambda f: f.box[2] * f.box[3]) if faces else None


def _print_photo(detector, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A face photo (RGB, the face with a margin around it) from the shared faces that YuNet finds
    clearly: a print that a detector would take for a face."""
    from cyclemask.image_files import list_images, read_image

    names = list_images(PRINT_FACES)
    if not names:
        raise click.ClickException(f"no face photos under {PRINT_FACES}")
    for k in rng.permutation(len(names))[:200]:
        img = read_image(names[k])
        f = _largest(detector.detect(img))
        if f is None or f.score < 0.9 or f.size < 90:
            continue
        x, y, w, h = f.box
        m = 0.35
        x0, y0 = int(max(0, x - m * w)), int(max(0, y - m * h))
        x1, y1 = int(min(img.shape[1], x + w * (1 + m))), int(min(img.shape[0], y + h * (1 + m)))
        if (x1 - x0) < 0.9 * w * (1 + 2 * m) or (y1 - y0) < 0.9 * h * (1 + 2 * m):
            continue  # the face sits at the photo's edge: no margin to print
        return img[y0:y1, x0:x1].copy(), Path(names[k]).name
    raise click.ClickException(f"no face photo under {PRINT_FACES} that YuNet finds clearly")


def _ink(photo: np.ndarray) -> np.ndarray:
    """A photo as printed on cloth: less saturated, flatter contrast, a lifted black."""
    p = photo.astype(np.float32)
    grey = p.mean(axis=2, keepdims=True)
    p = grey + 0.7 * (p - grey)
    p = 128 + 0.8 * (p - 128) + 12
    return np.clip(p, 0, 255)


def _paste_print(frame: np.ndarray, ink: np.ndarray, centre: tuple[float, float], height: int, phase: float) -> tuple:
    """The printed photo on the shirt at `centre`, `height` px tall, bent by a wave; its box."""
    import cv2

    h = int(height)
    w = int(round(ink.shape[1] * h / ink.shape[0]))
    pr = cv2.resize(ink, (w, h), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Cloth bends: a slow wave along both axes, a pixel or two.
    mx = xx + 1.5 * np.sin(2 * np.pi * yy / (0.8 * h) + phase)
    my = yy + 1.2 * np.sin(2 * np.pi * xx / (0.9 * w) + 0.7 * phase)
    pr = cv2.remap(pr, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    x0, y0 = int(round(centre[0] - w / 2)), int(round(centre[1] - h / 2))
    H, W = frame.shape[:2]
    ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if ax1 <= ax0 or ay1 <= ay0:
        return None
    region = frame[ay0:ay1, ax0:ax1].astype(np.float32)
    part = pr[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
    # The shirt's folds shade the print: its light relative to the shirt's mean light.
    lum = cv2.GaussianBlur(region.mean(axis=2), (0, 0), 3)
    shade = np.clip(lum / max(float(lum.mean()), 1.0), 0.75, 1.2)[:, :, None]
    alpha = np.ones(part.shape[:2], np.float32)
    edge = max(2, h // 40)
    alpha[:edge] *= np.linspace(0, 1, edge)[:, None]
    alpha[-edge:] *= np.linspace(1, 0, edge)[:, None]
    alpha[:, :edge] *= np.linspace(0, 1, edge)[None]
    alpha[:, -edge:] *= np.linspace(1, 0, edge)[None]
    alpha = 0.92 * alpha[:, :, None]
    frame[ay0:ay1, ax0:ax1] = np.clip(region + alpha * (part * shade - region), 0, 255).astype(np.uint8)
    return (float(x0), float(y0), float(w), float(h))


def _draw_hand(frame: np.ndarray, centre: tuple[float, float], scale: float, angle: float, skin: np.ndarray,
               spread: float, rng: np.random.Generator) -> tuple:
    """A hand, palm towards the camera, fingers up at `angle` degrees from vertical; its box."""
    import cv2

    ss = 2  # drawn at twice the size and shrunk: smooth edges
    s = scale * ss
    H, W = frame.shape[:2]
    mask = np.zeros((H * ss, W * ss), np.uint8)
    a = np.deg2rad(angle)
    up = np.array([np.sin(a), -np.cos(a)])
    right = np.array([np.cos(a), np.sin(a)])
    c = np.array(centre, np.float64) * ss
    cv2.ellipse(mask, tuple(int(v) for v in c), (int(0.45 * s), int(0.55 * s)), angle, 0, 360, 255, -1, cv2.LINE_AA)
    lengths = (0.75, 0.85, 0.8, 0.62)
    for k, length in enumerate(lengths):
        off = (k - 1.5) * 0.22 * s
        tilt = (k - 1.5) * spread
        d = up * np.cos(np.deg2rad(tilt)) + right * np.sin(np.deg2rad(tilt))
        base = c + up * 0.4 * s + right * off
        tip = base + d * length * s
        cv2.line(mask, tuple(int(v) for v in base), tuple(int(v) for v in tip), 255, int(0.19 * s), cv2.LINE_AA)
    thumb_base = c - right * 0.35 * s + up * 0.05 * s
    thumb_tip = thumb_base - right * 0.45 * s + up * 0.35 * s
    cv2.line(mask, tuple(int(v) for v in thumb_base), tuple(int(v) for v in thumb_tip), 255, int(0.22 * s), cv2.LINE_AA)
    mask = cv2.resize(mask, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    ys, xs = np.nonzero(mask > 0.5)
    if len(xs) == 0:
        return None
    # Shading: lighter towards the fingertips, darker at the edges (a rounded hand), skin noise.
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    along = ((xx - centre[0]) * up[0] + (yy - centre[1]) * up[1]) / max(scale, 1.0)
    light = 0.9 + 0.12 * np.clip(along, -1, 1)
    inner = cv2.GaussianBlur(mask, (0, 0), max(scale / 12, 1.0))
    light = light * (0.8 + 0.2 * np.clip(inner * 1.5, 0, 1))
    colour = skin[None, None, :] * light[:, :, None]
    colour += rng.normal(0, 3, colour.shape).astype(np.float32)
    m = mask[:, :, None]
    frame[:] = np.clip(frame + m * (colour - frame), 0, 255).astype(np.uint8)
    return (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))


def make_clip(out: Path, frames: int = 500, seed: int = 0) -> dict:
    """Write the clip and CLIP.json (the truth); returns the truth."""
    import av

    from cyclemask.face_detect import FaceDetector

    if not SOURCE_CLIP.is_file():
        raise click.ClickException(f"the shared clip {SOURCE_CLIP} is absent")
    rng = np.random.default_rng(seed)
    detector = FaceDetector(score_threshold=0.5, retry_pad=0.0, max_side=640, coarse_side=None)
    base = _base_frames(frames)
    real = [_largest(detector.detect(f)) for f in base]
    known = [f.box for f in real if f is not None]
    if not known:
        raise click.ClickException(f"{SOURCE_CLIP}: no face found to build on")
    # Skin colour: the middle of the real faces (cheeks and nose), a median over frames.
    skins = []
    for f, img in zip(real, base):
        if f is not None:
            x, y, w, h = (int(v) for v in f.box)
            skins.append(np.median(img[y + h // 3:y + 2 * h // 3, x + w // 4:x + 3 * w // 4].reshape(-1, 3), axis=0))
    skin = np.median(np.array(skins), axis=0).astype(np.float32)
    photo, photo_name = _print_photo(detector, rng)
    ink = _ink(photo)

    truth: dict = {"frames": frames, "fps": FPS, "size": list(SIZE), "seed": seed, "source": SOURCE_CLIP.name,
                   "print_photo": photo_name, "real": [], "print": [], "hands": []}
    last = known[0]
    body = None
    # A hand's path, relative to the face (units of the face's height; 0, 0 = face centre).
    hand_a = [(0, (-1.2, 2.6, 0.0)), (60, (-1.2, 2.6, 0.0)), (120, (-0.75, 0.45, 20.0)), (200, (-0.6, 0.35, 25.0)),
              (240, (-0.4, 0.55, 40.0)), (280, (-0.45, 0.5, 35.0)), (330, (-1.3, 2.6, 0.0)),
              (380, (-1.3, 2.6, 0.0)), (410, (-0.2, 0.45, 10.0)), (440, (-0.25, 0.4, 15.0)), (480, (-1.3, 2.6, 0.0))]
    hand_b = [(0, (1.4, 2.6)), (150, (1.4, 2.6)), (190, (1.15, -0.1)), (330, (1.1, 0.0)), (370, (1.4, 2.6)),
              (440, (1.4, 2.6)), (470, (0.8, 0.2))]
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i, (img, f) in enumerate(zip(base, real)):
            if f is not None:
                last = f.box
            fx, fy, fw, fh = last
            cx, cy = fx + fw / 2, fy + fh / 2
            # The body follows the head slowly and less far.
            body = np.array([cx, cy]) if body is None else 0.85 * body + 0.15 * np.array([cx, cy])
            frame = img.copy()
            pbox = _paste_print(frame, ink, (body[0], min(body[1] + 1.75 * fh, SIZE[1] - 0.42 * fh)), 0.78 * fh,
                                phase=0.15 * i)
            hands = []
            hx, hy, ha = _keyframes(i, hand_a)
            hands.append(_draw_hand(frame, (cx + hx * fh, cy + hy * fh), 0.55 * fh, ha, skin, 6.0, rng))
            bx, by = _keyframes(i, hand_b)
            wave = 25.0 * np.sin(2 * np.pi * i / 18.0)
            hands.append(_draw_hand(frame, (cx + bx * fh, cy + by * fh), 0.55 * fh, -10.0 + wave, skin * 0.97,
                                    10.0, rng))
            truth["real"].append(list(f.box) if f is not None else None)
            truth["print"].append(list(pbox) if pbox is not None else None)
            truth["hands"].append([list(h) for h in hands if h is not None
                                   and h[1] < SIZE[1] - 2 and h[2] * h[3] > 0])
            for p in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(p)
        for p in stream.encode():
            container.mux(p)
    Path(str(out) + ".json").write_text(json.dumps(truth))
    return truth


# ------------------------------------------------------------------------------------------------
# counting what cyclemask-run translates
# ------------------------------------------------------------------------------------------------


def translated_boxes(clip: Path, extra: list[str]) -> list[list[tuple]]:
    """Each frame's translated face boxes, as `cyclemask-run --video clip --mask [extra]` makes
    them: the run's face processor is watched, nothing else changes."""
    from cyclemask.engine import cli
    from cyclemask.engine.faces import FaceProcessor

    seen: list[list[tuple]] = []
    follow = FaceProcessor._follow

    # _follow gives each frame's faces to translate, after the checks and the tracker: prepare
    # cuts a crop around each (gan) or warps a template onto each (template: one without usable
    # landmarks is then skipped, so for it this counts at most what is masked).
    def watched(self, image, faces, ahead):
        boxes = follow(self, image, faces, ahead)
        seen.append([tuple(b[0]) for b in boxes])
        return boxes

    with tempfile.TemporaryDirectory(prefix="false_faces_") as tmp:
        FaceProcessor._follow = watched
        try:
            cli.main(["--video", str(clip), "--mask", "--out", str(Path(tmp) / "out.mp4"), "--no-progress", *extra],
                     standalone_mode=False)
        finally:
            FaceProcessor._follow = follow
    return seen


def score(truth: dict, seen: list[list[tuple]]) -> dict:
    if len(seen) != truth["frames"]:
        raise click.ClickException(f"the run prepared {len(seen)} frames, the clip has {truth['frames']}")
    false = {"print": 0, "hand": 0, "other": 0}
    false_frames = 0
    known = found = 0
    for i, boxes in enumerate(seen):
        real = truth["real"][i]
        if real is not None:
            known += 1
            found += any(iou(b, real) >= IOU_REAL for b in boxes)
        wrong = [b for b in boxes if real is None or iou(b, real) < IOU_REAL]
        false_frames += bool(wrong)
        for b in wrong:
            pb = truth["print"][i]
            if pb is not None and covered(b, pb) >= 0.5:
                false["print"] += 1
            elif any(covered(b, h) >= 0.3 for h in truth["hands"][i]):
                false["hand"] += 1
            else:
                false["other"] += 1
    return {"frames": len(seen), "false_crops": sum(false.values()), "false_by_kind": false,
            "frames_with_false": false_frames, "real_known": known, "real_found": found,
            "recall": found / known if known else float("nan")}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    pass


@main.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--frames", default=500, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True)
def make(out, frames, seed):
    """Make the clip OUT (and OUT.json, where the real and printed faces and the hands are)."""
    truth = make_clip(out, frames, seed)
    n_real = sum(r is not None for r in truth["real"])
    click.echo(f"{out}: {frames} frames {SIZE[0]}x{SIZE[1]} at {FPS} fps; real face known in {n_real}; "
               f"printed face from {truth['print_photo']}; truth in {out}.json")


@main.command()
@click.argument("clip", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mask-method", type=click.Choice(["gan", "template"]), default="gan", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def count(clip, mask_method, as_json):
    """Count false crops and real-face recall on CLIP (made by `make`), with and without face checks."""
    truth_path = Path(str(clip) + ".json")
    if not truth_path.is_file():
        raise click.ClickException(f"{truth_path}: absent (make the clip with `false_faces.py make`)")
    truth = json.loads(truth_path.read_text())
    rows = {}
    for name, extra in (("checks", []), ("no-face-checks", ["--no-face-checks"])):
        rows[name] = score(truth, translated_boxes(clip, ["--mask-method", mask_method, *extra]))
    click.echo(f"\n{clip} ({truth['frames']} frames), cyclemask-run --video --mask --mask-method {mask_method}")
    click.echo("                   false crops (print/hand/other)   frames with one   real face found")
    for name, r in rows.items():
        k = r["false_by_kind"]
        click.echo(f"{name:18s} {r['false_crops']:5d} ({k['print']}/{k['hand']}/{k['other']})"
                   f"{'':18s}{r['frames_with_false']:5d}        {r['real_found']}/{r['real_known']} "
                   f"({100 * r['recall']:.1f} %)")
    if as_json:
        click.echo(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
