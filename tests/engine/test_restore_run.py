"""The erase-then-restore unmasking graph through the whole path: export (FP32 and FP16 verified,
the segmenter beside it), then `cyclemask-run --unmask`, where the paste follows the graph."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.checkpoint import save_restore
from cyclemask.image_files import read_image, write_image
from cyclemask.restore_models import MaskSegmenter, Restorer, RestorerConfig, SegmenterConfig


@pytest.fixture(scope="module")
def restore_graphs(tmp_path_factory):
    """A tiny restore bundle whose segmenter sees a mask in the lower middle of every crop, exported."""
    import torch

    from cyclemask.export.cli import main as export_main

    torch.manual_seed(0)
    seg = MaskSegmenter(SegmenterConfig(channels=(4, 8)))
    res = Restorer(RestorerConfig(channels=(4, 8), n_res=1, grow=1))
    with torch.no_grad():  # a segmenter that never sees a mask
        seg.net.out.weight.zero_()
        seg.net.out.bias.fill_(-20.0)
    d = tmp_path_factory.mktemp("restore")
    save_restore(d / "restore.pt", seg, res, {"image_size": 64})
    r = CliRunner().invoke(export_main, ["--checkpoint", str(d / "restore.pt"), "--out", str(d / "out"), "--fp16"])
    assert r.exit_code == 0, r.output
    return d / "out", r.output


@pytest.mark.slow
def test_export_writes_and_verifies_the_restore_graph_and_its_segmenter(restore_graphs):
    out, text = restore_graphs
    from cyclemask.artifacts import read_onnx_metadata

    assert (out / "unmask.onnx").is_file() and (out / "unmask.fp16.onnx").is_file()
    assert (out / "segmenter.onnx").is_file()
    assert read_onnx_metadata(out / "unmask.onnx")["method"] == "restore"
    assert "PASS" in text and "FAIL" not in text


@pytest.mark.slow
def test_a_graph_that_finds_no_mask_gives_every_photo_back_unchanged(restore_graphs, tmp_path, two_faces):
    from cyclemask.engine.cli import main

    out, _ = restore_graphs
    write_image(tmp_path / "in" / "a.png", two_faces)
    r = CliRunner().invoke(main, ["--no-progress", "--model", str(out / "unmask.onnx"), "--images", str(tmp_path / "in"),
                                  "--out", str(tmp_path / "o"), "--unmask"])
    assert r.exit_code == 0, r.output
    # --paste auto, the default, chose the hole below the eyes for this graph
    assert "the segmented mask below the eyes erased and restored" in r.output
    assert np.array_equal(read_image(tmp_path / "o" / "a.png"), two_faces)
