"""Inference backends: one interface over PyTorch, ONNX Runtime and TensorRT.

Modelled on Polygraphy's runners: a backend is a context manager; `activate()` loads the model
(heavy imports happen there, so a CPU-only machine imports this module fine); `infer(batch_u8)`
takes and returns uint8 NHWC RGB batches [N, S, S, 3] and checks what it is given; `deactivate()`
frees. Every backend reports what it really runs on (`description`, `providers`), because ONNX
Runtime in particular falls back to the CPU without raising.

`submit(batch)` returns a handle whose `result()` gives the output (an array the caller owns,
never a view of a buffer the backend reuses); backends that can keep
several batches in flight (TensorRT, `max_in_flight > 1`) return before the work is done, the
others compute at once. The pipeline keeps at most `max_in_flight` handles open, in order.

`create_backend` maps `--backend auto|trt|ort|torch|openvino` and a model file to a backend, and
says why it chose what it chose. On a machine without a CUDA GPU, `auto` with an ONNX graph
picks between ONNX Runtime and OpenVINO (engine/backend_openvino.py) by what is installed and a
short measured warm-up of both.
"""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cyclemask import DIRECTIONS
from cyclemask.errors import BackendError, CheckpointError, ConfigError, CycleMaskError
from cyclemask.imaging import check_batch

log = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "trt", "ort", "torch", "openvino")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
GRAPH_SUFFIXES = (".onnx",)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
DEFAULT_TORCH_SIZE = 256  # the paper's and the reference's training size

# ONNX Runtime provider names, by the short names the CLI takes.
ORT_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class _Ready:
    """The handle of a batch that was computed at submission."""

    def __init__(self, value: np.ndarray) -> None:
        self._value = value

    def result(self) -> np.ndarray:
        return self._value


class Backend(abc.ABC):
    """Base class: lifecycle, input checks and the description every backend reports."""

    name = "backend"

    def __init__(self, model_path: Path | None, direction: str | None) -> None:
        if direction is not None and direction not in DIRECTIONS:
            raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
        self.model_path = Path(model_path) if model_path is not None else None
        self._requested_direction = direction
        self._direction: str | None = direction
        self._image_size: int | None = None
        self._active = False
        self.max_batch: int | None = None  # None: any batch size
        self.max_in_flight = 1

    # -- lifecycle -----------------------------------------------------------------------------
    def activate(self) -> "Backend":
        if not self._active:
            self._activate()
            self._active = True
            log.info("%s ready: %s", self.name, self.description)
        return self

    def deactivate(self) -> None:
        if self._active:
            try:
                self._deactivate()
            finally:
                self._active = False

    def __enter__(self) -> "Backend":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @property
    def is_active(self) -> bool:
        return self._active

    # -- what it runs ------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        if self._image_size is None:
            raise BackendError(f"{self.name}: image size unknown before activate()")
        return self._image_size

    @property
    def direction(self) -> str | None:
        return self._direction

    @property
    def providers(self) -> list[str]:
        """What really executes the model (devices / execution providers), best first."""
        return []

    @property
    def description(self) -> str:
        return self.name

    # -- inference -----------------------------------------------------------------------------
    def infer(self, batch_u8: np.ndarray) -> np.ndarray:
        return self.submit(batch_u8).result()

    def submit(self, batch_u8: np.ndarray):
        self._check_input(batch_u8)
        return _Ready(self._infer(batch_u8))

    def submit_images(self, images: list[np.ndarray]):
        """`submit` for a list of [S, S, 3] images; a backend with its own staging buffer (TensorRT's
        pinned memory) stacks them straight into it."""
        if not images:
            raise BackendError(f"{self.name} backend input: expected at least one image; got none")
        return self.submit(np.stack(images))

    def _check_input(self, batch_u8: np.ndarray) -> None:
        if not self._active:
            raise BackendError(f"{self.name}: call activate() (or use `with backend:`) before infer()")
        check_batch(batch_u8, self._image_size, what=f"{self.name} backend input")
        if self.max_batch is not None and batch_u8.shape[0] > self.max_batch:
            raise BackendError(
                f"{self.name} backend input: expected at most {self.max_batch} images per batch; "
                f"got {batch_u8.shape[0]}"
            )

    def _check_output(self, out: np.ndarray, n: int) -> np.ndarray:
        s = self._image_size
        if out.dtype != np.uint8 or tuple(out.shape) != (n, s, s, 3):
            raise BackendError(
                f"{self.name} backend output: expected uint8 {[n, s, s, 3]}; got {out.dtype} {list(out.shape)}"
            )
        return out

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, batch_u8: np.ndarray) -> np.ndarray: ...

    def _check_direction(self, have: str | None, what: str) -> None:
        want = self._requested_direction
        if want is not None and have is not None and want != have:
            raise BackendError(
                f"{self.model_path}: this {what} translates '{have}', but --{want} was asked for "
                f"(a {what} holds one direction; use the '{want}' {what} or pass --{have})"
            )
        self._direction = have or want

    def _adopt_graph_metadata(self, metadata: dict) -> None:
        """Check an exported graph's metadata_props against the request and the graph's input
        (ORT and OpenVINO run the same graphs, so they share this)."""
        p = self.model_path
        self.metadata = metadata
        if metadata.get("format") != "cyclemask.onnx":
            unknown = "" if _metadata_direction(metadata) else "; it does not record its direction"
            self.notes.append(f"{p.name} was not written by cyclemask-export (no cyclemask format tag){unknown}")
        self._check_direction(_metadata_direction(metadata), "graph")
        meta_size = _metadata_int(metadata, ("image_size", "size"))
        if meta_size is not None and meta_size != self._image_size:
            raise BackendError(
                f"{p}: metadata says image size {meta_size}, but the graph's input is {self._image_size}x{self._image_size}"
            )


# ------------------------------------------------------------------------------------------------
# PyTorch
# ------------------------------------------------------------------------------------------------


def checkpoint_image_size(extra: dict | None) -> int | None:
    """The image size the generator was trained at, if its checkpoint records it.

    Training bundles keep the trainer's config in extra["train_config"]; the network saw
    `crop_size` crops (load_size is the resize before cropping, not the model input).
    """
    extra = extra or {}
    train_cfg = extra.get("train_config") if isinstance(extra.get("train_config"), dict) else {}
    for value in (extra.get("image_size"), extra.get("crop_size"), train_cfg.get("crop_size")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class TorchBackend(Backend):
    """Eager PyTorch from a checkpoint (a bundle holding both directions, a network file, or a
    reference-repository generator file).

    device: "cpu" or "cuda[:i]"; precision "fp32" (IEEE: TF32 is off while it runs on CUDA) or
    "fp16" (CUDA only: half-precision convolutions on the CPU are slow and not what the engines
    run). `cuda_graphs` captures the forward pass once for `max_batch` images and replays it (a
    partial batch is padded: instance and batch norm in eval mode treat images independently,
    so padding changes nothing);
    `channels_last` stores activations NHWC, which cuDNN prefers for FP16.
    """

    name = "torch"

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        direction: str | None = None,
        *,
        generator=None,
        device: str = "cpu",
        precision: str = "fp32",
        image_size: int | None = None,
        max_batch: int | None = None,
        cuda_graphs: bool = False,
        channels_last: bool = False,
        threads: int | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(Path(model_path) if model_path is not None else None, direction)
        if (model_path is None) == (generator is None):
            raise ConfigError("TorchBackend needs a checkpoint path or a generator (one of them)")
        if precision not in ("fp32", "fp16"):
            raise ConfigError(f"precision must be fp32 or fp16; got {precision!r}")
        if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
            raise ConfigError(f"device must be cpu, cuda or cuda:N; got {device!r}")
        if precision == "fp16" and device == "cpu":
            raise ConfigError("fp16 needs a CUDA device; on the CPU use --precision fp32")
        if cuda_graphs and device == "cpu":
            raise ConfigError("CUDA graphs need a CUDA device (--device cuda)")
        if cuda_graphs and not max_batch:
            raise ConfigError("CUDA graphs need max_batch (the batch size the graph is captured for)")
        if image_size is not None and (image_size < 4 or image_size % 4):
            raise ConfigError(f"image size must be a positive multiple of 4; got {image_size}")
        if compile and cuda_graphs:
            raise ConfigError("--compile and --cuda-graphs are exclusive: pick one way to cut the launch overhead")
        self._generator_in = generator
        self._device_name = device
        self.precision = precision
        self._size_arg = image_size
        self.max_batch = max_batch
        self.cuda_graphs = cuda_graphs
        self.channels_last = channels_last
        self.threads = threads
        self.compile = compile
        self.compile_s: float | None = None
        self.compile_cache = ""
        self._compiled = None
        self._net = None
        self._graph = None
        self.size_source = ""

    def _activate(self) -> None:
        import torch

        from cyclemask.checkpoint import load_generator, load_generators

        if self.threads:
            torch.set_num_threads(self.threads)
        if self._device_name != "cpu" and not torch.cuda.is_available():
            raise BackendError(f"torch backend: device {self._device_name} asked for, but torch sees no CUDA GPU")
        self._device = torch.device(self._device_name)
        extra_size = None
        if self._generator_in is not None:
            net = self._generator_in
        else:
            want = self._requested_direction
            if want is None:
                found = load_generators(self.model_path)
                if len(found) > 1:
                    raise CheckpointError(
                        f"{self.model_path}: holds generators for {' and '.join(sorted(found))}: "
                        "pass --mask or --unmask"
                    )
                loaded = next(iter(found.values()))
            else:
                loaded = load_generator(self.model_path, direction=want)
            net = loaded.generator
            self._direction = loaded.direction or want
            extra_size = checkpoint_image_size(_checkpoint_extra(self.model_path))
        if self._size_arg is not None:
            self._image_size, self.size_source = self._size_arg, "given"
        elif extra_size is not None:
            self._image_size, self.size_source = extra_size, "recorded in the checkpoint"
        else:
            self._image_size, self.size_source = DEFAULT_TORCH_SIZE, "default (the checkpoint records none)"
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        net = net.eval().to(device=self._device, dtype=dtype)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self._net = net
        self._dtype = dtype
        with self._precision():
            if self.cuda_graphs:
                self._capture_graph()
            if self.compile:
                self._compile()

    def _precision(self):
        """FP32 means IEEE FP32 on CUDA too, so that this backend matches the CPU reference to
        1 LSB: cuDNN would otherwise run the convolutions in TF32 (cyclemask.precision)."""
        import contextlib

        from cyclemask.precision import ieee_fp32

        if self.precision == "fp32":
            return ieee_fp32(self._device)
        return contextlib.nullcontext()

    def _compile(self) -> None:
        """torch.compile the whole uint8 -> uint8 forward (pre/post-processing fuse with the
        network's first and last layers) and compile it now, so the time is reported at load
        and not hidden in the first batch.

        Shapes are static (dynamic=False: the fastest kernels); with `max_batch` set, partial
        batches are padded to it (eval-mode norms treat images independently), so one compile
        serves the whole run. Inductor's FX graph cache keeps the compiled kernels on disk: in
        $TORCHINDUCTOR_CACHE_DIR, which defaults here to ~/.cache/cyclemask/torchinductor (torch's
        own default is under /tmp, which many machines clear), so a second run of the same model
        and shape mostly loads instead of compiling.
        """
        import time

        import torch

        if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path.home() / ".cache" / "cyclemask" / "torchinductor")
        self.compile_cache = os.environ["TORCHINDUCTOR_CACHE_DIR"]
        try:
            fn = torch.compile(self._forward, dynamic=False)
            n = self.max_batch or 1
            s = self._image_size
            t0 = time.perf_counter()
            with torch.inference_mode():
                fn(torch.zeros((n, s, s, 3), dtype=torch.uint8, device=self._device))
                if self._device.type == "cuda":
                    torch.cuda.synchronize(self._device)
        except Exception as exc:  # inductor needs a C++ compiler on the CPU, Triton on CUDA
            text = str(exc).strip().splitlines()
            raise BackendError(
                f"torch backend: torch.compile failed on {self._device} ({text[0][:300] if text else type(exc).__name__}); "
                "run without --compile"
            ) from None
        self.compile_s = time.perf_counter() - t0
        self._compiled = fn
        log.info("torch.compile: %.1f s for batch %d at %dpx (cache %s)", self.compile_s, n, s, self.compile_cache)

    def _forward(self, x_u8):
        import torch

        from cyclemask.imaging import postprocess, preprocess

        x = preprocess(x_u8).to(self._dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return postprocess(self._net(x)).contiguous()

    def _capture_graph(self) -> None:
        # The warm-up on a side stream and the capture follow the PyTorch CUDA-graphs recipe.
        import torch

        s = self._image_size
        static_in = torch.zeros((self.max_batch, s, s, 3), dtype=torch.uint8, device=self._device)
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):
                self._forward(static_in)
        torch.cuda.current_stream(self._device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self._forward(static_in)
        self._graph = (graph, static_in, static_out)

    def _infer(self, batch_u8: np.ndarray) -> np.ndarray:
        import torch

        n = batch_u8.shape[0]
        x = torch.from_numpy(np.ascontiguousarray(batch_u8))
        with torch.inference_mode(), self._precision():
            if self._graph is not None:
                graph, static_in, static_out = self._graph
                static_in[:n].copy_(x, non_blocking=False)
                graph.replay()
                out = static_out[:n].cpu()
            else:
                if self._device.type == "cuda":
                    x = x.pin_memory().to(self._device, non_blocking=True)
                if self._compiled is not None:
                    pad = (self.max_batch or n) - n
                    if pad > 0:
                        x = torch.cat([x, x.new_zeros((pad,) + tuple(x.shape[1:]))])
                    out = self._compiled(x)[:n].cpu()
                else:
                    out = self._forward(x).cpu()
        return self._check_output(np.ascontiguousarray(out.numpy()), n)

    def _deactivate(self) -> None:
        self._net = None
        self._graph = None
        self._compiled = None
        if self._device_name != "cpu":
            import torch

            torch.cuda.empty_cache()

    @property
    def providers(self) -> list[str]:
        return [str(getattr(self, "_device", self._device_name))]

    @property
    def description(self) -> str:
        extras = [self.precision]
        if self.cuda_graphs:
            extras.append("CUDA graphs")
        if self.channels_last:
            extras.append("channels_last")
        if self.compile:
            extras.append("torch.compile" + (f" in {self.compile_s:.1f} s" if self.compile_s is not None else ""))
        size = f", {self._image_size}px ({self.size_source})" if self._image_size else ""
        return f"torch ({self.providers[0]}, {', '.join(extras)}{size})"


def _checkpoint_extra(path: Path | None) -> dict:
    if path is None:
        return {}
    from cyclemask.checkpoint import read_checkpoint

    obj = read_checkpoint(path)
    extra = obj.get("extra") if isinstance(obj, dict) else None
    return extra if isinstance(extra, dict) else {}


# ------------------------------------------------------------------------------------------------
# ONNX Runtime
# ------------------------------------------------------------------------------------------------


def _graph_metadata(path: Path, session) -> dict[str, Any]:
    """The graph's metadata_props, through the export package's reader when it is there."""
    from cyclemask.export.metadata import read_onnx_metadata

    try:
        return dict(read_onnx_metadata(path))
    except CycleMaskError as exc:  # e.g. a malformed value: fall back to ORT's raw strings
        log.debug("read_onnx_metadata(%s) failed: %s", path, exc)
        return dict(session.get_modelmeta().custom_metadata_map)


class OrtBackend(Backend):
    """ONNX Runtime over an exported graph (input `image` uint8 [N, S, S, 3], output
    `translated`).

    provider: "auto" (TensorRT EP, then CUDA EP, then CPU EP: whichever ONNX Runtime really
    gives), or "tensorrt" / "cuda" / "cpu". ONNX Runtime falls back to the CPU without raising
    when a GPU provider's libraries are missing, so the session's providers are read back after
    creation, and an explicitly requested provider that did not load is an error.
    """

    name = "ort"

    def __init__(
        self,
        model_path: str | os.PathLike,
        direction: str | None = None,
        *,
        provider: str = "auto",
        threads: int | None = None,
        device_id: int = 0,
        trt_cache_dir: str | os.PathLike | None = None,
        max_batch: int | None = None,
    ) -> None:
        super().__init__(Path(model_path), direction)
        # For the TensorRT EP only: one optimisation profile covering batches 1..max_batch, so the
        # partial last batch does not make it build a second engine mid-run.
        self.batch_hint = max_batch
        if provider != "auto" and provider not in ORT_PROVIDERS:
            raise ConfigError(f"ONNX Runtime provider must be auto or one of {', '.join(ORT_PROVIDERS)}; got {provider!r}")
        self.provider = provider
        self.threads = threads
        self.device_id = device_id
        self.trt_cache_dir = Path(trt_cache_dir) if trt_cache_dir else Path.home() / ".cache" / "cyclemask" / "ort-trt"
        self._session = None
        self._providers: list[str] = []
        self.metadata: dict[str, Any] = {}
        self.notes: list[str] = []

    def _requested(self, ort) -> list[tuple[str, dict]]:
        available = ort.get_available_providers()
        if self.provider == "auto":
            names = [ORT_PROVIDERS[k] for k in ("tensorrt", "cuda", "cpu") if ORT_PROVIDERS[k] in available]
        else:
            name = ORT_PROVIDERS[self.provider]
            if name not in available:
                raise BackendError(
                    f"ONNX Runtime provider {name} was asked for, but this onnxruntime build has only "
                    f"{', '.join(available)} (install onnxruntime-gpu for CUDA / TensorRT)"
                )
            names = [name]
            if name == ORT_PROVIDERS["tensorrt"] and ORT_PROVIDERS["cuda"] in available:
                names.append(ORT_PROVIDERS["cuda"])  # runs the nodes TensorRT does not take
            if name != ORT_PROVIDERS["cpu"]:
                names.append(ORT_PROVIDERS["cpu"])
        out = []
        for n in names:
            if n == ORT_PROVIDERS["tensorrt"]:
                # FP32 graph -> FP32 engine (parity with the graph); FP16 comes from an FP16 graph.
                opts = {"device_id": self.device_id, "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(self.trt_cache_dir)}
                size = _graph_input_size(self.model_path) if self.batch_hint else None
                if size:
                    dims = f"{size}x{size}x3"
                    opts.update(trt_profile_min_shapes=f"image:1x{dims}",
                                trt_profile_opt_shapes=f"image:{self.batch_hint}x{dims}",
                                trt_profile_max_shapes=f"image:{self.batch_hint}x{dims}")
            elif n == ORT_PROVIDERS["cuda"]:
                opts = {"device_id": self.device_id}
            else:
                opts = {}
            out.append((n, opts))
        return out

    def _activate(self) -> None:
        import onnxruntime as ort

        p = self.model_path
        if not p.is_file():
            raise BackendError(f"{p}: no such ONNX graph")
        requested = self._requested(ort)
        if any(n == ORT_PROVIDERS["tensorrt"] for n, _ in requested):
            self.trt_cache_dir.mkdir(parents=True, exist_ok=True)
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
        # Missing GPU libraries make ORT print long errors while it falls back; in auto mode the
        # fallback is expected and reported below, so keep the console clean.
        quiet = self.provider == "auto"
        if quiet:
            so.log_severity_level = 4
            ort.set_default_logger_severity(4)
        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured) if quiet else contextlib.nullcontext():
                session = ort.InferenceSession(
                    str(p), so, providers=[n for n, _ in requested], provider_options=[o for _, o in requested]
                )
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{p}: ONNX Runtime cannot load this graph ({first[:300]})") from None
        finally:
            if quiet:
                ort.set_default_logger_severity(2)
        if captured.getvalue().strip():
            log.debug("onnxruntime said while loading %s:\n%s", p, captured.getvalue().strip())
        got = list(session.get_providers())
        self._providers = got
        wanted = [n for n, _ in requested]
        if self.provider != "auto" and ORT_PROVIDERS[self.provider] not in got:
            raise BackendError(
                f"{p}: asked ONNX Runtime for {ORT_PROVIDERS[self.provider]}, but the session runs on "
                f"{', '.join(got)} (ONNX Runtime falls back silently when the provider's CUDA / cuDNN / "
                "TensorRT libraries cannot be loaded; run with --debug to see its messages)"
            )
        missing = [n for n in wanted if n not in got]
        if missing:
            self.notes.append(f"ONNX Runtime could not use {', '.join(missing)}; running on {got[0]}")
        self._check_graph(session)
        self._adopt_graph_metadata(_graph_metadata(p, session))
        self._session = session

    def _check_graph(self, session) -> None:
        p = self.model_path
        ins, outs = session.get_inputs(), session.get_outputs()
        want = "input 'image' uint8 [N, S, S, 3] and output 'translated' uint8 [N, S, S, 3]"
        if len(ins) != 1 or len(outs) != 1:
            raise BackendError(
                f"{p}: not a cyclemask graph: expected {want}; got inputs {[i.name for i in ins]}, "
                f"outputs {[o.name for o in outs]}"
            )
        i, o = ins[0], outs[0]
        shape = list(i.shape)
        ok = (
            i.type == "tensor(uint8)" and o.type == "tensor(uint8)" and len(shape) == 4
            and shape[3] == 3 and isinstance(shape[1], int) and shape[1] == shape[2]
        )
        if not ok:
            raise BackendError(
                f"{p}: not a cyclemask graph: expected {want}; got input {i.name!r} {i.type} {shape}, "
                f"output {o.name!r} {o.type} {list(o.shape)}"
            )
        self._image_size = int(shape[1])
        self._input_name, self._output_name = i.name, o.name
        if isinstance(shape[0], int):
            self.max_batch = shape[0]  # a graph exported with a fixed batch

    def _infer(self, batch_u8: np.ndarray) -> np.ndarray:
        out = self._session.run([self._output_name], {self._input_name: np.ascontiguousarray(batch_u8)})[0]
        return self._check_output(out, batch_u8.shape[0])

    def _deactivate(self) -> None:
        self._session = None

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    @property
    def description(self) -> str:
        got = self._providers[0] if self._providers else "not loaded"
        prec = f", {self.metadata['precision']} graph" if self.metadata.get("precision") else ""
        return f"ort ({got}{prec}{', ' + str(self._image_size) + 'px' if self._image_size else ''})"


def _graph_input_size(path: Path) -> int | None:
    """S of an `image` input [N, S, S, 3], read from the graph without running it."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # ONNX Runtime will report the unreadable file itself
        return None
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if inp.name == "image" and len(dims) == 4 and dims[1].dim_value and dims[1].dim_value == dims[2].dim_value:
            return int(dims[1].dim_value)
    return None


def _metadata_direction(meta: dict) -> str | None:
    d = meta.get("direction")
    return d if d in DIRECTIONS else None


def _metadata_int(meta: dict, keys: tuple[str, ...]) -> int | None:
    for k in keys:
        v = meta.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().isdigit():
            return int(v)
    return None


# ------------------------------------------------------------------------------------------------
# Choosing a backend
# ------------------------------------------------------------------------------------------------


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


def tensorrt_usable() -> tuple[bool, str]:
    """Whether TensorRT can run here, and why not."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the tensorrt package is not installed (pip install 'cyclemask[tensorrt]')"
    import torch

    if not torch.cuda.is_available():
        return False, "torch sees no CUDA GPU"
    return True, ""


@dataclass
class BackendOptions:
    """What the CLI passes through to whichever backend is built."""

    device: str = "auto"  # torch: auto | cpu | cuda[:i]
    precision: str = "fp32"  # torch
    image_size: int | None = None  # torch: the model input size
    max_batch: int | None = None
    ort_provider: str = "auto"
    threads: int | None = None
    streams: int = 2  # trt: execution contexts / CUDA streams
    cuda_graphs: bool = False
    channels_last: bool = False
    compile: bool = False  # torch: torch.compile the forward pass
    ov_mode: str = "throughput"  # openvino: latency | throughput
    ov_requests: int | None = None  # openvino, throughput mode: infer requests in flight
    probe: bool = True  # auto on a CPU machine: time ORT and OpenVINO briefly and take the faster
    extra: dict = field(default_factory=dict)


def create_backend(
    model: str | os.PathLike, backend: str = "auto", direction: str | None = None,
    options: BackendOptions | None = None,
) -> tuple[Backend, str]:
    """Build the backend for a model file; returns it and why it was chosen.

    The backend is not activated, except when `auto` measured candidates to choose (then the
    winner comes back already active: activate() again is a no-op).
    """
    opts = options or BackendOptions()
    if backend not in BACKEND_NAMES:
        raise ConfigError(f"backend must be one of {', '.join(BACKEND_NAMES)}; got {backend!r}")
    path = Path(model)
    kind = model_kind(path)
    needs = {"trt": "engine", "ort": "graph", "torch": "checkpoint", "openvino": "graph"}
    what = {"engine": "a TensorRT engine", "graph": "an ONNX graph", "checkpoint": "a checkpoint"}
    runs = {"engine": "TensorRT engines", "graph": "ONNX graphs", "checkpoint": "checkpoints"}
    if backend != "auto" and needs[backend] != kind:
        raise BackendError(
            f"{path}: is {what[kind]}, but --backend {backend} runs {runs[needs[backend]]} "
            f"(use --backend auto, or export the model: cyclemask-export)"
        )
    if kind != "checkpoint" and opts.image_size is not None:
        raise ConfigError(f"--size applies to checkpoints only: {path} fixes its own image size")
    if opts.compile and kind != "checkpoint":
        raise ConfigError(f"--compile applies to the torch backend (checkpoints): {path} is {what[kind]}")
    reason = f"--backend {backend}" if backend != "auto" else ""
    if kind == "engine":
        ok, why = tensorrt_usable()
        if not ok:
            raise BackendError(f"{path}: a TensorRT engine needs TensorRT and a CUDA GPU: {why}; "
                               "run the .onnx graph instead (--model model.onnx)")
        from .backend_trt import TrtBackend

        be = TrtBackend(path, direction, streams=opts.streams)
        reason = reason or "auto: trt, because the model is a TensorRT engine (the fastest backend)"
        return be, reason
    if kind == "graph":
        if backend == "openvino":
            return _openvino(path, direction, opts), reason
        if backend == "ort":
            return _ort(path, direction, opts), reason
        return _auto_graph(path, direction, opts)
    device = opts.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        why_dev = "a CUDA GPU is present" if device == "cuda" else "no CUDA GPU is visible to torch"
    else:
        why_dev = "--device " + device
    be = TorchBackend(
        path, direction, device=device, precision=opts.precision, image_size=opts.image_size,
        max_batch=opts.max_batch, cuda_graphs=opts.cuda_graphs, channels_last=opts.channels_last,
        threads=opts.threads, compile=opts.compile,
    )
    if not reason:
        reason = f"auto: torch on {device}, because the model is a checkpoint and {why_dev}"
        if device == "cpu" and not opts.compile:
            reason += ("; on a CPU an exported graph runs faster (cyclemask-export, then --model "
                       "the .onnx: auto picks OpenVINO or ONNX Runtime)")
    return be, reason


def _ort(path: Path, direction: str | None, opts: BackendOptions) -> OrtBackend:
    return OrtBackend(path, direction, provider=opts.ort_provider, threads=opts.threads, max_batch=opts.max_batch)


def _openvino(path: Path, direction: str | None, opts: BackendOptions) -> Backend:
    from .backend_openvino import OpenVinoBackend

    # No OpenVINO model cache: compiling these graphs takes under a second even at full size.
    return OpenVinoBackend(path, direction, mode=opts.ov_mode, threads=opts.threads, requests=opts.ov_requests)


def _auto_graph(path: Path, direction: str | None, opts: BackendOptions) -> tuple[Backend, str]:
    """auto for an ONNX graph: ORT on a GPU machine; on a CPU machine ORT or OpenVINO."""
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    has_ov = importlib.util.find_spec("openvino") is not None
    if opts.ort_provider != "auto":
        return _ort(path, direction, opts), (f"auto: ort, because the model is an ONNX graph and "
                                             f"--ort-provider {opts.ort_provider} was given")
    import torch

    if torch.cuda.is_available() or not has_ov:
        why = ("a CUDA GPU is present" if torch.cuda.is_available()
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
#: backend keeps) for at least PROBE_SECONDS each. A model whose first OpenVINO image takes more
#: than PROBE_HEAVY_S is not timed against ORT: the warm-up would cost seconds of the user's run
#: to confirm what the benchmarks show for such models (OpenVINO ahead of ORT on the CPU).
PROBE_UNTIMED, PROBE_ROUNDS, PROBE_SECONDS, PROBE_HEAVY_S = 1, 2, 0.2, 0.25


def _probe_cpu(path: Path, direction: str | None, opts: BackendOptions) -> tuple[Backend, str]:
    """Activate OpenVINO and ORT (CPU) on the graph, time a few single-image calls of each,
    alternating so that other load on the machine hits both alike, keep the faster one active.

    Where one image is slow (a full-size generator on a small CPU) only OpenVINO is loaded."""
    import time

    cpu = BackendOptions(**{**opts.__dict__, "ort_provider": "cpu"})
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
    if first > PROBE_HEAVY_S:
        return ov, (
            f"auto: openvino, because the model is an ONNX graph and no CUDA GPU is visible; its first image "
            f"took {first:.2f} s here, too long to time ONNX Runtime against it too, and OpenVINO is the faster "
            "CPU runtime for generators of this size (benchmarks/cpu_backends.py)")
    cands: dict[str, Backend] = {"openvino": ov, "ort": _ort(path, direction, cpu)}
    best: dict[str, float] = {}
    try:
        ort_be = cands["ort"]
        ort_be.activate()
        for _ in range(PROBE_UNTIMED):
            ort_be.infer(x)
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
    except BaseException:
        for be in cands.values():
            be.deactivate()
        raise
    winner = min(best, key=best.get)
    for name, be in cands.items():
        if name != winner:
            be.deactivate()
    spent = time.perf_counter() - t_all
    other = next(n for n in best if n != winner)
    ratio = best[other] / best[winner]
    return cands[winner], (
        f"auto: {winner}, because the model is an ONNX graph, no CUDA GPU is visible, and in a {spent:.1f} s "
        f"warm-up it took {1000 * best[winner]:.1f} ms per image vs {other} {1000 * best[other]:.1f} ms "
        f"({ratio:.2f}x)")
