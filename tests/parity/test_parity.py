"""Every backend variant against the eager model (`cyclemask.imaging.translate` on the CPU):
pixel parity (max |d| in LSB, share of values off by more than 1 LSB, PSNR) and FID between the
variant's outputs and the eager outputs, with bounds per precision (parity_helpers.py, README.md).

One case per variant and size: the fast suite's small generator (ngf 16, 3 blocks, 64 px) on
12 faces + 2 noise images, and the full generator (ngf 64, 9 blocks, 256 px, marked slow) on
8 faces + 1 noise image. Variants come from benchmarks/variants.py: CUDA ones are marked gpu,
TensorRT ones trt, and skip with the reason where that is missing; a variant whose optional
package is missing skips with the reason.
"""

from __future__ import annotations

import pytest

from benchmarks.variants import variants
from parity_helpers import face_features, fid_bound, parity_result, record

VARIANTS = variants()


def _params(slow: bool = False):
    out = []
    for v in VARIANTS:
        marks = [getattr(pytest.mark, m) for m in v.markers] + ([pytest.mark.slow] if slow else [])
        out.append(pytest.param(v, id=v.name, marks=marks))
    return out


def _check_pixels(case, variant):
    result = parity_result(case, variant)
    record(case, result, "pixel")
    bad = result.pixel_failures()
    assert not bad, result.message(bad)
    # The suite must compare something real: outputs span the range and backends were fed the
    # inputs (a backend returning eager's array untouched would not get here through infer()).
    assert case.eager.min() == 0 and case.eager.max() == 255


def _check_fid(case, variant, inception):
    result = parity_result(case, variant)
    ref = face_features(case, "eager", case.eager, inception)
    out, _ = case.outputs[variant.name]
    feats = face_features(case, variant.name, out, inception)
    from cyclemask.metrics.fid import fid_from_features

    result.fid = fid_from_features(feats, ref)
    result.fid_max = fid_bound(case, variant.precision, inception)
    result.fid_note = f"{len(ref)} face images"
    record(case, result, "fid")
    bad = result.fid_failures()
    assert not bad, result.message(bad)


@pytest.mark.parametrize("variant", _params())
def test_pixel_parity_small(small_case, variant):
    _check_pixels(small_case, variant)


@pytest.mark.parametrize("variant", _params())
def test_fid_parity_small(small_case, variant, inception):
    _check_fid(small_case, variant, inception)


@pytest.mark.parametrize("variant", _params(slow=True))
def test_pixel_parity_full_size(full_case, variant):
    _check_pixels(full_case, variant)


@pytest.mark.parametrize("variant", _params(slow=True))
def test_fid_parity_full_size(full_case, variant, inception):
    _check_fid(full_case, variant, inception)
