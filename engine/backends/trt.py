"""TensorRT backend: a serialized engine plus its sidecar JSON, run on several CUDA streams.

An engine is only valid for the TensorRT version and GPU model that built it, so before
deserializing, the sidecar (written by `cyclemask-export` next to the engine) is checked against
the running TensorRT and GPU (`cyclemask.artifacts.load_engine_sidecar` / `check_sidecar`,
plus the runtime's own checks in `preflight`: engine file hash, direction); a mismatch is an
error that gives the command rebuilding the engine. None of that needs a GPU, and it is tested
here.

Runtime layout: one execution context per CUDA stream ("slot"), each on its own optimization
profile (context k selects profile k with `set_optimization_profile_async` on its stream:
TensorRT requires a separate profile for every context in concurrent use, so an engine with P
profiles runs at most P streams, and says so when more were asked for); each slot owns device
input/output buffers and pinned host buffers, allocated by torch and bound with
`set_tensor_address(name, tensor.data_ptr())` once (no pycuda). `submit_images` stacks a batch
straight into the slot's pinned buffer, enqueues host->device copy, `execute_async_v3` and
device->host copy on the slot's stream and records a blocking event; `result()` waits for that
event only, asleep rather than spinning. The pipeline
keeps `max_in_flight` (= streams) batches submitted, so copies and kernels of neighbouring
batches overlap, and `execute_async_v3` releases the GIL while the other threads decode and
write. Each slot has its own input buffer, and a slot is reused only after its previous batch
was collected, so no input-consumed event is needed.

NOT RUN HERE: the machine that wrote this has no GPU and no TensorRT. The runtime calls follow
the TensorRT 10.x / 11.x Python API reference (name-based I/O tensors, `set_input_shape`,
`set_tensor_address`, `execute_async_v3(stream_handle)`, `get_tensor_profile_shape`,
`set_optimization_profile_async(profile_index, stream_handle)`, `init_libnvinfer_plugins`); the tests
that execute them are marked `trt` and skip where TensorRT or CUDA is missing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from cyclemask.artifacts import (
    DEFAULT_STREAMS,
    ArtefactError,
    TensorSpec,
    check_graph_io,
    check_sidecar,
    engine_rebuild_command,
    file_sha256,
    format_capability,
    load_engine_sidecar,
)
from cyclemask.errors import BackendError, ConfigError

from .base import Backend, BackendOptions

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# TensorRT here: availability, logging, plugins (shared with the engine build in export/)
# ------------------------------------------------------------------------------------------------


def tensorrt_status() -> tuple[bool, str]:
    """(True, "TensorRT x.y on <GPU>") when engines can be built and run here, else (False, why
    not). Checks what is installed before importing anything heavy. The runtime's buffers are
    torch CUDA tensors, so PyTorch with CUDA is part of what TensorRT needs here."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "TensorRT is not installed (pip install 'cyclemask[tensorrt]' on the GPU machine)"
    if importlib.util.find_spec("torch") is None:
        return False, "PyTorch is not installed; TensorRT runs on its CUDA buffers (pip install 'cyclemask[torch]')"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to torch (torch.cuda.is_available() is False)"
    try:
        import tensorrt as trt
    except Exception as exc:  # a broken install raises ImportError/OSError from its libraries
        return False, f"TensorRT is installed but does not import ({type(exc).__name__}: {str(exc)[:200]})"
    if tensorrt_major(trt.__version__) < 10:
        return False, f"TensorRT {trt.__version__} is too old: cyclemask needs TensorRT 10 or 11"
    return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name()}"


def available() -> str | None:
    """Why this backend cannot run here (None: it can)."""
    ok, why = tensorrt_status()
    return None if ok else why


def from_options(path: Path, direction: str | None, opts: BackendOptions) -> "TrtBackend":
    return TrtBackend(path, direction, **opts.keywords("trt"))


def tensorrt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def gpu_identity(device: int | None = None) -> tuple[str, str]:
    """(GPU name, compute capability "M.m") of the current CUDA device, via torch."""
    import torch

    dev = torch.cuda.current_device() if device is None else device
    return torch.cuda.get_device_name(dev), format_capability(torch.cuda.get_device_capability(dev))


def make_logger():
    """A trt.ILogger that forwards TensorRT's messages to logging and keeps its errors."""
    import tensorrt as trt

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):  # noqa: D401 (TensorRT's callback name)
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.INFO:
                log.debug("TensorRT: %s", msg)

    return Logger()


_PLUGIN_LOGGER = None


def init_plugins(trt) -> None:
    """Register TensorRT's bundled plugins (InstanceNormalization among them) once per process.

    Needed before parsing a graph that uses a plugin and before deserialising an engine that
    contains one. The plugin library keeps the logger it is given for as long as the process
    lives (plugin/api/inferPlugin.cpp stores it in a global), so the logger is a module global
    that is never freed.
    """
    global _PLUGIN_LOGGER
    if _PLUGIN_LOGGER is not None:
        return
    logger = make_logger()
    if not trt.init_libnvinfer_plugins(logger, ""):
        log.warning("TensorRT's plugin library did not initialise: the InstanceNormalization plugin is unavailable")
    _PLUGIN_LOGGER = logger


# ------------------------------------------------------------------------------------------------
# Sidecar checks (no GPU needed)
# ------------------------------------------------------------------------------------------------


def preflight(
    engine: str | os.PathLike,
    direction: str | None,
    *,
    trt_version: str,
    gpu_name: str,
    compute_capability,
) -> tuple[dict[str, Any], list[str]]:
    """Everything that can be checked before TensorRT touches the engine file.

    cyclemask.artifacts reads the sidecar and checks TensorRT version and GPU architecture
    (`load_engine_sidecar`, `check_sidecar`); on top, the runtime checks that the engine file is
    the one the sidecar describes (when it records the engine's sha256) and that it translates
    the requested direction. Returns the sidecar and warnings; raises BackendError (naming the
    engine, saying what differs and how to rebuild) when the engine cannot be used here.
    """
    p = Path(engine)
    if not p.is_file():
        raise BackendError(f"{p}: no such engine file")
    side = load_engine_sidecar(p)
    warnings = check_sidecar(side, trt_version, gpu_name, compute_capability, engine_path=p)
    redo = side.get("rebuild_command") or engine_rebuild_command(side.get("onnx_path"), p)
    want_sha = side.get("engine_sha256")
    if isinstance(want_sha, str) and want_sha:
        have = file_sha256(p)
        if have != want_sha:
            raise ArtefactError(
                f"{p}: the engine file does not match its sidecar (sha256 {have[:12]}... != recorded "
                f"{want_sha[:12]}...): the engine or the sidecar was replaced. Rebuild it: {redo}"
            )
    have_dir = side.get("direction")
    if direction is not None and have_dir in ("mask", "unmask") and have_dir != direction:
        raise BackendError(
            f"{p}: this engine translates '{have_dir}', but --{direction} was asked for "
            f"(an engine holds one direction; use the '{direction}' engine or pass --{have_dir})"
        )
    return side, warnings


# ------------------------------------------------------------------------------------------------
# The backend
# ------------------------------------------------------------------------------------------------


class _Slot:
    """One CUDA stream with its execution context and buffers."""

    def __init__(self, stream, context, d_in, d_out, h_in, h_out, done) -> None:
        self.stream, self.context = stream, context
        self.d_in, self.d_out, self.h_in, self.h_out = d_in, d_out, h_in, h_out
        self.done = done
        self.pending: "_Pending | None" = None


class _Pending:
    def __init__(self, slot: _Slot, n: int) -> None:
        self.slot, self.n = slot, n
        self._value: np.ndarray | None = None

    def result(self) -> np.ndarray:
        if self._value is None:
            self.slot.done.synchronize()  # waits for this slot's stream only
            # Copy out of the pinned buffer: the slot refills it with a later batch.
            self._value = self.slot.h_out[: self.n].numpy().copy()
            if self.slot.pending is self:
                self.slot.pending = None
        return self._value


class TrtBackend(Backend):
    """A TensorRT engine (uint8 [N, S, S, 3] in and out) on `streams` CUDA streams."""

    name = "trt"

    def __init__(self, engine_path: str | os.PathLike, direction: str | None = None, *,
                 streams: int = DEFAULT_STREAMS, device: int = 0) -> None:
        super().__init__(Path(engine_path), direction)
        if not isinstance(streams, int) or streams < 1:
            raise ConfigError(f"streams must be a positive integer; got {streams!r}")
        self.streams = streams
        self.device_index = device
        self.max_in_flight = streams
        self.opt_batch: int | None = None  # the profile's optimum: the default --batch
        self.sidecar: dict[str, Any] = {}
        self._slots: list[_Slot] = []
        self._next = 0
        self._gpu_name = ""
        self._trt_version = ""

    def _activate(self) -> None:
        p = self.model_path
        if not p.is_file():
            raise BackendError(f"{p}: no such engine file")
        ok, why = tensorrt_status()
        if not ok:
            raise BackendError(f"{p}: a TensorRT engine needs TensorRT and a CUDA GPU: {why}; "
                               "run the .onnx graph instead (--model model.onnx)")
        import tensorrt as trt
        import torch

        dev = torch.device("cuda", self.device_index)
        torch.cuda.set_device(dev)
        self._gpu_name = torch.cuda.get_device_name(dev)
        self._trt_version = trt.__version__
        self.sidecar, warnings = preflight(
            p, self._requested_direction, trt_version=trt.__version__, gpu_name=self._gpu_name,
            compute_capability=torch.cuda.get_device_capability(dev),
        )
        self.warnings.extend(warnings)
        self.metadata = self.sidecar
        for w in warnings:
            log.warning("%s", w)
        side_dir = self.sidecar.get("direction")
        self._check_direction(side_dir if side_dir in ("mask", "unmask") else None, "engine")
        redo = self.sidecar.get("rebuild_command") or engine_rebuild_command(self.sidecar.get("onnx_path"), p)

        self._logger = make_logger()
        init_plugins(trt)  # an engine built with the InstanceNormalization plugin needs the registry
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(p.read_bytes())
        if engine is None:
            raise BackendError(
                f"{p}: TensorRT {trt.__version__} could not deserialize this engine (see its log above); "
                f"rebuild it: {redo}"
            )
        self._engine = engine
        dtypes = {trt.DataType.UINT8: "uint8", trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16"}

        def spec(name: str) -> TensorSpec:
            dims = tuple(None if int(d) < 0 else int(d) for d in engine.get_tensor_shape(name))
            return TensorSpec(name, dtypes.get(engine.get_tensor_dtype(name), str(engine.get_tensor_dtype(name))), dims)

        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        found = check_graph_io([spec(n) for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT],
                               [spec(n) for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT], str(p))
        self._in, self._out = found.input_name, found.output_name
        self._image_size = found.image_size
        shape = (-1 if found.batch is None else found.batch, found.image_size, found.image_size, 3)
        side_size = self.sidecar.get("image_size")
        if side_size is not None and int(side_size) != self._image_size:
            raise BackendError(f"{p}: sidecar says image size {side_size}, engine input is {self._image_size}; "
                               f"rebuild it: {redo}")
        n_profiles = max(1, int(engine.num_optimization_profiles))
        if shape[0] == -1:
            pmin, popt, pmax = engine.get_tensor_profile_shape(self._in, 0)
            self._min_batch, self.max_batch = int(pmin[0]), int(pmax[0])
            self.opt_batch = int(popt[0])
        else:
            self._min_batch = self.max_batch = self.opt_batch = int(shape[0])
        side_profiles = self.sidecar.get("profiles")
        if isinstance(side_profiles, int) and side_profiles != n_profiles:
            raise BackendError(f"{p}: sidecar says {side_profiles} optimization profiles, the engine has {n_profiles}; "
                               f"rebuild it: {redo}")
        if self.streams > n_profiles:
            # Every execution context in concurrent use needs an optimization profile of its own.
            msg = (f"{p.name} has {n_profiles} optimization profile(s), so it runs {n_profiles} CUDA stream(s), not "
                   f"{self.streams}; for {self.streams}, rebuild it with --streams {self.streams}: "
                   f"{engine_rebuild_command(self.sidecar.get('onnx_path'), p.parent, self.streams)}")
            log.warning("%s", msg)
            self.warnings.append(msg)
            self.streams = n_profiles

        s = self._image_size
        self._slots = []
        for k in range(self.streams):
            stream = torch.cuda.Stream(dev)
            ctx = engine.create_execution_context()
            if ctx is None:
                raise BackendError(f"{p}: could not create execution context {k + 1} of {self.streams} "
                                   "(out of GPU memory?); try --streams 1")
            # Profile k for context k, selected on the stream the context will run on, before any
            # input shape is set (IExecutionContext.setOptimizationProfileAsync). The binding
            # raises on failure in recent releases and returns False in older ones.
            try:
                selected = ctx.set_optimization_profile_async(k, stream.cuda_stream)
            except Exception as exc:
                raise BackendError(f"{p}: cannot select optimization profile {k} for stream {k + 1} ({exc})") from None
            if selected is False:
                raise BackendError(f"{p}: cannot select optimization profile {k} for stream {k + 1}")
            pmin, _, pmax = engine.get_tensor_profile_shape(self._in, k)
            if shape[0] == -1 and (int(pmin[0]), int(pmax[0])) != (self._min_batch, self.max_batch):
                raise BackendError(f"{p}: optimization profile {k} takes batches {int(pmin[0])}..{int(pmax[0])}, profile 0 "
                                   f"{self._min_batch}..{self.max_batch}; cyclemask builds identical profiles: rebuild "
                                   f"it: {redo}")
            d_in = torch.empty((self.max_batch, s, s, 3), dtype=torch.uint8, device=dev)
            d_out = torch.empty_like(d_in)
            h_in = torch.empty((self.max_batch, s, s, 3), dtype=torch.uint8, pin_memory=True)
            h_out = torch.empty((self.max_batch, s, s, 3), dtype=torch.uint8, pin_memory=True)
            if not (ctx.set_tensor_address(self._in, d_in.data_ptr())
                    and ctx.set_tensor_address(self._out, d_out.data_ptr())):
                raise BackendError(f"{p}: TensorRT refused the device buffers for {self._in!r} / {self._out!r}")
            if not ctx.set_input_shape(self._in, (self.max_batch, s, s, 3)):
                raise BackendError(f"{p}: the engine rejects its own maximum input shape "
                                   f"{[self.max_batch, s, s, 3]} in profile {k}; rebuild it: {redo}")
            # A blocking event: result() then sleeps in cudaEventSynchronize instead of spinning a
            # CPU core that the decode and write threads need.
            done = torch.cuda.Event(blocking=True)
            self._slots.append(_Slot(stream, ctx, d_in, d_out, h_in, h_out, done))
        self.max_in_flight = len(self._slots)
        self._next = 0

    def _start(self, batch_u8: np.ndarray):
        return self._enqueue(batch_u8.shape[0], lambda h_in: np.copyto(h_in, batch_u8))

    def _start_images(self, images: list[np.ndarray]):
        """Stack the images straight into the slot's pinned buffer: one host copy, not two."""
        return self._enqueue(len(images), lambda h_in: np.stack(images, out=h_in))

    def _enqueue(self, n: int, fill):
        import torch

        if n < self._min_batch:
            raise BackendError(f"trt backend input: this engine takes batches of {self._min_batch} to "
                               f"{self.max_batch}; got {n}")
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if slot.pending is not None:  # the caller kept more than `streams` batches open
            slot.pending.result()
        s = self._image_size
        with torch.cuda.device(self.device_index):
            fill(slot.h_in[:n].numpy())
            with torch.cuda.stream(slot.stream):
                slot.d_in[:n].copy_(slot.h_in[:n], non_blocking=True)
                ok = slot.context.set_input_shape(self._in, (n, s, s, 3))
                if ok:
                    ok = slot.context.execute_async_v3(slot.stream.cuda_stream)
                if not ok:
                    # The copy above is queued and reads the pinned buffer: let it finish before
                    # the buffer can be handed out again.
                    slot.stream.synchronize()
                    raise BackendError(f"{self.model_path}: TensorRT rejected a batch of {n} "
                                       "(input shape or execution failed; see its log above)")
                slot.h_out[:n].copy_(slot.d_out[:n], non_blocking=True)
                slot.done.record(slot.stream)
        slot.pending = _Pending(slot, n)
        return slot.pending

    def _deactivate(self) -> None:
        for slot in self._slots:
            slot.stream.synchronize()
        # Contexts before the engine, the engine before the runtime.
        self._slots = []
        self._engine = None
        self._runtime = None

    @property
    def providers(self) -> list[str]:
        return [f"TensorRT {self._trt_version}", self._gpu_name] if self._gpu_name else []

    @property
    def description(self) -> str:
        if not self._gpu_name:
            return "trt (not loaded)"
        return (f"trt (TensorRT {self._trt_version} on {self._gpu_name}, {self.streams} streams, "
                f"batch <= {self.max_batch}, {self._image_size}px)")
