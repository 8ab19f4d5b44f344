"""Artefact metadata: ONNX metadata_props and the TensorRT engine sidecar JSON.

Both are read by the runtime (engine/) to refuse an artefact that does not fit, with a message
that says how to rebuild it. This module imports neither onnxruntime nor tensorrt.

ONNX metadata_props (all values are strings in the file; `read_onnx_metadata` types them):

=====================  ===========================================================
format                 "cyclemask.onnx" (marks a graph written by cyclemask-export)
format_version         "1"
precision              "fp32" or "fp16"
direction              "mask" | "unmask" (when known)
image_size             S of the uint8 [N, S, S, 3] contract
ngf, n_blocks, norm    generator architecture (also dropout, in/out channels)
input, output          tensor names ("image", "translated")
opset                  ONNX opset of the default domain
cyclemask_version, torch_version, onnx_version   versions that wrote the graph
checkpoint_sha256      sha256 of the checkpoint FILE the weights came from
weights_sha256         `cyclemask.checkpoint.state_dict_sha256` of the weights
=====================  ===========================================================
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cyclemask import __version__
from cyclemask.errors import BackendError, ExportError

ONNX_FORMAT = "cyclemask.onnx"
ONNX_FORMAT_VERSION = 1
_INT_KEYS = ("format_version", "image_size", "ngf", "n_blocks", "in_channels", "out_channels", "opset")
_BOOL_KEYS = ("dropout",)


def build_onnx_metadata(
    *,
    config=None,
    image_size: int,
    precision: str,
    opset: int,
    extra: dict | None = None,
) -> dict[str, str]:
    """The metadata_props of a graph: contract, architecture, versions, then `extra` on top."""
    import onnx
    import torch

    props: dict[str, Any] = {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "precision": precision,
        "image_size": image_size,
        "input": "image",
        "output": "translated",
        "opset": opset,
        "cyclemask_version": __version__,
        "torch_version": str(torch.__version__),
        "onnx_version": onnx.__version__,
    }
    if config is not None:
        props.update(config.to_dict())
    props.update(extra or {})
    return {str(k): _to_str(v) for k, v in props.items() if v is not None}


def _to_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def set_onnx_metadata(model, props: dict[str, str]) -> None:
    """Replace keys of `props` in model.metadata_props, keep the other entries."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for k, v in kept + sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, _to_str(v)


def parse_onnx_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """Type the string values of metadata_props (ints, bools); other keys stay strings."""
    out: dict[str, Any] = dict(raw)
    for key in _INT_KEYS:
        if key in out:
            try:
                out[key] = int(out[key])
            except ValueError:
                raise ExportError(f"ONNX metadata {key!r} should be an integer; got {out[key]!r}") from None
    for key in _BOOL_KEYS:
        if key in out:
            out[key] = out[key].lower() == "true"
    return out


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata_props of an ONNX file, typed (image_size, ngf, n_blocks, opset are ints).

    Raises ExportError naming the file when it is missing or not an ONNX model. A graph that
    was not written by cyclemask-export comes back without the "format" key: callers that need
    our contract should check ``meta.get("format") == ONNX_FORMAT``.
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ExportError(f"{p}: no such ONNX file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ExportError(f"{p}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    return parse_onnx_metadata({e.key: e.value for e in model.metadata_props})


def write_json_atomic(path: str | os.PathLike, data: dict) -> Path:
    from cyclemask.imageio import write_bytes_atomic

    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return Path(path)


# ------------------------------------------------------------------------------------------------
# TensorRT engine sidecar (`<engine>.json`), read and checked without TensorRT
# ------------------------------------------------------------------------------------------------

ENGINE_FORMAT = "cyclemask.engine"
ENGINE_FORMAT_VERSION = 1
#: CUDA streams the TensorRT runtime runs by default, and so the optimization profiles an
#: engine is built with by default (one per concurrent execution context).
DEFAULT_STREAMS = 2


class EngineArtefactError(ExportError, BackendError):
    """An engine or its sidecar is missing, unreadable, or was built for another TensorRT/GPU.

    Both an ExportError and a BackendError, so export code and runtime code each catch it as
    their own kind.
    """


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
    raise EngineArtefactError(f"cannot read compute capability {cc!r} (expected e.g. '8.9' or [8, 9])")


_SIDECAR_REQUIRED = ("format", "tensorrt_version", "gpu_name", "compute_capability", "profile",
                     "onnx_sha256", "image_size")


def load_engine_sidecar(engine_path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the sidecar JSON beside `engine_path`.

    Raises EngineArtefactError naming the file and saying what is wrong (missing, not JSON, not
    a cyclemask sidecar, missing keys) and, where the sidecar records it, the rebuild command.
    """
    p = Path(engine_path)
    side = sidecar_path(p)
    if not side.is_file():
        raise EngineArtefactError(
            f"{p}: no sidecar {side.name} beside the engine, so it cannot be checked against this "
            f"TensorRT and GPU; rebuild the engine: {engine_rebuild_command(None, p.parent)}"
        )
    try:
        data = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EngineArtefactError(f"{side}: not a readable sidecar ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != ENGINE_FORMAT:
        raise EngineArtefactError(f"{side}: not a cyclemask engine sidecar (no \"format\": \"{ENGINE_FORMAT}\")")
    redo = data.get("rebuild_command") or engine_rebuild_command(data.get("onnx_path"), p.parent)
    missing = [k for k in _SIDECAR_REQUIRED if k not in data]
    if missing:
        raise EngineArtefactError(f"{side}: sidecar lacks {', '.join(missing)}; rebuild the engine: {redo}")
    prof = data["profile"]
    if not (isinstance(prof, dict) and all(isinstance(prof.get(k), list) and len(prof[k]) == 4 for k in ("min", "opt", "max"))):
        raise EngineArtefactError(f"{side}: profile must hold min/opt/max shapes [N, S, S, 3]; got {prof!r}. Rebuild: {redo}")
    data["compute_capability"] = format_capability(data["compute_capability"])
    data.setdefault("rebuild_command", redo)
    return data


#: Same reader under the name the runtime first used.
read_engine_sidecar = load_engine_sidecar


def check_sidecar(
    sidecar: dict[str, Any],
    trt_version: str,
    gpu_name: str,
    cc,
    *,
    engine_path: str | os.PathLike | None = None,
) -> list[str]:
    """Check a sidecar (from `load_engine_sidecar`) against the running TensorRT and GPU.

    Raises EngineArtefactError with the rebuild command when the engine cannot run here: a
    different TensorRT version (engines are tied to the exact version unless built
    version-compatible, and then only within a major version) or a different compute
    capability. Returns warnings for what does not stop it (same architecture, another GPU
    product: kernels were tuned for the other one).
    """
    where = str(engine_path) if engine_path else "engine"
    redo = sidecar.get("rebuild_command") or engine_rebuild_command(
        sidecar.get("onnx_path"), Path(engine_path).parent if engine_path else None)
    built_trt = str(sidecar.get("tensorrt_version", ""))
    if not built_trt:
        raise EngineArtefactError(f"{where}: sidecar does not record the TensorRT version; rebuild it: {redo}")
    if built_trt != str(trt_version):
        same_major = built_trt.split(".")[0] == str(trt_version).split(".")[0]
        if not (sidecar.get("version_compatible") and same_major):
            raise EngineArtefactError(
                f"{where}: built with TensorRT {built_trt}, but this is TensorRT {trt_version}; an engine runs "
                f"only with the TensorRT version that built it. Rebuild it here: {redo}"
            )
    built_cc = format_capability(sidecar.get("compute_capability", ""))
    here_cc = format_capability(cc)
    built_gpu = str(sidecar.get("gpu_name", "")).strip()
    if built_cc != here_cc:
        raise EngineArtefactError(
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
