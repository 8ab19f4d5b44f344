"""What every cyclemask CLI shares: user errors become one line and exit status 1 (no
traceback unless --debug), usage errors stay click's exit status 2, and logging is set up once.

Stopping: SIGTERM (what `timeout`, `docker stop`, Kubernetes, systemd, SLURM and Ray send) is
handled as Ctrl-C. The first stops the command at a safe point; it prints its summary and exits
128 + the signal (130 for SIGINT, 143 for SIGTERM). A second exits at once, after deleting the
partial files this process was writing (cyclemask.outputs).

Use `@click.command(cls=Command)` / `@click.group(cls=Group)` and `@debug_option`; scripts that
are not click commands wrap their work in `handle_stop_signals()` and use `stop_exit_code()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Callable

import click

from .errors import CycleMaskError

_DEBUG_KEY = "cyclemask.debug"


def _reraise_as_click(ctx: click.Context, exc: CycleMaskError):
    if ctx.find_root().meta.get(_DEBUG_KEY):
        raise exc
    raise click.ClickException(str(exc)) from None


def _invoke(super_invoke, ctx: click.Context):
    mark = _outputs().history_mark()
    try:
        return super_invoke(ctx)
    except CycleMaskError as exc:
        _reraise_as_click(ctx, exc)
    except KeyboardInterrupt:
        # Commands with their own summary catch the interrupt themselves; this is the rest's.
        signum = stop_signal() or signal.SIGINT
        click.echo(f"\nstopped: interrupted ({stop_name(signum)})", err=True)
        for line in _outputs().stop_report(mark):
            click.echo(f"  {line}", err=True)
        ctx.exit(128 + signum)
    except OSError as exc:
        if not _outputs().is_fatal_write_error(exc) or ctx.find_root().meta.get(_DEBUG_KEY):
            raise
        _reraise_as_click(ctx, _outputs().output_error(exc.filename or "output", exc))


class Command(click.Command):
    def main(self, *args, **kwargs):
        with handle_stop_signals():
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        return _invoke(super().invoke, ctx)


class Group(click.Group):
    def main(self, *args, **kwargs):
        with handle_stop_signals():
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        return _invoke(super().invoke, ctx)


def _outputs():
    from . import outputs

    return outputs


# -- stop signals ---------------------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopState:
    installed = False
    signum: int | None = None
    callback: Callable[[int], None] | None = None


_stop = _StopState()


def stop_signal() -> int | None:
    """The stop signal this process received (SIGINT or SIGTERM), if any."""
    return _stop.signum


def stop_name(signum: int | None = None) -> str:
    signum = signum or _stop.signum or signal.SIGINT
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def stop_exit_code() -> int:
    """128 + the stop signal received: 130 for SIGINT (and when none was), 143 for SIGTERM."""
    return 128 + (_stop.signum or signal.SIGINT)


@contextlib.contextmanager
def handle_stop_signals():
    """Handle SIGINT and SIGTERM as described above while the block runs (main thread only;
    nested use is a no-op). A signal this process inherited as ignored stays ignored: a job
    started in the background by a non-interactive shell is not meant to get that shell's Ctrl-C."""
    if _stop.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, _on_stop_signal)
    _stop.installed, _stop.signum = True, None
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop.installed = False


@contextlib.contextmanager
def stop_callback(fn: Callable[[int], None]):
    """While the block runs, the first stop signal calls fn(signum) instead of raising
    KeyboardInterrupt: for loops that stop at a safe point of their own (the trainer saves
    first). A second signal still exits at once."""
    with handle_stop_signals():
        previous, _stop.callback = _stop.callback, fn
        try:
            yield
        finally:
            _stop.callback = previous


def _on_stop_signal(signum, _frame) -> None:
    if _stop.signum is not None:
        exit_now(signum)
    _stop.signum = signum
    if _stop.callback is not None:
        _stop.callback(signum)
        return
    raise KeyboardInterrupt


def run_stoppable(fn: Callable[[], int]) -> int:
    """For scripts that are not click commands: run fn() with the stop signals handled; a stop
    prints one line and returns 128 + the signal."""
    with handle_stop_signals():
        mark = _outputs().history_mark()
        try:
            return fn()
        except KeyboardInterrupt:
            click.echo(f"\nstopped: interrupted ({stop_name()}); nothing measured is written", err=True)
            for line in _outputs().stop_report(mark):
                click.echo(f"  {line}", err=True)
            return stop_exit_code()


def exit_now(signum: int) -> None:
    """Delete this process's partial files and exit with 128 + signum, without unwinding."""
    try:
        n = _outputs().remove_live_partials(hold=True)
        msg = f"\n{stop_name(signum)} again: stopping at once" + (f"; removed {n} partial file(s)" if n else "") + "\n"
        os.write(2, msg.encode())
    finally:
        os._exit(128 + signum)


def _set_debug(ctx: click.Context, _param, value: bool) -> bool:
    if value:
        ctx.find_root().meta[_DEBUG_KEY] = True
    setup_logging(logging.DEBUG if value else logging.INFO)
    return value


def debug_option(f):
    return click.option(
        "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
        help="Show full tracebacks and debug logging.",
    )(f)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


class StageBars:
    """One tqdm bar per stage name, fed by the libraries' (stage, done, total) progress
    callbacks; `leave` keeps finished bars on screen. Redraws at most every 25 items (and at the
    end of a stage), so a fast stage does not spend its time drawing."""

    def __init__(self, leave: bool = True) -> None:
        self.leave = leave
        self.bar = None
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="img", dynamic_ncols=True, leave=self.leave)
        self.bar.n = done
        if done == total or done % 25 == 0:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.refresh()
            self.bar.close()
            self.bar = None
