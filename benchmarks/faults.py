"""Deliberately broken graphs: realistic export faults, made by editing a good graph.

The parity bounds are only worth something if each of them fails on a fault it exists to
catch. `make_fault(name, fp32_graph, out)` writes a copy of an exported FP32 graph with one
fault in it; the parity suite (tests/parity/test_parity_bounds.py) and the bound calibration
(scripts/calibrate_parity.py) run these graphs like any other variant and check which bounds
they break. Each fault is one that has happened to real exporters:

- ``truncate``: the Round before the uint8 Cast is lost, so the cast truncates (float -> uint8
  casts truncate; about half the values end 1 LSB low).
- ``norm-128``: the input is scaled by 1/128 instead of 1/127.5 (a normalisation constant
  copied from another model).
- ``fp16-instancenorm``: the FP16 graph without InstanceNormalization kept in FP32 (its
  variance over a whole feature map loses precision in FP16).
- ``fp16-prepost``: the FP16 graph with the uint8 pre/post-processing in FP16 too (at 128..255
  FP16 steps by 0.125, which moves values across rounding edges).
- ``zero-pad``: reflection padding exported as zero padding (borders change).
- ``bgr``: the input read as BGR (the first convolution sees blue where it learnt red).
"""

from __future__ import annotations

import os
from pathlib import Path

FAULTS = ("truncate", "norm-128", "fp16-instancenorm", "fp16-prepost", "zero-pad", "bgr")


def _load(path):
    import onnx

    return onnx.load(str(path))


def _first(model, op: str):
    return next(n for n in model.graph.node if n.op_type == op)


def _initializer(model, name: str):
    return next((t for t in model.graph.initializer if t.name == name), None)


def _truncate(model):
    nodes = list(model.graph.node)
    rnd = _first(model, "Round")
    for n in nodes:
        for i, name in enumerate(n.input):
            if name == rnd.output[0]:
                n.input[i] = rnd.input[0]
    model.graph.node.remove(rnd)
    return model


def _norm_128(model):
    import numpy as np
    from onnx import numpy_helper

    div = _first(model, "Div")
    t = _initializer(model, div.input[1])
    value = numpy_helper.to_array(t)
    if not np.allclose(value, 127.5):
        raise ValueError(f"expected the input scale 127.5; got {value}")
    t.CopyFrom(numpy_helper.from_array(np.full_like(value, 128.0), t.name))
    return model


def _zero_pad(model):
    for n in model.graph.node:
        if n.op_type == "Pad":
            for a in n.attribute:
                if a.name == "mode":
                    a.s = b"constant"
    return model


def _bgr(model):
    from onnx import numpy_helper

    conv = _first(model, "Conv")
    t = _initializer(model, conv.input[1])
    w = numpy_helper.to_array(t)
    t.CopyFrom(numpy_helper.from_array(w[:, ::-1].copy(), t.name))
    return model


def _round_trip_fp16(model, tensor: str) -> None:
    """Route `tensor` through FP16 and back: what computing its producer in FP16 loses."""
    from onnx import TensorProto, helper

    half, back = f"{tensor}__fp16", f"{tensor}__fp32"
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name == tensor:
                n.input[i] = back
    producer = next(i for i, n in enumerate(model.graph.node) if tensor in n.output)
    model.graph.node.insert(producer + 1, helper.make_node("Cast", [tensor], [half], to=TensorProto.FLOAT16))
    model.graph.node.insert(producer + 2, helper.make_node("Cast", [half], [back], to=TensorProto.FLOAT))


def _fp16_prepost(model):
    # The normalised input (after Sub) and the scaled output (before Round) in FP16 precision.
    _round_trip_fp16(model, _first(model, "Sub").output[0])
    _round_trip_fp16(model, _first(model, "Round").input[0])
    return model


def make_fault(name: str, fp32_graph: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write `fp32_graph` with the fault `name` to `out`; returns `out`. The result keeps the
    uint8 contract and the metadata, so every backend loads it as it would a good graph."""
    import onnx

    from cyclemask.export.fp16 import convert_model_fp16

    if name not in FAULTS:
        raise ValueError(f"fault must be one of {', '.join(FAULTS)}; got {name!r}")
    model = _load(fp32_graph)
    if name == "truncate":
        model = _truncate(model)
    elif name == "norm-128":
        model = _norm_128(model)
    elif name == "zero-pad":
        model = _zero_pad(model)
    elif name == "bgr":
        model = _bgr(model)
    elif name == "fp16-instancenorm":
        model = convert_model_fp16(model, fp32_ops=())
    elif name == "fp16-prepost":
        model = _fp16_prepost(convert_model_fp16(model))
    onnx.checker.check_model(model)
    out = Path(out)
    onnx.save(model, str(out))
    return out
