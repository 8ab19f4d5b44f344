"""Mixed-precision (FP16) graph from an FP32 export.

TensorRT 11 removed the FP16 builder flag: networks are strongly typed, so the precision must
be written in the graph. This converts convolutions (and everything between the first and last
convolution) to FP16 and keeps in FP32:

- InstanceNormalization, everywhere: in FP16 its variance over a whole feature map overflows
  and drifts; the converter puts Cast nodes around each one;
- the uint8 pre-processing (Cast, /127.5, -1, layout) before the first convolution and the
  post-processing (Tanh, (y+1)*127.5, Round, Clip, Cast) after the last one: at 128..255 FP16
  steps by 0.125, which would move values across the rounding boundary and cost whole LSBs;
- in an erase-then-restore graph, all but its restoring network (`outside_restorer_nodes`).

Input and output stay uint8 (`keep_io_types`), so the file is a drop-in replacement for the
FP32 graph. ONNX Runtime's CPU provider runs it (through the casts), so it is verified here.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

from cyclemask.errors import ExportError

from .graph_lint import check_tensorrt_rules
from .onnx import check_contract, save_model_atomic, set_onnx_metadata

log = logging.getLogger(__name__)

#: Op types kept in FP32 wherever they occur.
FP32_OPS = ("InstanceNormalization",)
_CONV_OPS = ("Conv", "ConvTranspose")


def pre_post_nodes(graph) -> list[str]:
    """Names of the nodes before the first and after the last convolution (graph order is
    topological in a valid model): the uint8 pre/post-processing of the contract."""
    nodes = list(graph.node)
    conv_idx = [i for i, n in enumerate(nodes) if n.op_type in _CONV_OPS]
    if not conv_idx:
        raise ExportError("the graph has no Conv node: not a generator export")
    first, last = conv_idx[0], conv_idx[-1]
    chosen = nodes[:first] + nodes[last + 1:]
    unnamed = [n.op_type for n in chosen if not n.name]
    if unnamed:
        raise ExportError(f"pre/post nodes without names cannot be kept in FP32: {unnamed}")
    return [n.name for n in chosen]


def _hierarchy(node) -> str:
    """The exporter's record of the modules a node came from ("" when it wrote none)."""
    return next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.class_hierarchy"), "")


def outside_restorer_nodes(graph) -> list[str]:
    """In an erase-then-restore graph, the names of every node outside its restoring network:
    the segmenter, the hole's threshold and growth, the erase and the composite. In FP16 the
    segmenter's logits move by enough to move pixels at the hole's edge in or out of the hole,
    each a jump of many LSB; a seventh of the graph's work, it stays in FP32. Empty for a graph
    without a segmenter (a generator)."""
    if not any("MaskSegmenter" in _hierarchy(n) for n in graph.node):
        return []
    kept = [n for n in graph.node if "restore_models.Restorer" not in _hierarchy(n)]
    if any(not n.name for n in kept):
        raise ExportError("nodes outside the restoring network without names cannot be kept in FP32")
    return [n.name for n in kept]


def convert_model_fp16(model, *, fp32_ops: tuple[str, ...] = FP32_OPS):
    """Return the mixed-precision copy of an FP32 ModelProto (the input is not modified)."""
    from onnxconverter_common import float16

    block_nodes = sorted(set(pre_post_nodes(model.graph)) | set(outside_restorer_nodes(model.graph)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # keep_io_types: the contract's uint8 I/O is not float, but keeping the flag on means a
        # float-input graph would keep FP32 I/O too rather than silently change its interface.
        m16 = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(fp32_ops), node_block_list=block_nodes,
            disable_shape_infer=False,
        )
    _resize_scales_fp32(m16)
    _kept_nodes_keep_fp32_weights(m16, model)
    clipped = [w for w in caught if "truncated" in str(w.message)]
    if clipped:
        # Weights below FP16's useful range are flushed to +-1e-7 or clamped: say so once.
        log.info("FP16 conversion clamped %d weight values outside FP16 range", len(clipped))
    return m16


def _kept_nodes_keep_fp32_weights(m16, model) -> None:
    """The converter stores every weight in FP16 and casts it back for the nodes it keeps in
    FP32, so those would compute with rounded weights; give their casts the original FP32
    weights. The segmenter's hole edge moves with its weights' last
    bits: with rounded weights, pixels at the edge of the hole move in or out of it."""
    from onnx import TensorProto, numpy_helper

    original = {t.name: t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    inits = {t.name: t for t in m16.graph.initializer}
    added = {}
    for n in m16.graph.node:
        src = n.input[0] if n.op_type == "Cast" and n.input else None
        if (src in original and src in inits and inits[src].data_type == TensorProto.FLOAT16
                and any(a.name == "to" and a.i == TensorProto.FLOAT for a in n.attribute)):
            name = added.get(src)
            if name is None:
                name = added[src] = f"{src}__fp32"
                m16.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(original[src]), name))
            n.input[0] = name  # a Cast from FP32 to FP32: the lint's "Cast of an initializer" still holds
    # Drop only the FP16 copies this left without a user (a graph input or output counts as one).
    used = {i for n in m16.graph.node for i in n.input} | {v.name for v in m16.graph.input} | \
        {v.name for v in m16.graph.output}
    dropped = {src for src in added if src not in used}
    keep = [t for t in m16.graph.initializer if t.name not in dropped]
    del m16.graph.initializer[:]
    m16.graph.initializer.extend(keep)
    info = [v for v in m16.graph.value_info if v.name not in dropped]
    del m16.graph.value_info[:]
    m16.graph.value_info.extend(info)


def _resize_scales_fp32(model) -> None:
    """Put Resize's `scales` back in FP32: the converter turns that initializer into FP16 too,
    and the ONNX Resize op takes scales in float only (the erase-then-restore graph's U-Nets
    upsample with Resize)."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Resize" and len(node.input) > 2 and node.input[2] in inits:
            t = inits[node.input[2]]
            if t.data_type == onnx.TensorProto.FLOAT16:
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype("float32"), t.name))
                for vi in model.graph.value_info:
                    if vi.name == t.name:
                        vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def fp16_summary(model) -> dict[str, int]:
    """Counts of node op types by the float type they compute in (for logs and tests)."""
    import onnx

    types = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    counts: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type in ("Cast",) or not n.output:
            continue
        et = types.get(n.output[0])
        tag = {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.FLOAT: "fp32"}.get(et, "other")
        counts[f"{n.op_type}:{tag}"] = counts.get(f"{n.op_type}:{tag}", 0) + 1
    return counts


def to_fp16(src_path: str | os.PathLike, dst_path: str | os.PathLike, *, fp32_ops: tuple[str, ...] = FP32_OPS) -> Path:
    """Write the mixed-precision version of the FP32 graph `src_path` to `dst_path` (atomic).

    Metadata_props are carried over with precision set to "fp16". The result passes
    ``onnx.checker`` (full check) and keeps the uint8 contract; it is NOT compared numerically
    here: `cyclemask.export.pipeline` does that, through the runtime's ONNX Runtime backend.
    """
    import onnx

    src = Path(src_path)
    if not src.is_file():
        raise ExportError(f"{src}: no such ONNX file")
    t0 = time.perf_counter()
    try:
        model = onnx.load(str(src))
    except Exception as exc:
        raise ExportError(f"{src}: not a readable ONNX model ({type(exc).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    m16 = convert_model_fp16(model, fp32_ops=fp32_ops)
    if "image_size" in props:
        check_contract(m16, int(props["image_size"]), "the FP16 graph")
    check_tensorrt_rules(m16, "the FP16 graph")
    kept = ",pre/post" + (",all but the restorer" if outside_restorer_nodes(model.graph) else "")
    set_onnx_metadata(m16, {**props, "precision": "fp16", "fp32_ops": ",".join(fp32_ops) + kept})
    try:
        onnx.checker.check_model(m16, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"FP16 graph fails onnx.checker: {str(exc).splitlines()[0][:300]}") from exc
    out = save_model_atomic(m16, dst_path)
    log.info("wrote FP16 ONNX %s (%.1f MB) in %.1f s", out, out.stat().st_size / 1e6, time.perf_counter() - t0)
    return out
