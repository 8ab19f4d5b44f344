"""`cyclemask-train`: train the paper's CycleGAN on unpaired folders of faces.

One device:      cyclemask-train --data-root faces/ --out runs/masks
Several GPUs:    torchrun --nproc_per_node=4 -m cyclemask.train.cli --data-root faces/ --out runs/masks
Continue a run:  cyclemask-train --out runs/masks --resume
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from cyclemask.cli_util import Command, debug_option, require_torch, stop_exit_code
from cyclemask.errors import ConfigError
from cyclemask.outputs import OutputLock

from .config import GAN_MODES, LR_POLICIES, NORMS, PRECISIONS, TrainConfig

_DEFAULTS = TrainConfig()

# (field, help, paper) — `paper` marks defaults taken from the paper (Methods III.3, Table I).
_HELP: dict[str, tuple[str, bool]] = {
    "data_root": ("Folder holding trainA/ (unmasked faces) and trainB/ (masked faces), searched "
                  "recursively; testA/ testB/ give the fixed images of the sample grids.", False),
    "out_dir": ("Output folder: config.json, latest.pt, epoch_NNNN.pt, generators.pt (for "
                "cyclemask-export), losses.jsonl, losses.png, samples/.", False),
    "load_size": ("Images are resized (bicubic) to this square size...", True),
    "crop_size": ("...then randomly cropped to this size (a multiple of 4).", True),
    "flip": ("Random horizontal flips.", True),
    "max_dataset_size": ("Use at most this many images per domain (first in sorted order).", False),
    "n_epochs": ("Epochs at the initial learning rate (paper: 200 epochs in all).", True),
    "n_epochs_decay": ("Epochs over which the rate then decays to zero.", True),
    "batch_size": ("Global batch size, split evenly among DDP processes (Table I: 16 or 32).", True),
    "lr": ("Adam learning rate.", True),
    "beta1": ("Adam beta1.", True),
    "beta2": ("Adam beta2.", True),
    "lr_policy": ("Learning-rate policy (Table I): linear = constant for n_epochs, then falling "
                  "linearly towards zero over n_epochs_decay; cosine = one cosine to zero over all epochs.", True),
    "ngf": ("Generator filters in its first layer.", True),
    "ndf": ("Discriminator filters in its first layer.", True),
    "n_blocks": ("Residual blocks of the generator (paper: 9 at 256 px, 6 at 128 px).", True),
    "n_layers_D": ("PatchGAN layers (3 = 70x70 patches).", True),
    "norm": ("Normalisation (Table I): instance | batch | syncbatch (batch statistics shared "
             "across DDP processes; CUDA only).", True),
    "dropout": ("Dropout in the residual blocks (the reference trains CycleGAN without).", False),
    "init_gain": ("Std of the normal weight init.", False),
    "gan_mode": ("Adversarial loss (Table I): lsgan (least squares) | vanilla (log-loss, BCE "
                 "with logits) | wgangp (Wasserstein with gradient penalty).", True),
    "lambda_A": ("Weight of the cycle loss A -> B -> A.", True),
    "lambda_B": ("Weight of the cycle loss B -> A -> B.", True),
    "lambda_identity": ("Weight of the identity loss, relative to lambda_A / lambda_B (0 disables).", True),
    "lambda_gp": ("Weight of the gradient penalty (wgangp only).", False),
    "pool_size": ("Earlier fakes kept per discriminator (0 disables the pool).", True),
    "pairs_dir": ("cyclemask extension: a folder of twins, without_mask/ and with_mask/ under the same "
                  "names (cyclemask-data synth writes one); they join the two domains.", False),
    "mask_pairs_dir": ("cyclemask extension: twins for the mask direction's L1 term only (e.g. one consistent "
                       "mask style); --pairs then serves the unmask direction.", False),
    "paired_weight": ("cyclemask extension: weight of an L1 term between G(x) and x's twin, both "
                      "directions, for samples from --pairs (0 = the paper's unpaired objective).", False),
    "zone_weight": ("cyclemask extension: extra L1 weight inside the mask zone (each twin's matte, grown "
                    "by --zone-grow px), mask direction: pixels there weigh 1 + this. Needs mattes/ "
                    "beside the twins (cyclemask-data synth writes them).", False),
    "zone_grow": ("Pixels (at crop size) by which the twins' mattes are grown into the mask zone.", False),
    "zone_gan_weight": ("cyclemask extension: weight of a PatchGAN term on the mask zone (a third "
                        "discriminator compares the twin's mask with the generated one, both pasted "
                        "onto the input outside the zone; 0 disables).", False),
    "init_from": ("A generator bundle (generators.pt) to start both generators from (fine-tuning; "
                  "discriminators start fresh; ignored on --resume).", False),
    "seed": ("Random seed (weights, data order, augmentation, pools).", False),
    "device": ("auto | cpu | cuda | cuda:N (under torchrun each process takes GPU LOCAL_RANK).", False),
    "precision": ("auto = bf16 autocast on CUDA, fp32 on CPU | fp32 | bf16.", False),
    "channels_last": ("channels_last memory format (faster convolutions on tensor-core GPUs).", False),
    "compile": ("torch.compile the networks.", False),
    "num_workers": ("DataLoader worker processes per training process.", False),
    "max_iters": ("Stop (and save) after this many iterations in all, counting earlier runs "
                  "(0: no limit, e.g. to lift a limit when resuming).", False),
    "time_budget_s": ("Stop (and save) after this much time in this invocation, e.g. 90s, 30m, 8h "
                      "(0: no limit).", False),
    "save_every": ("Keep a checkpoint and generator bundle every this many epochs (latest.pt is "
                   "rewritten at every epoch end).", False),
    "save_latest_every": ("Also rewrite latest.pt every this many iterations (0: only at epoch ends).", False),
    "sample_every": ("Write a sample grid every this many epochs.", False),
    "n_samples": ("Fixed images per domain in the sample grids (0: no grids).", False),
}

_CHOICES = {"lr_policy": LR_POLICIES, "norm": NORMS, "gan_mode": GAN_MODES, "precision": PRECISIONS}
_FLAGS = {"data_root": "--data-root", "out_dir": "--out", "time_budget_s": "--time-budget", "pairs_dir": "--pairs", "mask_pairs_dir": "--mask-pairs"}


def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '8h', '1h30m' -> seconds."""
    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
    if not parts or re.sub(r"\s+", "", "".join(a + b for a, b in parts)) != re.sub(r"\s+", "", s):
        raise ConfigError(f"cannot read duration {text!r}: use e.g. 90s, 30m, 8h or 1h30m")
    return sum(float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in parts)


def _default_text(name: str) -> str:
    value = getattr(_DEFAULTS, name)
    if name == "data_root":
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _options(f):
    for fld in reversed(dataclasses.fields(TrainConfig)):
        name = fld.name
        text, paper = _HELP[name]
        default = _default_text(name)
        tag = f"paper: {default}" if paper else f"default: {default}"
        help_text = f"{text} [{tag}]"
        flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
        if isinstance(getattr(_DEFAULTS, name), bool):
            opt = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
        elif name in _CHOICES:
            opt = click.option(flag, name, type=click.Choice(_CHOICES[name]), default=None, help=help_text)
        elif name == "time_budget_s":
            opt = click.option(flag, name, type=str, default=None, metavar="DURATION", help=help_text)
        elif name in ("data_root", "out_dir", "pairs_dir", "mask_pairs_dir"):
            opt = click.option(flag, name, type=click.Path(file_okay=False), default=None, help=help_text)
        elif name == "init_from":
            opt = click.option(flag, name, type=click.Path(dir_okay=False), default=None, help=help_text)
        else:
            ftype = {int: int, float: float}.get(type(getattr(_DEFAULTS, name)), None)
            if name in ("max_iters", "max_dataset_size"):
                ftype = int
            opt = click.option(flag, name, type=ftype, default=None, help=help_text)
        f = opt(f)
    return f


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Start from this JSON config (e.g. a run's config.json); flags given override it.")
@click.option("--resume", is_flag=True, default=False,
              help="Continue the run in --out from its latest.pt (its config.json is the base config).")
@click.option("--resume-from", type=click.Path(dir_okay=False), default=None,
              help="Continue from this training checkpoint (latest.pt or epoch_NNNN.pt).")
@click.option("--print-config", is_flag=True, default=False,
              help="Print the resolved config as JSON and exit without training.")
@_options
@debug_option
def main(config_path: str | None, resume: bool, resume_from: str | None, print_config: bool,
         **flags: Any) -> None:
    """Train the paper's CycleGAN: G_A masks faces (trainA -> trainB, exported as "mask"),
    G_B unmasks them ("unmask").

    Defaults are the paper's (Methods III.3, Table I: instance norm, linear policy, LSGAN,
    batch 16, 200 epochs). For several GPUs launch it with torchrun (NCCL on GPUs, gloo on
    CPU); only rank 0 logs and writes. Ctrl-C (or SIGTERM) stops after the current iteration
    and saves (exit status 130, or 143 for SIGTERM; a second signal stops at once without
    saving); --resume continues exactly where it stopped.
    """
    require_torch("cyclemask-train")
    if _rank() != 0:
        logging.getLogger().setLevel(logging.WARNING)
    given = {k: v for k, v in flags.items() if v is not None}
    if "time_budget_s" in given:
        given["time_budget_s"] = parse_duration(given["time_budget_s"]) or None
    if given.get("max_iters") == 0:
        given["max_iters"] = None
    resume_arg: bool | str = False
    if resume_from:
        resume_arg = resume_from
    elif resume:
        resume_arg = True

    base: dict[str, Any] = {}
    if config_path:
        base = TrainConfig.from_json(config_path).to_dict()
    elif resume_arg:
        # The run's own config is the starting point; flags may change runtime fields only.
        out = given.get("out_dir")
        if resume_arg is True and not out:
            raise ConfigError("--resume needs --out (the folder of the run to continue)")
        cfg_file = Path(out) / "config.json" if resume_arg is True else Path(resume_from).parent / "config.json"
        if cfg_file.is_file():
            base = TrainConfig.from_json(cfg_file).to_dict()
        elif resume_arg is True:
            raise ConfigError(f"{cfg_file}: not found; is {out} a cyclemask-train output folder?")
    base.update(given)
    if resume_from and "out_dir" not in given and not config_path:
        base["out_dir"] = str(Path(resume_from).parent)
    config = TrainConfig.from_dict(base)
    if print_config:
        click.echo(config.to_json(), nl=False)
        return
    if not config.data_root:
        raise click.UsageError("--data-root is required (or --config / --resume with a run that has it)")

    from .trainer import train  # torch and the networks load only when training

    bar = None
    if _rank() == 0:
        from tqdm import tqdm

        bar = tqdm(unit="it", dynamic_ncols=True, file=sys.stderr, smoothing=0.05)

    def progress(info) -> None:
        if bar.total != info.total_steps:
            bar.total = info.total_steps
            bar.n = info.step - 1
            bar.refresh()
        bar.update(info.step - bar.n)
        post = {"epoch": f"{info.epoch}/{info.total_epochs}", "img/s": f"{info.images_per_s:.1f}"}
        if info.losses:
            post["cyc_A"] = f"{info.losses['cycle_A']:.3f}"
            post["cyc_B"] = f"{info.losses['cycle_B']:.3f}"
        bar.set_postfix(post, refresh=False)

    # Rank 0 writes the run folder: a second run on it would corrupt latest.pt, so it is refused.
    lock = OutputLock(config.out_dir, "cyclemask-train").acquire() if _rank() == 0 else None
    try:
        result = train(config, progress=progress if bar is not None else None, resume=resume_arg)
    finally:
        if bar is not None:
            bar.close()
        if lock is not None:
            lock.release()
    if result.rank == 0:
        _summary(result, config)
    code = stop_exit_code() if result.stopped == "signal" else 0
    if result.world_size > 1:
        _exit_without_finalizing(code)
    if code:
        sys.exit(code)


def _exit_without_finalizing(code: int = 0) -> None:
    """End a torchrun rank after a successful run without interpreter shutdown: gloo's worker
    threads, which torch never joins once DDP has been used, can still be releasing tensors
    then, and that aborts the process (see train.distributed.cleanup). Everything is written
    and closed by now; only the streams and log handlers need flushing."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _summary(result, config: TrainConfig) -> None:
    click.echo(f"stopped: {result.stopped} after {result.steps} iterations "
               f"({result.epochs_completed}/{config.total_epochs} epochs), "
               f"{result.images_per_s:.1f} images/s over {result.seconds:.0f} s")
    if result.last_losses:
        click.echo("last losses: " + ", ".join(f"{k} {v:.3f}" for k, v in result.last_losses.items()))
    if result.skipped_files:
        click.echo(f"skipped {len(result.skipped_files)} unreadable image(s) (listed above)")
    click.echo(f"generators (for cyclemask-export): {result.generators_path}")
    click.echo(f"checkpoint: {result.checkpoint_path}  config: {result.config_path}")
    click.echo(f"losses: {result.loss_log_path}" + (f", plot {result.loss_plot_path}" if result.loss_plot_path else ""))
    if result.sample_grids:
        click.echo(f"sample grids: {result.sample_grids[-1].parent} ({len(result.sample_grids)} written)")
    if result.stopped == "max_iters":
        click.echo(f"continue with: cyclemask-train --out {config.out_dir} --resume --max-iters 0 "
                   f"(or a larger limit: the run's config keeps --max-iters {config.max_iters})")
    elif result.stopped != "completed":
        click.echo(f"continue with: cyclemask-train --out {config.out_dir} --resume")


if __name__ == "__main__":
    main()
