"""cyclemask: CycleGAN generators that put a face mask on a face and take it off again.

Importing the package is cheap and GPU-free: TensorRT and ONNX Runtime are imported lazily by
the code that needs them.
"""

__version__ = "0.1.0"

# Direction names used across the project. "mask" is the paper's G: A (unmasked) -> B (masked);
# "unmask" is F: B -> A.
DIRECTIONS = ("mask", "unmask")
