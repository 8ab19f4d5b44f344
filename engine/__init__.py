"""Runtime: inference backends, the batched pipeline, sources and sinks, faces, the `run` CLI.

Imports the core only (never export, train or metrics) and no torch unless a checkpoint or a
TensorRT engine is run: `pip install cyclemask` runs exported graphs with ONNX Runtime or
OpenVINO without it. See docs/ARCHITECTURE.md.
"""
