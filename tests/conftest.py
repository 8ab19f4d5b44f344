"""Shared fixtures and the skip rules for gpu / trt / shared-data tests.

Tests marked `gpu` need CUDA, `trt` need TensorRT and CUDA, `shared` need ../shared/data:
each is skipped with a printed reason where that is missing (`-ra` shows the reasons).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CYCLEMASK_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
# The YuNet model ships inside the package; tests use that copy.
FACE_DETECTOR = REPO / "cyclemask" / "assets" / "yunet" / "face_detection_yunet_2023mar.onnx"

# Two cores: tests run tiny models, where extra threads only add contention.
torch.set_num_threads(min(2, torch.get_num_threads()))

# A shell that starts a job in the background without job control (`cmd &` in a script) starts it
# with SIGINT ignored, and Python then never raises KeyboardInterrupt, nor do the runs the tests
# start: every Ctrl-C test would fail for a reason outside the code. Give the suite the SIGINT
# an interactive start has (the children inherit it as the default action).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


#: scripts/device_check.sh sets this on a machine that has torch, numpy and pytest but may lack
#: the project's other dependencies: a test module that cannot import a third-party package is
#: then skipped with the package's name instead of failing collection. Never set in CI, where a
#: missing dependency is a failure.
SKIP_MISSING_DEPS = os.environ.get("CYCLEMASK_SKIP_MISSING_DEPS") == "1"
#: Modules of ours: one of them missing is a failure even then. The test helpers are every
#: module under tests/ (a list by hand missed proc_helpers, video_clips and study_helpers).
_OWN_PACKAGES = ("cyclemask", "benchmarks", "tests",
                 *sorted({p.stem for p in Path(__file__).parent.rglob("*.py") if not p.stem.startswith("test_")}))


def _missing_package(exc: BaseException | None) -> str | None:
    """The third-party package whose absence caused `exc` (following its causes), or None."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            top = exc.name.split(".")[0]
            return None if top in _OWN_PACKAGES else top
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _missing_reason(name: str) -> str:
    return f"needs the Python package {name!r}, not installed here"


class _OptionalDepsModule(pytest.Module):
    def _getobj(self):
        try:
            return super()._getobj()
        except self.CollectError as exc:
            name = _missing_package(exc.__cause__)
            if name is None:
                raise
            raise pytest.skip.Exception(_missing_reason(name), allow_module_level=True) from None


def pytest_pycollect_makemodule(module_path, parent):
    if SKIP_MISSING_DEPS:
        return _OptionalDepsModule.from_parent(parent, path=module_path)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if SKIP_MISSING_DEPS and report.failed and call.excinfo is not None:
        name = _missing_package(call.excinfo.value)
        if name is not None:  # a fixture or test importing a package the machine lacks
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {_missing_reason(name)}")
    return report


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


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own cyclemask cache (compiled OpenVINO models, auto's remembered
    choice): nothing is written to the user's ~/.cache, and no test sees another's choice."""
    monkeypatch.setenv("CYCLEMASK_CACHE_DIR", str(tmp_path_factory.mktemp("cyclemask-cache")))


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
    assert FACE_DETECTOR.is_file(), f"the shipped YuNet model {FACE_DETECTOR} is missing from the checkout"
    return FACE_DETECTOR


@pytest.fixture
def tiny_generator():
    """A small generator (ngf 8, 2 blocks) with seeded weights, in eval mode."""
    from cyclemask.config import GeneratorConfig
    from cyclemask.models import build_generator

    torch.manual_seed(0)
    return build_generator(GeneratorConfig(ngf=8, n_blocks=2)).eval()


class _TinyFeatures(torch.nn.Module):
    """Stands in for the 95 MB Inception network in FID/KID tests: same input, 32-d features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 2).flatten(1)


@pytest.fixture(scope="session")
def tiny_features_path(tmp_path_factory) -> Path:
    """A TorchScript feature extractor file that load_inception accepts."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("feat") / "tiny_features.pt"
    with warnings.catch_warnings():  # torch >= 2.9 marks jit.trace deprecated; we only need a file
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(_TinyFeatures().eval(), torch.zeros(1, 3, 299, 299)).save(str(path))
    return path
