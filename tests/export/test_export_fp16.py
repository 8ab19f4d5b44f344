"""FP16 graph: which ops run in which precision, the uint8 interface, parity within the bounds."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from cyclemask.artifacts import read_onnx_metadata
from cyclemask.errors import ExportError
from cyclemask.export.fp16 import FP32_OPS, fp16_summary, pre_post_nodes, to_fp16
from cyclemask.export.verify import FP16_BOUNDS, compare_uint8, graph_outputs
from cyclemask.image_tensors import eager_translate
from export_helpers import SIZE


@pytest.fixture(scope="module")
def fp16_model(graphs):
    return onnx.shape_inference.infer_shapes(onnx.load(str(graphs[1])))


def test_convolutions_fp16_instance_norm_and_pre_post_fp32(fp16_model):
    counts = fp16_summary(fp16_model)
    assert counts.get("Conv:fp16", 0) >= 6 and "Conv:fp32" not in counts
    assert counts.get("ConvTranspose:fp16") == 2
    assert counts.get("InstanceNormalization:fp32", 0) >= 6 and "InstanceNormalization:fp16" not in counts
    for op in ("Div", "Sub", "Tanh", "Mul", "Round", "Clip"):  # pre: /127.5 - 1; post: tanh, *127.5, round, clip
        assert f"{op}:fp16" not in counts, f"{op} ran in FP16: {counts}"
        assert counts.get(f"{op}:fp32", 0) >= 1, f"{op} missing: {counts}"
    assert FP32_OPS == ("InstanceNormalization",)


def test_fp16_graph_keeps_uint8_io_and_metadata(graphs, fp16_model):
    for vi in (fp16_model.graph.input[0], fp16_model.graph.output[0]):
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = read_onnx_metadata(graphs[1])
    assert meta["precision"] == "fp16"
    assert meta["direction"] == "mask" and meta["image_size"] == SIZE
    assert meta["checkpoint_sha256"] == "ab" * 32
    assert graphs[1].stat().st_size < 0.8 * graphs[0].stat().st_size  # weights really halved


def test_fp16_graph_on_ort_cpu_within_bounds_of_eager(graphs, gen_a, rng):
    x = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    ref = eager_translate(gen_a, x)
    stats = compare_uint8(graph_outputs(graphs[1], x, batch_size=2), ref)
    assert not stats.failures(FP16_BOUNDS), stats.describe()
    # FP16 must actually differ from FP32 somewhere, else this test checks nothing about FP16.
    assert stats.frac_exact < 1.0, stats.describe()


def test_to_fp16_refuses_missing_and_unreadable_sources(tmp_path):
    with pytest.raises(ExportError, match=r"missing\.onnx: no such ONNX file"):
        to_fp16(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ExportError, match=r"bad\.onnx: not a readable ONNX model"):
        to_fp16(bad, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_pre_post_detection_needs_a_convolution():
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    with pytest.raises(ExportError, match="no Conv node"):
        pre_post_nodes(graph)


def test_an_erase_then_restore_graph_keeps_its_segmenter_and_hole_in_fp32_with_their_own_weights(graphs):
    """Only the restoring network runs in FP16: FP16 logits, or FP16-rounded segmenter weights,
    move pixels at the hole's edge in or out of the hole, many LSB each."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto

    from cyclemask.export.fp16 import _hierarchy, convert_model_fp16, outside_restorer_nodes
    from cyclemask.export.onnx import export_model_proto
    from cyclemask.restore_models import EraseRestore, MaskSegmenter, Restorer, RestorerConfig, SegmenterConfig

    torch.manual_seed(0)
    g = EraseRestore(MaskSegmenter(SegmenterConfig((4, 8))).eval(),
                     Restorer(RestorerConfig(channels=(4, 8), n_res=1, grow=1)).eval()).eval()
    m = export_model_proto(g, image_size=32)
    kept = set(outside_restorer_nodes(m.graph))
    seg_convs = [n for n in m.graph.node if n.op_type == "Conv" and "MaskSegmenter" in _hierarchy(n)]
    res_convs = [n for n in m.graph.node if n.op_type == "Conv" and "restore_models.Restorer" in _hierarchy(n)]
    assert seg_convs and res_convs and {n.name for n in seg_convs} <= kept and not kept & {n.name for n in res_convs}
    m16 = convert_model_fp16(m)
    types = {v.name: v.type.tensor_type.elem_type for v in list(m16.graph.value_info) + list(m16.graph.output)}
    inits = {t.name: t.data_type for t in m16.graph.initializer}
    producers = {o: n for n in m16.graph.node for o in n.output}
    by_name = {n.name: n for n in m16.graph.node}
    for n in seg_convs:
        conv = by_name[n.name]
        assert types[conv.output[0]] == TensorProto.FLOAT
        weight = conv.input[1]
        src = producers[weight].input[0] if weight in producers else weight  # through the converter's Cast
        assert inits[src] == TensorProto.FLOAT, f"{n.name} computes with FP16-rounded weights"
    assert all(types[by_name[n.name].output[0]] == TensorProto.FLOAT16 for n in res_convs)
    # a generator has no segmenter: nothing of it is kept beyond its pre/post and InstanceNorm
    assert outside_restorer_nodes(onnx.load(str(graphs[0])).graph) == []
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)
    run = lambda model: ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"image": x})[0].astype(int)
    assert np.abs(run(m16) - run(m)).max() <= 4
