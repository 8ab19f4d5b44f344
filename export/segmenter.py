"""The mask segmenter as a graph of its own: uint8 image in, uint8 matte out.

Input ``image`` uint8 ``[N, S, S, 3]`` RGB (the generators' input), output ``matte`` uint8
``[N, S, S, 1]``: 255 where the segmenter sees a mask, 0 where it sees none. Normalisation,
sigmoid, rounding and clipping live in the graph (`cyclemask.restore_models.SegmenterGraph`),
under the same TensorRT rules as the generators' graphs (uint8 only at the edges). It is what
evaluation measures "mask left after unmasking" with; the unmasking graph carries its own copy
of the segmenter inside it. Verified like the generators: ONNX Runtime against eager, <= 1 LSB.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from cyclemask.artifacts import INPUT_NAME, ArtefactError, onnx_tensor_specs
from cyclemask.errors import ExportError

from .graph_lint import check_tensorrt_rules
from .onnx import OPSET, build_onnx_metadata, export_model_proto, save_model_atomic, set_onnx_metadata

log = logging.getLogger(__name__)

MATTE_NAME = "matte"
SEGMENTER_KIND = "segmenter"


def check_segmenter_io(model, image_size: int | None, where: str) -> int:
    """The segmenter's contract; returns S. ArtefactError names what came."""
    inputs, outputs = onnx_tensor_specs(model)
    got = f"inputs [{', '.join(t.describe() for t in inputs)}], outputs [{', '.join(t.describe() for t in outputs)}]"
    ok = (len(inputs) == 1 and len(outputs) == 1 and inputs[0].dtype == "uint8" and outputs[0].dtype == "uint8"
          and len(inputs[0].shape) == 4 and inputs[0].shape[3] == 3 and len(outputs[0].shape) == 4
          and outputs[0].shape[3] == 1 and inputs[0].shape[1:3] == outputs[0].shape[1:3]
          and isinstance(inputs[0].shape[1], int))
    if not ok or (image_size is not None and inputs[0].shape[1] != image_size):
        raise ArtefactError(f"{where}: not a cyclemask segmenter: expected input {INPUT_NAME!r} uint8 [N, S, S, 3] "
                            f"and output {MATTE_NAME!r} uint8 [N, S, S, 1]; got {got}")
    return int(inputs[0].shape[1])


def eager_matte(segmenter, batch_u8: np.ndarray) -> np.ndarray:
    """The eager reference of the graph: uint8 [N, S, S, 3] -> uint8 [N, S, S, 1]."""
    import torch

    from cyclemask.restore_models import SegmenterGraph

    with torch.no_grad():
        return SegmenterGraph(segmenter.eval()).eval()(torch.from_numpy(np.ascontiguousarray(batch_u8))).numpy()


def export_segmenter(segmenter, path: str | os.PathLike, *, image_size: int, metadata: dict | None = None,
                     verify: np.ndarray | None = None) -> Path:
    """Write the segmenter's graph to `path` (atomically) after checking its contract and the
    TensorRT rules; with `verify` (uint8 images), compare ONNX Runtime with eager first."""
    import onnx

    from cyclemask.restore_models import SegmenterGraph

    if image_size % 16:
        raise ExportError(f"the segmenter needs an image size that is a multiple of 16; got {image_size}")
    model = export_model_proto(segmenter, image_size=image_size, wrapper=SegmenterGraph, output_name=MATTE_NAME)
    check_segmenter_io(model, image_size, "the exported segmenter graph")
    check_tensorrt_rules(model, "the exported segmenter graph")
    props = build_onnx_metadata(config=segmenter.config, image_size=image_size, precision="fp32", opset=OPSET,
                                extra={"kind": SEGMENTER_KIND, "output": MATTE_NAME, **(metadata or {})})
    set_onnx_metadata(model, props)
    model.producer_name = "cyclemask"
    onnx.checker.check_model(model, full_check=True)
    if verify is not None:
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {INPUT_NAME: verify})[0]
        want = eager_matte(segmenter, verify)
        worst = int(np.abs(got.astype(np.int16) - want).max())
        if worst > 1:
            raise ExportError(f"the segmenter graph differs from eager by up to {worst} levels (bound: 1)")
        log.info("segmenter graph: max %d level(s) from eager on %d images", worst, len(verify))
    return save_model_atomic(model, path)
