"""Shared fixtures and the skip rules for gpu / trt / shared-data tests.

Tests marked `gpu` need CUDA, `trt` need TensorRT and CUDA, `shared` need ../shared/data:
each is skipped with a printed reason where that is missing (`-ra` shows the reasons).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
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
    isolate = not os.environ.get(_ISOLATED_ENV)
    for item in items:
        if isolate and "isolated" in item.keywords:
            item.runtest = _in_fresh_interpreter(item)
        if skip_gpu and "gpu" in item.keywords:
            item.add_marker(skip_gpu)
        if skip_trt and "trt" in item.keywords:
            item.add_marker(skip_trt)
        if skip_shared and "shared" in item.keywords:
            item.add_marker(skip_shared)


_ISOLATED_ENV = "CYCLEMASK_TEST_ISOLATED"


def _in_fresh_interpreter(item):
    """Run one test in its own Python process. Used for tests that train in-process after
    the rest of the suite has loaded native runtimes (OpenVINO, ONNX Runtime, inductor) into
    this process: that combination crashed the interpreter (SIGSEGV) in the full suite, while
    each part passes alone. A fresh process gives the test what a user's run has."""

    def runtest():
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", item.nodeid]
        env = {**os.environ, _ISOLATED_ENV: "1"}
        proc = subprocess.run(cmd, cwd=str(item.config.rootpath), env=env, capture_output=True,
                              text=True, timeout=900)
        out = proc.stdout + proc.stderr
        if proc.returncode == 0 and " skipped" in out and " passed" not in out:
            pytest.skip(f"skipped in its own process: {out.strip().splitlines()[-1]}")
        if proc.returncode != 0:
            pytest.fail(f"failed in its own process (exit {proc.returncode}):\n{out[-4000:]}", pytrace=False)

    return runtest


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
