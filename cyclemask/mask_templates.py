"""Mask templates warped onto a face's landmarks: what `cyclemask-data synth` makes its masked
twins with, and what `cyclemask-run --mask-method template` puts on each face.

Per face: YuNet's five landmarks give the six anchors of MaskTheFace's template files
(`cyclemask.face_detect.mask_anchors`: nose bridge, the cheeks by the ears, the jaw, under the chin);
a template view is chosen whose anchor layout matches the head's yaw best (front, left, right),
recoloured (a plain colour or a texture modulated by the template's own shading) or kept as it
is, warped onto the anchors by a homography (so it follows roll, scale and some perspective),
shaded by the face's own low-frequency lighting, and alpha-blended in. Every random choice comes
from the generator the caller passes, so the caller decides what a choice is seeded on (synth: the
image's path; the runtime: the face's track).

Template folders follow MaskTheFace's layout: RGBA PNGs and a `masks.cfg` with a section per
template holding `template: <path>` and `mask_a` ... `mask_f` as `x, y` pixel anchors. A small
downscaled set ships with cyclemask (`shipped_templates_dir`; its licence and origin beside it).
"""

from __future__ import annotations

import configparser
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cyclemask.errors import ConfigError, InputError
from cyclemask.face_detect import ANCHOR_NAMES, mask_anchors
from cyclemask.image_files import list_images, read_image

log = logging.getLogger(__name__)

DEFAULT_KINDS = ("surgical", "cloth", "KN95", "N95")

# Colours a recoloured mask takes (RGB, 0..1): the common plain masks.
PALETTE = {
    "white": (0.93, 0.93, 0.92), "light_blue": (0.55, 0.75, 0.92), "blue": (0.20, 0.40, 0.75),
    "navy": (0.10, 0.14, 0.30), "black": (0.08, 0.08, 0.09), "grey": (0.50, 0.51, 0.53),
    "green": (0.45, 0.75, 0.68), "pink": (0.93, 0.62, 0.72), "red": (0.70, 0.12, 0.14),
    "beige": (0.85, 0.76, 0.62), "yellow": (0.93, 0.82, 0.30), "purple": (0.45, 0.30, 0.62),
}


def shipped_templates_dir() -> Path:
    """The templates shipped with cyclemask (MaskTheFace's, downscaled; MIT, licence beside them)."""
    return Path(__file__).resolve().parent / "assets" / "mask_templates"


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


def recolour(rgba: np.ndarray, choice: MaskChoice, textures: dict[str, np.ndarray],
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
    sigma = _lighting_sigma(face_size)
    smooth = cv2.GaussianBlur(grey, (0, 0), sigma)
    inside = smooth[zone] if zone.any() else smooth.ravel()
    level = float(np.median(inside))
    # Exposure: a well-lit face (median grey ~150) leaves the mask as it is; a dark photo darkens it.
    exposure = float(np.clip(level / 150.0, 0.3, 1.15)) ** 0.8
    relative = np.clip(smooth / max(level, 1.0), 0.6, 1.3) ** 0.6  # side light, shadow under the chin
    return (exposure * relative)[..., None]


def _lighting_sigma(face_size: float) -> float:
    return max(2.0, face_size / 6.0)


LUMA = np.array([[0.299], [0.587], [0.114]], np.float32)
#: Mean |R-G| + |G-B| (0..255 levels) under which a photo counts as black-and-white; JPEG
#: chroma noise on grey photos stays near 0-3, the least coloured colour photos of the
#: training split lie above 5.
GREY_TOLERANCE = 4.0


def is_grey(image: np.ndarray) -> bool:
    """Whether an RGB uint8 image (or region) is black-and-white."""
    if image.ndim != 3 or image.shape[2] < 3 or image.size == 0:
        return True
    im = image[..., :3].astype(np.int16)
    spread = np.abs(im[..., 0] - im[..., 1]).mean() + np.abs(im[..., 1] - im[..., 2]).mean()
    return bool(spread < GREY_TOLERANCE)


def place_mask(image: np.ndarray, face_landmarks, rgba: np.ndarray,
               template_anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image with the (already coloured) template `rgba` warped onto this face, and the
    mask's alpha [H, W] float32 in 0..1. Pixels where the alpha is 0 keep their values exactly."""
    import cv2

    anchors = mask_anchors(face_landmarks)
    src = np.asarray(template_anchors, np.float64)
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
    face_size = float(np.linalg.norm(dst[4] - dst[1]))
    # Work on the region the warped template covers, not the whole frame: on a 720p frame with
    # one face that is a few percent of the pixels. The lighting is measured on that region
    # grown by the blur's reach, so inside it the result is what the whole frame would give.
    th, tw = rgba.shape[:2]
    corners = cv2.perspectiveTransform(np.array([[[0, 0], [tw, 0], [tw, th], [0, th]]], np.float64), H)[0]
    if not np.isfinite(corners).all():
        raise InputError("the mask template cannot be fitted to these landmarks")
    x0, y0 = (max(0, min(v, n)) for v, n in zip(np.floor(corners.min(axis=0)).astype(np.int64) - 1, (w, h)))
    x1, y1 = (max(0, min(v, n)) for v, n in zip(np.ceil(corners.max(axis=0)).astype(np.int64) + 2, (w, h)))
    alpha_full = np.zeros((h, w), np.float32)
    if x1 <= x0 or y1 <= y0:
        return image.copy(), alpha_full
    # Premultiplied warp: colour and alpha interpolate together, so edges get no dark fringe.
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    premul = np.concatenate([rgba[..., :3].astype(np.float32) / 255.0 * alpha, alpha], axis=2)
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    warped = cv2.warpPerspective(premul, shift @ H, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT)
    a = np.clip(warped[..., 3], 0.0, 1.0)
    colour = np.where(a[..., None] > 1e-4, warped[..., :3] / np.maximum(a[..., None], 1e-4), 0.0)
    reach = int(math.ceil(4.0 * _lighting_sigma(face_size))) + 2
    lx0, ly0, lx1, ly1 = max(0, x0 - reach), max(0, y0 - reach), min(w, x1 + reach), min(h, y1 + reach)
    zone = np.zeros((ly1 - ly0, lx1 - lx0), bool)
    inner = (slice(y0 - ly0, y1 - ly0), slice(x0 - lx0, x1 - lx0))
    zone[inner] = a > 0.5
    gain = _lighting(image[ly0:ly1, lx0:lx1], zone, face_size)[inner]
    colour = np.clip(colour * gain, 0.0, 1.0)
    base = image[y0:y1, x0:x1].astype(np.float32) / 255.0
    if is_grey(image[ly0:ly1, lx0:lx1]):
        # A black-and-white photo cannot hold a blue mask: keep the mask's brightness only.
        colour = np.repeat(colour @ LUMA, 3, axis=2)
    blended = base + a[..., None] * (colour - base)
    out = image.copy()
    out[y0:y1, x0:x1] = np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
    alpha_full[y0:y1, x0:x1] = a
    return out, alpha_full


def apply_mask(image: np.ndarray, face_landmarks, template: Template, choice: MaskChoice,
               textures: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The image with the mask on this face, and the mask's alpha [H, W] float32 in 0..1."""
    return place_mask(image, face_landmarks, recolour(template.rgba, choice, textures, rng), template.anchors)
