"""The trainer's checkpoint files: the training-state format, reading it back, the checks before
a run resumes from it, and writing latest.pt / generators.pt (and their epoch copies) atomically.

What goes into the state is the trainer's (`Trainer.collect_state` / `load_state`); this module
owns the format and the files.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cyclemask.checkpoint import read_checkpoint, save_generators, state_dict_sha256
from cyclemask.errors import CheckpointError, ConfigError
from cyclemask.image_files import write_bytes_atomic

from .config import RUNTIME_FIELDS, TrainConfig

log = logging.getLogger(__name__)

STATE_FORMAT = "cyclemask.train_state"
STATE_FORMAT_VERSION = 1
NET_NAMES = ("G_A", "G_B", "D_A", "D_B")


def read_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint (weights_only=True) and check that it is one."""
    state = read_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a cyclemask training checkpoint (for generator files "
                              f"use cyclemask.checkpoint.load_generators)")
    if state.get("format_version") != STATE_FORMAT_VERSION:
        raise CheckpointError(f"{path}: training checkpoint format {state.get('format_version')} "
                              f"is not supported (this version reads {STATE_FORMAT_VERSION})")
    return state


def param_digest(nets: Mapping[str, nn.Module], names: tuple[str, ...] = NET_NAMES) -> str:
    """Hash of the parameters (not buffers: batch-norm running statistics are per rank
    between forwards, and DDP broadcasts rank 0's at the next one)."""
    h = hashlib.sha256()
    for name in names:
        params = {k: p.detach() for k, p in nets[name].named_parameters()}
        h.update(state_dict_sha256(params).encode())
    return h.hexdigest()


def state_to_resume(out: Path, resume: bool | str | os.PathLike, config: TrainConfig) -> tuple[Path, dict] | None:
    """The checkpoint to continue from and its state, its config checked against `config`; None
    for a new run, which is refused when `out` already holds one."""
    latest = out / "latest.pt"
    if not resume:
        if latest.exists():
            raise ConfigError(f"{out} already holds a run ({latest}); resume it (--resume) or "
                              f"choose another output folder")
        return None
    ckpt_path = latest if resume is True else Path(resume)
    if not ckpt_path.is_file():
        raise CheckpointError(f"{ckpt_path}: no checkpoint to resume from")
    state = read_train_state(ckpt_path)
    saved = TrainConfig.from_dict(state["config"])
    diff = {k: v for k, v in saved.differences(config).items() if k not in RUNTIME_FIELDS}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ConfigError(f"{ckpt_path}: cannot resume with a different config ({detail}); "
                          f"only these may change: {', '.join(sorted(RUNTIME_FIELDS))}")
    for k in ("n_epochs", "n_epochs_decay"):
        if getattr(saved, k) != getattr(config, k):
            log.warning("%s changed from %s to %s: the learning-rate schedule changes with it",
                        k, getattr(saved, k), getattr(config, k))
    return ckpt_path, state


def restore_learning_rates(opt: torch.optim.Optimizer, sched) -> None:
    """Set the rates of a scheduler just restored from a checkpoint.

    LambdaLR restores last_epoch but not the rate it set. Recompute it from this run's schedule
    rather than take the stored last rate: n_epochs / n_epochs_decay may have changed on resume
    (a longer decay), and the stored rate is the old schedule's (after a finished decay it is 0,
    which would silently train on at a rate of zero)."""
    rates = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas)]
    sched._last_lr = rates
    for group, lr in zip(opt.param_groups, rates):
        group["lr"] = lr


def write_checkpoints(out: Path, state: dict[str, Any], generators: Mapping[str, nn.Module], extra: dict,
                      epoch: int, epoch_files: bool, step: int, saved_step: int | None) -> None:
    """latest.pt and generators.pt, and with `epoch_files` epoch_NNNN.pt and
    generators_epoch_NNNN.pt, each written atomically. A failed write names the file and what
    is still intact (`saved_step`: the last complete save)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    target = out / "latest.pt"
    try:
        write_bytes_atomic(target, data)
        target = out / "generators.pt"
        save_generators(target, generators, extra=extra)
        if epoch_files:
            target = out / f"epoch_{epoch:04d}.pt"
            write_bytes_atomic(target, data)
            target = out / f"generators_epoch_{epoch:04d}.pt"
            save_generators(target, generators, extra=extra)
    except OSError as exc:
        kept = (f"the previous files are intact (last complete save: step {saved_step})"
                if saved_step is not None else "no checkpoint of this run was written before")
        raise CheckpointError(f"{target}: cannot write ({exc.strerror or exc}) at step {step}; "
                              f"{kept}") from exc
