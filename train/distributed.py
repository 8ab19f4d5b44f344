"""Multi-process training from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT): one process per GPU, NCCL between GPUs, gloo on CPU.

Several nodes work the same way through torchrun's rendezvous, e.g. on each node
`torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST:29400 -m cyclemask.train.cli ...`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cyclemask.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # True when this module created the process group (and so must destroy it).
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer; got {value!r}") from None


def resolve_device(preference: str, local_rank: int = 0, distributed: bool = False) -> torch.device:
    """'auto' picks CUDA when present. Under DDP on CUDA each process takes GPU LOCAL_RANK."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {preference!r} asked for, but CUDA is not available here "
                          f"(torch {torch.__version__}); use --device cpu")
    if preference.startswith("cuda:") and not distributed:
        index = int(preference[5:])
    else:
        index = local_rank if distributed else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"GPU {index} asked for, but only {torch.cuda.device_count()} are visible")
    return torch.device("cuda", index)


def setup(device_preference: str) -> tuple[DistEnv, torch.device]:
    """Read torchrun's environment; start the process group when WORLD_SIZE > 1."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    device = resolve_device(device_preference, local_rank, world > 1)
    if world == 1:
        return DistEnv(), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend}
        if device.type == "cuda":
            # Binds the communicator to this GPU and lets NCCL set up eagerly.
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        owns = True
        log.info("process group up: backend %s, rank %d of %d", backend, rank, world)
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, owns), device


def cleanup(env: DistEnv) -> None:
    """Destroy the process group.

    This does not end gloo's worker threads: once a DistributedDataParallel has been built,
    torch keeps the C++ group alive to the end (pytorch#107298). Such a thread releases a
    collective's tensors a moment after the caller's wait() returns, and that release takes
    the GIL; if the interpreter is shutting down by then, the thread is killed inside C++ and
    the process aborts ("terminate called without an active exception"; about 1 run in 10 of
    a 2-rank CPU run of torch 2.13). So a process that trained under torchrun ends with
    os._exit once its files are written, as cyclemask-train does (train/cli.py).
    """
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    """Every rank's obj, on every rank (pickled over the process group: internal traffic only,
    never read from disk)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(env: DistEnv, flag: bool, device: torch.device) -> bool:
    """True when the flag is set on any rank: every rank must stop at the same step."""
    if not env.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(env: DistEnv, t: torch.Tensor) -> torch.Tensor:
    if not env.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / env.world_size
