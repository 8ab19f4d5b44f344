"""benchmarks/video_io.py: a smoke run on tiny clips (the real figures need a quiet machine)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is not installed
    sys.path.insert(0, str(REPO))

from benchmarks import video_io  # noqa: E402


def test_tiny_run_times_both_paths_and_the_generator():
    res = CliRunner().invoke(video_io.main, ["--sizes", "96x64", "--frames", "6", "--repeats", "1",
                                             "--generator-seconds", "0.2", "--batch", "2", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output[res.output.index("{"):])
    (row,) = result["rows"]
    assert (row["size"], row["width"], row["height"], row["frames"]) == ("96x64", 96, 64, 6)
    for tag in ("new", "old"):
        for key in ("decode_ms", "encode_ms", "pipeline_ms"):
            assert row[f"{tag}_{key}"] > 0
    assert result["generator"]["ms_per_image"] > 0 and result["generator"]["model"].endswith("mask.onnx")
    assert row["new_over_generator"] > 0


def test_sizes_are_parsed():
    assert video_io.parse_size("720p") == ("720p", (1280, 720))
    assert video_io.parse_size("320x180") == ("320x180", (320, 180))
    res = CliRunner().invoke(video_io.main, ["--sizes", "huge"])
    assert res.exit_code == 2 and "use 480p, 720p, 1080p or WIDTHxHEIGHT" in res.output
