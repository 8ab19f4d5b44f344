"""The paper's Table I: train a grid of batch size x norm x LR policy x GAN loss under a fixed
budget per trial, score each trial's generators with FID_AB / FID_BA, write the table.

Every trial gets its own folder `out_dir/trial_NN_<bs>_<norm>_<policy>_<loss>/` (the trainer's
files) and its scores go to `out_dir/results.json` as soon as it finishes; the table is
rewritten each time (`table.md`, in the paper's format, and `table.csv`). Re-running the same
command skips finished trials and resumes an interrupted one from its latest.pt, so a sweep can
be stopped and continued.

Budget: `epochs` per trial sets the learning-rate schedule (half constant, half decaying for
the linear policy; one cosine for the cosine policy, as the trainer defines them); `minutes`
stops a trial early where its schedule had got to (the table records how far: steps and the
reason it stopped); `max_iters` caps iterations (smoke tests).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cyclemask.errors import ConfigError, DataError
from cyclemask.image_files import write_bytes_atomic

from cyclemask.train.config import GAN_MODES, LR_POLICIES, NORMS, TrainConfig

log = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
TABLE_MD = "table.md"
TABLE_CSV = "table.csv"

# Table I of the paper, in its order: (batch size, norm, LR policy, GAN loss).
PAPER_TRIALS = (
    (16, "instance", "linear", "vanilla"),
    (16, "instance", "linear", "lsgan"),
    (16, "batch", "linear", "vanilla"),
    (16, "batch", "linear", "lsgan"),
    (16, "instance", "cosine", "vanilla"),
    (16, "batch", "cosine", "vanilla"),
    (16, "batch", "cosine", "lsgan"),
    (32, "instance", "linear", "vanilla"),
    (32, "instance", "linear", "lsgan"),
    (32, "batch", "linear", "lsgan"),
)
# What the paper reported for them (FID_AB, FID_BA), printed beside ours for reference.
PAPER_FID = ((17.48, 51.62), (17.07, 261.78), (20.25, 65.31), (18.96, 65.5), (22.15, 47.68), (20.33, 85.14),
             (32.18, 71.29), (18.06, 51.5), (19.14, 48.39), (23.08, 100.31))

_SETTING_FIELDS = {"batch_size", "norm", "lr_policy", "gan_mode", "data_root", "out_dir", "n_epochs",
                   "n_epochs_decay", "time_budget_s", "max_iters"}


@dataclass(frozen=True)
class Trial:
    index: int  # 1-based, as in the table
    batch_size: int
    norm: str
    lr_policy: str
    gan_mode: str

    @property
    def name(self) -> str:
        return f"trial_{self.index:02d}_bs{self.batch_size}_{self.norm}_{self.lr_policy}_{self.gan_mode}"


@dataclass(frozen=True)
class SweepConfig:
    """A Table I sweep. `base` holds TrainConfig fields shared by all trials (ngf, crop_size...)."""

    data_root: str
    out_dir: str
    batch_sizes: tuple[int, ...] = (16, 32)
    norms: tuple[str, ...] = ("instance", "batch")
    lr_policies: tuple[str, ...] = ("linear", "cosine")
    gan_modes: tuple[str, ...] = ("vanilla", "lsgan")
    paper_trials: bool = False  # exactly the paper's 10 combinations instead of the full grid
    epochs: int = 2
    minutes: float | None = None
    max_iters: int | None = None
    base: dict = field(default_factory=dict)
    eval_limit: int | None = None
    eval_batch_size: int = 8
    kid_subsets: int = 100
    inception: str | None = None
    feature_device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("batch_sizes", "norms", "lr_policies", "gan_modes"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if not value and not self.paper_trials:
                raise ConfigError(f"{name} must list at least one value")
        for bs in self.batch_sizes:
            if not isinstance(bs, int) or bs < 1:
                raise ConfigError(f"batch sizes must be positive integers; got {bs!r}")
        for name, allowed in (("norms", NORMS), ("lr_policies", LR_POLICIES), ("gan_modes", GAN_MODES)):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad:
                raise ConfigError(f"{name}: {', '.join(map(repr, bad))} not among {', '.join(allowed)}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs per trial must be a positive integer; got {self.epochs!r}")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"minutes per trial must be positive; got {self.minutes!r}")
        if self.max_iters is not None and self.max_iters < 1:
            raise ConfigError(f"max_iters must be positive; got {self.max_iters!r}")
        clash = sorted(set(self.base) & _SETTING_FIELDS)
        if clash:
            raise ConfigError(f"base config may not set {', '.join(clash)}: the sweep sets them per trial")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(self.base) - known)
        if unknown:
            raise ConfigError(f"unknown training config keys in base: {', '.join(unknown)}")

    def trials(self) -> list[Trial]:
        combos = PAPER_TRIALS if self.paper_trials else tuple(
            itertools.product(self.batch_sizes, self.norms, self.lr_policies, self.gan_modes))
        return [Trial(i + 1, *c) for i, c in enumerate(combos)]

    def train_config(self, trial: Trial) -> TrainConfig:
        # Linear: half the epochs constant, half decaying (the reference's split); cosine decays
        # over all of them. Either way the schedule spans `epochs`.
        constant = self.epochs // 2 if trial.lr_policy == "linear" else self.epochs
        decay = self.epochs - constant if trial.lr_policy == "linear" else 0
        return TrainConfig(**{
            **self.base,
            "data_root": self.data_root,
            "out_dir": str(Path(self.out_dir) / trial.name),
            "batch_size": trial.batch_size,
            "norm": trial.norm,
            "lr_policy": trial.lr_policy,
            "gan_mode": trial.gan_mode,
            "n_epochs": constant,
            "n_epochs_decay": decay,
            "time_budget_s": self.minutes * 60.0 if self.minutes else None,
            "max_iters": self.max_iters,
        })

    def fingerprint(self) -> dict[str, Any]:
        """What must match for finished trials to be reused on a re-run."""
        return {"data_root": str(Path(self.data_root).resolve()), "epochs": self.epochs, "minutes": self.minutes,
                "max_iters": self.max_iters, "base": dict(sorted(self.base.items())), "eval_limit": self.eval_limit,
                "inception": self.inception}


def _load_results(out: Path, fingerprint: dict) -> dict[str, dict]:
    p = out / RESULTS_NAME
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: unreadable results ({exc}); move it away to start the sweep afresh") from None
    if data.get("fingerprint") != fingerprint:
        raise ConfigError(f"{p} was written by a sweep with other settings ({data.get('fingerprint')}); "
                          "use another --out folder, or the same settings to continue it")
    return {r["name"]: r for r in data.get("trials", [])}


def table_markdown(rows: list[dict], with_paper: bool) -> str:
    head = "| Trial | Batch Size | Norm | Learning policy | Loss | FID_AB | FID_BA |"
    sep = "|---|---|---|---|---|---|---|"
    if with_paper:
        head += " paper FID_AB | paper FID_BA |"
        sep += "---|---|"
    head += " KID_AB x100 | KID_BA x100 | steps | stopped |"
    sep += "---|---|---|---|"
    lines = [head, sep]
    for r in rows:
        cells = [str(r["trial"]), str(r["batch_size"]), r["norm"].capitalize(), r["lr_policy"].capitalize(),
                 r["gan_mode"].capitalize(), f"{r['FID_AB']:.2f}", f"{r['FID_BA']:.2f}"]
        if with_paper:
            cells += [f"{r['paper_FID_AB']:.2f}", f"{r['paper_FID_BA']:.2f}"]
        cells += [f"{100 * r['KID_AB']:.3f}", f"{100 * r['KID_BA']:.3f}", str(r["steps"]), r["stopped"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(rows: list[dict]) -> str:
    cols = ["trial", "batch_size", "norm", "lr_policy", "gan_mode", "FID_AB", "FID_BA", "KID_AB", "KID_BA",
            "steps", "epochs_completed", "stopped", "train_seconds"]
    out = [",".join(cols)]
    for r in rows:
        out.append(",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    return "\n".join(out) + "\n"


def _write_outputs(out: Path, config: SweepConfig, done: dict[str, dict], order: list[Trial]) -> None:
    rows = [done[t.name] for t in order if t.name in done]
    payload = {"format": "cyclemask.sweep", "fingerprint": config.fingerprint(), "trials": rows}
    write_bytes_atomic(out / RESULTS_NAME, (json.dumps(payload, indent=1) + "\n").encode())
    title = ("# Table I: FID scores FID_AB and FID_BA of generator models G_AB and G_BA with change in "
             "hyper-parameters\n\n")
    budget = f"{config.epochs} epochs per trial" + (f", at most {config.minutes:g} min" if config.minutes else "") + \
        (f", at most {config.max_iters} iterations" if config.max_iters else "")
    note = f"Budget: {budget}. FID on {rows[0]['n_test'] if rows else 0} test images per domain.\n\n"
    write_bytes_atomic(out / TABLE_MD, (title + note + table_markdown(rows, config.paper_trials)).encode())
    write_bytes_atomic(out / TABLE_CSV, table_csv(rows).encode())


def run_sweep(
    config: SweepConfig,
    on_trial_start: Callable[[Trial, int], None] | None = None,
    train_progress: Callable[[Any], None] | None = None,
    on_trial_done: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run every trial not yet done, scoring each after training. Returns the table rows."""
    import torch

    from cyclemask.checkpoint import load_generators
    from cyclemask.image_tensors import eager_translate
    from cyclemask.train.trainer import train

    from .evaluate import EvalOptions, FeatureCache, evaluate_translators, load_folder
    from .fid import load_inception

    out = Path(config.out_dir)
    trials = config.trials()
    for t in trials:  # every trial config validates before anything runs
        config.train_config(t)
    done = _load_results(out, config.fingerprint())
    test_a = load_folder(Path(config.data_root) / "testA", config.eval_limit)
    test_b = load_folder(Path(config.data_root) / "testB", config.eval_limit)
    out.mkdir(parents=True, exist_ok=True)
    cache = FeatureCache(load_inception(config.inception, config.feature_device))
    options = EvalOptions(batch_size=config.eval_batch_size, kid_subsets=config.kid_subsets)

    for t in trials:
        if t.name in done:
            log.info("%s: done already (FID_AB %.2f, FID_BA %.2f)", t.name, done[t.name]["FID_AB"], done[t.name]["FID_BA"])
            continue
        if on_trial_start:
            on_trial_start(t, len(trials))
        cfg = config.train_config(t)
        resume = (Path(cfg.out_dir) / "latest.pt").is_file()
        t0 = time.perf_counter()
        result = train(cfg, progress=train_progress, resume=resume)
        seconds = time.perf_counter() - t0
        if result.stopped == "signal":
            # Interrupted: not a finished trial. Its latest.pt lets the next run continue it.
            log.warning("%s interrupted after %d steps; run the same command again to continue", t.name, result.steps)
            break
        device = torch.device(config.feature_device if config.feature_device != "auto" else "cpu")
        gens = {d: g.generator.to(device) for d, g in load_generators(result.generators_path).items()}
        translators = {d: (lambda x, g=g: eager_translate(g, x)) for d, g in gens.items()}
        report = evaluate_translators(translators, cfg.crop_size, test_a, test_b, cache, None, options)
        row = {"name": t.name, "trial": t.index, "batch_size": t.batch_size, "norm": t.norm,
               "lr_policy": t.lr_policy, "gan_mode": t.gan_mode,
               "FID_AB": report["AB"]["fid"], "FID_BA": report["BA"]["fid"],
               "KID_AB": report["AB"]["kid"], "KID_BA": report["BA"]["kid"],
               "reference_FID_A_vs_B": report["reference"]["FID_A_vs_B"], "n_test": report["n_testA"],
               "steps": result.steps, "epochs_completed": result.epochs_completed, "stopped": result.stopped,
               "train_seconds": round(seconds, 1), "generators": str(result.generators_path)}
        if config.paper_trials:
            row["paper_FID_AB"], row["paper_FID_BA"] = PAPER_FID[t.index - 1]
        if not all(math.isfinite(row[k]) for k in ("FID_AB", "FID_BA")):
            log.warning("%s: non-finite FID (%s, %s)", t.name, row["FID_AB"], row["FID_BA"])
        done[t.name] = row
        _write_outputs(out, config, done, trials)
        if on_trial_done:
            on_trial_done(row)
    if trials and all(t.name in done for t in trials):
        _write_outputs(out, config, done, trials)
    return [done[t.name] for t in trials if t.name in done]
