"""Build the two-domain training set (trainA/ trainB/ testA/ testB/) from raw photo folders.

Per image: decode (an unreadable file is a rejection), detect faces with YuNet, keep the image
only when exactly one face is usable (score >= threshold and its box's short side >= min_face;
smaller faces do not count, so a crowd in the background does not reject a portrait), crop a
square around it with a margin, resize. Then, per domain and across all splits, drop exact
duplicates (identical file bytes) and near duplicates (a 256-bit difference hash of the crop,
also compared mirrored, within `dup_threshold` bits of one already kept or of a held-out image);
split by a seeded hash of each output name; write atomically; write manifest.json listing the
options, counts, every output and every rejected file with its reason.

Re-running with the same inputs and options reproduces the same files and manifest byte for
byte: detection results are cached in the manifest by source sha256, unchanged outputs are not
rewritten, and outputs a previous run wrote that the new run does not want are removed.
Files in the split folders that no manifest lists are never touched: the run refuses instead.

Near-duplicate threshold: on the shared cfmd set (many augmented copies: noise, blur, colour,
small shifts) crop pairs within ~30 of 256 bits were copies of one photo; at 34+ some were
different photos of similar framing. The default, 28, errs towards keeping images. Measured on
~200 cfmd photos against edited copies of themselves, it catches brightness changes (100 %),
added noise (98 %), and rescaled + re-encoded copies (67-77 %: the detector's box moves a few
pixels, and the crop with it); copies cut to another framing are mostly missed (7 %). Byte-
identical files are always caught. Among unrelated photos ~1 pair in 10,000 falls under it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cyclemask import __version__
from cyclemask.dedup import HASH_SIDE, bits_to_hex, dhash_bits, hex_to_bytes, near_pairs, sha256_bytes
from cyclemask.errors import ConfigError, DataError, InputError
from cyclemask.face_detect import FIT_MODES, FaceDetector, crop_square, resize_square, square_crop_box
from cyclemask.image_files import encode_image, list_images, read_image, write_bytes_atomic

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "cyclemask.prepare"
SPLITS = ("trainA", "trainB", "testA", "testB")
DOMAINS = ("A", "B")
FORMATS = ("jpg", "png")
LAYOUTS = ("auto", "plain")

# Rejection reasons (the manifest's `reason` field).
UNREADABLE = "unreadable"
NO_FACE = "no_face"
FACE_TOO_SMALL = "face_too_small"
MULTIPLE_FACES = "multiple_faces"
IMAGE_TOO_SMALL = "image_too_small"
DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
HELD_OUT = "held_out_duplicate"
UNUSED = "unused_over_count"

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PrepareConfig:
    """Options of one `cyclemask-data prepare` run (see the CLI's --help for each)."""

    sources_a: tuple[str, ...]
    sources_b: tuple[str, ...]
    out: str
    size: int = 256
    margin: float = 0.3
    fit: str = "shift"
    min_face: int = 64
    score_threshold: float = 0.6
    detect: bool = True
    detector: str | None = None
    test_count: int | None = None
    test_fraction: float = 0.1
    train_count: int | None = None
    seed: int = 0
    dup_threshold: int = 28
    holdout: tuple[str, ...] = ()
    image_format: str = "jpg"
    quality: int = 95
    layout: str = "auto"

    def __post_init__(self) -> None:
        for name in ("sources_a", "sources_b", "holdout"):
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                value = (value,)
            object.__setattr__(self, name, tuple(str(v) for v in value))
        object.__setattr__(self, "out", str(self.out))
        if not self.sources_a or not self.sources_b:
            raise ConfigError("both domains need at least one source folder (A: unmasked faces, B: masked faces)")
        if not isinstance(self.size, int) or self.size < 16:
            raise ConfigError(f"size must be an integer >= 16; got {self.size!r}")
        if not 0.0 <= self.margin <= 2.0:
            raise ConfigError(f"margin must be in [0, 2]; got {self.margin!r}")
        if self.fit not in FIT_MODES:
            raise ConfigError(f"fit must be one of {', '.join(FIT_MODES)}; got {self.fit!r}")
        if not isinstance(self.min_face, int) or self.min_face < 1:
            raise ConfigError(f"min_face must be a positive integer; got {self.min_face!r}")
        if not 0.0 < self.score_threshold < 1.0:
            raise ConfigError(f"score_threshold must be in (0, 1); got {self.score_threshold!r}")
        if self.test_count is not None and self.test_count < 0:
            raise ConfigError(f"test_count must be >= 0; got {self.test_count!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in [0, 1); got {self.test_fraction!r}")
        if self.train_count is not None and self.train_count < 1:
            raise ConfigError(f"train_count must be >= 1; got {self.train_count!r}")
        if not 0 <= self.dup_threshold < HASH_SIDE * HASH_SIDE:
            raise ConfigError(f"dup_threshold must be in [0, {HASH_SIDE * HASH_SIDE}); got {self.dup_threshold!r}")
        if self.image_format not in FORMATS:
            raise ConfigError(f"image_format must be one of {', '.join(FORMATS)}; got {self.image_format!r}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"quality must be in [1, 100]; got {self.quality!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}; got {self.layout!r}")

    def crop_fingerprint(self) -> dict:
        """The options a cached detection / crop result depends on."""
        return {"size": self.size, "margin": self.margin, "fit": self.fit, "min_face": self.min_face,
                "score_threshold": self.score_threshold, "detect": self.detect, "hash_side": HASH_SIDE}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Candidate:
    """One source image after detection (accepted so far or rejected)."""

    domain: str  # "A", "B" or "holdout"
    source: str
    rel: str  # path relative to its source root
    label: str  # short name of its source root
    source_sha256: str
    reason: str | None = None
    detail: str = ""
    face: dict | None = None
    crop_box: list[int] | None = None
    dhash: str | None = None
    dhash_mirror: str | None = None
    name: str | None = None
    split: str | None = None
    sha256: str | None = None  # of the written output file

    def cache_record(self) -> dict:
        keys = ("reason", "detail", "face", "crop_box", "dhash", "dhash_mirror")
        return {k: getattr(self, k) for k in keys}


@dataclass
class PrepareResult:
    out: Path
    manifest: dict
    written: int = 0
    unchanged: int = 0
    removed: int = 0


# ---------------------------------------------------------------------------------------------
# Sources


def resolve_source(folder: str | Path, layout: str = "auto") -> Path:
    """The folder to read images from; with layout 'auto', known data set roots map to their
    image folder: FFHQ's root -> images1024x1024/, MaskedFace-Net's root -> CMFD/ (correctly
    masked; IMFD/, the incorrectly masked half, is left out)."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"source folder {root}: not a folder")
    if layout == "auto":
        for sub, what in (("images1024x1024", "FFHQ"), ("CMFD", "MaskedFace-Net")):
            if (root / sub).is_dir():
                log.info("%s: looks like the %s root; reading %s/ only", root, what, sub)
                return root / sub
    return root


def source_labels(roots: list[Path]) -> list[str]:
    """Short, unique, file-name-safe labels for source roots (last path parts, as few as needed)."""
    parts = [r.resolve().parts for r in roots]
    depth = 1
    while True:
        labels = ["-".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    out = []
    for i, lab in enumerate(labels):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in lab) or "src"
        out.append(safe if labels.count(lab) == 1 else f"{safe}{i}")
    return out


def output_name(label: str, rel: str, ext: str) -> str:
    stem = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem.replace("/", "_"))
    return f"{label}__{safe}.{ext}"


# ---------------------------------------------------------------------------------------------
# Detection and cropping


class _Cropper:
    def __init__(self, config: PrepareConfig) -> None:
        self.config = config
        self.detector = None
        if config.detect:
            self.detector = FaceDetector(config.detector, score_threshold=config.score_threshold)

    def analyse(self, image: np.ndarray) -> tuple[str | None, str, dict | None, list[int] | None]:
        """(reason, detail, face, crop_box): reason None when the image is usable."""
        c = self.config
        h, w = image.shape[:2]
        if not c.detect:
            side = min(h, w)
            if side < c.min_face:
                return IMAGE_TOO_SMALL, f"{w}x{h} image: short side {side} px < min face {c.min_face} px", None, None
            x0, y0 = (w - side) // 2, (h - side) // 2
            return None, "", None, [x0, y0, x0 + side, y0 + side]
        faces = self.detector.detect(image)
        usable = [f for f in faces if f.size >= c.min_face]
        if not faces:
            return NO_FACE, f"no face scored >= {c.score_threshold}", None, None
        if not usable:
            return FACE_TOO_SMALL, f"largest face {max(f.size for f in faces):.0f} px < min face {c.min_face} px", None, None
        if len(usable) > 1:
            return MULTIPLE_FACES, f"{len(usable)} faces of >= {c.min_face} px", None, None
        face = usable[0]
        box = square_crop_box(face.box, image.shape, c.margin, c.fit)
        return None, "", face.to_dict(), list(box)

    def crop(self, image: np.ndarray, crop_box: list[int]) -> np.ndarray:
        return resize_square(crop_square(image, tuple(crop_box)), self.config.size)


def _analyse_file(cand: Candidate, path: Path, cropper: _Cropper) -> None:
    try:
        image = read_image(path)
    except InputError as exc:
        cand.reason, cand.detail = UNREADABLE, str(exc)
        return
    reason, detail, face, box = cropper.analyse(image)
    cand.reason, cand.detail, cand.face, cand.crop_box = reason, detail, face, box
    if reason is None:
        crop = cropper.crop(image, box)
        cand.dhash = bits_to_hex(dhash_bits(crop))
        cand.dhash_mirror = bits_to_hex(dhash_bits(crop[:, ::-1]))


# ---------------------------------------------------------------------------------------------
# The run


def _load_previous(out: Path) -> dict | None:
    p = out / MANIFEST_NAME
    if not p.is_file():
        return None
    try:
        prev = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: exists but is not a readable manifest ({exc}); remove it or choose another --out") from None
    if not isinstance(prev, dict) or prev.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{p}: not a cyclemask-data prepare manifest; choose another --out")
    return prev


def _known_outputs(prev: dict | None) -> set[str]:
    if not prev:
        return set()
    return {f"{split}/{name}" for split, names in prev.get("planned", {}).items() for name in names}


def _check_out_folder(out: Path, prev: dict | None) -> None:
    """Refuse to mix our outputs with files we did not write."""
    known = _known_outputs(prev)
    strangers = []
    for split in SPLITS:
        d = out / split
        if d.is_dir():
            strangers += [f"{split}/{p.name}" for p in sorted(d.iterdir()) if not p.name.startswith(".")
                          and f"{split}/{p.name}" not in known]
    if strangers:
        raise DataError(
            f"{out}: {len(strangers)} file(s) in the split folders were not written by cyclemask-data prepare "
            f"(e.g. {', '.join(strangers[:3])}); choose an empty --out folder or remove them"
        )


def _gather(config: PrepareConfig) -> list[Candidate]:
    groups = [("A", s) for s in config.sources_a] + [("B", s) for s in config.sources_b] + [("holdout", s) for s in config.holdout]
    roots = [resolve_source(s, config.layout) for _, s in groups]
    out = Path(config.out).resolve()
    for root in roots:
        r = root.resolve()
        if out == r or out.is_relative_to(r) or r.is_relative_to(out):
            raise ConfigError(f"--out {out} must lie outside the source folder {root} (and not contain it)")
    labels = source_labels(roots)
    cands = []
    for (domain, _), root, label in zip(groups, roots, labels):
        try:
            paths = list_images(root)
        except InputError as exc:
            raise ConfigError(str(exc)) from None
        if not paths:
            log.warning("%s: no images found", root)
        for p in paths:
            cands.append(Candidate(domain, str(p), p.relative_to(root).as_posix(), label, ""))
    return cands


def _dedup(cands: list[Candidate], threshold: int) -> None:
    """Mark duplicates per domain, in order: the first copy met is kept; held-out images win."""
    holdout = [c for c in cands if c.domain == "holdout" and c.reason is None]
    for domain in DOMAINS:
        order = holdout + [c for c in cands if c.domain == domain and c.reason is None]
        n_hold = len(holdout)
        if len(order) == n_hold:
            continue
        hashes = np.stack([hex_to_bytes(c.dhash) for c in order])
        mirrors = np.stack([hex_to_bytes(c.dhash_mirror) for c in order])
        near = near_pairs(hashes, mirrors, threshold)
        kept = np.zeros(len(order), bool)
        by_sha: dict[str, Candidate] = {}
        for i, c in enumerate(order):
            if i < n_hold:
                by_sha.setdefault(c.source_sha256, c)
                kept[i] = True
                continue
            twin = by_sha.get(c.source_sha256)
            if twin is not None:
                c.reason = HELD_OUT if twin.domain == "holdout" else DUPLICATE
                c.detail = f"identical file to {twin.source}"
                continue
            close = [(d, j) for j, d in near[i] if kept[j]]
            if close:
                d, j = min(close)
                c.reason = HELD_OUT if j < n_hold else NEAR_DUPLICATE
                c.detail = f"near duplicate of {order[j].source} ({d} of {HASH_SIDE * HASH_SIDE} hash bits differ)"
                continue
            by_sha[c.source_sha256] = c
            kept[i] = True


def _split(cands: list[Candidate], config: PrepareConfig) -> dict[str, dict[str, int]]:
    """Assign splits: order each domain by a seeded hash of its output name, take test first."""
    plan = {}
    for domain in DOMAINS:
        pool = [c for c in cands if c.domain == domain and c.reason is None]
        pool.sort(key=lambda c: hashlib.sha256(f"{config.seed}:{c.name}".encode()).hexdigest())
        n = len(pool)
        n_test = config.test_count if config.test_count is not None else int(round(n * config.test_fraction))
        if n_test > n:
            raise DataError(f"domain {domain}: --test-count {n_test} but only {n} usable images after filtering")
        n_train = n - n_test if config.train_count is None else min(config.train_count, n - n_test)
        if n_train < 1:
            raise DataError(f"domain {domain}: no images left for training ({n} usable, {n_test} for test)")
        for i, c in enumerate(pool):
            if i < n_test:
                c.split = f"test{domain}"
            elif i < n_test + n_train:
                c.split = f"train{domain}"
            else:
                c.reason, c.detail = UNUSED, f"beyond --train-count {config.train_count}"
        plan[domain] = {"usable": n, "test": n_test, "train": n_train}
    return plan


def prepare_dataset(config: PrepareConfig, progress: Progress | None = None) -> PrepareResult:
    """Run the whole preparation; see the module docstring. Returns the manifest and counts."""
    out = Path(config.out)
    prev = _load_previous(out)
    _check_out_folder(out, prev)
    cands = _gather(config)
    for domain in DOMAINS:
        if not any(c.domain == domain for c in cands):
            raise DataError(f"no images found in the domain {domain} sources")
    cropper = _Cropper(config)
    _detect_all(cands, cropper, _detection_cache(config, prev), progress)
    _assign_names(cands, config.image_format)
    _dedup(cands, config.dup_threshold)
    plan = _split(cands, config)
    interim = _record_plan(out, cands, prev)
    result = PrepareResult(out=out, manifest={})
    _write_outputs(out, cands, cropper, config, prev, result, progress)
    final_planned = _remove_unplanned(out, cands, interim, result)
    text = json.dumps(_manifest(config, cands, plan, final_planned, _detector_info(cropper)), indent=1) + "\n"
    write_bytes_atomic(out / MANIFEST_NAME, text.encode())
    result.manifest = json.loads(text)
    return result


_CACHED_FIELDS = ("reason", "detail", "face", "crop_box", "dhash", "dhash_mirror")


def _detection_cache(config: PrepareConfig, prev: dict | None) -> dict[tuple[str, str], dict]:
    """The previous run's detections by (source, sha256), when they were made with the same crop options."""
    if not prev or prev.get("crop_fingerprint") != config.crop_fingerprint():
        return {}
    return {(rec["source"], rec["source_sha256"]): rec for rec in prev.get("cache", [])}


def _detector_info(cropper: _Cropper) -> dict | None:
    if cropper.detector is None:
        return None
    from cyclemask.artifacts import file_sha256

    return {"path": str(cropper.detector.model_path), "sha256": file_sha256(cropper.detector.model_path)}


def _detect_all(cands: list[Candidate], cropper: _Cropper, cache: dict, progress: Progress | None) -> None:
    """Hash every source; reuse its cached detection or detect, crop and hash the crop."""
    hits = 0
    for i, c in enumerate(cands):
        path = Path(c.source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            c.reason, c.detail = UNREADABLE, f"{path}: cannot read file ({exc.strerror or exc})"
            c.source_sha256 = ""
        else:
            c.source_sha256 = sha256_bytes(data)
            rec = cache.get((c.source, c.source_sha256))
            if rec is not None:
                for k in _CACHED_FIELDS:
                    if k in rec:
                        setattr(c, k, rec[k])
                hits += 1
            else:
                _analyse_file(c, path, cropper)
        if progress:
            progress("detect", i + 1, len(cands))
    if hits:
        log.info("reused %d cached detection results from the previous manifest", hits)


def _assign_names(cands: list[Candidate], ext: str) -> None:
    """A unique output file name for every candidate of the two domains."""
    names: dict[str, Candidate] = {}
    for c in cands:
        if c.domain == "holdout":
            continue
        name = output_name(c.label, c.rel, ext)
        if name in names:  # e.g. x.jpg and x.png in one folder
            name = output_name(c.label, c.rel.replace(".", "_"), ext)
        k = 1
        while name in names:
            k += 1
            name = output_name(c.label, f"{c.rel.replace('.', '_')}-{k}", ext)
        c.name = name
        names[name] = c


def _planned(cands: list[Candidate]) -> dict[str, list[str]]:
    return {s: sorted(c.name for c in cands if c.split == s and c.reason is None) for s in SPLITS}


def _record_plan(out: Path, cands: list[Candidate], prev: dict | None) -> dict:
    """Record what this run will write before writing it, so that an interrupted run leaves
    nothing that a re-run would take for a stranger's file."""
    planned = _planned(cands)
    previous_planned = prev.get("planned", {}) if prev else {}
    interim = {"format": MANIFEST_FORMAT, "status": "writing",
               "planned": {s: sorted(set(planned[s]) | set(previous_planned.get(s, []))) for s in SPLITS}}
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / MANIFEST_NAME, json.dumps(interim, indent=1).encode())
    return interim


def _write_outputs(out: Path, cands: list[Candidate], cropper: _Cropper, config: PrepareConfig, prev: dict | None,
                   result: PrepareResult, progress: Progress | None) -> None:
    """Write every planned crop, leaving alone those a previous run wrote the same."""
    prev_sha = {}
    if (prev and prev.get("crop_fingerprint") == config.crop_fingerprint()
            and prev.get("output_options") == _output_options(config)):
        prev_sha = {f"{r['split']}/{r['name']}": (r["source_sha256"], r["sha256"]) for r in prev.get("files", [])}
    todo = [c for c in cands if c.reason is None and c.split]
    for i, c in enumerate(todo):
        target = out / c.split / c.name
        recorded = prev_sha.get(f"{c.split}/{c.name}")
        if recorded and recorded[0] == c.source_sha256 and target.is_file() and sha256_bytes(target.read_bytes()) == recorded[1]:
            c.sha256 = recorded[1]
            result.unchanged += 1
        else:
            try:
                image = read_image(c.source)
            except InputError as exc:  # changed on disk since detection
                c.reason, c.detail, c.split = UNREADABLE, str(exc), None
            else:
                data = encode_image(cropper.crop(image, c.crop_box), "." + config.image_format, config.quality)
                c.sha256 = sha256_bytes(data)
                if not (target.is_file() and target.read_bytes() == data):
                    write_bytes_atomic(target, data)
                    result.written += 1
                else:
                    result.unchanged += 1
        if progress:
            progress("write", i + 1, len(todo))


def _remove_unplanned(out: Path, cands: list[Candidate], interim: dict, result: PrepareResult) -> dict[str, list[str]]:
    """Remove outputs this run or the previous one planned that the final plan no longer has."""
    final_planned = _planned(cands)
    for s in SPLITS:
        for name in set(interim["planned"][s]) - set(final_planned[s]):
            p = out / s / name
            if p.is_file():
                p.unlink()
                result.removed += 1
    return final_planned


def _output_options(config: PrepareConfig) -> dict:
    return {"image_format": config.image_format, "quality": config.quality}


def _manifest(config, cands, plan, planned, detector_info) -> dict:
    counts: dict[str, dict] = {}
    for domain in DOMAINS + ("holdout",):
        mine = [c for c in cands if c.domain == domain]
        if domain == "holdout" and not mine:
            continue
        rejected: dict[str, int] = {}
        for c in mine:
            if c.reason is not None:
                rejected[c.reason] = rejected.get(c.reason, 0) + 1
        entry = {"found": len(mine), "rejected": dict(sorted(rejected.items())),
                 "rejected_total": sum(rejected.values())}
        if domain in DOMAINS:
            entry.update({"train": len(planned[f"train{domain}"]), "test": len(planned[f"test{domain}"])})
        else:
            entry["usable"] = sum(1 for c in mine if c.reason is None)
        counts[domain] = entry
    files = [{"split": c.split, "name": c.name, "source": c.source, "source_sha256": c.source_sha256,
              "sha256": c.sha256, "face": c.face, "crop_box": c.crop_box}
             for c in sorted(cands, key=lambda c: (c.split or "", c.name or ""))
             if c.reason is None and c.split]
    rejected = [{"domain": c.domain, "source": c.source, "reason": c.reason, "detail": c.detail}
                for c in cands if c.reason is not None and c.domain != "holdout"]
    cache = [{"source": c.source, "source_sha256": c.source_sha256, **c.cache_record()}
             for c in cands if c.source_sha256]
    for rec in cache:  # dedup, split and count decisions are redone every run; only detection is cached
        if rec["reason"] in (DUPLICATE, NEAR_DUPLICATE, HELD_OUT, UNUSED):
            rec["reason"], rec["detail"] = None, ""
    return {
        "format": MANIFEST_FORMAT,
        "format_version": 1,
        "status": "complete",
        "cyclemask_version": __version__,
        "options": config.to_dict(),
        "crop_fingerprint": config.crop_fingerprint(),
        "output_options": _output_options(config),
        "detector": detector_info,
        "counts": counts,
        "split_plan": plan,
        "planned": planned,
        "files": files,
        "rejected": rejected,
        "cache": cache,
    }
