"""Options of a study: which images, how they are shown, how each participant's set is drawn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cyclemask.dedup import HASH_SIDE
from cyclemask.errors import ConfigError

SOURCES = ("real", "generated")
ANSWERS = SOURCES
DB_NAME = "study.sqlite3"
IMAGE_DIR = "images"
# The paper showed each participant 22 images.
DEFAULT_PER_PERSON = 22


@dataclass(frozen=True)
class StudyConfig:
    """real / generated: the two image folders (searched recursively).
    study_dir: where the SQLite file and the re-encoded images live; one folder per study.
    per_person: images per participant, half real and half generated (an odd count gives the
    extra one to a random side). None: 22, or fewer when a folder has too few images.
    size, quality: every face is centre-cropped square, resized to size x size and re-encoded as
    JPEG at this quality, so format, resolution and metadata give nothing away.
    face_check: refuse images in which YuNet finds no face (detector: its ONNX file; None: the
    default detector if one is available, else the check is skipped with a note).
    dup_threshold: real and generated images whose 256-bit difference hashes (also mirrored)
    differ in at most this many bits count as the same photo; 0 compares exact bytes only.
    skip_bad: leave bad images out (with a warning each) instead of refusing to start.
    max_participants: new visitors beyond this many are turned away; None: no limit.
    """

    real: Path
    generated: Path
    study_dir: Path
    per_person: int | None = None
    size: int = 256
    quality: int = 90
    face_check: bool = True
    detector: Path | None = None
    dup_threshold: int = 28
    skip_bad: bool = False
    max_participants: int | None = None

    def __post_init__(self) -> None:
        for name in ("real", "generated", "study_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.detector is not None:
            object.__setattr__(self, "detector", Path(self.detector))
        if self.per_person is not None and (not _is_int(self.per_person) or self.per_person < 2):
            raise ConfigError(f"per_person must be an integer of at least 2 (one real, one generated); got {self.per_person!r}")
        if not _is_int(self.size) or not 64 <= self.size <= 2048:
            raise ConfigError(f"size must be an integer in [64, 2048] pixels; got {self.size!r}")
        if not _is_int(self.quality) or not 30 <= self.quality <= 100:
            raise ConfigError(f"quality must be an integer JPEG quality in [30, 100]; got {self.quality!r}")
        if not _is_int(self.dup_threshold) or not 0 <= self.dup_threshold < HASH_SIDE * HASH_SIDE:
            raise ConfigError(f"dup_threshold must be in [0, {HASH_SIDE * HASH_SIDE}); got {self.dup_threshold!r}")
        if self.max_participants is not None and (not _is_int(self.max_participants) or self.max_participants < 1):
            raise ConfigError(f"max_participants must be a positive integer; got {self.max_participants!r}")
        if self.real.resolve() == self.generated.resolve():
            raise ConfigError(f"the real and the generated folder are the same folder: {self.real}")

    @property
    def db_path(self) -> Path:
        return self.study_dir / DB_NAME

    @property
    def image_dir(self) -> Path:
        return self.study_dir / IMAGE_DIR


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
