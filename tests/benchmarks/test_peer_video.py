"""benchmarks/peer_video.py: it skips with its reason without deface, its ratios come from
alternating runs, and with a real deface (from $CYCLEMASK_DEFACE or PATH) it prints its table.

No stand-in for deface: a stub would only show that the benchmark can time a stub. The real run
needs deface installed in a virtual environment of its own (see the benchmark's docstring)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is not installed
    sys.path.insert(0, str(REPO))

from benchmarks import peer_video  # noqa: E402


def test_without_deface_it_skips_and_says_why(tmp_path):
    res = CliRunner().invoke(peer_video.main, [], env={"PATH": str(tmp_path), "CYCLEMASK_DEFACE": None})
    assert res.exit_code == 0, res.output
    assert res.output.startswith("skipped: no `deface` command on PATH")
    assert "pip install deface onnxruntime" in res.output and "deface:" not in res.output
    res = CliRunner().invoke(peer_video.main, [], env={"PATH": str(tmp_path), "CYCLEMASK_DEFACE": str(tmp_path / "nope")})
    assert res.exit_code == 0 and res.output.startswith(f"skipped: $CYCLEMASK_DEFACE={tmp_path / 'nope'} is not")


def test_a_deface_that_is_not_a_program_is_an_error_naming_it(tmp_path):
    text = tmp_path / "deface"
    text.write_text("not a program")
    res = CliRunner().invoke(peer_video.main, ["--deface", str(text)])
    assert res.exit_code == 2 and f"{text}: not an executable file" in res.output


def test_ratios_come_from_alternating_pairs(monkeypatch, tmp_path):
    # The timing of each process is replaced (not deface): what is checked is the order of the
    # runs and the arithmetic of the figures.
    calls = []
    seconds = {("deface", "short"): [10.0, 12.0, 11.0], ("deface", "long"): [100.0, 102.0, 101.0],
               ("cyclemask", "short"): [4.0, 4.0, 5.0], ("cyclemask", "long"): [22.0, 28.0, 23.0]}

    def fake_run(cmd, out):
        tool = "deface" if cmd[0] == "/x/deface" else "cyclemask"
        which = "short" if "short" in str(out) else "long"
        calls.append((tool, which))
        n = sum(c == (tool, which) for c in calls) - 1 - (which == "short")  # the first short run is the warm-up
        return seconds[(tool, which)][max(n, 0)]

    monkeypatch.setattr(peer_video, "run_once", fake_run)
    r = peer_video.bench("/x/deface", (tmp_path / "short.mp4", 50), (tmp_path / "long.mp4", 500), 3, "gan",
                         tmp_path, echo=lambda *a, **k: None)
    timed = calls[2:]
    assert calls[:2] == [("deface", "short"), ("cyclemask", "short")]
    # ABBA: deface first in repeats 1 and 3, cyclemask first in repeat 2.
    assert [t for t, _ in timed[:4]] == ["deface", "cyclemask"] * 2
    assert [t for t, _ in timed[4:8]] == ["cyclemask", "deface"] * 2
    assert r["deface"]["whole_s"] == 11.0 and r["cyclemask"]["whole_s"] == 4.0
    assert r["whole_ratio"] == pytest.approx(2.5)  # median of 10/4, 12/4, 11/5
    # Steady: 450 frames over (long - short) seconds of the same repeat.
    assert r["deface"]["steady_fps"] == pytest.approx(450 / 90.0)
    assert r["cyclemask"]["steady_fps"] == pytest.approx(450 / 18.0)
    assert r["steady_ratio"] == pytest.approx(5.0)  # median of 25/5, 18.75/5, 25/5


def _real_deface() -> str:
    found = os.environ.get("CYCLEMASK_DEFACE") or shutil.which("deface")
    if not found:
        pytest.skip("needs deface: set CYCLEMASK_DEFACE to a deface command installed in a virtual environment "
                    "of its own (pip install deface onnxruntime), or put it on PATH")
    return found


@pytest.mark.slow
@pytest.mark.shared
def test_with_a_real_deface_it_prints_the_table(shared_data):
    deface = _real_deface()
    res = CliRunner().invoke(peer_video.main, ["--deface", deface, "--repeats", "1", "--short-seconds", "0.2",
                                               "--long-seconds", "0.6", "--json"])
    assert res.exit_code == 0, res.output
    assert f"deface: {deface} (from --deface)" in res.output
    assert "whole process,    5 frames (s)" in res.output and "steady frames/s (long - short)" in res.output
    r = json.loads(res.output[res.output.index("{"):])
    assert (r["short_frames"], r["long_frames"]) == (5, 15)
    for tool in ("deface", "cyclemask"):
        assert 0 < r[tool]["whole_s"] < r[tool]["long_s"] + 5.0
    assert r["whole_ratio"] > 0 and r["steady_ratio"] == r["steady_ratio"]  # a number, not NaN
