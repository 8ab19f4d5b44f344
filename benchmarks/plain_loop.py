"""The plain eager loop that cyclemask-run is measured against: one image at a time, the way
the reference CycleGAN repository's test.py runs a generator.

    python benchmarks/plain_loop.py --checkpoint generators.pt --direction mask --images faces/ --out out/

As test.py does: build the generator, load its weights, then for each image in turn (batch 1,
serial): open with PIL, convert to RGB, resize to the model size (bicubic), scale to [-1, 1],
run the generator under torch.no_grad(), map back to uint8 ((x + 1) / 2 * 255) and save a PNG
at the model size. No face detection, no batching, no threads of its own (torch's intra-op
threads only). benchmarks/cpu_backends.py times this whole process beside cyclemask-run's.

Not part of the installed package.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

T_START = time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--direction", default=None)
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from cyclemask.checkpoint import load_generator

    if a.threads:
        torch.set_num_threads(a.threads)
    net = load_generator(a.checkpoint, direction=a.direction).generator
    net.eval()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    paths = sorted(p for p in Path(a.images).iterdir() if p.suffix.lower() in exts)
    first = None
    for p in paths:
        img = Image.open(p).convert("RGB").resize((a.size, a.size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1).unsqueeze(0)
        with torch.no_grad():
            y = net(x)
        arr = ((y[0].permute(1, 2, 0).numpy() + 1.0) / 2.0 * 255.0).clip(0, 255).astype(np.uint8)
        Image.fromarray(arr).save(out / (p.stem + ".png"))
        if first is None:
            first = time.perf_counter() - T_START
    print(f"plain loop: {len(paths)} images, first output after {first or 0:.4f} s, "
          f"{time.perf_counter() - T_START:.4f} s in all", file=sys.stderr)


if __name__ == "__main__":
    main()
