"""cyclemask-train: help, config round trip, errors, a real run, resume, Ctrl-C and SIGTERM."""

import dataclasses
import json
import signal

import pytest
from click.testing import CliRunner

from cyclemask.train.cli import main
from cyclemask.train.config import TrainConfig
from cyclemask.train.plots import read_loss_log
from cyclemask.train.checkpointing import read_train_state

TINY = ["--load-size", "36", "--crop-size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "2",
        "--batch-size", "2", "--num-workers", "0", "--n-samples", "2", "--device", "cpu"]


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_help_documents_every_knob_with_its_default():
    out = run(["--help"]).output
    flat = " ".join(out.split())
    for f in dataclasses.fields(TrainConfig):
        flag = {"data_root": "--data-root", "out_dir": "--out", "time_budget_s": "--time-budget",
                "pairs_dir": "--pairs", "mask_pairs_dir": "--mask-pairs"}.get(
            f.name, "--" + f.name.replace("_", "-"))
        assert flag in out, f.name
    for text in ("[paper: 0.0002]", "[paper: 0.5]", "[paper: 16]", "[paper: instance]", "[paper: lsgan]",
                 "[paper: linear]", "[paper: 50]", "[paper: 10.0]", "[paper: 286]", "[paper: 256]",
                 "[paper: 9]", "[paper: 100]", "--resume", "--config", "torchrun"):
        assert text in flat, text


def test_print_config_merges_file_and_flags(tmp_path):
    cfg = TrainConfig(data_root="faces", ngf=32, lr=1e-4)
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    out = run(["--config", str(path), "--ngf", "16", "--no-flip", "--time-budget", "2h", "--print-config"])
    assert out.exit_code == 0, out.output
    got = TrainConfig.from_dict(json.loads(out.output))
    assert got == cfg.replace(ngf=16, flip=False, time_budget_s=7200.0)


@pytest.mark.parametrize("args, message", [
    (["--crop-size", "30", "--load-size", "30", "--data-root", "x"], "crop_size must be a multiple of 4"),
    (["--data-root", "nowhere", "--out", "OUT"], "nowhere/trainA: no such folder"),
    (["--resume"], "--resume needs --out"),
    (["--resume", "--out", "NOTARUN"], "NOTARUN/config.json: not found"),
    (["--config", "missing.json"], "missing.json: cannot read config"),
    (["--data-root", "x", "--time-budget", "soon"], "cannot read duration 'soon'"),
])
def test_user_errors_exit_1_with_a_message(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = run(args)
    assert result.exit_code == 1
    assert "Error: " in result.output and message in result.output


def test_bad_choice_and_missing_data_root_are_usage_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(["--norm", "group", "--data-root", "x"])
    assert result.exit_code == 2 and "'group' is not one of 'instance', 'batch', 'syncbatch'" in result.output
    result = run(["--out", "o"])
    assert result.exit_code == 2 and "--data-root is required" in result.output


def test_train_stop_and_resume_from_the_cli(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = run(["--data-root", str(tiny_data), "--out", str(out), *TINY, "--n-epochs", "1",
                  "--n-epochs-decay", "1", "--max-iters", "3"])
    assert result.exit_code == 0, result.output
    assert "stopped: max_iters after 3 iterations (0/2 epochs)" in result.output
    assert f"generators (for cyclemask-export): {out / 'generators.pt'}" in result.output
    assert "--resume --max-iters 0" in result.output
    # The run's own config.json is the base: no data flags needed to continue.
    result = run(["--out", str(out), "--resume", "--max-iters", "0"])
    assert result.exit_code == 0, result.output
    assert "stopped: completed after 8 iterations (2/2 epochs)" in result.output
    assert [r["step"] for r in read_loss_log(out / "losses.jsonl")] == list(range(1, 9))
    assert TrainConfig.from_json(out / "config.json").max_iters is None
    # Changing the model on resume is refused, naming the field.
    result = run(["--out", str(out), "--resume", "--ngf", "16"])
    assert result.exit_code == 1 and "ngf: checkpoint 8, now 16" in result.output


@pytest.mark.slow  # cyclemask-train in a subprocess, signalled (~12 s); test_train_stop_and_resume_from_the_cli checks the same in-process
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stop_signal_saves_and_resume_continues(tiny_data, tmp_path, sig):
    from proc_helpers import Child, command, partials

    out = tmp_path / "run"
    cmd = [command("cyclemask-train"), "--data-root", tiny_data, "--out", out,
           *TINY, "--n-epochs", "500", "--n-epochs-decay", "0", "--n-samples", "0", "--num-workers", "2"]
    with Child(cmd, tmp_path / "logs") as child:
        child.wait_for(lambda: len(read_loss_log(out / "losses.jsonl")) >= 3, "three iterations")
        # Ctrl-C reaches the whole process group, DataLoader workers too (a worker that died
        # first would abort the main process's save); a scheduler's SIGTERM only the main process.
        child.send(sig, group=sig == signal.SIGINT)
        code = child.finish()
    stdout, stderr = child.stdout, child.stderr
    assert code == 128 + sig, stderr[-2000:]
    assert "stopped: signal after" in stdout and "--resume" in stdout
    assert stderr.count(f"{signal.Signals(sig).name} received: stopping after this iteration and saving") == 1
    assert not partials(out) and not (out / ".cyclemask-journal").exists()
    steps = read_train_state(out / "latest.pt")["step"]
    assert steps >= 3 and [r["step"] for r in read_loss_log(out / "losses.jsonl")] == list(range(1, steps + 1))
    result = run(["--out", str(out), "--resume", "--max-iters", str(steps + 2)])
    assert result.exit_code == 0, result.output
    assert f"stopped: max_iters after {steps + 2} iterations" in result.output
