"""`cyclemask-study`: clear one-line errors, the report command, and no torch anywhere."""

from __future__ import annotations

import csv
import subprocess
import sys

from click.testing import CliRunner
from study_helpers import make_folders

from cyclemask.study.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_explains_the_options():
    r = run("serve", "--help")
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for needle in ("--real", "--generated, --fake", "--per-person", "--host", "default: 127.0.0.1", "--port",
                   "--study-dir", "--detector", "CYCLEMASK_FACE_DETECTOR", "--skip-bad", "--dup-threshold"):
        assert needle in text, needle
    assert "40.08 %" in " ".join(run("report", "--help").output.split())


def test_bad_input_is_one_clear_line(tmp_path):
    real, gen = make_folders(tmp_path / "in", 2, 2)
    (tmp_path / "empty").mkdir()
    r = run("serve", "--real", real, "--generated", tmp_path / "empty", "--study-dir", tmp_path / "s", "--no-face-check")
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and "empty: no images (the generated images" in r.output
    assert "Traceback" not in r.output
    r = run("serve", "--real", real, "--generated", gen, "--study-dir", tmp_path / "s", "--no-face-check", "--per-person", "6")
    assert r.exit_code == 1 and "--per-person 6 needs up to 3 real images per participant; only 2" in r.output
    r = run("serve", "--real", real, "--generated", gen, "--study-dir", tmp_path / "s", "--no-face-check",
            "--host", "no-such-host.invalid")
    assert r.exit_code == 1 and "--host no-such-host.invalid: unknown address" in r.output
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = run("serve", "--real", real, "--generated", gen, "--study-dir", tmp_path / "s2", "--no-face-check",
                "--port", busy.getsockname()[1])
    assert r.exit_code == 1 and "cannot listen on 127.0.0.1:" in r.output
    assert not (tmp_path / "s2").exists()                               # refused before any work
    r = run("report", "--study-dir", tmp_path / "nothing")
    assert r.exit_code == 1 and "no study database here" in r.output
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "study.sqlite3").write_bytes(b"not a database at all" * 100)
    r = run("report", "--study-dir", tmp_path / "junk")
    assert r.exit_code == 1 and "not a study database" in r.output


def test_report_prints_and_writes_the_figures(tmp_path):
    from cyclemask.study.config import StudyConfig
    from cyclemask.study.server import open_study

    real, gen = make_folders(tmp_path / "in", 4, 4)
    study = open_study(StudyConfig(real=real, generated=gen, study_dir=tmp_path / "s", face_check=False))
    for person in range(3):
        pid = study.store.create_participant(4)
        for pos in range(4 if person < 2 else 2):
            study.store.record_answer(pid, pos, "real", 1)            # right on real, fooled on generated
    study.store.close()
    r = run("report", "--study-dir", tmp_path / "s", "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert "participants: 3 (2 finished), answers: 10" in r.output
    assert "the paper: 40.08 %" in r.output and "fool rate (generated images judged real): 100.00 %" in r.output
    assert "mean score of finished participants: 2.00 of 4" in r.output
    rows = list(csv.DictReader((tmp_path / "rep" / "answers.csv").open()))
    assert len(rows) == 10 and {r["answer"] for r in rows} == {"real"}
    assert sum(r["correct"] == "1" for r in rows) == sum(r["source"] == "real" for r in rows)
    assert len(list(csv.DictReader((tmp_path / "rep" / "participants.csv").open()))) == 3
    assert (tmp_path / "rep" / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "rep" / "summary.txt").read_text().startswith("participants: 3 (2 finished)")


def test_the_study_imports_no_torch(tmp_path):
    """The runtime installs without torch: the study, its server and its report must not need it."""
    real, gen = make_folders(tmp_path / "in", 3, 3)
    code = (
        "import sys\n"
        "import cyclemask.study.cli, cyclemask.study.app, cyclemask.study.server, cyclemask.study.stats\n"
        "from cyclemask.study.config import StudyConfig\n"
        "from cyclemask.study.server import open_study\n"
        "from cyclemask.study.app import AppSettings, create_app\n"
        "from cyclemask.study import stats\n"
        f"s = open_study(StudyConfig(real={str(real)!r}, generated={str(gen)!r}, study_dir={str(tmp_path / 's')!r}, "
        "face_check=False))\n"
        "create_app(s.store, AppSettings(per_person=s.per_person, image_dir=s.config.image_dir, token=s.token))\n"
        "stats.plot_png(stats.summarize([], [], []))\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print('TORCH' if bad else 'NO TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "NO TORCH"
