"""Numerical verification of exported graphs against the eager model.

Every export is run through the runtime's own backends (ONNX Runtime's CPU provider for the
graphs, the TensorRT backend for an engine: the path that is verified is the path that runs) on
a set of uint8 images and compared with `cyclemask.image_tensors.eager_translate` (the eager reference, same
pre/post-processing), value by value on the uint8 outputs. A graph past its bounds is an
ExportError: the CLI then leaves nothing in place.

Bounds (see `FP32_BOUNDS`, `FP16_BOUNDS`), calibrated on the trained embedded generators by
scripts/calibrate_parity.py (rerun it whenever the embedded model changes; it prints the figures,
the bounds they suggest and which bounds each deliberately broken graph breaks):

- FP32: at most 1 LSB anywhere and PSNR >= 65 dB. The graph and eager compute the same float
  ops in a different order (ORT's convolution kernels and fused ops), so a value sitting at x.5
  can round either way, but only rarely: ONNX Runtime and OpenVINO measure 90-95 dB on the
  trained generators, 80-90 dB on seeded full-size ones. The PSNR bound is what catches the
  faults that keep every value within 1 LSB: a lost Round (the cast truncates: 51.1 dB) or a
  wrong normalisation constant (1/128 for 1/127.5: 50.4 dB).
- FP16 (convolutions in FP16, InstanceNormalization and the uint8 pre/post in FP32): max 4 LSB,
  >= 99.9 % of values within 1 LSB, PSNR >= 53 dB. Measured: the trained 80 px generators max
  1 LSB, 100 % within 1 LSB, 66.9 dB; seeded generators (random weights, the harder case) max
  3 LSB, >= 99.98 % within 1 LSB, >= 57.5 dB. The same two faults fail the PSNR bound here too.
- TensorRT engine (vs the FP16 graph on ORT, and vs eager): max 8 LSB, >= 98 % within 1 LSB,
  PSNR >= 40 dB. NOT calibrated (not yet run on a GPU): TensorRT picks its own FP16 kernels and
  may accumulate differently; tighten once measured.
- BF16 on the CPU (OpenVINO's BF16 hint, torch bfloat16), on held-out real faces: PSNR >= 40 dB,
  >= 95 % of values within 2 LSB. INT8 graphs (cyclemask-export --int8): PSNR >= 35 dB, and the
  masked/unmasked classifier's success rate within 3 points of FP32's (export/lowp.py). Both
  are bounds on trained generators, whose outputs are smooth where random weights give noise
  (random full-size weights: BF16 40 dB, INT8 25 dB); the figures they were set from are
  printed by `python -m cyclemask.export.calibrate_lowp`, which reads the shipped generators.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cyclemask.errors import ExportError
from cyclemask.image_arrays import center_crop_resize, check_batch
from cyclemask.image_tensors import eager_translate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bounds:
    """Acceptance bounds of a uint8 comparison. None = not checked."""

    max_abs: int | None
    min_within_1: float | None = None
    min_psnr_db: float | None = None
    min_within_2: float | None = None

    def __post_init__(self) -> None:
        if self.max_abs is not None and (not isinstance(self.max_abs, int) or self.max_abs < 0):
            raise ExportError(f"max_abs must be a non-negative integer; got {self.max_abs!r}")
        for name in ("min_within_1", "min_within_2"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ExportError(f"{name} must be a fraction in [0, 1]; got {v!r}")

    def describe(self) -> str:
        parts = [f"max |diff| <= {self.max_abs} LSB"] if self.max_abs is not None else []
        if self.min_within_1 is not None:
            parts.append(f">= {self.min_within_1:.2%} within 1 LSB")
        if self.min_within_2 is not None:
            parts.append(f">= {self.min_within_2:.0%} within 2 LSB")
        if self.min_psnr_db is not None:
            parts.append(f"PSNR >= {self.min_psnr_db:g} dB")
        return ", ".join(parts)


FP32_BOUNDS = Bounds(max_abs=1, min_psnr_db=65.0)
FP16_BOUNDS = Bounds(max_abs=4, min_within_1=0.999, min_psnr_db=53.0)
#: A TensorRT engine against the FP16 graph on ORT CPU and against eager. Provisional (not yet
#: measured on a GPU): both sides use the same FP16 weights but different kernels and
#: accumulation, so twice the FP16 graph's max and a little more spread are allowed.
ENGINE_BOUNDS = Bounds(max_abs=8, min_within_1=0.98, min_psnr_db=40.0)
#: BF16 on the CPU and INT8 graphs against eager FP32, on held-out real faces of trained
#: generators (module docstring). INT8 also has a task bound: export/lowp.py TASK_MAX_DROP.
BF16_BOUNDS = Bounds(max_abs=None, min_psnr_db=40.0, min_within_2=0.95)
INT8_BOUNDS = Bounds(max_abs=None, min_psnr_db=35.0)


@dataclass(frozen=True)
class ParityStats:
    """How two uint8 outputs of the same inputs differ."""

    n_images: int
    n_values: int
    max_abs: int
    mean_abs: float
    frac_exact: float
    frac_within_1: float
    psnr_db: float  # inf when identical
    frac_within_2: float = float("nan")

    def failures(self, bounds: Bounds) -> list[str]:
        bad = []
        if bounds.max_abs is not None and self.max_abs > bounds.max_abs:
            bad.append(f"max |diff| {self.max_abs} LSB > {bounds.max_abs}")
        if bounds.min_within_1 is not None and self.frac_within_1 < bounds.min_within_1:
            bad.append(f"{self.frac_within_1:.3%} within 1 LSB < {bounds.min_within_1:.2%}")
        if bounds.min_within_2 is not None and not self.frac_within_2 >= bounds.min_within_2:
            bad.append(f"{self.frac_within_2:.2%} within 2 LSB < {bounds.min_within_2:.0%}")
        if bounds.min_psnr_db is not None and self.psnr_db < bounds.min_psnr_db:
            bad.append(f"PSNR {self.psnr_db:.1f} dB < {bounds.min_psnr_db:g} dB")
        return bad

    def describe(self) -> str:
        psnr = "inf" if math.isinf(self.psnr_db) else f"{self.psnr_db:.1f}"
        return (f"{self.n_images} images: max |diff| {self.max_abs} LSB, mean {self.mean_abs:.4f}, "
                f"exact {self.frac_exact:.2%}, within 1 LSB {self.frac_within_1:.3%}, PSNR {psnr} dB")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["psnr_db"] = None if math.isinf(self.psnr_db) else round(self.psnr_db, 3)
        return d


def compare_uint8(got: np.ndarray, want: np.ndarray) -> ParityStats:
    """Statistics of |got - want| over two uint8 arrays of one shape."""
    if got.shape != want.shape or got.dtype != np.uint8 or want.dtype != np.uint8:
        raise ExportError(
            f"cannot compare outputs: got {got.dtype} {list(got.shape)}, expected uint8 {list(want.shape)}"
        )
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
    return ParityStats(
        n_images=int(got.shape[0]) if got.ndim == 4 else 1,
        n_values=int(diff.size),
        max_abs=int(diff.max()) if diff.size else 0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        frac_exact=float(np.mean(diff == 0)),
        frac_within_1=float(np.mean(diff <= 1)),
        psnr_db=psnr,
        frac_within_2=float(np.mean(diff <= 2)),
    )


# ------------------------------------------------------------------------------------------------
# Verification inputs
# ------------------------------------------------------------------------------------------------


def demo_portrait() -> Path | None:
    """A public-domain face photo shipped inside matplotlib (Grace Hopper), if present."""
    try:
        import matplotlib

        p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    except Exception:  # matplotlib missing or without its sample data: random inputs remain
        return None
    return p if p.is_file() else None


def verification_images(
    image_size: int,
    *,
    n_random: int = 2,
    image_dir: str | os.PathLike | None = None,
    n_real: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """uint8 [N, S, S, 3] inputs for parity runs and a description of where each came from.

    Real photos (the first `n_real` of `image_dir`, sorted, else matplotlib's public-domain
    portrait) centre-cropped and resized to S, then `n_random` uniform-noise images: real faces
    drive the network the way it is used; noise pushes activations to extremes.
    """
    from cyclemask.image_files import list_images, read_image

    images: list[np.ndarray] = []
    sources: list[str] = []
    paths: list[Path] = []
    if image_dir is not None:
        d = Path(image_dir)
        if not d.is_dir():
            raise ExportError(f"{d}: verification image folder does not exist")
        paths = list_images(d)[:n_real]
        if not paths:
            raise ExportError(f"{d}: no images found to verify the export with")
    elif (p := demo_portrait()) is not None:
        paths = [p]
    for p in paths:
        images.append(center_crop_resize(read_image(p), image_size, interpolation="area"))
        sources.append(str(p))
    rng = np.random.default_rng(seed)
    for _ in range(n_random):
        images.append(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8))
        sources.append(f"random(seed={seed})")
    if not images:
        raise ExportError("no verification images: give real images or n_random >= 1")
    return np.stack(images), sources


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------


def eager_outputs(generator: nn.Module, images: np.ndarray, batch_size: int = 2) -> np.ndarray:
    """The eager reference (`cyclemask.image_tensors.eager_translate`) over `images`, in batches."""
    check_batch(images, what="verification images")
    generator = generator.eval()
    return np.concatenate([eager_translate(generator, images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def backend_outputs(backend, images: np.ndarray, batch_size: int = 2) -> np.ndarray:
    """An active backend's outputs over `images`, in batches of at most `batch_size` (and of
    what the backend takes); each output is checked against the contract by the backend."""
    step = max(1, min(batch_size, backend.max_batch or batch_size))
    return np.concatenate([backend.infer(np.ascontiguousarray(images[i:i + step]))
                           for i in range(0, len(images), step)])


def graph_outputs(path: str | os.PathLike, images: np.ndarray, *, batch_size: int = 2, threads: int | None = None,
                  direction: str | None = None) -> np.ndarray:
    """Run a graph over `images` with the runtime's ONNX Runtime backend on the CPU provider
    (the provider every machine has), in batches; >= 2 per batch exercises the dynamic batch."""
    from cyclemask.engine.backends import OrtBackend

    with OrtBackend(path, direction, provider="cpu", threads=threads) as backend:
        return backend_outputs(backend, images, batch_size)


def engine_outputs(path: str | os.PathLike, images: np.ndarray, *, batch_size: int = 8,
                   direction: str | None = None) -> np.ndarray:
    """Run a TensorRT engine (with its sidecar beside it) over `images` with the runtime's
    TensorRT backend on one stream. Not yet run on a GPU."""
    from cyclemask.engine.backends import TrtBackend

    with TrtBackend(path, direction, streams=1) as backend:
        return backend_outputs(backend, images, batch_size)


@dataclass(frozen=True)
class Verification:
    """The outcome of one artefact's parity run."""

    artefact: str
    against: str
    stats: ParityStats
    bounds: Bounds
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.stats.failures(self.bounds)

    def to_dict(self) -> dict[str, Any]:
        return {"artefact": self.artefact, "against": self.against, "passed": self.passed,
                "bounds": self.bounds.describe(), "seconds": round(self.seconds, 2), **self.stats.to_dict()}


def verify_outputs(
    got: np.ndarray,
    reference: np.ndarray,
    bounds: Bounds,
    *,
    artefact: str,
    against: str,
    seconds: float = 0.0,
) -> Verification:
    """Compare outputs already computed and check `bounds`; ExportError naming `artefact` if broken."""
    stats = compare_uint8(got, reference)
    result = Verification(str(artefact), against, stats, bounds, seconds)
    bad = stats.failures(bounds)
    if bad:
        raise ExportError(f"{artefact}: verification against {against} failed: {'; '.join(bad)} ({stats.describe()})")
    log.info("verified %s against %s: %s", Path(artefact).name, against, stats.describe())
    return result
