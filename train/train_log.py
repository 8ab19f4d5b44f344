"""The loss log of a run: losses.jsonl (and TensorBoard, when the package is installed).

Each iteration's losses stay on the device until a flush, when they are averaged over ranks (a
collective: every rank flushes at the same steps) and rank 0 writes one JSON record per
iteration.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import torch

from cyclemask.errors import own_module_missing
from cyclemask.image_files import write_bytes_atomic

from . import distributed
from .plots import LOSS_NAMES, read_loss_log

log = logging.getLogger(__name__)


class LossLog:
    """Buffered per-iteration losses of one process; rank 0 owns the files."""

    def __init__(self, env: distributed.DistEnv) -> None:
        self.env = env
        #: (step, 0-based epoch, iteration in the epoch, lr, losses on the device) not yet written
        self.pending: list[tuple[int, int, int, float, torch.Tensor]] = []
        #: the latest flushed losses by name (rank 0)
        self.last: dict[str, float] = {}
        self._file = None
        self._tb = None

    def open(self, out: Path, keep_until: int) -> None:
        """Start losses.jsonl and TensorBoard (rank 0 only)."""
        self._open_file(out / "losses.jsonl", keep_until)
        self._tb = tensorboard_writer(out / "tensorboard")

    def _open_file(self, path: Path, keep_until: int) -> None:
        """Start the JSONL log; on resume keep only the records the checkpoint covers (a crash
        after the last save leaves records the resumed run will write again)."""
        if keep_until and path.is_file():
            kept = [r for r in read_loss_log(path) if r.get("step", 0) <= keep_until]
            write_bytes_atomic(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        else:
            write_bytes_atomic(path, b"")
        self._file = open(path, "a", buffering=1)

    def add(self, step: int, epoch: int, it: int, lr: float, losses: torch.Tensor) -> None:
        self.pending.append((step, epoch, it, lr, losses))

    def flush(self, iters_per_epoch: int, time_s: Callable[[], float]) -> None:
        """Average the pending losses over ranks and write them (rank 0). `time_s` gives the
        run's training seconds so far, read after the collective."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        values = distributed.mean_over_ranks(self.env, torch.stack([p[4] for p in pending])).cpu().tolist()
        if not self.env.is_main:
            return
        now = time_s()
        lines = []
        for (step, epoch, it, lr, _), vals in zip(pending, values):
            rec = {"step": step, "epoch": epoch + 1, "iter": it,
                   "epoch_f": round(epoch + it / iters_per_epoch, 6), "lr": lr,
                   "time_s": round(now, 3)}
            rec.update(zip(LOSS_NAMES, vals))
            lines.append(json.dumps(rec) + "\n")
            if self._tb is not None:
                for name, v in zip(LOSS_NAMES, vals):
                    self._tb.add_scalar(f"loss/{name}", v, step)
        self._file.write("".join(lines))
        self.last = dict(zip(LOSS_NAMES, values[-1]))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def tensorboard_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        if own_module_missing(exc):
            raise
        log.info("tensorboard is not installed: losses go to losses.jsonl and losses.png only")
        return None
    return SummaryWriter(str(path))
