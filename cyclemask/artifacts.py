"""The artefact contract: what an exported graph, an engine and a checkpoint promise each other.

Every stage reads artefacts through this module, so there is one definition of each check
(docs/ARCHITECTURE.md, "Contracts"): export writes graphs and engines that pass it, the runtime
refuses whatever does not. It imports neither torch, onnx, onnxruntime nor tensorrt, so the
torch-free runtime uses it as is.

- The graph contract: input `INPUT_NAME` uint8 [N, S, S, 3] RGB, output `OUTPUT_NAME` uint8
  [N, S, S, 3], N dynamic. `check_graph_io` checks it on the tensors any runtime reports.
- ONNX metadata_props, typed by `parse_onnx_metadata` (all values are strings in the file):

=====================  ===========================================================
format                 "cyclemask.onnx" (marks a graph written by cyclemask-export)
format_version         "1"
precision              "fp32", "fp16" or "int8" (cyclemask-export --int8: QDQ graph)
direction              "mask" | "unmask" (when known)
image_size             S of the uint8 [N, S, S, 3] contract
ngf, n_blocks, norm    generator architecture (also dropout, in/out channels)
input, output          tensor names ("image", "translated")
opset                  ONNX opset of the default domain
cyclemask_version, torch_version, onnx_version   versions that wrote the graph
checkpoint_sha256      sha256 of the checkpoint FILE the weights came from
weights_sha256         `cyclemask.checkpoint.state_dict_sha256` of the weights
int8_config            INT8 graphs: the quantisation settings (JSON)
int8_calibration       INT8 graphs: calibration faces used and their sha256 (JSON)
int8_verification      INT8 graphs: the checks on held-out faces, one per runtime (JSON list)
bf16_verification      FP32 graphs exported with --bf16: the BF16 check (JSON)
=====================  ===========================================================

- The TensorRT engine sidecar (`<engine>.json`): TensorRT version, GPU name and compute
  capability, profile shapes and count, the graph's and the engine's sha256, the command that
  rebuilds it. `load_engine_sidecar` reads and validates it, `check_sidecar` compares it with the
  running TensorRT and GPU.
- The image size a checkpoint records (`checkpoint_image_size`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cyclemask import DIRECTIONS
from cyclemask.errors import CycleMaskError

INPUT_NAME = "image"
OUTPUT_NAME = "translated"
BATCH_DIM = "batch"
CONTRACT = f"input {INPUT_NAME!r} uint8 [N, S, S, 3] and output {OUTPUT_NAME!r} uint8 [N, S, S, 3]"

ONNX_FORMAT = "cyclemask.onnx"
ONNX_FORMAT_VERSION = 1
_INT_KEYS = ("format_version", "image_size", "ngf", "n_blocks", "in_channels", "out_channels", "opset")
_BOOL_KEYS = ("dropout",)

ENGINE_FORMAT = "cyclemask.engine"
ENGINE_FORMAT_VERSION = 1
#: CUDA streams the TensorRT runtime runs by default, and so the optimization profiles an
#: engine is built with by default (one per concurrent execution context).
DEFAULT_STREAMS = 2


class ArtefactError(CycleMaskError):
    """A graph, engine, sidecar or checkpoint is missing, unreadable, or breaks the contract
    (another TensorRT or GPU, a wrong tensor type): the message names the file and, where it
    can, the command that rebuilds it."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: str | os.PathLike, data: dict) -> Path:
    from cyclemask.image_files import write_bytes_atomic

    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return Path(path)


# ------------------------------------------------------------------------------------------------
# The graph's inputs and outputs
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output as a runtime reports it: dtype as numpy names it ("uint8"),
    shape with an int for every static dimension and None for every dynamic one."""

    name: str
    dtype: str
    shape: tuple

    def describe(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name!r} {self.dtype} [{dims}]"


@dataclass(frozen=True)
class GraphIO:
    """What `check_graph_io` found: the model size S, the fixed batch (None when dynamic) and
    the tensor names to feed and fetch."""

    image_size: int
    batch: int | None
    input_name: str
    output_name: str


def check_graph_io(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], where: str, *,
                   image_size: int | None = None, exact: bool = False) -> GraphIO:
    """The one check of the graph contract, whatever reported the tensors (onnx, ONNX Runtime,
    OpenVINO, TensorRT). `exact` (for what cyclemask-export writes) also requires the contract's
    tensor names and a dynamic batch. Raises ArtefactError naming `where`, what was expected and
    what came."""
    got = (f"got inputs [{', '.join(t.describe() for t in inputs)}], "
           f"outputs [{', '.join(t.describe() for t in outputs)}]")
    size_note = f" with S = {image_size}" if image_size is not None else ""

    def refuse(why: str = ""):
        return ArtefactError(f"{where}: not a cyclemask graph: expected {CONTRACT}{size_note}; {got}{why}")

    if len(inputs) != 1 or len(outputs) != 1:
        raise refuse()
    i, o = inputs[0], outputs[0]
    for t in (i, o):
        if t.dtype != "uint8" or len(t.shape) != 4 or t.shape[3] != 3:
            raise refuse()
    s = i.shape[1]
    if not isinstance(s, int) or s < 1 or i.shape[2] != s:
        raise refuse()
    if any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(i.shape, o.shape)):
        raise refuse(" (the output's shape differs from the input's)")
    if image_size is not None and s != image_size:
        raise refuse()
    if exact:
        if (i.name, o.name) != (INPUT_NAME, OUTPUT_NAME):
            raise refuse(f" (the tensors must be named {INPUT_NAME!r} and {OUTPUT_NAME!r})")
        if i.shape[0] is not None or o.shape[0] is not None or o.shape[1:] != i.shape[1:]:
            raise refuse(" (the batch dimension must be dynamic and the output fully declared)")
    return GraphIO(s, i.shape[0] if isinstance(i.shape[0], int) else None, i.name, o.name)


#: ONNX TensorProto element types by numpy name (spelled out: no onnx import needed).
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64",
               16: "bfloat16"}


def onnx_tensor_specs(model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The declared inputs (initializers excluded) and outputs of an onnx.ModelProto."""
    def spec(vi) -> TensorSpec:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        return TensorSpec(vi.name, ONNX_DTYPES.get(tt.elem_type, f"onnx type {tt.elem_type}"), dims)

    inits = {t.name for t in model.graph.initializer}
    return ([spec(v) for v in model.graph.input if v.name not in inits], [spec(v) for v in model.graph.output])


# ------------------------------------------------------------------------------------------------
# ONNX metadata
# ------------------------------------------------------------------------------------------------


def _to_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def metadata_props(props: dict[str, Any]) -> dict[str, str]:
    """metadata_props values as the file stores them (strings; None dropped)."""
    return {str(k): _to_str(v) for k, v in props.items() if v is not None}


def parse_onnx_metadata(raw: dict[str, str], where: str = "ONNX metadata") -> dict[str, Any]:
    """Type the string values of metadata_props (ints, bools); other keys stay strings."""
    out: dict[str, Any] = dict(raw)
    for key in _INT_KEYS:
        if key in out:
            try:
                out[key] = int(out[key])
            except ValueError:
                raise ArtefactError(f"{where}: metadata {key!r} should be an integer; got {out[key]!r}") from None
    for key in _BOOL_KEYS:
        if key in out:
            out[key] = str(out[key]).lower() == "true"
    return out


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata_props of an ONNX file, typed (image_size, ngf, n_blocks, opset are ints).

    Read by a scan of the file's top-level fields (`cyclemask.onnx_props`), which skips the
    graph: loading a 45 MB graph with onnx to read a few strings would cost 0.7 s of a run's
    start-up. Raises ArtefactError naming the file when it is missing, not an ONNX model, or
    holds a malformed value. A graph that was not written by cyclemask-export comes back without
    the "format" key: callers that need our contract check ``meta.get("format") == ONNX_FORMAT``.
    """
    from cyclemask.onnx_props import NotOnnx, scan_metadata_props

    p = Path(path)
    if not p.is_file():
        raise ArtefactError(f"{p}: no such ONNX file")
    try:
        raw = scan_metadata_props(p)
    except (NotOnnx, OSError) as exc:
        raise ArtefactError(f"{p}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    return parse_onnx_metadata(raw, str(p))


def verification_note(metadata: dict, precision: str) -> str | None:
    """What cyclemask-export recorded about a graph's check at `precision` ("bf16" or "int8":
    the bf16_verification / int8_verification metadata), in one line for `cyclemask-run`; None
    when nothing was recorded."""
    raw = metadata.get(f"{precision}_verification")
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return None
    rows = data if isinstance(data, list) else [data]
    parts = [r.get("summary") for r in rows if isinstance(r, dict) and r.get("summary")]
    return "; ".join(parts) or None


def metadata_direction(meta: dict) -> str | None:
    d = meta.get("direction")
    return d if d in DIRECTIONS else None


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def checkpoint_image_size(extra: dict | None) -> int | None:
    """The image size a checkpoint's `extra` records: extra["image_size"], else the training
    crop size (training bundles keep the trainer's config in extra["train_config"]; the network
    saw `crop_size` crops, load_size is the resize before cropping). None when it records none
    (reference-repository files)."""
    extra = extra if isinstance(extra, dict) else {}
    train_cfg = extra.get("train_config") if isinstance(extra.get("train_config"), dict) else {}
    for value in (extra.get("image_size"), extra.get("crop_size"), train_cfg.get("crop_size")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# ------------------------------------------------------------------------------------------------
# TensorRT engine sidecar (`<engine>.json`), read and checked without TensorRT
# ------------------------------------------------------------------------------------------------


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """`mask.fp16.engine` -> `mask.fp16.engine.json`."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def engine_rebuild_command(onnx_path: str | os.PathLike | None, out_dir: str | os.PathLike | None = None,
                           streams: int | None = None) -> str:
    """The command that builds an engine from a verified FP16 graph on the target machine."""
    src = str(onnx_path) if onnx_path else "<direction>.fp16.onnx"
    out = f" --out {out_dir}" if out_dir else ""
    more = f" --streams {streams}" if streams and streams != DEFAULT_STREAMS else ""
    return f"cyclemask-export --from-onnx {src}{out}{more}"


def format_capability(cc) -> str:
    """(8, 9) / [8, 9] / "8.9" / "sm_89" -> "8.9"."""
    if isinstance(cc, (list, tuple)) and len(cc) == 2:
        return f"{int(cc[0])}.{int(cc[1])}"
    text = str(cc).strip().lower().removeprefix("sm_").removeprefix("sm")
    if "." in text:
        major, minor = text.split(".", 1)
        if major.isdigit() and minor.isdigit():
            return f"{int(major)}.{int(minor)}"
    elif text.isdigit() and len(text) >= 2:
        return f"{int(text[:-1])}.{int(text[-1])}"
    raise ArtefactError(f"cannot read compute capability {cc!r} (expected e.g. '8.9' or [8, 9])")


_SIDECAR_REQUIRED = ("format", "tensorrt_version", "gpu_name", "compute_capability", "profile",
                     "onnx_sha256", "image_size")


def load_engine_sidecar(engine_path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the sidecar JSON beside `engine_path`.

    Raises ArtefactError naming the file and saying what is wrong (missing, not JSON, not a
    cyclemask sidecar, missing keys) and, where the sidecar records it, the rebuild command.
    """
    p = Path(engine_path)
    side = sidecar_path(p)
    if not side.is_file():
        raise ArtefactError(
            f"{p}: no sidecar {side.name} beside the engine, so it cannot be checked against this "
            f"TensorRT and GPU; rebuild the engine: {engine_rebuild_command(None, p.parent)}"
        )
    try:
        data = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ArtefactError(f"{side}: not a readable sidecar ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != ENGINE_FORMAT:
        raise ArtefactError(f"{side}: not a cyclemask engine sidecar (no \"format\": \"{ENGINE_FORMAT}\")")
    redo = data.get("rebuild_command") or engine_rebuild_command(data.get("onnx_path"), p.parent)
    missing = [k for k in _SIDECAR_REQUIRED if k not in data]
    if missing:
        raise ArtefactError(f"{side}: sidecar lacks {', '.join(missing)}; rebuild the engine: {redo}")
    prof = data["profile"]
    if not (isinstance(prof, dict) and all(isinstance(prof.get(k), list) and len(prof[k]) == 4 for k in ("min", "opt", "max"))):
        raise ArtefactError(f"{side}: profile must hold min/opt/max shapes [N, S, S, 3]; got {prof!r}. Rebuild: {redo}")
    data["compute_capability"] = format_capability(data["compute_capability"])
    data.setdefault("rebuild_command", redo)
    return data


def check_sidecar(
    sidecar: dict[str, Any],
    trt_version: str,
    gpu_name: str,
    cc,
    *,
    engine_path: str | os.PathLike | None = None,
) -> list[str]:
    """Check a sidecar (from `load_engine_sidecar`) against the running TensorRT and GPU.

    Raises ArtefactError with the rebuild command when the engine cannot run here: a different
    TensorRT version (engines are tied to the exact version unless built version-compatible, and
    then only within a major version) or a different compute capability. Returns warnings for
    what does not stop it (same architecture, another GPU product: kernels were tuned for the
    other one).
    """
    where = str(engine_path) if engine_path else "engine"
    redo = sidecar.get("rebuild_command") or engine_rebuild_command(
        sidecar.get("onnx_path"), Path(engine_path).parent if engine_path else None)
    built_trt = str(sidecar.get("tensorrt_version", ""))
    if not built_trt:
        raise ArtefactError(f"{where}: sidecar does not record the TensorRT version; rebuild it: {redo}")
    if built_trt != str(trt_version):
        same_major = built_trt.split(".")[0] == str(trt_version).split(".")[0]
        if not (sidecar.get("version_compatible") and same_major):
            raise ArtefactError(
                f"{where}: built with TensorRT {built_trt}, but this is TensorRT {trt_version}; an engine runs "
                f"only with the TensorRT version that built it. Rebuild it here: {redo}"
            )
    built_cc = format_capability(sidecar.get("compute_capability", ""))
    here_cc = format_capability(cc)
    built_gpu = str(sidecar.get("gpu_name", "")).strip()
    if built_cc != here_cc:
        raise ArtefactError(
            f"{where}: built for {built_gpu or 'a GPU'} (compute capability {built_cc}), but this GPU is "
            f"{gpu_name} ({here_cc}); engines are specific to the GPU architecture. Rebuild it here: {redo}"
        )
    warnings = []
    if built_gpu and built_gpu != str(gpu_name).strip():
        warnings.append(
            f"{where}: built on {built_gpu}, running on {gpu_name} (same compute capability {here_cc}); "
            f"rebuild here for kernels tuned to this GPU: {redo}"
        )
    return warnings
