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
from cyclemask.errors import ExportError

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
