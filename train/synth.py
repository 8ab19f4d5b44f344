"""Masked twins of unmasked faces: mask templates warped onto each face's landmarks.

This is how MaskedFace-Net, the paper's domain B, was made from FFHQ, and it gives what the
paper's users came for without a GAN: pixel-aligned pairs of the same face with and without a
mask. For training it also gives a masked domain as large as the unmasked one, and pairs for an
L1 term (`cyclemask-train --paired-weight`).

Per face: YuNet's five landmarks give the six anchors of MaskTheFace's template files
(`cyclemask.face_detect.mask_anchors`: nose bridge, the cheeks by the ears, the jaw, under the chin);
a template view is chosen whose anchor layout matches the head's yaw best (front, left, right),
recoloured (a plain colour or a texture modulated by the template's own shading) or kept as it
is, warped onto the anchors by a homography (so it follows roll, scale and some perspective),
shaded by the face's own low-frequency lighting, and alpha-blended in. Every random choice comes
from a generator seeded with (seed, the image's relative path), so a re-run writes the same
twins and a single file can be reproduced on its own.

Template folders follow MaskTheFace's layout: RGBA PNGs and a `masks.cfg` with a section per
template holding `template: <path>` and `mask_a` ... `mask_f` as `x, y` pixel anchors. The
templates, the choice and the warp live in the core (`cyclemask.mask_templates`), which
`cyclemask-run --mask-method template` shares.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cyclemask import __version__
from cyclemask.errors import ConfigError, DataError, InputError
from cyclemask.face_detect import Face, FaceDetector, mask_anchors
from cyclemask.image_files import encode_image, list_images, read_image, write_bytes_atomic
# The warp itself lives in the core, where the runtime's --mask-method template uses it too;
# these names stay importable from here.
from cyclemask.mask_templates import (DEFAULT_KINDS, PALETTE, MaskChoice, Template, apply_mask,  # noqa: F401
                                      choose_mask, load_templates, load_textures)

log = logging.getLogger(__name__)

MANIFEST_NAME = "synth.json"
MANIFEST_FORMAT = "cyclemask.synth"
MASKED_DIR, UNMASKED_DIR = "with_mask", "without_mask"
# The exact matte of each twin's mask(s): 8-bit grey PNG, 255 = mask, same name with .png. It is
# what the mask segmenter learns and is scored against (cyclemask.restore_models).
MATTE_DIR = "mattes"
FORMATS = ("same", "jpg", "png")

# Skip reasons (the manifest's `reason` field).
UNREADABLE = "unreadable"
NO_FACE = "no_face"
FACE_TOO_SMALL = "face_too_small"
BAD_LANDMARKS = "bad_landmarks"

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SynthConfig:
    """Options of one `cyclemask-data synth` run (see the CLI's --help for each)."""

    source: str
    out: str
    templates: str
    textures: str | None = None
    kinds: tuple[str, ...] = DEFAULT_KINDS
    keep_colour: float = 0.35  # share of masks left in the template's own colour
    texture_share: float = 0.25  # share of recoloured masks that get a texture (when textures are given)
    min_face: int = 40
    score_threshold: float = 0.6
    detector: str | None = None
    all_faces: bool = False  # mask every usable face; default: only images with exactly one face
    image_format: str = "same"
    quality: int = 95
    seed: int = 0
    copy_sources: bool = True  # write without_mask/ copies beside with_mask/ (the pair layout)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", str(self.source))
        object.__setattr__(self, "out", str(self.out))
        object.__setattr__(self, "templates", str(self.templates))
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        if not kinds:
            raise ConfigError("kinds: name at least one mask kind (e.g. surgical)")
        object.__setattr__(self, "kinds", kinds)
        for name in ("keep_colour", "texture_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1]; got {v!r}")
        if not isinstance(self.min_face, int) or self.min_face < 8:
            raise ConfigError(f"min_face must be an integer >= 8; got {self.min_face!r}")
        if not 0.0 < self.score_threshold < 1.0:
            raise ConfigError(f"score_threshold must be in (0, 1); got {self.score_threshold!r}")
        if self.image_format not in FORMATS:
            raise ConfigError(f"image_format must be one of {', '.join(FORMATS)}; got {self.image_format!r}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"quality must be in [1, 100]; got {self.quality!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class SynthResult:
    out: Path
    manifest: dict
    written: int = 0
    skipped: int = 0


def _rng_for(seed: int, rel: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{rel}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _faces_to_mask(detector: FaceDetector, image: np.ndarray, config: SynthConfig) -> tuple[list[Face], str | None, str]:
    faces = detector.detect(image)
    if not faces:
        return [], NO_FACE, f"no face scored >= {config.score_threshold}"
    usable = [f for f in faces if f.size >= config.min_face]
    if not usable:
        return [], FACE_TOO_SMALL, f"largest face {max(f.size for f in faces):.0f} px < --min-face {config.min_face} px"
    if len(usable) > 1 and not config.all_faces:
        return [], "multiple_faces", f"{len(usable)} faces of >= {config.min_face} px (pass --all-faces to mask each)"
    return usable, None, ""


def synthesize(config: SynthConfig, progress: Progress | None = None) -> SynthResult:
    """Write `out/with_mask/<rel>` for every usable face image under `source` (and
    `out/without_mask/<rel>`, a copy of the source, when copy_sources), plus `out/synth.json`."""
    src, out = Path(config.source), Path(config.out)
    if not src.is_dir():
        raise ConfigError(f"--in {src}: not a folder")
    rs, ro = src.resolve(), out.resolve()
    if ro == rs or ro.is_relative_to(rs) or rs.is_relative_to(ro):
        raise ConfigError(f"--out {out} must lie outside the input folder {src} (and not contain it)")
    try:
        paths = list_images(src)
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    if not paths:
        raise DataError(f"{src}: no images found")
    templates = load_templates(config.templates, config.kinds)
    textures = load_textures(config.textures) if config.textures else []
    tex_by_name = dict(textures)
    detector = FaceDetector(config.detector, score_threshold=config.score_threshold)
    from cyclemask.artifacts import file_sha256

    pairs, skipped = [], []
    result = SynthResult(out=out, manifest={})
    for i, path in enumerate(paths):
        rel = path.relative_to(src).as_posix()
        try:
            image = read_image(path)
        except InputError as exc:
            skipped.append({"source": rel, "reason": UNREADABLE, "detail": str(exc)})
        else:
            faces, reason, detail = _faces_to_mask(detector, image, config)
            if reason is not None:
                skipped.append({"source": rel, "reason": reason, "detail": detail})
            else:
                rng = _rng_for(config.seed, rel)
                masked, records = image, []
                matte = np.zeros(image.shape[:2], np.float32)
                try:
                    for face in faces:
                        anchors = mask_anchors(face.landmarks)
                        template, choice = choose_mask(templates, textures, anchors, rng,
                                                       config.keep_colour, config.texture_share)
                        masked, alpha = apply_mask(masked, face.landmarks, template, choice, tex_by_name, rng)
                        matte = np.maximum(matte, alpha)
                        records.append({**face.to_dict(), **choice.to_dict(),
                                        "anchors": np.round(anchors, 2).tolist()})
                except InputError as exc:
                    skipped.append({"source": rel, "reason": BAD_LANDMARKS, "detail": str(exc)})
                else:
                    twin_rel = _out_rel(rel, config.image_format)
                    suffix = Path(twin_rel).suffix
                    try:
                        data = encode_image(masked, suffix, config.quality)
                    except InputError as exc:
                        skipped.append({"source": rel, "reason": UNREADABLE, "detail": f"cannot encode: {exc}"})
                    else:
                        write_bytes_atomic(out / MASKED_DIR / twin_rel, data)
                        matte_rel = matte_name(twin_rel)
                        write_bytes_atomic(out / MATTE_DIR / matte_rel,
                                           _encode_matte(matte))
                        if config.copy_sources:
                            source_data = (path.read_bytes() if twin_rel == rel
                                           else encode_image(image, suffix, config.quality))
                            write_bytes_atomic(out / UNMASKED_DIR / twin_rel, source_data)
                        result.written += 1
                        pairs.append({"source": rel, "twin": twin_rel, "matte": matte_rel, "faces": records})
        if progress:
            progress("synth", i + 1, len(paths))
    result.skipped = len(skipped)
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": 1,
        "status": "complete",
        "cyclemask_version": __version__,
        "options": config.to_dict(),
        "source_root": str(rs),
        "detector": {"path": str(detector.model_path), "sha256": file_sha256(detector.model_path)},
        "templates": sorted(t.name for t in templates),
        "textures": sorted(tex_by_name),
        "counts": {"found": len(paths), "written": result.written, "skipped": len(skipped),
                   "skipped_by_reason": _count_reasons(skipped)},
        "pairs": pairs,
        "skipped": skipped,
    }
    text = json.dumps(manifest, indent=1) + "\n"
    write_bytes_atomic(out / MANIFEST_NAME, text.encode())
    result.manifest = manifest
    return result


def _encode_matte(matte: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.clip(np.rint(matte * 255.0), 0, 255).astype(np.uint8))
    if not ok:
        raise InputError("cannot encode a matte as PNG")
    return buf.tobytes()


def matte_name(twin_rel: str) -> str:
    """The matte's path under mattes/ for a twin's path under with_mask/."""
    return str(Path(twin_rel).with_suffix(".png").as_posix())


def _out_rel(rel: str, image_format: str) -> str:
    if image_format == "same":
        return rel
    return str(Path(rel).with_suffix("." + image_format).as_posix())


def _count_reasons(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["reason"]] = counts.get(r["reason"], 0) + 1
    return dict(sorted(counts.items()))
