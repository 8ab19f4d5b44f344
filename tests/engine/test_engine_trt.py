"""TensorRT backend: the sidecar checks (no GPU needed) and, where TensorRT and CUDA exist, a
real engine against ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cyclemask.checkpoint import file_sha256
from cyclemask.errors import BackendError, ConfigError
from cyclemask.engine.backend_trt import (
    TrtBackend,
    check_sidecar,
    read_sidecar,
    sidecar_path,
    sidecar_profile,
)

HERE = dict(trt_version="10.8.0.43", gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0))


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "mask.engine"
    path.write_bytes(b"\x00serialized engine bytes")
    return path


def _side(engine, **changes):
    side = {
        "tensorrt_version": "10.8.0.43",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": [9, 0],
        "profile": {"min": [1, 64, 64, 3], "opt": [8, 64, 64, 3], "max": [16, 64, 64, 3]},
        "onnx_path": "mask.onnx",
        "onnx_sha256": "ab" * 32,
        "engine_sha256": file_sha256(engine),
        "direction": "mask",
        "image_size": 64,
    }
    side.update(changes)
    return side


def test_matching_sidecar_passes(engine):
    assert check_sidecar(_side(engine), engine, **HERE) == []


def test_tensorrt_version_mismatch(engine):
    with pytest.raises(BackendError, match=r"built with TensorRT 10\.3\.0\.26, but this is TensorRT 10\.8\.0\.43.*"
                                            r"Rebuild it here: cyclemask-export engine mask.onnx --out .*mask.engine"):
        check_sidecar(_side(engine, tensorrt_version="10.3.0.26"), engine, **HERE)


def test_version_compatible_engine_may_cross_minor_versions(engine):
    side = _side(engine, tensorrt_version="10.3.0.26", version_compatible=True)
    assert check_sidecar(side, engine, **HERE) == []
    with pytest.raises(BackendError, match="built with TensorRT 11.4.0"):
        check_sidecar(_side(engine, tensorrt_version="11.4.0", version_compatible=True), engine, **HERE)


def test_gpu_architecture_mismatch(engine):
    side = _side(engine, gpu_name="NVIDIA L4", compute_capability="8.9")
    with pytest.raises(BackendError, match=r"built for NVIDIA L4 \(compute capability 8\.9\), but this GPU is "
                                            r"NVIDIA H100 80GB HBM3 \(9\.0\)"):
        check_sidecar(side, engine, **HERE)


def test_same_architecture_other_product_warns(engine):
    warnings = check_sidecar(_side(engine, gpu_name="NVIDIA H100 PCIe"), engine, **HERE)
    assert len(warnings) == 1 and "built on NVIDIA H100 PCIe, running on NVIDIA H100 80GB HBM3" in warnings[0]


@pytest.mark.parametrize("cc", ["9.0", "sm_90", "90", [9, 0], (9, 0)])
def test_compute_capability_spellings(engine, cc):
    assert check_sidecar(_side(engine, compute_capability=cc), engine, **HERE) == []


def test_missing_fields_are_errors(engine):
    side = _side(engine)
    del side["tensorrt_version"]
    with pytest.raises(BackendError, match="does not record the TensorRT version"):
        check_sidecar(side, engine, **HERE)
    side = _side(engine)
    del side["compute_capability"]
    with pytest.raises(BackendError, match="does not record the GPU's compute capability"):
        check_sidecar(side, engine, **HERE)


def test_engine_replaced_after_its_sidecar(engine):
    side = _side(engine)
    engine.write_bytes(b"another engine")
    with pytest.raises(BackendError, match="the engine file does not match its sidecar"):
        check_sidecar(side, engine, **HERE)


def test_recorded_rebuild_command_is_used(engine):
    side = _side(engine, tensorrt_version="9.0", rebuild_command="make engine PLEASE=1")
    with pytest.raises(BackendError, match="make engine PLEASE=1"):
        check_sidecar(side, engine, **HERE)


def test_read_sidecar_errors(engine):
    try:
        import cyclemask.export.tensorrt  # noqa: F401
        pytest.skip("the export package's sidecar reader is in use; its tests cover its messages")
    except ImportError:
        pass
    with pytest.raises(BackendError, match=r"mask.engine: no sidecar mask.engine.json beside the engine"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(BackendError, match="not a readable engine sidecar"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps(_side(engine)))
    assert read_sidecar(engine)["direction"] == "mask"


def test_sidecar_profile_shapes(engine):
    assert sidecar_profile(_side(engine)) == ((1, 64, 64, 3), (8, 64, 64, 3), (16, 64, 64, 3))
    assert sidecar_profile({"profile_shapes": {"image": [[1, 8, 8, 3], [2, 8, 8, 3], [4, 8, 8, 3]]}})[2] == (4, 8, 8, 3)
    assert sidecar_profile({}) is None


def test_trt_backend_settings(engine):
    with pytest.raises(ConfigError, match="streams must be a positive integer"):
        TrtBackend(engine, streams=0)
    be = TrtBackend(engine, "mask", streams=3)
    assert be.max_in_flight == 3 and be.description == "trt (not loaded)"


# ------------------------------------------------------------------------------------------------
# On a machine with TensorRT and a GPU
# ------------------------------------------------------------------------------------------------


def _build_engine(onnx_path, engine_path, max_batch):
    """A plain TensorRT build (the export package owns the real one); writes the sidecar."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes()), [parser.get_error(i) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 64, 64, 3), (max_batch, 64, 64, 3), (max_batch, 64, 64, 3))
    config.add_optimization_profile(profile)
    engine_path.write_bytes(bytes(builder.build_serialized_network(network, config)))
    major, minor = torch.cuda.get_device_capability()
    sidecar_path(engine_path).write_text(json.dumps({
        "tensorrt_version": trt.__version__, "gpu_name": torch.cuda.get_device_name(),
        "compute_capability": [major, minor], "direction": "mask", "image_size": 64,
        "engine_sha256": file_sha256(engine_path),
    }))


@pytest.mark.trt
def test_trt_engine_matches_ort_with_batches_in_flight(tmp_path, mask_graph, rng):
    from cyclemask.engine.backends import OrtBackend

    engine_path = tmp_path / "mask.engine"
    _build_engine(mask_graph, engine_path, max_batch=4)
    batches = [rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8) for n in (4, 4, 3, 1, 4)]
    with TrtBackend(engine_path, "mask", streams=2) as trt_be, OrtBackend(mask_graph, provider="cpu") as ref:
        assert trt_be.max_batch == 4 and trt_be.image_size == 64
        handles = [trt_be.submit(b) for b in batches[:2]]  # two in flight on two streams
        outs = [h.result() for h in handles] + [trt_be.infer(b) for b in batches[2:]]
        for b, o in zip(batches, outs):
            assert np.abs(o.astype(int) - ref.infer(b).astype(int)).max() <= 1
        with pytest.raises(BackendError, match="at most 4 images per batch"):
            trt_be.infer(rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8))


@pytest.mark.trt
def test_trt_backend_refuses_a_foreign_sidecar(tmp_path, mask_graph):
    engine_path = tmp_path / "mask.engine"
    _build_engine(mask_graph, engine_path, max_batch=2)
    side = json.loads(sidecar_path(engine_path).read_text())
    side["tensorrt_version"] = "1.0.0"
    sidecar_path(engine_path).write_text(json.dumps(side))
    with pytest.raises(BackendError, match="built with TensorRT 1.0.0"):
        TrtBackend(engine_path).activate()
