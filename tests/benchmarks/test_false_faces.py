"""benchmarks/false_faces.py: its counting, and a short clip of its own making end to end (the
printed face is left alone with the face checks, translated without them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is not installed
    sys.path.insert(0, str(REPO))

from benchmarks import false_faces  # noqa: E402


def test_score_splits_false_crops_by_what_they_lie_on():
    truth = {"frames": 3,
             "real": [[100, 50, 60, 60], [100, 50, 60, 60], None],
             "print": [[110, 200, 40, 50], [110, 200, 40, 50], [110, 200, 40, 50]],
             "hands": [[], [[20, 40, 50, 80]], []]}
    seen = [[(102, 52, 58, 58)],                          # the real face: right
            [(112, 205, 35, 40), (25, 45, 40, 60)],       # missed the face; a crop on the print, one on a hand
            [(300, 10, 40, 40)]]                          # no face known here: a false crop elsewhere
    r = false_faces.score(truth, seen)
    assert r["false_crops"] == 3 and r["false_by_kind"] == {"print": 1, "hand": 1, "other": 1}
    assert r["frames_with_false"] == 2
    assert (r["real_found"], r["real_known"]) == (1, 2)


@pytest.mark.slow
@pytest.mark.shared
def test_a_made_clip_is_counted_with_and_without_the_checks(shared_data, tmp_path):
    clip = tmp_path / "ff.mp4"
    res = CliRunner().invoke(false_faces.main, ["make", str(clip), "--frames", "8"])
    assert res.exit_code == 0, res.output
    truth = json.loads(Path(str(clip) + ".json").read_text())
    assert truth["frames"] == 8 and all(r is not None for r in truth["real"]) and all(truth["print"])
    res = CliRunner().invoke(false_faces.main, ["count", str(clip), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("{\n"):])
    assert rows["checks"]["false_crops"] == 0 and rows["checks"]["real_found"] == 8
    assert rows["no-face-checks"]["false_by_kind"]["print"] == 8 and rows["no-face-checks"]["real_found"] == 8
