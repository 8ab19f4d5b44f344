"""FP32 graph: the uint8 contract as declared, self-contained file, metadata, parity with eager."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from cyclemask.artifacts import ONNX_FORMAT, ArtefactError, read_onnx_metadata
from cyclemask.errors import ExportError
from cyclemask.export.onnx import OPSET, check_contract, export_onnx
from cyclemask.export.verify import compare_uint8, graph_outputs
from cyclemask.image_tensors import eager_translate
from export_helpers import SIZE


def _dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_graph_declares_the_uint8_contract(graphs):
    model = onnx.load(str(graphs[0]))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("image", "translated")
    for vi in (inp, out):
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        dims = _dims(vi)
        assert dims[1:] == [SIZE, SIZE, 3]
        assert isinstance(dims[0], str) and dims[0], f"batch dimension must be dynamic; got {dims}"


def test_graph_is_one_self_contained_file_with_pinned_opset(graphs):
    p = graphs[0]
    model = onnx.load(str(p), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert sorted(x.name for x in p.parent.iterdir() if x.name.startswith("mask.onnx")) == ["mask.onnx"]
    assert {o.domain: o.version for o in model.opset_import}[""] == OPSET == 18
    onnx.checker.check_model(model, full_check=True)


def test_pre_and_post_processing_live_in_the_graph(graphs):
    ops = [n.op_type for n in onnx.load(str(graphs[0])).graph.node]
    # uint8 only at the graph's edges (TensorRT's parser refuses uint8 intermediate tensors):
    # cast to float first, then NHWC -> NCHW; round, clip, NCHW -> NHWC, and the uint8 cast last.
    assert ops[:2] == ["Cast", "Transpose"]
    assert ops[-4:] == ["Round", "Clip", "Transpose", "Cast"]


def test_metadata_records_direction_size_architecture_versions_and_hash(graphs):
    meta = read_onnx_metadata(graphs[0])
    assert meta["format"] == ONNX_FORMAT
    assert meta["precision"] == "fp32"
    assert meta["direction"] == "mask"
    assert meta["image_size"] == SIZE
    assert (meta["ngf"], meta["n_blocks"], meta["norm"]) == (8, 2, "instance")
    assert meta["checkpoint_sha256"] == "ab" * 32
    assert meta["opset"] == OPSET
    for key in ("cyclemask_version", "torch_version", "onnx_version"):
        assert meta[key]


@pytest.mark.parametrize("batch", [1, 3])
def test_fp32_graph_within_one_lsb_of_eager_at_any_batch(graphs, gen_a, rng, batch):
    x = rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
    got = graph_outputs(graphs[0], x, batch_size=batch)
    stats = compare_uint8(got, eager_translate(gen_a, x))
    assert stats.max_abs <= 1, stats.describe()
    assert 0 < got.std(), "degenerate output: the test would not see rounding differences"


def test_contract_check_rejects_a_misdeclared_output_shape(graphs):
    model = onnx.load(str(graphs[0]))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = SIZE // 2
    with pytest.raises(ArtefactError, match=r"x: not a cyclemask graph: expected input 'image' uint8 \[N, S, S, 3\] .* "
                                            r"with S = 32; got .*'translated' uint8 \[N, 16, 32, 3\]"):
        check_contract(model, SIZE, "x")


def test_contract_check_rejects_a_float_output_and_a_fixed_batch(graphs):
    model = onnx.load(str(graphs[0]))
    model.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    with pytest.raises(ArtefactError, match=r"outputs \['translated' float32 \[N, 32, 32, 3\]\]"):
        check_contract(model, SIZE, "x")
    model = onnx.load(str(graphs[0]))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    with pytest.raises(ArtefactError, match="the batch dimension must be dynamic"):
        check_contract(model, SIZE, "x")


@pytest.mark.parametrize("size,match", [(30, "multiple of 4"), (4, "integer >= 8"), (32.0, "integer >= 8")])
def test_export_refuses_bad_image_sizes(gen_a, tmp_path, size, match):
    with pytest.raises(ExportError, match=match):
        export_onnx(gen_a, tmp_path / "x.onnx", image_size=size)
    assert not (tmp_path / "x.onnx").exists()


def test_read_onnx_metadata_names_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ArtefactError, match=r"nope\.onnx: no such ONNX file"):
        read_onnx_metadata(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\x00 not a protobuf" * 10)
    with pytest.raises(ArtefactError, match=r"bad\.onnx: not a readable ONNX model"):
        read_onnx_metadata(bad)
