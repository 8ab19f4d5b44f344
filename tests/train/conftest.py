"""Fixtures for the trainer's tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from train_helpers import make_domain


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """data/trainA (8), trainB (8), testA (3), testB (3)."""
    root = tmp_path / "data"
    make_domain(root / "trainA", 8, seed=1)
    make_domain(root / "trainB", 8, seed=2)
    make_domain(root / "testA", 3, seed=3)
    make_domain(root / "testB", 3, seed=4)
    return root


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: a second intra-op thread only adds synchronisation, and on a shared
    2-core machine spinning OpenMP threads make each iteration tens of times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
