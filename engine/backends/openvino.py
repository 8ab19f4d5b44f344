"""OpenVINO backend: the exported uint8 ONNX graph on the OpenVINO CPU runtime.

OpenVINO reads the .onnx file directly (no conversion step, no second artefact), so it runs the
very graph the ORT backend and the TensorRT build start from: uint8 NHWC in and out, the
normalisation, rounding and clamping inside the graph, a dynamic batch dimension.

Two modes, mapped onto OpenVINO's PERFORMANCE_HINT:

- "latency": one infer request, all threads on it: lowest time per batch (single images,
  interactive use).
- "throughput": several streams, each its own infer request; `submit()` splits a batch over
  the free requests, starts the parts asynchronously and returns at once, so every stream works
  on each batch and the pipeline can prepare the next one meanwhile (image folders and videos);
  batches of one image run on separate requests side by side.

INFERENCE_NUM_THREADS defaults to the CPUs this process may run on (sched_getaffinity, so a
container's or taskset's limit is respected), or `threads` when given.

Precision: FP32 by default (INFERENCE_PRECISION_HINT f32: OpenVINO's own default on CPUs with
AVX512-BF16 or AMX is BF16, which changes results). `precision="bf16"` is the opt-in: about 2x
faster on such CPUs at a verified error (README, "On a CPU"); on a CPU without native BF16 it is
an error, not a silent FP32 run. An INT8 graph (cyclemask-export --int8) runs its quantised
layers in INT8 under either setting.

Model cache: `cache_dir="auto"` keeps the compiled model in a folder keyed on the graph file's
sha256 (engine/model_cache.py) and compiles from the file path, so that a later run of the same
graph loads the blob instead of reading and compiling the ONNX file.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from cyclemask.artifacts import TensorSpec, check_graph_io
from cyclemask.errors import BackendError, ConfigError, CycleMaskError, own_module_missing

from ..openvino_import import import_openvino
from .base import Backend, BackendOptions, read_graph_metadata

log = logging.getLogger(__name__)

OV_MODES = ("latency", "throughput")
OV_DEVICES = ("CPU",)
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # --precision -> INFERENCE_PRECISION_HINT


def available() -> str | None:
    """Why this backend cannot run here (None: it can)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install openvino, or pip install 'cyclemask[openvino]')"
    return None


def from_options(path: Path, direction: str | None, opts: BackendOptions) -> "OpenVinoBackend":
    return OpenVinoBackend(path, direction, **opts.keywords("openvino"))


def usable_cpus() -> int:
    """CPUs this process may run on (affinity mask), falling back to os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _signal_stack() -> _StackT | None:
    """This thread's alternate signal stack as sigaltstack reports it (Linux), else None."""
    if _LIBC is None:
        return None
    st = _StackT()
    return st if _LIBC.sigaltstack(None, ctypes.byref(st)) == 0 else None


def current_signal_stack() -> tuple[int, int, int] | None:
    """(address, size, flags) of this thread's alternate signal stack (Linux), else None."""
    st = _signal_stack()
    return None if st is None else (st.ss_sp or 0, st.ss_size, st.ss_flags)


def keeps_signal_stack(fn):
    """Run fn with this thread's alternate signal stack put back afterwards.

    Why: OpenVINO's CPU plugin installs a buffer of its own as the calling thread's alternate
    signal stack when it compiles or runs a model, and puts the previous one back when that
    model is destroyed. With two models destroyed out of order (load A, load B, free A, free B)
    the thread is left with A's freed buffer as its signal stack (shown with openvino 2026.4).
    Python's signal handlers run on that stack, so the next signal (Ctrl-C, SIGCHLD) either
    kills the process with SIGSEGV or writes its frame into reused heap memory: the test
    suite crashed that way in later, unrelated tests (a corrupted tuple free list). Putting
    the caller's stack back after every OpenVINO call keeps it valid (OpenVINO's own handlers,
    if it ever raises a signal in this thread, then run on the caller's stack; the OpenVINO
    parity and pipeline tests pass this way).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        saved = _signal_stack()
        try:
            return fn(*args, **kwargs)
        finally:
            if saved is not None:
                # An enabled stack cannot be replaced while running on it: never the case here,
                # since this is not a signal handler.
                _LIBC.sigaltstack(ctypes.byref(saved), None)

    return wrapper


class _OvHandle:
    """One batch started on one or more infer requests (a batch split across the streams);
    `result()` waits for every part and copies the outputs out, in order."""

    def __init__(self, backend: "OpenVinoBackend", n: int, keep: np.ndarray) -> None:
        self._backend = backend
        self._n = n
        self._keep = keep  # the input must outlive the asynchronous runs
        self._requests: list = []
        self._value: np.ndarray | None = None

    @keeps_signal_stack
    def result(self) -> np.ndarray:
        if self._value is None:
            outs, error = [], None
            for request in self._requests:
                try:
                    # Every part is waited for, also after a failure, so that no request goes
                    # back to the free list while it still runs.
                    request.wait()
                    if error is None:
                        # The output tensor is the request's own buffer, reused by its next
                        # batch: copy.
                        outs.append(np.array(request.get_output_tensor(0).data, copy=True))
                except Exception as exc:
                    error = error or exc
                finally:
                    self._backend._release(request, self)
            self._requests, self._keep = [], None
            if error is not None:
                raise BackendError(f"{self._backend.model_path}: OpenVINO inference failed ({_first_line(error)})")
            self._value = outs[0] if len(outs) == 1 else np.concatenate(outs)
        return self._value


class OpenVinoBackend(Backend):
    """OpenVINO over an exported graph (input `image` uint8 [N, S, S, 3], output `translated`).

    mode: "latency" or "throughput" (see the module docstring); `requests`: infer requests in
    throughput mode (default: what OpenVINO calls optimal for the streams it chose).
    precision: "fp32" or "bf16" (the inference precision hint; see the module docstring).
    `cache_dir`: OpenVINO's model cache (CACHE_DIR), which keeps the compiled blob so the next
    load of the same graph is faster: a folder, "auto" (a folder per graph content under the
    cyclemask cache, engine/model_cache.py), or None (off).
    """

    name = "openvino"

    def __init__(
        self,
        model_path: str | os.PathLike,
        direction: str | None = None,
        *,
        mode: str = "throughput",
        threads: int | None = None,
        requests: int | None = None,
        device: str = "CPU",
        cache_dir: str | os.PathLike | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__(Path(model_path), direction)
        if mode not in OV_MODES:
            raise ConfigError(f"OpenVINO mode must be one of {', '.join(OV_MODES)}; got {mode!r}")
        if device not in OV_DEVICES:
            raise ConfigError(f"OpenVINO device must be one of {', '.join(OV_DEVICES)}; got {device!r}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1; got {threads}")
        if requests is not None and requests < 1:
            raise ConfigError(f"OpenVINO infer requests must be >= 1; got {requests}")
        if precision not in OV_PRECISIONS:
            raise ConfigError(f"OpenVINO precision must be one of {', '.join(OV_PRECISIONS)}; got {precision!r}")
        self.mode = mode
        self.threads = threads
        self.requests = requests
        self.device = device
        self.precision = precision
        self._cache_arg = cache_dir
        self.cache_dir = Path(cache_dir) if cache_dir and cache_dir != "auto" else None
        self.loaded_from_cache: bool | None = None
        self.bf16_evidence = ""
        self._runs_precision: str | None = None
        self.load_s: float | None = None
        self._compiled = None
        self._free: list = []
        self._owner: dict[int, _OvHandle] = {}
        self._streams: int | None = None
        self._threads_used: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    @keeps_signal_stack
    def _activate(self) -> None:
        p = self.model_path
        if not p.is_file():
            raise BackendError(f"{p}: no such ONNX graph")
        try:
            ov = import_openvino()
        except ImportError as exc:
            if own_module_missing(exc):
                raise
            raise BackendError(
                f"{p}: the openvino backend needs the openvino package (pip install openvino, or "
                "pip install 'cyclemask[openvino]')"
            ) from None
        t0 = time.perf_counter()
        core = ov.Core()
        if self.precision == "bf16":
            from ..cpu_features import openvino_capabilities, require_bf16

            self.bf16_evidence = require_bf16("openvino", openvino_capabilities(core) or [])
        metadata = read_graph_metadata(p)
        threads = self.threads or usable_cpus()
        config = {
            "PERFORMANCE_HINT": self.mode.upper(),
            "INFERENCE_NUM_THREADS": threads,
            # Always explicit: OpenVINO's default on CPUs with AVX512-BF16 or AMX is BF16, which
            # breaks FP32 parity with eager; BF16 is the user's opt-in.
            "INFERENCE_PRECISION_HINT": OV_PRECISIONS[self.precision],
        }
        if self.mode == "throughput" and self.requests:
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = self.requests
        if self._cache_arg == "auto":
            from ..model_cache import graph_sha256, openvino_cache_dir

            self.cache_dir = openvino_cache_dir(graph_sha256(p))
        elif self.cache_dir is not None:
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self.notes.append(f"OpenVINO model cache off: cannot create {self.cache_dir} ({exc})")
                self.cache_dir = None
        if self.cache_dir is not None:
            config["CACHE_DIR"] = str(self.cache_dir)
        compiled = None
        if self.cache_dir is not None:
            # From the path: a cached blob then loads without the ONNX file being read at all.
            try:
                compiled = core.compile_model(str(p), self.device, config)
            except Exception as exc:  # read it below, for the precise message
                log.debug("OpenVINO compile_model(%s) from the path failed: %s", p, exc)
        if compiled is None:
            try:
                model = core.read_model(str(p))
            except Exception as exc:
                raise BackendError(f"{p}: OpenVINO cannot read this graph ({_first_line(exc)})") from None
            self._check_graph(model)
            try:
                compiled = core.compile_model(model, self.device, config)
            except Exception as exc:
                raise BackendError(f"{p}: OpenVINO cannot compile this graph for {self.device} ({_first_line(exc)})") from None
        self._check_graph(compiled)
        self._adopt_graph_metadata(metadata)
        self.loaded_from_cache = _bool_property(compiled, "LOADED_FROM_CACHE") if self.cache_dir is not None else None
        self._runs_precision = _precision_property(compiled)
        n_req = 1
        if self.mode == "throughput":
            n_req = self.requests or max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._streams = _int_property(compiled, "NUM_STREAMS")
        self._threads_used = _int_property(compiled, "INFERENCE_NUM_THREADS") or threads
        self._compiled = compiled
        self._free = [compiled.create_infer_request() for _ in range(n_req)]
        self._owner = {}
        self.max_in_flight = n_req
        self.load_s = time.perf_counter() - t0

    def _check_graph(self, model) -> None:
        def spec(port) -> TensorSpec:
            shape = port.get_partial_shape()
            dims = tuple(d.get_length() if d.is_static else None for d in shape) if shape.rank.is_static else ()
            dtype = {"u8": "uint8", "f32": "float32", "f16": "float16"}.get(port.get_element_type().get_type_name(),
                                                                          port.get_element_type().get_type_name())
            return TensorSpec(port.get_any_name(), dtype, dims)

        found = check_graph_io([spec(p) for p in model.inputs], [spec(p) for p in model.outputs], str(self.model_path))
        self._image_size = found.image_size
        if found.batch is not None:
            self.max_batch = found.batch  # a graph exported with a fixed batch

    @keeps_signal_stack
    def _deactivate(self) -> None:
        for handle in list(self._owner.values()):
            try:
                handle.result()
            except CycleMaskError:
                pass
        self._free, self._owner, self._compiled = [], {}, None

    # -- inference -----------------------------------------------------------------------------
    def _ensure_free(self) -> None:
        if not self._free:
            # Every request is busy with a batch whose handle is still open: finish the oldest
            # (its value stays in its handle), so a caller that keeps more in flight than
            # max_in_flight is slowed down, never given a wrong result.
            oldest = next(iter(self._owner.values()))
            oldest.result()

    def _release(self, request, handle: _OvHandle) -> None:
        if self._owner.get(id(request)) is handle:
            del self._owner[id(request)]
            self._free.append(request)

    @keeps_signal_stack
    def _start(self, batch_u8: np.ndarray):
        """Start a batch and return its handle. In throughput mode the batch is split over the
        free infer requests, so that one batch keeps every stream busy: with whole batches per
        stream, the last batch of a folder ran on one stream alone (a third of the run for 24
        images in batches of 8 on 2 streams: 1.53 instead of 2.04 images/s, full model, 2 CPUs)."""
        ov = import_openvino()

        x = np.ascontiguousarray(batch_u8)
        self._ensure_free()
        parts = np.array_split(x, min(x.shape[0], len(self._free))) if self.mode == "throughput" else [x]
        handle = _OvHandle(self, x.shape[0], x)
        for part in parts:
            request = self._free.pop(0)
            self._owner[id(request)] = handle
            handle._requests.append(request)
            try:
                # Slices along the batch axis of a C-contiguous array are contiguous: shared, no copy.
                request.set_input_tensor(ov.Tensor(part, shared_memory=True))
                request.start_async()
            except Exception as exc:
                handle._requests.pop()
                self._release(request, handle)
                try:
                    handle.result()  # the parts already started: wait for them, free their requests
                except CycleMaskError:
                    pass
                raise BackendError(f"{self.model_path}: OpenVINO inference failed ({_first_line(exc)})") from None
        return handle

    # -- what it runs --------------------------------------------------------------------------
    @property
    def providers(self) -> list[str]:
        return [f"OpenVINO {self.device}"] if self._image_size is not None else []

    @property
    def description(self) -> str:
        if self._image_size is None:
            prec = f", {self.precision}" if self.precision != "fp32" else ""
            return f"openvino ({self.device}, {self.mode}{prec}, not loaded)"
        parts = [self.device, f"{self.mode} mode"]
        if self._threads_used:
            parts.append(f"{self._threads_used} threads")
        if self.mode == "throughput":
            parts.append(f"{self._streams or '?'} streams, {self.max_in_flight} requests in flight")
        prec = self.metadata.get("precision")
        parts.append(f"{prec} graph" if prec else "graph")
        runs = self._runs_precision or self.precision
        parts.append(f"{runs} inference" if prec != "int8" else f"int8 layers, {runs} between them")
        if self.loaded_from_cache:
            parts.append("compiled model from cache")
        parts.append(f"{self._image_size}px")
        return f"openvino ({', '.join(parts)})"


def _bool_property(compiled, name: str) -> bool | None:
    try:
        return bool(compiled.get_property(name))
    except Exception:  # a property this OpenVINO version does not report
        return None


def _precision_property(compiled) -> str | None:
    """The inference precision OpenVINO really uses ("fp32", "bf16", "fp16")."""
    try:
        value = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    except Exception:
        return None
    for key, name in (("bf16", "bf16"), ("bfloat16", "bf16"), ("f16", "fp16"), ("float16", "fp16"),
                      ("f32", "fp32"), ("float32", "fp32")):
        if key in value:
            return name
    return value


def _int_property(compiled, name: str) -> int | None:
    try:
        return int(compiled.get_property(name))
    except Exception:  # a property this OpenVINO version or device does not report
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:300]
