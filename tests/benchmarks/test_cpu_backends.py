"""benchmarks/cpu_backends.py: cyclemask-run per CPU backend and precision against the plain
eager loop, alternating rounds, on a tiny model."""

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


def test_plain_loop_summary_parsing():
    m = cb.PLAIN.search("plain loop: 12 images, first output after 2.31 s, 8.20 s in all\n")
    assert (int(m.group(1)), float(m.group(2)), float(m.group(3))) == (12, 2.31, 8.2)


def test_unknown_candidate_and_bad_batches_are_refused():
    res = CliRunner().invoke(cb.main, ["--candidates", "ort,tensorflow"])
    assert res.exit_code == 2 and "unknown tensorflow" in res.output
    res = CliRunner().invoke(cb.main, ["--eager-batches", "1,x"])
    assert res.exit_code == 2 and "comma-separated batch sizes" in res.output


def test_candidates_cover_every_precision():
    assert {"openvino-bf16", "torch-bf16", "openvino-int8", "ort-int8", "auto", "plain", "eager"} <= set(cb.CANDIDATES)
    assert cb.CANDIDATES["plain"][1] is None  # benchmarks/plain_loop.py, not cyclemask-run


@pytest.mark.slow  # every candidate end to end (~11 s); the parsing and candidate tests stay fast
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_tiny_run_has_a_row_per_candidate_and_both_baselines():
    res = CliRunner().invoke(cb.main, ["--model", "tiny", "--images", "4", "--rounds", "1", "--eager-batches", "1,2",
                                       "--candidates", "openvino,auto", "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    rows = {r["candidate"]: r for r in summary["rows"]}
    assert list(rows) == ["plain", "eager b1", "eager b2", "openvino", "auto"]
    best = summary["eager_baseline"]
    assert best in ("eager b1", "eager b2") and rows[best]["vs_eager_best"] == 1.0
    assert rows["plain"]["plain_vs_this_wall"] == 1.0
    assert all(r["fps_median"] > 0 and len(r["fps_all"]) == 1 for r in rows.values())
    # The first output comes after the process starts and before it ends.
    assert all(0 < r["first_output_s_median"] <= r["wall_s_median"] for r in rows.values())
    assert rows["openvino"]["backend"].startswith("openvino (CPU")
    assert rows["auto"]["reason"].startswith("auto: ")
