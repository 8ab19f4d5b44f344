"""TensorRT engine build from the verified FP16 graph, and its sidecar.

Not yet run on a GPU: no machine this was developed on has TensorRT. Every TensorRT call below
follows the TensorRT 10.x and 11.x Python API
references and the 10.x -> 11.x migration guide; the tests that execute it are marked `trt` and
skip with a reason where TensorRT or CUDA is missing. The parts that need neither (profile
validation, availability checks, the sidecar) are tested everywhere.

What the build does, and why:

- The ONNX parser reads the mixed-precision graph (`cyclemask.export.fp16`). The network is
  created strongly typed: TensorRT 11 has no other mode (the STRONGLY_TYPED flag is accepted
  and ignored there; `BuilderFlag.FP16` was removed), and on 10.x the flag makes TensorRT keep
  the graph's own precisions, so InstanceNormalization stays FP32 as the graph says.
  `typing="weak-fp16"` is the 10.x-only alternative: a weakly typed network with
  `BuilderFlag.FP16`, where TensorRT picks precisions itself (only for comparisons).
- InstanceNormalization uses TensorRT's native layer unless `instance_norm="plugin"` (10.x
  parser flag NATIVE_INSTANCENORM; the two are to be compared on a GPU).
- One optimization profile per CUDA stream the runtime will run (`EngineBuildConfig.profiles`,
  `cyclemask-export --streams`), all over the same batch range: every execution context in
  concurrent use needs its own profile (TensorRT API reference, IExecutionContext: "each
  execution context in concurrent use must use a separate optimization profile"; a new context
  gets profile 0). The count is recorded in the sidecar; the runtime selects profile k for its
  k-th stream with `set_optimization_profile_async` and runs no more streams than profiles.
- The plugin registry is initialised (`trt.init_libnvinfer_plugins`) before parsing, so the
  InstanceNormalization plugin path can be found, and before deserialising.
- A timing cache file is loaded before and saved after every build, so later builds (the other
  direction, a rebuild) skip tactic timing they have already done.
- The engine is written with a sidecar JSON (`<engine>.json`, see `cyclemask.artifacts`)
  recording the TensorRT version, GPU name and compute capability, profile shapes and the
  sha256 of the graph and of the engine: engines only run on the TensorRT version and GPU
  architecture that built them, and the runtime refuses a mismatch with the rebuild command.
- The engine's parity run goes through the runtime's own TensorRT backend
  (`cyclemask.engine.backends.TrtBackend`), so the path that is checked is the path that runs;
  so do availability, logging and the plugin registry (engine/backends/trt.py).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cyclemask.artifacts import (
    DEFAULT_STREAMS,
    ENGINE_FORMAT,
    ENGINE_FORMAT_VERSION,
    INPUT_NAME,
    OUTPUT_NAME,
    engine_rebuild_command,
    file_sha256,
    read_onnx_metadata,
    sidecar_path,
    write_json_atomic,
)
from cyclemask.engine.backends.trt import gpu_identity, init_plugins, make_logger, tensorrt_major
from cyclemask.errors import ExportError

log = logging.getLogger(__name__)

TYPINGS = ("strong", "weak-fp16")
#: Each profile compiles its own kernels (build time and engine size grow with the count).
MAX_PROFILES = 16
INSTANCE_NORMS = ("native", "plugin")


@dataclass(frozen=True)
class EngineProfile:
    """The batch range of the engine's one optimization profile."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32

    def __post_init__(self) -> None:
        for name in ("min_batch", "opt_batch", "max_batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ExportError(f"{name} must be a positive integer; got {v!r}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ExportError(
                f"batch profile must satisfy min <= opt <= max; got min {self.min_batch}, "
                f"opt {self.opt_batch}, max {self.max_batch}"
            )

    def shapes(self, image_size: int) -> dict[str, list[int]]:
        s = image_size
        return {"min": [self.min_batch, s, s, 3], "opt": [self.opt_batch, s, s, 3], "max": [self.max_batch, s, s, 3]}


@dataclass(frozen=True)
class EngineBuildConfig:
    profile: EngineProfile = EngineProfile()
    timing_cache: Path | None = None
    workspace_gib: float | None = None
    typing: str = "strong"
    instance_norm: str = "native"
    optimization_level: int | None = None
    #: Optimization profiles, one per CUDA stream the runtime runs at once (all the same shapes).
    profiles: int = DEFAULT_STREAMS

    def __post_init__(self) -> None:
        if not isinstance(self.profiles, int) or isinstance(self.profiles, bool) or not 1 <= self.profiles <= MAX_PROFILES:
            raise ExportError(f"profiles (--streams) must be an integer from 1 to {MAX_PROFILES}; got {self.profiles!r}")
        if self.typing not in TYPINGS:
            raise ExportError(f"typing must be one of {', '.join(TYPINGS)}; got {self.typing!r}")
        if self.instance_norm not in INSTANCE_NORMS:
            raise ExportError(f"instance_norm must be one of {', '.join(INSTANCE_NORMS)}; got {self.instance_norm!r}")
        if self.workspace_gib is not None and not self.workspace_gib > 0:
            raise ExportError(f"workspace_gib must be positive; got {self.workspace_gib!r}")
        if self.optimization_level is not None and self.optimization_level not in range(6):
            raise ExportError(f"optimization_level must be 0..5; got {self.optimization_level!r}")


def _load_timing_cache(trt, builder_config, path: Path | None):
    blob = b""
    if path is not None and path.is_file():
        blob = path.read_bytes()
    cache = builder_config.create_timing_cache(blob)
    # ignore_mismatch=False: a cache from another GPU or TensorRT version is not merged.
    if not builder_config.set_timing_cache(cache, False):
        log.warning("timing cache %s does not fit this TensorRT/GPU; starting an empty one", path)
        cache = builder_config.create_timing_cache(b"")
        builder_config.set_timing_cache(cache, False)
    elif blob:
        log.info("reusing timing cache %s (%.1f kB)", path, len(blob) / 1e3)
    return cache


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    config: EngineBuildConfig,
    *,
    onnx_final_path: str | os.PathLike | None = None,
    engine_final_path: str | os.PathLike | None = None,
    extra: dict | None = None,
) -> dict[str, Any]:
    """Build a TensorRT engine from the FP16 graph `onnx_path`, write it and its sidecar.

    `onnx_final_path` / `engine_final_path` are where the graph and engine will live (they may
    sit under temporary names while the export is verified): the sidecar records the graph's
    path and sha256 and the command that rebuilds the engine there. `extra` entries are added
    to the sidecar. Returns the sidecar dict.
    Raises ExportError with TensorRT's messages when parsing or building fails.

    Not yet run on a GPU.
    """
    import tensorrt as trt

    from cyclemask.image_files import write_bytes_atomic

    src = Path(onnx_path)
    dst = Path(engine_path)
    meta = read_onnx_metadata(src)
    image_size = meta.get("image_size")
    if not isinstance(image_size, int):
        raise ExportError(f"{src}: graph metadata lacks image_size; export it with cyclemask-export")
    major = tensorrt_major(trt.__version__)
    if major < 10:
        raise ExportError(f"TensorRT {trt.__version__} is not supported: cyclemask needs TensorRT 10 or 11")
    if config.typing == "weak-fp16" and major >= 11:
        raise ExportError(
            f"typing 'weak-fp16' needs TensorRT 10.x (BuilderFlag.FP16); TensorRT {trt.__version__} builds strongly "
            "typed networks only: use the default 'strong' with the FP16 graph"
        )
    name, cc = gpu_identity()
    t0 = time.perf_counter()
    logger = make_logger()
    init_plugins(trt)
    builder = trt.Builder(logger)
    flags = 0
    if config.typing == "strong":
        # Required on 10.x for the graph's precisions to be kept; accepted and ignored on 11.x.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    native_flag = getattr(getattr(trt, "OnnxParserFlag", None), "NATIVE_INSTANCENORM", None)
    if native_flag is not None:
        if config.instance_norm == "native":
            parser.set_flag(native_flag)
        else:
            parser.clear_flag(native_flag)
    elif config.instance_norm == "plugin":
        raise ExportError(f"TensorRT {trt.__version__} has no NATIVE_INSTANCENORM parser flag: cannot select the plugin")
    if not parser.parse_from_file(str(src)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"{src}: TensorRT's ONNX parser failed: {'; '.join(errors)[:800] or 'no message'}")
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise ExportError(f"{src}: expected one input and one output; TensorRT sees {network.num_inputs} and {network.num_outputs}")
    inp, out = network.get_input(0), network.get_output(0)
    if inp.name != INPUT_NAME or out.name != OUTPUT_NAME:
        raise ExportError(f"{src}: tensors are {inp.name!r} -> {out.name!r}; expected {INPUT_NAME!r} -> {OUTPUT_NAME!r}")
    for t in (inp, out):
        if t.dtype != trt.DataType.UINT8:
            raise ExportError(f"{src}: TensorRT sees {t.name!r} as {t.dtype}; the contract says UINT8")

    bc = builder.create_builder_config()
    if config.workspace_gib is not None:
        bc.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_gib * (1 << 30)))
    if config.optimization_level is not None:
        bc.builder_optimization_level = config.optimization_level
    if config.typing == "weak-fp16":
        bc.set_flag(trt.BuilderFlag.FP16)  # 10.x only (checked above)
    shapes = config.profile.shapes(image_size)
    for k in range(config.profiles):
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, shapes["min"], shapes["opt"], shapes["max"])
        if bc.add_optimization_profile(profile) != k:
            raise ExportError(f"TensorRT rejected optimization profile {k + 1} of {config.profiles} ({shapes})")
    cache = _load_timing_cache(trt, bc, config.timing_cache)

    log.info("building TensorRT %s engine for %s (%s) from %s, batch %d/%d/%d, %d profile(s) ...", trt.__version__,
             name, cc, src.name, config.profile.min_batch, config.profile.opt_batch, config.profile.max_batch,
             config.profiles)
    serialized = builder.build_serialized_network(network, bc)
    if serialized is None:
        raise ExportError(f"{src}: TensorRT could not build an engine: {'; '.join(logger.errors)[:800] or 'see its log above'}")
    data = memoryview(serialized).tobytes()
    write_bytes_atomic(dst, data)
    if config.timing_cache is not None:
        config.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(config.timing_cache, memoryview(cache.serialize()).tobytes())
    seconds = time.perf_counter() - t0

    import torch

    final_onnx = Path(onnx_final_path) if onnx_final_path else src
    sidecar: dict[str, Any] = {
        "format": ENGINE_FORMAT,
        "format_version": ENGINE_FORMAT_VERSION,
        "tensorrt_version": trt.__version__,
        "version_compatible": False,
        "gpu_name": name,
        "compute_capability": cc,
        "cuda_version": torch.version.cuda,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "image_size": image_size,
        "profile": shapes,
        "profiles": config.profiles,
        "typing": config.typing,
        "instance_norm": config.instance_norm,
        "precision": meta.get("precision", "fp16"),
        "direction": meta.get("direction"),
        "method": meta.get("method", "cyclegan"),  # the runtime's paste follows it (restore: hole)
        "onnx_path": str(final_onnx),
        "onnx_sha256": file_sha256(src),
        "checkpoint_sha256": meta.get("checkpoint_sha256"),
        "engine_sha256": file_sha256(dst),
        "engine_bytes": len(data),
        "timing_cache": str(config.timing_cache) if config.timing_cache else None,
        "build_seconds": round(seconds, 1),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rebuild_command": engine_rebuild_command(final_onnx, (Path(engine_final_path) if engine_final_path else dst).parent,
                                                  config.profiles),
    }
    sidecar.update(extra or {})
    write_json_atomic(sidecar_path(dst), sidecar)
    log.info("built %s (%.1f MB) in %.0f s", dst.name, len(data) / 1e6, seconds)
    return sidecar
