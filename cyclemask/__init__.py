"""cyclemask: CycleGAN generators that put a face mask on a face and take it off again.

Importing the package is cheap and GPU-free: TensorRT and ONNX Runtime are imported lazily by
the code that needs them. `from cyclemask import Masker` is the Python API (cyclemask.engine.api);
it is imported on first use, so `import cyclemask` loads none of the runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Direction names used across the project. "mask" is the paper's G: A (unmasked) -> B (masked);
# "unmask" is F: B -> A.
DIRECTIONS = ("mask", "unmask")

if TYPE_CHECKING:
    from cyclemask.engine.api import Masker

__all__ = ["DIRECTIONS", "Masker", "__version__"]


def __getattr__(name: str) -> Any:
    # The package facade: the API lives in the runtime stage, which imports this module for
    # DIRECTIONS, so it can only be loaded here on first use (PEP 562), never at import time.
    if name == "Masker":
        from cyclemask.engine.api import Masker

        return Masker
    raise AttributeError(f"module 'cyclemask' has no attribute {name!r}")
