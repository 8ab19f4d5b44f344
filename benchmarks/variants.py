"""Backend variants: the one list of ways to run a generator that the parity suite
(tests/parity), the throughput benchmark (benchmarks/throughput.py) and the device check
(scripts/device_check.sh) all walk through.

A `Variant` names a backend of `cyclemask.engine.backends` (built with `create_backend`, so the
benchmark measures what `cyclemask-run` runs), the artefact it runs (checkpoint, FP32 graph,
FP16 graph, INT8 graph, TensorRT engine), its precision (which selects the parity bounds) and the
`BackendOptions` it sets. `variants()` returns the known variants plus, for every backend in the
runtime's registry (`engine.backends.REGISTRY`) that this file does not know yet, one generic
variant per artefact kind the registry says it runs: a backend registered there later shows up
as rows and parity cases without editing this file, and its `available()` says where it
cannot run.

`Variant.unavailable()` answers "can this run here?" cheaply (no model loaded) with a reason;
`Artefacts` exports a generator to the files the variants need, lazily, in a work folder.

This module is not part of the installed package: import it with the repository root on
sys.path (`from benchmarks.variants import ...`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: What a variant runs. The FP16 graph keeps InstanceNorm and the uint8 pre/post in FP32
#: (export/fp16.py); the engine is built from that FP16 graph; the INT8 graph is the FP32 graph
#: quantised by NNCF as `cyclemask-export --int8` does (export/quantize.py).
ARTEFACT_KINDS = ("checkpoint", "graph-fp32", "graph-fp16", "graph-int8", "engine")
#: "fp16-trt": FP16 through TensorRT's own kernel choice (engine, ORT's TensorRT EP), which
#: export/verify.py bounds separately (ENGINE_BOUNDS) from the FP16 graph on ONNX Runtime.
#: "bf16" and "int8": the CPU's opt-in low precisions (BF16_BOUNDS, INT8_BOUNDS).
PRECISIONS = ("fp32", "fp16", "fp16-trt", "bf16", "int8")
#: Precisions whose bounds hold for trained generators only: random weights give noise-like
#: outputs that no 8-bit format keeps (export/verify.py).
LOW_PRECISIONS = ("bf16", "int8")
#: Calibration faces of the INT8 graph: the last ones (sorted) of the direction's faces, so
#: never among the first ones the parity suite compares on.
INT8_CALIB_FACES = 32
DEVICES = ("cpu", "cuda", "any")


class ArtefactUnavailable(Exception):
    """An artefact cannot be made on this machine (a missing optional package, no TensorRT)."""


@dataclass(frozen=True)
class ModelSpec:
    """A generator architecture and input size to benchmark or check."""

    name: str
    ngf: int
    n_blocks: int
    image_size: int

    def config(self):
        from cyclemask.config import GeneratorConfig

        return GeneratorConfig(ngf=self.ngf, n_blocks=self.n_blocks)

    def describe(self) -> str:
        return f"ngf {self.ngf}, {self.n_blocks} blocks, {self.image_size}px"


#: "full" is the paper's generator (ResNet-9, ngf 64) at its training size; "small" a CPU-sized
#: one (ngf 16, 3 blocks, 128 px); "tiny" is for dry runs and tests.
MODELS = {
    "full": ModelSpec("full", 64, 9, 256),
    "small": ModelSpec("small", 16, 3, 128),
    "tiny": ModelSpec("tiny", 8, 2, 32),
}


def seeded_generator(config, seed: int = 0, head_gain: float = 1.0):
    """A generator with the reference initialisation under `seed`, in eval mode.

    head_gain > 1 scales the last convolution: the output then spans 0..255 with part of it
    saturated, as a trained generator's does (random weights alone give a narrower range),
    so rounding differences between backends show where they would in use.
    """
    import torch

    from cyclemask.models import build_generator

    torch.manual_seed(seed)
    g = build_generator(config).eval()
    if head_gain != 1.0:
        with torch.no_grad():
            g.model[-2].weight.mul_(float(head_gain))
    return g


@dataclass(frozen=True)
class Variant:
    """One way to run the generator: backend + artefact + options."""

    name: str
    backend: str  # a name in engine.backends.REGISTRY
    artefact: str  # one of ARTEFACT_KINDS
    precision: str  # one of PRECISIONS: which parity bounds apply
    device: str  # "cpu" | "cuda" | "any" (a backend this file does not know)
    options: tuple[tuple[str, Any], ...] = ()  # BackendOptions fields
    needs: tuple[str, ...] = ()  # "cuda", "tensorrt", "module:NAME", "ort-provider:NAME", "option:FIELD", "bf16:cpu|openvino"
    batch_bound: bool = False  # built for one batch size (CUDA graphs capture a fixed batch)
    generic: bool = False  # discovered in the registry, not described here
    slow: bool = False  # costly to build here (torch.compile: 15-30 s on 2 CPU cores): pytest -m slow
    note: str = ""

    def __post_init__(self) -> None:
        if self.artefact not in ARTEFACT_KINDS:
            raise ValueError(f"{self.name}: artefact must be one of {ARTEFACT_KINDS}; got {self.artefact!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"{self.name}: precision must be one of {PRECISIONS}; got {self.precision!r}")
        if self.device not in DEVICES:
            raise ValueError(f"{self.name}: device must be one of {DEVICES}; got {self.device!r}")

    @property
    def trained_only(self) -> bool:
        """Its bounds hold for trained generators only (LOW_PRECISIONS)."""
        return self.precision in LOW_PRECISIONS

    @property
    def markers(self) -> tuple[str, ...]:
        """pytest markers: gpu for CUDA variants, trt for those needing TensorRT."""
        out = []
        if self.device == "cuda" or "cuda" in self.needs:
            out.append("gpu")
        if "tensorrt" in self.needs:
            out.append("trt")
        if self.slow:
            out.append("slow")
        return tuple(out)

    def unavailable(self) -> str | None:
        """Why this variant cannot run on this machine, or None. Loads no model."""
        from cyclemask.engine.backends import REGISTRY

        spec = REGISTRY.get(self.backend)
        if spec is None:
            return f"the runtime has no backend {self.backend!r}"
        why = spec.available()
        if why:
            return why
        for need in self.needs:
            why = _missing(need)
            if why:
                return why
        return None

    def backend_options(self, *, max_batch: int | None = None, threads: int | None = None):
        from cyclemask.engine.backends import BackendOptions

        fields = {f.name for f in dataclasses.fields(BackendOptions)}
        opts = dict(self.options)
        unknown = sorted(set(opts) - fields)
        if unknown:
            raise ArtefactUnavailable(f"engine.backends.BackendOptions has no {', '.join(unknown)} option")
        if max_batch is not None:
            opts["max_batch"] = max_batch
        if threads is not None:
            opts["threads"] = threads
        return BackendOptions(**opts)

    def build(self, artefacts: "Artefacts", *, batch: int | None = None, threads: int | None = None):
        """The backend (not activated) through `create_backend`, and why it was chosen.

        Raises ArtefactUnavailable when the artefact cannot be made here; create_backend's own
        errors (BackendError, ConfigError) pass through.
        """
        from cyclemask.engine.backends import create_backend

        why = self.unavailable()
        if why:
            raise ArtefactUnavailable(why)
        path = artefacts.path(self.artefact)
        opts = self.backend_options(max_batch=batch if self.batch_bound else None, threads=threads)
        return create_backend(path, self.backend, artefacts.direction, opts)


def _missing(need: str) -> str | None:
    if need == "cuda":
        import torch

        return None if torch.cuda.is_available() else "needs a CUDA GPU; torch.cuda.is_available() is False"
    if need == "tensorrt":
        from cyclemask.engine.backends import tensorrt_status

        ok, why = tensorrt_status()
        return None if ok else f"needs TensorRT: {why}"
    kind, _, name = need.partition(":")
    if kind == "module":
        return None if importlib.util.find_spec(name) is not None else f"needs the Python package {name!r}, not installed here"
    if kind == "ort-provider":
        if importlib.util.find_spec("onnxruntime") is None:
            return "needs onnxruntime, not installed here"
        import onnxruntime as ort

        have = ort.get_available_providers()
        return None if name in have else f"this onnxruntime build has no {name} (it has {', '.join(have)})"
    if kind == "option":
        from cyclemask.engine.backends import BackendOptions

        fields = {f.name for f in dataclasses.fields(BackendOptions)}
        return None if name in fields else f"engine.backends.BackendOptions has no {name!r} option yet"
    if kind == "bf16" and name in ("cpu", "openvino"):
        # OpenVINO's own word decides whether its BF16 hint is honoured; torch goes by the CPU.
        from cyclemask.engine.cpu_features import bf16_support, openvino_capabilities

        ok, why = bf16_support(openvino_capabilities() or [] if name == "openvino" else None)
        return None if ok else f"needs native BF16: {why}"
    raise ValueError(f"unknown variant requirement {need!r}")


_ORT = ("module:onnxruntime",)
_FP16_GRAPH = ("module:onnxconverter_common",)
_INT8_GRAPH = ("module:nncf",)
_OV = ("module:openvino",)
_CUDA_FP16 = (("device", "cuda"), ("precision", "fp16"), ("channels_last", True))

KNOWN_VARIANTS: tuple[Variant, ...] = (
    Variant("torch-cpu-fp32", "torch", "checkpoint", "fp32", "cpu", (("device", "cpu"),)),
    Variant("ort-cpu-fp32", "ort", "graph-fp32", "fp32", "cpu", (("ort_provider", "cpu"),), _ORT),
    Variant("ort-cpu-fp16", "ort", "graph-fp16", "fp16", "cpu", (("ort_provider", "cpu"),), _ORT + _FP16_GRAPH,
            note="FP16 graph through inserted casts: checks numerics, not a fast path"),
    # torch.compile compiles for max_batch and pads partial batches: built per batch size.
    Variant("torch-cpu-fp32-compile", "torch", "checkpoint", "fp32", "cpu", (("device", "cpu"), ("compile", True)),
            ("option:compile",), batch_bound=True, slow=True),
    # OpenVINO reads the same FP32 graph as ORT; throughput mode keeps several batches in flight.
    Variant("openvino-cpu-fp32", "openvino", "graph-fp32", "fp32", "cpu", (("ov_mode", "throughput"),),
            ("module:openvino",)),
    Variant("openvino-cpu-fp32-latency", "openvino", "graph-fp32", "fp32", "cpu", (("ov_mode", "latency"),),
            ("module:openvino",)),
    # The CPU's opt-in low precisions (cyclemask-run --precision bf16, cyclemask-export --int8).
    Variant("openvino-cpu-bf16", "openvino", "graph-fp32", "bf16", "cpu", (("precision", "bf16"),),
            _OV + ("bf16:openvino",), note="the FP32 graph under OpenVINO's BF16 precision hint"),
    Variant("torch-cpu-bf16", "torch", "checkpoint", "bf16", "cpu", (("device", "cpu"), ("precision", "bf16")),
            ("bf16:cpu",)),
    Variant("openvino-cpu-int8", "openvino", "graph-int8", "int8", "cpu", (), _OV + _INT8_GRAPH),
    Variant("ort-cpu-int8", "ort", "graph-int8", "int8", "cpu", (("ort_provider", "cpu"),), _ORT + _INT8_GRAPH),
    Variant("torch-cuda-fp32", "torch", "checkpoint", "fp32", "cuda", (("device", "cuda"),), ("cuda",)),
    Variant("torch-cuda-fp32-graphs", "torch", "checkpoint", "fp32", "cuda",
            (("device", "cuda"), ("cuda_graphs", True)), ("cuda",), batch_bound=True),
    Variant("torch-cuda-fp16", "torch", "checkpoint", "fp16", "cuda", _CUDA_FP16, ("cuda",)),
    Variant("torch-cuda-fp16-graphs", "torch", "checkpoint", "fp16", "cuda", _CUDA_FP16 + (("cuda_graphs", True),),
            ("cuda",), batch_bound=True),
    Variant("torch-cuda-fp16-compile", "torch", "checkpoint", "fp16", "cuda", _CUDA_FP16 + (("compile", True),),
            ("cuda", "option:compile"), batch_bound=True),
    Variant("ort-cuda-fp32", "ort", "graph-fp32", "fp32", "cuda", (("ort_provider", "cuda"),),
            ("cuda",) + _ORT + ("ort-provider:CUDAExecutionProvider",)),
    Variant("ort-cuda-fp16", "ort", "graph-fp16", "fp16", "cuda", (("ort_provider", "cuda"),),
            ("cuda",) + _ORT + _FP16_GRAPH + ("ort-provider:CUDAExecutionProvider",)),
    Variant("ort-trt-ep-fp16", "ort", "graph-fp16", "fp16-trt", "cuda", (("ort_provider", "tensorrt"),),
            ("cuda", "tensorrt") + _ORT + _FP16_GRAPH + ("ort-provider:TensorrtExecutionProvider",), batch_bound=True),
    Variant("trt-fp16", "trt", "engine", "fp16-trt", "cuda", (), ("cuda", "tensorrt") + _FP16_GRAPH),
)


#: Which artefacts of ARTEFACT_KINDS a registry kind covers.
_KIND_ARTEFACTS = {"checkpoint": ("checkpoint",), "graph": ("graph-fp32", "graph-fp16"), "engine": ("engine",)}


def variants() -> list[Variant]:
    """Known variants, then generic ones for registered backends this file does not describe."""
    from cyclemask.engine.backends import REGISTRY

    known = {v.backend for v in KNOWN_VARIANTS}
    out = list(KNOWN_VARIANTS)
    for name, spec in REGISTRY.items():
        if name in known:
            continue
        for kind in spec.kinds:
            for art in _KIND_ARTEFACTS[kind]:
                prec = {"graph-fp16": "fp16", "engine": "fp16-trt"}.get(art, "fp32")
                out.append(Variant(f"{name}-{art}", name, art, prec, "any",
                                   needs=_FP16_GRAPH if art in ("graph-fp16", "engine") else (), generic=True,
                                   note=f"registered in engine.backends.REGISTRY: {spec.summary}"))
    return out


def select(names: list[str] | None = None, device: str = "all") -> list[Variant]:
    """Variants by name (fnmatch patterns) and device ("cpu", "cuda", "all")."""
    import fnmatch

    if device not in ("cpu", "cuda", "all"):
        raise ValueError(f"device must be cpu, cuda or all; got {device!r}")
    found = variants()
    if names:
        unknown = [n for n in names if not any(fnmatch.fnmatchcase(v.name, n) for v in found)]
        if unknown:
            raise KeyError(f"no variant matches {', '.join(unknown)}; known: {', '.join(v.name for v in found)}")
        found = [v for v in found if any(fnmatch.fnmatchcase(v.name, n) for n in names)]
    if device != "all":
        found = [v for v in found if v.device in (device, "any")]
    return found


@dataclass
class Artefacts:
    """The files of one generator that variants run, exported on first use into `workdir`.

    `engine_max_batch` sets the TensorRT profile (1..max). Paths are cached; a kind that cannot
    be made here raises ArtefactUnavailable with the reason (and keeps raising it).
    """

    generator: Any
    image_size: int
    workdir: Path
    direction: str = "mask"
    engine_max_batch: int = 32
    _paths: dict[str, Path] = field(default_factory=dict)
    _missing: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def path(self, kind: str) -> Path:
        import time

        if kind not in ARTEFACT_KINDS:
            raise ValueError(f"artefact kind must be one of {ARTEFACT_KINDS}; got {kind!r}")
        if kind in self._paths:
            return self._paths[kind]
        if kind in self._missing:
            raise ArtefactUnavailable(self._missing[kind])
        t0 = time.perf_counter()
        try:
            p = self._make(kind)
        except ArtefactUnavailable as exc:
            self._missing[kind] = str(exc)
            raise
        self.seconds[kind] = round(time.perf_counter() - t0, 2)
        self._paths[kind] = p
        return p

    def _make(self, kind: str) -> Path:
        d, s = self.workdir, self.image_size
        if kind == "checkpoint":
            from cyclemask.checkpoint import save_generators

            p = d / "generators.pt"
            save_generators(p, {self.direction: self.generator}, extra={"image_size": s})
            return p
        if kind == "graph-fp32":
            if importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnx") is None:
                raise ArtefactUnavailable("the ONNX export needs the onnx and onnxscript packages, not installed here")
            from cyclemask.export.onnx import export_onnx

            log.info("exporting the FP32 graph (%dpx) ...", s)
            return Path(export_onnx(self.generator, d / f"{self.direction}.onnx", image_size=s,
                                    metadata={"direction": self.direction}))
        if kind == "graph-fp16":
            if importlib.util.find_spec("onnxconverter_common") is None:
                raise ArtefactUnavailable("the FP16 graph needs the onnxconverter-common package, not installed here")
            from cyclemask.export.fp16 import to_fp16

            return Path(to_fp16(self.path("graph-fp32"), d / f"{self.direction}.fp16.onnx"))
        if kind == "graph-int8":
            if importlib.util.find_spec("nncf") is None:
                raise ArtefactUnavailable("the INT8 graph needs NNCF (pip install 'cyclemask[int8]'), not installed here")
            from benchmarks.inputs import calibration_faces
            from cyclemask.export.quantize import Int8Config, quantize_graph

            calib = calibration_faces(s, INT8_CALIB_FACES, self.direction)
            log.info("quantising the FP32 graph to INT8 on %d faces ...", len(calib))
            return Path(quantize_graph(self.path("graph-fp32"), d / f"{self.direction}.int8.onnx", calib,
                                       Int8Config(calib_count=len(calib))))
        # engine
        from cyclemask.engine.backends import tensorrt_status
        from cyclemask.export.tensorrt import EngineBuildConfig, EngineProfile, build_engine

        ok, why = tensorrt_status()
        if not ok:
            raise ArtefactUnavailable(f"a TensorRT engine needs TensorRT: {why}")
        m = self.engine_max_batch
        p = d / f"{self.direction}.fp16.engine"
        cfg = EngineBuildConfig(profile=EngineProfile(1, min(8, m), m), timing_cache=d / "timing.cache")
        log.info("building the TensorRT engine (%dpx, batch 1..%d) ...", s, m)
        build_engine(self.path("graph-fp16"), p, cfg)
        return p

