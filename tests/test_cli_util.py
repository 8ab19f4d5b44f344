import click
from click.testing import CliRunner

from cyclemask.cli_util import Command, debug_option
from cyclemask.errors import InputError


@click.command(cls=Command)
@debug_option
@click.option("--n", type=int, default=1)
def _cmd(n):
    if n < 0:
        raise InputError("photo.jpg: negative")
    click.echo(f"n={n}")


def test_user_error_is_one_line_exit_1():
    res = CliRunner().invoke(_cmd, ["--n", "-1"])
    assert res.exit_code == 1
    assert "Error: photo.jpg: negative" in res.output
    assert "Traceback" not in res.output


def test_debug_reraises():
    res = CliRunner().invoke(_cmd, ["--debug", "--n", "-1"])
    assert isinstance(res.exception, InputError)


def test_bad_flag_is_usage_error_exit_2():
    res = CliRunner().invoke(_cmd, ["--n", "x"])
    assert res.exit_code == 2
    assert CliRunner().invoke(_cmd, ["--n", "3"]).output == "n=3\n"


def test_opencvs_own_stderr_lines_are_quiet_unless_debug(tmp_path):
    """A broken PNG: OpenCV writes a WARN and an ERROR line from C++ before the run's own
    message; only a child process's stderr shows them."""
    import subprocess
    import sys

    import numpy as np

    from cyclemask.image_files import write_image

    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "ok.png", np.full((64, 64, 3), 120, np.uint8))
    (folder / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")

    def run(*extra):
        out = tmp_path / f"out{len(extra)}"
        r = subprocess.run([sys.executable, "-m", "cyclemask.engine.cli", "--images", str(folder), "--out", str(out),
                            "--aligned", "--no-progress", *extra], capture_output=True, text=True, timeout=300)
        assert r.returncode == 1, r.stdout + r.stderr  # one input failed
        return r.stdout + r.stderr

    quiet = run()
    assert "fake.png: not a decodable image" in quiet
    assert "[ WARN" not in quiet and "[ERROR" not in quiet, quiet
    assert "[ERROR" in run("--debug")  # the check above can fail: OpenCV does write here
