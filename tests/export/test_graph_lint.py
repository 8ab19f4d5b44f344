"""The static TensorRT parser rules (export/graph_lint.py) on every graph the exporter writes:
the FP32 and FP16 graphs pass; graphs with the op order cyclemask exported before (a Transpose
on the uint8 input, the uint8 Cast before the last Transpose) and other broken graphs fail,
each naming its rule. These are CPU checks of the file: TensorRT itself never runs here."""

from __future__ import annotations

import copy

import onnx
import pytest
import torch
from onnx import helper

from cyclemask.errors import ExportError
from cyclemask.export.graph_lint import check_tensorrt_rules, lint_tensorrt
from export_helpers import SIZE


class _OldOrder(torch.nn.Module):
    """The uint8 wrapper as it was: layout change on uint8, and the uint8 cast before the
    final layout change. TensorRT's parser refuses both ends."""

    def __init__(self, generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image):
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
        y = torch.round((self.generator(x) + 1.0) * 127.5)
        return torch.clamp(y, 0.0, 255.0).to(torch.uint8).permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def old_order_graph(gen_a):
    from cyclemask.export.onnx import BATCH_DIM

    example = torch.zeros((2, SIZE, SIZE, 3), dtype=torch.uint8)
    program = torch.onnx.export(_OldOrder(gen_a).eval(), (example,), None, input_names=["image"],
                                output_names=["translated"], opset_version=18, dynamo=True, external_data=False,
                                dynamic_shapes={"image": {0: torch.export.Dim(BATCH_DIM, min=1, max=64)}})
    return program.model_proto


def _rules(model) -> set[str]:
    return {p.rule for p in lint_tensorrt(model)}


@pytest.mark.parametrize("which", [0, 1], ids=["fp32", "fp16"])
def test_exported_graphs_pass_every_rule(graphs, which):
    model = onnx.load(str(graphs[which]))
    assert lint_tensorrt(model) == []
    ops = [n.op_type for n in model.graph.node]
    # The ends of the contract: uint8 only at the graph's edges, cast first and last.
    assert ops[0] == "Cast" and ops[-1] == "Cast"


def test_old_op_order_fails_at_both_ends(old_order_graph):
    problems = lint_tensorrt(old_order_graph)
    text = "\n".join(str(p) for p in problems)
    assert {p.rule for p in problems} == {"uint8-intermediate", "op-input-type"}, text
    # The input end: Transpose takes no UINT8 and would produce a uint8 intermediate tensor.
    assert "Transpose input 'image' is UINT8" in text
    # The output end: the Cast to uint8 feeds a Transpose instead of being the graph output.
    assert any(p.rule == "uint8-intermediate" and "Cast produces UINT8" in p.message for p in problems), text
    with pytest.raises(ExportError, match=r"breaks TensorRT's ONNX parser rules: \[.*TensorRT does not support "
                                          r"UINT8 types for intermediate tensors"):
        check_tensorrt_rules(old_order_graph, "old graph")


def test_old_op_order_fails_after_fp16_conversion_too(old_order_graph):
    from cyclemask.export.fp16 import convert_model_fp16

    assert "uint8-intermediate" in _rules(convert_model_fp16(old_order_graph))


def test_fp16_instancenorm_with_mixed_types_fails(graphs):
    model = onnx.load(str(graphs[1]))
    inits = {t.name: t for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "InstanceNormalization")
    # Feed the FP16 scale initializer straight in, skipping its Cast to FP32.
    producers = {o: n for n in model.graph.node for o in n.output}
    cast = producers[node.input[1]]
    assert cast.op_type == "Cast"  # the exporter keeps InstanceNorm's scale in FP32, through a Cast
    from onnx import numpy_helper

    half = numpy_helper.from_array(numpy_helper.to_array(inits[cast.input[0]]).astype("float16"), "scale_fp16")
    model.graph.initializer.append(half)
    node.input[1] = "scale_fp16"  # an FP16 scale fed straight in beside FP32 data
    assert "instancenorm-types" in _rules(model)


def test_unknown_op_and_opset_out_of_range_fail(graphs):
    model = onnx.load(str(graphs[0]))
    m = copy.deepcopy(model)
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    relu.op_type = "Gelu"
    assert "op-type" in _rules(m)
    m = copy.deepcopy(model)
    m.opset_import[0].version = 21
    assert "opset" in _rules(m)


def test_dynamic_pad_axes_and_clip_bounds_fail():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    axes = helper.make_tensor_value_info("axes", onnx.TensorProto.INT64, [2])
    lo = helper.make_tensor_value_info("lo", onnx.TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    pads = helper.make_tensor("pads", onnx.TensorProto.INT64, [4], [1, 1, 1, 1])
    nodes = [helper.make_node("Pad", ["x", "pads", "", "axes"], ["p"], mode="reflect"),
             helper.make_node("Clip", ["p", "lo", ""], ["y"])]
    graph = helper.make_graph(nodes, "g", [x, axes, lo], [y], initializer=[pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert {"pad-axes", "clip-bounds"} <= _rules(model)


@pytest.mark.parametrize("direction", ["mask", "unmask"])
def test_shipped_demo_graphs_pass_every_rule(direction):
    import importlib.resources

    path = importlib.resources.files("cyclemask") / "assets" / "demo" / f"{direction}.onnx"
    assert lint_tensorrt(onnx.load(str(path))) == []
