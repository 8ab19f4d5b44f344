"""benchmarks/unmask_method.py runs both unmasking methods as whole processes and reports them."""

from __future__ import annotations

import math

import pytest


@pytest.mark.slow  # four cyclemask-run processes on a short 720p clip
def test_unmask_method_benchmark_reports_both_methods(capsys):
    from benchmarks import unmask_method

    r = unmask_method.main(["--frames", "6", "--repeats", "1", "--backend", "ort"])
    assert set(r["median_s"]) == {"restore", "cyclegan"}
    for m in ("restore", "cyclegan"):
        assert r["median_s"][m] > 0 and not math.isnan(r["median_steady_fps"][m]) and r["median_steady_fps"][m] > 0
    assert r["restore_over_cyclegan_time"] == pytest.approx(r["median_s"]["restore"] / r["median_s"]["cyclegan"])
    out = capsys.readouterr().out
    assert "restore takes" in out and "steady" in out
