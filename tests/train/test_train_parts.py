"""Losses, image pool, schedules, datasets and sampler of the trainer."""

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cyclemask.errors import ConfigError, DataError
from cyclemask.models import build_discriminator
from cyclemask.config import DiscriminatorConfig
from cyclemask.train.datasets import (EpochSampler, UnpairedDataset, augment, collate, find_domain,
                                      load_sample_images, resize_bicubic)
from cyclemask.train.losses import GANLoss, gradient_penalty
from cyclemask.train.pool import ImagePool
from cyclemask.train.schedules import build_scheduler, lr_factor

from train_helpers import make_domain


# ------------------------------------------------------------------ losses

def test_lsgan_is_mse_to_one_and_zero():
    pred = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    loss = GANLoss("lsgan")
    assert loss(pred, True).item() == pytest.approx(((pred - 1) ** 2).mean().item())
    assert loss(pred, False).item() == pytest.approx((pred ** 2).mean().item())


def test_vanilla_is_log_loss_on_logits():
    pred = torch.tensor([0.3, -2.0, 5.0])
    p = torch.sigmoid(pred)
    assert GANLoss("vanilla")(pred, True).item() == pytest.approx(-torch.log(p).mean().item(), rel=1e-5)
    assert GANLoss("vanilla")(pred, False).item() == pytest.approx(-torch.log(1 - p).mean().item(), rel=1e-5)
    # Logits far out of range stay finite (no sigmoid-then-log).
    assert math.isfinite(GANLoss("vanilla")(torch.tensor([-200.0]), True).item())


def test_wgan_signs():
    pred = torch.tensor([1.0, 3.0])
    assert GANLoss("wgangp")(pred, True).item() == -2.0
    assert GANLoss("wgangp")(pred, False).item() == 2.0


def test_unknown_gan_mode():
    with pytest.raises(ConfigError, match="gan_mode must be one of"):
        GANLoss("hinge")


def test_gradient_penalty_is_reproducible_and_differentiable():
    torch.manual_seed(0)
    d = build_discriminator(DiscriminatorConfig(ndf=8))
    real, fake = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    gp1 = gradient_penalty(d, real, fake, torch.Generator().manual_seed(3))
    gp2 = gradient_penalty(d, real, fake, torch.Generator().manual_seed(3))
    assert gp1.item() == gp2.item() and gp1.item() > 0
    gp1.backward()
    assert d.model[0].weight.grad is not None and d.model[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ pool

def test_pool_size_zero_passes_through():
    x = torch.rand(3, 3, 4, 4)
    assert ImagePool(0).query(x) is x


def test_pool_fills_then_mixes_old_and_new():
    pool = ImagePool(4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    assert torch.equal(pool.query(first), first)  # filling: returned as given
    new = torch.full((64, 3, 2, 2), 100.0)
    out = pool.query(new)
    values = set(out[:, 0, 0, 0].tolist())
    assert 100.0 in values and values & {0.0, 1.0, 2.0, 3.0}  # about half come from the pool
    assert len(pool.images) == 4


def test_pool_state_round_trip_continues_identically():
    a = ImagePool(3, seed=5)
    a.query(torch.rand(5, 3, 2, 2))
    state = a.state_dict()
    b = ImagePool(3, seed=99)
    b.load_state_dict(state)
    x = torch.rand(6, 3, 2, 2)
    assert torch.equal(a.query(x), b.query(x))


# ------------------------------------------------------------------ schedules

def test_linear_policy_matches_the_reference_rule():
    f = lr_factor("linear", n_epochs=3, n_epochs_decay=4)
    assert [f(e) for e in range(3)] == [1.0, 1.0, 1.0]
    assert [round(f(e), 6) for e in range(3, 7)] == [0.8, 0.6, 0.4, 0.2]
    assert f(7) == pytest.approx(0.0)  # the epoch after the last


def test_cosine_policy_goes_from_one_to_zero_over_all_epochs():
    f = lr_factor("cosine", 2, 2)
    assert f(0) == 1.0 and f(2) == pytest.approx(0.5) and f(4) == pytest.approx(0.0)
    assert all(f(e) > f(e + 1) for e in range(4))


def test_scheduler_steps_per_epoch_and_saves_no_function():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=2e-4)
    s = build_scheduler(opt, "linear", 1, 1)
    assert opt.param_groups[0]["lr"] == 2e-4
    opt.step()
    s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert s.state_dict()["lr_lambdas"] == [None]


def test_unknown_policy():
    with pytest.raises(ConfigError, match="lr_policy must be one of linear, cosine"):
        lr_factor("step", 1, 1)


# ------------------------------------------------------------------ data

def test_find_domain_errors_before_training(tmp_path):
    with pytest.raises(DataError, match=r"trainA: no such folder \(trainA/ holds domain A"):
        find_domain(tmp_path, "trainA")
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainA" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"trainA: no images found \(searched recursively"):
        find_domain(tmp_path, "trainA")
    assert find_domain(tmp_path, "testA", required=False) == []


def test_find_domain_is_recursive_and_sorted(tmp_path):
    make_domain(tmp_path / "trainA", 4, seed=0, nested=True)
    paths = find_domain(tmp_path, "trainA")
    assert len(paths) == 4 and paths == sorted(paths)
    assert {p.parent.name for p in paths} == {"sub0", "sub1"}
    assert len(find_domain(tmp_path, "trainA", max_size=3)) == 3


def test_augment_shapes_range_and_determinism():
    img = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    a = augment(img, 36, 32, True, np.random.default_rng([0, 1, 2]))
    b = augment(img, 36, 32, True, np.random.default_rng([0, 1, 2]))
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    # Crops and flips differ across seeds.
    outs = {augment(img, 36, 32, True, np.random.default_rng([0, 1, k])).sum().item() for k in range(6)}
    assert len(outs) > 1


def test_no_crop_no_flip_is_the_resized_image():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = augment(img, 32, 32, False, np.random.default_rng(0))
    assert torch.allclose((out + 1) * 127.5, torch.from_numpy(img).permute(2, 0, 1).float(), atol=1e-4)


def test_resize_is_antialiased_bicubic():
    # A one-pixel checkerboard shrunk 4x averages to grey (aliasing would keep black/white).
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    small = resize_bicubic(board, 16)
    assert small.shape == (3, 16, 16)
    assert abs(small.float().mean().item() - 127.5) < 3 and small.float().std().item() < 10


def test_dataset_converts_formats_and_skips_unreadable_files(tmp_path):
    a = make_domain(tmp_path / "A", 3, seed=0)
    b = make_domain(tmp_path / "B", 2, seed=1)
    gray = tmp_path / "A" / "gray.png"
    cv2.imwrite(str(gray), np.full((20, 20), 128, np.uint8))
    rgba = tmp_path / "A" / "rgba.png"
    cv2.imwrite(str(rgba), np.full((20, 20, 4), 200, np.uint8))
    bad = tmp_path / "A" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    paths_A = sorted([*a, gray, rgba, bad])
    ds = UnpairedDataset(paths_A, b, 36, 32, flip=True, seed=0)
    assert len(ds) == 6
    items = [ds[(0, i)] for i in range(len(ds))]
    for item in items:
        assert item["A"].shape == (3, 32, 32) and item["B"].shape == (3, 32, 32)
    skipped = [m for it in items for m in it["skipped"]]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0] and "truncated JPEG" in skipped[0]
    batch = collate(items[:3])
    assert batch["A"].shape == (3, 3, 32, 32)
    # Same key, same sample (whichever process loads it).
    assert torch.equal(UnpairedDataset(paths_A, b, 36, 32, seed=0)[(2, 1)]["A"], ds[(2, 1)]["A"])


def test_domain_with_no_readable_image(tmp_path):
    (tmp_path / "A").mkdir()
    bad = tmp_path / "A" / "x.png"
    bad.write_bytes(b"junk")
    b = make_domain(tmp_path / "B", 1, seed=1)
    with pytest.raises(DataError, match="domain A: none of its 1 images can be read"):
        UnpairedDataset([bad], b, 36, 32)[(0, 0)]


def test_sampler_shards_one_permutation_and_resumes_mid_epoch():
    data = list(range(8))
    single = EpochSampler(data, 1, 0, seed=3)
    single.set_epoch(2)
    order = [i for _, i in single]
    assert sorted(order) == data
    shards = []
    for r in range(2):
        s = EpochSampler(data, 2, r, seed=3)
        s.set_epoch(2)
        shards.append([i for _, i in s])
    # Global batch 4 = two ranks x 2: each step covers the same 4 samples as the single run.
    for k in range(2):
        assert sorted(shards[0][2 * k:2 * k + 2] + shards[1][2 * k:2 * k + 2]) == sorted(order[4 * k:4 * k + 4])
    single.set_epoch(2, start=5)
    assert [i for _, i in single] == order[5:] and len(single) == 3
    assert all(e == 2 for e, _ in single)
    single.set_epoch(3)
    assert [i for _, i in single] != order


def test_sample_images_prefer_test_split(tiny_data):
    s = load_sample_images(tiny_data, 32, 2)
    assert s.source == "test" and s.A.shape == (2, 32, 32, 3) and s.A.dtype == np.uint8
    import shutil
    shutil.rmtree(tiny_data / "testB")
    s = load_sample_images(tiny_data, 32, 2)
    assert s.source == "train" and s.B.shape == (2, 32, 32, 3)
    assert load_sample_images(tiny_data, 32, 0) is None
