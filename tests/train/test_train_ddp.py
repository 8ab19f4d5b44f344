"""Two processes under torchrun (gloo, CPU) train exactly what one process does with the same
global batch, and hold identical weights: on one node, and as two nodes (two torchrun agents
meeting through the c10d rendezvous, as on two machines)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

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


def _train_args(data, out, *extra: str) -> list[str]:
    """cyclemask-train on a tiny model: global batch 4, 1 + 1 epochs."""
    return ["-m", "cyclemask.train.cli", "--data-root", str(data), "--out", str(out),
            "--load-size", "36", "--crop-size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "2",
            "--batch-size", "4", "--n-epochs", "1", "--n-epochs-decay", "1", "--num-workers", "0",
            "--device", "cpu", *extra]


def _train_two_ranks(data, out, *extra: str) -> subprocess.CompletedProcess:
    """cyclemask-train under torchrun, 2 gloo processes on one node. It must exit 0 (ranks that
    abort at exit fail here too)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *_train_args(data, out, *extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _train_two_nodes(data, out, logs, *extra: str) -> list[str]:
    """cyclemask-train as two nodes of one process each: two torchrun agents started side by side,
    as one would be on each machine, that find each other through the c10d rendezvous at one
    endpoint (the first agent there hosts its store). Both must exit 0; returns their stdouts."""
    endpoint = f"127.0.0.1:{_free_port()}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "cyclemask-two-nodes",
           # The address each node tells the others (MASTER_ADDR comes from rank 0's): on a real
           # cluster the node's own; here both are this machine.
           "--local_addr", "127.0.0.1", "--max_restarts", "0", *_train_args(data, out, *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs.mkdir(parents=True, exist_ok=True)
    procs, files = [], []
    try:
        for node in range(2):
            # Files, not pipes: a blocked pipe would stall one agent and with it the other's collectives.
            out_f, err_f = open(logs / f"node{node}.out", "w+"), open(logs / f"node{node}.err", "w+")
            files += [out_f, err_f]
            procs.append(subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True, env=env))
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()
    texts = [(logs / f"node{n}.{k}").read_text() for n in range(2) for k in ("out", "err")]
    assert codes == [0, 0], "\n".join(t[-3000:] for t in texts)
    return [texts[0], texts[2]]


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


# Global batch 4 over 8 images: 2 iterations per epoch, 2 epochs (the second at half rate).
# Pool off: each rank has its own pool, which one process cannot mirror. Crops and flips stay
# on: they are seeded per sample, so they do not depend on the rank.
_COMPARED = dict(batch_size=4, pool_size=0, n_epochs=1, n_epochs_decay=1, save_every=10)
_COMPARED_ARGS = ("--pool-size", "0", "--save-every", "10", "--n-samples", "2")


@pytest.mark.slow  # two torchrun processes (~10 s); the one-process trainer tests stay fast
def test_two_gloo_processes_match_one_process(tiny_data, tmp_path):
    single_cfg = tiny_config(tiny_data, tmp_path / "single", **_COMPARED)
    train(single_cfg)

    ddp_out = tmp_path / "ddp"
    proc = _train_two_ranks(tiny_data, ddp_out, *_COMPARED_ARGS)
    assert "stopped: completed after 4 iterations" in proc.stdout  # printed by rank 0 only
    assert proc.stdout.count("stopped: completed") == 1
    _assert_matches_one_process(single_cfg, ddp_out)


@pytest.mark.slow  # two torchrun starts (~20 s)
def test_two_nodes_through_the_c10d_rendezvous_match_one_process(tiny_data, tmp_path):
    single_cfg = tiny_config(tiny_data, tmp_path / "single", **_COMPARED)
    train(single_cfg)

    ddp_out = tmp_path / "two_nodes"
    stdouts = _train_two_nodes(tiny_data, ddp_out, tmp_path / "logs", *_COMPARED_ARGS)
    # Which agent's process became rank 0 is the rendezvous's choice; only that one reports.
    assert sorted(s.count("stopped: completed after 4 iterations") for s in stdouts) == [0, 1]
    # One process per agent, and a world of two (checked below): both agents joined.
    _assert_matches_one_process(single_cfg, ddp_out)


def _assert_matches_one_process(single_cfg, ddp_out) -> None:
    """Both ranks hold bit-identical weights, equal to one process's within float rounding, and
    the logged losses are the global batch's."""
    ddp_state = read_checkpoint(ddp_out / "latest.pt")
    assert ddp_state["world_size"] == 2 and ddp_state["step"] == 4
    digests = [rs["param_sha256"] for rs in ddp_state["rank_states"]]
    assert len(digests) == 2 and digests[0] == digests[1]  # both ranks, bit-identical weights

    single_dir = Path(single_cfg.out_dir)
    single_state = read_checkpoint(single_dir / "latest.pt")
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
    g_single = load_generators(single_dir / "generators.pt")
    g_ddp = load_generators(ddp_out / "generators.pt")
    for d in ("mask", "unmask"):
        with torch.no_grad():
            torch.testing.assert_close(g_ddp[d].generator(x), g_single[d].generator(x), rtol=0, atol=1e-4)

    # The logged losses are the mean over ranks, i.e. the loss of the global batch.
    la, lb = read_loss_log(single_dir / "losses.jsonl"), read_loss_log(ddp_out / "losses.jsonl")
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


@pytest.mark.slow  # a torchrun start: ~10-20 s
def test_two_processes_with_the_zone_discriminator_where_one_rank_has_no_matte(tiny_data, tmp_path):
    # One twin with a matte among 8 faces, one face per rank and step: most steps one rank has a
    # matte and the other none. D_zone's gradient sync must not wait for a rank that skipped it.
    import cv2

    src = sorted((tiny_data / "trainA").glob("*.png"))[0]
    pairs = tmp_path / "pairs"
    for d in ("without_mask", "with_mask", "mattes"):
        (pairs / d).mkdir(parents=True)
    img = cv2.imread(str(src))
    matte = np.zeros(img.shape[:2], np.uint8)
    matte[img.shape[0] // 2:, :] = 255
    twin = img.copy()
    twin[matte > 0] = 250
    cv2.imwrite(str(pairs / "without_mask" / src.name), img)
    cv2.imwrite(str(pairs / "with_mask" / src.name), twin)
    cv2.imwrite(str(pairs / "mattes" / src.name), matte)
    out = tmp_path / "zone"
    _train_two_ranks(tiny_data, out, "--batch-size", "2", "--pairs", str(pairs), "--paired-weight", "5",
                     "--zone-gan-weight", "1", "--max-iters", "8")
    records = read_loss_log(out / "losses.jsonl")
    assert len(records) == 8 and all(np.isfinite(r["zone_D"]) for r in records)
