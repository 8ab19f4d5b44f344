"""The embedded demo model: small generators shipped inside the package.

Both directions, trained on a CPU (see README, "The embedded demo model"): the training bundle
`generators.pt`, the exported and verified FP32 graphs `mask.onnx` / `unmask.onnx`, and
`demo.json`, the record of how they were made, under cyclemask/assets/demo/. Every run without
--model uses them, so finding them is the core's job, not the demo's.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import DIRECTIONS
from .errors import ConfigError

BUNDLE_NAME = "generators.pt"
GRAPH_NAMES = {"mask": "mask.onnx", "unmask": "unmask.onnx"}
# Unmasking by erase-then-restore and by the CycleGAN generator: unmask.onnx is the graph of
# the method the figures chose (demo.json's "unmask_method"); the other one is unmask_<method>.onnx,
# a flag away. restore.pt is the restore bundle (segmenter and restorer), segmenter.onnx its
# segmenter alone (evaluation's judge of the mask left).
RESTORE_BUNDLE = "restore.pt"
SEGMENTER_NAME = "segmenter.onnx"
UNMASK_METHODS = ("restore", "cyclegan")
INFO_NAME = "demo.json"


def assets_dir() -> Path:
    """cyclemask/assets/demo inside the installed (or editable) package."""
    import importlib.resources

    return Path(str(importlib.resources.files("cyclemask"))) / "assets" / "demo"


def demo_info() -> dict:
    """The record of how the demo generators were made (demo.json), or {} when it is missing."""
    p = assets_dir() / INFO_NAME
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def default_model(direction: str | None = None, backend: str = "auto", method: str | None = None) -> Path:
    """The shipped demo model for a run without --model.

    The torch backend gets a checkpoint (the generator bundle, or the restore bundle); every
    other backend gets the direction's FP32 ONNX graph (the faster path on a CPU, and no torch).
    method (unmasking only): "restore" or "cyclegan"; None: the default, unmask.onnx.
    """
    d = direction or "mask"
    if d not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}; got {d!r}")
    if method is not None and method not in UNMASK_METHODS:
        raise ConfigError(f"unmask method must be one of {', '.join(UNMASK_METHODS)}; got {method!r}")
    default = default_unmask_method()
    method = method or default
    if d == "unmask" and backend == "torch":
        name = RESTORE_BUNDLE if method == "restore" else BUNDLE_NAME
    elif d == "unmask" and method != default:
        name = f"unmask_{method}.onnx"
    else:
        name = BUNDLE_NAME if backend == "torch" else GRAPH_NAMES[d]
    path = assets_dir() / name
    if not path.is_file():
        raise ConfigError(
            f"the embedded demo model {path} is missing from this installation of cyclemask; "
            "reinstall the package, or pass --model with your own graph or checkpoint"
        )
    return path


def default_unmask_method() -> str:
    """The method of the shipped unmask.onnx, as demo.json records it."""
    return demo_info().get("unmask_method", "cyclegan")


def describe_default() -> str:
    info = demo_info()
    size = info.get("image_size")
    what = f"{size}px, " if size else ""
    return f"the embedded demo generators ({what}CPU-trained; not the paper's model; pass --model for yours)"
