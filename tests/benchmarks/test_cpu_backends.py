"""benchmarks/cpu_backends.py: cyclemask-run per CPU backend, alternating rounds, on a tiny model."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is not installed
    sys.path.insert(0, str(REPO))

from benchmarks import cpu_backends as cb  # noqa: E402


def test_summary_parsing():
    out = ("backend: openvino (CPU, latency mode)  [auto: openvino, because x]\n"
           "  throughput: 1.2 frames/s (24 frames in 19.75 s, batch 8.0 on average; model load 0.61 s)\n")
    m, c = cb.FPS.search(out), cb.CHOSEN.search(out)
    assert (int(m.group(1)), float(m.group(2))) == (24, 19.75)
    assert c.group(1) == "openvino (CPU, latency mode)" and c.group(2) == "auto: openvino, because x"


def test_unknown_candidate_is_refused():
    res = CliRunner().invoke(cb.main, ["--candidates", "ort,tensorflow"])
    assert res.exit_code == 2 and "unknown tensorflow" in res.output


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_tiny_run_has_a_row_per_candidate():
    res = CliRunner().invoke(cb.main, ["--model", "tiny", "--images", "4", "--rounds", "1", "--batch", "2",
                                       "--candidates", "openvino,auto", "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    rows = {r["candidate"]: r for r in summary["rows"]}
    assert list(rows) == ["eager", "openvino", "auto"]
    assert rows["eager"]["vs_eager"] == 1.0
    assert all(r["fps_median"] > 0 and len(r["fps_all"]) == 1 for r in rows.values())
    assert rows["openvino"]["backend"].startswith("openvino (CPU")
    assert rows["auto"]["reason"].startswith("auto: ")
