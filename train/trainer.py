"""The paper's CycleGAN trainer (Methods III.1-3), on one device or many (DDP via torchrun).

Library API: `train(config, progress=None, resume=False) -> TrainResult`. One iteration does what
the reference's `optimize_parameters` does: translate both ways, update both generators
(adversarial + cycle + identity), then both discriminators on pooled fakes, each with its loss
halved.

Files in `config.out_dir` (only rank 0 writes):
  config.json            the resolved config (accepted back by `cyclemask-train --config`)
  latest.pt              full training state, rewritten atomically (resume from it)
  epoch_NNNN.pt          the same every `save_every` epochs and at the end
  generators.pt          the generator bundle {"mask": G_A, "unmask": G_B} (what export reads)
  generators_epoch_NNNN.pt  the bundle at the same epochs as epoch_NNNN.pt
  losses.jsonl           the eight losses of every iteration (averaged over ranks)
  losses.png             the losses over training (paper Fig. 6)
  samples/epoch_NNNN.png fakes both ways on fixed test images (paper Fig. 10)
  tensorboard/           the losses again, when the tensorboard package is installed

This module is the loop and its phases; the checkpoint format and files are train/checkpointing.py,
the random streams' state train/rng.py, the loss log train/train_log.py and the sample grids
train/samples.py.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from cyclemask.checkpoint import load_generators, versions
from cyclemask.config import DiscriminatorConfig, GeneratorConfig
from cyclemask.errors import CheckpointError, ConfigError, DataError
from cyclemask.image_files import write_bytes_atomic
from cyclemask.models import build_discriminator, build_generator, init_weights

from . import distributed
from .checkpointing import (NET_NAMES, STATE_FORMAT, STATE_FORMAT_VERSION, param_digest, restore_learning_rates,
                            state_to_resume, write_checkpoints)
from .config import TrainConfig
from .datasets import (EpochSampler, UnpairedDataset, collate, find_domain, find_pairs, load_sample_images,
                       matte_path, merge_pairs)
from .losses import GANLoss, gradient_penalty
from .plots import plot_losses, read_loss_log
from .pool import ImagePool
from .rng import rng_state, set_rng_state
from .samples import write_epoch_samples
from .schedules import build_scheduler
from .train_log import LossLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressInfo:
    """Handed to the `progress` callback after every iteration (rank 0 only)."""

    step: int
    total_steps: int
    epoch: int  # 1-based
    total_epochs: int
    iter_in_epoch: int
    iters_per_epoch: int
    images_per_s: float
    eta_s: float | None
    lr: float
    losses: dict[str, float] | None  # the latest logged losses (may lag a few steps on GPU)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced. Paths are where rank 0 wrote them."""

    out_dir: Path
    generators_path: Path
    checkpoint_path: Path
    config_path: Path
    loss_log_path: Path
    loss_plot_path: Path | None
    sample_grids: tuple[Path, ...]
    last_losses: dict[str, float]
    steps: int
    epochs_completed: int
    stopped: str  # "completed", "max_iters", "time_budget" or "signal"
    seconds: float
    images_per_s: float
    skipped_files: tuple[str, ...] = field(default_factory=tuple)
    rank: int = 0
    world_size: int = 1


def train(config: TrainConfig, progress: Callable[[ProgressInfo], None] | None = None,
          resume: bool | str | os.PathLike = False) -> TrainResult:
    """Train CycleGAN as `config` says. Under torchrun (WORLD_SIZE > 1) every process calls this
    and they train together; only rank 0 logs and writes files.

    resume: False starts a new run (refused if out_dir already holds one); True continues from
    out_dir/latest.pt; a path continues from that checkpoint. Runtime fields (see
    config.RUNTIME_FIELDS) may differ from the checkpoint's config, the others must match.
    """
    env, device = distributed.setup(config.device)
    try:
        trainer = Trainer(config, env, device)
        return trainer.run(progress=progress, resume=resume)
    finally:
        distributed.cleanup(env)


def _set_requires_grad(nets: tuple[nn.Module, ...], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class Trainer:
    """Networks, optimizers, schedulers and pools of one process, and the training loop.

    `train_step` is public so that benchmarks time exactly the code that trains.
    """

    def __init__(self, config: TrainConfig, env: distributed.DistEnv | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.config = cfg = config
        self.env = env or distributed.DistEnv()
        self.device = torch.device(device)
        if cfg.norm == "syncbatch" and self.env.distributed and self.device.type != "cuda":
            raise ConfigError("norm 'syncbatch' needs CUDA (torch's SyncBatchNorm runs on GPUs "
                              "only); use norm 'batch' for multi-process CPU training")
        if cfg.batch_size % self.env.world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} is the global batch and must divide "
                              f"evenly among the {self.env.world_size} processes")
        self.per_rank_batch = cfg.batch_size // self.env.world_size
        if cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda"
                                       and torch.cuda.is_bf16_supported()):
            self.autocast_dtype: torch.dtype | None = torch.bfloat16
        else:
            self.autocast_dtype = None

        # Same seed on every rank: identical initial weights (DDP would broadcast rank 0's anyway).
        torch.manual_seed(cfg.seed)
        gcfg = GeneratorConfig(ngf=cfg.ngf, n_blocks=cfg.n_blocks, norm=cfg.norm, dropout=cfg.dropout)
        dcfg = DiscriminatorConfig(ndf=cfg.ndf, n_layers=cfg.n_layers_D, norm=cfg.norm)
        nets = {
            "G_A": init_weights(build_generator(gcfg, init=False), cfg.init_gain),
            "G_B": init_weights(build_generator(gcfg, init=False), cfg.init_gain),
            "D_A": init_weights(build_discriminator(dcfg, init=False), cfg.init_gain),
            "D_B": init_weights(build_discriminator(dcfg, init=False), cfg.init_gain),
        }
        self.net_names = NET_NAMES
        if cfg.zone_gan_weight > 0:
            nets["D_zone"] = init_weights(build_discriminator(dcfg, init=False), cfg.init_gain)
            self.net_names = NET_NAMES + ("D_zone",)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        for name, net in nets.items():
            net.to(self.device, memory_format=memory_format).train()
            if cfg.norm == "syncbatch" and self.env.distributed:
                nets[name] = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.nets = nets
        self.memory_format = memory_format

        self.opt_G = torch.optim.Adam(itertools.chain(nets["G_A"].parameters(), nets["G_B"].parameters()),
                                      lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.opt_D = torch.optim.Adam(itertools.chain(*(nets[n].parameters() for n in self.net_names[2:])),
                                      lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.sched_G = build_scheduler(self.opt_G, cfg.lr_policy, cfg.n_epochs, cfg.n_epochs_decay)
        self.sched_D = build_scheduler(self.opt_D, cfg.lr_policy, cfg.n_epochs, cfg.n_epochs_decay)
        # Per rank, as each rank sees its own fakes; seeded per rank so the ranks differ.
        rank = self.env.rank
        self.pool_A = ImagePool(cfg.pool_size, seed=cfg.seed * 1000 + 2 * rank)  # fakes of A for D_B
        self.pool_B = ImagePool(cfg.pool_size, seed=cfg.seed * 1000 + 2 * rank + 1)  # fakes of B for D_A
        self.gp_generator = torch.Generator().manual_seed(cfg.seed * 1000 + 7919 + rank)
        self.gan_loss = GANLoss(cfg.gan_mode)

        # Wrapped modules used for training; self.nets keeps the plain ones for saving.
        self.g_a = self._wrap(nets["G_A"])
        self.g_b = self._wrap(nets["G_B"])
        self.d_a = self._wrap(nets["D_A"])
        self.d_b = self._wrap(nets["D_B"])
        # In the generator step the discriminators are frozen: no gradient of theirs to
        # synchronise, so they run outside DDP (whose reducer would wait for gradients that
        # never come).
        self.d_a_frozen = torch.compile(nets["D_A"]) if cfg.compile else nets["D_A"]
        self.d_b_frozen = torch.compile(nets["D_B"]) if cfg.compile else nets["D_B"]
        if "D_zone" in nets:
            self.d_zone = self._wrap(nets["D_zone"])
            self.d_zone_frozen = torch.compile(nets["D_zone"]) if cfg.compile else nets["D_zone"]

        self.step = 0
        self.epoch = 0  # 0-based epoch in progress
        self.batch_in_epoch = 0  # batches of self.epoch already done
        self.elapsed_before = 0.0  # training seconds of earlier invocations (resume)
        self.skipped: dict[str, None] = {}
        self._saved_step: int | None = None
        self._stop_signal: int | None = None
        # State of a run in progress (see `run`).
        self._t_start: float | None = None
        self._iters_per_epoch = 1
        self._last_plot = 0.0
        self.loss_log = LossLog(self.env)
        self._step_times: deque[tuple[float, int]] = deque(maxlen=50)

    def _wrap(self, net: nn.Module) -> nn.Module:
        m: nn.Module = net
        if self.env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            m = DDP(m, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.config.compile:
            m = torch.compile(m)
        return m

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ---------------------------------------------------------------- one iteration

    def train_step(self, real_A: torch.Tensor, real_B: torch.Tensor, twins: dict | None = None) -> torch.Tensor:
        """One CycleGAN iteration on this rank's batch; returns the losses (detached, float32,
        on the device, in plots.LOSS_NAMES order).

        twins: the batch's `A_twin`, `A_paired`, `B_twin`, `B_paired` (see UnpairedDataset)
        when training with pairs; the paired L1 terms cover the samples that have a twin."""
        cfg = self.config
        real_A = real_A.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        real_B = real_B.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        lam_idt = cfg.lambda_identity
        D_nets = tuple(self.nets[n] for n in self.net_names[2:])
        zone = self._zone(twins)

        with self._autocast():
            fake_B = self.g_a(real_A)
            rec_A = self.g_b(fake_B)
            fake_A = self.g_b(real_B)
            rec_B = self.g_a(fake_A)
            if lam_idt > 0:
                idt_A = self.g_a(real_B)
                idt_B = self.g_b(real_A)

        # Generators: fool the (frozen) discriminators, close both cycles, keep identity.
        _set_requires_grad(D_nets, False)
        self.opt_G.zero_grad(set_to_none=True)
        with self._autocast():
            loss_G_A = self.gan_loss(self.d_a_frozen(fake_B), True)
            loss_G_B = self.gan_loss(self.d_b_frozen(fake_A), True)
        loss_cycle_A = F.l1_loss(rec_A.float(), real_A) * cfg.lambda_A
        loss_cycle_B = F.l1_loss(rec_B.float(), real_B) * cfg.lambda_B
        if lam_idt > 0:
            loss_idt_A = F.l1_loss(idt_A.float(), real_B) * cfg.lambda_B * lam_idt
            loss_idt_B = F.l1_loss(idt_B.float(), real_A) * cfg.lambda_A * lam_idt
        else:
            loss_idt_A = loss_idt_B = torch.zeros((), device=self.device)
        loss_pair_A = self._paired_l1(fake_B, twins, "A", zone)
        loss_pair_B = self._paired_l1(fake_A, twins, "B")
        zero = torch.zeros((), device=self.device)
        real_z = fake_z = None
        zone_on = 1.0
        loss_zone_G = zero
        if zone is not None and cfg.zone_gan_weight > 0:
            real_z, fake_z = self._zone_pictures(real_A, fake_B, twins, zone)
            with self._autocast():
                loss_zone_G = self.gan_loss(self.d_zone_frozen(fake_z), True) * cfg.zone_gan_weight
        elif cfg.zone_gan_weight > 0 and self.env.distributed:
            # DDP's gradient sync for D_zone waits for every rank: a rank whose batch has no
            # matte runs it too, on its inputs, weighted 0 (else the other ranks hang).
            real_z, fake_z, zone_on = real_A, real_A, 0.0
        loss_G = (loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
                  + loss_pair_A + loss_pair_B + loss_zone_G)
        loss_G.backward()
        self.opt_G.step()

        # Discriminators: real vs pooled fakes, each loss halved (slows D relative to G).
        _set_requires_grad(D_nets, True)
        self.opt_D.zero_grad(set_to_none=True)
        loss_D_A = self._backward_D(self.d_a, self.nets["D_A"], real_B, self.pool_B.query(fake_B.detach()))
        loss_D_B = self._backward_D(self.d_b, self.nets["D_B"], real_A, self.pool_A.query(fake_A.detach()))
        # No image pool here: a pooled fake would be pasted on another face's surroundings.
        loss_zone_D = (self._backward_D(self.d_zone, self.nets["D_zone"], real_z, fake_z.detach(), zone_on)
                       if real_z is not None else zero)
        self.opt_D.step()

        return torch.stack([loss_D_A, loss_G_A, loss_cycle_A, loss_idt_A, loss_pair_A, loss_zone_G,
                            loss_D_B, loss_G_B, loss_cycle_B, loss_idt_B, loss_pair_B,
                            loss_zone_D]).detach().float()

    def _zone(self, twins: dict | None) -> torch.Tensor | None:
        """The mask direction's zone, N x 1 x H x W in 0..1: each twin's matte grown by
        zone_grow pixels (zeros for samples without one); None when the zone terms are off or
        no sample of the batch has a matte."""
        cfg = self.config
        if (cfg.zone_weight <= 0 and cfg.zone_gan_weight <= 0) or twins is None or "A_matte" not in twins:
            return None
        has = twins["A_has_matte"].to(self.device)
        if not bool(has.any()):
            return None
        m = twins["A_matte"].to(self.device, non_blocking=True).float()
        if cfg.zone_grow:
            k = 2 * cfg.zone_grow + 1
            m = F.max_pool2d(m, k, stride=1, padding=cfg.zone_grow)
        return m * has.view(-1, 1, 1, 1)

    def _zone_pictures(self, real_A: torch.Tensor, fake_B: torch.Tensor, twins: dict,
                       zone: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(twin, fake) of the samples with a matte, each pasted onto its input outside the
        zone: the zone discriminator sees the same surroundings in both and judges the mask."""
        has = twins["A_has_matte"].to(self.device)
        z, x = zone[has], real_A[has].float()
        twin = twins["A_twin"].to(self.device, non_blocking=True)[has]
        return x + z * (twin - x), x + z * (fake_B.float()[has] - x)

    def _paired_l1(self, fake: torch.Tensor, twins: dict | None, domain: str,
                   zone: torch.Tensor | None = None) -> torch.Tensor:
        """paired_weight x L1 between the translations of the samples that have a twin and
        their twins (G_A(x) vs x's masked twin for A, G_B(y) vs y's unmasked source for B).
        Averaged over this rank's paired samples: a batch without any adds zero, and under DDP
        each rank weighs its own pairs (as the other losses weigh its own batch)."""
        w = self.config.paired_weight
        if not w or twins is None:
            return torch.zeros((), device=self.device)
        paired = twins[f"{domain}_paired"].to(self.device)
        if not bool(paired.any()):
            return fake.float().sum() * 0.0  # keeps every rank's graph the same shape under DDP
        twin = twins[f"{domain}_twin"].to(self.device, non_blocking=True)
        if zone is None or self.config.zone_weight <= 0:
            return F.l1_loss(fake.float()[paired], twin[paired]) * w
        # Inside the zone each pixel weighs 1 + zone_weight: the mask's edges and folds count
        # more than the face around it, which the input already gives away.
        weight = 1.0 + self.config.zone_weight * zone[paired]
        return (weight * (fake.float()[paired] - twin[paired]).abs()).mean() * w

    def _backward_D(self, d: nn.Module, d_plain: nn.Module, real: torch.Tensor,
                    fake: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
        with self._autocast():
            loss = (self.gan_loss(d(real), True) + self.gan_loss(d(fake.detach()), False)) * 0.5
        if self.config.gan_mode == "wgangp":
            # Double backward: on the plain module (DDP and torch.compile do not support it);
            # its parameter gradients still reach the DDP reducer through the same accumulators.
            loss = loss + self.config.lambda_gp * gradient_penalty(d_plain, real, fake, self.gp_generator)
        if weight != 1.0:
            loss = loss * weight
        loss.backward()
        return loss

    # ---------------------------------------------------------------- state

    def collect_state(self) -> dict[str, Any] | None:
        """The full training state (a collective under DDP: every rank must call it); rank 0
        gets the dict, the others None."""
        rank_state = {
            "pool_A": self.pool_A.state_dict(),
            "pool_B": self.pool_B.state_dict(),
            "gp_generator": self.gp_generator.get_state(),
            "rng": {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in rng_state(self.device).items()},
            "param_sha256": param_digest(self.nets, self.net_names),
        }
        rank_states = distributed.all_gather_objects(self.env, rank_state)
        if not self.env.is_main:
            return None
        return {
            "format": STATE_FORMAT,
            "format_version": STATE_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.env.world_size,
            "elapsed_s": float(self.elapsed_before + self._run_seconds()),
            "nets": {name: {k: v.detach().cpu() for k, v in self.nets[name].state_dict().items()}
                     for name in self.net_names},
            "optimizers": {"G": self.opt_G.state_dict(), "D": self.opt_D.state_dict()},
            "schedulers": {"G": self.sched_G.state_dict(), "D": self.sched_D.state_dict()},
            "rank_states": rank_states,
            "skipped_files": list(self.skipped),
            "versions": versions(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore from `collect_state`'s dict on every rank."""
        for name in self.net_names:
            try:
                self.nets[name].load_state_dict(state["nets"][name], strict=True)
            except (KeyError, RuntimeError) as exc:
                raise CheckpointError(f"checkpoint weights for {name} do not fit this config: "
                                      f"{str(exc).splitlines()[0][:300]}") from None
        self.opt_G.load_state_dict(state["optimizers"]["G"])
        self.opt_D.load_state_dict(state["optimizers"]["D"])
        self.sched_G.load_state_dict(state["schedulers"]["G"])
        self.sched_D.load_state_dict(state["schedulers"]["D"])
        for opt, sched in ((self.opt_G, self.sched_G), (self.opt_D, self.sched_D)):
            restore_learning_rates(opt, sched)
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        self.skipped = dict.fromkeys(state.get("skipped_files", []))
        rank_states = state["rank_states"]
        if int(state["world_size"]) == self.env.world_size:
            mine = rank_states[self.env.rank]
            self.pool_A.load_state_dict(mine["pool_A"], self.device)
            self.pool_B.load_state_dict(mine["pool_B"], self.device)
            self.gp_generator.set_state(mine["gp_generator"])
            set_rng_state(mine["rng"], self.device)
        else:
            log.warning("checkpoint written by %d processes, resumed by %d: image pools restart "
                        "empty and random streams are reseeded (training continues, but not "
                        "bit-for-bit as it would have)", state["world_size"], self.env.world_size)

    # ---------------------------------------------------------------- the run

    def _run_seconds(self) -> float:
        return 0.0 if self._t_start is None else time.monotonic() - self._t_start

    def run(self, progress: Callable[[ProgressInfo], None] | None = None,
            resume: bool | str | os.PathLike = False) -> TrainResult:
        cfg = self.config
        if not cfg.data_root:
            raise ConfigError("data_root is not set: give the folder that holds trainA/ and trainB/")
        out = Path(cfg.out_dir)
        # Data first: an empty or missing domain fails before anything is written.
        dataset = self._dataset()
        self._resume(out, resume)
        loader, sampler = self._loader(dataset)
        iters_per_epoch = math.ceil(sampler.samples_per_epoch / self.per_rank_batch)
        total_epochs = cfg.total_epochs
        total_steps = total_epochs * iters_per_epoch
        if cfg.max_iters is not None:
            total_steps = min(total_steps, cfg.max_iters)
        self._iters_per_epoch = iters_per_epoch
        samples = self._open_outputs(out, resumed=bool(resume))

        stopped = "completed"
        start_step = self.step
        grids: list[Path] = []
        self._t_start = time.monotonic()
        handlers = self._install_signal_handlers()
        try:
            while self.epoch < total_epochs:
                if cfg.max_iters is not None and self.step >= cfg.max_iters:
                    stopped = "max_iters"
                    break
                reason = self._run_epoch(loader, sampler, out, progress, total_steps, total_epochs)
                if self.batch_in_epoch >= iters_per_epoch:
                    grid = self._end_epoch(out, samples, total_epochs)
                    if grid is not None:
                        grids.append(grid)
                elif reason is not None:
                    self._flush_losses()
                    self.save(out, epoch_files=False)
                if reason is not None:
                    stopped = reason
                    break
        finally:
            self._restore_signal_handlers(handlers)
            self._close_outputs()
        return self._result(out, stopped, start_step, total_epochs, grids)

    def _dataset(self) -> UnpairedDataset:
        cfg = self.config
        paths_A = find_domain(cfg.data_root, "trainA", max_size=cfg.max_dataset_size)
        paths_B = find_domain(cfg.data_root, "trainB", max_size=cfg.max_dataset_size)
        pairs, mask_pairs = ([merge_pairs(paths_A, find_pairs(d, max_size=cfg.max_dataset_size)) if d else []
                              for d in (cfg.pairs_dir, cfg.mask_pairs_dir)])
        log.info("data: %d images in trainA, %d in trainB (%s)%s%s", len(paths_A), len(paths_B), cfg.data_root,
                 f", {len(pairs)} pairs ({cfg.pairs_dir}, weight {cfg.paired_weight:g})" if pairs else "",
                 f", {len(mask_pairs)} mask-direction pairs ({cfg.mask_pairs_dir})" if mask_pairs else "")
        mattes = cfg.zone_weight > 0 or cfg.zone_gan_weight > 0
        if mattes:
            with_matte = [b for _, b in (mask_pairs or pairs) if (m := matte_path(b)) is not None and m.is_file()]
            if not with_matte:
                folder = cfg.mask_pairs_dir or cfg.pairs_dir
                raise DataError(f"{folder}: no twin has a matte (mattes/<name>.png beside with_mask/; "
                                f"cyclemask-data synth writes them), which the zone terms need")
            log.info("mask zone: %d of %d twins have a matte (L1 x%g inside, PatchGAN x%g)", len(with_matte),
                     len(mask_pairs or pairs), cfg.zone_weight, cfg.zone_gan_weight)
        return UnpairedDataset(paths_A, paths_B, cfg.load_size, cfg.crop_size, cfg.flip, cfg.seed, pairs=pairs,
                               mask_pairs=mask_pairs, mattes=mattes)

    def _resume(self, out: Path, resume: bool | str | os.PathLike) -> None:
        """Load the checkpoint to continue from (checking its config), or refuse to start a new
        run over an existing one."""
        found = state_to_resume(out, resume, self.config)
        if found is None:
            if self.config.init_from:  # a new run only: a resumed one has its own weights
                cfg = self.config
                gcfg = GeneratorConfig(ngf=cfg.ngf, n_blocks=cfg.n_blocks, norm=cfg.norm, dropout=cfg.dropout)
                _init_generators(self.nets, cfg.init_from, gcfg)
            return
        ckpt_path, state = found
        self.load_state(state)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt_path, self.step,
                 self.epoch + 1, self.batch_in_epoch)

    def _loader(self, dataset: UnpairedDataset) -> tuple[DataLoader, EpochSampler]:
        cfg, env = self.config, self.env
        sampler = EpochSampler(dataset, env.world_size, env.rank, seed=cfg.seed)
        workers = cfg.num_workers
        loader = DataLoader(
            dataset, batch_size=self.per_rank_batch, sampler=sampler, num_workers=workers,
            collate_fn=collate, pin_memory=self.device.type == "cuda", drop_last=False,
            worker_init_fn=_worker_init if workers else None, persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None,
            # Its own generator: DataLoader draws worker seeds from it, not from the global RNG.
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        return loader, sampler

    def _open_outputs(self, out: Path, resumed: bool):
        """config.json, the loss log and TensorBoard (rank 0); returns the sample images."""
        cfg = self.config
        self._last_plot = time.monotonic()
        if not self.env.is_main:
            return None
        out.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out / "config.json", cfg.to_json().encode())
        self.loss_log.open(out, keep_until=self.step if resumed else 0)
        return load_sample_images(cfg.data_root, cfg.crop_size, cfg.n_samples, cfg.max_dataset_size)

    def _close_outputs(self) -> None:
        self.loss_log.close()

    def _run_epoch(self, loader: DataLoader, sampler: EpochSampler, out: Path,
                   progress: Callable[[ProgressInfo], None] | None, total_steps: int,
                   total_epochs: int) -> str | None:
        """The rest of the current epoch; returns why it stopped early, or None at its end."""
        cfg = self.config
        flush_every = 1 if self.device.type == "cpu" else 20
        sampler.set_epoch(self.epoch, start=self.batch_in_epoch * self.per_rank_batch)
        lr = self.opt_G.param_groups[0]["lr"]
        for batch in loader:
            self._note_skipped(batch["skipped"])
            losses = self.train_step(batch["A"], batch["B"], batch if "A_twin" in batch else None)
            self.step += 1
            self.batch_in_epoch += 1
            self.loss_log.add(self.step, self.epoch, self.batch_in_epoch, lr, losses)
            self._step_times.append((time.monotonic(), self.step))
            reason = "max_iters" if cfg.max_iters is not None and self.step >= cfg.max_iters else None
            if len(self.loss_log.pending) >= flush_every or reason:
                self._flush_losses()
                reason = reason or self._external_stop()
            if self.env.is_main and progress is not None:
                progress(self._progress_info(total_steps, total_epochs, lr))
            epoch_done = self.batch_in_epoch >= self._iters_per_epoch
            if (not epoch_done and cfg.save_latest_every
                    and self.step % cfg.save_latest_every == 0 and not reason):
                self._flush_losses()
                self.save(out, epoch_files=False)
            if reason:
                return reason
        return None

    def _result(self, out: Path, stopped: str, start_step: int, total_epochs: int, grids: list[Path]) -> TrainResult:
        cfg, env = self.config, self.env
        seconds = self._run_seconds()
        self._gather_skipped()
        if stopped == "completed" and self.step == start_step:
            log.info("nothing to do: the run had already finished all %d epochs", total_epochs)
        plot_path = out / "losses.png"
        if env.is_main:
            plot_path = plot_losses(read_loss_log(out / "losses.jsonl"), plot_path) or None
        images = (self.step - start_step) * cfg.batch_size
        ips = images / seconds if seconds > 0 else 0.0
        log.info("stopped (%s) at step %d, epoch %d of %d; %.1f images/s over %.0f s",
                 stopped, self.step, self.epoch, total_epochs, ips, seconds)
        return TrainResult(
            out_dir=out, generators_path=out / "generators.pt", checkpoint_path=out / "latest.pt",
            config_path=out / "config.json", loss_log_path=out / "losses.jsonl",
            loss_plot_path=plot_path if env.is_main else None, sample_grids=tuple(grids),
            last_losses=dict(self.loss_log.last), steps=self.step, epochs_completed=self.epoch,
            stopped=stopped, seconds=seconds, images_per_s=ips,
            skipped_files=tuple(self.skipped), rank=env.rank, world_size=env.world_size,
        )

    def _end_epoch(self, out: Path, samples, total_epochs: int) -> Path | None:
        cfg = self.config
        self.sched_G.step()
        self.sched_D.step()
        self.epoch += 1
        self.batch_in_epoch = 0
        self._flush_losses()
        self._gather_skipped()
        finished = self.epoch >= total_epochs
        grid = None
        if self.env.is_main:
            if samples is not None and (self.epoch % cfg.sample_every == 0 or finished):
                grid = write_epoch_samples(out / "samples" / f"epoch_{self.epoch:04d}.png", self.nets["G_A"],
                                           self.nets["G_B"], samples)
            # Redrawn at most twice a minute: tiny epochs would otherwise spend their time in
            # matplotlib. The final plot is always drawn when the run returns.
            if time.monotonic() - self._last_plot >= 30.0:
                plot_losses(read_loss_log(out / "losses.jsonl"), out / "losses.png")
                self._last_plot = time.monotonic()
            if self.loss_log.last:
                log.info("epoch %d/%d done (step %d): %s", self.epoch, total_epochs, self.step,
                         ", ".join(f"{k} {v:.3f}" for k, v in self.loss_log.last.items()))
        self.save(out, epoch_files=self.epoch % cfg.save_every == 0 or finished)
        return grid

    def save(self, out: Path, epoch_files: bool) -> None:
        """Write latest.pt and generators.pt (and the epoch_NNNN copies) atomically. A
        collective under DDP; rank 0 writes."""
        state = self.collect_state()
        if state is None:
            return
        digests = {rs["param_sha256"] for rs in state["rank_states"]}
        if len(digests) != 1:
            # DDP keeps replicas identical; a difference means something broke that invariant.
            log.error("ranks hold different weights at step %d (%d distinct digests)", self.step, len(digests))
        extra = {"step": self.step, "epoch": self.epoch, "train_config": self.config.to_dict()}
        gens = {"mask": self.nets["G_A"], "unmask": self.nets["G_B"]}
        write_checkpoints(out, state, gens, extra, self.epoch, epoch_files, self.step, self._saved_step)
        self._saved_step = self.step
        log.debug("saved step %d to %s", self.step, out)

    # ---------------------------------------------------------------- logging

    def _flush_losses(self) -> None:
        self.loss_log.flush(self._iters_per_epoch, lambda: self.elapsed_before + self._run_seconds())

    def _progress_info(self, total_steps: int, total_epochs: int, lr: float) -> ProgressInfo:
        ips = 0.0
        eta = None
        times = self._step_times
        if len(times) >= 2:
            (t0, s0), (t1, s1) = times[0], times[-1]
            if t1 > t0:
                steps_per_s = (s1 - s0) / (t1 - t0)
                ips = steps_per_s * self.config.batch_size
                eta = max(0, total_steps - self.step) / steps_per_s if steps_per_s > 0 else None
        return ProgressInfo(self.step, total_steps, self.epoch + 1, total_epochs, self.batch_in_epoch,
                            self._iters_per_epoch, ips, eta, lr, dict(self.loss_log.last) or None)

    def _note_skipped(self, messages: list[str]) -> None:
        for msg in messages:
            if msg not in self.skipped:
                self.skipped[msg] = None
                if self.env.is_main:
                    log.warning("skipped an unreadable image (reported once): %s", msg)

    def _gather_skipped(self) -> None:
        """Other ranks' unreadable files, reported by rank 0 once."""
        if not self.env.distributed:
            return
        for msgs in distributed.all_gather_objects(self.env, list(self.skipped)):
            self._note_skipped(msgs)

    # ---------------------------------------------------------------- stopping

    def _external_stop(self) -> str | None:
        """A signal or the time budget, agreed among ranks so all stop at the same step."""
        reason = None
        if self._stop_signal is not None:
            reason = "signal"
        elif self.config.time_budget_s is not None and self._run_seconds() >= self.config.time_budget_s:
            reason = "time_budget"
        if distributed.any_rank(self.env, reason is not None, self.device):
            return reason or "signal"
        return None

    def _install_signal_handlers(self):
        """SIGINT / SIGTERM: finish the current iteration, save, return (the CLI then exits 130 /
        143). A second signal exits at once without saving (cyclemask.cli_util)."""
        from cyclemask.cli_util import stop_callback

        def on_stop(signum: int) -> None:
            self._stop_signal = signum
            if self.env.is_main:
                log.warning("%s received: stopping after this iteration and saving (a second signal "
                            "stops at once, without saving)", signal.Signals(signum).name)

        handlers = contextlib.ExitStack()
        handlers.enter_context(stop_callback(on_stop))
        return handlers

    @staticmethod
    def _restore_signal_handlers(handlers) -> None:
        handlers.close()


def _init_generators(nets: dict[str, nn.Module], path: str, gcfg: GeneratorConfig) -> None:
    """Start G_A / G_B from a generator bundle's mask / unmask generators (fine-tuning)."""
    loaded = load_generators(path, ngf=gcfg.ngf, n_blocks=gcfg.n_blocks, norm=gcfg.norm)
    missing = [d for d in ("mask", "unmask") if d not in loaded]
    if missing:
        raise CheckpointError(f"{path}: init_from needs a bundle with both generators; it has no "
                              f"{' or '.join(missing)} generator")
    for name, direction in (("G_A", "mask"), ("G_B", "unmask")):
        try:
            nets[name].load_state_dict(loaded[direction].generator.state_dict(), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: its {direction} generator does not fit this config: "
                                  f"{str(exc).splitlines()[0][:300]}") from None
    log.info("generators initialised from %s", path)


def _worker_init(_worker_id: int) -> None:
    # Workers decode and resize one image at a time: more threads only oversubscribe the cores.
    torch.set_num_threads(1)
    # Ctrl-C and SIGTERM reach the whole process group. The main process stops cleanly and
    # then shuts the workers down; a worker dying first would abort that save (the DataLoader
    # raises on a killed worker), and a forked copy of the main's handler would only log twice.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
