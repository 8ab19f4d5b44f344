"""Training throughput of the paper's CycleGAN (images/s), on the current device.

Times `Trainer.train_step`, the exact code `cyclemask-train` runs (both generators, both
discriminators, Adam, image pools), on synthetic batches already in memory: this is the model's
speed, without JPEG decoding (DataLoader workers overlap that with training).

    python benchmarks/train_speed.py                      # full model: ngf 64, 9 blocks, 256 px
    python benchmarks/train_speed.py --batch 16 --channels-last --compile    # on a GPU

One image per domain counts as one image (an iteration on batch B trains on B pairs).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N [auto]")
    ap.add_argument("--size", type=int, default=256, help="crop size in pixels [256, the paper's]")
    ap.add_argument("--batch", type=int, default=None, help="batch size [1 on CPU, 16 on CUDA (Table I)]")
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--ndf", type=int, default=64)
    ap.add_argument("--n-blocks", type=int, default=9)
    ap.add_argument("--norm", default="instance")
    ap.add_argument("--gan-mode", default="lsgan")
    ap.add_argument("--precision", default="auto", help="auto (bf16 on CUDA) | fp32 | bf16")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--warmup", type=int, default=None, help="untimed iterations [2 on CPU, 10 on CUDA]")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations [4 on CPU, 50 on CUDA]")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args(argv)

    from cyclemask.train.config import TrainConfig
    from cyclemask.train.distributed import resolve_device
    from cyclemask.train.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (16 if cuda else 1)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    iters = args.iters or (50 if cuda else 4)
    cfg = TrainConfig(data_root="(synthetic)", crop_size=args.size, load_size=args.size, batch_size=batch,
                      ngf=args.ngf, ndf=args.ndf, n_blocks=args.n_blocks, norm=args.norm,
                      gan_mode=args.gan_mode, precision=args.precision, channels_last=args.channels_last,
                      compile=args.compile, device=str(device))
    if cuda:
        torch.backends.cudnn.benchmark = True
    trainer = Trainer(cfg, device=device)
    gen = torch.Generator().manual_seed(0)
    # A few distinct batches, so the pool and the optimiser see changing data.
    batches = [(torch.rand(batch, 3, args.size, args.size, generator=gen) * 2 - 1,
                torch.rand(batch, 3, args.size, args.size, generator=gen) * 2 - 1) for _ in range(3)]
    if cuda:
        batches = [(a.to(device), b.to(device)) for a, b in batches]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    for i in range(warmup):
        trainer.train_step(*batches[i % 3])
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(iters):
        losses = trainer.train_step(*batches[i % 3])
    sync()
    seconds = time.perf_counter() - t0
    if not torch.isfinite(losses).all():
        print("error: non-finite losses", losses.tolist(), file=sys.stderr)
        return 1

    result = {
        "images_per_s": batch * iters / seconds,
        "ms_per_iter": 1000 * seconds / iters,
        "batch": batch, "size": args.size, "ngf": args.ngf, "ndf": args.ndf, "n_blocks": args.n_blocks,
        "norm": args.norm, "gan_mode": args.gan_mode,
        "autocast": str(trainer.autocast_dtype).replace("torch.", "") if trainer.autocast_dtype else "fp32",
        "channels_last": args.channels_last, "compile": args.compile,
        "warmup_iters": warmup, "warmup_s": warm_s, "timed_iters": iters,
        "device": torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
    }
    if cuda:
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"{result['images_per_s']:.2f} images/s ({result['ms_per_iter']:.1f} ms per iteration, batch {batch}, "
          f"{args.size} px, ngf {args.ngf}, {args.n_blocks} blocks, {result['autocast']}) on {result['device']}")
    if args.json:
        from cyclemask.image_files import write_bytes_atomic

        write_bytes_atomic(args.json, json.dumps(result, indent=2).encode())
    return 0


if __name__ == "__main__":
    from cyclemask.cli_util import run_stoppable

    sys.exit(run_stoppable(main))
