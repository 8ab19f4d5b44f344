"""Parity figures, bounds, verification inputs, and refusal of a graph that does not match."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cyclemask.errors import ExportError
from cyclemask.export.verify import (
    ENGINE_BOUNDS,
    FP16_BOUNDS,
    FP32_BOUNDS,
    Bounds,
    compare_uint8,
    demo_portrait,
    verification_images,
    graph_outputs,
    verify_outputs,
)
from cyclemask.image_files import write_image
from cyclemask.image_tensors import eager_translate
from export_helpers import SIZE


def test_compare_uint8_figures_by_hand():
    want = np.full((2, 4, 5, 3), 100, np.uint8)  # 120 values
    got = want.copy()
    got[0, 0, 0, 0] = 103  # +3
    got[1, 1, 1, 1] = 99  # -1
    s = compare_uint8(got, want)
    assert (s.n_images, s.n_values, s.max_abs) == (2, 120, 3)
    assert s.frac_exact == pytest.approx(118 / 120)
    assert s.frac_within_1 == pytest.approx(119 / 120)
    assert s.mean_abs == pytest.approx(4 / 120)
    assert s.psnr_db == pytest.approx(10 * math.log10(255**2 / (10 / 120)))
    assert compare_uint8(want, want).psnr_db == math.inf


def test_compare_uint8_does_not_wrap_around():
    # uint8 subtraction would wrap 0 - 255 to 1; the difference must be 255.
    s = compare_uint8(np.zeros((1, 1, 1, 3), np.uint8), np.full((1, 1, 1, 3), 255, np.uint8))
    assert s.max_abs == 255


def test_compare_uint8_refuses_mismatched_outputs():
    a = np.zeros((1, 4, 4, 3), np.uint8)
    with pytest.raises(ExportError, match=r"got uint8 \[1, 4, 4, 3\], expected uint8 \[2, 4, 4, 3\]"):
        compare_uint8(a, np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ExportError, match="got float32"):
        compare_uint8(a.astype(np.float32), a)


def _perturbed(rng, n_off1: float, extra: dict[int, int]):
    want = rng.integers(10, 240, (2, 32, 32, 3), dtype=np.uint8)
    got = want.astype(np.int16)
    flat = got.reshape(-1)
    idx = rng.permutation(flat.size)
    k = int(n_off1 * flat.size)
    flat[idx[:k]] += 1
    pos = k
    for delta, count in extra.items():
        flat[idx[pos:pos + count]] += delta
        pos += count
    return got.astype(np.uint8), want


def test_fp16_bounds_accept_typical_fp16_error_and_refuse_larger(rng):
    # Worse than the calibrated FP16 graphs (see export.verify): 10 % off by one, a few by 2-4.
    got, want = _perturbed(rng, 0.10, {2: 3, 4: 2})
    assert not compare_uint8(got, want).failures(FP16_BOUNDS)
    got, want = _perturbed(rng, 0.0, {5: 1})
    assert compare_uint8(got, want).failures(FP16_BOUNDS) == ["max |diff| 5 LSB > 4"]
    got, want = _perturbed(rng, 0.0, {2: 150})  # 2.4 % of values 2 LSB off: only the within-1 share sees it
    assert [f.split(" ")[1] for f in compare_uint8(got, want).failures(FP16_BOUNDS)] == ["within"]
    got, want = _perturbed(rng, 0.35, {})  # a third of the values 1 LSB off: only PSNR sees it
    fails = compare_uint8(got, want).failures(FP16_BOUNDS)
    assert len(fails) == 1 and fails[0].startswith("PSNR 52.")
    # The engine bounds are never tighter than the FP16 graph's.
    assert ENGINE_BOUNDS.max_abs >= FP16_BOUNDS.max_abs and ENGINE_BOUNDS.min_within_1 <= FP16_BOUNDS.min_within_1


def test_fp32_bounds_allow_one_lsb_rarely_and_nothing_more(rng):
    got, want = _perturbed(rng, 0.01, {})
    assert not compare_uint8(got, want).failures(FP32_BOUNDS)
    got, want = _perturbed(rng, 0.0, {2: 1})
    assert compare_uint8(got, want).failures(FP32_BOUNDS) == ["max |diff| 2 LSB > 1"]
    # Half the values 1 LSB off, as a graph whose Round was lost (the cast truncates).
    got, want = _perturbed(rng, 0.5, {})
    assert compare_uint8(got, want).failures(FP32_BOUNDS) == ["PSNR 51.1 dB < 65 dB"]


def test_psnr_bound_is_checked():
    s = compare_uint8(np.full((1, 8, 8, 3), 8, np.uint8), np.zeros((1, 8, 8, 3), np.uint8))
    assert any("PSNR 30.1 dB < 40 dB" in f for f in s.failures(Bounds(max_abs=255, min_psnr_db=40.0)))


def test_bounds_validate_their_values():
    with pytest.raises(ExportError, match="max_abs must be a non-negative integer"):
        Bounds(max_abs=-1)
    with pytest.raises(ExportError, match="min_within_1 must be a fraction"):
        Bounds(max_abs=1, min_within_1=99.0)


def test_verify_outputs_names_the_artefact_and_the_broken_bound():
    want = np.zeros((1, 4, 4, 3), np.uint8)
    got = want.copy()
    got[0, 0, 0, 0] = 2
    with pytest.raises(ExportError, match=r"out/mask\.onnx: verification against eager failed: max \|diff\| 2 LSB > 1"):
        verify_outputs(got, want, FP32_BOUNDS, artefact="out/mask.onnx", against="eager")
    v = verify_outputs(want, want, FP32_BOUNDS, artefact="out/mask.onnx", against="eager")
    assert v.passed and v.to_dict()["psnr_db"] is None and v.to_dict()["max_abs"] == 0


def test_verification_refuses_a_graph_of_another_generator(graphs, gen_b, rng):
    x = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    got = graph_outputs(graphs[0], x)  # through the runtime's ONNX Runtime backend
    with pytest.raises(ExportError, match=r"mask\.onnx: verification against eager failed: max \|diff\| \d+ LSB > 1"):
        verify_outputs(got, eager_translate(gen_b, x), FP32_BOUNDS, artefact=str(graphs[0]), against="eager")


def test_verification_images_from_a_folder_are_resized_and_sorted(tmp_path, rng):
    for name, (h, w) in (("b.png", (40, 60)), ("a.jpg", (90, 50)), ("c.png", (20, 20))):
        write_image(tmp_path / name, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    images, sources = verification_images(SIZE, image_dir=tmp_path, n_real=2, n_random=1)
    assert images.shape == (3, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert [s.rsplit("/", 1)[-1] for s in sources[:2]] == ["a.jpg", "b.png"]
    assert sources[2].startswith("random")


def test_verification_images_refuse_missing_and_empty_folders(tmp_path):
    with pytest.raises(ExportError, match="nowhere: verification image folder does not exist"):
        verification_images(SIZE, image_dir=tmp_path / "nowhere")
    with pytest.raises(ExportError, match="no images found to verify the export with"):
        verification_images(SIZE, image_dir=tmp_path)


def test_default_verification_images_use_the_shipped_portrait_and_noise():
    images, sources = verification_images(SIZE, n_random=2)
    portrait = demo_portrait()
    assert len(images) == (3 if portrait else 2)
    if portrait:
        assert sources[0].endswith("grace_hopper.jpg")
        assert images[0].std() > 20  # a photo, not a blank


@pytest.mark.shared
def test_fp16_graph_verifies_on_real_faces(shared_data, graphs, gen_a):
    faces = shared_data / "faces" / "observations_pairs" / "without_mask"
    images, sources = verification_images(SIZE, image_dir=faces, n_real=6, n_random=0)
    assert len(images) == 6 and all(s.endswith(".jpg") for s in sources)
    v = verify_outputs(graph_outputs(graphs[1], images), eager_translate(gen_a, images), FP16_BOUNDS,
                       artefact=str(graphs[1]), against="eager")
    assert v.passed
