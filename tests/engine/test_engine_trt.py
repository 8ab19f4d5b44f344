"""TensorRT backend: the sidecar checks (no GPU needed) and, where TensorRT and CUDA exist, a
real engine against ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cyclemask.artifacts import ArtefactError, file_sha256, sidecar_path
from cyclemask.engine.backends.trt import TrtBackend, preflight
from cyclemask.errors import BackendError, ConfigError

HERE = dict(trt_version="10.8.0.43", gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0))


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "mask.fp16.engine"
    path.write_bytes(b"\x00serialized engine bytes")
    return path


def write_sidecar(engine, **changes):
    """A sidecar as cyclemask-export writes it (cyclemask.artifacts)."""
    side = {
        "format": "cyclemask.engine",
        "format_version": 1,
        "tensorrt_version": "10.8.0.43",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "profile": {"min": [1, 64, 64, 3], "opt": [8, 64, 64, 3], "max": [16, 64, 64, 3]},
        "onnx_path": "mask.fp16.onnx",
        "onnx_sha256": "ab" * 32,
        "engine_sha256": file_sha256(engine),
        "direction": "mask",
        "image_size": 64,
    }
    side.update(changes)
    for key in [k for k, v in side.items() if v is None]:
        del side[key]
    sidecar_path(engine).write_text(json.dumps(side))
    return side


def test_matching_sidecar_passes(engine):
    write_sidecar(engine)
    side, warnings = preflight(engine, "mask", **HERE)
    assert warnings == [] and side["image_size"] == 64


def test_tensorrt_version_mismatch_names_the_rebuild(engine):
    write_sidecar(engine, tensorrt_version="10.3.0.26")
    with pytest.raises(ArtefactError, match=r"mask.fp16.engine: built with TensorRT 10\.3\.0\.26, but this is "
                                            r"TensorRT 10\.8\.0\.43.*Rebuild it here: cyclemask-export"):
        preflight(engine, "mask", **HERE)


def test_version_compatible_engine_may_cross_minor_versions(engine):
    write_sidecar(engine, tensorrt_version="10.3.0.26", version_compatible=True)
    assert preflight(engine, None, **HERE)[1] == []
    write_sidecar(engine, tensorrt_version="11.4.0", version_compatible=True)
    with pytest.raises(ArtefactError, match="built with TensorRT 11.4.0"):
        preflight(engine, None, **HERE)


def test_gpu_architecture_mismatch(engine):
    write_sidecar(engine, gpu_name="NVIDIA L4", compute_capability="8.9")
    with pytest.raises(ArtefactError, match=r"built for NVIDIA L4 \(compute capability 8\.9\), but this GPU is "
                                            r"NVIDIA H100 80GB HBM3 \(9\.0\)"):
        preflight(engine, "mask", **HERE)


def test_same_architecture_other_product_warns(engine):
    write_sidecar(engine, gpu_name="NVIDIA H100 PCIe")
    _, warnings = preflight(engine, "mask", **HERE)
    assert len(warnings) == 1 and "built on NVIDIA H100 PCIe, running on NVIDIA H100 80GB HBM3" in warnings[0]


@pytest.mark.parametrize("cc", ["9.0", "sm_90", [9, 0]])
def test_compute_capability_spellings(engine, cc):
    write_sidecar(engine, compute_capability=cc)
    assert preflight(engine, "mask", **HERE)[1] == []


def test_missing_or_broken_sidecar(engine):
    with pytest.raises(ArtefactError, match=r"mask.fp16.engine: no sidecar mask.fp16.engine.json beside the engine"):
        preflight(engine, "mask", **HERE)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ArtefactError, match="not a readable sidecar"):
        preflight(engine, "mask", **HERE)
    write_sidecar(engine, tensorrt_version=None)
    with pytest.raises(ArtefactError, match="sidecar lacks tensorrt_version"):
        preflight(engine, "mask", **HERE)


def test_engine_replaced_after_its_sidecar(engine):
    write_sidecar(engine)
    engine.write_bytes(b"another engine")
    with pytest.raises(ArtefactError, match="the engine file does not match its sidecar"):
        preflight(engine, "mask", **HERE)


def test_engine_direction_mismatch(engine):
    write_sidecar(engine)
    with pytest.raises(BackendError, match="this engine translates 'mask', but --unmask was asked for"):
        preflight(engine, "unmask", **HERE)


def test_recorded_rebuild_command_is_used(engine):
    write_sidecar(engine, tensorrt_version="9.0", rebuild_command="make engine PLEASE=1")
    with pytest.raises(ArtefactError, match="make engine PLEASE=1"):
        preflight(engine, "mask", **HERE)


def test_missing_engine_file(tmp_path):
    with pytest.raises(BackendError, match="nothing.engine: no such engine file"):
        preflight(tmp_path / "nothing.engine", None, **HERE)


def test_trt_backend_settings(engine):
    with pytest.raises(ConfigError, match="streams must be a positive integer"):
        TrtBackend(engine, streams=0)
    be = TrtBackend(engine, "mask", streams=3)
    assert be.max_in_flight == 3 and be.description == "trt (not loaded)"


# ------------------------------------------------------------------------------------------------
# On a machine with TensorRT and a GPU
# ------------------------------------------------------------------------------------------------


def _build_engine(onnx_path, engine_path, max_batch, profiles=2):
    """The export package's build (one optimization profile per stream), sidecar included."""
    from cyclemask.export.tensorrt import EngineBuildConfig, EngineProfile, build_engine

    cfg = EngineBuildConfig(profile=EngineProfile(1, max_batch, max_batch), profiles=profiles)
    build_engine(onnx_path, engine_path, cfg)


@pytest.mark.trt
def test_trt_engine_matches_ort_with_batches_in_flight(tmp_path, mask_graph, rng):
    from cyclemask.engine.backends import OrtBackend

    engine_path = tmp_path / "mask.engine"
    _build_engine(mask_graph, engine_path, max_batch=4)
    batches = [rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8) for n in (4, 4, 3, 1, 4)]
    with TrtBackend(engine_path, "mask", streams=2) as trt_be, OrtBackend(mask_graph, provider="cpu") as ref:
        assert trt_be.max_batch == 4 and trt_be.image_size == 64
        assert trt_be.streams == trt_be.max_in_flight == 2 and not trt_be.warnings
        handles = [trt_be.submit(b) for b in batches[:2]]  # two in flight on two streams
        outs = [h.result() for h in handles] + [trt_be.infer(b) for b in batches[2:]]
        for b, o in zip(batches, outs):
            assert np.abs(o.astype(int) - ref.infer(b).astype(int)).max() <= 1
        with pytest.raises(BackendError, match="at most 4 images per batch"):
            trt_be.infer(rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8))


@pytest.mark.trt
def test_trt_backend_runs_no_more_streams_than_profiles(tmp_path, mask_graph, rng):
    engine_path = tmp_path / "mask.engine"
    _build_engine(mask_graph, engine_path, max_batch=2, profiles=1)
    with TrtBackend(engine_path, "mask", streams=3) as be:
        assert be.streams == be.max_in_flight == 1
        assert any("has 1 optimization profile(s), so it runs 1 CUDA stream(s), not 3" in w for w in be.warnings)
        assert be.infer(rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)).shape == (2, 64, 64, 3)


@pytest.mark.trt
def test_trt_backend_refuses_a_foreign_sidecar(tmp_path, mask_graph):
    engine_path = tmp_path / "mask.engine"
    _build_engine(mask_graph, engine_path, max_batch=2)
    side = json.loads(sidecar_path(engine_path).read_text())
    side["tensorrt_version"] = "1.0.0"
    sidecar_path(engine_path).write_text(json.dumps(side))
    with pytest.raises(ArtefactError, match="built with TensorRT 1.0.0"):
        TrtBackend(engine_path).activate()
