"""What every cyclemask CLI shares: user errors become one line and exit status 1 (no
traceback unless --debug), usage errors stay click's exit status 2, and logging is set up once.

Use `@click.command(cls=Command)` / `@click.group(cls=Group)` and `@debug_option`.
"""

from __future__ import annotations

import logging

import click

from .errors import CycleMaskError

_DEBUG_KEY = "cyclemask.debug"


def _reraise_as_click(ctx: click.Context, exc: CycleMaskError):
    if ctx.find_root().meta.get(_DEBUG_KEY):
        raise exc
    raise click.ClickException(str(exc)) from None


class Command(click.Command):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CycleMaskError as exc:
            _reraise_as_click(ctx, exc)


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CycleMaskError as exc:
            _reraise_as_click(ctx, exc)


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
