"""Each parity bound can fail: deliberately broken graphs (benchmarks/faults.py) of the trained
'mask' generator, run on ONNX Runtime like any variant, against the bounds of their precision.

A bound that no realistic fault can break protects nothing. The faults are ones real exporters
have made; which bounds each breaks was measured by scripts/calibrate_parity.py on the embedded
80 px generators (README.md in this folder has the table):

- `truncate` (Round lost, the uint8 cast truncates) and `norm-128` (input scaled by 1/128, not
  1/127.5) keep every value within 1 LSB: only the PSNR bound catches them.
- `zero-pad` (reflection padding exported as zero padding) and `bgr` (the input read as BGR)
  break every bound, KID included.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.faults import FAULTS, make_fault
from parity_helpers import BOUNDS, check_kid, compare, record, run_batches

#: fault -> the pixel bounds it must break (by the names `bound_names` gives), under the FP32
#: bounds (max |d|, PSNR) and the FP16 bounds (max |d|, share within 1 LSB, PSNR).
EXPECTED = {"truncate": ({"psnr"}, {"psnr"}), "norm-128": ({"psnr"}, {"psnr"}),
            "zero-pad": ({"max_abs", "psnr"}, {"max_abs", "within_1", "psnr"}),
            "bgr": ({"max_abs", "psnr"}, {"max_abs", "within_1", "psnr"})}


def bound_names(failures: list[str]) -> set[str]:
    return {"max_abs" if f.startswith("max") else "within_1" if "within" in f else "psnr" for f in failures}


@pytest.fixture(scope="module")
def fault_outputs(trained_mask_case, tmp_path_factory):
    from cyclemask.engine.backends import OrtBackend

    case = trained_mask_case
    d = tmp_path_factory.mktemp("faults")
    graph = case.artefacts.path("graph-fp32")
    out = {}
    for name in EXPECTED:
        path = make_fault(name, graph, d / f"mask.{name}.onnx")
        with OrtBackend(path, "mask", provider="cpu") as be:
            out[name] = run_batches(be, case.images, case.batch)
    return out


def test_fault_list_is_covered():
    assert set(EXPECTED) <= set(FAULTS)


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_broken_graph_breaks_the_bounds_it_should(trained_mask_case, fault_outputs, fault):
    case = trained_mask_case
    for precision, expected in zip(("fp32", "fp16"), EXPECTED[fault]):
        r = compare(f"fault:{fault}", precision, "ort cpu", fault_outputs[fault], case.eager, case.labels)
        record(case, r, "fault")
        assert bound_names(r.pixel_failures()) == expected, r.message(r.pixel_failures())


def test_truncation_alone_is_what_psnr_is_for(trained_mask_case, fault_outputs):
    """Half the values 1 LSB low: max |d| and the within-1 share cannot see it."""
    r = compare("fault:truncate", "fp32", "ort cpu", fault_outputs["truncate"], trained_mask_case.eager,
                trained_mask_case.labels)
    assert r.stats.max_abs == 1 and r.stats.frac_within_1 == 1.0
    assert 0.4 < r.stats.frac_exact < 0.6 and r.stats.psnr_db < BOUNDS["fp32"].min_psnr_db


def _kid_of_the_zero_pad_fault(case, fault_outputs, features):
    r = compare("fault:zero-pad", "fp16", "ort cpu", fault_outputs["zero-pad"], case.eager, case.labels)
    check_kid(case, r, fault_outputs["zero-pad"], "fault:zero-pad", features)
    assert r.kid_failures(), f"KID {r.kid:.2e} +- {r.kid_se:.1e} passed the bound {r.kid_max:.2e}"
    assert r.kid - 2 * r.kid_se > 10 * r.kid_max
    return r


# Slow: the Inception network over 3 x 64 faces (~20 s of CPU).
# test_kid_bound_fails_on_a_broken_graph_with_tiny_features runs the same KID check fast.
@pytest.mark.slow
def test_kid_bound_fails_on_a_broken_graph(trained_mask_case, fault_outputs, inception):
    record(trained_mask_case, _kid_of_the_zero_pad_fault(trained_mask_case, fault_outputs, inception), "fault")


def test_kid_bound_fails_on_a_broken_graph_with_tiny_features(trained_mask_case, fault_outputs, tiny_features_path):
    """The KID check (features of the faces only, paired KID, the noise bound) with a small
    feature network in place of Inception, on a copy of the case: its feature cache is Inception's."""
    from cyclemask.metrics.fid import load_inception

    case = dataclasses.replace(trained_mask_case, features={})
    r = _kid_of_the_zero_pad_fault(case, fault_outputs, load_inception(tiny_features_path))
    assert r.kid_note == f"{int(case.is_face.sum())} face images" and set(case.features) == {"eager", "fault:zero-pad", "noise-2"}


def test_genuine_fp16_graph_passes_what_the_faults_break(trained_mask_case):
    """The other side of the calibration: the real FP16 graph of the same generator passes."""
    from benchmarks.variants import select
    from parity_helpers import parity_result

    (v,) = select(["ort-cpu-fp16"])
    if v.unavailable():
        pytest.skip(v.unavailable())
    r = parity_result(trained_mask_case, v)
    assert not r.pixel_failures(), r.message(r.pixel_failures())
    assert np.isfinite(r.stats.psnr_db) and r.stats.psnr_db > BOUNDS["fp16"].min_psnr_db + 6
