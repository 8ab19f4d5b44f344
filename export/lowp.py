"""Verification of the CPU's low precisions against eager FP32 on held-out faces.

Two quality-changing paths, both opt-in:

- BF16 inference (`cyclemask-run --precision bf16`): the FP32 graph on OpenVINO under its BF16
  precision hint, or a checkpoint on torch in bfloat16;
- INT8 graphs (`cyclemask-export --int8`, export/quantize.py), run by OpenVINO or ONNX Runtime.

Each is run through the engine's own backends (the path that is verified is the path that
runs) on real faces the quantiser never saw, and compared with the eager FP32 model:

- pixels: PSNR, the share of values within 1 and 2 LSB, the largest difference and a histogram
  of |difference| in LSB (`BF16_BOUNDS`, `INT8_BOUNDS` in export/verify.py);
- the task: the shipped masked/unmasked classifier (metrics/classifier.py) scores the
  FP32 outputs and the low-precision outputs; the success rates (outputs of `mask` called
  masked, of `unmask` called unmasked) must stay within TASK_MAX_DROP of each other (INT8).

A check that breaks a bound names the bound; the export then writes nothing.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cyclemask.errors import ExportError

from .verify import BF16_BOUNDS, INT8_BOUNDS, Bounds, ParityStats, compare_uint8

log = logging.getLogger(__name__)

#: INT8: largest allowed change of the classifier's success rate, in points (0.03 = 3 points).
TASK_MAX_DROP = 0.03
#: Upper edges of the |difference| histogram in LSB: 0, 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65-255.
LSB_EDGES = (0, 1, 2, 4, 8, 16, 32, 64, 255)


def lsb_histogram(got: np.ndarray, want: np.ndarray) -> list[tuple[str, float]]:
    """Share of values per |got - want| bin (LSB_EDGES), as (label, fraction) pairs."""
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16)).ravel()
    counts = np.bincount(diff, minlength=256)
    total = max(1, diff.size)
    out, lo = [], 0
    for hi in LSB_EDGES:
        label = str(hi) if lo == hi else f"{lo}-{hi}"
        out.append((label, float(counts[lo:hi + 1].sum()) / total))
        lo = hi + 1
    return out


def format_histogram(hist: list[tuple[str, float]]) -> str:
    return "  ".join(f"{label}: {frac:.2%}" for label, frac in hist if frac > 0 or label in ("0", "1"))


@dataclass(frozen=True)
class TaskFigures:
    """The classifier's success rate on FP32 and on low-precision outputs of the same faces."""

    called: str  # "masked" (the mask generator's goal) or "unmasked"
    fp32: float
    lowp: float
    n: int
    flipped: int  # faces the classifier calls differently

    @property
    def change(self) -> float:
        return self.lowp - self.fp32

    def describe(self) -> str:
        return (f"called {self.called}: FP32 {self.fp32:.1%}, low precision {self.lowp:.1%} "
                f"({100 * self.change:+.1f} points; {self.flipped} of {self.n} faces called differently)")


def task_figures(direction: str, reference: np.ndarray, got: np.ndarray, classifier=None) -> TaskFigures:
    """Score both output sets with the shipped masked/unmasked classifier."""
    from cyclemask.mask_classifier import MaskClassifier

    clf = classifier or MaskClassifier()
    want_masked = direction == "mask"
    p_ref, p_got = clf.p_masked(list(reference)), clf.p_masked(list(got))
    hit_ref = (p_ref >= 0.5) if want_masked else (p_ref < 0.5)
    hit_got = (p_got >= 0.5) if want_masked else (p_got < 0.5)
    return TaskFigures("masked" if want_masked else "unmasked", float(hit_ref.mean()), float(hit_got.mean()),
                       int(len(p_ref)), int((hit_ref != hit_got).sum()))


@dataclass(frozen=True)
class LowpCheck:
    """One low-precision run on held-out faces against eager FP32, with its bounds."""

    artefact: str
    precision: str  # "bf16" | "int8"
    runtime: str  # the backend's own description of what ran
    stats: ParityStats
    histogram: list[tuple[str, float]]
    bounds: Bounds
    task: TaskFigures | None = None
    task_max_drop: float | None = None
    seconds: float = 0.0
    faces_from: str = ""
    notes: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        bad = self.stats.failures(self.bounds)
        if self.task is not None and self.task_max_drop is not None and abs(self.task.change) > self.task_max_drop + 1e-9:
            bad.append(f"classifier success {self.task.lowp:.1%} vs FP32 {self.task.fp32:.1%}: "
                       f"{100 * abs(self.task.change):.1f} points > {100 * self.task_max_drop:g}")
        return bad

    @property
    def passed(self) -> bool:
        return not self.failures()

    def bounds_text(self) -> str:
        text = self.bounds.describe()
        if self.task_max_drop is not None:
            text += f", classifier success within {100 * self.task_max_drop:g} points of FP32"
        return text

    def lines(self) -> list[str]:
        s = self.stats
        psnr = "inf" if math.isinf(s.psnr_db) else f"{s.psnr_db:.1f}"
        out = [f"{self.precision} on {self.runtime}, {s.n_images} held-out faces vs eager FP32: PSNR {psnr} dB, "
               f"within 1 LSB {s.frac_within_1:.2%}, within 2 LSB {s.frac_within_2:.2%}, max {s.max_abs} LSB, "
               f"mean {s.mean_abs:.3f}"]
        if self.faces_from:
            out.append(f"  held-out faces: {self.faces_from}")
        out.append(f"  |diff| histogram (LSB): {format_histogram(self.histogram)}")
        if self.task is not None:
            out.append(f"  task: {self.task.describe()}")
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.failures())
        out.append(f"  bounds: {self.bounds_text()}  {verdict}")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = {"artefact": self.artefact, "precision": self.precision, "runtime": self.runtime, "passed": self.passed,
             "bounds": self.bounds_text(), "histogram": dict(self.histogram), "seconds": round(self.seconds, 2),
             "faces_from": self.faces_from, **self.stats.to_dict()}
        if self.task is not None:
            d["task"] = {"called": self.task.called, "fp32": self.task.fp32, "lowp": self.task.lowp,
                         "change_points": round(100 * self.task.change, 2), "n": self.task.n,
                         "flipped": self.task.flipped}
        return d

    def summary(self) -> str:
        """One line for metadata and notes."""
        s = self.stats
        task = f", task {100 * self.task.change:+.1f} points" if self.task is not None else ""
        return (f"PSNR {s.psnr_db:.1f} dB, {s.frac_within_2:.1%} within 2 LSB{task} on {s.n_images} held-out faces "
                f"({self.runtime.split(' (')[0]})")


def run_backend(model: str | os.PathLike, backend: str, images: np.ndarray, *, precision: str = "fp32",
                threads: int | None = None, batch: int = 4) -> tuple[np.ndarray, str]:
    """Outputs of `model` on `backend` (openvino | ort | torch) over `images`, and the backend's
    description. Latency mode, no caches: the check measures numerics, not start-up."""
    from cyclemask.engine.backends import BackendOptions, create_backend

    from .verify import backend_outputs

    opts = BackendOptions(device="cpu", precision=precision, threads=threads, ov_mode="latency",
                          ort_provider="cpu", probe=False, cache=False)
    be, _ = create_backend(model, backend, None, opts)
    with be:
        return backend_outputs(be, images, batch), be.description


def check_outputs(got: np.ndarray, reference: np.ndarray, *, artefact: str, precision: str, runtime: str,
                  direction: str | None, faces_from: str = "", seconds: float = 0.0, classifier=None) -> LowpCheck:
    """Compare low-precision outputs with eager FP32 ones under the precision's bounds."""
    if precision not in ("bf16", "int8"):
        raise ExportError(f"low precision must be bf16 or int8; got {precision!r}")
    bounds = BF16_BOUNDS if precision == "bf16" else INT8_BOUNDS
    task = None
    if direction is not None and precision == "int8":
        task = task_figures(direction, reference, got, classifier)
    return LowpCheck(str(artefact), precision, runtime, compare_uint8(got, reference), lsb_histogram(got, reference),
                     bounds, task, TASK_MAX_DROP if precision == "int8" and task is not None else None, seconds,
                     faces_from)


def check_graph(model: str | os.PathLike, backend: str, precision: str, images: np.ndarray, reference: np.ndarray, *,
                direction: str | None, artefact: str | None = None, threads: int | None = None, faces_from: str = "",
                classifier=None) -> LowpCheck:
    """Run `model` on `backend` and check it (BF16: the FP32 graph under the BF16 hint, or a
    checkpoint in bfloat16; INT8: the INT8 graph)."""
    t0 = time.perf_counter()
    got, desc = run_backend(model, backend, images, precision="bf16" if precision == "bf16" else "fp32",
                            threads=threads)
    return check_outputs(got, reference, artefact=artefact or str(model), precision=precision, runtime=desc,
                         direction=direction, faces_from=faces_from, seconds=time.perf_counter() - t0,
                         classifier=classifier)


def require(check: LowpCheck) -> LowpCheck:
    """ExportError naming the artefact, the runtime and each bound it broke."""
    bad = check.failures()
    if bad:
        s = check.stats
        raise ExportError(
            f"{Path(check.artefact).name}: {check.precision.upper()} verification on {check.runtime.split(' (')[0]} "
            f"against eager FP32 failed: {'; '.join(bad)} (bounds: {check.bounds_text()}; PSNR {s.psnr_db:.1f} dB, "
            f"{s.frac_within_2:.1%} within 2 LSB on {s.n_images} held-out faces)")
    return check


# ------------------------------------------------------------------------------------------------
# The export steps (cyclemask-export --int8 / --bf16)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LowpOptions:
    """What `cyclemask-export` checks and writes at low precision.

    `calib` / `holdout`: (direction or "*", folder) pairs: the faces to calibrate on and the
    held-out faces to verify on, per generator (a `mask` generator takes unmasked faces, an
    `unmask` generator masked ones). Without a held-out folder a fixed share of the calibration
    folder is held out.
    """

    int8: bool = False
    bf16: bool = False
    calib: tuple[tuple[str, str], ...] = ()
    holdout: tuple[tuple[str, str], ...] = ()
    holdout_count: int = 100
    config: Any = None  # export.quantize.Int8Config; None: its defaults

    def __post_init__(self) -> None:
        from .quantize import Int8Config

        if self.config is None:
            object.__setattr__(self, "config", Int8Config())
        for name in ("calib", "holdout"):
            pairs = tuple((str(d), str(p)) for d, p in getattr(self, name))
            keys = [d for d, _ in pairs]
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if dup:
                raise ExportError(f"--{name} given twice for {', '.join(dup)}")
            object.__setattr__(self, name, pairs)
        if self.holdout_count < 1:
            raise ExportError(f"held-out faces: need at least 1; got {self.holdout_count}")
        if self.int8 and not self.calib:
            raise ExportError("--int8 needs calibration faces: --calib DIR (face crops the generator takes as input; "
                              "mask=DIR / unmask=DIR to give each generator its own)")

    @property
    def active(self) -> bool:
        return self.int8 or self.bf16

    def folder(self, which: str, direction: str) -> str | None:
        pairs = dict(getattr(self, which))
        return pairs.get(direction, pairs.get("*"))

    def check_directions(self, directions: list[str]) -> list[str]:
        """Errors for folders named for directions not exported; notes for shared folders."""
        notes = []
        for which in ("calib", "holdout"):
            for d, _ in getattr(self, which):
                if d != "*" and d not in directions:
                    raise ExportError(f"--{which} {d}=...: this export has no '{d}' generator (it exports "
                                      f"{', '.join(directions)})")
        if self.int8 and len(directions) > 1 and dict(self.calib).get("*") and not all(d in dict(self.calib) for d in directions):
            notes.append("one --calib folder serves both generators: each is best calibrated on its own input "
                         "(--calib mask=UNMASKED_FACES --calib unmask=MASKED_FACES)")
        return notes


def cpu_graph_runtimes() -> list[str]:
    """The installed CPU runtimes that run graphs: each one an INT8 graph is verified on."""
    from cyclemask.engine.backends import REGISTRY

    return [name for name in ("openvino", "ort") if REGISTRY[name].available() is None]


@dataclass
class LowpResult:
    int8_checks: list[LowpCheck] = field(default_factory=list)
    bf16_checks: list[LowpCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def export_steps(direction: str, generator, fp32_graph: Path, int8_graph: Path, *, final_fp32: Path, final_int8: Path,
                 options: LowpOptions, size: int, fallback_faces: np.ndarray | None, threads: int | None,
                 tick) -> LowpResult:
    """Quantise and verify (int8) and verify BF16 (bf16) for one direction, on staged files.

    Verification figures go into the graphs' metadata (int8_verification, bf16_verification),
    which `cyclemask-run` shows. An out-of-bounds result raises ExportError naming the bound.
    """
    from .onnx import save_model_atomic, set_onnx_metadata
    from .quantize import load_face_sets, quantize_graph
    from .verify import eager_outputs, graph_outputs

    res = LowpResult()
    calib_dir, hold_dir = options.folder("calib", direction), options.folder("holdout", direction)
    faces = None
    if calib_dir is not None:
        faces = load_face_sets(calib_dir, size, holdout_dir=hold_dir, calib_count=options.config.calib_count,
                               holdout_count=options.holdout_count)
        held, held_from = faces.holdout, faces.holdout_from
    elif hold_dir is not None:
        from .verify import verification_images

        held, _ = verification_images(size, n_random=0, image_dir=hold_dir, n_real=options.holdout_count)
        held_from = hold_dir
    elif fallback_faces is not None and len(fallback_faces):
        held, held_from = fallback_faces, "the verification images (pass --holdout DIR for a real held-out set)"
    else:
        raise ExportError("BF16 verification needs real faces: pass --holdout DIR (or --calib DIR)")
    reference = eager_outputs(generator, held)
    tick(f"{direction}: FP32 reference on {len(held)} held-out faces")
    if len(held) < 34:
        res.notes.append(f"{direction}: {len(held)} held-out faces: a change of one face moves the classifier's "
                         f"success rate by {100 / len(held):.1f} points")

    if options.int8:
        validation = None
        if options.config.accuracy_aware:
            # Tuned on part of the calibration faces, never on the held-out ones it is verified on.
            k = max(1, len(faces.calib) // 4)
            val = faces.calib[-k:]
            validation = (val, graph_outputs(fp32_graph, val, batch_size=4, threads=threads))
        quantize_graph(fp32_graph, int8_graph, faces.calib, options.config, validation=validation)
        tick(f"{direction}: quantised to INT8")
        runtimes = cpu_graph_runtimes()
        if not runtimes:
            raise ExportError("no CPU runtime to verify the INT8 graph with: pip install onnxruntime or openvino")
        for rt in runtimes:
            check = check_graph(int8_graph, rt, "int8", held, reference, direction=direction,
                                artefact=str(final_int8), threads=threads, faces_from=held_from)
            res.int8_checks.append(check)
            require(check)
        tick(f"{direction}: verified INT8 graph on {', '.join(runtimes)}")
        _add_metadata(int8_graph, {"int8_verification": _json([c.to_dict() | {"summary": c.summary()}
                                                               for c in res.int8_checks])},
                      set_onnx_metadata, save_model_atomic)

    if options.bf16:
        from cyclemask.engine.backends import REGISTRY
        from cyclemask.engine.cpu_features import bf16_support, openvino_capabilities

        if REGISTRY["openvino"].available() is not None:
            res.notes.append(f"{direction}: BF16 not verified: OpenVINO (the graph runtime that runs BF16) is not installed")
        else:
            ok, why = bf16_support(openvino_capabilities() or [])
            if not ok:
                res.notes.append(f"{direction}: BF16 not verified here: {why}")
            else:
                check = check_graph(fp32_graph, "openvino", "bf16", held, reference, direction=direction,
                                    artefact=str(final_fp32), threads=threads, faces_from=held_from)
                res.bf16_checks.append(check)
                require(check)
                _add_metadata(fp32_graph, {"bf16_verification": _json(check.to_dict() | {"summary": check.summary()})},
                              set_onnx_metadata, save_model_atomic)
        tick(f"{direction}: BF16 checked")
    return res


def _add_metadata(path: Path, props: dict[str, str], set_onnx_metadata, save_model_atomic) -> None:
    import onnx

    model = onnx.load(str(path))
    set_onnx_metadata(model, props)
    save_model_atomic(model, path)


def _json(value) -> str:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"))
