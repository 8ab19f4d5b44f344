"""Choosing a backend: the registry, what kind a model file is, `auto`, and the CPU probe.

The registry (`REGISTRY`) maps each backend name to the artefact kinds it runs, a factory that
builds it from `BackendOptions`, and `available()`, which says cheaply (no model loaded, nothing
heavy imported) whether it can run here and why not. `cyclemask-run --backend`, the benchmark's
variants and the parity suite all iterate it, so a backend added here shows up everywhere
(docs/ARCHITECTURE.md, "Adding a backend").

`create_backend` maps `--backend auto|trt|ort|torch|openvino` and a model file to a backend and
says why it chose what it chose. On a machine without a CUDA GPU, `auto` with an ONNX graph
picks between ONNX Runtime and OpenVINO by what is installed, the graph's size and a short
measured warm-up of both (remembered per graph and machine), keeping OpenVINO unless ONNX Runtime
is more than 10 % faster. A quality-changing precision
(`--precision bf16`) is only ever asked for, never picked. Nothing here imports torch unless a
checkpoint or an engine is to be run.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from cyclemask.errors import BackendError, ConfigError

from . import openvino as openvino_backend
from . import ort as ort_backend
from . import torch as torch_backend
from . import trt as trt_backend
from .base import KIND_NAMES, Backend, BackendOptions

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
GRAPH_SUFFIXES = (".onnx",)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
_RUNS = {"engine": "TensorRT engines", "graph": "ONNX graphs", "checkpoint": "checkpoints"}


@dataclass(frozen=True)
class BackendSpec:
    """A backend as the registry knows it."""

    name: str
    kinds: tuple[str, ...]  # artefact kinds it runs: "graph", "engine", "checkpoint"
    factory: Callable[[Path, "str | None", BackendOptions], Backend]
    available: Callable[[], "str | None"]  # None when it can run here, else why not
    summary: str
    #: --precision values it runs (a graph or engine otherwise runs its own precision; bf16:
    #: CPUs with native BF16 only, checked when the backend is built or loaded).
    precisions: tuple[str, ...] = ("fp32",)


REGISTRY: dict[str, BackendSpec] = {
    "trt": BackendSpec("trt", ("engine",), trt_backend.from_options, trt_backend.available,
                       "TensorRT engine on several CUDA streams"),
    "ort": BackendSpec("ort", ("graph",), ort_backend.from_options, ort_backend.available,
                       "ONNX Runtime (TensorRT, CUDA or CPU execution provider)"),
    "torch": BackendSpec("torch", ("checkpoint",), torch_backend.from_options, torch_backend.available,
                         "PyTorch eager, CUDA graphs or torch.compile", torch_backend.TORCH_PRECISIONS),
    "openvino": BackendSpec("openvino", ("graph",), openvino_backend.from_options, openvino_backend.available,
                            "OpenVINO on the CPU", tuple(openvino_backend.OV_PRECISIONS)),
}
#: What --backend takes (the CLI's choices, fixed at import).
BACKEND_NAMES = ("auto", *REGISTRY)


def precision_choices() -> tuple[str, ...]:
    """What --precision takes: every precision a registered backend runs, fp32 first."""
    return tuple(dict.fromkeys(p for spec in REGISTRY.values() for p in ("fp32", *spec.precisions)))


def cuda_gpu_present() -> bool:
    """Whether a CUDA GPU is visible, without importing torch when it is not loaded already
    (a graph run on ONNX Runtime or OpenVINO must not pay for torch): the NVIDIA driver's device
    files, unless CUDA_VISIBLE_DEVICES hides every GPU."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def model_kind(path: str | os.PathLike) -> str:
    """'engine', 'graph' or 'checkpoint', by suffix, then by the file's first bytes."""
    p = Path(path)
    if not p.exists():
        raise BackendError(f"{p}: no such model file")
    if p.is_dir():
        raise BackendError(f"{p}: is a folder; --model takes a graph (.onnx), engine (.engine/.plan) or checkpoint (.pt/.pth)")
    suffix = p.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if suffix in GRAPH_SUFFIXES:
        return "graph"
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    with open(p, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save: zip, or a legacy pickle
        return "checkpoint"
    raise BackendError(
        f"{p}: cannot tell what kind of model this is from its name: use .onnx for graphs, "
        f"{'/'.join(ENGINE_SUFFIXES)} for TensorRT engines, {'/'.join(CHECKPOINT_SUFFIXES)} for checkpoints"
    )


def create_backend(
    model: str | os.PathLike, backend: str = "auto", direction: str | None = None,
    options: BackendOptions | None = None,
) -> tuple[Backend, str]:
    """Build the backend for a model file; returns it and why it was chosen.

    The backend is not activated, except when `auto` measured candidates to choose (then the
    winner comes back already active: activate() again is a no-op).
    """
    opts = options or BackendOptions()
    if backend != "auto" and backend not in REGISTRY:
        raise ConfigError(f"backend must be one of {', '.join(('auto', *REGISTRY))}; got {backend!r}")
    path = Path(model)
    kind = model_kind(path)
    if backend != "auto" and kind not in REGISTRY[backend].kinds:
        runs = " and ".join(_RUNS[k] for k in REGISTRY[backend].kinds)
        raise BackendError(
            f"{path}: is {KIND_NAMES[kind]}, but --backend {backend} runs {runs} "
            f"(use --backend auto, or export the model: cyclemask-export)"
        )
    if kind != "checkpoint" and opts.image_size is not None:
        raise ConfigError(f"--size applies to checkpoints only: {path} fixes its own image size")
    if opts.compile and kind != "checkpoint":
        raise ConfigError(f"--compile applies to the torch backend (checkpoints): {path} is {KIND_NAMES[kind]}")
    _check_precision(path, kind, backend, opts.precision)
    if backend != "auto":
        return REGISTRY[backend].factory(path, direction, opts), f"--backend {backend}"
    if kind == "engine":
        why = REGISTRY["trt"].available()
        if why:
            raise BackendError(f"{path}: a TensorRT engine needs TensorRT and a CUDA GPU: {why}; "
                               "run the .onnx graph instead (--model model.onnx)")
        return (REGISTRY["trt"].factory(path, direction, opts),
                "auto: trt, because the model is a TensorRT engine (the fastest backend)")
    if kind == "graph":
        return _auto_graph(path, direction, opts)
    why = REGISTRY["torch"].available()
    if why:
        raise BackendError(f"{path}: a checkpoint runs on the torch backend: {why}; or run an exported graph "
                           "(cyclemask-export, then --model the .onnx)")
    device, why_dev = torch_backend.resolve_device(opts.device)
    be = REGISTRY["torch"].factory(path, direction, replace(opts, device=device))
    reason = f"auto: torch on {device}, because the model is a checkpoint and {why_dev}"
    if device == "cpu" and not opts.compile:
        reason += ("; on a CPU an exported graph runs faster (cyclemask-export, then --model "
                   "the .onnx: auto picks OpenVINO or ONNX Runtime)")
    return be, reason


def _check_precision(path: Path, kind: str, backend: str, precision: str) -> None:
    """--precision against what the model and backend can run: quality-changing precisions are
    asked for, never picked, and one that cannot run here is an error, not a silent FP32 run."""
    known = list(dict.fromkeys(p for spec in REGISTRY.values() for p in spec.precisions))
    if precision not in known:
        raise ConfigError(f"precision must be one of {', '.join(known)}; got {precision!r}")
    if precision == "fp32":
        return
    if kind == "engine":
        raise ConfigError(f"--precision {precision}: {path} is a TensorRT engine, which runs the precision it was built with")
    if kind == "graph" and precision == "fp16":
        raise ConfigError(f"--precision fp16: {path} is a graph and runs its own precision; for FP16 run the FP16 graph "
                          "or engine (cyclemask-export --fp16)")
    if backend != "auto" and precision not in REGISTRY[backend].precisions:
        runs_it = [n for n, spec in REGISTRY.items() if precision in spec.precisions and kind in spec.kinds]
        raise ConfigError(f"--precision {precision}: --backend {backend} runs a graph in its own precision; "
                          f"--precision {precision} runs on --backend {' or '.join(runs_it) or 'none of them'}")


def _ort(path: Path, direction: str | None, opts: BackendOptions) -> Backend:
    return REGISTRY["ort"].factory(path, direction, opts)


def _openvino(path: Path, direction: str | None, opts: BackendOptions) -> Backend:
    return REGISTRY["openvino"].factory(path, direction, opts)


def _auto_graph(path: Path, direction: str | None, opts: BackendOptions) -> tuple[Backend, str]:
    """auto for an ONNX graph: ORT on a GPU machine; on a CPU machine ORT or OpenVINO."""
    has_ort = REGISTRY["ort"].available() is None
    has_ov = REGISTRY["openvino"].available() is None
    if opts.precision == "bf16":
        if opts.ort_provider != "auto":
            raise ConfigError("--precision bf16 runs on OpenVINO; ONNX Runtime (--ort-provider) does not run BF16")
        if not has_ov:
            raise BackendError(f"{path}: --precision bf16 runs a graph on OpenVINO, which is not installed "
                               "(pip install openvino)")
        return _openvino(path, direction, opts), ("auto: openvino, because --precision bf16 was asked for and "
                                                  "OpenVINO is the graph runtime that runs BF16")
    if opts.ort_provider != "auto":
        return _ort(path, direction, opts), (f"auto: ort, because the model is an ONNX graph and "
                                             f"--ort-provider {opts.ort_provider} was given")
    gpu = cuda_gpu_present()
    if gpu or not has_ov:
        why = ("a CUDA GPU is present" if gpu
               else "openvino is not installed (pip install openvino for the faster CPU path)")
        if not has_ort:
            raise BackendError(f"{path}: an ONNX graph needs onnxruntime or openvino, and neither is installed "
                               "(pip install onnxruntime, or pip install openvino on a CPU machine)")
        return _ort(path, direction, opts), (f"auto: ort, because the model is an ONNX graph and {why}; the best "
                                             "ONNX Runtime provider that really loads is used")
    if not has_ort:
        return _openvino(path, direction, opts), ("auto: openvino, because the model is an ONNX graph, no CUDA "
                                                  "GPU is visible and onnxruntime is not installed")
    if not opts.probe:
        return _openvino(path, direction, opts), (
            "auto: openvino, because the model is an ONNX graph, no CUDA GPU is visible and OpenVINO is "
            "the faster CPU runtime for these generators (1.1-1.6x ONNX Runtime in our runs; --no-probe: not "
            "timed on this machine)")
    return _probe_cpu(path, direction, opts)


#: The CPU probe: untimed calls, then timed rounds of single images (as many in flight as the
#: backend keeps) for at least PROBE_SECONDS each. A graph of more than PROBE_HEAVY_GMACS per
#: image (estimated from the file, engine/model_cache.py) is not timed at all: the warm-up would
#: cost seconds of the user's run (an unused inference of half a second per image for the full
#: generator on 2 cores) to confirm what the benchmarks show for such models (OpenVINO ahead of
#: ORT on the CPU). A graph that records no image size is judged by its first OpenVINO image
#: (PROBE_HEAVY_S). A measured choice is remembered per graph content and machine, so only the
#: first run of a graph pays for it.
PROBE_UNTIMED, PROBE_ROUNDS, PROBE_SECONDS, PROBE_HEAVY_GMACS, PROBE_HEAVY_S = 1, 2, 0.2, 10.0, 0.25
#: OpenVINO is kept unless another CPU backend runs more than this many times as many images per
#: second. Two warm-ups of the same graph on the same machine differ by more than the two runtimes
#: often do (OpenVINO 106.8 ms, then 121.1 ms per image): without a margin, `auto` flipped
#: between them on noise, and with it the outputs' exact bytes.
PROBE_MARGIN = 1.10


def cpu_winner(per_image: dict[str, float]) -> str:
    """The CPU backend to run, from seconds (or ms) per image by name: OpenVINO unless another
    is faster by more than PROBE_MARGIN; among the others, the fastest."""
    timed = {n: t for n, t in per_image.items() if np.isfinite(t)}
    if not timed:
        raise ValueError(f"no finite timing among {per_image!r}")
    fastest = min(timed, key=timed.get)
    if "openvino" in timed and timed["openvino"] <= timed[fastest] * PROBE_MARGIN:
        return "openvino"
    return fastest


def _probe_cpu(path: Path, direction: str | None, opts: BackendOptions) -> tuple[Backend, str]:
    """Activate OpenVINO and ORT (CPU) on the graph, time a few single-image calls of each,
    alternating so that other load on the machine hits both alike, keep the faster one active.

    A heavy graph (the full generator) goes to OpenVINO untimed and not yet activated; a choice
    measured in an earlier run on this machine is reused (engine/model_cache.py)."""
    import time

    from ..model_cache import cached_probe, estimated_gmacs, graph_sha256, probe_key, remember_probe

    gmacs = estimated_gmacs(path)
    if gmacs is not None and gmacs > PROBE_HEAVY_GMACS:
        return _openvino(path, direction, opts), (
            f"auto: openvino, because the model is an ONNX graph, no CUDA GPU is visible and at ~{gmacs:.0f} GMACs "
            "per image OpenVINO is the faster CPU runtime (benchmarks/cpu_backends.py); not timed, to save start-up")
    cpu = replace(opts, ort_provider="cpu")
    key = probe_key(graph_sha256(path), opts.threads, opts.ov_mode) if opts.cache else None
    cached = cached_probe(key) if key else None
    if cached is not None and cached["winner"] in ("openvino", "ort"):
        ms = cached["ms"]
        timed = {n: float(ms[n]) for n in ("openvino", "ort") if isinstance(ms.get(n), (int, float))}
        # Judged again by today's rule: a choice remembered under an older one (the faster by
        # any margin) is not kept on noise.
        winner = cpu_winner(timed) if len(timed) == 2 else cached["winner"]
        other = "ort" if winner == "openvino" else "openvino"
        figures = f"{ms.get(winner, float('nan')):.1f} ms per image vs {other} {ms.get(other, float('nan')):.1f} ms"
        be = _openvino(path, direction, opts) if winner == "openvino" else _ort(path, direction, cpu)
        return be, (f"auto: {winner}, because the model is an ONNX graph, no CUDA GPU is visible, and a warm-up "
                    f"of this graph on this machine ({cached.get('when', 'earlier')}) took {figures} (remembered; "
                    "--no-cache times it again, --no-probe takes OpenVINO untimed)")
    ov = _openvino(path, direction, opts)
    t_all = time.perf_counter()
    try:
        ov.activate()
        x = np.zeros((1, ov.image_size, ov.image_size, 3), np.uint8)
        t0 = time.perf_counter()
        for _ in range(PROBE_UNTIMED):
            ov.infer(x)
        first = (time.perf_counter() - t0) / PROBE_UNTIMED
    except BackendError as exc:
        ov.deactivate()
        return _ort(path, direction, cpu), (
            f"auto: ort, because the model is an ONNX graph, no CUDA GPU is visible and OpenVINO failed to "
            f"load it ({exc})")
    if gmacs is None and first > PROBE_HEAVY_S:  # a graph that records no size: its first image tells
        return ov, (
            f"auto: openvino, because the model is an ONNX graph and no CUDA GPU is visible; its first image "
            f"took {first:.2f} s here, too long to time ONNX Runtime against it too, and OpenVINO is the faster "
            "CPU runtime for generators of this size (benchmarks/cpu_backends.py)")
    cands: dict[str, Backend] = {"openvino": ov, "ort": _ort(path, direction, cpu)}
    try:
        ort_be = cands["ort"]
        ort_be.activate()
        for _ in range(PROBE_UNTIMED):
            ort_be.infer(x)
        best = _time_per_image(cands, x)
    except BaseException:
        for be in cands.values():
            be.deactivate()
        raise
    winner = cpu_winner(best)
    for name, be in cands.items():
        if name != winner:
            be.deactivate()
    spent = time.perf_counter() - t_all
    if key:
        remember_probe(key, winner, {n: 1000 * v for n, v in best.items()})
    other = next(n for n in best if n != winner)
    ratio = best[other] / best[winner]
    kept = ""
    if winner == "openvino" and ratio < 1:
        kept = f"; OpenVINO is kept unless another runtime is more than {PROBE_MARGIN - 1:.0%} faster"
    return cands[winner], (
        f"auto: {winner}, because the model is an ONNX graph, no CUDA GPU is visible, and in a {spent:.1f} s "
        f"warm-up it took {1000 * best[winner]:.1f} ms per image vs {other} {1000 * best[other]:.1f} ms "
        f"({ratio:.2f}x){kept}")


def _time_per_image(cands: dict[str, Backend], x: np.ndarray) -> dict[str, float]:
    """Seconds per image of each active candidate: the best of PROBE_ROUNDS rounds, the
    candidates alternating so that other load on the machine hits them alike."""
    import time

    best: dict[str, float] = {}
    for _ in range(PROBE_ROUNDS):
        for name, be in cands.items():
            # Single images, as many in flight as the backend keeps (OpenVINO's throughput
            # mode runs them on separate streams), for at least PROBE_SECONDS: one call of
            # a large generator, dozens of a small one (a single tiny call is all noise).
            window = max(1, be.max_in_flight)
            n, t0 = 0, time.perf_counter()
            while n == 0 or time.perf_counter() - t0 < PROBE_SECONDS:
                handles = [be.submit(x) for _ in range(window)]
                for h in handles:
                    h.result()
                n += window
            per_image = (time.perf_counter() - t0) / n
            best[name] = min(best.get(name, float("inf")), per_image)
    return best
