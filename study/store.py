"""SQLite storage of a study: its images, its participants with the sequence each one is shown,
and their answers.

Durability: WAL journal with synchronous=FULL, and every answer is committed before the
response that shows the next image is sent, so a killed server loses nothing that a participant
saw acknowledged. Idempotence: an answer is keyed by (participant, position) and only the next
unanswered position is accepted, so a double click, a resent form or a stale page changes
nothing. Connections come from a small pool (one per request in flight, reused, all closed by
close()); writes take the database lock up front (BEGIN IMMEDIATE) so concurrent participants
queue instead of failing.
"""

from __future__ import annotations

import logging
import queue
import random
import secrets
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cyclemask.errors import ConfigError, InputError

from .catalog import Catalog, cached_image_path
from .config import SOURCES

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL CHECK (source IN ('real', 'generated')),
    name TEXT NOT NULL,
    dhash TEXT NOT NULL,
    dhash_mirror TEXT NOT NULL,
    faces INTEGER
);
CREATE TABLE IF NOT EXISTS participants (
    id TEXT PRIMARY KEY,
    label INTEGER NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    n_items INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    participant_id TEXT NOT NULL REFERENCES participants (id),
    position INTEGER NOT NULL,
    image_id TEXT NOT NULL REFERENCES images (id),
    PRIMARY KEY (participant_id, position)
);
CREATE INDEX IF NOT EXISTS assignments_image ON assignments (image_id);
CREATE TABLE IF NOT EXISTS answers (
    participant_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    answer TEXT NOT NULL CHECK (answer IN ('real', 'generated')),
    confidence INTEGER CHECK (confidence BETWEEN 1 AND 3),
    answered_at TEXT NOT NULL,
    PRIMARY KEY (participant_id, position),
    FOREIGN KEY (participant_id, position) REFERENCES assignments (participant_id, position)
);
"""

# record_answer outcomes
SAVED, DUPLICATE, NOT_NEXT, UNKNOWN = "saved", "duplicate", "not_next", "unknown"


@dataclass(frozen=True)
class ParticipantState:
    label: int
    n_items: int
    answered: int
    next_image: str | None  # opaque image id at position `answered`; None when finished

    @property
    def done(self) -> bool:
        return self.answered >= self.n_items


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Store:
    """One study database. create=False: the file must exist (reports never create one)."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise InputError(f"{self.path}: no study database here (a study starts with `cyclemask-study serve`)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        try:
            with self._read() as c:
                c.executescript(_SCHEMA)
            version = self.meta("schema")
            if version is None:
                self.set_meta("schema", SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise InputError(f"{self.path}: study database format {version}; this cyclemask reads format {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise InputError(f"{self.path}: not a study database ({exc})") from None

    # -- connections and transactions ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: a pooled connection serves one request at a time, but not
        # always on the thread that opened it (SQLite itself is built thread-safe).
        c = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA foreign_keys=ON")
        return c

    @contextmanager
    def _read(self):
        try:
            c = self._idle.get_nowait()
        except queue.Empty:
            c = self._connect()
        try:
            yield c
        finally:
            self._idle.put(c)

    @contextmanager
    def _write(self):
        with self._read() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read() as c:
            return c.execute(sql, args).fetchall()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    # -- settings ----------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        with self._read() as c:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def results_token(self) -> str:
        """The secret of the results page: made once, then the same across restarts, so the
        address printed at the first start keeps working."""
        with self._write() as c:
            row = c.execute("SELECT value FROM meta WHERE key = 'results_token'").fetchone()
            if row is not None:
                return row[0]
            token = secrets.token_urlsafe(24)
            c.execute("INSERT INTO meta (key, value) VALUES ('results_token', ?)", (token,))
            return token

    def participant_count(self) -> int:
        with self._read() as c:
            return c.execute("SELECT COUNT(*) FROM participants").fetchone()[0]

    def use_display_settings(self, size: int, quality: int, image_dir: Path) -> None:
        """Record how images are re-encoded; a change is refused once anyone has taken part
        (they saw the old images), and otherwise empties the image cache."""
        want = f"{size}px q{quality}"
        have = self.meta("display")
        if have == want:
            return
        if have is not None:
            n = self.participant_count()
            if n:
                raise ConfigError(
                    f"{self.path}: this study shows images at {have} and already has {n} participant(s); "
                    f"--size / --quality ({want}) cannot change now (use a new --study-dir for a new study)"
                )
            with self._write() as c:
                c.execute("DELETE FROM images")
            for f in image_dir.glob("*.jpg"):
                f.unlink()
        self.set_meta("display", want)

    # -- images --------------------------------------------------------------------------------

    def known_images(self) -> dict[str, dict]:
        with self._read() as c:
            rows = c.execute("SELECT sha256, dhash, dhash_mirror, faces FROM images").fetchall()
        return {r[0]: {"dhash": r[1], "dhash_mirror": r[2], "faces": r[3]} for r in rows}

    def sync_images(self, catalog: Catalog) -> None:
        """Make the database's image set the catalog's. Once anyone has taken part the set is
        fixed: a different one is refused (their sequences and the rates depend on it)."""
        with self._write() as c:
            have = {(r[0], r[1]): r[2] for r in c.execute("SELECT sha256, source, id FROM images")}
            want = {(im.sha256, im.source): im for im in catalog.images}
            n = c.execute("SELECT COUNT(*) FROM participants").fetchone()[0]
            if n and set(have) != set(want):
                added, removed = len(set(want) - set(have)), len(set(have) - set(want))
                raise InputError(
                    f"{self.path}: this study already has {n} participant(s) and was started with another image set "
                    f"({added} image(s) new in the folders, {removed} gone since); start it with the same folders, "
                    "or use a new --study-dir for a new study"
                )
            for key in set(have) - set(want):
                c.execute("DELETE FROM images WHERE id = ?", (have[key],))
            for key, im in want.items():
                if key in have:
                    c.execute("UPDATE images SET name = ?, faces = ? WHERE id = ?", (im.name, im.faces, have[key]))
                else:
                    c.execute(
                        "INSERT INTO images (id, sha256, source, name, dhash, dhash_mirror, faces) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (secrets.token_hex(12), im.sha256, im.source, im.name, im.dhash, im.dhash_mirror, im.faces),
                    )

    def image_counts(self) -> dict[str, int]:
        with self._read() as c:
            rows = c.execute("SELECT source, COUNT(*) FROM images GROUP BY source").fetchall()
        return {s: dict(rows).get(s, 0) for s in SOURCES}

    def image_file(self, participant_id: str, image_id: str, image_dir: Path) -> Path | None:
        """The cached JPEG of image_id if this participant's sequence holds it, else None."""
        rows = self._rows(
            "SELECT i.sha256 FROM assignments a JOIN images i ON i.id = a.image_id "
            "WHERE a.participant_id = ? AND a.image_id = ?",
            (participant_id, image_id),
        )
        return cached_image_path(image_dir, rows[0][0]) if rows else None

    # -- participants --------------------------------------------------------------------------

    def create_participant(self, per_person: int, max_participants: int | None = None) -> str | None:
        """A new participant with a random id and a shuffled sequence of per_person images, half
        real and half generated (an odd count: the extra one on a random side), the least shown
        images first so every image collects about as many answers. None: the study is full."""
        rng = random.SystemRandom()
        with self._write() as c:
            n = c.execute("SELECT COUNT(*) FROM participants").fetchone()[0]
            if max_participants is not None and n >= max_participants:
                return None
            shown = c.execute(
                "SELECT i.id, i.source, COUNT(a.image_id) FROM images i LEFT JOIN assignments a ON a.image_id = i.id "
                "GROUP BY i.id"
            ).fetchall()
            k = {"real": per_person // 2, "generated": per_person - per_person // 2}
            if per_person % 2 and rng.random() < 0.5:
                k = {"real": k["generated"], "generated": k["real"]}
            picked: list[str] = []
            for source in SOURCES:
                pool = [(cnt, iid) for iid, src, cnt in shown if src == source]
                if len(pool) < k[source]:
                    raise ConfigError(f"{per_person} images per participant need {k[source]} {source} images; "
                                      f"the study has {len(pool)}")
                rng.shuffle(pool)
                pool.sort(key=lambda t: t[0])  # stable: random order among equally shown images
                picked += [iid for _, iid in pool[:k[source]]]
            rng.shuffle(picked)
            pid = secrets.token_urlsafe(16)
            label = c.execute("SELECT COALESCE(MAX(label), 0) + 1 FROM participants").fetchone()[0]
            c.execute("INSERT INTO participants (id, label, created_at, n_items) VALUES (?, ?, ?, ?)",
                      (pid, label, _now(), per_person))
            c.executemany("INSERT INTO assignments (participant_id, position, image_id) VALUES (?, ?, ?)",
                          [(pid, i, iid) for i, iid in enumerate(picked)])
        return pid

    def participant(self, participant_id: str) -> ParticipantState | None:
        # One statement, so the count and the next image come from the same snapshot.
        rows = self._rows(
            "SELECT p.label, p.n_items, n.answered, a.image_id FROM participants p "
            "JOIN (SELECT COUNT(*) AS answered FROM answers WHERE participant_id = ?) n "
            "LEFT JOIN assignments a ON a.participant_id = p.id AND a.position = n.answered WHERE p.id = ?",
            (participant_id, participant_id),
        )
        if not rows:
            return None
        label, n_items, answered, nxt = rows[0]
        return ParticipantState(label, n_items, answered, nxt if answered < n_items else None)

    def record_answer(self, participant_id: str, position: int, answer: str, confidence: int | None) -> str:
        """Store the answer to `position` if it is the participant's next unanswered one.
        Returns SAVED, DUPLICATE (already answered: the first answer stands), NOT_NEXT (a
        position ahead of the next one) or UNKNOWN (no such participant)."""
        if answer not in SOURCES:
            raise InputError(f"answer must be one of {', '.join(SOURCES)}; got {answer!r}")
        with self._write() as c:
            row = c.execute("SELECT n_items, (SELECT COUNT(*) FROM answers WHERE participant_id = ?) "
                            "FROM participants WHERE id = ?", (participant_id, participant_id)).fetchone()
            if row is None:
                return UNKNOWN
            n_items, answered = row
            if position < answered:
                return DUPLICATE
            if position > answered or position >= n_items:
                return NOT_NEXT
            c.execute("INSERT INTO answers (participant_id, position, answer, confidence, answered_at) VALUES (?, ?, ?, ?, ?)",
                      (participant_id, position, answer, confidence, _now()))
        return SAVED

    def score(self, participant_id: str) -> tuple[int, int]:
        """(correct, answered) of one participant."""
        (right, answered), = self._rows(
            "SELECT COALESCE(SUM(a.answer = i.source), 0), COUNT(*) FROM answers a "
            "JOIN assignments s ON s.participant_id = a.participant_id AND s.position = a.position "
            "JOIN images i ON i.id = s.image_id WHERE a.participant_id = ?",
            (participant_id,),
        )
        return int(right), int(answered)

    # -- reports -------------------------------------------------------------------------------

    def answer_rows(self) -> list[dict]:
        """Every answer with its image and participant (participants by label: their ids are
        secrets that would let the reader answer in their place)."""
        rows = self._rows(
            "SELECT p.label, a.position, i.id, i.name, i.source, a.answer, a.confidence, a.answered_at "
            "FROM answers a JOIN participants p ON p.id = a.participant_id "
            "JOIN assignments s ON s.participant_id = a.participant_id AND s.position = a.position "
            "JOIN images i ON i.id = s.image_id ORDER BY p.label, a.position"
        )
        keys = ("participant", "position", "image_id", "image", "source", "answer", "confidence", "answered_at")
        return [dict(zip(keys, r)) for r in rows]

    def participant_rows(self) -> list[dict]:
        rows = self._rows(
            "SELECT p.label, p.created_at, p.n_items, COUNT(a.position) FROM participants p "
            "LEFT JOIN answers a ON a.participant_id = p.id GROUP BY p.id ORDER BY p.label"
        )
        return [dict(zip(("participant", "started_at", "n_items", "answered"), r)) for r in rows]

    def image_rows(self) -> list[dict]:
        rows = self._rows(
            "SELECT i.id, i.name, i.source, COUNT(s.position) FROM images i LEFT JOIN assignments s ON s.image_id = i.id "
            "GROUP BY i.id ORDER BY i.source DESC, i.name"
        )
        return [dict(zip(("image_id", "image", "source", "assigned"), r)) for r in rows]
