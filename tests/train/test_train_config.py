import json

import pytest

from cyclemask.errors import ConfigError
from cyclemask.train.cli import parse_duration
from cyclemask.train.config import RUNTIME_FIELDS, TrainConfig


def test_defaults_are_the_papers():
    c = TrainConfig()
    # Methods III.3 / Table I (trial 2, best FID_AB) and the reference's optimiser settings.
    assert (c.ngf, c.n_blocks, c.norm, c.gan_mode, c.lr_policy, c.batch_size) == (64, 9, "instance", "lsgan", "linear", 16)
    assert (c.load_size, c.crop_size, c.pool_size, c.total_epochs) == (286, 256, 50, 200)
    assert (c.lr, c.beta1, c.beta2) == (2e-4, 0.5, 0.999)
    assert (c.lambda_A, c.lambda_B, c.lambda_identity) == (10.0, 10.0, 0.5)


def test_json_round_trip(tmp_path):
    c = TrainConfig(data_root="d", ngf=16, max_iters=5, time_budget_s=60)
    p = tmp_path / "config.json"
    p.write_text(c.to_json())
    assert TrainConfig.from_json(p) == c
    assert json.loads(c.to_json())["ngf"] == 16


@pytest.mark.parametrize("changes, match", [
    ({"crop_size": 300}, r"crop_size \(300\) must not exceed load_size \(286\)"),
    ({"crop_size": 30, "load_size": 30}, "multiple of 4"),
    ({"crop_size": 16, "load_size": 16}, "too small for a 3-layer PatchGAN"),
    ({"norm": "group"}, "norm must be one of instance, batch, syncbatch; got 'group'"),
    ({"gan_mode": "hinge"}, "gan_mode must be one of lsgan, vanilla, wgangp"),
    ({"lr_policy": "step"}, "lr_policy must be one of linear, cosine"),
    ({"batch_size": 0}, "batch_size must be positive; got 0"),
    ({"ngf": 8.5}, "ngf must be an integer"),
    ({"lr": 0.0}, "lr must be positive"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"beta1": 1.0}, r"beta1 must be in \[0, 1\)"),
    ({"lambda_A": -1}, "lambda_A must not be negative"),
    ({"flip": "yes"}, "flip must be true or false"),
    ({"device": "gpu"}, "device must be one of auto, cpu, cuda or cuda:N; got 'gpu'"),
    ({"n_epochs": 0, "n_epochs_decay": 0}, "n_epochs \\+ n_epochs_decay must be at least 1"),
    ({"max_iters": 0}, "max_iters must be positive"),
    ({"time_budget_s": -5}, "time_budget_s must be positive"),
])
def test_invalid_values_are_named(changes, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**changes)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown training config keys: lamda_A"):
        TrainConfig.from_dict({"lamda_A": 10})


def test_from_json_names_the_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        TrainConfig.from_json(p)
    p.write_text(json.dumps({"crop_size": 30, "load_size": 30}))
    with pytest.raises(ConfigError, match="bad.json: crop_size must be a multiple of 4"):
        TrainConfig.from_json(p)
    with pytest.raises(ConfigError, match="missing.json: cannot read config"):
        TrainConfig.from_json(tmp_path / "missing.json")


def test_runtime_fields_exclude_what_changes_the_computation():
    for name in ("lr", "ngf", "norm", "gan_mode", "batch_size", "seed", "pool_size", "crop_size"):
        assert name not in RUNTIME_FIELDS
    assert {"max_iters", "out_dir", "num_workers"} <= RUNTIME_FIELDS


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("8h", 28800),
                                           ("1h30m", 5400), ("0.5h", 1800)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "10x", "h", "5m extra"])
def test_parse_duration_rejects(text):
    with pytest.raises(ConfigError, match="cannot read duration"):
        parse_duration(text)
