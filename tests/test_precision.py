"""cyclemask.precision: TF32 off inside the block on CUDA, the caller's settings back afterwards.
The settings are plain process settings, so this runs without a GPU."""

import pytest
import torch

from cyclemask.precision import IEEE, has_precision_api, ieee_fp32, tf32_settings

TF32 = ("tf32", "tf32") if has_precision_api() else (True, True)


def _set(values):
    if has_precision_api():
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = values
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = values


@pytest.fixture
def tf32_on():
    saved = tf32_settings()
    _set(TF32)
    yield
    _set(saved)


def test_this_torch_has_the_new_api():
    # torch 2.13 is what the project pins for CI: the deprecated flags must not be what is used.
    assert has_precision_api()


def test_cuda_block_runs_ieee_and_restores(tf32_on):
    with ieee_fp32("cuda:0"):
        assert tf32_settings() == IEEE
    assert tf32_settings() == TF32


def test_restored_after_an_error(tf32_on):
    with pytest.raises(RuntimeError):
        with ieee_fp32(torch.device("cuda")):
            raise RuntimeError("inside")
    assert tf32_settings() == TF32


def test_cpu_block_changes_nothing(tf32_on):
    with ieee_fp32("cpu"):
        assert tf32_settings() == TF32
