"""Makes this checkout's `cyclemask` importable without installing it.

scripts/device_check.sh puts this folder on PYTHONPATH on a machine where the package is not
installed: Python imports `sitecustomize` at start-up, and this one adds an import finder that
maps `cyclemask` and its stage packages onto the checkout's folders (cyclemask.train -> train/,
cyclemask.export -> export/, cyclemask.engine -> engine/), as the editable install's finder
does. Nothing is installed or written.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAPPING = {
    "cyclemask": REPO / "cyclemask",
    "cyclemask.train": REPO / "train",
    "cyclemask.export": REPO / "export",
    "cyclemask.engine": REPO / "engine",
}


class CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds the mapped packages; their submodules are found through the package's __path__."""

    def find_spec(self, fullname, path=None, target=None):
        where = MAPPING.get(fullname)
        if where is None or not (where / "__init__.py").is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, where / "__init__.py",
                                                      submodule_search_locations=[str(where)])


if not any(isinstance(f, CheckoutFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, CheckoutFinder())
