"""Masked twins of unmasked faces: mask templates warped onto each face's landmarks.

This is how MaskedFace-Net, the paper's domain B, was made from FFHQ, and it gives what the
paper's users came for without a GAN: pixel-aligned pairs of the same face with and without a
mask. For training it also gives a masked domain as large as the unmasked one, and pairs for an
L1 term (`cyclemask-train --paired-weight`).

Per face: YuNet's five landmarks give the six anchors of MaskTheFace's template files
(`cyclemask.faces.mask_anchors`: nose bridge, the cheeks by the ears, the jaw, under the chin);
a template view is chosen whose anchor layout matches the head's yaw best (front, left, right),
recoloured (a plain colour or a texture modulated by the template's own shading) or kept as it
is, warped onto the anchors by a homography (so it follows roll, scale and some perspective),
shaded by the face's own low-frequency lighting, and alpha-blended in. Every random choice comes
from a generator seeded with (seed, the image's relative path), so a re-run writes the same
twins and a single file can be reproduced on its own.

Template folders follow MaskTheFace's layout: RGBA PNGs and a `masks.cfg` with a section per
template holding `template: <path>` and `mask_a` ... `mask_f` as `x, y` pixel anchors.
"""

from __future__ import annotations

import configparser
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cyclemask import __version__
from cyclemask.errors import ConfigError, DataError, InputError
from cyclemask.faces import ANCHOR_NAMES, Face, FaceDetector, mask_anchors
from cyclemask.imageio import encode_image, list_images, read_image, write_bytes_atomic

log = logging.getLogger(__name__)

MANIFEST_NAME = "synth.json"
MANIFEST_FORMAT = "cyclemask.synth"
MASKED_DIR, UNMASKED_DIR = "with_mask", "without_mask"
# The exact matte of each twin's mask(s): 8-bit grey PNG, 255 = mask, same name with .png. It is
# what the mask segmenter learns and is scored against (cyclemask.restore_models).
MATTE_DIR = "mattes"
DEFAULT_KINDS = ("surgical", "cloth", "KN95", "N95")
FORMATS = ("same", "jpg", "png")

# Skip reasons (the manifest's `reason` field).
UNREADABLE = "unreadable"
NO_FACE = "no_face"
FACE_TOO_SMALL = "face_too_small"
BAD_LANDMARKS = "bad_landmarks"

# Colours a recoloured mask takes (RGB, 0..1): the common plain masks.
PALETTE = {
    "white": (0.93, 0.93, 0.92), "light_blue": (0.55, 0.75, 0.92), "blue": (0.20, 0.40, 0.75),
    "navy": (0.10, 0.14, 0.30), "black": (0.08, 0.08, 0.09), "grey": (0.50, 0.51, 0.53),
    "green": (0.45, 0.75, 0.68), "pink": (0.93, 0.62, 0.72), "red": (0.70, 0.12, 0.14),
    "beige": (0.85, 0.76, 0.62), "yellow": (0.93, 0.82, 0.30), "purple": (0.45, 0.30, 0.62),
}

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
# Templates


@dataclass(frozen=True)
class Template:
    name: str
    kind: str  # the section name without a view or colour suffix, e.g. "surgical"
    rgba: np.ndarray  # uint8 [H, W, 4], RGB order
    anchors: np.ndarray  # float32 [6, 2]

    @property
    def yaw(self) -> float:
        """Where the top centre sits between the top corners (0.5 for a front view)."""
        a, b, c = self.anchors[0], self.anchors[1], self.anchors[2]
        return float((b[0] - a[0]) / max(c[0] - a[0], 1e-6))


def _style_of(name: str) -> str:
    """A template's name without its view: surgical_blue_left -> surgical_blue."""
    for suffix in ("_left", "_right"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _kind_of(name: str) -> str:
    base = _style_of(name)
    for colour in ("_blue", "_green"):
        if base.endswith(colour):
            base = base[: -len(colour)]
    return base


def load_templates(folder: str | os.PathLike, kinds: tuple[str, ...] | None = None) -> list[Template]:
    """Templates listed in `folder/masks.cfg` whose image is in `folder`; kinds filters them by
    kind (surgical: every colour and view) or by style (surgical_blue: its views only)."""
    root = Path(folder)
    cfg_path = root / "masks.cfg"
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path}: no such file (a template folder needs masks.cfg, as MaskTheFace's has)")
    parser = configparser.ConfigParser()
    try:
        parser.read_string(cfg_path.read_text())
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{cfg_path}: not a readable masks.cfg ({str(exc).splitlines()[0]})") from None
    import cv2

    out, problems = [], []
    for name in parser.sections():
        sec = parser[name]
        kind = _kind_of(name)
        if kinds is not None and kind not in kinds and _style_of(name) not in kinds:
            continue
        try:
            image = root / Path(sec["template"]).name
            anchors = np.array([[float(v) for v in sec[f"mask_{k}"].split(",")] for k in ANCHOR_NAMES], np.float32)
        except (KeyError, ValueError) as exc:
            problems.append(f"[{name}]: {exc}")
            continue
        rgba = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
            problems.append(f"[{name}]: {image} is missing or not an RGBA image")
            continue
        out.append(Template(name, kind, np.ascontiguousarray(rgba[..., [2, 1, 0, 3]]), anchors))
    for p in problems:
        log.warning("%s: template skipped: %s", cfg_path, p)
    if not out:
        have = sorted({_kind_of(n) for n in parser.sections()} | {_style_of(n) for n in parser.sections()})
        raise ConfigError(f"{cfg_path}: no usable template of the kinds {', '.join(kinds or ())} "
                          f"(the file has: {', '.join(have) or 'none'})")
    return out


def load_textures(folder: str | os.PathLike | None) -> list[tuple[str, np.ndarray]]:
    """Every image under folder (recursive) as (relative name, uint8 RGB)."""
    if folder is None:
        return []
    root = Path(folder)
    try:
        paths = list_images(root)
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    out = []
    for p in paths:
        try:
            out.append((p.relative_to(root).as_posix(), read_image(p)))
        except InputError as exc:
            log.warning("texture skipped: %s", exc)
    if not out:
        raise ConfigError(f"{root}: no readable texture images")
    return out


# ---------------------------------------------------------------------------------------------
# Putting one mask on one face


@dataclass(frozen=True)
class MaskChoice:
    template: str
    colour: str  # "template", a PALETTE name, or "texture"
    texture: str | None = None

    def to_dict(self) -> dict:
        return {"template": self.template, "colour": self.colour, "texture": self.texture}


def _face_yaw(anchors: np.ndarray) -> float:
    a, b, c = anchors[0], anchors[1], anchors[2]
    across = c - a
    return float(np.dot(b - a, across) / max(float(np.dot(across, across)), 1e-6))


def choose_mask(templates: list[Template], textures: list[tuple[str, np.ndarray]], anchors: np.ndarray,
                rng: np.random.Generator, keep_colour: float, texture_share: float) -> tuple[Template, MaskChoice]:
    """A kind at random, then its view closest to the face's yaw, then a colour or texture."""
    kinds = sorted({t.kind for t in templates})
    kind = kinds[int(rng.integers(len(kinds)))]
    yaw = _face_yaw(anchors)
    views = [t for t in templates if t.kind == kind]
    best = min(abs(t.yaw - yaw) for t in views)
    # Colour variants of the best view (surgical, surgical_blue, ...) are equally good.
    tied = [t for t in views if abs(t.yaw - yaw) <= best + 1e-6]
    template = tied[int(rng.integers(len(tied)))]
    u = float(rng.random())
    if u < keep_colour:
        return template, MaskChoice(template.name, "template")
    if textures and float(rng.random()) < texture_share:
        name = textures[int(rng.integers(len(textures)))][0]
        return template, MaskChoice(template.name, "texture", name)
    names = sorted(PALETTE)
    return template, MaskChoice(template.name, names[int(rng.integers(len(names)))])


def _recolour(rgba: np.ndarray, choice: MaskChoice, textures: dict[str, np.ndarray],
              rng: np.random.Generator) -> np.ndarray:
    """The template with a new colour or texture, keeping its folds and edges as shading."""
    if choice.colour == "template":
        return rgba
    import cv2

    rgb = rgba[..., :3].astype(np.float32) / 255.0
    alpha = rgba[..., 3] > 127
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    ref = float(np.percentile(grey[alpha], 90)) if alpha.any() else 1.0
    shading = np.clip(grey / max(ref, 1e-3), 0.0, 1.15)[..., None]
    if choice.colour == "texture":
        tex = textures[choice.texture].astype(np.float32) / 255.0
        h, w = rgba.shape[:2]
        # About four repeats across the mask, at a random offset.
        scale = (w / 4.0) / max(tex.shape[1], 1)
        tex = cv2.resize(tex, (max(2, round(tex.shape[1] * scale)), max(2, round(tex.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
        reps = (h // tex.shape[0] + 2, w // tex.shape[1] + 2, 1)
        tiled = np.tile(tex, reps)
        oy, ox = int(rng.integers(tex.shape[0])), int(rng.integers(tex.shape[1]))
        colour = tiled[oy:oy + h, ox:ox + w]
    else:
        colour = np.array(PALETTE[choice.colour], np.float32)[None, None, :]
    new = np.clip(colour * shading, 0.0, 1.0)
    out = rgba.copy()
    out[..., :3] = np.rint(new * 255.0).astype(np.uint8)
    return out


def _lighting(image: np.ndarray, zone: np.ndarray, face_size: float) -> np.ndarray:
    """Per-pixel gain [H, W, 1] that makes a mask take the face's exposure and its shadows."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    sigma = max(2.0, face_size / 6.0)
    smooth = cv2.GaussianBlur(grey, (0, 0), sigma)
    inside = smooth[zone] if zone.any() else smooth.ravel()
    level = float(np.median(inside))
    # Exposure: a well-lit face (median grey ~150) leaves the mask as it is; a dark photo darkens it.
    exposure = float(np.clip(level / 150.0, 0.3, 1.15)) ** 0.8
    relative = np.clip(smooth / max(level, 1.0), 0.6, 1.3) ** 0.6  # side light, shadow under the chin
    return (exposure * relative)[..., None]


def apply_mask(image: np.ndarray, face_landmarks, template: Template, choice: MaskChoice,
               textures: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The image with the mask on this face, and the mask's alpha [H, W] float32 in 0..1."""
    import cv2

    anchors = mask_anchors(face_landmarks)
    rgba = _recolour(template.rgba, choice, textures, rng)
    src = template.anchors.astype(np.float64)
    dst = anchors.astype(np.float64)
    # Shrink the template near its final size first (area averaging): a homography that
    # downscales 5x by itself would alias the fine print and the edges.
    target_w = float(np.linalg.norm(dst[2] - dst[0]))
    scale = min(1.0, 1.5 * target_w / max(float(np.linalg.norm(src[2] - src[0])), 1.0))
    if scale < 1.0:
        rgba = cv2.resize(rgba, (max(2, round(rgba.shape[1] * scale)), max(2, round(rgba.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
        src = src * scale
    H, _ = cv2.findHomography(src, dst, 0)
    if H is None or not np.isfinite(H).all():
        raise InputError("the mask template cannot be fitted to these landmarks")
    h, w = image.shape[:2]
    # Premultiplied warp: colour and alpha interpolate together, so edges get no dark fringe.
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    premul = np.concatenate([rgba[..., :3].astype(np.float32) / 255.0 * alpha, alpha], axis=2)
    warped = cv2.warpPerspective(premul, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    a = np.clip(warped[..., 3], 0.0, 1.0)
    colour = np.where(a[..., None] > 1e-4, warped[..., :3] / np.maximum(a[..., None], 1e-4), 0.0)
    face_size = float(np.linalg.norm(dst[4] - dst[1]))
    colour = np.clip(colour * _lighting(image, a > 0.5, face_size), 0.0, 1.0)
    base = image.astype(np.float32) / 255.0
    out = base + a[..., None] * (colour - base)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8), a


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
