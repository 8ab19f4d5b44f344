"""FP32 ONNX export of a generator under the uint8 graph contract (docs/ARCHITECTURE.md).

The exported module is `cyclemask.image_tensors.UInt8Translator`: input ``image`` uint8
``[N, S, S, 3]`` RGB, output ``translated`` uint8 ``[N, S, S, 3]``, N dynamic, normalisation,
layout change, rounding and clipping inside the graph. The file is self-contained (weights
inline, no external data), opset pinned to `OPSET`, checked with ``onnx.checker`` (full
check), and carries metadata_props that `cyclemask.artifacts.read_onnx_metadata` reads.

Why the dynamo exporter: the legacy TorchScript exporter mis-declares the output shape of the
uint8 wrapper, and it is deprecated. The declared input and output types and shapes are checked
after every export all the same (`cyclemask.artifacts.check_graph_io`, exact), so an exporter
change cannot slip a wrong declaration past us.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from cyclemask import __version__
from cyclemask.artifacts import (
    BATCH_DIM,
    INPUT_NAME,
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    OUTPUT_NAME,
    check_graph_io,
    metadata_props,
    onnx_tensor_specs,
)
from cyclemask.errors import ExportError
from cyclemask.image_tensors import UInt8Translator

from .graph_lint import check_tensorrt_rules

log = logging.getLogger(__name__)

#: The opset every graph is written with. The dynamo exporter's native opset; TensorRT 10/11 and
#: ONNX Runtime >= 1.14 support it. Changing it is a contract change: re-verify the exports.
OPSET = 18


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ExportError(f"image_size must be an integer >= 8; got {image_size!r}")
    # Two stride-2 downsamplings then two x2 upsamplings: other sizes come back a different size.
    if image_size % 4:
        raise ExportError(f"image_size must be a multiple of 4 (the generator downsamples twice); got {image_size}")


def check_contract(model, image_size: int, what: str) -> None:
    """The graph contract, exactly (names, dynamic batch, S), on a graph this package wrote."""
    inputs, outputs = onnx_tensor_specs(model)
    check_graph_io(inputs, outputs, what, image_size=image_size, exact=True)


def build_onnx_metadata(*, config=None, image_size: int, precision: str, opset: int,
                        extra: dict | None = None) -> dict[str, str]:
    """The metadata_props of a graph (cyclemask.artifacts lists the keys): contract,
    architecture, versions, then `extra` on top."""
    import onnx
    import torch

    props = {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "precision": precision,
        "image_size": image_size,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "opset": opset,
        "cyclemask_version": __version__,
        "torch_version": str(torch.__version__),
        "onnx_version": onnx.__version__,
    }
    if config is not None:
        props.update(config.to_dict())
    props.update(extra or {})
    return metadata_props(props)


def set_onnx_metadata(model, props: dict) -> None:
    """Replace keys of `props` in model.metadata_props, keep the other entries."""
    props = metadata_props(props)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for k, v in kept + sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


# Loggers of the exporter stack that narrate every pass at INFO; quieted during an export unless
# this module logs at DEBUG.
_CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch._export", "torch.export")


@contextlib.contextmanager
def _quiet_exporter_logs():
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    saved = {n: logging.getLogger(n).level for n in _CHATTY_LOGGERS}
    try:
        for n in _CHATTY_LOGGERS:
            logging.getLogger(n).setLevel(logging.ERROR)
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def export_model_proto(generator: nn.Module, *, image_size: int, opset: int = OPSET,
                       wrapper: type[nn.Module] = UInt8Translator, output_name: str = OUTPUT_NAME):
    """Export `generator` wrapped in `wrapper` (the uint8 contract: UInt8Translator, or the
    segmenter's SegmenterGraph); returns the in-memory onnx.ModelProto."""
    _check_image_size(image_size)
    if opset != OPSET:
        log.warning("exporting with opset %d instead of the pinned %d: verify the result on every backend", opset, OPSET)
    # A private FP32 CPU copy: the caller's module keeps its device, dtype and training mode.
    net = copy.deepcopy(generator).to(device="cpu", dtype=torch.float32).eval()
    module = wrapper(net).eval()
    # Batch 2 as the example so the exporter cannot specialise the batch dimension to 1.
    example = torch.zeros((2, image_size, image_size, 3), dtype=torch.uint8)
    batch = torch.export.Dim(BATCH_DIM, min=1, max=4096)
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), _quiet_exporter_logs(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, (example,), None,
                input_names=[INPUT_NAME], output_names=[output_name],
                # Keyed by UInt8Translator.forward's argument, which is named after the input tensor.
                dynamic_shapes={INPUT_NAME: {0: batch}},
                opset_version=opset, dynamo=True, external_data=False,
                optimize=True, verify=False, verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; keep its first line for the user
        log.debug("exporter output:\n%s", chatter.getvalue())
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"torch.onnx.export failed: {first[:300]}") from exc
    model = program.model_proto
    # The dynamo exporter may name the dynamic dimension after its symbol (s0, ...): name it.
    for vi in (model.graph.input[0], model.graph.output[0]):
        d0 = vi.type.tensor_type.shape.dim[0]
        if d0.dim_param or not d0.HasField("dim_value"):
            d0.dim_param = BATCH_DIM
    return model


def save_model_atomic(model, path: str | os.PathLike) -> Path:
    """Serialise a ModelProto to one file (no external data), atomically."""
    from cyclemask.image_files import write_bytes_atomic

    data = model.SerializeToString()
    if len(data) >= 2**31:
        raise ExportError(f"{path}: the graph is {len(data)} bytes, over protobuf's 2 GiB limit for one file")
    write_bytes_atomic(path, data)
    return Path(path)


def export_onnx(
    generator: nn.Module,
    path: str | os.PathLike,
    *,
    image_size: int,
    metadata: dict | None = None,
    opset: int = OPSET,
) -> Path:
    """Write the FP32 graph of `generator` under the uint8 contract to `path`; return the path.

    `metadata` entries (direction, checkpoint_sha256, ...) are added to the model's
    metadata_props on top of what is derived here (image size, architecture, versions, opset).
    The file is written atomically. It is checked with ``onnx.checker`` (full check) and its
    declared input/output checked against the contract, but NOT compared numerically with the
    eager model: `cyclemask.export.pipeline` does that, through the runtime's backends.
    """
    import onnx

    t0 = time.perf_counter()
    model = export_model_proto(generator, image_size=image_size, opset=opset)
    check_contract(model, image_size, "the exported FP32 graph")
    check_tensorrt_rules(model, "the exported FP32 graph")
    config = getattr(generator, "config", None)
    props = build_onnx_metadata(config=config, image_size=image_size, precision="fp32", opset=opset, extra=metadata)
    set_onnx_metadata(model, props)
    model.producer_name = "cyclemask"
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph fails onnx.checker: {str(exc).splitlines()[0][:300]}") from exc
    out = save_model_atomic(model, path)
    log.info("exported FP32 ONNX %s (%.1f MB) in %.1f s", out, out.stat().st_size / 1e6, time.perf_counter() - t0)
    return out

