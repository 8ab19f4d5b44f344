"""The TensorRT path for real: engine build, sidecar, timing cache, parity. Marked `trt`:
skipped with a reason where TensorRT or a CUDA GPU is missing (as on the CPU machine this was
written on, where none of these tests has ever run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cyclemask.artifacts import check_sidecar, load_engine_sidecar, sidecar_path
from cyclemask.engine.backends.trt import gpu_identity
from cyclemask.export.tensorrt import EngineBuildConfig, EngineProfile, build_engine
from cyclemask.export.verify import ENGINE_BOUNDS, compare_uint8, engine_outputs, graph_outputs
from cyclemask.image_tensors import eager_translate
from export_helpers import SIZE

pytestmark = pytest.mark.trt


@pytest.fixture(scope="module")
def built(graphs, tmp_path_factory):
    import tensorrt as trt

    d = tmp_path_factory.mktemp("trt")
    cache = d / "timing.cache"
    cfg = EngineBuildConfig(profile=EngineProfile(1, 2, 4), timing_cache=cache)
    side = build_engine(graphs[1], d / "mask.fp16.engine", cfg)
    return d, side, cfg, trt


def test_engine_and_sidecar_are_written_and_check_against_this_gpu(built, graphs):
    d, side, _, trt = built
    engine = d / "mask.fp16.engine"
    assert engine.stat().st_size > 0
    loaded = load_engine_sidecar(engine)
    assert loaded["tensorrt_version"] == trt.__version__
    name, cc = gpu_identity()
    assert (loaded["gpu_name"], loaded["compute_capability"]) == (name, cc)
    assert loaded["profile"] == {"min": [1, SIZE, SIZE, 3], "opt": [2, SIZE, SIZE, 3], "max": [4, SIZE, SIZE, 3]}
    assert loaded["direction"] == "mask" and loaded["typing"] == "strong"
    assert loaded["profiles"] == 2  # one optimization profile per runtime stream (the default 2)
    assert check_sidecar(loaded, trt.__version__, name, cc) == []


def test_engine_matches_the_fp16_graph_on_ort_and_eager(built, graphs, gen_a, rng):
    d, *_ = built
    x = rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)  # 5 > max batch 4: two launches
    got = engine_outputs(d / "mask.fp16.engine", x, batch_size=4)  # the runtime's TensorRT backend
    assert got.shape == x.shape and got.dtype == np.uint8
    assert not compare_uint8(got, graph_outputs(graphs[1], x)).failures(ENGINE_BOUNDS)
    assert not compare_uint8(got, eager_translate(gen_a, x)).failures(ENGINE_BOUNDS)


def test_timing_cache_is_saved_and_reused(built, graphs, caplog):
    d, _, cfg, _ = built
    assert cfg.timing_cache.stat().st_size > 0
    with caplog.at_level("INFO", logger="cyclemask.export.tensorrt"):
        build_engine(graphs[1], d / "again.engine", cfg)
    assert "reusing timing cache" in caplog.text
    assert json.loads(sidecar_path(d / "again.engine").read_text())["onnx_sha256"]


def test_cli_fp16_builds_the_engine_and_from_onnx_rebuilds_it(bundle, tmp_path):
    from click.testing import CliRunner

    from cyclemask.export.cli import main

    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["--checkpoint", str(bundle), "--direction", "mask", "--fp16", "--engine",
                                    "--min-batch", "1", "--opt-batch", "2", "--max-batch", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "mask.fp16.engine").is_file() and (out / "mask.fp16.engine.json").is_file()
    assert "vs FP16 graph on ORT CPU" in res.output and "engine built with TensorRT" in res.output
    side = load_engine_sidecar(out / "mask.fp16.engine")
    assert [p["against"] for p in side["parity"]] == ["FP16 graph on ORT CPU", "eager (PyTorch FP32)"]
    res = CliRunner().invoke(main, ["--from-onnx", str(out / "mask.fp16.onnx"), "--max-batch", "4", "--opt-batch", "2"])
    assert res.exit_code == 1 and "refusing to replace existing" in res.output
    res = CliRunner().invoke(main, ["--from-onnx", str(out / "mask.fp16.onnx"), "--max-batch", "4", "--opt-batch", "2",
                                    "--overwrite"])
    assert res.exit_code == 0, res.output
