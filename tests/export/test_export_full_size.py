"""The full ResNet-9 generator (ngf 64, 11.4M parameters) at 256 px through cyclemask-export
--fp16: both graphs written and verified within the documented bounds. Slow (minutes on 2 cores)."""

from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner

from cyclemask.checkpoint import save_generators
from cyclemask.config import GeneratorConfig
from cyclemask.export import pipeline
from cyclemask.export.cli import main
from cyclemask.artifacts import read_onnx_metadata
from cyclemask.models import build_generator

pytestmark = pytest.mark.slow


def test_full_size_fp16_export_is_verified(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "tensorrt_status", lambda: (False, "TensorRT is not installed (test)"))
    torch.manual_seed(0)
    ckpt = tmp_path / "full.pt"
    save_generators(ckpt, {"mask": build_generator(GeneratorConfig())})
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["--checkpoint", str(ckpt), "--fp16", "--out", str(out), "--verify-random", "1"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    meta = read_onnx_metadata(out / "mask.fp16.onnx")
    assert (meta["image_size"], meta["ngf"], meta["n_blocks"]) == (256, 64, 9)
    assert (out / "mask.onnx").stat().st_size > 40e6  # 11.4M FP32 weights inline
    assert (out / "mask.fp16.onnx").stat().st_size < 25e6
    assert res.output.count("PASS") == 2
    within = [float(x) for x in re.findall(r"within 1 LSB ([\d.]+)%", res.output)]
    assert within[0] == 100.0 and within[1] >= 99.0
