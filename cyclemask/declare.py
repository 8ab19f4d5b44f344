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
    # backend options: backend name -> its constructor's keyword, or (keyword, conversion of the
    # value); {}: only `create_backend`'s choice reads it
    backends: dict[str, Any] = _field(default_factory=dict)
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    range: tuple[float | None, float | None] | None = None  # (min, max), either open (None)
    flag: str | None = None  # default: --name-with-dashes (of `run_field`)
    field: str | None = None  # the CLI parameter / RunOptions field when it differs (--size -> image_size)
    negatable: bool = False  # bool: --x/--no-x rather than a bare flag
    optional: bool = False  # the default None means "the backend's own choice"
    cli: bool = True  # False: set by the run from other options (max_batch from --batch)
    group: str | None = None  # which settings object it fills (cyclemask-export: "build", "int8", ...)
    metavar: str | None = None
    multiple: bool = False  # repeatable: a tuple of values
    envvar: str | None = None
    show_default: bool | None = None  # None: shown unless it is None or a bare flag

    @property
    def run_field(self) -> str:
        return self.field or self.name

    @property
    def annotation(self) -> Any:
        return self.type | None if self.optional else self.type

    def choice_values(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices


