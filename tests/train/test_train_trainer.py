"""The training loop: outputs, resume exactness, checkpoints, refusals."""

import json
import os

import numpy as np
import pytest
import torch

from cyclemask.checkpoint import load_generators, read_checkpoint
from cyclemask.errors import CheckpointError, ConfigError, DataError
from cyclemask.image_tensors import eager_translate
from cyclemask.train import LOSS_NAMES, TrainConfig, train
from cyclemask.train.checkpointing import read_train_state
from cyclemask.train.plots import read_loss_log
from cyclemask.train.trainer import Trainer

from train_helpers import make_domain, tiny_config

LOSS_KEYS = (*LOSS_NAMES, "step", "epoch", "iter", "lr")


def _losses(path):
    return [{k: r[k] for k in LOSS_KEYS} for r in read_loss_log(path)]


def test_short_run_writes_every_output(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run")
    seen = []
    result = train(cfg, progress=seen.append)
    out = tmp_path / "run"
    # 8 samples / batch 2 = 4 iterations per epoch, 3 epochs.
    assert result.steps == 12 and result.epochs_completed == 3 and result.stopped == "completed"
    assert [p.step for p in seen] == list(range(1, 13))
    assert seen[-1].total_steps == 12 and seen[-1].iters_per_epoch == 4 and seen[-1].images_per_s > 0
    assert TrainConfig.from_json(out / "config.json") == cfg
    records = read_loss_log(out / "losses.jsonl")
    assert [r["step"] for r in records] == list(range(1, 13))
    assert all(np.isfinite(r[k]) for r in records for k in LOSS_NAMES)
    assert set(result.last_losses) == set(LOSS_NAMES)
    # Linear policy, 2 + 1 epochs: epoch 3 runs at half the rate.
    assert [r["lr"] for r in records if r["epoch"] == 3] == [pytest.approx(1e-4)] * 4
    names = sorted(p.name for p in out.iterdir())
    for expected in ("latest.pt", "epoch_0002.pt", "epoch_0003.pt", "generators.pt",
                     "generators_epoch_0002.pt", "losses.png", "samples"):
        assert expected in names
    assert "epoch_0001.pt" not in names  # save_every 2 (and the last epoch)
    assert [p.name for p in result.sample_grids] == ["epoch_0001.png", "epoch_0002.png", "epoch_0003.png"]
    assert not [n for n in names if n.endswith(".tmp")]


def test_checkpoint_is_safe_to_load_and_complete(tiny_data, tmp_path):
    train(tiny_config(tiny_data, tmp_path / "run", n_epochs=1, n_epochs_decay=0))
    state = read_checkpoint(tmp_path / "run" / "latest.pt")  # weights_only=True inside
    assert state["format"] == "cyclemask.train_state" and state["step"] == 4
    assert set(state["nets"]) == {"G_A", "G_B", "D_A", "D_B"}
    assert set(state["optimizers"]) == {"G", "D"} and set(state["schedulers"]) == {"G", "D"}
    rank0 = state["rank_states"][0]
    assert len(rank0["pool_A"]["images"]) == 8 and set(rank0["rng"]) >= {"torch", "numpy", "python"}
    assert TrainConfig.from_dict(state["config"]).ngf == 8
    # The whole file loads under the strict unpickler.
    torch.load(tmp_path / "run" / "latest.pt", weights_only=True)


def test_generator_bundle_is_what_training_produced(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run", n_epochs=1, n_epochs_decay=0)
    train(cfg)
    gens = load_generators(tmp_path / "run" / "generators.pt")
    assert set(gens) == {"mask", "unmask"}
    state = read_train_state(tmp_path / "run" / "latest.pt")
    trainer = Trainer(cfg)
    trainer.load_state(state)
    batch = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(eager_translate(gens["mask"].generator, batch), eager_translate(trainer.nets["G_A"].eval(), batch))
    assert np.array_equal(eager_translate(gens["unmask"].generator, batch), eager_translate(trainer.nets["G_B"].eval(), batch))


@pytest.mark.slow  # two training runs (~15 s); test_resume_after_a_crash_drops_unsaved_records_and_replays_them checks resuming fast
def test_resume_after_a_clean_stop_logs_the_same_losses(tiny_data, tmp_path):
    # A pool smaller than the run makes the pool's random draws matter after the resume.
    cfg = tiny_config(tiny_data, tmp_path / "full", pool_size=3, save_latest_every=5)
    train(cfg)
    part = cfg.replace(out_dir=str(tmp_path / "part"), max_iters=6)
    first = train(part)
    assert first.stopped == "max_iters" and first.steps == 6
    state = read_train_state(tmp_path / "part" / "latest.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 2)  # mid-epoch
    second = train(part.replace(max_iters=None), resume=True)
    assert second.steps == 12 and second.stopped == "completed"
    assert _losses(tmp_path / "part" / "losses.jsonl") == _losses(tmp_path / "full" / "losses.jsonl")
    a = read_checkpoint(tmp_path / "full" / "latest.pt")["nets"]
    b = read_checkpoint(tmp_path / "part" / "latest.pt")["nets"]
    assert all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])


def test_resume_after_a_crash_drops_unsaved_records_and_replays_them(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "full", pool_size=3, save_latest_every=5)
    train(cfg)
    crash_cfg = cfg.replace(out_dir=str(tmp_path / "crash"))

    def crash(info):
        # Saves happen at step 4 (epoch end) and 5 (save_latest_every): steps 6-7 are logged,
        # not saved, when the run dies.
        if info.step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(crash_cfg, progress=crash)
    assert len(read_loss_log(tmp_path / "crash" / "losses.jsonl")) == 7
    assert read_train_state(tmp_path / "crash" / "latest.pt")["step"] == 5
    train(crash_cfg, resume=True)
    assert _losses(tmp_path / "crash" / "losses.jsonl") == _losses(tmp_path / "full" / "losses.jsonl")


def test_a_failed_save_leaves_the_previous_checkpoint(tiny_data, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_data, tmp_path / "run", n_epochs=1, n_epochs_decay=1)
    out = tmp_path / "run"
    calls = {"n": 0}
    real_replace = os.replace

    def flaky_replace(src, dst):
        # Let the first epoch's files through, then fail as a kill during the rename would.
        if str(dst).endswith("latest.pt"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(CheckpointError, match=r"latest.pt: cannot write \(disk full\) at step 8; "
                                              r"the previous files are intact \(last complete save: step 4\)"):
        train(cfg)
    state = read_train_state(out / "latest.pt")
    assert state["step"] == 4 and state["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_refuses_to_overwrite_a_run(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run", n_epochs=1, n_epochs_decay=0)
    train(cfg)
    before = (tmp_path / "run" / "latest.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a run .*latest.pt.*resume it \(--resume\)"):
        train(cfg)
    assert (tmp_path / "run" / "latest.pt").read_bytes() == before


def test_resume_refuses_a_different_model(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run", n_epochs=1, n_epochs_decay=0)
    train(cfg)
    with pytest.raises(ConfigError, match="cannot resume with a different config.*ngf: checkpoint 8, now 16"):
        train(cfg.replace(ngf=16), resume=True)
    with pytest.raises(CheckpointError, match="nothing.pt: no checkpoint to resume from"):
        train(cfg, resume=str(tmp_path / "nothing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        train(cfg, resume=str(tmp_path / "junk.pt"))


@pytest.mark.slow  # a full training run first (~7 s); test_resume_after_a_crash_drops_unsaved_records_and_replays_them checks resuming fast
def test_resume_of_a_finished_run_does_nothing(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run", n_epochs=1, n_epochs_decay=0)
    train(cfg)
    r = train(cfg, resume=True)
    assert r.steps == 4 and r.stopped == "completed"
    assert len(read_loss_log(tmp_path / "run" / "losses.jsonl")) == 4


def test_empty_domain_fails_before_writing(tmp_path):
    make_domain(tmp_path / "data" / "trainA", 2, seed=0)
    (tmp_path / "data" / "trainB").mkdir()
    with pytest.raises(DataError, match=r"trainB: no images found"):
        train(tiny_config(tmp_path / "data", tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="data_root is not set"):
        train(TrainConfig(out_dir=str(tmp_path / "run")))


def test_unreadable_images_are_reported_once_and_skipped(tiny_data, tmp_path, caplog):
    (tiny_data / "trainA" / "broken.png").write_bytes(b"not a png")
    cfg = tiny_config(tiny_data, tmp_path / "run", n_epochs=2, n_epochs_decay=0, n_samples=0)
    with caplog.at_level("WARNING"):
        result = train(cfg)
    assert result.stopped == "completed" and result.steps == 10  # 9 A images -> 5 batches
    assert len(result.skipped_files) == 1 and "broken.png: not a decodable image" in result.skipped_files[0]
    assert sum("broken.png" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.slow  # three trainings (~4 s each); test_short_run_writes_every_output trains the default fast
@pytest.mark.parametrize("overrides", [
    dict(gan_mode="vanilla", lr_policy="cosine"),
    dict(gan_mode="wgangp", norm="batch"),
    dict(lambda_identity=0.0, flip=False, channels_last=True),
])
def test_paper_variants_train(tiny_data, tmp_path, overrides):
    cfg = tiny_config(tiny_data, tmp_path / "run", n_epochs=1, n_epochs_decay=1, n_samples=0, **overrides)
    result = train(cfg)
    records = read_loss_log(tmp_path / "run" / "losses.jsonl")
    assert result.steps == 8 and all(np.isfinite(r[k]) for r in records for k in LOSS_NAMES)
    if overrides.get("lambda_identity") == 0.0:
        assert all(r["idt_A"] == 0.0 and r["idt_B"] == 0.0 for r in records)
    if overrides.get("lr_policy") == "cosine":
        assert [r["lr"] for r in records if r["epoch"] == 2] == [pytest.approx(1e-4)] * 4
    if overrides.get("norm") == "batch":
        gens = load_generators(tmp_path / "run" / "generators.pt")
        assert gens["mask"].config.norm == "batch"


def test_time_budget_stops_and_saves(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run", n_epochs=50, n_epochs_decay=0, time_budget_s=1e-3,
                      n_samples=0)
    result = train(cfg)
    assert result.stopped == "time_budget" and result.steps == 1
    assert read_train_state(tmp_path / "run" / "latest.pt")["step"] == 1


def test_global_batch_must_split_evenly():
    from cyclemask.train.distributed import DistEnv

    with pytest.raises(ConfigError, match="batch_size 3 is the global batch and must divide evenly among the 2"):
        Trainer(TrainConfig(batch_size=3, ngf=8, ndf=8, n_blocks=1), DistEnv(0, 2, 0))
    with pytest.raises(ConfigError, match="syncbatch' needs CUDA"):
        Trainer(TrainConfig(norm="syncbatch", ngf=8, ndf=8, n_blocks=1), DistEnv(0, 2, 0))


def test_dataloader_workers_do_not_change_the_batches(tiny_data, tmp_path):
    # Augmentation is seeded per sample, so worker processes load exactly what the main one does.
    a = tiny_config(tiny_data, tmp_path / "w0", n_epochs=1, n_epochs_decay=0, n_samples=0)
    train(a)
    train(a.replace(out_dir=str(tmp_path / "w2"), num_workers=2))
    assert _losses(tmp_path / "w2" / "losses.jsonl") == _losses(tmp_path / "w0" / "losses.jsonl")


@pytest.mark.gpu
def test_cuda_bf16_channels_last_trains(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run", device="cuda", channels_last=True, n_epochs=1,
                      n_epochs_decay=0, num_workers=2)
    trainer_result = train(cfg)
    assert trainer_result.steps == 4
    records = read_loss_log(tmp_path / "run" / "losses.jsonl")
    assert all(np.isfinite(r[k]) for r in records for k in LOSS_NAMES)
    t = Trainer(cfg, device="cuda")
    assert t.autocast_dtype == torch.bfloat16  # precision auto -> bf16 autocast on CUDA
    gens = load_generators(tmp_path / "run" / "generators.pt")  # loads on CPU
    assert gens["mask"].generator.model[1].weight.device.type == "cpu"


def test_resume_with_another_process_count_warns_and_restarts_pools(tiny_data, tmp_path, caplog):
    cfg = tiny_config(tiny_data, tmp_path / "run", n_epochs=1, n_epochs_decay=0, n_samples=0)
    train(cfg)
    state = read_train_state(tmp_path / "run" / "latest.pt")
    state["world_size"] = 2  # as if written by a 2-process run
    t = Trainer(cfg)
    with caplog.at_level("WARNING"):
        t.load_state(state)
    assert "checkpoint written by 2 processes, resumed by 1: image pools restart empty" in caplog.text
    assert t.step == 4 and t.pool_A.images == []
    assert torch.equal(t.nets["G_A"].model[1].weight, state["nets"]["G_A"]["model.1.weight"])


def test_resume_with_a_longer_decay_trains_on_at_the_new_schedules_rate(tiny_data, tmp_path):
    """A finished run resumed with more decay epochs continues at the new schedule's rate, not
    at the stored rate of the old schedule (0 once its decay ended)."""
    out = tmp_path / "run"
    train(tiny_config(tiny_data, out, n_epochs=1, n_epochs_decay=1))
    before = read_checkpoint(out / "latest.pt")["nets"]["G_A"]
    train(tiny_config(tiny_data, out, n_epochs=1, n_epochs_decay=3), resume=True)
    records = read_loss_log(out / "losses.jsonl")
    # Epoch 3 of linear(1, 3): 1 - 2/4 of the base rate 2e-4; epoch 4: 1 - 3/4.
    assert {r["epoch"]: r["lr"] for r in records if r["epoch"] >= 3} == {3: pytest.approx(1e-4), 4: pytest.approx(5e-5)}
    after = read_checkpoint(out / "latest.pt")["nets"]["G_A"]
    assert any(not torch.equal(before[k], after[k]) for k in before)
