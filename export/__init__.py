"""Export: ONNX graphs (FP32, FP16), TensorRT engines, artefact metadata and verification."""
