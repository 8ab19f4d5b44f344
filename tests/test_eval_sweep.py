"""The Table I sweep runner: grid, budget, scoring, table format, continuation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cyclemask.errors import ConfigError
from cyclemask.image_files import write_image
from cyclemask.metrics import sweep as sw
from cyclemask.metrics.cli import main as eval_cli
from cyclemask.metrics.sweep import PAPER_TRIALS, SweepConfig, run_sweep, table_markdown

TINY = {"ngf": 8, "ndf": 8, "n_blocks": 1, "load_size": 32, "crop_size": 32, "num_workers": 0,
        "n_samples": 0, "device": "cpu", "pool_size": 2, "save_latest_every": 0}


@pytest.fixture
def data(tmp_path) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n, tint in (("trainA", 4, 0), ("trainB", 4, 60), ("testA", 3, 0), ("testB", 3, 60)):
        for i in range(n):
            small = np.clip(rng.integers(0, 190, (4, 4, 3)) + tint, 0, 255).astype(np.uint8)
            write_image(root / split / f"{i}.png", cv2.resize(small, (32, 32), interpolation=cv2.INTER_CUBIC))
    return root


def test_grid_and_paper_trials():
    c = SweepConfig(data_root="d", out_dir="o")
    trials = c.trials()
    assert len(trials) == 16 and trials[0].name == "trial_01_bs16_instance_linear_vanilla"
    assert {(t.batch_size, t.norm, t.lr_policy, t.gan_mode) for t in trials} >= set(PAPER_TRIALS)
    p = SweepConfig(data_root="d", out_dir="o", paper_trials=True).trials()
    assert [(t.batch_size, t.norm, t.lr_policy, t.gan_mode) for t in p] == list(PAPER_TRIALS)
    assert p[1].name == "trial_02_bs16_instance_linear_lsgan"


def test_budget_becomes_the_schedule():
    c = SweepConfig(data_root="d", out_dir="o", epochs=5, minutes=1.5, base={"ngf": 16})
    lin, cos = (c.train_config(sw.Trial(1, 16, "instance", p, "lsgan")) for p in ("linear", "cosine"))
    assert (lin.n_epochs, lin.n_epochs_decay) == (2, 3) and (cos.n_epochs, cos.n_epochs_decay) == (5, 0)
    assert lin.time_budget_s == 90.0 and lin.ngf == 16 and lin.out_dir.endswith("trial_01_bs16_instance_linear_lsgan")


@pytest.mark.parametrize("kw, message", [
    ({"norms": ("group",)}, r"norms: 'group' not among instance, batch, syncbatch"),
    ({"gan_modes": ()}, "gan_modes must list at least one value"),
    ({"batch_sizes": (0,)}, "batch sizes must be positive integers"),
    ({"epochs": 0}, "epochs per trial must be a positive integer"),
    ({"minutes": -1.0}, "minutes per trial must be positive"),
    ({"base": {"norm": "batch"}}, "base config may not set norm"),
    ({"base": {"colour": 1}}, "unknown training config keys in base: colour"),
])
def test_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        SweepConfig(data_root="d", out_dir="o", **kw)


@pytest.mark.slow  # two training trials (~6 s); the other sweep tests stay fast
def test_two_trial_sweep_writes_the_table_and_continues(tmp_path, data, tiny_features_path):
    out = tmp_path / "sweep"
    cfg = SweepConfig(data_root=str(data), out_dir=str(out), batch_sizes=(2,), norms=("instance", "batch"),
                      lr_policies=("linear",), gan_modes=("lsgan",), epochs=1, max_iters=2, base=TINY,
                      kid_subsets=2, inception=str(tiny_features_path))
    done = []
    rows = run_sweep(cfg, on_trial_done=done.append)
    assert [r["name"] for r in rows] == ["trial_01_bs2_instance_linear_lsgan", "trial_02_bs2_batch_linear_lsgan"]
    assert all(r["steps"] == 2 and r["stopped"] == "max_iters" and np.isfinite(r["FID_AB"]) for r in rows)
    assert rows[0]["FID_AB"] != rows[1]["FID_AB"]  # different trials, different generators
    md = (out / "table.md").read_text()
    assert "| Trial | Batch Size | Norm | Learning policy | Loss | FID_AB | FID_BA |" in md
    assert f"| 1 | 2 | Instance | Linear | Lsgan | {rows[0]['FID_AB']:.2f} | {rows[0]['FID_BA']:.2f} |" in md
    assert (out / "table.csv").read_text().splitlines()[0].startswith("trial,batch_size,norm")
    assert (out / rows[0]["name"] / "generators.pt").is_file()
    # Same command again: nothing retrains, the same rows come back.
    again = run_sweep(cfg, on_trial_done=done.append)
    assert again == rows and len(done) == 2
    # Other settings in the same folder are refused rather than mixed.
    with pytest.raises(ConfigError, match="written by a sweep with other settings"):
        run_sweep(SweepConfig(**{**cfg.__dict__, "max_iters": 3}))


def test_interrupted_trial_is_not_recorded_and_resumes(tmp_path, data, tiny_features_path, monkeypatch):
    from cyclemask.train import trainer

    real_train = trainer.train
    calls = []

    def interrupted_once(config, progress=None, resume=False):
        calls.append(resume)
        result = real_train(config, progress=progress, resume=resume)
        if len(calls) == 1:
            return type(result)(**{**result.__dict__, "stopped": "signal"})
        return result

    monkeypatch.setattr(trainer, "train", interrupted_once)
    cfg = SweepConfig(data_root=str(data), out_dir=str(tmp_path / "s"), batch_sizes=(2,), norms=("instance",),
                      lr_policies=("cosine",), gan_modes=("vanilla",), epochs=1, max_iters=1, base=TINY,
                      kid_subsets=2, inception=str(tiny_features_path))
    assert run_sweep(cfg) == []
    rows = run_sweep(cfg)
    assert calls == [False, True] and len(rows) == 1


def test_table_with_paper_columns():
    row = {"trial": 2, "batch_size": 16, "norm": "instance", "lr_policy": "linear", "gan_mode": "lsgan",
           "FID_AB": 20.0, "FID_BA": 70.5, "paper_FID_AB": 17.07, "paper_FID_BA": 261.78, "KID_AB": 0.01,
           "KID_BA": 0.02, "steps": 10, "stopped": "completed"}
    md = table_markdown([row], with_paper=True)
    assert "| 2 | 16 | Instance | Linear | Lsgan | 20.00 | 70.50 | 17.07 | 261.78 | 1.000 | 2.000 | 10 | completed |" in md


def test_cli_sweep(tmp_path, data, tiny_features_path):
    args = ["sweep", "--data", str(data), "--out", str(tmp_path / "s"), "--batch-sizes", "2", "--norms", "instance",
            "--lr-policies", "linear", "--gan-modes", "vanilla", "--epochs", "1", "--max-iters", "1",
            "--inception", str(tiny_features_path), "--kid-subsets", "2", "--feature-device", "cpu"]
    for k, v in TINY.items():
        args += ["--set", f"{k}={v}"]
    r = CliRunner().invoke(eval_cli, args)
    assert r.exit_code == 0, r.output
    assert "[1/1] trial_01_bs2_instance_linear_vanilla" in r.output and "| 1 | 2 | Instance | Linear | Vanilla |" in r.output
    assert json.loads((tmp_path / "s" / "results.json").read_text())["trials"][0]["steps"] == 1


def test_cli_sweep_errors(tmp_path, data):
    runner = CliRunner()
    base = ["sweep", "--data", str(data), "--out", str(tmp_path / "s")]
    r = runner.invoke(eval_cli, base + ["--set", "colour=red"])
    assert r.exit_code == 1 and "--set colour: not a training option" in r.output
    r = runner.invoke(eval_cli, base + ["--set", "ngf=many"])
    assert r.exit_code == 1 and "--set ngf=many: expected an integer" in r.output
    r = runner.invoke(eval_cli, base + ["--set", "norm=batch"])
    assert r.exit_code == 1 and "base config may not set norm" in r.output
    r = runner.invoke(eval_cli, base + ["--norms", "layer"])
    assert r.exit_code == 2 and "layer not among instance, batch, syncbatch" in r.output
    r = runner.invoke(eval_cli, base + ["--batch-sizes", "a,b"])
    assert r.exit_code == 2 and "comma-separated integers" in r.output
