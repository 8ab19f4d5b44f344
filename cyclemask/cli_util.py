"""What every cyclemask CLI shares: user errors become one line and exit status 1 (no
traceback unless --debug), usage errors stay click's exit status 2, and logging is set up once.

Stopping: SIGTERM (what `timeout`, `docker stop`, Kubernetes, systemd, SLURM and Ray send) is
handled as Ctrl-C. The first stops the command at a safe point; it prints its summary and exits
128 + the signal (130 for SIGINT, 143 for SIGTERM). By default the first signal raises
KeyboardInterrupt in the main thread, as Ctrl-C always has; commands whose work sits inside
libraries that must not be interrupted anywhere take it at their own safe points instead
(`stop_at_safe_points` + `check_stop`; the trainer through `stop_callback`). A second signal
exits at once, after deleting the partial files this process was writing (cyclemask.outputs).

Use `@click.command(cls=Command)` / `@click.group(cls=Group)` and `@debug_option`; scripts that
are not click commands run their main through `run_stoppable`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

import click

from . import cvlog, outputs
from .errors import CycleMaskError

_DEBUG_KEY = "cyclemask.debug"


def _reraise_as_click(ctx: click.Context, exc: CycleMaskError):
    if ctx.find_root().meta.get(_DEBUG_KEY):
        raise exc
    raise click.ClickException(str(exc)) from None


def _invoke(super_invoke, ctx: click.Context):
    mark = 0
    try:
        mark = outputs.history_mark()
        with _interruptible():
            try:
                result = super_invoke(ctx)
            except (click.exceptions.Exit, SystemExit):
                raise_lost_stop()  # a command that exits with its own code still stops
                raise
            raise_lost_stop()
            return result
    except KeyboardInterrupt:
        _stopped(ctx, mark)
    except Exception as exc:
        if stop_signal() is not None and not isinstance(exc, click.exceptions.Exit):
            # Raised by the stop itself (a library that wraps the interrupt in its own error).
            logging.getLogger(__name__).debug("after the stop signal", exc_info=True)
            _stopped(ctx, mark)
        if isinstance(exc, CycleMaskError):
            _reraise_as_click(ctx, exc)
        if (isinstance(exc, OSError) and outputs.is_fatal_write_error(exc)
                and not ctx.find_root().meta.get(_DEBUG_KEY)):
            _reraise_as_click(ctx, outputs.output_error(exc.filename or "output", exc))
        raise


def _stopped(ctx: click.Context, mark: int):
    # Commands with their own summary handle the stop themselves; this is the others'.
    signum = stop_signal() or signal.SIGINT
    click.echo(f"\nstopped: interrupted ({stop_name(signum)})", err=True)
    for line in outputs.stop_report(mark):
        click.echo(f"  {line}", err=True)
    ctx.exit(128 + signum)


class Command(click.Command):
    def main(self, *args, **kwargs):
        # Until the command runs (click parsing), a signal is only recorded: click would turn
        # an interrupt there into "Aborted!" and exit 1.
        with handle_stop_signals(defer=True):
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        return _invoke(super().invoke, ctx)


class Group(click.Group):
    def main(self, *args, **kwargs):
        with handle_stop_signals(defer=True):
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        return _invoke(super().invoke, ctx)


# -- stop signals ---------------------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopState:
    installed = False
    signum: int | None = None
    callback: Callable[[int], None] | None = None
    lost = False


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


def _record_only(_signum: int) -> None:
    pass


@contextlib.contextmanager
def handle_stop_signals(defer: bool = False):
    """Handle SIGINT and SIGTERM as described above while the block runs (main thread only;
    nested use is a no-op). defer=True: a first signal is only recorded until an inner
    `_interruptible` block raises it. A signal this process inherited as ignored stays ignored:
    a job started in the background by a non-interactive shell is not meant to get that shell's
    Ctrl-C."""
    if _stop.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    _stop.signum = None
    _stop.callback = _record_only if defer else None
    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, _on_stop_signal)
    previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable_hook(sys.unraisablehook)
    _stop.installed, _stop.lost = True, False
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = previous_hook
        _stop.installed, _stop.callback, _stop.lost = False, None, False


@contextlib.contextmanager
def _interruptible():
    """Inside, the first stop signal raises KeyboardInterrupt; one recorded before raises now."""
    previous, _stop.callback = _stop.callback, None
    try:
        check_stop()
        yield
    finally:
        _stop.callback = previous


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


def stop_at_safe_points(what: str) -> None:
    """For the rest of the current command, the first stop signal only sets the flag (and says
    so); the command raises KeyboardInterrupt itself at its next safe point (`check_stop`).
    For work inside libraries that an interrupt raised anywhere would break (torch's exporter
    turns it into its own error, or aborts)."""

    def announce(signum: int) -> None:
        # os.write: a print here could re-enter a stream the main thread is writing.
        os.write(2, f"\n{stop_name(signum)} received: stopping after {what} (again: at once)\n".encode())

    click.get_current_context().with_resource(stop_callback(announce))


def check_stop() -> None:
    """A safe point: raise KeyboardInterrupt if a stop signal came."""
    if _stop.signum is not None:
        raise KeyboardInterrupt


def _unraisable_hook(previous):
    """Python runs a signal handler between any two bytecodes, also inside a weakref callback or
    a __del__, where an exception cannot propagate: it is printed as "Exception ignored" and the
    command would go on as if no signal came. Such a lost stop is kept and raised in the main
    thread at its next progress update, output commit or wait for the pipeline's threads
    (`outputs.raise_lost_stop`), or when the command returns or exits."""

    def hook(unraisable) -> None:
        if (isinstance(unraisable.exc_value, KeyboardInterrupt) and _stop.signum is not None
                and _stop.callback is None):
            _stop.lost = True
            return
        previous(unraisable)

    return hook


def raise_lost_stop() -> None:
    """Raise the KeyboardInterrupt of a stop signal that was swallowed inside a finalizer (in
    the main thread only: a worker thread's progress or commit leaves it to the main thread)."""
    if _stop.lost and threading.current_thread() is threading.main_thread():
        _stop.lost = False
        raise KeyboardInterrupt


outputs.raise_lost_stop = raise_lost_stop


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
    mark = outputs.history_mark()
    with handle_stop_signals(defer=True):
        try:
            with _interruptible():
                try:
                    code = fn()
                except SystemExit:
                    raise_lost_stop()
                    raise
                raise_lost_stop()
                return code
        except KeyboardInterrupt:
            click.echo(f"\nstopped: interrupted ({stop_name()}); nothing measured is written", err=True)
            for line in outputs.stop_report(mark):
                click.echo(f"  {line}", err=True)
            return stop_exit_code()


def exit_now(signum: int) -> None:
    """Delete this process's partial files and exit with 128 + signum, without unwinding."""
    try:
        n = outputs.remove_live_partials(hold=True)
        msg = f"\n{stop_name(signum)} again: stopping at once" + (f"; removed {n} partial file(s)" if n else "") + "\n"
        os.write(2, msg.encode())
    finally:
        os._exit(128 + signum)


def require_torch(command: str) -> None:
    """Stop with one line (exit 1) when PyTorch is missing: `pip install cyclemask` runs exported
    graphs without it; training, export and evaluation come with the torch extra."""
    import importlib.util

    from .errors import ConfigError

    if importlib.util.find_spec("torch") is None:
        raise ConfigError(f"{command} needs PyTorch, which this installation lacks: install the torch build for "
                          "your machine, then pip install 'cyclemask[torch]'")


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
    cvlog.want_quiet(level > logging.DEBUG)


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

        raise_lost_stop()
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


def click_options(options, *, choices: dict | None = None, show_defaults: bool = True):
    """A decorator adding one click option per declared `cyclemask.declare.Option` (those with
    `cli`), in the table's order (the --help order). `choices`: option name -> its choices, for
    those known only to the caller (--precision: the backend registry's). show_defaults: show
    every default but None and a bare flag's; False leaves it to the command's context (and to
    an option's own `show_default`)."""
    def decorate(f):
        for o in reversed(tuple(options)):
            if o.cli:
                f = _click_option(o, (choices or {}).get(o.name), show_defaults)(f)
        return f
    return decorate


def _click_option(o, choices=None, show_defaults=True):
    flag = o.flag or "--" + o.run_field.replace("_", "-")
    kwargs: dict = {"default": o.default, "help": o.help}
    choices = choices if choices is not None else o.choice_values()
    if o.type is bool and o.negatable:
        decls = [f"{flag}/--no-{flag[2:]}"]
    elif o.type is bool:
        decls, kwargs["is_flag"] = [flag], True
    else:
        decls = [flag]
        if choices is not None:
            kwargs["type"] = click.Choice(list(choices))
        elif o.range is not None:
            lo, hi = o.range
            kwargs["type"] = (click.IntRange if o.type is int else click.FloatRange)(lo, hi)
        elif o.type is Path:
            kwargs["type"] = click.Path(path_type=Path)
        else:
            kwargs["type"] = o.type
    show = o.show_default
    if show is None and show_defaults:
        show = o.default is not None and not (o.type is bool and not o.negatable)
    if show is not None:
        kwargs["show_default"] = show
    for name in ("metavar", "envvar"):
        if getattr(o, name) is not None:
            kwargs[name] = getattr(o, name)
    if o.multiple:
        kwargs["multiple"] = True
    return click.option(*decls, o.run_field, **kwargs)
