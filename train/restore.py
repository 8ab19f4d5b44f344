"""Training the erase-then-restore unmasking networks (cyclemask.restore_models).

Both learn from bare faces only, which is what makes them self-supervised:

- a *bank* is built once from the train split of a `cyclemask-data prepare` folder: each bare
  face crop with several masks put on it by the same template warp as `cyclemask-data synth`
  (`apply_mask`), each with its exact matte, with fits varied (low on the nose, pulled under
  the chin, partly hidden);
- the segmenter learns bank image -> matte (bare crops -> an empty matte);
- the restorer learns (bare crop with a matte-shaped hole erased, hole) -> bare crop: L1 weighted
  towards the hole, SSIM, and optionally a PatchGAN on the composite. No loss uses the FID
  network, so FID stays an independent judge.

Faces of the paired evaluation set (`observations_pairs`) and their duplicates are left out of
the bank by name, so identity figures on those pairs are measured on faces never trained on.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cyclemask.errors import ConfigError, DataError
from cyclemask.image_files import read_image

log = logging.getLogger(__name__)

BANK_FORMAT = "cyclemask.restore-bank"
CHECKPOINT_FORMAT = "cyclemask.restore-network"


# ---------------------------------------------------------------------------------------------
# The bank


def evaluation_sources(manifest: dict, marker: str = "observations_pairs") -> set[str]:
    """Sources (paths) of the prepare manifest that are, or duplicate, a photo of the paired
    evaluation set: the pairs themselves and the files their duplicates were dropped for."""
    out = {f["source"] for f in manifest["files"] if marker in f["source"]}
    for r in manifest.get("rejected", []):
        if marker in r["source"] and r["reason"] in ("duplicate", "near_duplicate"):
            detail = r.get("detail", "")
            for key in ("identical file to ", "near duplicate of "):
                if detail.startswith(key):
                    out.add(detail[len(key):].split(" (")[0])
    return out


def _crop_landmarks(rec: dict, side_out: int) -> np.ndarray:
    x0, y0, x1, _ = rec["crop_box"]
    lm = np.asarray(rec["face"]["landmarks"], np.float64)
    return ((lm - (x0, y0) + 0.5) * side_out / (x1 - x0) - 0.5).astype(np.float32)


def _vary_fit(landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Landmarks moved so the warped mask sits as real masks do: most as designed, some low on
    the nose or pulled under the chin, some a little rotated or scaled."""
    from cyclemask.face_detect import eye_mouth_distance

    lm = landmarks.astype(np.float64).copy()
    h = eye_mouth_distance(lm)
    u = rng.random()
    if u < 0.2:  # below the nose: nose and mouth move down
        lm[2:, 1] += rng.uniform(0.15, 0.35) * h
    elif u < 0.3:  # pulled under the chin
        lm[2:, 1] += rng.uniform(0.45, 0.7) * h
    centre = lm.mean(axis=0)
    angle = math.radians(rng.normal(0.0, 4.0))
    scale = rng.uniform(0.92, 1.1)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    lm = (lm - centre) @ rot.T * scale + centre + rng.normal(0.0, 0.03 * h, 2)
    return lm.astype(np.float32)


def _occlude(image: np.ndarray, alpha: np.ndarray, bare: np.ndarray, rng: np.random.Generator):
    """Part of the mask hidden: an ellipse of the bare face (a hand or hair would show skin or
    something else; the face itself is the cheapest stand-in) over part of the mask."""
    import cv2

    ys, xs = np.nonzero(alpha > 0.5)
    if len(xs) < 20:
        return image, alpha
    i = int(rng.integers(len(xs)))
    s = image.shape[0]
    axes = (int(rng.uniform(0.08, 0.2) * s), int(rng.uniform(0.08, 0.25) * s))
    blob = np.zeros(alpha.shape, np.uint8)
    cv2.ellipse(blob, (int(xs[i]), int(ys[i])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    blob = cv2.GaussianBlur(blob.astype(np.float32), (0, 0), 1.0)
    out = image.astype(np.float32) + blob[..., None] * (bare.astype(np.float32) - image)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), alpha * (1.0 - blob)


@dataclass
class Bank:
    bare: np.ndarray      # uint8 [F, S, S, 3]
    masked: np.ndarray    # uint8 [F*K, S, S, 3]
    matte: np.ndarray     # uint8 [F*K, S, S] (0..255)
    face: np.ndarray      # int32 [F*K]: index into bare
    sources: list

    def save(self, path: str | Path) -> None:
        tmp = Path(str(path) + ".tmp.npz")
        np.savez(tmp, bare=self.bare, masked=self.masked, matte=self.matte, face=self.face,
                 sources=np.array(self.sources))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "Bank":
        z = np.load(path)
        return cls(z["bare"], z["masked"], z["matte"], z["face"], list(z["sources"]))


def build_bank(prepared: str | Path, templates: str | Path, textures: str | Path | None, size: int = 128,
               variants: int = 6, split: str = "trainA", seed: int = 0, exclude_marker: str = "observations_pairs",
               progress=None) -> Bank:
    import cv2

    from cyclemask.face_detect import mask_anchors
    from cyclemask.train.synth import apply_mask, choose_mask, load_templates, load_textures

    prepared = Path(prepared)
    manifest = json.loads((prepared / "manifest.json").read_text())
    excluded = evaluation_sources(manifest, exclude_marker)
    recs = [f for f in manifest["files"] if f["split"] == split and f["source"] not in excluded
            and f.get("face")]
    if not recs:
        raise DataError(f"{prepared}: no {split} faces with landmarks left to train on")
    tpl = load_templates(templates)
    tex = load_textures(textures) if textures else []
    tex_by_name = dict(tex)
    rng = np.random.default_rng(seed)
    bare, masked, matte, face, sources = [], [], [], [], []
    for i, rec in enumerate(recs):
        img = read_image(prepared / split / rec["name"])
        small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        lm = _crop_landmarks(rec, size)
        fi = len(bare)
        bare.append(small)
        sources.append(rec["source"])
        for _ in range(variants):
            fit = _vary_fit(lm, rng)
            template, choice = choose_mask(tpl, tex, mask_anchors(fit), rng, keep_colour=0.25, texture_share=0.3)
            try:
                out, alpha = apply_mask(small, fit, template, choice, tex_by_name, rng)
            except Exception as exc:  # a degenerate fit: skip the variant, not the face
                log.debug("%s: %s", rec["name"], exc)
                continue
            if rng.random() < 0.15:
                out, alpha = _occlude(out, alpha, small, rng)
            if rng.random() < 0.1:  # grey photos get grey masks: teach the matte on grey too
                g = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
                out = np.repeat(g[..., None], 3, axis=2)
            masked.append(out)
            matte.append(np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8))
            face.append(fi)
        if progress:
            progress("bank", i + 1, len(recs))
    return Bank(np.stack(bare), np.stack(masked), np.stack(matte), np.asarray(face, np.int32), sources)


# ---------------------------------------------------------------------------------------------
# Losses


def ssim_map(x, y, window: int = 7):
    """Per-pixel SSIM of two [N, C, H, W] tensors in [0, 1] (box window, the usual constants)."""
    import torch.nn.functional as F

    pad = window // 2
    mu_x = F.avg_pool2d(x, window, 1, pad, count_include_pad=False)
    mu_y = F.avg_pool2d(y, window, 1, pad, count_include_pad=False)
    sxx = F.avg_pool2d(x * x, window, 1, pad, count_include_pad=False) - mu_x ** 2
    syy = F.avg_pool2d(y * y, window, 1, pad, count_include_pad=False) - mu_y ** 2
    sxy = F.avg_pool2d(x * y, window, 1, pad, count_include_pad=False) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))


# ---------------------------------------------------------------------------------------------
# Checkpoints


def save_restore_network(path: str | Path, kind: str, net, extra: dict | None = None) -> None:
    from cyclemask.checkpoint import save_network

    save_network(path, net, "unmask" if kind == "restorer" else None, extra)


def bundle(segmenter_path: str | Path, restorer_path: str | Path, out: str | Path, image_size: int,
           extra: dict | None = None, seg_mirror: bool = False) -> None:
    """Join a trained segmenter and restorer into one restore bundle (cyclemask.checkpoint);
    seg_mirror: the bundled segmenter averages each crop with its mirror image."""
    import torch

    from cyclemask.checkpoint import save_restore
    from cyclemask.restore_models import MaskSegmenter, Restorer, RestorerConfig, SegmenterConfig

    def segmenter(c):
        cfg = SegmenterConfig(**(c or {}))
        return MaskSegmenter(replace(cfg, mirror=True) if seg_mirror else cfg)

    nets = []
    for path, make in ((segmenter_path, segmenter),
                       (restorer_path, lambda c: Restorer(RestorerConfig(**c) if c else RestorerConfig()))):
        st = torch.load(path, weights_only=True)  # a training state: {"net", "opt", "iteration", "config", ...}
        net = make(st.get("config"))
        net.load_state_dict(st["net"], strict=True)
        nets.append(net.eval())
        extra = {**(extra or {}), f"{type(net).__name__}_iterations": int(st["iteration"]),
                 f"{type(net).__name__}_seconds": round(float(st["seconds"]))}
    save_restore(out, nets[0], nets[1], {"image_size": image_size, **extra})


# ---------------------------------------------------------------------------------------------
# Training loops


@dataclass
class LoopConfig:
    kind: str                 # "segmenter" | "restorer"
    out: Path
    minutes: float = 30.0
    batch_size: int = 16
    lr: float = 1e-3
    hole_weight: float = 6.0
    ssim_weight: float = 1.0
    gan_weight: float = 0.0
    gan_after: int = 500
    seed: int = 0
    save_every: int = 100
    iterations: int | None = None  # stop after this many (in all, resumed ones included)
    lr_end: float | None = None    # with `iterations`: cosine decay from lr to lr_end over them
    init_from: Path | None = None  # a restore bundle whose network of this kind a new run starts from
    seg_res: int = 0               # the segmenter's residual blocks (SegmenterConfig.n_res)
    seg_channels: tuple[int, ...] | None = None  # the segmenter's stage widths; None: the default
    framing: float = 0.0           # share of crops cut as a photo's edge cuts them (see _frame)


def learning_rate(cfg: LoopConfig, it: int) -> float:
    """The rate at iteration `it`: constant, or a cosine from `lr` to `lr_end` over
    `iterations`. Keyed on the absolute iteration, so a resumed run stays on the same curve."""
    if cfg.lr_end is None or not cfg.iterations:
        return cfg.lr
    t = min(max(it / cfg.iterations, 0.0), 1.0)
    return cfg.lr_end + (cfg.lr - cfg.lr_end) * 0.5 * (1.0 + math.cos(math.pi * t))


def _jitter(x, rng: np.random.Generator):
    """Photometric jitter on an NHWC batch (numpy): gain, offset and tint, no change of place
    (a flip here would part the image from its matte)."""
    x = x.astype(np.float32)
    gain = rng.uniform(0.75, 1.25, (len(x), 1, 1, 1)).astype(np.float32)
    bias = rng.uniform(-20, 20, (len(x), 1, 1, 1)).astype(np.float32)
    tint = rng.uniform(0.92, 1.08, (len(x), 1, 1, 3)).astype(np.float32)
    return np.clip(x * gain * tint + bias, 0, 255)


def _to_t(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_loop(bank: Bank, cfg: LoopConfig, resume: bool = True) -> dict:
    import torch
    import torch.nn.functional as F

    from cyclemask.restore_models import MaskSegmenter, Restorer, SegmenterConfig, erase, grow_hole

    torch.manual_seed(cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    state_path = cfg.out / f"{cfg.kind}_state.pt"
    if cfg.kind == "segmenter":
        net = MaskSegmenter(SegmenterConfig(channels=cfg.seg_channels or SegmenterConfig.channels, n_res=cfg.seg_res))
    else:
        net = Restorer()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.5 if cfg.gan_weight else 0.9, 0.999))
    disc = dopt = None
    if cfg.kind == "restorer" and cfg.gan_weight > 0:
        from cyclemask.config import DiscriminatorConfig
        from cyclemask.models import build_discriminator

        disc = build_discriminator(DiscriminatorConfig(ndf=32, n_layers=2, norm="instance"))
        dopt = torch.optim.Adam(disc.parameters(), lr=cfg.lr * 0.5, betas=(0.5, 0.999))
    it, spent = 0, 0.0
    if resume and state_path.exists():
        if cfg.init_from is not None:
            log.warning("%s exists: resuming it; --init-from %s is used by a new run only (another --out starts one)",
                        state_path, cfg.init_from)
        st = torch.load(state_path, weights_only=True)
        saved = type(net.config)(**st["config"]) if st.get("config") else type(net.config)()
        if saved != net.config:
            raise ConfigError(f"{state_path} holds a {cfg.kind} with config {saved.to_dict()}, not "
                              f"{net.config.to_dict()} (--seg-res and --seg-channels must be the ones the run started with)")
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        if disc is not None and "disc" in st:
            disc.load_state_dict(st["disc"])
            dopt.load_state_dict(st["dopt"])
        it, spent = int(st["iteration"]), float(st["seconds"])
        log.info("resumed %s at iteration %d (%.0f s trained)", cfg.kind, it, spent)
    elif cfg.init_from is not None:
        from cyclemask.checkpoint import load_restore_part

        grow_from(net, load_restore_part(cfg.init_from, cfg.kind))
        log.info("new %s run starting from the weights in %s", cfg.kind, cfg.init_from)
    rng = np.random.default_rng(cfg.seed + it)
    log_path = cfg.out / f"{cfg.kind}_log.jsonl"
    start = time.monotonic()
    budget = cfg.minutes * 60.0
    n_var = len(bank.masked)

    def save():
        st = {"net": net.state_dict(), "opt": opt.state_dict(), "iteration": it,
              "seconds": spent + time.monotonic() - start, "config": net.config.to_dict()}
        if disc is not None:
            st.update(disc=disc.state_dict(), dopt=dopt.state_dict())
        tmp = state_path.with_suffix(".tmp")
        torch.save(st, tmp)
        tmp.replace(state_path)
        save_restore_network(cfg.out / f"{cfg.kind}.pt", cfg.kind, net,
                             {"iteration": it, "seconds": round(st["seconds"]), "batch_size": cfg.batch_size,
                              "faces": len(bank.bare), "variants": n_var})

    while time.monotonic() - start < budget and (cfg.iterations is None or it < cfg.iterations):
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, it)
        if dopt is not None:
            for group in dopt.param_groups:
                group["lr"] = 0.5 * learning_rate(cfg, it)
        idx = rng.integers(0, n_var, cfg.batch_size)
        if cfg.kind == "segmenter":
            # A quarter of the batch bare (an empty matte): the segmenter must say "no mask".
            bare_rows = rng.random(cfg.batch_size) < 0.25
            imgs = np.where(bare_rows[:, None, None, None], bank.bare[bank.face[idx]], bank.masked[idx])
            mats = np.where(bare_rows[:, None, None], 0, bank.matte[idx]).astype(np.float32) / 255.0
            both = np.concatenate([imgs.astype(np.float32), mats[..., None] * 255.0], axis=3)
            both = _augment_pair(both, rng, cfg.framing)
            x = _to_t(both[..., :3])
            y = torch.from_numpy(np.ascontiguousarray(both[..., 3:])).permute(0, 3, 1, 2) / 255.0
            logits = net(x)
            p = torch.sigmoid(logits)
            bce = F.binary_cross_entropy_with_logits(logits, y)
            inter = (p * y).sum((1, 2, 3))
            dice = 1.0 - (2 * inter + 1.0) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1.0)
            loss = bce + dice.mean()
            parts = {"bce": bce.item(), "dice": dice.mean().item()}
        else:
            faces = bank.face[idx]
            imgs = bank.bare[faces]
            mats = bank.matte[idx].astype(np.float32)
            both = np.concatenate([imgs.astype(np.float32), mats[..., None]], axis=3)
            both = _augment_pair(both, rng, cfg.framing)
            x = _to_t(both[..., :3])
            matte = torch.from_numpy(np.ascontiguousarray(both[..., 3:])).permute(0, 3, 1, 2) / 255.0
            grow = int(rng.integers(1, 6))
            hole = grow_hole(matte, grow)
            pred = net(erase(x, hole), hole)
            comp = x + hole * (pred - x)
            w = 1.0 + (cfg.hole_weight - 1.0) * hole
            l1 = (w * (pred - x).abs()).mean()
            ssim = 1.0 - ssim_map((comp + 1) / 2, (x + 1) / 2).mean()
            loss = l1 + cfg.ssim_weight * ssim
            parts = {"l1": l1.item(), "ssim": ssim.item()}
            if disc is not None and it >= cfg.gan_after:
                fake = disc(comp)
                g_adv = ((fake - 1.0) ** 2).mean()
                loss = loss + cfg.gan_weight * g_adv
                parts["g_adv"] = g_adv.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if disc is not None and it >= cfg.gan_after:
            real_s, fake_s = disc(x), disc(comp.detach())
            d_loss = 0.5 * (((real_s - 1.0) ** 2).mean() + (fake_s ** 2).mean())
            dopt.zero_grad(set_to_none=True)
            d_loss.backward()
            dopt.step()
            parts["d"] = d_loss.item()
        it += 1
        if it % 20 == 0:
            row = {"iteration": it, "seconds": round(spent + time.monotonic() - start, 1), "loss": loss.item(),
                   "lr": opt.param_groups[0]["lr"], **parts}
            with open(log_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        if it % cfg.save_every == 0:
            save()
    save()
    return {"iteration": it, "seconds": spent + time.monotonic() - start}


def grow_from(net, old) -> None:
    """Start `net` from the weights of `old`, a network of the same kind with the same layers or
    fewer residual blocks. The blocks `old` lacks start with their last convolution at zero, so
    they pass their input through and `net` begins as the very function `old` computes."""
    import torch

    own, theirs = net.state_dict(), old.state_dict()
    extra = sorted(set(own) - set(theirs))
    missing = sorted(set(theirs) - set(own))
    reshaped = [k for k in set(own) & set(theirs) if own[k].shape != theirs[k].shape]
    if missing or reshaped or any(not k.startswith("net.mid.") for k in extra):
        raise ConfigError(f"cannot start a {type(net).__name__} of config {net.config.to_dict()} from one of "
                          f"{old.config.to_dict()}: only residual blocks may be added (--seg-res at least "
                          f"the n_res it has, and --seg-channels the widths it has)")
    for k in extra:
        if ".b." in k:
            theirs[k] = torch.zeros_like(own[k])
        else:
            theirs[k] = own[k]
    net.load_state_dict(theirs, strict=True)


def _frame(batch: np.ndarray, rng: np.random.Generator, share: float) -> None:
    """Cut a share of the crops (in place) as the edge of a photo cuts them: past a random edge
    the last row or column kept is repeated, image and matte alike, by the runtime's own padding
    of a crop box that leaves the photo (crop_square). Photos cut at the chin are common: their
    masks run into the crop's bottom edge and on as streaks, which the bank's whole-face crops
    never show."""
    from cyclemask.face_detect import crop_square

    h, w = batch.shape[1:3]
    for i in np.flatnonzero(rng.random(len(batch)) < share):
        bottom = int(rng.integers(1, int(0.3 * h) + 1))
        top = int(rng.integers(1, int(0.1 * h) + 1)) if rng.random() < 0.1 else 0
        left = int(rng.integers(1, int(0.15 * w) + 1)) if rng.random() < 0.25 else 0
        right = int(rng.integers(1, int(0.15 * w) + 1)) if rng.random() < 0.25 else 0
        batch[i] = crop_square(batch[i, top:h - bottom, left:w - right], (-left, -top, w - left, h - top))


def _augment_pair(both: np.ndarray, rng: np.random.Generator, framing: float = 0.0) -> np.ndarray:
    """Flip image and matte together, cut a share of them as a photo's edge would (_frame);
    photometric jitter on the image only."""
    if rng.random() < 0.5:
        both = both[:, :, ::-1]
    out = np.array(both, np.float32)
    if framing > 0:
        _frame(out, rng, framing)
    out[..., :3] = _jitter(out[..., :3], rng)
    return out


def _channels(text: str) -> tuple[int, ...]:
    import argparse

    try:
        widths = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return widths


def main(argv=None) -> None:
    import argparse

    import torch

    ap = argparse.ArgumentParser(description="Train the mask segmenter or the restorer on a bank of bare faces.")
    ap.add_argument("--prepared", required=True, help="a cyclemask-data prepare folder")
    ap.add_argument("--templates", required=True)
    ap.add_argument("--textures")
    ap.add_argument("--bank", required=True, help="bank file (.npz): built if missing")
    ap.add_argument("--out", required=True)
    ap.add_argument("--kind", choices=("segmenter", "restorer", "bank", "bundle"), required=True)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-end", type=float, help="with --iterations: decay the rate to this along a cosine")
    ap.add_argument("--iterations", type=int, help="stop after this many iterations in all (resumed ones included)")
    ap.add_argument("--init-from", type=Path, help="a restore bundle (restore.pt) whose network a new run starts from")
    ap.add_argument("--gan-weight", type=float, default=0.0)
    ap.add_argument("--seg-res", type=int, default=0,
                    help="the segmenter's dilated residual blocks at its coarsest stage (context for telling "
                         "a mask from clothing); with --init-from, added blocks start as identities")
    ap.add_argument("--seg-channels", type=_channels,
                    help="the segmenter's stage widths, comma-separated (default 16,32,48,64); each added "
                         "stage halves the resolution once more and widens what each pixel sees")
    ap.add_argument("--seg-mirror", action="store_true",
                    help="with --kind bundle: the segmenter averages each crop with its mirror image "
                         "(twice its time, a seventh of the whole graph's on a CPU; fewer errors at mask edges)")
    ap.add_argument("--framing", type=float, default=LoopConfig.framing,
                    help="share of training crops cut as a photo's edge cuts them (the last row or column "
                         "kept repeated past a random edge, as the runtime pads crops that leave the photo); "
                         "default 0: with 0.5 a segmenter found less of the masks on real photos")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", type=int, default=6)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    if a.kind in ("segmenter", "restorer"):
        if a.batch_size < 1 or a.minutes <= 0 or a.lr <= 0:
            raise ConfigError("--batch-size, --minutes and --lr must be positive")
        if a.iterations is not None and a.iterations < 1:
            raise ConfigError("--iterations must be at least 1")
        if not 0.0 <= a.framing <= 1.0:
            raise ConfigError(f"--framing is a share of crops, between 0 and 1; got {a.framing}")
        if a.lr_end is not None and (not a.iterations or a.lr_end < 0):
            raise ConfigError("--lr-end needs --iterations (the length of the decay) and must not be negative")
    elif a.init_from is not None:
        raise ConfigError(f"--init-from is for --kind segmenter or restorer, not {a.kind}")
    if a.seg_res < 0 or (a.seg_res and a.kind != "segmenter"):
        raise ConfigError(f"--seg-res must be >= 0 and is for --kind segmenter; got {a.seg_res} with --kind {a.kind}")
    if a.seg_channels is not None and a.kind != "segmenter":
        raise ConfigError(f"--seg-channels is for --kind segmenter, not {a.kind}")
    if a.framing and a.kind not in ("segmenter", "restorer"):
        raise ConfigError(f"--framing is for --kind segmenter or restorer, not {a.kind}")
    if a.seg_mirror and a.kind != "bundle":
        raise ConfigError(f"--seg-mirror is for --kind bundle, not {a.kind}")
    if a.kind == "bundle":
        out = Path(a.out)
        bundle(out / "segmenter_state.pt", out / "restorer_state.pt", out / "restore.pt", 128, seg_mirror=a.seg_mirror)
        return
    bank_path = Path(a.bank)
    if not bank_path.exists():
        t = time.monotonic()
        bank = build_bank(a.prepared, a.templates, a.textures, variants=a.variants)
        bank.save(bank_path)
        log.info("bank: %d faces, %d masked variants in %.0f s", len(bank.bare), len(bank.masked), time.monotonic() - t)
    else:
        bank = Bank.load(bank_path)
    if a.kind == "bank":
        return
    res = train_loop(bank, LoopConfig(kind=a.kind, out=Path(a.out), minutes=a.minutes, batch_size=a.batch_size,
                                      lr=a.lr, gan_weight=a.gan_weight, iterations=a.iterations,
                                      lr_end=a.lr_end, init_from=a.init_from, seg_res=a.seg_res,
                                      seg_channels=a.seg_channels, framing=a.framing))
    log.info("%s: %d iterations, %.0f s", a.kind, res["iteration"], res["seconds"])


if __name__ == "__main__":
    main()
