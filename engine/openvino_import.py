"""`import openvino` for the runtime, without the parts of the package it never uses. Kept apart
from the backend so that cpu_features can use it without importing the backend."""

from __future__ import annotations

import sys

from cyclemask.errors import own_module_missing


def import_openvino():
    """`import openvino` without its model converter. The package's __init__ imports
    openvino.tools.ovc (convert_model) inside a try/except ImportError; the runtime never
    converts, and that import was half of `import openvino` on every run (1.48 -> 0.75 s median
    of 12 alternating imports, 2 busy cores). A later `import openvino.tools.ovc` still works:
    the block is lifted at once. Should a future openvino need the converter to import, the
    plain import runs instead."""
    loaded = sys.modules.get("openvino")
    if loaded is not None:
        return loaded
    key = "openvino.tools.ovc"
    blocked = key not in sys.modules
    if blocked:
        sys.modules[key] = None  # type: ignore[assignment]  # makes `import` of it raise ImportError
    try:
        import openvino as ov
    except ImportError as exc:
        if not blocked or own_module_missing(exc):
            raise
        sys.modules.pop(key, None)
        blocked = False
        import openvino as ov
    finally:
        if blocked and key in sys.modules and sys.modules[key] is None:
            del sys.modules[key]
    return ov
