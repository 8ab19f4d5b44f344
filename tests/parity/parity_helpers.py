"""Figures and thresholds of the parity suite (see README.md in this folder).

The pixel bounds are export/verify.py's (FP32_BOUNDS, FP16_BOUNDS, ENGINE_BOUNDS, BF16_BOUNDS,
INT8_BOUNDS, with its `compare_uint8` and `ParityStats`): one definition for the export check
and this suite, calibrated on the trained embedded generators by scripts/calibrate_parity.py
(BF16 and INT8: by cyclemask.export.calibrate_lowp). Added here: per-image figures, so a
failure names the worst images, the KID bound, and for INT8 the export's task bound (the
masked/unmasked classifier's success rate, export/lowp.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from benchmarks.inputs import direction_faces, face_inputs, source_description
from benchmarks.variants import Artefacts, ArtefactUnavailable, ModelSpec, Variant, seeded_generator
from cyclemask.export.verify import (BF16_BOUNDS, ENGINE_BOUNDS, FP16_BOUNDS, FP32_BOUNDS, INT8_BOUNDS, Bounds,
                                     ParityStats, compare_uint8)

#: Variant precision -> bounds. "fp16-trt" (TensorRT engines, ONNX Runtime's TensorRT EP) gets
#: export/verify.py's engine bounds: TensorRT picks its own FP16 kernels. BF16 and INT8 bounds
#: hold for trained generators only (test_parity.py runs those variants on the trained cases).
BOUNDS: dict[str, Bounds] = {"fp32": FP32_BOUNDS, "fp16": FP16_BOUNDS, "fp16-trt": ENGINE_BOUNDS,
                             "bf16": BF16_BOUNDS, "int8": INT8_BOUNDS}

#: The distribution bound. KID (cyclemask.metrics.fid.paired_kid: TF Inception pool3 features,
#: cubic kernel, every term over pairs i != j because the two sets are outputs of the same
#: inputs) between a variant's face outputs and eager's, minus twice its standard error (the
#: jackknife over images), must not exceed the KID between eager's outputs and themselves with
#: seeded uniform noise of +-k LSB, k per precision. Why KID and not FID: FID of a few dozen
#: images in a 2048-dimensional space is dominated by its bias (about 2.4 for +-1 LSB noise on
#: 64 faces, while an FP16 graph scores 0.04), whereas KID is unbiased at any size and comes
#: with a standard error. Measured on the embedded 80 px 'mask' generator, 64 faces: +-1 LSB
#: noise 5.3e-5, +-2 LSB 3.3e-4; the FP16 graph 3.5e-8 (SE 2.1e-7); zero padding in place of
#: reflection padding 1.7e-2 (SE 2.2e-3). BF16 and INT8 have no KID bound: their distribution
#: check is the classifier's success rate (INT8, as at export), and BF16's pixel bounds.
KID_NOISE_LSB: dict[str, int] = {"fp32": 1, "fp16": 2, "fp16-trt": 2}


@dataclass(frozen=True)
class ImageFigures:
    label: str
    max_abs: int
    frac_off_gt1: float  # share of values more than 1 LSB from eager
    psnr_db: float

    def describe(self) -> str:
        psnr = "inf" if math.isinf(self.psnr_db) else f"{self.psnr_db:.1f}"
        return f"{self.label} (max |d| {self.max_abs} LSB, {self.frac_off_gt1:.3%} > 1 LSB, PSNR {psnr} dB)"


@dataclass
class ParityResult:
    """One backend's outputs against the eager outputs of the same inputs."""

    variant: str
    precision: str
    backend: str  # the backend's own description: what really ran
    stats: ParityStats
    images: list[ImageFigures]
    kid: float | None = None
    kid_se: float | None = None
    kid_max: float | None = None
    kid_note: str = ""
    task: object = None  # export.lowp.TaskFigures on a trained case (INT8)
    task_max_drop: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def bounds(self) -> Bounds:
        return BOUNDS[self.precision]

    def worst(self, k: int = 3) -> list[ImageFigures]:
        return sorted(self.images, key=lambda f: (-f.max_abs, -f.frac_off_gt1, f.psnr_db))[:k]

    def pixel_failures(self) -> list[str]:
        return self.stats.failures(self.bounds)

    def kid_failures(self) -> list[str]:
        if self.kid is None or self.kid_max is None:
            return []
        k = KID_NOISE_LSB[self.precision]
        low = self.kid - 2.0 * (self.kid_se or 0.0)
        # NaN compares false everywhere: written so that a NaN fails.
        return [] if low <= self.kid_max else [
            f"KID {self.kid:.2e} (SE {self.kid_se:.1e}) - 2 SE > {self.kid_max:.2e} (eager outputs with +-{k} LSB noise)"]

    def task_failures(self) -> list[str]:
        if self.task is None or self.task_max_drop is None:
            return []
        t = self.task
        return [] if abs(t.change) <= self.task_max_drop + 1e-9 else [
            f"classifier success {t.lowp:.1%} vs eager {t.fp32:.1%}: {100 * abs(t.change):.1f} points > "
            f"{100 * self.task_max_drop:g} ({t.flipped} of {t.n} faces called differently)"]

    def message(self, failures: list[str]) -> str:
        worst = "; ".join(f.describe() for f in self.worst())
        kid = f", KID - 2 SE <= {self.kid_max:.2e}" if self.kid_max is not None else ""
        return (f"{self.variant} [{self.backend}] vs eager, {self.precision} bounds ({self.bounds.describe()}"
                f"{kid}): {'; '.join(failures)}.\n"
                f"  overall: {self.stats.describe()}\n  worst images: {worst}")

    def row(self) -> dict:
        psnr = None if math.isinf(self.stats.psnr_db) else round(self.stats.psnr_db, 2)
        return {"variant": self.variant, "precision": self.precision, "backend": self.backend,
                "images": self.stats.n_images, "max_abs_lsb": self.stats.max_abs,
                "frac_off_gt1": round(1.0 - self.stats.frac_within_1, 6), "psnr_db": psnr,
                "kid": self.kid, "kid_se": self.kid_se, "kid_max": self.kid_max, "kid_note": self.kid_note,
                "worst": [f.label for f in self.worst() if f.max_abs > 0],
                "pixel_ok": not self.pixel_failures(), "kid_ok": not self.kid_failures(),
                **({"task_change_points": round(100 * self.task.change, 2), "task_ok": not self.task_failures()}
                   if self.task is not None else {}), **self.extra}


def compare(variant: str, precision: str, backend: str, got: np.ndarray, want: np.ndarray,
            labels: list[str]) -> ParityResult:
    """Overall and per-image figures of `got` against `want` (uint8 [N, S, S, 3])."""
    if precision not in BOUNDS:
        raise ValueError(f"precision must be one of {sorted(BOUNDS)}; got {precision!r}")
    if len(labels) != len(want):
        raise ValueError(f"{len(labels)} labels for {len(want)} images")
    stats = compare_uint8(got, want)
    per = []
    for label, g, w in zip(labels, got, want):
        s = compare_uint8(g[None], w[None])
        per.append(ImageFigures(label, s.max_abs, 1.0 - s.frac_within_1, s.psnr_db))
    return ParityResult(variant, precision, backend, stats, per)


def run_batches(backend, images: np.ndarray, batch: int) -> np.ndarray:
    """backend.infer over `images` in batches of `batch` (the last one may be smaller)."""
    return np.concatenate([backend.infer(images[i:i + batch]) for i in range(0, len(images), batch)])


# ------------------------------------------------------------------------------------------------
# Cases: a generator, its artefacts, inputs and eager outputs; variant outputs computed once
# ------------------------------------------------------------------------------------------------

#: The fast suite's generator: small enough for seconds, deep enough (3 blocks, 64 px) that
#: rounding differences accumulate as in the real one.
SMALL = ModelSpec("small-parity", ngf=16, n_blocks=3, image_size=64)
FULL = ModelSpec("full", ngf=64, n_blocks=9, image_size=256)
#: Gain on the last convolution (benchmarks.variants.seeded_generator): outputs over the whole
#: 0..255 range with part of them saturated, as a trained generator's. Measured on the shared
#: faces: small x4 -> 9 % of values at 0 or 255; full x1.5 -> 6 % (x1: 1 %, x4: 42 %).
HEAD_GAIN = {SMALL.name: 4.0, FULL.name: 1.5}

#: Figures of every check that ran this session (printed by conftest's terminal summary).
RESULTS: list[dict] = []


@dataclass
class Case:
    name: str
    description: str
    images: np.ndarray
    labels: list[str]
    is_face: np.ndarray
    eager: np.ndarray
    artefacts: Artefacts
    batch: int
    inputs: str = ""
    outputs: dict = field(default_factory=dict)  # variant name -> (outputs, description) | skip reason
    features: dict = field(default_factory=dict)  # "eager" / variant name -> Inception features

    @property
    def image_size(self) -> int:
        return self.artefacts.image_size


def make_case(name: str, description: str, generator, image_size: int, n_faces: int, n_noise: int, batch: int,
              workdir: Path, direction: str = "mask", faces_dir: Path | None = None) -> Case:
    from cyclemask.export.verify import eager_outputs

    faces_dir = faces_dir or direction_faces(direction)
    images, labels, is_face = face_inputs(image_size, n_faces, n_noise, faces_dir=faces_dir)
    eager = eager_outputs(generator, images, batch_size=batch)
    return Case(name, description, images, labels, is_face, eager,
                Artefacts(generator, image_size, workdir, direction=direction, engine_max_batch=batch), batch,
                inputs=source_description(faces_dir))


def seeded_case(spec: ModelSpec, n_faces: int, n_noise: int, batch: int, workdir: Path) -> Case:
    gen = seeded_generator(spec.config(), seed=0, head_gain=HEAD_GAIN[spec.name])
    return make_case(spec.name, f"seeded reference init, {spec.describe()}", gen, spec.image_size, n_faces, n_noise,
                     batch, workdir)


def shipped_generators():
    """The embedded demo generators ({direction: LoadedGenerator}) and their image size."""
    import importlib.resources
    import json

    from cyclemask.checkpoint import load_generators

    root = Path(str(importlib.resources.files("cyclemask"))) / "assets" / "demo"
    size = json.loads((root / "demo.json").read_text())["image_size"]
    return load_generators(root / "generators.pt"), int(size)


def trained_case(direction: str, n_faces: int, n_noise: int, batch: int, workdir: Path) -> Case:
    gens, size = shipped_generators()
    g = gens[direction].generator.eval()
    return make_case(f"trained-{direction}", f"embedded demo generator '{direction}', {size}px", g, size, n_faces,
                     n_noise, batch, workdir, direction=direction)


def variant_outputs(case: Case, variant: Variant) -> tuple[np.ndarray, str]:
    """The variant's outputs over the case's inputs (computed once), or pytest.skip with why.

    Only "not available here" skips: a missing package, GPU or TensorRT (`Variant.unavailable`),
    or an artefact that cannot be made on this machine (`ArtefactUnavailable`). Everything else
    that goes wrong, on a GPU too (an engine that does not build, a CUDA error, ONNX Runtime
    falling back from an available provider), fails the test with its message.
    """
    cached = case.outputs.get(variant.name)
    if isinstance(cached, str):
        pytest.skip(cached)
    if cached is not None:
        return cached
    why = variant.unavailable()
    if why:
        case.outputs[variant.name] = f"{variant.name}: {why}"
        pytest.skip(case.outputs[variant.name])
    try:
        backend, _ = variant.build(case.artefacts, batch=case.batch)
        with backend:
            out = run_batches(backend, case.images, case.batch)
            desc = backend.description
    except ArtefactUnavailable as exc:
        case.outputs[variant.name] = f"{variant.name}: {exc}"
        pytest.skip(case.outputs[variant.name])
    case.outputs[variant.name] = (out, desc)
    return out, desc


def parity_result(case: Case, variant: Variant) -> ParityResult:
    out, desc = variant_outputs(case, variant)
    return compare(variant.name, variant.precision, desc, out, case.eager, case.labels)


def face_features(case: Case, key: str, outputs: np.ndarray, inception) -> np.ndarray:
    """Inception features of the case's face images of `outputs` (noise inputs are left out:
    KID compares image distributions). Images identical to eager's reuse eager's features: the
    network is deterministic, and most FP32 outputs are bit-identical."""
    from cyclemask.metrics.fid import extract_features

    if key in case.features:
        return case.features[key]
    faces = np.flatnonzero(case.is_face)
    if key == "eager":
        feats = extract_features([outputs[i] for i in faces], inception, batch_size=16)
    else:
        ref = face_features(case, "eager", case.eager, inception)
        feats = ref.copy()
        changed = [k for k, i in enumerate(faces) if not np.array_equal(outputs[i], case.eager[i])]
        if changed:
            feats[changed] = extract_features([outputs[faces[k]] for k in changed], inception, batch_size=16)
    case.features[key] = feats
    return feats


def kid_bound(case: Case, precision: str, inception) -> float:
    """Paired KID between eager's face outputs and the same with +-k LSB uniform noise (seeded)."""
    from cyclemask.metrics.fid import paired_kid

    k = KID_NOISE_LSB[precision]
    key = f"noise-{k}"
    if key not in case.features:
        rng = np.random.default_rng(k)
        noisy = np.clip(case.eager.astype(np.int16) + rng.integers(-k, k + 1, case.eager.shape), 0, 255)
        face_features(case, key, noisy.astype(np.uint8), inception)
    return paired_kid(case.features[key], face_features(case, "eager", case.eager, inception))[0]


def check_kid(case: Case, result: ParityResult, outputs: np.ndarray, key: str, inception) -> ParityResult:
    """Fill `result`'s KID figures: the outputs' paired KID against eager, and the bound."""
    from cyclemask.metrics.fid import paired_kid

    ref = face_features(case, "eager", case.eager, inception)
    feats = face_features(case, key, outputs, inception)
    result.kid, result.kid_se = paired_kid(feats, ref)
    result.kid_max = kid_bound(case, result.precision, inception)
    result.kid_note = f"{len(ref)} face images"
    return result


def check_task(case: Case, result: ParityResult, outputs: np.ndarray) -> ParityResult:
    """The export's INT8 task bound (export/lowp.py): the masked/unmasked classifier's success
    rate on the variant's face outputs against eager's, for the case's direction."""
    from cyclemask.export.lowp import TASK_MAX_DROP, task_figures

    faces = np.flatnonzero(case.is_face)
    result.task = task_figures(case.artefacts.direction, case.eager[faces], outputs[faces])
    result.task_max_drop = TASK_MAX_DROP
    return result


def record(case: Case, result: ParityResult, kind: str) -> None:
    RESULTS.append({"model": case.name, "model_desc": case.description, "inputs": case.inputs, "check": kind,
                    **result.row()})
