"""Judging unmasking with judges this project did not build, and the figures that pick a method.

- Identity (`identity_report`): dlib's ResNet face descriptor (128-D, 99.38 % on LFW; distance
  < 0.6 is "the same person", its standard threshold), from the `face-recognition-models`
  wheel, run with `dlib-bin` (the `cyclemask[judge]` extra). On paired photos (a bare photo and
  its masked twin, the same size) the face is located once on the bare photo, and every
  variant (the masked twin, each method's unmasked output, our masked output) is described at
  that same place, so the judge compares faces, not detections. Reported per variant: the match
  rate with the owner, the mean distance, how often it is closer to the owner than the masked
  twin was, and the impostor match rate (against every other pair's owner) at the same threshold.
- Holes (`hole_report`): PSNR and SSIM inside the true mask of synthetic twins, whose exact
  mattes `cyclemask-data synth` writes, for each method on the same crops.
- The segmenter (`segmenter_report`): IoU against those mattes, and the area it reports on the
  bare originals (false mask).
- Mask left (`mask_left_report`): on photos with real masks, the segmenter's mask area on each
  face after unmasking over its area before, face-aware as the runtime runs.

The baselines run through the same face path: OpenCV's Telea inpainting fills the segmenter's
hole (`TeleaBackend`), the CycleGAN generator pastes its zone.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cyclemask.errors import ConfigError, DataError, InputError
from cyclemask.image_files import list_images, read_image

log = logging.getLogger(__name__)

MATCH_THRESHOLD = 0.6
JUDGE_EXTRA = "pip install 'cyclemask[judge]' (dlib-bin and face-recognition-models)"

Photo = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------
# The independent face descriptor


def _judge_models() -> Path:
    # Located without importing the package: its __init__ imports pkg_resources, which recent
    # setuptools no longer ship.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the face-recognition judge is not installed: {JUDGE_EXTRA}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class FaceJudge:
    """dlib's HOG face detector, 5-point shape predictor and ResNet descriptor."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as exc:
            if exc.name != "dlib":
                raise
            raise ConfigError(f"the face-recognition judge needs dlib: {JUDGE_EXTRA}") from None
        models = _judge_models()
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.info = {"descriptor": "dlib_face_recognition_resnet_model_v1", "landmarks": "shape_predictor_5_face_landmarks",
                     "detector": "dlib HOG frontal", "threshold": MATCH_THRESHOLD, "dlib": dlib.__version__}

    def locate(self, image: np.ndarray):
        """The largest face's rectangle, or None (upsampled once: small faces)."""
        rects = list(self._detector(np.ascontiguousarray(image), 1))
        return max(rects, key=lambda r: r.width() * r.height()) if rects else None

    def describe(self, image: np.ndarray, rect) -> np.ndarray:
        img = np.ascontiguousarray(image)
        return np.asarray(self._net.compute_face_descriptor(img, self._shape(img, rect)), np.float64)


@dataclass
class PairPhotos:
    names: list[str]
    bare: list[np.ndarray]
    masked: list[np.ndarray]
    left_out: list[dict]


def load_same_size_pairs(folder: str | Path, limit: int | None = None) -> PairPhotos:
    """Pairs `without_mask/NAME` and `with_mask/NAME` of the same size (pairs that differ in
    size are not the same photo, and are left out with a reason)."""
    root = Path(folder)
    a, b = root / "without_mask", root / "with_mask"
    if not a.is_dir() or not b.is_dir():
        raise DataError(f"{root}: paired photos need without_mask/ and with_mask/ folders")
    names_b = {p.relative_to(b).as_posix() for p in list_images(b)}
    out = PairPhotos([], [], [], [])
    for p in list_images(a):
        name = p.relative_to(a).as_posix()
        if name not in names_b:
            continue
        if limit is not None and len(out.names) >= limit:
            break
        try:
            un, ma = read_image(p), read_image(b / name)
        except InputError as exc:
            out.left_out.append({"name": name, "reason": "unreadable", "detail": str(exc)})
            continue
        if un.shape != ma.shape:
            out.left_out.append({"name": name, "reason": "size_mismatch"})
            continue
        out.names.append(name)
        out.bare.append(un)
        out.masked.append(ma)
    if not out.names:
        raise DataError(f"{root}: no pair of same-size photos")
    return out


def identity_report(pairs: PairPhotos, unmaskers: dict[str, Photo], masker: Photo | None,
                    judge: FaceJudge | None = None, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """See the module docstring. `unmaskers` run on the masked twin; `masker` on the bare photo."""
    judge = judge or FaceJudge()
    names = ["masked", *unmaskers] + (["our_mask"] if masker is not None else [])
    owners, descs, kept, no_face = [], {n: [] for n in names}, [], []
    for i, name in enumerate(pairs.names):
        bare, masked = pairs.bare[i], pairs.masked[i]
        rect = judge.locate(bare)
        if progress:
            progress("identity", i + 1, len(pairs.names))
        if rect is None:
            no_face.append(name)
            continue
        owners.append(judge.describe(bare, rect))
        variants = {"masked": masked, **{k: f(masked) for k, f in unmaskers.items()}}
        if masker is not None:
            variants["our_mask"] = masker(bare)
        for n in names:
            descs[n].append(judge.describe(variants[n], rect))
        kept.append(name)
    if not kept:
        raise DataError("the judge found no face on any bare photo")
    owner = np.stack(owners)
    dist = {n: np.linalg.norm(np.stack(descs[n]) - owner, axis=1) for n in names}
    n = len(kept)
    rows = {}
    for k in names:
        d = dist[k]
        cross = np.linalg.norm(np.stack(descs[k])[:, None, :] - owner[None, :, :], axis=2)
        off = ~np.eye(n, dtype=bool)
        rows[k] = {
            "match_rate": float((d < MATCH_THRESHOLD).mean()),
            "mean_distance": float(d.mean()),
            "closer_than_masked": None if k == "masked" else float((d < dist["masked"]).mean()),
            "impostor_match_rate": float((cross[off] < MATCH_THRESHOLD).mean()) if n > 1 else None,
        }
    return {"judge": judge.info, "pairs": n, "judge_found_no_face": no_face, "left_out": pairs.left_out,
            "variants": rows, "per_pair": {"names": kept, **{k: [round(float(v), 4) for v in dist[k]] for k in names}}}


# ---------------------------------------------------------------------------------------------
# Batch-level methods (uint8 [N, S, S, 3] -> same), for the face path and the holes


class TeleaBackend:
    """OpenCV's Telea inpainting of the segmenter's hole: the classical baseline, given the same
    hole as the restorer (the segmenter's matte, grown as the restoring graph grows it)."""

    name = "telea"

    def __init__(self, segmenter, grow: int = 3, radius: int = 3) -> None:
        self.segmenter, self.grow, self.radius = segmenter, grow, radius
        self.image_size = segmenter.size

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import cv2

        from cyclemask.segmenter import grow_hole

        out = batch.copy()
        for i, m in enumerate(self.segmenter(batch)):
            hole = grow_hole(m, self.grow)
            if hole.any():
                out[i] = cv2.inpaint(np.ascontiguousarray(batch[i]), hole, self.radius, cv2.INPAINT_TELEA)
        return out


def face_photo(infer: Callable[[np.ndarray], np.ndarray], size: int, paste: str, detector=None) -> Photo:
    """One photo in, one photo out, through the runtime's face-aware processor (as image folders
    run: no tracking, a retry on a padded copy, rotated passes)."""
    from cyclemask.engine.faces import FaceConfig, FaceProcessor

    proc = FaceProcessor(size, FaceConfig(track=False, detect_retry=True, rotated="full", paste=paste),
                         model_path=detector)

    def run(photo: np.ndarray) -> np.ndarray:
        crops, state = proc.prepare(photo)
        outputs = list(infer(np.stack(crops))) if crops else []
        return proc.finish(photo, state, outputs)

    run.processor = proc  # type: ignore[attr-defined]
    return run


# ---------------------------------------------------------------------------------------------
# Synthetic twins: holes and the segmenter


@dataclass
class Twins:
    names: list[str]
    bare: np.ndarray     # uint8 [N, S, S, 3]
    masked: np.ndarray   # uint8 [N, S, S, 3]
    matte: np.ndarray    # float32 [N, S, S] in [0, 1]


def load_twins(folder: str | Path, size: int, limit: int | None = None) -> Twins:
    """A `cyclemask-data synth` folder of aligned crops (with_mask/, without_mask/, mattes/),
    resized to `size`."""
    import json

    import cv2

    root = Path(folder)
    manifest = root / "synth.json"
    if not manifest.is_file():
        raise DataError(f"{root}: no synth.json (a cyclemask-data synth folder is expected)")
    pairs = json.loads(manifest.read_text()).get("pairs", [])
    if pairs and "matte" not in pairs[0]:
        raise DataError(f"{root}: made by a cyclemask-data synth that wrote no mattes: run it again")
    names, bare, masked, matte = [], [], [], []
    for rec in pairs[:limit]:
        try:
            b = read_image(root / "without_mask" / rec["twin"])
            m = read_image(root / "with_mask" / rec["twin"])
        except InputError as exc:
            log.warning("%s", exc)
            continue
        a = cv2.imread(str(root / "mattes" / rec["matte"]), cv2.IMREAD_GRAYSCALE)
        if a is None or a.shape != b.shape[:2] or m.shape != b.shape:
            log.warning("%s: twin, source and matte differ in size or the matte is unreadable", rec["twin"])
            continue
        names.append(rec["twin"])
        bare.append(cv2.resize(b, (size, size), interpolation=cv2.INTER_AREA))
        masked.append(cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA))
        matte.append(cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0)
    if not names:
        raise DataError(f"{root}: no usable twins")
    return Twins(names, np.stack(bare), np.stack(masked), np.stack(matte))


def _ssim_gray(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM map of two uint8 RGB images on their luma (7x7 box window)."""
    import cv2

    x = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
    y = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
    k = (7, 7)
    mx, my = cv2.blur(x, k), cv2.blur(y, k)
    sxx, syy, sxy = cv2.blur(x * x, k) - mx * mx, cv2.blur(y * y, k) - my * my, cv2.blur(x * y, k) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def hole_quality(outputs: np.ndarray, twins: Twins) -> dict:
    """PSNR (over all hole pixels of all crops) and mean SSIM inside the true mask (matte > 0.5)."""
    region = twins.matte > 0.5
    if not region.any():
        raise DataError("the twins' mattes are empty")
    diff = outputs.astype(np.float64) - twins.bare.astype(np.float64)
    mse = float((diff[region] ** 2).mean())
    ssim = [float(_ssim_gray(o, b)[r].mean()) for o, b, r in zip(outputs, twins.bare, region) if r.any()]
    return {"psnr": float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12))), "ssim": float(np.mean(ssim)),
            "n": int(len(ssim))}


def segmenter_report(segmenter, twins: Twins) -> dict:
    pred = segmenter(twins.masked) > 0.5
    true = twins.matte > 0.5
    inter = (pred & true).sum(axis=(1, 2))
    union = (pred | true).sum(axis=(1, 2))
    per = inter / np.maximum(union, 1)
    false_area = (segmenter(twins.bare) > 0.5).mean(axis=(1, 2))
    return {"iou": float(inter.sum() / max(union.sum(), 1)), "iou_mean": float(per.mean()),
            "iou_min": float(per.min()), "bare_false_area_mean": float(false_area.mean()),
            "bare_with_any_mask": float((false_area > 0.01).mean()), "n": int(len(per))}


def hole_report(methods: dict[str, Callable[[np.ndarray], np.ndarray]], twins: Twins) -> dict:
    """Each method on the masked twins (aligned crops), scored inside the true mask; `masked`
    (the twin itself) is the floor."""
    rows = {"masked": hole_quality(twins.masked, twins)}
    for name, infer in methods.items():
        rows[name] = hole_quality(np.concatenate([infer(twins.masked[i:i + 16])
                                                  for i in range(0, len(twins.masked), 16)]), twins)
    return rows


# ---------------------------------------------------------------------------------------------
# Mask left after unmasking, face-aware, on photos with real masks


def mask_left_report(photos: Sequence[np.ndarray], infer: Callable[[np.ndarray], np.ndarray], size: int,
                     paste: str, segmenter, detector=None) -> dict:
    """For each face the runtime finds: the segmenter's mask area on the crop before unmasking
    and on the same crop of the unmasked photo. Reports the ratio of their sums (and per face)."""
    from cyclemask.face_detect import crop_square, resize_square

    run = face_photo(infer, size, paste, detector)
    proc = run.processor  # type: ignore[attr-defined]
    before, after, faces_found = [], [], 0
    for photo in photos:
        crops, state = proc.prepare(photo)
        if not crops:
            continue
        outputs = list(infer(np.stack(crops)))
        out = proc.finish(photo, state, outputs)
        for crop_in, paste_state in zip(crops, state):
            crop_out = resize_square(crop_square(out, paste_state.box), size)
            a_in, a_out = segmenter.area(np.stack([crop_in, crop_out]))
            before.append(a_in)
            after.append(a_out)
            faces_found += 1
    if not before:
        raise DataError("no face found on any photo")
    b, a = np.asarray(before), np.asarray(after)
    with_mask = b > 0.01
    return {"photos": len(photos), "faces": faces_found, "faces_with_mask_found": int(with_mask.sum()),
            "mask_left": float(a[with_mask].sum() / max(b[with_mask].sum(), 1e-9)),
            "mask_left_median_face": float(np.median(a[with_mask] / b[with_mask])) if with_mask.any() else None,
            "area_before_mean": float(b.mean()), "area_after_mean": float(a.mean())}
