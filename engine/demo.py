"""The embedded demo: small generators shipped inside the package, and `cyclemask-run --demo`.

The demo generators (both directions) were trained on this project's CPU machine from
../shared/data (see README, "The embedded demo model"): a few MB of package data under
cyclemask/assets/demo/ (the training bundle generators.pt and the exported, verified FP32
graphs mask.onnx / unmask.onnx, plus demo.json, the record of how they were made). They are
what `cyclemask-run` uses when no --model is given. They are a CPU-trained demo, far smaller
and far less trained than the paper's model.

`run_demo` puts a mask on the public-domain portraits that ship inside the dependencies
(matplotlib's sample_data/grace_hopper.jpg), takes it off again, and writes the results and a
before/after sheet: nothing is downloaded and ../shared is not needed.

Faces are found as in a normal face-aware run: YuNet (shipped with the package, or
--face-detector / $CYCLEMASK_FACE_DETECTOR) and the same processor (engine/faces.py: square
crop with margin, translate, mask-zone or whole-crop paste-back). The unmask pass detects again
on the masked result, as a run on a masked photo would, and falls back to the input's faces
where the detector misses the masked face.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cyclemask.errors import ConfigError, InputError
from cyclemask.faces import Face, FaceDetector, crop_square, resize_square, square_crop_box
from cyclemask.imageio import read_image, write_bytes_atomic, write_image

from .backends import BackendOptions, create_backend
from .faces import FaceConfig, FaceProcessor

log = logging.getLogger(__name__)

DIRECTIONS = ("mask", "unmask")
BUNDLE_NAME = "generators.pt"
GRAPH_NAMES = {"mask": "mask.onnx", "unmask": "unmask.onnx"}
INFO_NAME = "demo.json"
SHEET_NAME = "before_after.png"
CLOSE_UP = 256  # side of the face close-ups on the sheet, in pixels


def assets_dir() -> Path:
    """cyclemask/assets/demo inside the installed (or editable) package."""
    import importlib.resources

    return Path(str(importlib.resources.files("cyclemask"))) / "assets" / "demo"


def demo_info() -> dict:
    """The record of how the demo generators were made (demo.json), or {} when it is missing."""
    p = assets_dir() / INFO_NAME
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def default_model(direction: str | None = None, backend: str = "auto") -> Path:
    """The shipped demo model for a run without --model.

    The torch backend gets the generator bundle (both directions in one file); every other
    backend gets the direction's FP32 ONNX graph (ONNX Runtime is the faster path on CPU).
    """
    d = direction or "mask"
    if d not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}; got {d!r}")
    path = assets_dir() / (BUNDLE_NAME if backend == "torch" else GRAPH_NAMES[d])
    if not path.is_file():
        raise ConfigError(
            f"the embedded demo model {path} is missing from this installation of cyclemask; "
            "reinstall the package, or pass --model with your own graph or checkpoint"
        )
    return path


def describe_default() -> str:
    info = demo_info()
    size = info.get("image_size")
    what = f"{size}px, " if size else ""
    return f"the embedded demo generators ({what}CPU-trained; not the paper's model; pass --model for yours)"


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


class _FixedFaces:
    """The faces found on the input, reused for the second pass (the masked image)."""

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


def _translate(backend, image: np.ndarray, faces: list[Face], config: FaceConfig) -> np.ndarray:
    proc = FaceProcessor(backend.image_size, config, detector_factory=lambda: _FixedFaces(faces))
    crops, state = proc.prepare(image)
    if not crops:
        return image
    outputs = backend.infer(np.stack(crops))
    return proc.finish(image, state, list(outputs))


def run_demo(
    out_dir: str | os.PathLike,
    *,
    models: dict[str, Path] | None = None,
    backend: str = "auto",
    options: BackendOptions | None = None,
    face_detector: str | os.PathLike | None = None,
    portraits: list[Portrait] | None = None,
    margin: float = FaceConfig.margin,
    paste: str = FaceConfig.paste,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DemoReport:
    """Mask each portrait, unmask the masked result, write both and a before/after sheet.

    models: {"mask": path, "unmask": path} (a bundle may be named for both); default: the
    shipped demo models for the backend. face_detector: a YuNet file; default
    $CYCLEMASK_FACE_DETECTOR when set, else the one shipped with cyclemask. paste: "zone" or
    "crop" (see FaceConfig). Existing outputs are an error unless overwrite; nothing is written
    before every model has loaded.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    portraits = demo_portraits() if portraits is None else list(portraits)
    if not portraits:
        raise InputError("no demo portrait found: matplotlib's sample_data/grace_hopper.jpg is missing "
                         "from this environment (is matplotlib installed in full?)")
    existing = [n for n in output_names(portraits) if (out / n).exists()]
    if existing and not overwrite:
        raise ConfigError(f"--out {out}: already holds {', '.join(existing)}; pass --overwrite to replace them")
    models = dict(models) if models else {d: default_model(d, backend) for d in DIRECTIONS}
    missing = [d for d in DIRECTIONS if d not in models]
    if missing:
        raise ConfigError(f"the demo needs a model for each direction; missing: {', '.join(missing)}")
    config = FaceConfig(track=False, margin=margin, paste=paste)
    report = DemoReport(out)
    say = progress or (lambda msg: None)

    detector = FaceDetector(face_detector, score_threshold=config.score_threshold, retry_pad=0.5)
    report.detector = f"YuNet ({detector.model_path}), {'mask zone' if paste == 'zone' else 'whole crop'} pasted"

    backends = {}
    for d in DIRECTIONS:
        be, reason = create_backend(models[d], backend, d, options)
        backends[d] = be
        report.models[d] = str(models[d])
        report.backends[d] = reason
    rows = []
    try:
        for be in backends.values():
            be.activate()
        for d, be in backends.items():
            report.backends[d] = f"{be.description}  [{report.backends[d]}]"
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
            masked = _translate(backends["mask"], image, faces, config)
            masked_faces, reused = _faces_on_masked(detector.detect(masked), faces)
            report.reused[p.name] = reused
            unmasked = _translate(backends["unmask"], masked, masked_faces, config)
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
        write_bytes_atomic(sheet, before_after_sheet(rows, margin, backends["mask"].image_size, paste))
        report.written.append(sheet)
    return report


def before_after_sheet(rows, margin: float, model_size: int, paste: str = FaceConfig.paste) -> bytes:
    """PNG bytes: per portrait, the whole images and close-ups of the first face."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    titles = ("input", "masked (mask)", "unmasked again (unmask of masked)")
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
    pasted = "mask zone pasted" if paste == "zone" else "whole crop pasted"
    fig.suptitle(f"cyclemask demo: CPU-trained {model_size}px generators, not the paper's model; {pasted}",
                 fontsize=11)
    fig.text(0.5, 0.005, "; ".join(sorted({p.credit for p, *_ in rows})), ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.015, 1, 0.97))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def demo_command(model: Path | None, out: Path | None, backend: str, options: BackendOptions,
                 face_detector: Path | None, margin: float, overwrite: bool, echo: Callable[[str], None],
                 paste: str = FaceConfig.paste) -> bool:
    """`cyclemask-run --demo`: run the demo, print what it did; True when everything was written."""
    import time

    if out is None:
        raise ConfigError("--demo needs --out DIR (the folder for the results and the before/after sheet)")
    if model is not None:
        from .backends import model_kind

        if model_kind(model) != "checkpoint":
            raise ConfigError(f"--demo --model {model}: the demo runs both directions, so it needs a "
                              "checkpoint bundle holding both (e.g. a run's generators.pt), not one graph or engine")
        models = {d: model for d in DIRECTIONS}
    else:
        models = None
    t0 = time.perf_counter()
    report = run_demo(out, models=models, backend=backend, options=options, face_detector=face_detector,
                      margin=margin, paste=paste, overwrite=overwrite,
                      progress=lambda name: echo(f"portrait: {name}"))
    echo("")
    echo("summary:")
    echo(f"  models:   {describe_default() if model is None else model}")
    for d in DIRECTIONS:
        echo(f"    {d}: {report.models[d]}")
        echo(f"      backend: {report.backends[d]}")
    echo(f"  faces:    {report.detector}; found: "
         + ", ".join(f"{k} {v}" for k, v in report.faces.items()))
    missed = {k: v for k, v in report.reused.items() if v}
    if missed:
        echo("  unmask:   not detected on the masked image, the input's face box used: "
             + ", ".join(f"{k} {v}" for k, v in missed.items()))
    echo(f"  written:  {len(report.written)} -> {report.out_dir}")
    for p in report.written:
        echo(f"    - {p.name}")
    echo(f"  failed:   {len(report.failures)}")
    for f in report.failures:
        echo(f"    - {f}")
    echo(f"  time:     {time.perf_counter() - t0:.2f} s")
    return report.ok
