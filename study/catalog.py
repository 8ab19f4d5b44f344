"""The study's images: find them, check them, and re-encode each one the same way.

Checks, all made before the server starts (problems are listed together, one line per file):
a folder that is missing or holds no images; a file that cannot be decoded; an image in which
the face detector finds no face; the same photo among both the real and the generated images
(identical bytes, or a near duplicate by difference hash, also mirrored: a participant who met
it twice would learn its label). Copies within one folder are shown once, with a warning.

Every accepted image is centre-cropped square, resized to one size and re-encoded as a JPEG of
one quality with no metadata, then cached under the study folder by the sha256 of its source
file: a restart re-hashes the files and decodes only new ones. The EXIF orientation of a photo
is applied first, so a phone picture is not shown on its side.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cyclemask.dedup import HASH_SIDE, bits_to_hex, cross_pairs, dhash_bits, hex_to_bytes, near_pairs, sha256_bytes
from cyclemask.errors import ConfigError, InputError
from cyclemask.image_files import IMAGE_EXTENSIONS, encode_image, list_images, read_image, write_bytes_atomic

from .config import SOURCES, StudyConfig

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

@dataclass
class CatalogImage:
    """One accepted image. name: its path relative to its folder (reports show it, participants
    never see it); faces: faces found, None where the check did not run."""

    source: str
    name: str
    path: Path
    sha256: str
    dhash: str
    dhash_mirror: str
    faces: int | None = None


@dataclass
class Catalog:
    images: list[CatalogImage]
    face_check: str
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def count(self, source: str) -> int:
        return sum(1 for im in self.images if im.source == source)


def cached_image_path(image_dir: Path, sha256: str) -> Path:
    return image_dir / f"{sha256}.jpg"


def display_image(image: np.ndarray, size: int) -> np.ndarray:
    """The centred square, resized to size x size: area averaging when shrinking, cubic when
    enlarging. Square for all, so an aspect ratio cannot tell real from generated."""
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    square = image[y0:y0 + side, x0:x0 + side]
    if side == size:
        return np.ascontiguousarray(square)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(square), (size, size), interpolation=interp)


def _list_folder(folder: Path, source: str) -> list[Path]:
    if not folder.exists():
        raise InputError(f"{folder}: no such folder (the {source} images)")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (the {source} images)")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise InputError(f"{folder}: cannot read the folder (the {source} images): permission denied")
    files = list_images(folder)
    if not files:
        raise InputError(f"{folder}: no images (the {source} images; looked for {' '.join(IMAGE_EXTENSIONS)} files, "
                         "also in subfolders)")
    return files


class _Detector:
    """Opens the face detector on first use, so a restart whose images were all checked before
    loads no model."""

    def __init__(self, config: StudyConfig) -> None:
        self.config = config
        self._det = None
        self.note: str | None = None
        if not config.face_check:
            self.note = "face check off (--no-face-check)"

    @property
    def enabled(self) -> bool:
        return self.config.face_check and (self.note is None or self._det is not None)

    def count(self, image: np.ndarray) -> int | None:
        if not self.enabled:
            return None
        if self._det is None:
            from cyclemask.face_detect import FaceDetector

            try:
                self._det = FaceDetector(self.config.detector)
            except ConfigError as exc:
                if self.config.detector is not None:
                    raise
                self.note = f"face check skipped: {exc}"
                log.warning("%s", self.note)
                return None
            self.note = f"faces checked with YuNet ({self._det.model_path.name})"
        return len(self._det.detect(image))


def build_catalog(config: StudyConfig, known: dict[str, dict] | None = None, progress: Progress | None = None) -> Catalog:
    """Check both folders and cache every accepted image re-encoded; raise InputError listing
    every problem unless config.skip_bad (then the images concerned are left out).

    known: sha256 -> {"dhash", "dhash_mirror", "faces"} of images processed before (the study
    database): those are not decoded again while their cached JPEG exists.
    """
    known = known or {}
    folders = {"real": config.real, "generated": config.generated}
    listed = {s: _list_folder(folders[s], s) for s in SOURCES}
    total = sum(len(v) for v in listed.values())
    problems: list[tuple[str, list[tuple[str, str]]]] = []  # (message, [(source, sha256)] it concerns)
    warnings: list[str] = []
    entries: dict[str, list[CatalogImage]] = {s: [] for s in SOURCES}
    done = 0

    # Read and hash everything first: exact duplicates need no decoding.
    by_sha: dict[str, tuple[str, Path]] = {}
    for source in SOURCES:
        for path in listed[source]:
            done += 1
            if progress:
                progress("reading", done, total)
            try:
                data = path.read_bytes()
            except OSError as exc:
                problems.append((f"{path}: cannot read file ({exc.strerror or exc})", []))
                continue
            sha = sha256_bytes(data)
            if sha in by_sha:
                other_source, other = by_sha[sha]
                if other_source == source:
                    warnings.append(f"{path}: a copy of {other} (identical bytes); shown once")
                else:
                    problems.append((f"{other} ({other_source}) and {path} ({source}): the same file in both sets "
                                     "(identical bytes)", [(other_source, sha)]))
                continue
            by_sha[sha] = (source, path)
            name = path.relative_to(folders[source]).as_posix()
            entries[source].append(CatalogImage(source, name, path, sha, "", ""))

    config.image_dir.mkdir(parents=True, exist_ok=True)
    detector = _Detector(config)
    todo = [im for s in SOURCES for im in entries[s]]
    for i, im in enumerate(todo, 1):
        if progress:
            progress("checking", i, len(todo))
        cached = cached_image_path(config.image_dir, im.sha256)
        prev = known.get(im.sha256)
        if prev is not None and cached.is_file() and (prev.get("faces") is not None or not detector.enabled):
            im.dhash, im.dhash_mirror, im.faces = prev["dhash"], prev["dhash_mirror"], prev.get("faces")
        else:
            try:
                pixels = read_image(im.path)  # as a viewer shows it: the EXIF orientation applied
            except OSError as exc:
                problems.append((f"{im.path}: cannot read file ({exc.strerror or exc})", [(im.source, im.sha256)]))
                im.dhash = ""
                continue
            except InputError as exc:
                problems.append((str(exc), [(im.source, im.sha256)]))
                im.dhash = ""
                continue
            shown = display_image(pixels, config.size)
            if not cached.is_file():
                write_bytes_atomic(cached, encode_image(shown, ".jpg", config.quality))
            im.dhash = bits_to_hex(dhash_bits(shown))
            im.dhash_mirror = bits_to_hex(dhash_bits(shown[:, ::-1]))
            im.faces = detector.count(pixels)
        if config.face_check and im.faces == 0:
            problems.append((f"{im.path}: no face found ({im.source})", [(im.source, im.sha256)]))
    for s in SOURCES:
        entries[s] = [im for im in entries[s] if im.dhash]

    if config.dup_threshold > 0 and entries["real"] and entries["generated"]:
        real, gen = entries["real"], entries["generated"]
        hashes = {s: np.stack([hex_to_bytes(im.dhash) for im in entries[s]]) for s in SOURCES}
        mirrors = np.stack([hex_to_bytes(im.dhash_mirror) for im in real])
        for i, j, d in cross_pairs(hashes["real"], mirrors, hashes["generated"], config.dup_threshold):
            problems.append((f"{real[i].path} (real) and {gen[j].path} (generated): look like the same photo "
                             f"({d} of {HASH_SIDE * HASH_SIDE} hash bits differ; near-duplicate threshold "
                             f"{config.dup_threshold})", [("real", real[i].sha256), ("generated", gen[j].sha256)]))
        for s in SOURCES:
            mine = np.stack([hex_to_bytes(im.dhash_mirror) for im in entries[s]])
            for i, pairs in enumerate(near_pairs(hashes[s], mine, config.dup_threshold)):
                for j, d in pairs:
                    warnings.append(f"{entries[s][i].path}: looks like {entries[s][j].path} ({d} hash bits differ); "
                                    "both kept")

    face_note = detector.note or ("faces checked (results cached from an earlier start)" if config.face_check else "")
    skipped: list[str] = []
    if problems:
        if not config.skip_bad:
            n = len(problems)
            raise InputError(
                f"{n} problem{'s' if n > 1 else ''} with the study images (fix or remove these files, or pass "
                "--skip-bad to leave them out):\n" + "\n".join(f"  {msg}" for msg, _ in problems)
            )
        drop = {key for _, keys in problems for key in keys}
        for msg, _ in problems:
            skipped.append(msg)
            log.warning("left out: %s", msg)
        for s in SOURCES:
            entries[s] = [im for im in entries[s] if (s, im.sha256) not in drop]
    for s in SOURCES:
        if not entries[s]:
            raise InputError(f"{folders[s]}: no usable {s} images left after the checks above")
    for w in warnings:
        log.warning("%s", w)
    return Catalog([im for s in SOURCES for im in entries[s]], face_note, warnings, skipped)

