"""Fixtures of the parity suite: the small and full-size cases (generator, artefacts exported
once per session, inputs, eager outputs) and the FID network. Helpers live in parity_helpers.py.

At the end of the session the figures of every variant that ran are printed; with
CYCLEMASK_PARITY_OUT=path they are also written there as JSON (the device check does this).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is not installed: import it from the checkout
    sys.path.insert(0, str(REPO))

from parity_helpers import FULL, RESULTS, SMALL, Case, seeded_case, trained_case  # noqa: E402

#: Faces per direction of the trained cases: enough for a KID with a useful standard error
#: (see parity_helpers.KID_NOISE_LSB); the Inception features cost ~0.3-0.8 s an image here.
TRAINED_FACES = 64


@pytest.fixture(scope="session")
def small_case(tmp_path_factory) -> Case:
    # 12 faces + 2 noise images in batches of 4: the last batch (2) exercises the dynamic batch.
    return seeded_case(SMALL, 12, 2, 4, tmp_path_factory.mktemp("parity-small"))


@pytest.fixture(scope="session")
def full_case(tmp_path_factory) -> Case:
    return seeded_case(FULL, 8, 1, 4, tmp_path_factory.mktemp("parity-full"))


@pytest.fixture(scope="session")
def trained_mask_case(tmp_path_factory) -> Case:
    """The embedded 'mask' generator on unmasked faces (batches of 8, the last one partial)."""
    return trained_case("mask", TRAINED_FACES, 2, 8, tmp_path_factory.mktemp("parity-trained-mask"))


@pytest.fixture(scope="session")
def trained_unmask_case(tmp_path_factory) -> Case:
    """The embedded 'unmask' generator on masked faces."""
    return trained_case("unmask", TRAINED_FACES, 2, 8, tmp_path_factory.mktemp("parity-trained-unmask"))


@pytest.fixture(scope="session")
def inception():
    """The FID network (skips with the reason when its weights are not installed)."""
    from cyclemask.errors import CycleMaskError
    from cyclemask.metrics.fid import load_inception

    try:
        return load_inception()
    except CycleMaskError as exc:
        pytest.skip(f"FID network unavailable: {exc}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("parity figures (backend vs eager)")
    tr.write_line(f"{'model':14s} {'variant':26s} {'check':5s} {'imgs':>4s} {'max LSB':>7s} {'>1 LSB':>8s} "
                  f"{'PSNR dB':>7s} {'KID +- SE (bound)':>28s}  worst images")
    for r in RESULTS:
        psnr = "inf" if r["psnr_db"] is None else f"{r['psnr_db']:.1f}"
        kid = "-" if r["kid"] is None else f"{r['kid']:.1e} +- {r['kid_se']:.0e} ({r['kid_max']:.1e})"
        tr.write_line(f"{r['model']:14s} {r['variant']:26s} {r['check']:5s} {r['images']:4d} {r['max_abs_lsb']:7d} "
                      f"{r['frac_off_gt1']:8.4%} {psnr:>7s} {kid:>28s}  {', '.join(r['worst'][:2])}")
    out = os.environ.get("CYCLEMASK_PARITY_OUT")
    if out:
        Path(out).write_text(json.dumps(RESULTS, indent=2))
        tr.write_line(f"parity figures written to {out}")
