"""Outputs that are whole or absent, whatever stops the run that writes them.

Every command writes through this module (`cyclemask.image_files.write_bytes_atomic` does):

- **Partial files.** A file on its way to DIR/NAME.EXT is written as DIR/.NAME.<run>.partial.EXT
  and renamed into place only when complete; a staging folder is DIR/.NAME.<run>.partial/.
  Hidden and marked `.partial`, such a name is never listed as an image nor taken for an
  output, and <run>, this process's run id, says which run made it.
- **One journal per output root** (a folder a command writes into, or a single output file):
  ROOT/.cyclemask-journal, or DIR/.NAME.EXT.cyclemask-journal beside a single file. A run holds
  an exclusive advisory lock (flock) on it while it writes, so a second run on the same output
  is refused with the first one's pid; the kernel drops the lock when its holder dies, however
  it dies. The journal records each run's start (run id, pid, command), its end, and every
  output it completed under the root (what a resumed run may skip).
- **The sweep.** A run that takes the lock removes the partial files of the runs the journal
  shows started and never ended (killed, or the machine went down), and says so. It removes
  only names of the form above carrying such a run's id: nothing else, and never by age.
- **A second Ctrl-C / SIGTERM** exits at once (`cyclemask.cli_util`), after
  `remove_live_partials` has deleted what this process was still writing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from .errors import ConfigError, OutputBusyError, OutputError

log = logging.getLogger(__name__)

JOURNAL_NAME = ".cyclemask-journal"
JOURNAL_SUFFIX = ".cyclemask-journal"
_RUN_RE = "[0-9a-f]{12}"
PARTIAL_RE = re.compile(rf"^\.(?P<name>.+)\.(?P<run>{_RUN_RE})(?:-\d+)?\.partial(?P<ext>\.[^.]+)?$")

# Errors after which no output of the run can be written: stop the run instead of failing every
# remaining file the same way.
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS})

_run_id = secrets.token_hex(6)


def run_id() -> str:
    """This process's run id: the <run> of its partial names and journal records."""
    return _run_id


def set_run_id(value: str) -> None:
    """Adopt another process's run id (workers writing for one run)."""
    global _run_id
    if not re.fullmatch(_RUN_RE, value or ""):
        raise ConfigError(f"run id must be 12 lowercase hex digits; got {value!r}")
    _run_id = value


def is_fatal_write_error(exc: BaseException) -> bool:
    """A full disk, a file size limit or a folder this process may not write."""
    return isinstance(exc, OSError) and exc.errno in FATAL_ERRNOS


def output_error(path, exc: OSError, action: str = "cannot write") -> OutputError:
    """`exc` as one line naming `path` (the output, not the partial name it was written under)."""
    if isinstance(exc, OutputError):
        return exc
    return OutputError(path, exc.errno, exc.strerror or str(exc), action)


# ---------------------------------------------------------------------------------------------
# Partial files
# ---------------------------------------------------------------------------------------------

_live_lock = threading.RLock()
_live: dict[str, bool] = {}  # partial path -> is a folder


def partial_path(target: str | os.PathLike, n: int = 0) -> Path:
    """The name `target` is written under until it is complete."""
    t = Path(target)
    tag = run_id() if n == 0 else f"{run_id()}-{n}"
    return t.with_name(f".{t.stem}.{tag}.partial{t.suffix}")


def create_partial(target: str | os.PathLike, directory: bool = False) -> Path:
    """Create (empty) and register the partial file or staging folder of `target`; its parent
    must exist. Commit it with `commit_partial`, or `discard_partial` it."""
    for n in range(1000):
        p = partial_path(target, n)
        key = str(p)
        with _live_lock:
            if key in _live:
                continue
            _live[key] = directory  # registered before it exists: a hard exit never misses it
        try:
            if directory:
                os.mkdir(p)
            else:
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
            return p
        except FileExistsError:
            _forget(p)
        except BaseException:
            # A stop signal raises between os.open and the return too: the file is ours then.
            discard_partial(p)
            raise
    raise OutputError(target, errno.EEXIST, "too many partial files of this output", "cannot stage")


def _no_lost_stop() -> None:
    pass


# Set by cli_util: in the main thread, raises the KeyboardInterrupt of a stop signal that a
# finalizer swallowed. Called before each commit and by loops that wait on other threads.
raise_lost_stop: Callable[[], None] = _no_lost_stop


def commit_partial(partial: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename a complete partial into place and record it in its root's journal."""
    try:
        raise_lost_stop()  # nothing is committed after a stop
    except BaseException:
        discard_partial(partial)
        raise
    os.replace(partial, target)
    _forget(partial)
    record_output(target)


def discard_partial(partial: str | os.PathLike) -> None:
    p = Path(partial)
    try:
        if _live.get(str(p)) or p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    finally:
        _forget(p)


def _forget(partial) -> None:
    with _live_lock:
        _live.pop(str(partial), None)


@contextlib.contextmanager
def temporary_folder(prefix: str):
    """A folder in the system temp directory for this block's scratch files, removed on the way
    out however the block ends, and by `remove_live_partials` when a second stop signal exits at
    once (the unwinding that would remove it never happens then)."""
    import tempfile

    path = tempfile.mkdtemp(prefix=prefix)
    with _live_lock:
        _live[path] = True
    try:
        yield Path(path)
    finally:
        discard_partial(path)


def live_partials() -> list[Path]:
    with _live_lock:
        return [Path(p) for p in _live]


def remove_live_partials(hold: bool = False) -> int:
    """Delete every partial this process is still writing; returns how many existed.

    hold=True keeps the registry locked afterwards, so no thread can start another: for a
    process about to exit at once."""
    _live_lock.acquire()
    try:
        n = 0
        for key, is_dir in list(_live.items()):
            try:
                if is_dir:
                    shutil.rmtree(key)
                else:
                    os.unlink(key)
                n += 1
            except OSError:
                pass
            _live.pop(key, None)
        return n
    finally:
        if not hold:
            _live_lock.release()


# ---------------------------------------------------------------------------------------------
# Lock and journal
# ---------------------------------------------------------------------------------------------

_active: list["OutputLock"] = []
_history: list["OutputLock"] = []


def journal_path(root: str | os.PathLike, folder: bool) -> Path:
    r = Path(root)
    return r / JOURNAL_NAME if folder else r.with_name(f".{r.name}{JOURNAL_SUFFIX}")


def read_journal(root: str | os.PathLike, folder: bool = True) -> list[dict]:
    """The journal's records, oldest first (a torn last line, from a kill mid-write, is skipped)."""
    try:
        data = journal_path(root, folder).read_bytes()
    except FileNotFoundError:
        return []
    return _parse(data)


def completed_outputs(root: str | os.PathLike) -> set[str]:
    """Outputs (paths relative to a folder root) that runs recorded as complete."""
    return {r["done"] for r in read_journal(root, True) if "done" in r}


def _parse(data: bytes) -> list[dict]:
    records = []
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


class OutputLock:
    """The lock and journal of one output root, held while a run writes there.

        with OutputLock(out_dir, "cyclemask-run"):        # a folder
        with OutputLock(video_out, "cyclemask-run", folder=False):   # one file

    Taking it refuses (OutputBusyError) when a live run holds it, and sweeps the partial files
    of dead runs. The same root taken again by this process is shared, not refused. A run that
    ends (normally, by an error or by Ctrl-C) with none of its partial files left deletes the
    journal, and the folders the lock created if they stayed empty: a finished run leaves only
    its outputs. keep_journal=True keeps the journal as the record of the completed outputs
    (`completed_outputs`), for runs that can be resumed. Only a killed run leaves its journal
    behind unasked: the next run needs it to sweep.
    """

    def __init__(self, root: str | os.PathLike, command: str, folder: bool = True,
                 keep_journal: bool = False) -> None:
        self.root = Path(os.path.abspath(root))
        self.command = command
        self.folder = folder
        self.keep_journal = keep_journal
        self.journal = journal_path(self.root, folder)
        self.completed = 0
        self.swept: list[Path] = []
        self._fd: int | None = None
        self._shared_with: OutputLock | None = None
        self._created: list[Path] = []  # folders made by acquire, deepest first

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        status = ("ended" if exc_type is None else
                  "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")
        self.release(status)

    @property
    def held(self) -> bool:
        return self._fd is not None or self._shared_with is not None

    def probe(self) -> "OutputLock":
        """Refuse now if a live run holds the lock; creates nothing (check the output, then
        `acquire`)."""
        if any(other.journal == self.journal for other in _active):
            return self
        try:
            fd = os.open(self.journal, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return self  # no journal (or none readable): acquire will say
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(self._busy_message(_parse(_read_fd(fd)))) from None
        finally:
            os.close(fd)
        return self

    def acquire(self) -> "OutputLock":
        for other in _active:
            if other.journal == self.journal:
                self._shared_with = other
                return self
        folder = self.root if self.folder else self.root.parent
        missing = [d for d in (folder, *folder.parents) if not d.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(folder, exc, "cannot create the output folder") from None
        self._created = missing
        for _ in range(50):
            try:
                fd = os.open(self.journal, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                raise output_error(self.journal, exc, "cannot create the lock file") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                records = _parse(_read_fd(fd))
                os.close(fd)
                raise OutputBusyError(self._busy_message(records)) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder before us may have deleted the journal between our open and our lock
            # (a single file's journal goes when its run ends): then we locked a dead inode.
            try:
                current = os.stat(self.journal)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                break
            os.close(fd)
        else:
            raise OutputBusyError(f"{self.root}: cannot lock {self.journal}: it keeps being replaced")
        self._fd = fd
        try:
            self._start(_parse(_read_fd(fd)))
        except BaseException:
            self._fd = None
            os.close(fd)
            raise
        _active.append(self)
        _history.append(self)
        return self

    def _start(self, records: list[dict]) -> None:
        starts: dict[str, dict] = {}
        ended: set[str] = set()
        done: dict[str, dict] = {}
        for r in records:
            if r.get("event") == "start" and isinstance(r.get("run"), str):
                starts[r["run"]] = r
            elif r.get("event") == "end":
                ended.add(r.get("run"))
            elif isinstance(r.get("done"), str):
                done[r["done"]] = r
        dead = {run: r for run, r in starts.items() if run not in ended and run != run_id()}
        if dead:
            self.swept = self.sweep(set(dead))
            if self.swept:
                pids = ", ".join(sorted({str(r.get("pid", "?")) for r in dead.values()}))
                names = ", ".join(str(p.relative_to(self.root.parent)) for p in self.swept[:5])
                more = f" and {len(self.swept) - 5} more" if len(self.swept) > 5 else ""
                log.warning("%s: removed %d partial file(s) left by an earlier run that did not finish "
                            "(pid %s; it is no longer running): %s%s", self.root, len(self.swept), pids, names, more)
        # Dead runs are swept and finished ones need nothing: keep only what outputs are complete.
        if len(done) != len(records):
            compact = b"".join(_line(r) for r in done.values())
            os.ftruncate(self._fd, 0)
            _write_fd(self._fd, compact, self.journal)
        start = {"event": "start", "run": run_id(), "pid": os.getpid(), "host": socket.gethostname(),
                 "command": self.command, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _write_fd(self._fd, _line(start), self.journal)

    def _busy_message(self, records: list[dict]) -> str:
        holder = next((r for r in reversed(records) if r.get("event") == "start"), None)
        if holder is None:
            who = "another run"
        else:
            here = holder.get("host") in (None, socket.gethostname())
            who = (f"another run (pid {holder.get('pid', '?')}{'' if here else ' on ' + str(holder.get('host'))}, "
                   f"{holder.get('command', 'cyclemask')}, started {holder.get('time', '?')})")
        return (f"{self.root}: {who} is writing this output; wait for it to finish or stop it, "
                f"or choose another output (lock: {self.journal})")

    def find_partials(self, runs: set[str]) -> list[Path]:
        """The partial files and folders of `runs` on disk under this output."""
        found: list[Path] = []
        if self.folder:
            for dirpath, dirnames, filenames in os.walk(self.root):
                keep = []
                for d in dirnames:
                    m = PARTIAL_RE.match(d)
                    if m and m["run"] in runs:
                        found.append(Path(dirpath) / d)
                    elif not d.startswith("."):
                        keep.append(d)
                dirnames[:] = sorted(keep)
                for f in filenames:
                    m = PARTIAL_RE.match(f)
                    if m and m["run"] in runs:
                        found.append(Path(dirpath) / f)
        else:
            try:
                entries = list(os.scandir(self.root.parent))
            except OSError:
                entries = []
            for e in entries:
                m = PARTIAL_RE.match(e.name)
                if (m and m["run"] in runs and m["name"] == self.root.stem
                        and (m["ext"] or "") == self.root.suffix):
                    found.append(Path(e.path))
        return found

    def sweep(self, runs: set[str]) -> list[Path]:
        """Remove the partial files and folders of `runs` under this output, and return them: on
        acquiring, those of dead runs; a --ray run, at its end, its own killed workers'. Call it
        only while holding the lock, so no live run's partials can be among them."""
        found = self.find_partials(runs)
        removed = []
        for p in sorted(found):
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
            except OSError as exc:
                log.warning("%s: cannot remove this partial file of a dead run (%s)", p, exc.strerror or exc)
        return removed

    def record(self, target: str | os.PathLike) -> None:
        """Record `target` (under the root) as complete."""
        owner = self._shared_with or self
        if owner._fd is None:
            return
        rel = "." if not self.folder else os.path.relpath(os.path.abspath(target), self.root)
        if rel != "." and any(part.startswith(".") for part in Path(rel).parts):
            return  # inside a staging folder, or hidden: not an output
        owner.completed += 1
        try:
            _write_fd(owner._fd, _line({"done": rel, "run": run_id()}), owner.journal)
        except OSError:
            # The output is complete; without its record a resumed run redoes it.
            log.debug("cannot record %s in %s", target, owner.journal, exc_info=True)

    def covers(self, target: str) -> bool:
        if self.folder:
            return target.startswith(str(self.root) + os.sep)
        return target == str(self.root)

    def release(self, status: str = "ended") -> None:
        if self._shared_with is not None:
            self._shared_with = None
            return
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self in _active:
            _active.remove(self)
        removed = False
        try:
            where = str(self.root if self.folder else self.root.parent) + os.sep
            mine_left = any(p.startswith(where) for p in map(str, live_partials()))
            if not self.keep_journal and not mine_left:
                os.unlink(self.journal)  # still ours: we hold the lock
                removed = True
            else:
                _write_fd(fd, _line({"event": "end", "run": run_id(), "status": status}), self.journal)
        except OSError:
            # No end record: the next run takes this one for dead and sweeps (finding nothing).
            log.debug("cannot close the journal %s", self.journal, exc_info=True)
        finally:
            os.close(fd)
        if removed:
            for d in self._created:
                try:
                    d.rmdir()  # only if empty: nothing was written there
                except OSError:
                    break


def lock_outputs(command: str, folders=(), files=()) -> contextlib.ExitStack:
    """Lock every given output folder and file (None entries skipped) for a `with` block."""
    stack = contextlib.ExitStack()
    try:
        for root, folder in [(f, True) for f in folders] + [(f, False) for f in files]:
            if root is not None:
                stack.enter_context(OutputLock(root, command, folder=folder))
    except BaseException:
        stack.close()
        raise
    return stack


def record_output(target: str | os.PathLike) -> None:
    """Record a completed output in the journal of the innermost locked root that holds it."""
    if not _active:
        return
    t = os.path.abspath(target)
    owners = [lock for lock in _active if lock.covers(t)]
    if owners:
        max(owners, key=lambda lock: len(str(lock.root))).record(t)


def _after_fork_in_child() -> None:
    # A forked child (a DataLoader worker) shares the lock's open file: were it to outlive a
    # killed parent, it would hold the lock for a run that is dead. It writes no outputs itself.
    for lock in _active:
        if lock._fd is not None:
            try:
                os.close(lock._fd)
            except OSError:
                pass
            lock._fd = None
    _active.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def history_mark() -> int:
    return len(_history)


def stop_report(since: int = 0) -> list[str]:
    """What the output roots locked since `since` hold after a stop: for a command's summary."""
    lines = []
    left = [str(p) for p in live_partials()]
    for lock in _history[since:]:
        # The disk, not only the registry, is asked: the claim below must hold for what a user sees.
        mine = sorted({p for p in left if p.startswith(str(lock.root if lock.folder else lock.root.parent) + os.sep)}
                      | {str(p) for p in lock.find_partials({run_id()})})
        state = (f"{len(mine)} partial file(s) still there: {', '.join(mine[:3])}" if mine
                 else "nothing half-written left")
        lines.append(f"{lock.root}: {lock.completed} output file(s) completed by this run kept; {state}")
    return lines


def _line(rec: dict) -> bytes:
    return (json.dumps(rec, separators=(",", ":")) + "\n").encode()


def _read_fd(fd: int) -> bytes:
    chunks, offset = [], 0
    while True:
        b = os.pread(fd, 1 << 20, offset)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
        offset += len(b)


def _write_fd(fd: int, data: bytes, path: Path) -> None:
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    except OSError as exc:
        raise output_error(path, exc) from None
