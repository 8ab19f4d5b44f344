"""Calibrate the FP16 parity bounds: ``python -m cyclemask.export.calibrate [--faces DIR]``.

Exports the full generator (ResNet-9, ngf 64) at 256 px to FP32 and FP16 ONNX twice, once with
the reference's random initialisation and once "trained-like" (weights fitted for a few hundred
steps to paint a white block over the lower face of real photos, which drives the output to the
full 0..255 range and saturates tanh as a trained masker does), runs both graphs on ONNX
Runtime CPU over real faces and uniform noise, and prints the parity figures against eager.
The bounds in `cyclemask.export.verify.FP16_BOUNDS` were set from these runs with margin; the
figures measured are in that module's docstring.

Takes several minutes on 2 CPU cores (46 min on a heavily shared one). Not part of the suite.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cyclemask.config import GeneratorConfig
from cyclemask.imaging import preprocess
from cyclemask.models import build_generator

from .fp16 import to_fp16
from .onnx import export_onnx
from .verify import compare_uint8, eager_outputs, ort_outputs, verification_images


def fit_trained_like(generator, faces: np.ndarray, steps: int, size: int = 128, seed: int = 0):
    """Fit `generator` to put a white block on the lower face: a stand-in for trained weights."""
    from cyclemask.imaging import resize

    torch.manual_seed(seed)
    small = np.stack([resize(f, size) for f in faces])
    x = preprocess(torch.from_numpy(small))
    target = x.clone()
    target[:, :, size // 2:size * 7 // 8, size // 5:size * 4 // 5] = 1.0
    opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    generator.train()
    for step in range(steps):
        i = step % len(x)
        loss = torch.nn.functional.l1_loss(generator(x[i:i + 1]), target[i:i + 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    logging.info("trained-like generator: final L1 %.4f after %d steps", loss.item(), steps)
    return generator.eval()


def run(faces_dir: str | None, steps: int, size: int, n_real: int, n_random: int) -> list[dict]:
    images, sources = verification_images(size, n_random=n_random, image_dir=faces_dir, n_real=n_real)
    real = np.array([not s.startswith("random") for s in sources])
    rows = []
    torch.manual_seed(0)
    gens = {"random-init": build_generator(GeneratorConfig()).eval()}
    if steps > 0 and real.any():
        torch.manual_seed(0)
        gens["trained-like"] = fit_trained_like(build_generator(GeneratorConfig()), images[real], steps)
    with tempfile.TemporaryDirectory() as tmp:
        for name, g in gens.items():
            ref = eager_outputs(g, images)
            p32 = export_onnx(g, Path(tmp) / f"{name}.onnx", image_size=size)
            p16 = to_fp16(p32, Path(tmp) / f"{name}.fp16.onnx")
            for prec, p in (("fp32", p32), ("fp16", p16)):
                t0 = time.perf_counter()
                out = ort_outputs(p, images, batch_size=2)
                for subset, sel in (("real", real), ("noise", ~real)):
                    if sel.any():
                        st = compare_uint8(out[sel], ref[sel])
                        rows.append({"generator": name, "precision": prec, "inputs": subset, **st.to_dict()})
                        print(f"{name:13s} {prec} {subset:5s} {st.describe()}  ({time.perf_counter() - t0:.1f} s)", flush=True)
            print(f"{name:13s} output range {int(ref.min())}..{int(ref.max())}, mean {float(ref.mean()):.1f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", default=None, help="folder of face photos (default: matplotlib's portrait)")
    ap.add_argument("--steps", type=int, default=300, help="fitting steps of the trained-like generator")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n-real", type=int, default=6)
    ap.add_argument("--n-random", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(a.threads)
    run(a.faces, a.steps, a.size, a.n_real, a.n_random)


if __name__ == "__main__":
    main()
