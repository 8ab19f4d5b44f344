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
