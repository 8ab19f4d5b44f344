"""Score a pair of generators as the paper does: FID_AB, FID_BA, KID, and PSNR / SSIM on paired
photos.

- FID_AB = FID(G_mask(testA), testB): how much the masked fakes look like real masked faces;
  FID_BA = FID(G_unmask(testB), testA). KID alongside (unbiased, meaningful at small N).
  `FID_A_vs_B` (real testA against real testB) is reported as the no-translation reference.
- Paired data (a folder with without_mask/ and with_mask/ holding the same photo under the same
  file name, the mask pasted on): both images are cropped with the box found on the unmasked
  one, resized to the model size; unmasking is scored as PSNR / SSIM of G_unmask(with) against
  without, masking as G_mask(without) against with. The identity (the input itself) is
  reported as the baseline to beat. Where the crops come from detection, the mask zone (the
  polygon of `cyclemask.face_detect.mask_anchors` on the unmasked face) is scored on its own too: the
  only pixels a mask changes, so the figure is not diluted by the untouched rest.
- Face-aware ("as the user gets it", optional): each test photo goes through what `cyclemask-run`
  does (detect the face, crop, translate, paste back into the photo's own pixels as --paste says);
  FID / KID and success are scored again on those outputs. A photo where no face is found comes
  back unchanged and counts against the model.
- With a masked / unmasked classifier (`cyclemask.metrics.classifier`): the success rate of each
  direction, the share of G_mask(testA) called masked and of G_unmask(testB) called unmasked,
  beside the untranslated test sets as the reference.

Models run through cyclemask.engine's backends (checkpoints on PyTorch, ONNX graphs on ONNX
Runtime, engines on TensorRT), at the size the model was built or trained for; real images are
resized to that size too, so resolution does not bias the comparison.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cyclemask import DIRECTIONS
from cyclemask.errors import ConfigError, DataError, InputError
from cyclemask.face_detect import FaceDetector, crop_square, mask_anchors, resize_square, square_crop_box
from cyclemask.image_arrays import center_crop_resize
from cyclemask.image_files import list_images, read_image

from .fid import InceptionFeatures, extract_features, fid_from_features, kid_from_features
from .quality import psnr, psnr_in, ssim

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
Translate = Callable[[np.ndarray], np.ndarray]  # uint8 [N, S, S, 3] -> uint8 [N, S, S, 3]

PAIR_FOLDERS = ("without_mask", "with_mask")


@dataclass
class ImageSet:
    """Images of one folder, in sorted order, with the files that could not be read."""

    folder: str
    names: list[str]
    images: list[np.ndarray]
    skipped: list[dict] = field(default_factory=list)


def load_folder(folder: str | os.PathLike, limit: int | None = None) -> ImageSet:
    """Read a folder's images; an unreadable file is skipped and recorded, not fatal."""
    root = Path(folder)
    try:
        paths = list_images(root)
    except InputError as exc:
        raise DataError(str(exc)) from None
    out = ImageSet(str(root), [], [])
    for p in paths:
        if limit is not None and len(out.images) >= limit:
            break
        try:
            out.images.append(read_image(p))
            out.names.append(p.relative_to(root).as_posix())
        except InputError as exc:
            log.warning("skipped %s", exc)
            out.skipped.append({"file": str(p), "error": str(exc)})
    if not out.images:
        raise DataError(f"{root}: no readable images")
    return out


def fit_size(image: np.ndarray, size: int) -> np.ndarray:
    """The centred square of an image, resized to size (prepared data are square already)."""
    return center_crop_resize(image, size)


def translate_all(translate: Translate, images: Sequence[np.ndarray], size: int, batch_size: int,
                  progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """Run a translator over images (each fitted to size first), in batches."""
    out: list[np.ndarray] = []
    for i in range(0, len(images), batch_size):
        batch = np.stack([fit_size(im, size) for im in images[i:i + batch_size]])
        out.extend(translate(batch))
        if progress:
            progress(len(out), len(images))
    return out


# ---------------------------------------------------------------------------------------------
# Paired data


@dataclass
class PairSet:
    names: list[str]
    unmasked: list[np.ndarray]  # crops, at the model size
    masked: list[np.ndarray]
    rejected: list[dict]
    zones: list[np.ndarray] | None = None  # bool [size, size] mask zones (None for aligned pairs)


def zone_in_crop(landmarks, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The mask zone polygon of a face, as a bool [size, size] mask of its crop."""
    import cv2

    x0, y0, x1, _ = box
    scale = size / float(x1 - x0)
    pts = (mask_anchors(landmarks) - np.array([x0, y0], np.float32)) * scale
    poly = pts[[0, 1, 2, 5, 4, 3]]  # a, b, c, f, e, d: round the outline
    zone = np.zeros((size, size), np.uint8)
    cv2.fillPoly(zone, [np.round(poly * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return zone.astype(bool)


def load_pairs(folder: str | os.PathLike, size: int, detector: FaceDetector | None, margin: float = 0.3,
               min_face: int = 64, limit: int | None = None) -> PairSet:
    """Crop each pair the same way: the face box is found on the unmasked photo (a pasted mask
    hides the landmarks), and the same square is cut from both. detector None: the photos are
    aligned already; the centred square is used."""
    root = Path(folder)
    dirs = [root / d for d in PAIR_FOLDERS]
    for d in dirs:
        if not d.is_dir():
            raise DataError(f"{root}: paired data needs the folders {PAIR_FOLDERS[0]}/ and {PAIR_FOLDERS[1]}/ "
                            f"(the same photo under the same name in each); {d.name}/ is missing")
    names_a = {p.relative_to(dirs[0]).as_posix() for p in list_images(dirs[0])}
    names_b = {p.relative_to(dirs[1]).as_posix() for p in list_images(dirs[1])}
    common = sorted(names_a & names_b)
    if not common:
        raise DataError(f"{root}: no file name is in both {PAIR_FOLDERS[0]}/ and {PAIR_FOLDERS[1]}/")
    out = PairSet([], [], [], [], zones=None if detector is None else [])
    for name in common:
        if limit is not None and len(out.names) >= limit:
            break
        try:
            un, ma = read_image(dirs[0] / name), read_image(dirs[1] / name)
        except InputError as exc:
            out.rejected.append({"name": name, "reason": "unreadable", "detail": str(exc)})
            continue
        if un.shape != ma.shape:
            out.rejected.append({"name": name, "reason": "size_mismatch",
                                 "detail": f"{un.shape[1]}x{un.shape[0]} vs {ma.shape[1]}x{ma.shape[0]}"})
            continue
        if detector is None:
            s = min(un.shape[:2])
            y0, x0 = (un.shape[0] - s) // 2, (un.shape[1] - s) // 2
            box = (x0, y0, x0 + s, y0 + s)
        else:
            faces = [f for f in detector.detect(un) if f.size >= min_face]
            if len(faces) != 1:
                out.rejected.append({"name": name, "reason": "no_face" if not faces else "multiple_faces",
                                     "detail": f"{len(faces)} faces of >= {min_face} px on the unmasked photo"})
                continue
            box = square_crop_box(faces[0].box, un.shape, margin, "shift")
            zone = zone_in_crop(faces[0].landmarks, box, size)
            if not zone.any():
                out.rejected.append({"name": name, "reason": "no_zone", "detail": "the mask zone falls outside the crop"})
                continue
            out.zones.append(zone)
        out.names.append(name)
        out.unmasked.append(resize_square(crop_square(un, box), size))
        out.masked.append(resize_square(crop_square(ma, box), size))
    if not out.names:
        raise DataError(f"{root}: no usable pair (rejected: {len(out.rejected)})")
    return out


def score_pairs(outputs: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                zones: Sequence[np.ndarray] | None = None) -> dict:
    p = [psnr(o, t) for o, t in zip(outputs, targets)]
    s = [ssim(o, t) for o, t in zip(outputs, targets)]
    finite = [v for v in p if math.isfinite(v)]
    out = {"psnr": float(np.mean(finite)) if finite else float("inf"), "ssim": float(np.mean(s)),
           "psnr_std": float(np.std(finite)) if finite else 0.0, "ssim_std": float(np.std(s)), "n": len(p)}
    if zones:
        zp = [psnr_in(o, t, z) for o, t, z in zip(outputs, targets, zones)]
        zs = [ssim(o, t, region=z) for o, t, z in zip(outputs, targets, zones)]
        zf = [v for v in zp if math.isfinite(v)]
        out.update({"zone_psnr": float(np.mean(zf)) if zf else float("inf"), "zone_ssim": float(np.mean(zs)),
                    "zone_psnr_std": float(np.std(zf)) if zf else 0.0})
    return out


# ---------------------------------------------------------------------------------------------
# The evaluation


@dataclass(frozen=True)
class EvalOptions:
    batch_size: int = 8
    feature_batch_size: int = 32
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "feature_batch_size", "kid_subsets", "kid_subset_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer; got {v!r}")


class FeatureCache:
    """Inception features of real image sets, computed once (a sweep scores many models against
    the same test sets)."""

    def __init__(self, inception: InceptionFeatures, batch_size: int = 32) -> None:
        self.inception = inception
        self.batch_size = batch_size
        self._cache: dict[tuple[str, int, int], np.ndarray] = {}

    def features(self, images: Sequence[np.ndarray], key: str | None = None, size: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        k = (key, size, len(images)) if key is not None else None
        if k is not None and k in self._cache:
            return self._cache[k]
        imgs = [fit_size(im, size) for im in images] if size else list(images)
        f = extract_features(imgs, self.inception, batch_size=self.batch_size, progress=progress)
        if k is not None:
            self._cache[k] = f
        return f


def _fid_kid(fake: np.ndarray, real: np.ndarray, opts: EvalOptions) -> dict:
    kid, kid_std = kid_from_features(fake, real, opts.kid_subsets, opts.kid_subset_size, opts.seed)
    return {"fid": fid_from_features(fake, real), "kid": kid, "kid_std": kid_std,
            "n_fake": int(fake.shape[0]), "n_real": int(real.shape[0])}


def evaluate_translators(
    translators: dict[str, Translate],
    size: int,
    test_a: ImageSet,
    test_b: ImageSet,
    features: FeatureCache,
    pairs: PairSet | None = None,
    options: EvalOptions = EvalOptions(),
    progress: Progress | None = None,
    classifier=None,
    photo_translators: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> dict:
    """The scores of translators keyed by direction ("mask": A->B, "unmask": B->A)."""
    unknown = set(translators) - set(DIRECTIONS)
    if unknown or not translators:
        raise ConfigError(f"translators must be keyed by {', '.join(DIRECTIONS)}; got {sorted(translators)}")

    def stage(name):
        return (lambda done, total: progress(name, done, total)) if progress else None

    real_a = features.features(test_a.images, f"A:{test_a.folder}", size, stage("features testA"))
    real_b = features.features(test_b.images, f"B:{test_b.folder}", size, stage("features testB"))
    report: dict = {"image_size": size, "n_testA": len(test_a.images), "n_testB": len(test_b.images),
                    "reference": {"FID_A_vs_B": fid_from_features(real_a, real_b)}}
    success: dict = {}
    if classifier is not None:
        success["reference"] = {"testA_called_unmasked": classifier.rates(test_a.images, want_masked=False),
                                "testB_called_masked": classifier.rates(test_b.images, want_masked=True)}
    if "mask" in translators:
        fake_b = translate_all(translators["mask"], test_a.images, size, options.batch_size, stage("mask testA"))
        report["AB"] = _fid_kid(features.features(fake_b, progress=stage("features G_mask(testA)")), real_b, options)
        if classifier is not None:
            success["mask"] = classifier.rates(fake_b, want_masked=True)
    if "unmask" in translators:
        fake_a = translate_all(translators["unmask"], test_b.images, size, options.batch_size, stage("unmask testB"))
        report["BA"] = _fid_kid(features.features(fake_a, progress=stage("features G_unmask(testB)")), real_a, options)
        if classifier is not None:
            success["unmask"] = classifier.rates(fake_a, want_masked=False)
    if success:
        report["success"] = success
    if photo_translators:
        report["face_aware"] = _face_aware(photo_translators, size, test_a, test_b, real_a, real_b, features,
                                           options, classifier, stage)
    if pairs is not None:
        zones = pairs.zones or None
        paired: dict = {"n": len(pairs.names), "rejected": len(pairs.rejected),
                        "identity": {"unmask": score_pairs(pairs.masked, pairs.unmasked, zones),
                                     "mask": score_pairs(pairs.unmasked, pairs.masked, zones)}}
        if "unmask" in translators:
            out = translate_all(translators["unmask"], pairs.masked, size, options.batch_size, stage("unmask pairs"))
            paired["unmask"] = score_pairs(out, pairs.unmasked, zones)
        if "mask" in translators:
            out = translate_all(translators["mask"], pairs.unmasked, size, options.batch_size, stage("mask pairs"))
            paired["mask"] = score_pairs(out, pairs.masked, zones)
        report["paired"] = paired
    return report


def _face_aware(photo_translators, size, test_a, test_b, real_a, real_b, features, options, classifier, stage) -> dict:
    """Scores of whole photos translated as cyclemask-run does (see the module docstring)."""
    out: dict = {}
    for direction, key, images, real, want_masked in (("mask", "AB", test_a.images, real_b, True),
                                                      ("unmask", "BA", test_b.images, real_a, False)):
        if direction not in photo_translators:
            continue
        run = stage(f"{direction} photos, face-aware")
        fakes = []
        for i, im in enumerate(images):
            fakes.append(fit_size(photo_translators[direction](im), size))
            if run:
                run(i + 1, len(images))
        out[key] = _fid_kid(features.features(fakes, progress=stage(f"features {direction}, face-aware")), real, options)
        if classifier is not None:
            out[key]["success"] = classifier.rates(fakes, want_masked=want_masked)
    return out


def to_markdown(report: dict) -> str:
    """The report as a Markdown page: the paper's FID_AB / FID_BA, then KID and the paired scores."""
    lines = ["# cyclemask evaluation", ""]
    models = report.get("models", {})
    for d, m in models.items():
        lines.append(f"- {d}: `{m.get('path')}` ({m.get('backend', '')})")
    if "inception" in report:
        inc = report["inception"]
        std = "standard TF Inception 2015-12-05" if inc.get("standard") else "NON-STANDARD network: values not comparable with papers"
        lines.append(f"- Inception: `{inc.get('path')}` ({std})")
    lines += [f"- image size {report['image_size']}; testA {report['n_testA']} images, testB {report['n_testB']} images", ""]
    lines += ["| metric | A→B (mask) | B→A (unmask) |", "|---|---|---|"]

    def cell(d, key, fmt):
        return fmt.format(report[d][key]) if d in report else "-"

    lines.append(f"| FID | {cell('AB', 'fid', '{:.2f}')} | {cell('BA', 'fid', '{:.2f}')} |")
    lines.append(f"| KID x 100 | " + (f"{100 * report['AB']['kid']:.3f} ± {100 * report['AB']['kid_std']:.3f}" if "AB" in report else "-")
                 + " | " + (f"{100 * report['BA']['kid']:.3f} ± {100 * report['BA']['kid_std']:.3f}" if "BA" in report else "-") + " |")
    lines += ["", f"Reference without translation: FID(testA, testB) = {report['reference']['FID_A_vs_B']:.2f}.", ""]
    if "success" in report:
        sc = report["success"]
        lines += ["## Task success (masked / unmasked classifier)", "",
                  "| direction | success | n | reference (untranslated inputs) |", "|---|---|---|---|"]
        ref = sc.get("reference", {})
        if "mask" in sc:
            r = ref.get("testA_called_unmasked", {})
            lines.append(f"| mask: G_mask(testA) called masked | {100 * sc['mask']['success']:.1f} % | {sc['mask']['n']} | "
                         f"testA called unmasked: {100 * r.get('success', float('nan')):.1f} % |")
        if "unmask" in sc:
            r = ref.get("testB_called_masked", {})
            lines.append(f"| unmask: G_unmask(testB) called unmasked | {100 * sc['unmask']['success']:.1f} % | "
                         f"{sc['unmask']['n']} | testB called masked: {100 * r.get('success', float('nan')):.1f} % |")
        lines.append("")
    if "face_aware" in report:
        fa = report["face_aware"]

        def fcell(d: str, value) -> str:
            return value(fa[d]) if d in fa else "-"

        def fid(r):
            return f"{r['fid']:.2f}"

        def kid(r):
            return f"{100 * r['kid']:.3f}"

        def won(r):
            return f"{100 * r['success']['success']:.1f} %" if "success" in r else "-"

        pastes = fa.get("paste", {})
        pasted = ", ".join(f"{d} {pastes[d]}" for d in ("AB", "BA") if d in pastes) or "the mask zone"
        lines += [f"## Face-aware, as cyclemask-run gives it (detect, crop, translate, paste back: {pasted})", "",
                  "| metric | A→B (mask) | B→A (unmask) |", "|---|---|---|",
                  f"| FID | {fcell('AB', fid)} | {fcell('BA', fid)} |",
                  f"| KID x 100 | {fcell('AB', kid)} | {fcell('BA', kid)} |",
                  f"| success | {fcell('AB', won)} | {fcell('BA', won)} |", ""]
    if "paired" in report:
        p = report["paired"]
        lines += [f"## Paired photos ({p['n']} pairs, {p['rejected']} rejected)", "",
                  "| task | PSNR (dB) | SSIM | identity PSNR | identity SSIM |", "|---|---|---|---|---|"]
        for task, label in (("unmask", "unmask: G_unmask(with) vs without"), ("mask", "mask: G_mask(without) vs with")):
            if task in p:
                s, i = p[task], p["identity"][task]
                lines.append(f"| {label} | {s['psnr']:.2f} | {s['ssim']:.4f} | {i['psnr']:.2f} | {i['ssim']:.4f} |")
                if "zone_psnr" in s:
                    lines.append(f"| {task}, mask zone only | {s['zone_psnr']:.2f} | {s['zone_ssim']:.4f} | "
                                 f"{i['zone_psnr']:.2f} | {i['zone_ssim']:.4f} |")
        lines.append("")
    skipped = report.get("skipped", [])
    if skipped:
        lines += [f"{len(skipped)} unreadable file(s) skipped: " + ", ".join(s["file"] for s in skipped[:5]), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Models


@dataclass
class ModelSet:
    """Activated backends per direction and what they run; use as a context manager."""

    backends: dict
    size: int
    info: dict

    def translators(self) -> dict[str, Translate]:
        return {d: b.infer for d, b in self.backends.items()}

    def __enter__(self) -> "ModelSet":
        return self

    def __exit__(self, *exc) -> None:
        for b in self.backends.values():
            b.deactivate()


def open_models(
    mask_model: str | os.PathLike | None,
    unmask_model: str | os.PathLike | None,
    backend: str = "auto",
    device: str = "auto",
    image_size: int | None = None,
    ort_provider: str = "auto",
) -> ModelSet:
    """Activate a backend per direction (a bundle checkpoint may serve both).

    Every direction must run at one image size; a checkpoint that records none runs at
    `image_size` (default 256, the paper's)."""
    from cyclemask.artifacts import file_sha256
    from cyclemask.engine.backends import BackendOptions, create_backend

    paths = {d: p for d, p in (("mask", mask_model), ("unmask", unmask_model)) if p is not None}
    if not paths:
        raise ConfigError("no model given: pass --model (a bundle with both directions) or --mask-model / --unmask-model")
    opts = BackendOptions(device=device, image_size=image_size, ort_provider=ort_provider)
    backends, info = {}, {}
    try:
        for d, p in paths.items():
            be, why = create_backend(p, backend, d, opts)
            be.activate()
            backends[d] = be
            info[d] = {"path": str(p), "sha256": file_sha256(p), "backend": be.description, "why": why,
                       "image_size": be.image_size}
        sizes = {d: b.image_size for d, b in backends.items()}
        if len(set(sizes.values())) > 1:
            raise ConfigError(f"the two directions run at different image sizes ({sizes}); evaluate them separately "
                              "or pass --size for checkpoints")
    except BaseException:
        for b in backends.values():
            b.deactivate()
        raise
    return ModelSet(backends, next(iter(backends.values())).image_size, info)
