"""cyclemask-export's options, declared once (as the backend options are: cyclemask/declare.py).

Each entry is a flag of `cyclemask-export` (in --help order), a field of `ExportArgs` (what
`main` receives) and, through `backends`, the keyword of the settings object it fills:
"export" (`ExportOptions`), "build" (`EngineBuildConfig`), "profile" (`EngineProfile`), "lowp"
(`LowpOptions`) or "int8" (`Int8Config`). A new export setting is one entry here and its use
in that object.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cyclemask.artifacts import DEFAULT_STREAMS
from cyclemask.config import NORMS
from cyclemask.declare import Option, keywords_for

O = Option
OPTIONS: tuple[Option, ...] = (
    O("checkpoint", Path, None,
      "A cyclemask checkpoint (generator bundle or network file) or a reference-repository "
      "generator file (latest_net_G_A.pth, ...). Required unless --from-onnx.", optional=True),
    O("from_onnx", Path, None,
      "Build only the TensorRT engine from an FP16 graph written earlier (X.fp16.onnx), on this "
      "machine; implies --engine. The command the export prints where no engine could be built.", optional=True),
    O("direction", str, None,
      "Which generator to export. Default: every generator the file holds; for a reference file "
      "without a direction, G_A in the name means mask and G_B unmask.",
      choices=("mask", "unmask", "both"), optional=True),
    O("out_dir", Path, None, "Output folder. Default: ./exported (with --from-onnx: the graph's folder).",
      flag="--out", optional=True),
    O("image_size", int, None,
      "Model input size S of the uint8 [N,S,S,3] graphs. Default: the size the checkpoint was "
      "trained at, else 256 (reference files do not record it).", {"export": "image_size"}, optional=True),
    O("ngf", int, None, "Generator width; checked against the file (reference files: read off the weights; paper: 64).",
      optional=True),
    O("n_blocks", int, None, "Residual blocks; checked against the file (paper: 9).", optional=True),
    O("norm", str, None, "Normalisation; checked against the file (paper: instance).", choices=NORMS, optional=True),
    O("fp16", bool, False,
      "Also write the mixed-precision graph (FP16 convolutions; InstanceNorm and uint8 pre/post in "
      "FP32), verified, and build an engine from it where TensorRT and a GPU exist."),
    O("engine", bool, None,
      "Require a TensorRT engine (error, exit 1, if none can be built here; implies --fp16), or "
      "never build one. Default: build one with --fp16 when possible.", negatable=True, optional=True),
    O("overwrite", bool, False, "Replace existing output files (only after the new ones pass verification).",
      {"export": "overwrite"}),
    O("min_batch", int, 1, "Engine profile: smallest batch.", {"profile": "min_batch"}, range=(1, None)),
    O("opt_batch", int, 8, "Engine profile: batch TensorRT tunes for.", {"profile": "opt_batch"}, range=(1, None)),
    O("max_batch", int, 32, "Engine profile: largest batch.", {"profile": "max_batch"}, range=(1, None)),
    O("streams", int, DEFAULT_STREAMS,
      "Engine: optimization profiles, one per CUDA stream `cyclemask-run --streams` will run at once "
      "(TensorRT needs a profile per concurrent execution context; the runtime runs no more streams "
      "than the engine has profiles). Build time grows with the count.", {"build": "profiles"}, range=(1, 16)),
    O("timing_cache", Path, None,
      "TensorRT timing cache file, read before and updated after each build. Default: "
      "OUT/trt_timing.cache.", {"build": "timing_cache"}, optional=True),
    O("workspace_gib", float, None, "TensorRT workspace limit in GiB. Default: TensorRT's.",
      {"build": "workspace_gib"}, optional=True),
    O("typing", str, "strong",
      "strong: the graph's precisions (TensorRT 11 has no other mode). weak-fp16: TensorRT 10.x only, "
      "weakly typed with the FP16 builder flag (for comparisons).", {"build": "typing"},
      choices=("strong", "weak-fp16")),
    O("instance_norm", str, "native", "TensorRT InstanceNormalization: the native layer or the plugin (10.x parser flag).",
      {"build": "instance_norm"}, choices=("native", "plugin")),
    O("verify_images", Path, None,
      "Folder of face photos to verify with (first --verify-count, sorted, resized to S). Default: "
      "the public-domain portrait shipped with matplotlib. Env: CYCLEMASK_VERIFY_IMAGES.",
      {"export": "verify_images"}, optional=True, envvar="CYCLEMASK_VERIFY_IMAGES"),
    O("verify_count", int, 4, "Real photos used for verification.", {"export": "verify_count"}, range=(0, None)),
    O("verify_random", int, 2, "Uniform-noise images used for verification.", {"export": "n_random"},
      range=(0, None)),
    O("threads", int, None, "CPU threads for PyTorch and ONNX Runtime. Default: their own choice.",
      {"export": "threads"}, range=(1, None), optional=True),
    O("int8", bool, False,
      "Also write D.int8.onnx: INT8 post-training quantisation (NNCF; pip install 'cyclemask[int8]'), "
      "calibrated on --calib faces and verified on held-out faces on every installed CPU runtime "
      "(OpenVINO, ONNX Runtime): PSNR >= 35 dB against eager FP32 and the masked/unmasked classifier's "
      "success within 3 points of FP32, else nothing is written. Run it with --model D.int8.onnx.", {"lowp": "int8"}),
    O("bf16", bool, False,
      "Also check the FP32 graph under OpenVINO's BF16 precision (what cyclemask-run --precision bf16 "
      "runs) on held-out faces: PSNR >= 40 dB and >= 95% of values within 2 LSB of eager FP32, else "
      "nothing is written. The figures go into the graph's metadata. Needs a CPU with native BF16.", {"lowp": "bf16"}),
    O("calib", str, (),
      "--int8: face crops to calibrate on, the generator's own input (unmasked faces for mask, masked "
      "for unmask); mask=DIR / unmask=DIR give each generator its own folder. Repeatable.",
      metavar="[DIRECTION=]DIR", multiple=True),
    O("holdout", str, (),
      "--int8 / --bf16: held-out faces to verify on (never calibrated on). Default: a fixed 20% of the "
      "--calib folder, by file name. Repeatable like --calib.", metavar="[DIRECTION=]DIR", multiple=True),
    O("calib_count", int, 64, "--int8: calibration faces used (sorted, first N).", {"int8": "calib_count"},
      range=(1, None)),
    O("holdout_count", int, 100, "Held-out faces used (sorted, first N).", {"lowp": "holdout_count"},
      range=(1, None)),
    O("int8_fp32_convs", str, "first,last", "--int8: convolutions kept in FP32 (InstanceNorm and the uint8 pre/post always are).",
      {"int8": "fp32_convs"}, choices=("first,last", "first", "last", "none")),
    O("int8_fp32_adds", bool, False, "--int8: keep the residual additions in FP32 too.",
      {"int8": "fp32_residual_adds"}),
    O("int8_preset", str, "performance", "--int8: NNCF preset (mixed: asymmetric activation ranges).",
      {"int8": "preset"}, choices=("performance", "mixed")),
    O("int8_bias_correction", str, "fast", "--int8: NNCF bias correction (full: slower, per-layer on the calibration faces).",
      {"int8": "bias_correction"}, choices=("fast", "full")),
    O("int8_accuracy_aware", bool, False,
      "--int8: NNCF accuracy control: layers return to FP32, most harmful first, until the graph reaches "
      "--int8-target-psnr against FP32 on a quarter of the calibration faces (slow: many runs).",
      {"int8": "accuracy_aware"}),
    O("int8_target_psnr", float, 38.0, "--int8-accuracy-aware: the PSNR (dB) against FP32 to reach.",
      {"int8": "target_psnr_db"}, range=(20, 80)),
)
del O


@dataclasses.dataclass(frozen=True)
class _Args:
    def keywords(self, consumer: str, **convert) -> dict:
        """The keywords of one settings object ("export", "build", "profile", "lowp", "int8")."""
        return keywords_for(OPTIONS, self, consumer, **convert)


#: What cyclemask-export's `main` receives: one field per option.
ExportArgs = dataclasses.make_dataclass(
    "ExportArgs", [(o.name, o.annotation, dataclasses.field(default=o.default)) for o in OPTIONS],
    bases=(_Args,), frozen=True)
ExportArgs.__module__ = __name__
