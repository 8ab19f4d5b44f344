"""Self-describing, safe checkpoint files.

A network file holds everything needed to rebuild the network (its config), its weights, the
versions that wrote it and a sha256 of the weights, checked on load. Files are read with
`torch.load(weights_only=True)`, which never unpickles arbitrary objects.

Two layouts of ours:
- a network file: {"format": "cyclemask.network", "kind": "generator"|"discriminator", ...}
- a generator bundle: {"format": "cyclemask.generators", "generators": {"mask": net, "unmask": net}}
  where each net is the dict of a network file. This is what training hands to export.
- a restore bundle: {"format": "cyclemask.restore", "segmenter": net, "restorer": net}: the
  erase-then-restore unmasking networks (cyclemask.restore_models). It loads as one "unmask"
  generator (`EraseRestore`), so export and the runtime take it as they take a CycleGAN one.

Reference-repository generator files (`latest_net_G_A.pth`: a bare state dict) load too; their
architecture is read off the weight shapes, and flags may state it.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import DIRECTIONS, __version__
from .config import DiscriminatorConfig, GeneratorConfig
from .errors import CheckpointError, ConfigError
from .image_files import write_bytes_atomic
from .models import NLayerDiscriminator, ResnetGenerator
from .restore_models import EraseRestore, MaskSegmenter, Restorer, RestorerConfig, SegmenterConfig

NETWORK_FORMAT = "cyclemask.network"
BUNDLE_FORMAT = "cyclemask.generators"
RESTORE_FORMAT = "cyclemask.restore"
FORMAT_VERSION = 1

_DROP_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def versions() -> dict[str, str]:
    return {"cyclemask": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and bytes, independent of how the file was serialised."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def network_record(net: nn.Module, direction: str | None = None, extra: dict | None = None) -> dict[str, Any]:
    """The dict stored for one network (also the entries of a bundle)."""
    if isinstance(net, ResnetGenerator):
        kind = "generator"
    elif isinstance(net, NLayerDiscriminator):
        kind = "discriminator"
    elif isinstance(net, MaskSegmenter):
        kind = "segmenter"
    elif isinstance(net, Restorer):
        kind = "restorer"
    else:
        raise CheckpointError(f"cannot save a {type(net).__name__}: only cyclemask networks")
    if direction is not None and direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
    sd = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return {
        "format": NETWORK_FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": net.config.to_dict(),
        "direction": direction,
        "state_dict": sd,
        "sha256": state_dict_sha256(sd),
        "versions": versions(),
        "extra": dict(extra or {}),
    }


def _save(path: str | os.PathLike, obj: dict) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


def save_network(path: str | os.PathLike, net: nn.Module, direction: str | None = None, extra: dict | None = None) -> None:
    """Write one network file atomically."""
    _save(path, network_record(net, direction, extra))


def save_generators(path: str | os.PathLike, generators: dict[str, nn.Module], extra: dict | None = None) -> None:
    """Write a bundle of generators keyed by direction ("mask", "unmask") atomically."""
    unknown = set(generators) - set(DIRECTIONS)
    if unknown or not generators:
        raise ConfigError(f"generator bundle keys must be among {DIRECTIONS}; got {sorted(generators)}")
    _save(path, {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "generators": {d: network_record(g, d) for d, g in generators.items()},
        "versions": versions(),
        "extra": dict(extra or {}),
    })


def save_restore(path: str | os.PathLike, segmenter: MaskSegmenter, restorer: Restorer,
                 extra: dict | None = None) -> None:
    """Write a restore bundle (segmenter and restorer, see the module docstring) atomically."""
    _save(path, {
        "format": RESTORE_FORMAT,
        "format_version": FORMAT_VERSION,
        "segmenter": network_record(segmenter),
        "restorer": network_record(restorer, "unmask"),
        "versions": versions(),
        "extra": dict(extra or {}),
    })


def _restore_net(rec: Any, kind: str, path: Path):
    if not isinstance(rec, dict) or rec.get("kind") != kind:
        raise CheckpointError(f"{path}: the restore bundle has no {kind}")
    sd = rec.get("state_dict")
    if not isinstance(sd, dict) or state_dict_sha256(sd) != rec.get("sha256"):
        raise CheckpointError(f"{path}: {kind} weights do not match their recorded sha256 (file corrupt or edited)")
    try:
        if kind == "segmenter":
            net = MaskSegmenter(SegmenterConfig(**rec["config"]))
        else:
            net = Restorer(RestorerConfig(**rec["config"]))
        net.load_state_dict(sd, strict=True)
    except (TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: {kind} weights do not fit its config: {str(exc).splitlines()[0][:300]}") from None
    return net.eval()


def load_restore_part(path: str | os.PathLike, kind: str) -> MaskSegmenter | Restorer:
    """One network ("segmenter" or "restorer") of a restore bundle, or of a network file holding one."""
    p = Path(path)
    obj = read_checkpoint(p)
    if isinstance(obj, dict) and obj.get("format") == RESTORE_FORMAT:
        return _restore_net(obj.get(kind), kind, p)
    if isinstance(obj, dict) and obj.get("format") == NETWORK_FORMAT:
        return _restore_net(obj, kind, p)
    what = "mask segmenter" if kind == "segmenter" else kind
    raise CheckpointError(f"{p}: holds no {what} (not a restore bundle)")


def load_segmenter(path: str | os.PathLike) -> MaskSegmenter:
    """The mask segmenter of a restore bundle (or of a network file holding one)."""
    return load_restore_part(path, "segmenter")


def _load_restore(obj: dict, path: Path) -> LoadedGenerator:
    seg = _restore_net(obj.get("segmenter"), "segmenter", path)
    res = _restore_net(obj.get("restorer"), "restorer", path)
    net = EraseRestore(seg, res).eval()
    return LoadedGenerator(net, res.config, "unmask", "cyclemask", state_dict_sha256(net.state_dict()), path)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True and errors that name the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{p}: not a readable checkpoint ({first[:200]})") from None


@dataclass
class LoadedGenerator:
    generator: ResnetGenerator
    config: GeneratorConfig
    direction: str | None
    source: str  # "cyclemask" or "reference"
    sha256: str  # of the weights
    path: Path
    notes: list[str] = field(default_factory=list)


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DataParallel / DDP / torch.compile wrappers prefix every key.
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def infer_generator_config(sd: dict[str, torch.Tensor]) -> GeneratorConfig:
    """Read a reference generator's architecture off its state-dict keys and shapes."""
    if "model.1.weight" not in sd:
        raise CheckpointError("not a ResNet generator state dict (no 'model.1.weight')")
    stem = sd["model.1.weight"]
    if stem.ndim != 4 or tuple(stem.shape[2:]) != (7, 7):
        raise CheckpointError(f"not a ResNet generator: stem weight has shape {list(stem.shape)}")
    ngf, in_channels = int(stem.shape[0]), int(stem.shape[1])
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    if not blocks:
        raise CheckpointError("not a ResNet generator state dict (no residual blocks)")
    if "model.2.weight" in sd:
        norm = "batch"
    elif "model.1.bias" in sd:
        norm = "instance"
    else:
        norm = "none"
    dropout = any(".conv_block.6.weight" in k for k in sd)
    head = [k for k in sd if re.fullmatch(r"model\.\d+\.weight", k)]
    last = max(head, key=lambda k: int(k.split(".")[1]))
    out_channels = int(sd[last].shape[0])
    return GeneratorConfig(ngf=ngf, n_blocks=len(blocks), norm=norm, dropout=dropout,
                           in_channels=in_channels, out_channels=out_channels)


def _build_from_state_dict(sd, config: GeneratorConfig, where: str) -> ResnetGenerator:
    net = ResnetGenerator(config)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0]
        raise CheckpointError(f"{where}: weights do not fit {config}: {msg[:300]}") from None
    return net.eval()


def _from_record(rec: dict, path: Path) -> LoadedGenerator:
    if rec.get("kind") != "generator":
        raise CheckpointError(f"{path}: holds a {rec.get('kind')}, not a generator")
    sd = rec.get("state_dict")
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: no weights in the file")
    digest = state_dict_sha256(sd)
    if digest != rec.get("sha256"):
        raise CheckpointError(f"{path}: weights do not match their recorded sha256 (file corrupt or edited)")
    config = GeneratorConfig.from_dict(rec["config"])
    return LoadedGenerator(_build_from_state_dict(sd, config, str(path)), config,
                           rec.get("direction"), "cyclemask", digest, path)


def load_generators(
    path: str | os.PathLike,
    *,
    ngf: int | None = None,
    n_blocks: int | None = None,
    norm: str | None = None,
    direction: str | None = None,
) -> dict[str, LoadedGenerator]:
    """Load every generator a file holds, keyed by direction.

    A reference state dict has no direction; it is keyed by `direction` (default "mask").
    ngf / n_blocks / norm, when given, must agree with what the file records or its shapes show.
    """
    p = Path(path)
    obj = read_checkpoint(p)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a dict checkpoint; got {type(obj).__name__}")
    fmt = obj.get("format")
    if fmt == BUNDLE_FORMAT:
        loaded = {d: _from_record(rec, p) for d, rec in obj["generators"].items()}
    elif fmt == RESTORE_FORMAT:
        loaded = {"unmask": _load_restore(obj, p)}
    elif fmt == NETWORK_FORMAT:
        g = _from_record(obj, p)
        loaded = {g.direction or direction or "mask": g}
    elif fmt is not None:
        raise CheckpointError(f"{p}: unknown checkpoint format {fmt!r}")
    else:
        loaded = {direction or "mask": _load_reference(obj, p, ngf, n_blocks, norm)}
    for g in loaded.values():
        _check_flags(g.config, p, ngf, n_blocks, norm)
    return loaded


def load_generator(path: str | os.PathLike, direction: str | None = None, **arch) -> LoadedGenerator:
    """Load one generator; `direction` picks from a bundle holding both."""
    loaded = load_generators(path, direction=direction, **arch)
    if direction is None:
        if len(loaded) != 1:
            raise CheckpointError(f"{path}: holds generators for {', '.join(sorted(loaded))}: choose a direction")
        return next(iter(loaded.values()))
    if direction not in loaded:
        raise CheckpointError(f"{path}: has no '{direction}' generator (it holds {', '.join(sorted(loaded))})")
    return loaded[direction]


def _check_flags(config, path: Path, ngf, n_blocks, norm) -> None:
    if not isinstance(config, GeneratorConfig):
        given = [n for n, v in (("ngf", ngf), ("n_blocks", n_blocks), ("norm", norm)) if v is not None]
        if given:
            raise CheckpointError(f"{path}: a restore bundle is not a ResNet generator: {', '.join(given)} do not apply")
        return
    for name, want in (("ngf", ngf), ("n_blocks", n_blocks), ("norm", norm)):
        have = getattr(config, name)
        if want is not None and want != have and not (name == "norm" and {want, have} <= {"batch", "syncbatch"}):
            raise CheckpointError(f"{path}: the file's generator has {name}={have!r}, but {name}={want!r} was given")


def _load_reference(obj: dict, path: Path, ngf, n_blocks, norm) -> LoadedGenerator:
    sd = obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), dict) else obj
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: neither a cyclemask checkpoint nor a generator state dict")
    sd = _strip_prefix(dict(sd))
    notes = []
    config = infer_generator_config(sd)
    if config.norm == "batch" and norm == "instance":
        raise CheckpointError(f"{path}: the file has batch-norm weights, but norm='instance' was given")
    if config.norm != "batch":
        # Old PyTorch versions saved InstanceNorm running stats; the reference never uses them.
        dropped = [k for k in sd if k.endswith(_DROP_SUFFIXES)]
        if dropped:
            notes.append(f"dropped {len(dropped)} unused InstanceNorm running-stat entries")
            sd = {k: v for k, v in sd.items() if k not in set(dropped)}
    net = _build_from_state_dict(sd, config, str(path))
    return LoadedGenerator(net, config, None, "reference", state_dict_sha256(net.state_dict()), path, notes)


def load_discriminator(path: str | os.PathLike) -> NLayerDiscriminator:
    p = Path(path)
    rec = read_checkpoint(p)
    if not isinstance(rec, dict) or rec.get("format") != NETWORK_FORMAT or rec.get("kind") != "discriminator":
        raise CheckpointError(f"{p}: not a cyclemask discriminator file")
    if state_dict_sha256(rec["state_dict"]) != rec.get("sha256"):
        raise CheckpointError(f"{p}: weights do not match their recorded sha256 (file corrupt or edited)")
    net = NLayerDiscriminator(DiscriminatorConfig.from_dict(rec["config"]))
    net.load_state_dict(rec["state_dict"], strict=True)
    return net.eval()


def recorded_image_size(path: str | os.PathLike) -> int | None:
    """The image size a checkpoint file records (`cyclemask.artifacts.checkpoint_image_size`),
    or None for files that record none (reference-repository files)."""
    from .artifacts import checkpoint_image_size

    obj = read_checkpoint(path)
    return checkpoint_image_size(obj.get("extra") if isinstance(obj, dict) else None)
