"""Inference backends: one interface over PyTorch, ONNX Runtime, OpenVINO and TensorRT.

`base` holds the interface (`Backend`, `SyncBackend`, `BackendOptions`), one module per backend
holds its implementation (`torch`, `ort`, `openvino`, `trt`), and `select` the registry,
`create_backend` and the `auto` choice. See docs/ARCHITECTURE.md.
"""

from .base import Backend, BackendOptions, SyncBackend
from .openvino import OpenVinoBackend
from .ort import ORT_PROVIDERS, OrtBackend
from .select import BACKEND_NAMES, REGISTRY, BackendSpec, create_backend, cuda_gpu_present, model_kind
from .torch import TorchBackend
from .trt import TrtBackend, tensorrt_status

__all__ = [
    "BACKEND_NAMES", "ORT_PROVIDERS", "REGISTRY", "Backend", "BackendOptions", "BackendSpec", "OpenVinoBackend",
    "OrtBackend", "SyncBackend", "TorchBackend", "TrtBackend", "create_backend", "cuda_gpu_present", "model_kind",
    "tensorrt_status",
]
