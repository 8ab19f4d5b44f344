"""Paired training (a cyclemask extension): pairs folders, twin crops, the paired L1 term."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from cyclemask.errors import ConfigError, DataError
from cyclemask.train import TrainConfig, train
from cyclemask.train.datasets import UnpairedDataset, collate, find_domain, find_pairs, merge_pairs
from cyclemask.train.plots import read_loss_log

from train_helpers import make_domain, tiny_config


def _pairs_dir(root, sources, seed=7):
    """A pairs folder: without_mask/ = copies of sources, with_mask/ = other images, same names."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "without_mask").mkdir(parents=True)
    for p in sources:
        shutil.copy(p, root / "without_mask" / p.name)
    others = make_domain(root / "tmp", len(sources), seed=seed)
    (root / "with_mask").mkdir()
    for p, o in zip(sources, others):
        shutil.move(o, root / "with_mask" / p.name)
    shutil.rmtree(root / "tmp")
    return root


def test_find_pairs_matches_names_and_refuses_non_pairs(tmp_path):
    src = make_domain(tmp_path / "src", 3, seed=1)
    pairs = find_pairs(_pairs_dir(tmp_path / "pairs", src))
    assert [(a.name, b.name) for a, b in pairs] == [(p.name, p.name) for p in src]
    assert all(a.parent.name == "without_mask" and b.parent.name == "with_mask" for a, b in pairs)
    with pytest.raises(DataError, match="not a pairs folder"):
        find_pairs(tmp_path / "src")
    (tmp_path / "lonely" / "without_mask").mkdir(parents=True)
    (tmp_path / "lonely" / "with_mask").mkdir()
    make_domain(tmp_path / "lonely" / "without_mask", 1, seed=3)
    with pytest.raises(DataError, match="no pairs"):
        find_pairs(tmp_path / "lonely")


def test_pair_sources_already_in_domain_a_are_one_sample(tmp_path):
    trainA = make_domain(tmp_path / "trainA", 4, seed=1)
    pairs = merge_pairs(trainA, find_pairs(_pairs_dir(tmp_path / "pairs", trainA[:2])))
    assert [a for a, _ in pairs] == trainA[:2]  # re-pointed at the identical trainA files
    ds = UnpairedDataset(trainA, make_domain(tmp_path / "trainB", 2, seed=2), 36, 32, pairs=pairs)
    assert len(ds.paths_A) == 4 and len(ds.paths_B) == 4  # A not doubled; twins join B


def test_twin_gets_the_same_crop_and_flip(tmp_path):
    trainA = make_domain(tmp_path / "trainA", 3, seed=1)
    pdir = tmp_path / "pairs"
    (pdir / "without_mask").mkdir(parents=True)
    (pdir / "with_mask").mkdir()
    for p in trainA:  # twins identical to their sources: any crop mismatch shows as a difference
        shutil.copy(p, pdir / "without_mask" / p.name)
        shutil.copy(p, pdir / "with_mask" / p.name)
    ds = UnpairedDataset(trainA, [], 40, 32, flip=True, seed=0, pairs=merge_pairs(trainA, find_pairs(pdir)))
    paired_b = 0
    for i in range(12):
        s = ds[(0, i)]
        assert bool(s["A_paired"])
        torch.testing.assert_close(s["A_twin"], s["A"], rtol=0, atol=0)
        if s["B_paired"]:
            paired_b += 1
            torch.testing.assert_close(s["B_twin"], s["B"], rtol=0, atol=0)
    assert paired_b == 12  # every B is a twin here
    batch = collate([ds[(0, 0)], ds[(0, 1)]])
    assert batch["A_twin"].shape == batch["A"].shape and batch["A_paired"].dtype == torch.bool


def test_unpaired_samples_are_unchanged_by_the_pairs_code(tmp_path):
    trainA = make_domain(tmp_path / "trainA", 3, seed=1)
    trainB = make_domain(tmp_path / "trainB", 3, seed=2)
    plain = UnpairedDataset(trainA, trainB, 36, 32, seed=5)[(1, 2)]
    assert "A_twin" not in plain  # no pairs: the batch is what it always was


def test_paired_weight_needs_a_pairs_folder(tmp_path):
    with pytest.raises(ConfigError, match="needs pairs_dir"):
        TrainConfig(data_root=str(tmp_path), paired_weight=5.0)


def test_paired_term_is_logged_only_when_weighted(tiny_data, tmp_path):
    pdir = _pairs_dir(tmp_path / "pairs", find_domain(tiny_data, "trainA")[:4])
    res = train(tiny_config(tiny_data, tmp_path / "run", pairs_dir=str(pdir), paired_weight=10.0,
                            n_epochs=1, n_epochs_decay=0))
    records = read_loss_log(tmp_path / "run" / "losses.jsonl")
    # 8 trainA (4 of them paired), 8 trainB + 4 twins: 12 samples, batch 2.
    assert res.steps == 6 and all(np.isfinite(r["pair_A"]) and np.isfinite(r["pair_B"]) for r in records)
    assert any(r["pair_A"] > 0 for r in records) and any(r["pair_B"] > 0 for r in records)
    base = train(tiny_config(tiny_data, tmp_path / "base", n_epochs=1, n_epochs_decay=0))
    assert base.last_losses["pair_A"] == 0.0 and base.last_losses["pair_B"] == 0.0


def test_mask_pairs_give_the_mask_direction_its_twins(tmp_path):
    trainA = make_domain(tmp_path / "trainA", 3, seed=1)
    both = merge_pairs(trainA, find_pairs(_pairs_dir(tmp_path / "pairs", trainA, seed=7)))
    one_style = merge_pairs(trainA, find_pairs(_pairs_dir(tmp_path / "blue", trainA, seed=8)))
    ds = UnpairedDataset(trainA, [], 36, 32, seed=0, pairs=both, mask_pairs=one_style)
    assert len(ds.paths_A) == 3 and len(ds.paths_B) == 6  # both twin sets join B, A is not doubled
    for a, b in one_style:
        assert ds.twin_of_A[str(a)] == str(b)  # G_mask's target: the consistent style
    for a, b in both + one_style:
        assert ds.twin_of_B[str(b)] == str(a)  # G_unmask learns from every twin


def test_mask_pairs_alone_enable_the_paired_term(tmp_path):
    TrainConfig(data_root=str(tmp_path), mask_pairs_dir=str(tmp_path), paired_weight=1.0)  # no error
