"""cyclemask.precision: TF32 off inside the block on CUDA, the caller's flags back afterwards.
The flags are plain process settings, so this runs without a GPU."""

import pytest
import torch

from cyclemask.precision import ieee_fp32


@pytest.fixture
def tf32_on():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_cuda_block_runs_ieee_and_restores(tf32_on):
    with ieee_fp32("cuda:0"):
        assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32


def test_restored_after_an_error(tf32_on):
    with pytest.raises(RuntimeError):
        with ieee_fp32(torch.device("cuda")):
            raise RuntimeError("inside")
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32


def test_cpu_block_changes_nothing(tf32_on):
    with ieee_fp32("cpu"):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
