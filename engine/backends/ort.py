"""ONNX Runtime backend: an exported graph on the best execution provider that really loads.

ONNX Runtime falls back to the CPU without raising when a GPU provider's libraries are missing,
so the session's providers are read back after creation and compared with what was asked for.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
from pathlib import Path

import numpy as np

from cyclemask.artifacts import TensorSpec, check_graph_io, onnx_tensor_specs
from cyclemask.errors import BackendError, ConfigError

from .base import BackendOptions, SyncBackend, read_graph_metadata

log = logging.getLogger(__name__)

#: --ort-graph-opt -> onnxruntime.GraphOptimizationLevel
GRAPH_OPT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
                    "off": "ORT_DISABLE_ALL"}
# ONNX Runtime provider names, by the short names the CLI takes.
ORT_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def available() -> str | None:
    """Why this backend cannot run here (None: it can)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu)"
    return None


def from_options(path: Path, direction: str | None, opts: BackendOptions) -> "OrtBackend":
    from ..run_defaults import GPU_BATCH

    # Without --batch a GPU run takes GPU_BATCH (engine/run_defaults.py): the TensorRT EP's
    # profile is sized for it. On the CPU provider the hint is unused.
    return OrtBackend(path, direction, **opts.keywords("ort", max_batch=lambda b: b or GPU_BATCH))


class OrtBackend(SyncBackend):
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
        graph_opt: str = "all",
    ) -> None:
        super().__init__(Path(model_path), direction)
        if graph_opt not in GRAPH_OPT_LEVELS:
            raise ConfigError(f"graph_opt must be one of {', '.join(GRAPH_OPT_LEVELS)}; got {graph_opt!r}")
        self.graph_opt = graph_opt
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
                inp = _graph_input(self.model_path) if self.batch_hint else None
                if inp is not None and len(inp.shape) == 4 and all(isinstance(d, int) for d in inp.shape[1:]):
                    dims = "x".join(str(d) for d in inp.shape[1:])
                    opts.update(trt_profile_min_shapes=f"{inp.name}:1x{dims}",
                                trt_profile_opt_shapes=f"{inp.name}:{self.batch_hint}x{dims}",
                                trt_profile_max_shapes=f"{inp.name}:{self.batch_hint}x{dims}")
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
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT_LEVELS[self.graph_opt])
        if self.threads:
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
        # ONNX Runtime's pool threads spin for a while after each call by default: faster alone,
        # but in a run the spinning takes the CPU that decoding, detection and encoding need. A
        # face-aware 720p run of the restore graph on 2 cores: 16.7-18.2 frames/s spinning,
        # 21.2-24.3 without (OpenVINO 21.6-21.7), benchmarks/unmask_method.py's clip.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        self._adopt_graph_metadata(read_graph_metadata(p))
        self._session = session

    def _check_graph(self, session) -> None:
        def spec(t) -> TensorSpec:
            dtype = str(t.type).removeprefix("tensor(").removesuffix(")")
            dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
            return TensorSpec(t.name, dtype, tuple(d if isinstance(d, int) else None for d in t.shape))

        found = check_graph_io([spec(t) for t in session.get_inputs()], [spec(t) for t in session.get_outputs()],
                               str(self.model_path))
        self._image_size = found.image_size
        self._input_name, self._output_name = found.input_name, found.output_name
        if found.batch is not None:
            self.max_batch = found.batch  # a graph exported with a fixed batch

    def _run(self, batch_u8: np.ndarray) -> np.ndarray:
        return self._session.run([self._output_name], {self._input_name: np.ascontiguousarray(batch_u8)})[0]

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


def _graph_input(path: Path) -> TensorSpec | None:
    """The graph's declared input, read without running it (None when it cannot be read:
    ONNX Runtime then reports the file itself)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    inputs, _ = onnx_tensor_specs(model)
    return inputs[0] if len(inputs) == 1 else None
