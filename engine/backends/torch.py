"""PyTorch backend: a checkpoint (generator bundle, network file or reference-repository file)
run eagerly, with CUDA graphs or torch.compile. The only backend that needs torch; it imports it
when activated, so importing this module costs nothing."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np

from cyclemask.artifacts import checkpoint_image_size
from cyclemask.errors import BackendError, CheckpointError, ConfigError

from .base import BackendOptions, SyncBackend

log = logging.getLogger(__name__)

DEFAULT_TORCH_SIZE = 256  # the paper's and the reference's training size
TORCH_PRECISIONS = ("fp32", "fp16", "bf16")


def available() -> str | None:
    """Why this backend cannot run here (None: it can)."""
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (pip install 'cyclemask[torch]')"
    return None


def resolve_device(device: str) -> tuple[str, str]:
    """"auto" -> cuda when torch sees a GPU, else cpu; returns the device and why."""
    if device != "auto":
        return device, f"--device {device}"
    import torch

    if torch.cuda.is_available():
        return "cuda", "a CUDA GPU is present"
    return "cpu", "no CUDA GPU is visible to torch"


def from_options(path: Path, direction: str | None, opts: BackendOptions) -> "TorchBackend":
    return TorchBackend(path, direction, **opts.keywords("torch", device=lambda d: resolve_device(d)[0]))


class TorchBackend(SyncBackend):
    """Eager PyTorch from a checkpoint (a bundle holding both directions, a network file, or a
    reference-repository generator file).

    device: "cpu" or "cuda[:i]"; precision "fp32" (IEEE: TF32 is off while it runs on CUDA),
    "fp16" (CUDA only: half-precision convolutions on the CPU are slow and not what the engines
    run) or "bf16" (CPU only, on CPUs with native BF16: weights and activations in bfloat16,
    about 2x faster than FP32 there at a verified error; elsewhere an error). `cuda_graphs`
    captures the forward pass once for `max_batch` images and replays it (a partial batch is
    padded: instance and batch norm in eval mode treat images independently, so padding changes
    nothing); `channels_last` stores activations NHWC, which cuDNN prefers for FP16.
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
        if precision not in TORCH_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(TORCH_PRECISIONS)}; got {precision!r}")
        if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
            raise ConfigError(f"device must be cpu, cuda or cuda:N; got {device!r}")
        if precision == "fp16" and device == "cpu":
            raise ConfigError("fp16 needs a CUDA device; on the CPU use --precision fp32 (or bf16 where the CPU has it)")
        if precision == "bf16" and device != "cpu":
            raise ConfigError("--precision bf16 is the CPU's low precision: add --device cpu, or on the CUDA device "
                              "use --precision fp16")
        if precision == "bf16":
            from ..cpu_features import require_bf16

            require_bf16("torch on the CPU")
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
        why = available()
        if why:
            raise BackendError(f"{self.model_path or 'generator'}: the torch backend runs checkpoints with PyTorch: {why}; "
                               "or export the checkpoint and run the .onnx graph")
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
        from cyclemask.restore_models import EraseRestore

        # As an exported graph records it (export.pipeline.method_of): the runtime's paste follows it.
        self.metadata["method"] = "restore" if isinstance(net, EraseRestore) else "cyclegan"
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)
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

        from cyclemask.image_tensors import postprocess, preprocess

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

    def _run(self, batch_u8: np.ndarray) -> np.ndarray:
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
        return np.ascontiguousarray(out.numpy())

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
