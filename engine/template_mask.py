"""`cyclemask-run --mask --mask-method template`: a mask template warped onto each face, no model.

The faces are found, followed and given landmarks exactly as for the generator
(`FaceProcessor`: YuNet, `--min-face`, tracking, rotated passes); then, instead of a crop for the
model, each face gets a MaskTheFace template with the warp, shading and colour choice of
`cyclemask-data synth` (`cyclemask.mask_templates`). The template's own alpha is the paste:
every pixel it does not cover keeps its value exactly.

One look per person: a followed face (a track) chooses its mask kind, colour or texture once,
from a generator seeded with (--mask-seed, the track's id, the frame it first appeared in), and
keeps them for as long as it is followed; only the view (front, left, right) follows the head's
turn, with a margin so it does not flicker between two views. Unrelated images (an image folder)
seed each face on (--mask-seed, the image's pixels, the face's place in the detector's list),
so a run is reproducible. No crop reaches the pipeline's backend: `TemplateBackend` stands in
for one and is never called.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cyclemask.errors import BackendError, ConfigError, InputError
from cyclemask.face_detect import mask_anchors
from cyclemask.mask_templates import (DEFAULT_KINDS, MaskChoice, Template, _face_yaw, _style_of, choose_mask, load_templates,
                                      load_textures, place_mask, recolour, shipped_templates_dir)

from .backends import SyncBackend
from .faces import FaceConfig, FaceProcessor, FaceStats, _usable_landmarks

METHODS = ("gan", "template")
# No crop is cut; the pipeline only needs the processor and its stand-in backend to agree.
SIZE = 256
# A view replaces the current one only when it fits the head's yaw better by this much
# (yaw: 0.5 frontal; the shipped side views sit near 0.2 and 0.8).
VIEW_MARGIN = 0.06


#: What `cyclemask-run` masks with when --mask-method is not given and a template can do the job
#: (see `default_method`): chosen by the held-out figures and the sheet in the README
#: (benchmarks/mask_method_quality.py).
DEFAULT_METHOD = "template"


def default_method(*, direction: str | None, model=None, aligned: bool = False, elsewhere: bool = False) -> str:
    """--mask-method when the user gave none: DEFAULT_METHOD for masking with the embedded model
    in face-aware mode on this machine (--demo included); "gan" where a template cannot serve
    (--unmask, --model, --aligned, --ray: `elsewhere`)."""
    if direction == "unmask" or model is not None or aligned or elsewhere:
        return "gan"
    return DEFAULT_METHOD


def model_only_fields() -> tuple[str, ...]:
    """The RunOptions fields that only matter where a model runs: the template method ignores
    them (`ignored_by_template` names those a user set)."""
    from .backends.options import OPTIONS

    return ("backend", "batch", "paste", "color_match") + tuple(o.run_field for o in OPTIONS if o.cli)


def ignored_by_template(given: list[str], defaulted: bool) -> str | None:
    """One warning line for the model-only options a user gave to a template run, else None."""
    if not given:
        return None
    return (f"{', '.join(given)}: no effect with the mask template method, which runs no model"
            + ("; add --mask-method gan to run the embedded generator" if defaulted else ""))


def check_method(method: str, *, direction: str | None = None, aligned: bool = False, model=None,
                 templates=None, textures=None, seed: int | None = None, kinds=None) -> None:
    """ConfigError naming the option when these options cannot go together."""
    if method not in METHODS:
        raise ConfigError(f"mask_method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "gan":
        given = [f for f, v in (("--mask-templates", templates), ("--mask-textures", textures),
                                ("--mask-seed", seed), ("--mask-kinds", kinds)) if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --mask-method template")
        return
    if direction == "unmask":
        raise ConfigError("--mask-method template puts masks on: it cannot --unmask (use --mask-method gan)")
    if aligned:
        raise ConfigError("--mask-method template places each mask from the face's landmarks: not with --aligned")
    if model is not None:
        raise ConfigError("--mask-method template runs no model: do not give --model")


@dataclass(frozen=True)
class TemplateConfig:
    """Where the templates come from and how a look is chosen (see `cyclemask.mask_templates`)."""

    templates: Path | None = None  # None: the set shipped with cyclemask
    textures: Path | None = None
    seed: int = 0
    kinds: tuple[str, ...] | None = None  # None: DEFAULT_KINDS (gas masks and the like left out, as in synth)
    keep_colour: float = 0.35  # share of masks left in the template's own colour (as synth)
    texture_share: float = 0.25  # share of recoloured masks that get a texture, when textures are given

    @property
    def folder(self) -> Path:
        return Path(self.templates) if self.templates is not None else shipped_templates_dir()


class MaskSet:
    """The loaded templates and textures; loading checks them, before any input is opened."""

    def __init__(self, config: TemplateConfig) -> None:
        self.config = config
        if config.templates is not None and not Path(config.templates).is_dir():
            raise ConfigError(f"--mask-templates {config.templates}: not a folder (MaskTheFace's layout: "
                              "RGBA PNGs and masks.cfg)")
        self.templates = load_templates(config.folder, tuple(config.kinds or DEFAULT_KINDS))
        self.textures = load_textures(config.textures) if config.textures is not None else []
        self.texture_by_name = dict(self.textures)

    def describe(self) -> str:
        kinds = sorted({t.kind for t in self.templates})
        where = "shipped with cyclemask" if self.config.templates is None else str(self.config.templates)
        tex = f", {len(self.textures)} textures" if self.textures else ""
        return f"{len(self.templates)} mask templates ({', '.join(kinds)}; {where}){tex}, seed {self.config.seed}"

    def backend(self) -> "TemplateBackend":
        return TemplateBackend("no model: mask templates warped onto each face's landmarks")

    def processor(self, face_config: FaceConfig, **kwargs) -> "TemplateMaskProcessor":
        return TemplateMaskProcessor(self, face_config, **kwargs)


class TemplateBackend(SyncBackend):
    """What the pipeline and the summary take for a backend; it is never given a crop."""

    name = "template"

    def __init__(self, description: str) -> None:
        super().__init__(None, "mask")
        self._description = description

    def _activate(self) -> None:
        self._image_size = SIZE

    def _deactivate(self) -> None:
        pass

    def _run(self, batch_u8: np.ndarray) -> np.ndarray:
        raise BackendError("the template method calls no model: a crop reached its stand-in backend")

    @property
    def description(self) -> str:
        return self._description

    @property
    def providers(self) -> list[str]:
        return ["OpenCV (CPU)"]


@dataclass
class _Look:
    """One person's mask: the kind, colour and texture stay; the view follows the head."""

    style: str  # e.g. surgical_blue: the views of this style are the candidates
    choice: MaskChoice  # its colour / texture (`template` names the current view)
    seed: bytes
    view: Template
    rgba: np.ndarray  # the current view, recoloured


@dataclass
class TemplateStats(FaceStats):
    no_landmarks: int = 0  # faces left as they were: the detector gave no usable landmarks
    failed: int = 0  # faces whose landmarks no template could be fitted to

    def summary(self, min_face: int) -> str:
        held = f", {self.held} of them held by tracking" if self.held else ""
        held += f"; {self.recovered} found again on rotated copies" if self.recovered else ""
        held += f"; {self.upright} rolled, looked at again upright" if self.upright else ""
        small = f"; {self.too_small} under --min-face {min_face} px left as they were" if self.too_small else ""
        small += f"; {self.implausible} with implausible landmarks left as they were" if self.implausible else ""
        small += (f"; {self.unconfirmed} of new faces not yet confirmed by a second frame left as they were"
                  if self.unconfirmed else "")
        skipped = self.no_landmarks + self.failed
        left = f"; {skipped} left as they were (no usable landmarks)" if skipped else ""
        return (f"{self.found} found in {self.frames_with_faces} of {self.frames} frames{small}; "
                f"{self.translated} given a template mask{held}{left}")


def _rng(*parts) -> np.random.Generator:
    digest = hashlib.sha256(b"\0".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _frame_digest(image: np.ndarray) -> bytes:
    # A sparse sample is plenty to tell frames apart and costs well under a millisecond.
    return hashlib.sha256(np.ascontiguousarray(image[::7, ::7]).tobytes()).digest()[:16]


class TemplateMaskProcessor(FaceProcessor):
    """Faces as `FaceProcessor` finds and follows them; a template mask on each, no crops."""

    def __init__(self, masks: MaskSet, config: FaceConfig | None = None, **kwargs) -> None:
        super().__init__(SIZE, config, **kwargs)
        self.masks = masks
        self.stats = TemplateStats()
        self._looks: dict[int, _Look] = {}  # track id -> look (tracked videos)

    # -- choosing a look (decode thread) --------------------------------------------------------
    def _new_look(self, anchors: np.ndarray, seed: bytes) -> _Look:
        m, c = self.masks, self.masks.config
        template, choice = choose_mask(m.templates, m.textures, anchors, _rng(seed, "choice"),
                                       c.keep_colour, c.texture_share)
        return self._with_view(_Look(_style_of(template.name), choice, seed, template, template.rgba), template)

    def _with_view(self, look: _Look, view: Template) -> _Look:
        choice = MaskChoice(view.name, look.choice.colour, look.choice.texture)
        # Its own generator per view: a texture's offset is the same whenever this view returns.
        rgba = recolour(view.rgba, choice, self.masks.texture_by_name, _rng(look.seed, "view", view.name))
        return _Look(look.style, choice, look.seed, view, rgba)

    def _follow_head(self, look: _Look, anchors: np.ndarray) -> _Look:
        yaw = _face_yaw(anchors)
        views = [t for t in self.masks.templates if _style_of(t.name) == look.style]
        best = min(views, key=lambda t: abs(t.yaw - yaw))
        if best is look.view or abs(best.yaw - yaw) + VIEW_MARGIN >= abs(look.view.yaw - yaw):
            return look
        return self._with_view(look, best)

    # -- FrameProcessor --------------------------------------------------------------------------
    def prepare(self, image: np.ndarray, ahead: Any = None) -> tuple[list[np.ndarray], Any]:
        c, st = self.config, self.stats
        faces = self._faces_for(image, ahead)
        t0 = time.perf_counter()
        st.frames += 1
        digest = _frame_digest(image)
        tracked = self._follow(image, faces, ahead)
        if self.tracker is not None:
            idents: list[int | None] = self.tracker.idents()
            self._looks = {i: v for i, v in self._looks.items() if i in idents}
        else:
            idents = [None] * len(tracked)
        state = []
        for k, ((box, held, landmarks), ident) in enumerate(zip(tracked, idents, strict=True)):
            if not _usable_landmarks(landmarks):
                st.no_landmarks += 1
                continue
            try:
                anchors = mask_anchors(landmarks)
            except InputError:
                st.no_landmarks += 1
                continue
            look = self._looks.get(ident) if ident is not None else None
            if look is None:
                seed = ("track", ident, digest) if ident is not None else ("image", digest, k)
                look = self._new_look(anchors, _rng_seed(self.masks.config.seed, *seed))
            else:
                look = self._follow_head(look, anchors)
            if ident is not None:
                self._looks[ident] = look
            state.append((landmarks, look, box))
            st.held += int(held)
        st.frames_with_faces += int(bool(state))
        st.crop_s += time.perf_counter() - t0
        return [], state

    def finish(self, image: np.ndarray, state: Any, outputs: list[np.ndarray]) -> np.ndarray:
        if not state:
            return image  # no face: the frame as it came, byte for byte
        t0 = time.perf_counter()
        out = image
        for landmarks, look, _ in state:
            try:
                out, _ = place_mask(out, landmarks, look.rgba, look.view.anchors)
            except InputError:
                self.stats.failed += 1
                continue
            self.stats.translated += 1
        self.stats.paste_s += time.perf_counter() - t0
        return out


    def mattes(self, image: np.ndarray, state: Any) -> list[tuple[Any, np.ndarray, np.ndarray]]:
        """(face box, landmarks, the mask's alpha [H, W] float32) of each face `finish` masks,
        in its order (for `Masker.faces`)."""
        out = []
        for landmarks, look, box in state:
            try:
                _, alpha = place_mask(image, landmarks, look.rgba, look.view.anchors)
            except InputError:
                continue
            out.append((box, np.asarray(landmarks, np.float64), alpha))
        return out


def _rng_seed(seed: int, *parts) -> bytes:
    return hashlib.sha256(repr((int(seed),) + tuple(parts)).encode()).digest()
