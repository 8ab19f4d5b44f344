"""Shared fixtures and the skip rules for gpu / trt / shared-data tests.

Tests marked `gpu` need CUDA, `trt` need TensorRT and CUDA, `shared` need ../shared/data:
each is skipped with a printed reason where that is missing (`-ra` shows the reasons).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CYCLEMASK_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
FACE_DETECTOR = SHARED / "models" / "face_detection_yunet_2023mar.onnx"

# Two cores: tests run tiny models, where extra threads only add contention.
torch.set_num_threads(min(2, torch.get_num_threads()))


def cuda_available() -> bool:
    return torch.cuda.is_available()


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def pytest_collection_modifyitems(config, items):
    skip_gpu = None if cuda_available() else pytest.mark.skip(reason="needs a CUDA GPU; torch.cuda.is_available() is False here")
    if not tensorrt_available():
        skip_trt = pytest.mark.skip(reason="needs TensorRT: the tensorrt package is not installed here")
    elif not cuda_available():
        skip_trt = pytest.mark.skip(reason="needs a CUDA GPU for TensorRT; none is present")
    else:
        skip_trt = None
    skip_shared = None if SHARED_DATA.is_dir() else pytest.mark.skip(reason=f"needs the shared data folder {SHARED_DATA}, absent here")
    for item in items:
        if skip_gpu and "gpu" in item.keywords:
            item.add_marker(skip_gpu)
        if skip_trt and "trt" in item.keywords:
            item.add_marker(skip_trt)
        if skip_shared and "shared" in item.keywords:
            item.add_marker(skip_shared)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data folder {SHARED_DATA}, absent here")
    return SHARED_DATA


@pytest.fixture
def face_detector_path() -> Path:
    if not FACE_DETECTOR.is_file():
        pytest.skip(f"needs the YuNet model {FACE_DETECTOR}, absent here")
    return FACE_DETECTOR


@pytest.fixture
def tiny_generator():
    """A small generator (ngf 8, 2 blocks) with seeded weights, in eval mode."""
    from cyclemask.config import GeneratorConfig
    from cyclemask.models import build_generator

    torch.manual_seed(0)
    return build_generator(GeneratorConfig(ngf=8, n_blocks=2)).eval()
