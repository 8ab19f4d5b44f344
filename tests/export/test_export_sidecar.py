"""Engine sidecar reading and checking, profile/config validation, TensorRT availability:
the parts of the TensorRT path that run without TensorRT."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from cyclemask.artifacts import (
    ENGINE_FORMAT,
    ArtefactError,
    check_sidecar,
    format_capability,
    load_engine_sidecar,
    sidecar_path,
)
from cyclemask.engine.backends import tensorrt_status
from cyclemask.errors import CycleMaskError, ExportError
from cyclemask.export.tensorrt import EngineBuildConfig, EngineProfile


def _sidecar(**over):
    side = {
        "format": ENGINE_FORMAT, "format_version": 1, "tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0", "image_size": 256, "onnx_sha256": "cd" * 32, "direction": "mask",
        "profile": {"min": [1, 256, 256, 3], "opt": [8, 256, 256, 3], "max": [32, 256, 256, 3]},
        "onnx_path": "exported/mask.fp16.onnx",
        "rebuild_command": "cyclemask-export --from-onnx exported/mask.fp16.onnx --out exported",
    }
    side.update(over)
    return side


def _write(tmp_path, side):
    engine = tmp_path / "mask.fp16.engine"
    engine.write_bytes(b"engine")
    sidecar_path(engine).write_text(json.dumps(side))
    return engine


def test_sidecar_sits_beside_the_engine(tmp_path):
    assert sidecar_path(tmp_path / "mask.fp16.engine") == tmp_path / "mask.fp16.engine.json"


def test_load_engine_sidecar_reads_a_valid_one(tmp_path):
    side = load_engine_sidecar(_write(tmp_path, _sidecar(compute_capability=[8, 9])))
    assert side["compute_capability"] == "8.9"
    assert side["profile"]["max"][0] == 32


def test_missing_sidecar_is_an_error_for_export_and_runtime_alike(tmp_path):
    engine = tmp_path / "mask.fp16.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ArtefactError, match=r"no sidecar mask\.fp16\.engine\.json beside the engine.*cyclemask-export --from-onnx"):
        load_engine_sidecar(engine)
    # One error type for a bad artefact, whichever stage reads it (docs/ARCHITECTURE.md).
    assert issubclass(ArtefactError, CycleMaskError) and not issubclass(ArtefactError, ExportError)


@pytest.mark.parametrize("content,match", [
    ("{not json", r"not a readable sidecar \(JSONDecodeError"),
    (json.dumps([1, 2]), "not a cyclemask engine sidecar"),
    (json.dumps({"format": "other"}), "not a cyclemask engine sidecar"),
])
def test_unreadable_sidecars_are_named(tmp_path, content, match):
    engine = tmp_path / "e.engine"
    sidecar_path(engine).write_text(content)
    with pytest.raises(ArtefactError, match=r"e\.engine\.json: " + match):
        load_engine_sidecar(engine)


def test_sidecar_missing_keys_or_bad_profile_say_how_to_rebuild(tmp_path):
    side = _sidecar()
    del side["onnx_sha256"], side["gpu_name"]
    with pytest.raises(ArtefactError, match=r"sidecar lacks gpu_name, onnx_sha256; rebuild the engine: cyclemask-export --from-onnx exported/mask\.fp16\.onnx"):
        load_engine_sidecar(_write(tmp_path, side))
    with pytest.raises(ArtefactError, match="profile must hold min/opt/max shapes"):
        load_engine_sidecar(_write(tmp_path, _sidecar(profile={"min": [1], "opt": [8], "max": [32]})))


def test_check_sidecar_accepts_the_same_trt_and_gpu():
    assert check_sidecar(_sidecar(), "10.3.0", "NVIDIA H100 80GB HBM3", (9, 0)) == []


def test_check_sidecar_refuses_another_tensorrt_version_with_the_rebuild_command():
    with pytest.raises(ArtefactError, match=(
            r"mask\.fp16\.engine: built with TensorRT 10\.3\.0, but this is TensorRT 11\.4\.0.*"
            r"Rebuild it here: cyclemask-export --from-onnx exported/mask\.fp16\.onnx --out exported")):
        check_sidecar(_sidecar(), "11.4.0", "NVIDIA H100 80GB HBM3", (9, 0), engine_path="exported/mask.fp16.engine")


def test_version_compatible_engines_run_within_their_major_version_only():
    side = _sidecar(version_compatible=True)
    assert check_sidecar(side, "10.7.0", "NVIDIA H100 80GB HBM3", (9, 0)) == []
    with pytest.raises(ArtefactError, match="built with TensorRT 10.3.0, but this is TensorRT 11.0.0"):
        check_sidecar(side, "11.0.0", "NVIDIA H100 80GB HBM3", (9, 0))


def test_check_sidecar_refuses_another_gpu_architecture():
    with pytest.raises(ArtefactError, match=(
            r"built for NVIDIA H100 80GB HBM3 \(compute capability 9\.0\), but this GPU is NVIDIA L4 \(8\.9\); "
            r"engines are specific to the GPU architecture\. Rebuild it here: cyclemask-export")):
        check_sidecar(_sidecar(), "10.3.0", "NVIDIA L4", "8.9")


def test_same_architecture_other_product_is_a_warning_not_an_error():
    warnings = check_sidecar(_sidecar(), "10.3.0", "NVIDIA H100 PCIe", (9, 0))
    assert len(warnings) == 1 and "built on NVIDIA H100 80GB HBM3, running on NVIDIA H100 PCIe" in warnings[0]


def test_check_sidecar_without_a_tensorrt_version_is_refused():
    with pytest.raises(ArtefactError, match="does not record the TensorRT version"):
        check_sidecar(_sidecar(tensorrt_version=""), "10.3.0", "x", (9, 0))


@pytest.mark.parametrize("value,want", [((8, 9), "8.9"), ([9, 0], "9.0"), ("8.6", "8.6"), ("sm_90", "9.0"), ("120", "12.0")])
def test_format_capability(value, want):
    assert format_capability(value) == want


def test_format_capability_refuses_garbage():
    with pytest.raises(ArtefactError, match="cannot read compute capability 'ampere'"):
        format_capability("ampere")


def test_engine_profile_validation():
    assert EngineProfile(1, 8, 32).shapes(64) == {"min": [1, 64, 64, 3], "opt": [8, 64, 64, 3], "max": [32, 64, 64, 3]}
    with pytest.raises(ExportError, match="min <= opt <= max; got min 4, opt 2, max 8"):
        EngineProfile(4, 2, 8)
    with pytest.raises(ExportError, match="max_batch must be a positive integer"):
        EngineProfile(1, 1, 0)


def test_engine_build_config_validation():
    with pytest.raises(ExportError, match="typing must be one of strong, weak-fp16"):
        EngineBuildConfig(typing="fp16")
    with pytest.raises(ExportError, match="instance_norm must be one of native, plugin"):
        EngineBuildConfig(instance_norm="fast")
    with pytest.raises(ExportError, match="workspace_gib must be positive"):
        EngineBuildConfig(workspace_gib=0)


def test_tensorrt_status_says_why_no_engine_can_be_built():
    ok, why = tensorrt_status()
    expected = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
    assert ok == expected
    if not ok:
        assert "not installed" in why or "GPU" in why or "does not import" in why
    else:
        assert why.startswith("TensorRT ")


def test_tensorrt_modules_import_without_tensorrt():
    # The export's engine build and the runtime's backend import on machines without TensorRT.
    import sys

    from cyclemask.engine.backends import trt  # noqa: F401
    from cyclemask.export import tensorrt  # noqa: F401

    if importlib.util.find_spec("tensorrt") is None:
        assert "tensorrt" not in sys.modules
