"""cyclemask.cli_util's stop signals, in this process: a real SIGTERM / SIGINT sent to ourselves
inside a command. The same on real commands in child processes: test_reliability.py."""

from __future__ import annotations

import os
import signal

import click
import pytest
from click.testing import CliRunner

from cyclemask import outputs
from cyclemask.cli_util import Command, check_stop, stop_at_safe_points, stop_signal
from cyclemask.errors import ConfigError
from cyclemask.image_files import write_bytes_atomic


def _invoke(cmd, *args):
    return CliRunner().invoke(cmd, [str(a) for a in args])


@pytest.mark.parametrize("sig,code,name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_stop_signal_is_a_keyboard_interrupt_with_a_summary_and_128_plus_the_signal(tmp_path, sig, code, name):
    @click.command(cls=Command)
    @click.argument("out")
    def cmd(out):
        with outputs.OutputLock(out, "test"):
            write_bytes_atomic(os.path.join(out, "a.txt"), b"1")
            os.kill(os.getpid(), sig)
            write_bytes_atomic(os.path.join(out, "b.txt"), b"2")  # never reached

    before = signal.getsignal(signal.SIGTERM)
    res = _invoke(cmd, tmp_path / "out")
    assert res.exit_code == code, res.output
    assert f"stopped: interrupted ({name})" in res.output
    assert f"{tmp_path / 'out'}: 1 output file(s) completed by this run kept; nothing half-written left" in res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt"]
    assert signal.getsignal(signal.SIGTERM) is before  # restored when the command returns


def test_safe_point_commands_see_the_flag_and_an_error_caused_by_the_stop_is_still_a_stop(tmp_path):
    seen = []

    @click.command(cls=Command)
    def cmd():
        stop_at_safe_points("the current step")
        os.kill(os.getpid(), signal.SIGTERM)
        seen.append(stop_signal())  # no exception: the command carries on to its safe point
        raise ConfigError("a library wrapped the interrupt in its own error")

    res = _invoke(cmd)
    assert seen == [signal.SIGTERM]
    assert res.exit_code == 143 and "stopped: interrupted (SIGTERM)" in res.output
    assert "wrapped the interrupt" not in res.output

    @click.command(cls=Command)
    def cmd2():
        stop_at_safe_points("the current step")
        os.kill(os.getpid(), signal.SIGINT)
        check_stop()
        raise AssertionError("check_stop did not stop")

    res = _invoke(cmd2)
    assert res.exit_code == 130 and "stopped: interrupted (Ctrl-C)" in res.output


def test_an_inherited_ignore_is_kept(tmp_path):
    seen = []

    @click.command(cls=Command)
    def cmd():
        seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert _invoke(cmd).exit_code == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen[0][0] is signal.SIG_IGN and callable(seen[0][1])


def test_a_disk_error_from_a_library_is_one_line_not_a_traceback():
    @click.command(cls=Command)
    def cmd():
        raise OSError(28, "No space left on device", "/data/x.bin")

    res = _invoke(cmd)
    assert res.exit_code == 1
    assert res.output.strip() == "Error: /data/x.bin: cannot write (No space left on device, ENOSPC)"


def test_a_signal_during_argument_parsing_still_stops_with_the_summary_and_status():
    ran = []

    def kill_now(_ctx, _param, value):
        os.kill(os.getpid(), signal.SIGTERM)  # handled while click parses, before the command
        return value

    @click.command(cls=Command)
    @click.option("--x", default="1", callback=kill_now)
    def cmd(x):
        ran.append(x)

    res = _invoke(cmd)
    assert res.exit_code == 143 and "stopped: interrupted (SIGTERM)" in res.output
    assert "Aborted" not in res.output and ran == []


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_exit_code_is_128_plus_the_signal_received(sig, code, monkeypatch):
    # Commands with a summary of their own (cyclemask-run, --ray, train, eval) exit with
    # stop_exit_code() rather than through Command's handler: a scheduler reads 143 as "stopped
    # by SIGTERM", and 130 as a user's Ctrl-C.
    from cyclemask import cli_util
    from cyclemask.cli_util import run_stoppable, stop_exit_code

    monkeypatch.setattr(cli_util._stop, "signum", None)  # the signal is not left to later tests

    def work():
        os.kill(os.getpid(), sig)
        return 0  # never reached: the signal interrupts

    assert run_stoppable(work) == code
    assert stop_exit_code() == code


def test_a_stop_signal_that_lands_inside_a_finalizer_still_stops_the_command(tmp_path):
    # Python runs the handler inside the weakref callback, where its KeyboardInterrupt is only
    # printed as "Exception ignored": the command must stop anyway and write nothing after it.
    import weakref

    class Node:
        pass

    def callback(_ref):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # bytecodes inside the callback, for the handler to run on
            pass

    @click.command(cls=Command)
    @click.argument("out")
    def cmd(out):
        with outputs.OutputLock(out, "test"):
            node = Node()
            ref = weakref.ref(node, callback)
            del node  # the callback runs here
            assert ref() is None
            for _ in range(10_000):
                pass
            write_bytes_atomic(os.path.join(out, "after.txt"), b"1")  # never reached

    res = _invoke(cmd, tmp_path / "out")
    assert res.exit_code == 143, res.output
    assert "stopped: interrupted (SIGTERM)" in res.output
    assert "Exception ignored" not in res.output
    assert not (tmp_path / "out" / "after.txt").exists()


def _swallowed_stop(sig=signal.SIGTERM):
    """What the stop handler leaves when Python ran it inside a finalizer: the signal recorded,
    its KeyboardInterrupt handed to sys.unraisablehook (which cli_util installs)."""
    import sys
    import types

    from cyclemask import cli_util

    cli_util._stop.signum = sig
    sys.unraisablehook(types.SimpleNamespace(exc_type=KeyboardInterrupt, exc_value=KeyboardInterrupt(),
                                             exc_traceback=None, err_msg=None, object=None))


def test_a_swallowed_stop_still_stops_a_command_that_exits_with_its_own_code():
    @click.command(cls=Command)
    @click.pass_context
    def cmd(ctx):
        _swallowed_stop()
        ctx.exit(1)

    res = _invoke(cmd)
    assert res.exit_code == 143 and "stopped: interrupted (SIGTERM)" in res.output, res.output


def test_a_commit_refused_by_a_stop_leaves_no_partial_file(tmp_path, monkeypatch):
    def stop():
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "raise_lost_stop", stop)
    partial = outputs.create_partial(tmp_path / "a.txt")  # as the video writer stages its file
    partial.write_bytes(b"1")
    with pytest.raises(KeyboardInterrupt):
        outputs.commit_partial(partial, tmp_path / "a.txt")
    assert list(tmp_path.iterdir()) == []
