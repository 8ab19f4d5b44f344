"""What a run may keep on disk between runs to start faster: compiled OpenVINO models and
`--backend auto`'s CPU choice, each keyed on the graph file's sha256.

Start-up is a large part of a small job: compiling the full generator for OpenVINO takes
0.6-1.0 s on 2 cores, loading it from OpenVINO's cache 0.2 s; `auto`'s timing of OpenVINO
against ONNX Runtime on a small graph costs about a second, more than translating a dozen faces.

- OpenVINO's CACHE_DIR is a folder per graph content (`openvino/<sha256 prefix>/`): a graph
  replaced at the same path never meets the blob of its predecessor, whatever OpenVINO keys its
  blobs on. OpenVINO keys inside that folder on its own version, the device and the compile
  options (precision hint, streams, threads). The least recently used folders beyond
  MAX_OPENVINO_ENTRIES are removed.
- `auto`'s choice is remembered per graph content, CPU model, usable CPUs, thread setting and
  runtime versions (`probe.json`).

Root: $CYCLEMASK_CACHE_DIR, else $XDG_CACHE_HOME/cyclemask, else ~/.cache/cyclemask.
$CYCLEMASK_CACHE_DIR=off (or 0) turns both caches off. A cache that cannot be written is
skipped with a debug message: it never fails a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from cyclemask.image_files import write_bytes_atomic

log = logging.getLogger(__name__)

CACHE_ENV = "CYCLEMASK_CACHE_DIR"
MAX_OPENVINO_ENTRIES = 16
PROBE_FILE = "probe.json"
MAX_PROBE_ENTRIES = 256


def cache_root() -> Path | None:
    """The cache folder, or None when caching is off."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in ("off", "0", "none", "false"):
        return None
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cyclemask"


def graph_sha256(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes (about 0.1 s for the 45 MB full generator)."""
    from cyclemask.artifacts import file_sha256

    return file_sha256(path)


def openvino_cache_dir(graph_sha: str) -> Path | None:
    """The CACHE_DIR for this graph's content (created), or None when caching is off or the
    folder cannot be made."""
    root = cache_root()
    if root is None:
        return None
    d = root / "openvino" / graph_sha[:24]
    try:
        d.mkdir(parents=True, exist_ok=True)
        os.utime(d)  # the least recently used go first
        _prune(d.parent, MAX_OPENVINO_ENTRIES, keep=d)
    except OSError as exc:
        log.debug("OpenVINO model cache off: cannot use %s (%s)", d, exc)
        return None
    return d


def _prune(folder: Path, keep_n: int, keep: Path) -> None:
    entries = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep_n:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# auto's CPU choice
# ------------------------------------------------------------------------------------------------


def probe_key(graph_sha: str, threads: int | None, ov_mode: str) -> str:
    """What the measured choice depends on: the graph, this CPU, the threads it may use and
    the two runtimes' versions."""
    import importlib.metadata

    from .cpu_features import cpu_features

    def version(pkg: str) -> str:
        for name in (pkg, pkg + "-gpu"):
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "-"

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    parts = [graph_sha, cpu_features().model, f"cpus={cpus}", f"threads={threads or 'default'}", f"ov_mode={ov_mode}",
             f"openvino={version('openvino')}", f"onnxruntime={version('onnxruntime')}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _probe_path() -> Path | None:
    root = cache_root()
    return None if root is None else root / PROBE_FILE


def cached_probe(key: str) -> dict | None:
    """A choice stored by `remember_probe` under `key`, or None."""
    p = _probe_path()
    if p is None or not p.is_file():
        return None
    try:
        entry = json.loads(p.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(entry, dict) and isinstance(entry.get("winner"), str) and isinstance(entry.get("ms"), dict):
        return entry
    return None


def remember_probe(key: str, winner: str, ms: dict[str, float]) -> None:
    p = _probe_path()
    if p is None:
        return
    try:
        data = json.loads(p.read_text()) if p.is_file() else {}
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[key] = {"winner": winner, "ms": {k: round(v, 3) for k, v in ms.items()}, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if len(data) > MAX_PROBE_ENTRIES:
        for old in sorted(data, key=lambda k: str(data[k].get("when", "")))[:len(data) - MAX_PROBE_ENTRIES]:
            del data[old]
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(p, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:
        log.debug("cannot store auto's choice in %s (%s)", p, exc)


# ------------------------------------------------------------------------------------------------
# How heavy a graph is, without loading it
# ------------------------------------------------------------------------------------------------

_BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}


def estimated_gmacs(path: str | os.PathLike) -> float | None:
    """Multiply-accumulates per image (billions) of a cyclemask generator graph, estimated
    from its file size and recorded image size, or None when the graph does not record them.

    A ResNet generator spends nearly all its work at a quarter of the input resolution, so MACs
    ~ weights x (S/4)^2: 46.7 G for the full generator (ngf 64, 9 blocks, 256 px; counted
    exactly, 49.5 G), 0.2 G for the embedded demo (ngf 16, 6 blocks, 80 px). Good enough to
    tell a model that takes half a second per image on a small CPU from one that takes
    milliseconds, which is all `auto` needs it for.
    """
    from cyclemask.artifacts import ArtefactError, read_onnx_metadata

    p = Path(path)
    try:
        meta = read_onnx_metadata(p)
        size = meta.get("image_size")
        weights = p.stat().st_size / _BYTES_PER_WEIGHT.get(meta.get("precision", "fp32"), 4)
    except (ArtefactError, OSError):
        return None
    if not isinstance(size, int) or size < 1:
        return None
    return weights * (size / 4) ** 2 / 1e9
