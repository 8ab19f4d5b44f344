"""The mask zone: twins' mattes, the zone-weighted L1, the zone PatchGAN, starting from a bundle."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch

from cyclemask.checkpoint import load_generators, read_checkpoint, save_generators
from cyclemask.errors import CheckpointError, ConfigError, DataError
from cyclemask.models import build_generator
from cyclemask.config import GeneratorConfig
from cyclemask.train import TrainConfig, train
from cyclemask.train.datasets import UnpairedDataset, collate, find_domain, find_pairs, matte_path, merge_pairs
from cyclemask.train.plots import read_loss_log
from cyclemask.train.trainer import Trainer

from train_helpers import make_domain, tiny_config


def _twins_with_mattes(root, sources, write_mattes=True):
    """Twins = sources with a white box painted in; mattes/ = that box (255 inside)."""
    shutil.rmtree(root, ignore_errors=True)
    for d in ("without_mask", "with_mask", "mattes"):
        (root / d).mkdir(parents=True)
    for p in sources:
        img = cv2.imread(str(p))
        h, w = img.shape[:2]
        matte = np.zeros((h, w), np.uint8)
        matte[h // 2:, w // 4: 3 * w // 4] = 255
        twin = img.copy()
        twin[matte > 0] = (250, 250, 250)
        shutil.copy(p, root / "without_mask" / p.name)
        cv2.imwrite(str(root / "with_mask" / p.name), twin)
        if write_mattes:
            cv2.imwrite(str(root / "mattes" / p.with_suffix(".png").name), matte)
    return root


def test_matte_path_lies_beside_with_mask(tmp_path):
    assert matte_path(tmp_path / "p" / "with_mask" / "a" / "x.jpg") == tmp_path / "p" / "mattes" / "a" / "x.png"
    assert matte_path(tmp_path / "elsewhere" / "x.jpg") is None


def test_matte_is_cropped_and_flipped_as_its_twin(tmp_path):
    trainA = make_domain(tmp_path / "trainA", 3, seed=1)
    pairs = merge_pairs(trainA, find_pairs(_twins_with_mattes(tmp_path / "pairs", trainA)))
    ds = UnpairedDataset(trainA, [], 40, 32, flip=True, seed=0, pairs=pairs, mattes=True)
    for i in range(8):
        s = ds[(0, i)]
        assert s["A_has_matte"] and s["A_matte"].shape == (1, 32, 32)
        changed = (s["A_twin"] - s["A"]).abs().amax(0) > 0.05
        m = s["A_matte"][0]
        # The twin differs from its source where (and only where) its matte says, up to the
        # resize's one-pixel blur at the box's border.
        assert (m[changed] > 0.2).float().mean() > 0.97
        assert (changed[m > 0.8]).float().mean() > 0.97
    batch = collate([ds[(0, 0)], ds[(0, 1)]])
    assert batch["A_matte"].shape == (2, 1, 32, 32) and batch["A_has_matte"].all()


def test_twin_without_matte_has_none_and_a_run_without_any_refuses(tiny_data, tmp_path):
    trainA = find_domain(tiny_data, "trainA")[:3]
    pdir = _twins_with_mattes(tmp_path / "pairs", trainA)
    (pdir / "mattes" / trainA[0].with_suffix(".png").name).unlink()
    ds = UnpairedDataset(trainA, [], 40, 32, seed=0, pairs=merge_pairs(trainA, find_pairs(pdir)), mattes=True)
    s = ds[(0, 0)]
    assert s["A_paired"] and not s["A_has_matte"] and float(s["A_matte"].abs().sum()) == 0.0
    bare = _twins_with_mattes(tmp_path / "bare", trainA, write_mattes=False)
    with pytest.raises(DataError, match="bare.*no twin has a matte"):
        train(tiny_config(tiny_data, tmp_path / "run", pairs_dir=str(bare), paired_weight=1.0, zone_weight=2.0,
                          max_iters=1))


def test_zone_options_need_twins_and_the_l1_term(tmp_path):
    with pytest.raises(ConfigError, match="need twins with mattes"):
        TrainConfig(data_root=str(tmp_path), zone_gan_weight=1.0)
    with pytest.raises(ConfigError, match="set paired_weight > 0"):
        TrainConfig(data_root=str(tmp_path), pairs_dir=str(tmp_path), zone_weight=2.0)
    with pytest.raises(ConfigError, match="zone_grow"):
        TrainConfig(data_root=str(tmp_path), zone_grow=-1)


def _batch(n=2, size=16):
    g = torch.Generator().manual_seed(0)
    twins = {"A_twin": torch.rand(n, 3, size, size, generator=g) * 2 - 1,
             "A_paired": torch.ones(n, dtype=torch.bool),
             "A_matte": torch.zeros(n, 1, size, size), "A_has_matte": torch.ones(n, dtype=torch.bool)}
    twins["A_matte"][:, :, 8:, 4:12] = 1.0
    return twins


def test_zone_weighted_l1_weighs_the_zone_more(tmp_path):
    cfg = TrainConfig(data_root=str(tmp_path), pairs_dir=str(tmp_path), paired_weight=2.0, zone_weight=3.0,
                      zone_grow=0, ngf=4, ndf=4, n_blocks=1, crop_size=32, load_size=32)
    tr = Trainer(cfg)
    twins = _batch()
    fake = torch.zeros(2, 3, 16, 16)
    zone = tr._zone(twins)
    assert torch.equal(zone, twins["A_matte"])  # zone_grow 0: the matte itself
    got = tr._paired_l1(fake, twins, "A", zone)
    diff = twins["A_twin"].abs()
    want = ((1 + 3.0 * twins["A_matte"]) * diff).mean() * 2.0
    torch.testing.assert_close(got, want)
    assert got > tr._paired_l1(fake, twins, "A") * 1.5  # the plain term is smaller
    grown = Trainer(cfg.replace(zone_grow=2))._zone(twins)
    assert grown[0, 0, 6, 4] == 1.0 and grown[0, 0, 5, 4] == 0.0 and grown[0, 0, 8, 2] == 1.0
    twins["A_has_matte"][1] = False
    assert float(tr._zone(twins)[1].sum()) == 0.0  # a sample without a matte has no zone


def test_zone_pictures_differ_only_inside_the_zone(tmp_path):
    cfg = TrainConfig(data_root=str(tmp_path), pairs_dir=str(tmp_path), zone_gan_weight=1.0, zone_grow=0,
                      ngf=4, ndf=4, n_blocks=1, crop_size=32, load_size=32)
    tr = Trainer(cfg)
    twins = _batch()
    real_A = torch.rand(2, 3, 16, 16) * 2 - 1
    fake_B = torch.rand(2, 3, 16, 16) * 2 - 1
    real_z, fake_z = tr._zone_pictures(real_A, fake_B, twins, tr._zone(twins))
    out = twins["A_matte"].expand(-1, 3, -1, -1) == 0
    assert torch.equal(real_z[out], real_A[out]) and torch.equal(fake_z[out], real_A[out])
    assert torch.equal(real_z[~out], twins["A_twin"][~out]) and torch.equal(fake_z[~out], fake_B[~out])


def test_zone_gan_trains_its_discriminator_and_resumes(tiny_data, tmp_path):
    pdir = _twins_with_mattes(tmp_path / "pairs", find_domain(tiny_data, "trainA")[:4])
    cfg = tiny_config(tiny_data, tmp_path / "run", pairs_dir=str(pdir), paired_weight=5.0, zone_weight=2.0,
                      zone_gan_weight=1.0, n_epochs=1, n_epochs_decay=1, max_iters=3)
    torch.manual_seed(0)
    start = Trainer(cfg).nets["D_zone"].state_dict()
    res = train(cfg)
    state = read_checkpoint(tmp_path / "run" / "latest.pt")
    assert "D_zone" in state["nets"]
    moved = any(not torch.equal(v, start[k]) for k, v in state["nets"]["D_zone"].items() if v.is_floating_point())
    assert moved  # D_zone is in the optimiser
    records = read_loss_log(tmp_path / "run" / "losses.jsonl")
    # Batches with a twin (4 of the 8 trainA faces have one) carry both terms.
    assert any(r["zone_G"] > 0 and r["zone_D"] > 0 for r in records)
    assert all(np.isfinite(r["zone_G"]) and np.isfinite(r["zone_D"]) for r in records)
    assert res.steps == 3 and any(r["pair_A"] > 0 for r in records)
    more = train(cfg.replace(max_iters=5), resume=True)
    assert more.steps == 5  # D_zone's weights and optimiser state load back
    base = train(tiny_config(tiny_data, tmp_path / "base", max_iters=1))
    assert base.last_losses["zone_G"] == 0.0 and base.last_losses["zone_D"] == 0.0
    assert "D_zone" not in read_checkpoint(tmp_path / "base" / "latest.pt")["nets"]


def test_init_from_starts_both_generators_from_a_bundle(tiny_data, tmp_path):
    gcfg = GeneratorConfig(ngf=8, n_blocks=2, norm="instance")
    torch.manual_seed(123)
    gens = {"mask": build_generator(gcfg), "unmask": build_generator(gcfg)}
    save_generators(tmp_path / "g.pt", gens)

    def started(out, **kw):
        tr = Trainer(tiny_config(tiny_data, out, **kw))
        tr._resume(out, False)  # a new run: where the bundle is read
        return tr

    tr = started(tmp_path / "run", init_from=str(tmp_path / "g.pt"))
    for name, d in (("G_A", "mask"), ("G_B", "unmask")):
        for k, v in gens[d].state_dict().items():
            assert torch.equal(tr.nets[name].state_dict()[k], v), (name, k)
    save_generators(tmp_path / "one.pt", {"mask": gens["mask"]})
    with pytest.raises(CheckpointError, match="one.pt.*no unmask generator"):
        started(tmp_path / "r2", init_from=str(tmp_path / "one.pt"))
    with pytest.raises(Exception, match="g.pt"):
        started(tmp_path / "r3", init_from=str(tmp_path / "g.pt"), ngf=4)
    assert load_generators(tmp_path / "g.pt")["mask"].config.ngf == 8


def test_a_fine_tune_resumes_after_its_starting_bundle_is_gone(tiny_data, tmp_path):
    gcfg = GeneratorConfig(ngf=8, n_blocks=2, norm="instance")
    save_generators(tmp_path / "g.pt", {"mask": build_generator(gcfg), "unmask": build_generator(gcfg)})
    cfg = tiny_config(tiny_data, tmp_path / "ft", init_from=str(tmp_path / "g.pt"), max_iters=1)
    train(cfg)
    (tmp_path / "g.pt").rename(tmp_path / "moved.pt")  # the run has its own weights from now on
    assert train(cfg.replace(max_iters=2), resume=True).steps == 2
