"""Figures and thresholds of the parity suite (see README.md in this folder).

The pixel bounds are export/verify.py's (FP32_BOUNDS, FP16_BOUNDS, ENGINE_BOUNDS, with its
`compare_uint8` and `ParityStats`): one definition for the export check and this suite. Added here: per-image
figures, so a failure names the worst images, and the FID bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from benchmarks.inputs import face_inputs, source_description
from benchmarks.variants import Artefacts, ArtefactUnavailable, ModelSpec, Variant, seeded_generator
from cyclemask.export.verify import ENGINE_BOUNDS, FP16_BOUNDS, FP32_BOUNDS, Bounds, ParityStats, compare_uint8

#: Variant precision -> bounds. "fp16-trt" (TensorRT engines, ONNX Runtime's TensorRT EP) gets
#: export/verify.py's engine bounds: TensorRT picks its own FP16 kernels.
BOUNDS: dict[str, Bounds] = {"fp32": FP32_BOUNDS, "fp16": FP16_BOUNDS, "fp16-trt": ENGINE_BOUNDS}

#: FID bounds. FID (TF Inception pool3, cyclemask.metrics.fid) between a variant's outputs and
#: the eager outputs of the same inputs must not exceed the FID between the eager outputs and
#: themselves with seeded uniform noise of +-k LSB added to every value (clipped), k per
#: precision: 1 for FP32 (its pixel bound allows 1 LSB anywhere), 2 for FP16 and TensorRT
#: (PSNR ~45 dB).
#: The bound is measured per case, so it follows the number and size of the images (FID of a
#: few images is biased upwards). Measured on the fast case (6 faces, 64 px): FP32 variants
#: ~1e-5, FP16 0.017; bounds 0.10 (+-1 LSB) and 0.29 (+-2 LSB). Full size (8 faces, 256 px):
#: FP32 3e-5, FP16 0.03; bounds 0.15 and 0.42.
FID_NOISE_LSB: dict[str, int] = {"fp32": 1, "fp16": 2, "fp16-trt": 2}


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
    fid: float | None = None
    fid_max: float | None = None
    fid_note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def bounds(self) -> Bounds:
        return BOUNDS[self.precision]

    def worst(self, k: int = 3) -> list[ImageFigures]:
        return sorted(self.images, key=lambda f: (-f.max_abs, -f.frac_off_gt1, f.psnr_db))[:k]

    def pixel_failures(self) -> list[str]:
        return self.stats.failures(self.bounds)

    def fid_failures(self) -> list[str]:
        if self.fid is None or self.fid_max is None:
            return []
        k = FID_NOISE_LSB[self.precision]
        return [] if self.fid <= self.fid_max else [
            f"FID {self.fid:.4f} > {self.fid_max:.4f} (eager outputs with +-{k} LSB noise)"]

    def message(self, failures: list[str]) -> str:
        worst = "; ".join(f.describe() for f in self.worst())
        fid = f", FID <= {self.fid_max:.4f}" if self.fid_max is not None else ""
        return (f"{self.variant} [{self.backend}] vs eager, {self.precision} bounds ({self.bounds.describe()}"
                f"{fid}): {'; '.join(failures)}.\n"
                f"  overall: {self.stats.describe()}\n  worst images: {worst}")

    def row(self) -> dict:
        psnr = None if math.isinf(self.stats.psnr_db) else round(self.stats.psnr_db, 2)
        return {"variant": self.variant, "precision": self.precision, "backend": self.backend,
                "images": self.stats.n_images, "max_abs_lsb": self.stats.max_abs,
                "frac_off_gt1": round(1.0 - self.stats.frac_within_1, 6), "psnr_db": psnr,
                "fid": None if self.fid is None else round(self.fid, 6),
                "fid_max": None if self.fid_max is None else round(self.fid_max, 6), "fid_note": self.fid_note,
                "worst": [f.label for f in self.worst() if f.max_abs > 0],
                "pixel_ok": not self.pixel_failures(), "fid_ok": not self.fid_failures(), **self.extra}


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
    spec: ModelSpec
    images: np.ndarray
    labels: list[str]
    is_face: np.ndarray
    eager: np.ndarray
    artefacts: Artefacts
    batch: int
    n_fid: int  # FID over the first n_fid faces: Inception costs ~0.3 s an image on 2 cores
    outputs: dict = field(default_factory=dict)  # variant name -> (outputs, description) | skip reason
    features: dict = field(default_factory=dict)  # "eager" / variant name -> Inception features


def make_case(spec: ModelSpec, n_faces: int, n_noise: int, batch: int, workdir: Path,
              n_fid: int | None = None) -> Case:
    from cyclemask.export.verify import eager_outputs

    gen = seeded_generator(spec.config(), seed=0, head_gain=HEAD_GAIN[spec.name])
    images, labels, is_face = face_inputs(spec.image_size, n_faces, n_noise)
    eager = eager_outputs(gen, images, batch_size=batch)
    return Case(spec, images, labels, is_face, eager,
                Artefacts(gen, spec.image_size, workdir, engine_max_batch=batch), batch,
                n_fid=n_fid or int(is_face.sum()))


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
    """Inception features of the first `case.n_fid` face images of `outputs` (noise inputs are
    left out: FID compares image distributions). Images identical to eager's reuse eager's
    features: the network is deterministic, and most FP32 outputs are bit-identical."""
    from cyclemask.metrics.fid import extract_features

    if key in case.features:
        return case.features[key]
    faces = np.flatnonzero(case.is_face)[:case.n_fid]
    if key == "eager":
        feats = extract_features([outputs[i] for i in faces], inception, batch_size=8)
    else:
        ref = face_features(case, "eager", case.eager, inception)
        feats = ref.copy()
        changed = [k for k, i in enumerate(faces) if not np.array_equal(outputs[i], case.eager[i])]
        if changed:
            feats[changed] = extract_features([outputs[faces[k]] for k in changed], inception, batch_size=8)
    case.features[key] = feats
    return feats


def fid_bound(case: Case, precision: str, inception) -> float:
    """FID between eager's face outputs and the same with +-k LSB uniform noise (seeded)."""
    from cyclemask.metrics.fid import fid_from_features

    k = FID_NOISE_LSB[precision]
    key = f"noise-{k}"
    if key not in case.features:
        rng = np.random.default_rng(k)
        noisy = np.clip(case.eager.astype(np.int16) + rng.integers(-k, k + 1, case.eager.shape), 0, 255)
        face_features(case, key, noisy.astype(np.uint8), inception)
    return fid_from_features(case.features[key], face_features(case, "eager", case.eager, inception))


def record(case: Case, result: ParityResult, kind: str) -> None:
    RESULTS.append({"model": case.spec.name, "model_desc": case.spec.describe(), "inputs": source_description(),
                    "check": kind, **result.row()})
