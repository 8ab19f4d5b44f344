"""`cyclemask-run --demo`: mask the public-domain portraits that ship inside the dependencies,
unmask the result again, write both and a before/after sheet.

The portrait (matplotlib's sample_data/grace_hopper.jpg) needs nothing downloaded and not
../shared. The mask pass follows `cyclemask-run --mask`'s method (options.mask_method): by
default a mask template warped onto the face (engine/template_mask.py, the same processor and
face settings as `--images --mask`, so the masked portrait is what that run writes), or the mask
generator with --mask-method gan. The unmask pass runs the embedded unmask model (the default
unmask method) unless a checkpoint bundle is given. Each pass runs through the same `Pipeline`
and face-aware processor (engine/faces.py: square crop with margin, translate, mask-zone or
whole-crop paste-back) as a normal run, fed from memory (engine/memory.py): there is one
inference path.

Faces are found as in a normal face-aware run: YuNet (shipped with the package, or
--face-detector / $CYCLEMASK_FACE_DETECTOR). The unmask pass detects again on the masked result,
as a run on a masked photo would, and falls back to the input's faces where the detector misses
the masked face.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cyclemask import DIRECTIONS
from cyclemask.errors import ConfigError, InputError
from cyclemask.face_detect import Face, FaceDetector, crop_square, resize_square, square_crop_box
from cyclemask.image_files import read_image, write_bytes_atomic, write_image

from .backends import Backend, create_backend
from .faces import FaceConfig, FaceProcessor
from .memory import MemorySink, MemorySource
from .pipeline import PipelineConfig, run_pipeline
from .run import RunOptions, face_detector_path, make_processor, paste_for

log = logging.getLogger(__name__)

SHEET_NAME = "before_after.png"
CLOSE_UP = 256  # side of the face close-ups on the sheet, in pixels


# -------------------------------------------------------------------------------------------
# Portraits and their faces


@dataclass(frozen=True)
class Portrait:
    """A public-domain photo shipped inside a dependency."""

    name: str
    path: Path
    credit: str


def demo_portraits() -> list[Portrait]:
    """The portraits --demo uses (those present in this environment)."""
    import matplotlib

    found = []
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.is_file():
        found.append(Portrait("grace_hopper", hopper,
                              "Grace Hopper, public domain (US Navy photo), from matplotlib's sample data"))
    return found


class FixedFaces:
    """A detector that returns faces already known (the face-aware processor's detector slot)."""

    def __init__(self, faces: list[Face]) -> None:
        self.faces = list(faces)

    def detect(self, image_rgb: np.ndarray, retry: bool = True) -> list[Face]:
        return list(self.faces)


# -------------------------------------------------------------------------------------------
# The demo run


@dataclass
class DemoReport:
    out_dir: Path
    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    faces: dict[str, int] = field(default_factory=dict)
    detector: str = ""
    reused: dict[str, int] = field(default_factory=dict)  # unmask pass: faces not found on the masked image
    models: dict[str, str] = field(default_factory=dict)
    backends: dict[str, str] = field(default_factory=dict)
    mask_method: str = "gan"  # what masked: "template" (no model) or "gan" (the mask generator)

    @property
    def ok(self) -> bool:
        return not self.failures


def output_names(portraits: list[Portrait]) -> list[str]:
    names = []
    for p in portraits:
        names += [f"{p.name}_masked.png", f"{p.name}_unmasked.png"]
    return names + [SHEET_NAME]


def _faces_on_masked(found: list[Face], faces: list[Face]) -> tuple[list[Face], int]:
    """The faces to unmask: those detected on the masked image, plus each input face the
    detector missed there (a masked face scores lower), so the demo always shows both passes;
    and how many were such misses."""
    from .faces import iou

    out = [f for f in found if any(iou(f.box, g.box) >= 0.3 for g in faces)]
    missed = [g for g in faces if not any(iou(f.box, g.box) >= 0.3 for f in out)]
    return out + missed, len(missed)


def _translate(backend: Backend, image: np.ndarray, faces: list[Face], config: FaceConfig, batch: int) -> np.ndarray:
    """One image through the pipeline (in memory) with its faces given."""
    processor = FaceProcessor(backend.image_size, config, detector_factory=lambda: FixedFaces(faces))
    return _run_one(backend, processor, image, batch)


def _run_one(backend: Backend, processor, image: np.ndarray, batch: int) -> np.ndarray:
    sink = MemorySink()
    report = run_pipeline(MemorySource([("image", image)]), processor, backend, sink,
                          PipelineConfig(batch_size=min(batch, backend.max_batch or batch)))
    if not report.ok:
        raise InputError("; ".join(message for _, message in report.failures) or report.error or "the demo run failed")
    return sink.images["image"]


def run_demo(
    out_dir: str | os.PathLike,
    options: RunOptions | None = None,
    *,
    models: dict[str, Path] | None = None,
    portraits: list[Portrait] | None = None,
    progress: Callable[[str], None] | None = None,
) -> DemoReport:
    """Mask each portrait, unmask the masked result, write both and a before/after sheet.

    options.mask_method says how the mask pass masks: "template" (the default of RunOptions with
    no model) places mask templates exactly as `cyclemask-run --images --mask` does and needs no
    mask model; "gan" runs the mask generator.
    models: {"unmask": path}, plus "mask" for the generator (a bundle may be named for both);
    default: the shipped demo models for the backend. The detector is options.face_detector, else
    $CYCLEMASK_FACE_DETECTOR, else the one shipped with cyclemask; options.paste says how faces
    are pasted back. Existing outputs are an error unless options.overwrite; nothing is written
    before every model has loaded.
    """
    from cyclemask.demo_model import default_model

    options = options or RunOptions()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    portraits = demo_portraits() if portraits is None else list(portraits)
    if not portraits:
        raise InputError("no demo portrait found: matplotlib's sample_data/grace_hopper.jpg is missing "
                         "from this environment (is matplotlib installed in full?)")
    existing = [n for n in output_names(portraits) if (out / n).exists()]
    if existing and not options.overwrite:
        raise ConfigError(f"--out {out}: already holds {', '.join(existing)}; pass --overwrite to replace them")
    template = options.mask_method == "template"
    needed = ("unmask",) if template else DIRECTIONS
    if models and template and "mask" in models:
        raise ConfigError("mask_method template runs no mask model: give only models['unmask'], "
                          "or mask_method 'gan' to mask with models['mask']")
    models = dict(models) if models else {d: default_model(d, options.backend) for d in needed}
    missing = [d for d in needed if d not in models]
    if missing:
        raise ConfigError(f"the demo needs a model for each direction; missing: {', '.join(missing)}")
    # Loaded (and checked) before anything is written, as the models are.
    masks = options.template_masks()
    config = FaceConfig(track=False, margin=options.margin, paste=paste_for(options.paste, None))

    def paste_config(c: FaceConfig, backend: Backend) -> FaceConfig:  # --paste auto follows each graph
        return dataclasses.replace(c, paste=paste_for(options.paste, backend))
    report = DemoReport(out, mask_method=options.mask_method)
    say = progress or (lambda msg: None)

    detector = FaceDetector(options.face_detector, score_threshold=config.score_threshold, retry_pad=0.5)

    backends = {}
    if masks is not None:
        backends["mask"] = masks.backend()
        report.models["mask"] = f"no model: {masks.describe()}"
        report.backends["mask"] = "--mask-method template"
    for d in needed:
        be, reason = create_backend(models[d], options.backend, d, options.backend_options())
        backends[d] = be
        report.models[d] = str(models[d])
        report.backends[d] = reason
    rows = []
    try:
        for be in backends.values():
            be.activate()
        for d, be in backends.items():
            report.backends[d] = f"{be.description}  [{report.backends[d]}]"
        pasted = describe_pastes({d: "template" if d == "mask" and template else paste_for(options.paste, be)
                                  for d, be in backends.items()})
        report.detector = f"YuNet ({detector.model_path}), {pasted}"
        out.mkdir(parents=True, exist_ok=True)
        for p in portraits:
            say(p.name)
            try:
                image = read_image(p.path)
            except InputError as exc:
                report.failures.append(str(exc))
                continue
            faces = [f for f in detector.detect(image) if f.size >= config.min_face]
            report.faces[p.name] = len(faces)
            if not faces:
                report.failures.append(f"{p.path}: no face found")
                continue
            if template:
                # As `cyclemask-run --images --mask` runs it: its own face settings and detection.
                processor = make_processor(backends["mask"], options.face_config(video=False),
                                           face_detector_path(options), masks=masks)
                masked = _run_one(backends["mask"], processor, image, 1)
                if not processor.stats.translated:
                    report.failures.append(f"{p.path}: no mask template could be placed on the face")
                    continue
            else:
                masked = _translate(backends["mask"], image, faces, paste_config(config, backends["mask"]),
                                    options.batch_for(backends["mask"])[0])
            masked_faces, reused = _faces_on_masked(detector.detect(masked), faces)
            report.reused[p.name] = reused
            unmasked = _translate(backends["unmask"], masked, masked_faces, paste_config(config, backends["unmask"]),
                                  options.batch_for(backends["unmask"])[0])
            for suffix, img in (("masked", masked), ("unmasked", unmasked)):
                path = out / f"{p.name}_{suffix}.png"
                write_image(path, img)
                report.written.append(path)
            rows.append((p, image, masked, unmasked, faces))
    finally:
        for be in backends.values():
            if be.is_active:
                be.deactivate()
    if rows:
        sheet = out / SHEET_NAME
        write_bytes_atomic(sheet, before_after_sheet(rows, options.margin, backends["unmask"].image_size, pasted,
                                                     mask_method=options.mask_method))
        report.written.append(sheet)
    return report


PASTE_WORDS = {"zone": "mask zone pasted", "crop": "whole crop pasted", "hole": "mask erased and restored",
               "hole-below-eyes": "mask below the eyes erased and restored",
               "template": "mask template warped onto the landmarks"}


def describe_pastes(pastes: dict[str, str]) -> str:
    """How each direction's output was pasted back, in words ("mask zone pasted", or one per
    direction when they differ)."""
    kinds = set(pastes.values())
    if len(kinds) == 1:
        return PASTE_WORDS[kinds.pop()]
    return "; ".join(f"{d}: {PASTE_WORDS[p]}" for d, p in pastes.items())


def before_after_sheet(rows, margin: float, model_size: int, pasted: str = PASTE_WORDS["zone"], *,
                       mask_method: str = "gan") -> bytes:
    """PNG bytes: per portrait, the whole images and close-ups of the first face. model_size:
    the unmask model's input side."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    template = mask_method == "template"
    titles = ("input", "masked (mask template, no model)" if template else "masked (mask generator)",
              "unmasked again (unmask of masked)")
    fig = Figure(figsize=(9, 6.4 * len(rows)), dpi=100)
    axes = fig.subplots(2 * len(rows), 3, squeeze=False)
    for r, (p, image, masked, unmasked, faces) in enumerate(rows):
        box = square_crop_box(faces[0].box, image.shape, margin, fit="pad")
        for c, (title, img) in enumerate(zip(titles, (image, masked, unmasked))):
            top, bottom = axes[2 * r, c], axes[2 * r + 1, c]
            top.imshow(img)
            top.set_title(title, fontsize=10)
            bottom.imshow(resize_square(crop_square(img, box), CLOSE_UP))
            bottom.set_title("face close-up", fontsize=9)
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
        axes[2 * r, 0].set_ylabel(p.name, fontsize=10)
    models = f"CPU-trained {model_size}px unmask model" if template else f"CPU-trained {model_size}px models"
    fig.suptitle(f"cyclemask demo, {models} (not the paper's)\n{pasted}", fontsize=10)
    fig.text(0.5, 0.005, "; ".join(sorted({p.credit for p, *_ in rows})), ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.015, 1, 0.95))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
