"""Every backend variant against the eager model (`cyclemask.image_tensors.eager_translate` on the CPU):
pixel parity (max |d| in LSB, share of values within 1 LSB, PSNR) and, on the trained
generators, KID between the variant's outputs and the eager outputs, with bounds per precision
(parity_helpers.py, README.md).

Cases: the embedded trained generators (both directions, 64 real faces of the direction's
domain + 2 noise images each: the bounds are calibrated on these), the fast suite's seeded small
generator (ngf 16, 3 blocks, 64 px, 12 faces + 2 noise), and the seeded full generator (ngf 64,
9 blocks, 256 px, marked slow). KID runs on the trained cases only: the outputs of random
weights are not faces, so a distribution measure of them means little. Variants come from
benchmarks/variants.py: CUDA ones are marked gpu, TensorRT ones trt, and skip with the reason
where that is missing; a variant whose optional package is missing skips with the reason.

The CPU's low precisions (`openvino-cpu-bf16`, `torch-cpu-bf16`, `openvino-cpu-int8`,
`ort-cpu-int8`) run on the trained cases only: their bounds (BF16_BOUNDS, INT8_BOUNDS) are for
trained generators, whose outputs are smooth, where random weights give noise that no 8-bit
format keeps. INT8 also meets the export's task bound there (the classifier's success rate
within 3 points of eager's); neither has a KID bound.
"""

from __future__ import annotations

import pytest

from benchmarks.variants import variants
from parity_helpers import check_kid, check_task, parity_result, record

VARIANTS = variants()


def _params(slow: bool = False, trained: bool = True, kid: bool = False):
    """Variants as test parameters: on a seeded case (`trained=False`) and for KID, without
    those whose bounds hold for trained generators only."""
    out = []
    for v in VARIANTS:
        if v.trained_only and (not trained or kid):
            continue
        marks = [getattr(pytest.mark, m) for m in v.markers] + ([pytest.mark.slow] if slow else [])
        out.append(pytest.param(v, id=v.name, marks=marks))
    return out


def _check_pixels(case, variant, trained: bool = False):
    result = parity_result(case, variant)
    if trained and variant.precision == "int8":
        check_task(case, result, case.outputs[variant.name][0])
    record(case, result, "pixel")
    bad = result.pixel_failures() + result.task_failures()
    assert not bad, result.message(bad)
    # The suite must compare something real: outputs span the range and backends were fed the
    # inputs (a backend returning eager's array untouched would not get here through infer()).
    assert case.eager.min() <= 5 and case.eager.max() >= 250


def _check_kid(case, variant, inception):
    result = parity_result(case, variant)
    out, _ = case.outputs[variant.name]
    check_kid(case, result, out, variant.name, inception)
    record(case, result, "kid")
    bad = result.kid_failures()
    assert not bad, result.message(bad)


@pytest.mark.parametrize("variant", _params())
def test_pixel_parity_trained_mask(trained_mask_case, variant):
    _check_pixels(trained_mask_case, variant, trained=True)


# Slow: every backend on the second shipped generator (~13 s of CPU for all variants, exports
# included). test_pixel_parity_trained_mask checks the same backends, bounds and INT8 task bound
# fast on the first; the generators differ in weights only.
@pytest.mark.parametrize("variant", _params(slow=True))
def test_pixel_parity_trained_unmask(trained_unmask_case, variant):
    _check_pixels(trained_unmask_case, variant, trained=True)


# Slow: KID on every backend, 11-40 s each. test_pixel_parity_trained_mask checks the same backends
# fast, and tests/parity/test_parity_bounds.py's broken graph keeps the KID check itself fast.
@pytest.mark.parametrize("variant", _params(slow=True, kid=True))
def test_kid_parity_trained_mask(trained_mask_case, variant, inception):
    _check_kid(trained_mask_case, variant, inception)


@pytest.mark.parametrize("variant", _params(slow=True, kid=True))
def test_kid_parity_trained_unmask(trained_unmask_case, variant, inception):
    _check_kid(trained_unmask_case, variant, inception)


@pytest.mark.parametrize("variant", _params(trained=False))
def test_pixel_parity_small(small_case, variant):
    _check_pixels(small_case, variant)


@pytest.mark.parametrize("variant", _params(slow=True, trained=False))
def test_pixel_parity_full_size(full_case, variant):
    _check_pixels(full_case, variant)
