"""Two processes under torchrun (gloo, CPU) train exactly what one process does with the same
global batch, and hold identical weights."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from cyclemask.checkpoint import load_generators, read_checkpoint
from cyclemask.train import LOSS_NAMES, train
from cyclemask.train.plots import read_loss_log
from cyclemask.train.trainer import Trainer

from train_helpers import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_two_ranks(data, out, *extra: str) -> subprocess.CompletedProcess:
    """cyclemask-train under torchrun, 2 gloo processes, a tiny model: global batch 4, 1 + 1
    epochs. It must exit 0 (ranks that abort at exit fail here too)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "cyclemask.train.cli", "--data-root", str(data), "--out", str(out),
           "--load-size", "36", "--crop-size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "2",
           "--batch-size", "4", "--n-epochs", "1", "--n-epochs-decay", "1", "--num-workers", "0",
           "--device", "cpu", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _norm_cancelled_biases(net: nn.Module) -> set[str]:
    """Biases of convolutions followed by an InstanceNorm: the norm subtracts them again, so
    their true gradient is zero and Adam turns rounding noise into +-lr steps. They cannot
    change any output; the comparison of outputs below covers them."""
    names = set()
    for prefix, mod in net.named_modules():
        if isinstance(mod, nn.Sequential):
            kids = list(mod.named_children())
            for (n1, m1), (_, m2) in zip(kids, kids[1:]):
                if isinstance(m1, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(m2, nn.InstanceNorm2d) and m1.bias is not None:
                    names.add(f"{prefix}.{n1}.bias" if prefix else f"{n1}.bias")
    return names


def test_two_gloo_processes_match_one_process(tiny_data, tmp_path):
    # Global batch 4 over 8 images: 2 iterations per epoch, 2 epochs (the second at half rate).
    # Pool off: each rank has its own pool, which one process cannot mirror. Crops and flips
    # stay on: they are seeded per sample, so they do not depend on the rank.
    common = dict(batch_size=4, pool_size=0, n_epochs=1, n_epochs_decay=1, save_every=10)
    single_cfg = tiny_config(tiny_data, tmp_path / "single", **common)
    train(single_cfg)

    ddp_out = tmp_path / "ddp"
    proc = _train_two_ranks(tiny_data, ddp_out, "--pool-size", "0", "--save-every", "10", "--n-samples", "2")
    assert "stopped: completed after 4 iterations" in proc.stdout  # printed by rank 0 only
    assert proc.stdout.count("stopped: completed") == 1

    ddp_state = read_checkpoint(ddp_out / "latest.pt")
    assert ddp_state["world_size"] == 2 and ddp_state["step"] == 4
    digests = [rs["param_sha256"] for rs in ddp_state["rank_states"]]
    assert len(digests) == 2 and digests[0] == digests[1]  # both ranks, bit-identical weights

    single_state = read_checkpoint(tmp_path / "single" / "latest.pt")
    probe = Trainer(single_cfg)
    for name in ("G_A", "G_B", "D_A", "D_B"):
        skip = _norm_cancelled_biases(probe.nets[name])
        a, b = single_state["nets"][name], ddp_state["nets"][name]
        assert set(a) == set(b)
        compared = [k for k in a if k not in skip]
        assert len(compared) > len(skip)
        for k in compared:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-5, msg=f"{name}.{k}")

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    g_single = load_generators(tmp_path / "single" / "generators.pt")
    g_ddp = load_generators(ddp_out / "generators.pt")
    for d in ("mask", "unmask"):
        with torch.no_grad():
            torch.testing.assert_close(g_ddp[d].generator(x), g_single[d].generator(x), rtol=0, atol=1e-4)

    # The logged losses are the mean over ranks, i.e. the loss of the global batch.
    la, lb = read_loss_log(tmp_path / "single" / "losses.jsonl"), read_loss_log(ddp_out / "losses.jsonl")
    assert [r["step"] for r in lb] == list(range(1, 5))
    diffs = [abs(x[k] - y[k]) for x, y in zip(la, lb) for k in LOSS_NAMES]
    assert max(diffs) < 1e-4


@pytest.mark.slow  # a second torchrun start: ~10-20 s
def test_two_processes_with_wgangp_batchnorm_and_pools(tiny_data, tmp_path):
    """The other code paths under DDP: the gradient penalty's double backward (outside DDP),
    batch-norm buffers, one image pool per rank saved for each rank."""
    out = tmp_path / "ddp"
    _train_two_ranks(tiny_data, out, "--pool-size", "3", "--gan-mode", "wgangp", "--norm", "batch",
                     "--n-samples", "0")
    state = read_checkpoint(out / "latest.pt")
    assert state["step"] == 4 and state["world_size"] == 2
    ranks = state["rank_states"]
    assert ranks[0]["param_sha256"] == ranks[1]["param_sha256"]
    # Each rank keeps its own pool (filled with its own fakes) and its own RNG stream.
    assert len(ranks[0]["pool_A"]["images"]) == len(ranks[1]["pool_A"]["images"]) == 3
    assert not torch.equal(ranks[0]["pool_A"]["images"][0], ranks[1]["pool_A"]["images"][0])
    records = read_loss_log(out / "losses.jsonl")
    assert len(records) == 4 and all(np.isfinite(r[k]) for r in records for k in LOSS_NAMES)
