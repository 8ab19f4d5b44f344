"""INT8 post-training quantisation of an exported FP32 graph (NNCF, ONNX backend).

The result is one ONNX file, `D.int8.onnx`: the FP32 graph with QuantizeLinear /
DequantizeLinear pairs on the convolutions' inputs and weights (QDQ format). It keeps the uint8
contract (`image` in, `translated` out, dynamic batch), and both CPU runtimes run it in INT8:
OpenVINO turns the pairs into INT8 convolutions (VNNI / AMX-INT8), ONNX Runtime into
QLinearConv. So `cyclemask-run --model mask.int8.onnx` takes it like any graph, and export
verifies it through the same backends (export/lowp.py).

Calibration runs the FP32 graph over face crops, the generator's own input (unmasked faces for
`mask`, masked faces for `unmask`), and sets each quantiser's range from the activations seen.
What stays in higher precision (the levers, `Int8Config`):

- `fp32_convs`: the first and last convolutions are left in FP32 (the first sees the raw image
  with its full dynamic range; the last writes the output, where an INT8 step is several LSB).
- InstanceNormalization, the uint8 pre-processing and the Tanh / rounding post-processing stay
  FP32 whatever the setting: NNCF places quantisers on convolution inputs and weights and on
  the residual additions only.
- `fp32_residual_adds`: also keep the residual additions in FP32.
- `preset`: "performance" (symmetric activations) or "mixed" (asymmetric activations).
- `bias_correction`: "fast" or "full" (slower, corrects each layer's mean shift on the
  calibration set).
- `accuracy_aware`: NNCF's accuracy control: layers go back to FP32, most harmful first, until
  the graph reaches `target_psnr_db` against FP32 on the validation faces.

What each lever bought on the shipped generators is measured by
`python -m cyclemask.export.calibrate_lowp` (README, "On a CPU").
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cyclemask.errors import ExportError

log = logging.getLogger(__name__)

PRESETS = ("performance", "mixed")
BIAS_CORRECTIONS = ("fast", "full")
FP32_CONVS = ("none", "first", "last", "first,last")
#: NNCF's own default is 300; 64 faces gave the same PSNR as 256 on the demo generators.
DEFAULT_CALIB_COUNT = 64


@dataclass(frozen=True)
class Int8Config:
    """How to quantise: the calibration set size and the quality levers (module docstring)."""

    calib_count: int = DEFAULT_CALIB_COUNT
    fp32_convs: str = "first,last"
    fp32_residual_adds: bool = False
    preset: str = "performance"
    bias_correction: str = "fast"
    accuracy_aware: bool = False
    target_psnr_db: float = 38.0  # accuracy-aware target: the 35 dB bound plus margin

    def __post_init__(self) -> None:
        if not isinstance(self.calib_count, int) or self.calib_count < 1:
            raise ExportError(f"calibration needs at least one face; got calib_count={self.calib_count!r}")
        if self.fp32_convs not in FP32_CONVS:
            raise ExportError(f"fp32_convs must be one of {', '.join(FP32_CONVS)}; got {self.fp32_convs!r}")
        if self.preset not in PRESETS:
            raise ExportError(f"preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        if self.bias_correction not in BIAS_CORRECTIONS:
            raise ExportError(f"bias_correction must be one of {', '.join(BIAS_CORRECTIONS)}; got {self.bias_correction!r}")
        if not 10.0 <= self.target_psnr_db <= 100.0:
            raise ExportError(f"target PSNR must be between 10 and 100 dB; got {self.target_psnr_db!r}")

    def describe(self) -> str:
        parts = [f"{self.calib_count} calibration faces", f"FP32 convs: {self.fp32_convs}",
                 f"{self.preset} preset", f"{self.bias_correction} bias correction"]
        if self.fp32_residual_adds:
            parts.append("FP32 residual adds")
        if self.accuracy_aware:
            parts.append(f"accuracy-aware to PSNR {self.target_psnr_db:g} dB")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


def nncf_available() -> tuple[bool, str]:
    import importlib.util

    if importlib.util.find_spec("nncf") is None:
        return False, "INT8 quantisation needs NNCF: pip install 'cyclemask[int8]' (or pip install nncf)"
    return True, ""


# ------------------------------------------------------------------------------------------------
# Calibration and held-out faces
# ------------------------------------------------------------------------------------------------


def _held_out(path: Path, fraction: float) -> bool:
    """A fixed, content-independent split of one folder: the same file is always on the same side."""
    h = int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16)
    return (h % 1000) < fraction * 1000


@dataclass(frozen=True)
class FaceSets:
    """Calibration and held-out faces for one generator, uint8 [N, S, S, 3], and where they came from."""

    calib: np.ndarray
    holdout: np.ndarray
    calib_from: str
    holdout_from: str
    holdout_names: tuple[str, ...]


def load_face_sets(calib_dir: str | os.PathLike, image_size: int, *, holdout_dir: str | os.PathLike | None = None,
                   calib_count: int = DEFAULT_CALIB_COUNT, holdout_count: int = 100,
                   holdout_fraction: float = 0.2) -> FaceSets:
    """Calibration faces from `calib_dir`, held-out faces from `holdout_dir`; without one, a
    fixed share of `calib_dir` (by file name hash) is held out and never calibrated on.

    Faces are centre-cropped and area-resized to the model size (export/verify.py); the first
    `calib_count` / `holdout_count` in sorted order are used.
    """
    from cyclemask.image_files import list_images

    cdir = Path(calib_dir)
    if not cdir.is_dir():
        raise ExportError(f"{cdir}: calibration folder does not exist")
    paths = list_images(cdir)
    if holdout_dir is not None:
        hdir = Path(holdout_dir)
        if not hdir.is_dir():
            raise ExportError(f"{hdir}: held-out folder does not exist")
        if hdir.resolve() == cdir.resolve():
            raise ExportError(f"{hdir}: the held-out faces must not be the calibration faces (give another folder, "
                              "or no held-out folder to hold out part of the calibration folder)")
        calib_paths, hold_paths = paths, list_images(hdir)
        calib_from, hold_from = str(cdir), str(hdir)
    else:
        calib_paths = [p for p in paths if not _held_out(p, holdout_fraction)]
        hold_paths = [p for p in paths if _held_out(p, holdout_fraction)]
        calib_from = f"{cdir} (the {1 - holdout_fraction:.0%} not held out)"
        hold_from = f"{cdir} (a fixed {holdout_fraction:.0%} by file name, not calibrated on)"
    calib_paths, hold_paths = calib_paths[:calib_count], hold_paths[:holdout_count]
    if not calib_paths:
        raise ExportError(f"{cdir}: no images to calibrate with")
    if not hold_paths:
        raise ExportError(f"{holdout_dir or cdir}: no held-out images to verify the INT8 graph with")
    return FaceSets(load_faces(calib_paths, image_size), load_faces(hold_paths, image_size), calib_from, hold_from,
                    tuple(p.name for p in hold_paths))


def load_faces(paths: list[Path], size: int) -> np.ndarray:
    """uint8 [N, size, size, 3]: each image's centred square, area-resized (as export/verify.py)."""
    from cyclemask.image_arrays import center_crop_resize
    from cyclemask.image_files import read_image

    return np.stack([center_crop_resize(read_image(p), size, interpolation="area") for p in paths])


# ------------------------------------------------------------------------------------------------
# Quantisation
# ------------------------------------------------------------------------------------------------


def _conv_names(model) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]


def _ignored_scope(model, config: Int8Config):
    import nncf

    convs = _conv_names(model)
    if not convs:
        raise ExportError("the graph has no convolution: not a generator export")
    names = []
    if "first" in config.fp32_convs:
        names.append(convs[0])
    if "last" in config.fp32_convs:
        names.append(convs[-1])
    types = ["Add"] if config.fp32_residual_adds else []
    if not names and not types:
        return None
    if any(not n for n in names):
        raise ExportError("a convolution without a name cannot be kept in FP32")
    return nncf.IgnoredScope(names=names, types=types, validate=False)


def _session(model_proto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model_proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


#: The accuracy-control metric is METRIC_BASE - MSE: higher is better, the FP32 graph scores
#: METRIC_BASE, and an absolute drop is the MSE itself (NNCF divides by the initial score, so it
#: must not be 0).
METRIC_BASE = 1000.0


def _mse_validation(model, items) -> tuple[float, list[float]]:
    """NNCF accuracy-control metric against the FP32 outputs, per face and over all of them."""
    sess = model if hasattr(model, "run") else _session(model)
    per = []
    for image, want in items:
        (got,) = sess.run(["translated"], {"image": image})
        per.append(METRIC_BASE - float(np.mean((got.astype(np.float64) - want.astype(np.float64)) ** 2)))
    return float(np.mean(per)), per


def quantize_graph(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calib: np.ndarray,
                   config: Int8Config = Int8Config(), *, validation: tuple[np.ndarray, np.ndarray] | None = None,
                   progress: Callable[[str], None] | None = None) -> Path:
    """Quantise the FP32 graph at `fp32_path` with `calib` faces (uint8 [N, S, S, 3]) and write
    the INT8 graph to `out_path` (atomically), with its metadata (precision int8, the settings,
    the calibration set's size and hash).

    `validation` (faces, their FP32 graph outputs) is required for `accuracy_aware`. The result
    is NOT verified here: export/lowp.py does that (cyclemask-export always runs it).
    """
    ok, why = nncf_available()
    if not ok:
        raise ExportError(why)
    import nncf
    import onnx

    from .onnx import save_model_atomic, set_onnx_metadata

    src = Path(fp32_path)
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("precision", "fp32") != "fp32":
        raise ExportError(f"{src}: INT8 quantisation starts from the FP32 graph; this one is {props['precision']}")
    if calib.ndim != 4 or calib.dtype != np.uint8 or len(calib) < 1:
        raise ExportError(f"calibration faces must be uint8 [N, S, S, 3] with N >= 1; got {calib.dtype} {list(calib.shape)}")
    n = min(len(calib), config.calib_count)
    calib_ds = nncf.Dataset([calib[i:i + 1] for i in range(n)], lambda x: {"image": x})
    kwargs = dict(
        preset=nncf.QuantizationPreset.MIXED if config.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        subset_size=n, fast_bias_correction=config.bias_correction == "fast",
        ignored_scope=_ignored_scope(model, config),
    )
    t0 = time.perf_counter()
    try:
        with _quiet_nncf():
            if config.accuracy_aware:
                if validation is None:
                    raise ExportError("accuracy-aware quantisation needs validation faces and their FP32 outputs")
                faces, want = validation
                val_ds = nncf.Dataset([(faces[i:i + 1], want[i:i + 1]) for i in range(len(faces))],
                                      lambda item: {"image": item[0]})
                max_mse = 255.0 ** 2 / 10 ** (config.target_psnr_db / 10)
                q = nncf.quantize_with_accuracy_control(model, calib_ds, val_ds, _mse_validation, max_drop=max_mse,
                                                        drop_type=nncf.DropType.ABSOLUTE, **kwargs)
            else:
                q = nncf.quantize(model, calib_ds, **kwargs)
    except ExportError:
        raise
    except Exception as exc:  # NNCF raises its own types (and plain RuntimeErrors) on odd graphs
        raise ExportError(f"{src}: INT8 quantisation failed ({type(exc).__name__}: {str(exc)[:300]})") from None
    digest = hashlib.sha256(calib[:n].tobytes()).hexdigest()
    set_onnx_metadata(q, {**props, "precision": "int8", "int8_config": _json(config.to_dict()),
                          "int8_calibration": _json({"faces": n, "sha256": digest}),
                          "nncf_version": getattr(nncf, "__version__", "?")})
    out = save_model_atomic(q, out_path)
    log.info("wrote INT8 graph %s (%.1f MB) in %.1f s (%s)", out, out.stat().st_size / 1e6,
             time.perf_counter() - t0, config.describe())
    if progress:
        progress(f"quantised to INT8 on {n} faces")
    return out


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF logs every ignored node at INFO and draws its own progress bars on stdout, over the
    export's: both only with --debug."""
    nncf_log = logging.getLogger("nncf")
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf_log.setLevel(level)


def _json(d: dict) -> str:
    import json

    return json.dumps(d, sort_keys=True, separators=(",", ":"))
