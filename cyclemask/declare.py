"""A command-line option declared once: its name, type, default and help.

A table of `Option`s generates a dataclass's fields and the click flags that fill them
(`cyclemask.cli_util.click_options`), so a setting is written in one place: the backend
options (engine/backends/options.py) and cyclemask-export's (export/options.py). Nothing here
imports click.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    name: str  # the settings field (BackendOptions: each backend's keyword unless `backends` renames it)
    type: type  # bool, int, float or str
    default: Any
    help: str
    # Who takes it: a consumer's name (a backend; for cyclemask-export a settings object) -> its
    # keyword, or (keyword, conversion of the value). Backend options: {} when only
    # `create_backend`'s choice reads it.
    backends: dict[str, Any] = _field(default_factory=dict)
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    range: tuple[float | None, float | None] | None = None  # (min, max), either open (None)
    flag: str | None = None  # default: --name-with-dashes (of `run_field`)
    field: str | None = None  # the CLI parameter / RunOptions field when it differs (--size -> image_size)
    negatable: bool = False  # bool: --x/--no-x rather than a bare flag
    optional: bool = False  # the default None means "the backend's own choice"
    cli: bool = True  # False: set by the run from other options (max_batch from --batch)
    metavar: str | None = None
    multiple: bool = False  # repeatable: a tuple of values
    envvar: str | None = None
    show_default: bool | None = None  # None: the table's rule (see cli_util.click_options)

    @property
    def run_field(self) -> str:
        return self.field or self.name

    @property
    def annotation(self) -> Any:
        return self.type | None if self.optional else self.type

    def choice_values(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices




def keywords_for(options, values, consumer: str, **convert) -> dict[str, Any]:
    """The keyword arguments `consumer` takes from `values` (an object with one attribute per
    option, by `name`). `convert` maps a keyword to a function of the value where the consumer
    resolves it first."""
    out = {}
    for o in options:
        target = o.backends.get(consumer)
        if target is None:
            continue
        name, conv = (target, None) if isinstance(target, str) else target
        value = getattr(values, o.name)
        value = conv(value) if conv is not None else value
        out[name] = convert[name](value) if name in convert else value
    return out
