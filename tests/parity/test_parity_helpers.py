"""The parity suite's own machinery: failure messages name the worst images, the bounds are the
calibrated ones of export/verify.py, inputs are real or textured, and the variant registry
finds every backend and says why a variant cannot run."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from benchmarks import variants as variants_mod
from benchmarks.inputs import SHARED_FACES, face_inputs, synthetic_faces
from benchmarks.variants import (ARTEFACT_KINDS, Artefacts, ArtefactUnavailable, Variant, select,
                                 seeded_generator, variants)
from cyclemask.export.verify import BF16_BOUNDS, ENGINE_BOUNDS, FP16_BOUNDS, FP32_BOUNDS, INT8_BOUNDS
from parity_helpers import BOUNDS, KID_NOISE_LSB, compare

# ------------------------------------------------------------------------------------------------
# Figures and messages
# ------------------------------------------------------------------------------------------------


def test_bounds_are_export_verify_bounds():
    assert BOUNDS["fp32"] is FP32_BOUNDS and BOUNDS["fp16"] is FP16_BOUNDS and BOUNDS["fp16-trt"] is ENGINE_BOUNDS
    assert BOUNDS["bf16"] is BF16_BOUNDS and BOUNDS["int8"] is INT8_BOUNDS
    from benchmarks.variants import PRECISIONS

    assert set(BOUNDS) == set(PRECISIONS)  # every variant precision has bounds
    assert {v.precision for v in variants() if v.artefact == "engine"} == {"fp16-trt"}
    assert FP32_BOUNDS.max_abs == 1  # FP32: at most 1 LSB anywhere
    assert KID_NOISE_LSB["fp32"] < KID_NOISE_LSB["fp16"]


def test_failure_names_worst_images_with_their_figures(rng):
    want = rng.integers(10, 240, (4, 8, 8, 3), dtype=np.uint8)
    got = want.copy()
    got[2, :2, :2, 0] += 5  # 4 values 5 LSB off
    got[1, 0, 0, 1] += 2
    got[3, 0, 0, 2] += 1
    r = compare("ort-cpu-fp32", "fp32", "ort (CPUExecutionProvider)", got, want, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    bad = r.pixel_failures()
    assert bad[0] == "max |diff| 5 LSB > 1" and bad[1].startswith("PSNR 56.8 dB < 65")
    msg = r.message(bad)
    assert "ort-cpu-fp32 [ort (CPUExecutionProvider)] vs eager, fp32 bounds" in msg
    assert "c.jpg (max |d| 5 LSB, 2.083% > 1 LSB, PSNR" in msg
    assert msg.index("c.jpg") < msg.index("b.jpg") < msg.index("d.jpg")  # worst first
    assert "a.jpg" not in msg  # only the 3 worst are named
    assert [f.label for f in r.worst(2)] == ["c.jpg", "b.jpg"]
    row = r.row()
    assert row["max_abs_lsb"] == 5 and not row["pixel_ok"] and row["worst"][0] == "c.jpg"


def test_task_failure_is_reported():
    from cyclemask.export.lowp import TASK_MAX_DROP, TaskFigures

    want = np.zeros((1, 4, 4, 3), np.uint8) + 100
    r = compare("ort-cpu-int8", "int8", "desc", want.copy(), want, ["only.png"])
    assert r.task_failures() == []
    r.task, r.task_max_drop = TaskFigures("masked", 0.95, 0.90, 20, 1), TASK_MAX_DROP
    assert r.task_failures() == ["classifier success 90.0% vs eager 95.0%: 5.0 points > 3 (1 of 20 faces called "
                                 "differently)"]
    assert r.row()["task_change_points"] == -5.0 and not r.row()["task_ok"]


def test_low_precision_variants_run_on_trained_generators_only():
    low = {v.name: v for v in variants() if v.trained_only}
    assert set(low) == {"openvino-cpu-bf16", "torch-cpu-bf16", "openvino-cpu-int8", "ort-cpu-int8"}
    assert {v.precision for v in low.values()} == {"bf16", "int8"}
    assert all(v.artefact == "graph-int8" for v in low.values() if v.precision == "int8")
    assert dict(low["openvino-cpu-bf16"].options)["precision"] == "bf16"
    assert not any(v.trained_only for v in variants() if v.precision in ("fp32", "fp16", "fp16-trt"))


def test_calibration_faces_are_not_the_compared_faces(tmp_path, rng):
    from benchmarks.inputs import calibration_faces

    for i in range(6):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    first, _, _ = face_inputs(8, 3, 0, faces_dir=tmp_path)
    calib = calibration_faces(8, 3, faces_dir=tmp_path)
    assert calib.shape == (3, 8, 8, 3)
    assert not any(np.array_equal(c, f) for c in calib for f in first)
    synthetic = calibration_faces(8, 2, faces_dir=tmp_path / "absent")
    assert synthetic.shape == (2, 8, 8, 3) and not np.array_equal(synthetic, synthetic_faces(2, 8)[0])


def test_kid_failure_is_reported():
    want = np.zeros((1, 4, 4, 3), np.uint8) + 100
    r = compare("x", "fp16", "desc", want.copy(), want, ["only.png"])
    assert r.pixel_failures() == [] and r.kid_failures() == []
    r.kid, r.kid_se, r.kid_max = 1.5e-3, 1e-4, 2.5e-4
    assert r.kid_failures() == ["KID 1.50e-03 (SE 1.0e-04) - 2 SE > 2.50e-04 (eager outputs with +-2 LSB noise)"]
    assert "KID - 2 SE <= 2.50e-04): KID 1.50e-03" in r.message(r.kid_failures())
    r.kid = float("nan")
    assert r.kid_failures(), "a NaN KID must fail, not pass"
    r.kid = 4e-4  # within 2 SE of the bound
    assert r.kid_failures() == []


def test_compare_rejects_bad_arguments(rng):
    a = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="precision must be one of"):
        compare("x", "int4", "d", a, a, ["1", "2"])
    with pytest.raises(ValueError, match="1 labels for 2 images"):
        compare("x", "fp32", "d", a, a, ["1"])


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------


def test_synthetic_faces_are_textured_and_seeded():
    images, labels = synthetic_faces(5, 64, seed=3)
    assert images.shape == (5, 64, 64, 3) and images.dtype == np.uint8
    assert labels == [f"synthetic-{i:02d}" for i in range(5)]
    for im in images:
        assert im.reshape(-1, 3).std(axis=0).min() > 10  # not flat in any channel
        # texture everywhere: almost no pixel equals its right neighbour in all channels
        assert np.mean(np.all(im[:, 1:] == im[:, :-1], axis=2)) < 0.5
    np.testing.assert_array_equal(images, synthetic_faces(5, 64, seed=3)[0])
    assert not np.array_equal(images, synthetic_faces(5, 64, seed=4)[0])


def test_face_inputs_fall_back_to_synthetic_and_add_noise(tmp_path):
    images, labels, is_face = face_inputs(32, 3, 2, faces_dir=tmp_path / "absent")
    assert images.shape == (5, 32, 32, 3)
    assert labels == ["synthetic-00", "synthetic-01", "synthetic-02", "noise-0", "noise-1"]
    assert is_face.tolist() == [True, True, True, False, False]


def test_face_inputs_read_real_images_by_name(tmp_path, rng):
    for name in ("b.png", "a.png", "sub/c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    images, labels, is_face = face_inputs(16, 2, 0, faces_dir=tmp_path)
    assert labels == ["a.png", "b.png"] and images.shape == (2, 16, 16, 3) and is_face.all()


@pytest.mark.shared
def test_face_inputs_use_the_shared_faces():
    images, labels, _ = face_inputs(64, 3, 0)
    assert all((SHARED_FACES / label).is_file() for label in labels)
    assert images.std() > 20


# ------------------------------------------------------------------------------------------------
# The variant registry
# ------------------------------------------------------------------------------------------------


def test_every_backend_has_variants_and_names_are_unique():
    from cyclemask.engine.backends import BACKEND_NAMES

    vs = variants()
    assert len({v.name for v in vs}) == len(vs)
    for name in BACKEND_NAMES:
        if name != "auto":
            assert any(v.backend == name for v in vs), name
    for v in vs:
        assert ("gpu" in v.markers) == (v.device == "cuda")
        assert ("trt" in v.markers) == ("tensorrt" in v.needs)


def test_backend_added_later_is_discovered(monkeypatch):
    """A backend registered in the runtime shows up as variants for the artefacts it runs, and
    its own available() decides where it can run."""
    from cyclemask.engine.backends import REGISTRY, BackendSpec

    spec = BackendSpec("coreml", ("graph",), lambda *a: None, lambda: "needs macOS (test)", "test backend")
    monkeypatch.setitem(REGISTRY, "coreml", spec)
    found = {v.name: v for v in variants() if v.backend == "coreml"}
    assert set(found) == {"coreml-graph-fp32", "coreml-graph-fp16"}
    assert all(v.generic and v.device == "any" for v in found.values())
    assert found["coreml-graph-fp16"].precision == "fp16"
    assert "coreml-graph-fp32" in {v.name for v in select(device="cpu")}
    assert found["coreml-graph-fp32"].unavailable() == "needs macOS (test)"


def test_select_by_pattern_and_device():
    assert [v.name for v in select(["ort-cpu-*"])] == ["ort-cpu-fp32", "ort-cpu-fp16", "ort-cpu-int8"]
    assert all(v.device in ("cpu", "any") for v in select(device="cpu"))
    assert all(v.device in ("cuda", "any") for v in select(device="cuda"))
    with pytest.raises(KeyError, match="no variant matches nope.*; known: torch-cpu-fp32"):
        select(["nope*"])
    with pytest.raises(ValueError, match="device must be cpu, cuda or all"):
        select(device="tpu")


def test_variant_checks_its_fields():
    with pytest.raises(ValueError, match="artefact must be one of"):
        Variant("x", "ort", "savedmodel", "fp32", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        Variant("x", "ort", "graph-fp32", "int4", "cpu")


def test_compile_variant_waits_for_the_backend_option():
    from cyclemask.engine.backends import BackendOptions

    v = next(v for v in variants() if v.name == "torch-cuda-fp16-compile")
    has_option = "compile" in {f.name for f in dataclasses.fields(BackendOptions)}
    reasons = [variants_mod._missing(n) for n in v.needs]
    if not has_option:
        assert "engine.backends.BackendOptions has no 'compile' option yet" in reasons
    with pytest.raises(ValueError, match="unknown variant requirement"):
        variants_mod._missing("quantum")


def test_cpu_variants_build_the_backends_they_name(small_case):
    from cyclemask.engine.backends import OrtBackend, TorchBackend

    be, reason = next(v for v in variants() if v.name == "ort-cpu-fp32").build(small_case.artefacts)
    assert isinstance(be, OrtBackend) and be.provider == "cpu" and reason == "--backend ort"
    be, _ = next(v for v in variants() if v.name == "torch-cpu-fp32").build(small_case.artefacts)
    assert isinstance(be, TorchBackend) and be.precision == "fp32" and be._device_name == "cpu"
    opts = next(v for v in variants() if v.name == "torch-cuda-fp16-graphs").backend_options(max_batch=8)
    assert opts.cuda_graphs and opts.max_batch == 8 and opts.precision == "fp16" and opts.device == "cuda"


def test_artefacts_say_what_cannot_be_made(tmp_path):
    from cyclemask.config import GeneratorConfig

    arts = Artefacts(seeded_generator(GeneratorConfig(ngf=4, n_blocks=1)), 16, tmp_path / "w")
    with pytest.raises(ValueError, match="artefact kind must be one of"):
        arts.path("pickle")
    assert arts.path("checkpoint").is_file() and "checkpoint" in arts.seconds
    assert set(ARTEFACT_KINDS) == {"checkpoint", "graph-fp32", "graph-fp16", "graph-int8", "engine"}
    from cyclemask.engine.backends import tensorrt_status

    if tensorrt_status()[0]:
        pytest.skip("TensorRT is usable here: the engine can be built")
    for _ in range(2):  # the reason is kept, not recomputed
        with pytest.raises(ArtefactUnavailable, match="a TensorRT engine needs TensorRT"):
            arts.path("engine")
