"""cyclemask.outputs: partial names, the per-output lock and journal, and the sweep of dead runs'
partial files. Other processes are real processes (a lock held by a live child, a child that is
SIGKILLed); the fault tests of whole commands are in test_reliability.py."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cyclemask import outputs
from cyclemask.errors import CycleMaskError, OutputBusyError, OutputError
from cyclemask.image_files import list_images, write_bytes_atomic

DEAD = "0123456789ab"  # a run id no live process has


def _holder(root: Path, folder: bool, ready: Path, write: Path | None = None) -> subprocess.Popen:
    """A child that takes the lock (and starts writing `write`), then waits to be killed."""
    code = (
        "import sys, time, pathlib\n"
        "from cyclemask import outputs\n"
        f"lock = outputs.OutputLock({str(root)!r}, 'holder', folder={folder}).acquire()\n"
        + (f"p = outputs.create_partial({str(write)!r}); open(p, 'wb').write(b'half')\n" if write else "")
        + f"pathlib.Path({str(ready)!r}).write_text(outputs.run_id())\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, "the lock holder died"
        assert time.monotonic() < deadline, "the lock holder did not start"
        time.sleep(0.05)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


def test_partial_names_are_hidden_attributable_and_never_listed_as_images(tmp_path):
    p = outputs.partial_path(tmp_path / "sub" / "face.png")
    assert p.name == f".face.{outputs.run_id()}.partial.png" and p.parent == tmp_path / "sub"
    m = outputs.PARTIAL_RE.match(p.name)
    assert m and m["run"] == outputs.run_id() and m["name"] == "face" and m["ext"] == ".png"
    assert outputs.PARTIAL_RE.match(outputs.partial_path(tmp_path / "mask.fp16.onnx", 2).name)["name"] == "mask.fp16"
    (tmp_path / "a.png").write_bytes(b"x")
    made = outputs.create_partial(tmp_path / "a.png")
    again = outputs.create_partial(tmp_path / "a.png")  # the same output twice at once: distinct names
    assert made != again and made.exists() and again.exists()
    assert list_images(tmp_path) == [tmp_path / "a.png"]
    assert set(outputs.live_partials()) >= {made, again}
    outputs.discard_partial(made)
    outputs.discard_partial(again)
    assert not made.exists() and not again.exists() and made not in outputs.live_partials()


def test_a_stop_while_a_partial_is_being_created_leaves_no_file(tmp_path, monkeypatch):
    # Ctrl-C/SIGTERM raise KeyboardInterrupt at any bytecode: here just after os.open made the file.
    real_close = os.close

    def close_then_stop(fd):
        real_close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.os, "close", close_then_stop)
    with pytest.raises(KeyboardInterrupt):
        write_bytes_atomic(tmp_path / "x.png", b"data")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == [] and not outputs.live_partials()


def test_write_bytes_atomic_leaves_nothing_on_failure_and_names_the_output(tmp_path, monkeypatch):
    target = tmp_path / "out" / "x.png"
    write_bytes_atomic(target, b"one")
    assert target.read_bytes() == b"one" and sorted(os.listdir(target.parent)) == ["x.png"]
    real_open = open

    def full_disk(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        if "w" in mode and ".partial" in str(path):
            f.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return f

    monkeypatch.setattr("builtins.open", full_disk)
    with pytest.raises(OutputError) as info:
        write_bytes_atomic(target, b"two")
    monkeypatch.undo()
    assert str(info.value) == f"{target}: cannot write (No space left on device, ENOSPC)"
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert outputs.is_fatal_write_error(info.value)
    assert target.read_bytes() == b"one" and sorted(os.listdir(target.parent)) == ["x.png"]
    assert not outputs.live_partials()
    back = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries (workers) intact
    assert str(back) == str(info.value) and back.errno == errno.ENOSPC


def test_journal_records_completed_outputs_and_a_clean_run_leaves_no_trace(tmp_path):
    root = tmp_path / "new" / "out"
    with outputs.OutputLock(root, "test", keep_journal=True) as lock:
        write_bytes_atomic(root / "a" / "1.png", b"1")
        write_bytes_atomic(tmp_path / "elsewhere.png", b"2")  # outside the root: not recorded
        stage = outputs.create_partial(root / "mask", directory=True)
        write_bytes_atomic(stage / "mask.onnx", b"3")  # staged, not an output yet
        outputs.commit_partial(stage / "mask.onnx", root / "mask.onnx")
        outputs.discard_partial(stage)
        assert lock.completed == 2
    assert outputs.completed_outputs(root) == {"a/1.png", "mask.onnx"}
    events = [r.get("event") for r in outputs.read_journal(root)]
    assert events[0] == "start" and events[-1] == "end"
    # Without keep_journal a run that ends cleanly deletes it, and the folders it made if empty.
    with outputs.OutputLock(tmp_path / "x" / "y", "test"):
        assert (tmp_path / "x" / "y" / outputs.JOURNAL_NAME).is_file()
    assert not (tmp_path / "x").exists()
    with outputs.OutputLock(root, "test"):
        pass
    assert sorted(p.name for p in root.iterdir()) == ["a", "mask.onnx"]


def test_a_live_run_holding_the_lock_is_named_and_a_killed_ones_partials_are_swept(tmp_path, caplog):
    root = tmp_path / "out"
    root.mkdir()
    foreign = [root / ".x.png.abcdef.tmp", root / f".y.{DEAD}.partial.png", root / ".z.partial.png",
               root / "keep.png"]
    for f in foreign:
        f.write_bytes(b"not ours")
    (root / "sub").mkdir()
    proc = _holder(root, True, tmp_path / "ready", write=root / "sub" / "face.png")
    try:
        with pytest.raises(OutputBusyError) as info:
            outputs.OutputLock(root, "second").acquire()
        msg = str(info.value)
        assert f"another run (pid {proc.pid}, holder, started " in msg and str(root) in msg
        with pytest.raises(OutputBusyError):
            outputs.OutputLock(root, "second").probe()
        partial = next((root / "sub").iterdir())
        assert partial.read_bytes() == b"half" and (tmp_path / "ready").read_text() in partial.name
    finally:
        _kill(proc)
    with caplog.at_level("WARNING", logger="cyclemask.outputs"):
        with outputs.OutputLock(root, "second") as lock:
            assert lock.swept == [partial]
    assert not partial.exists()
    assert f"removed 1 partial file(s) left by an earlier run that did not finish (pid {proc.pid}" in caplog.text
    # Never anything it did not create: other names, other runs' ids, old-style temporaries.
    assert all(f.read_bytes() == b"not ours" for f in foreign)


def test_single_file_output_lock_sweeps_only_that_files_partials(tmp_path):
    video = tmp_path / "clip_mask.mp4"
    proc = _holder(video, False, tmp_path / "ready", write=video)
    run = (tmp_path / "ready").read_text()
    other = tmp_path / f".other.{run}.partial.mp4"  # same dead run, another output: not this lock's
    other.write_bytes(b"x")
    try:
        with pytest.raises(OutputBusyError, match=f"pid {proc.pid}"):
            outputs.OutputLock(video, "second", folder=False).acquire()
    finally:
        _kill(proc)
    journal = outputs.journal_path(video, False)
    assert journal.name == ".clip_mask.mp4.cyclemask-journal" and journal.exists()  # the dead run's
    with outputs.OutputLock(video, "second", folder=False) as lock:
        assert [p.name for p in lock.swept] == [f".clip_mask.{run}.partial.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "ready"]


def test_the_same_root_twice_in_one_process_is_shared_and_other_roots_are_independent(tmp_path):
    root = tmp_path / "out"
    with outputs.OutputLock(root, "outer"):
        with outputs.OutputLock(root, "inner") as inner, outputs.OutputLock(root / "sub", "nested") as nested:
            write_bytes_atomic(root / "sub" / "a.png", b"1")  # the innermost root records it
            write_bytes_atomic(root / "b.png", b"2")
            assert nested.completed == 1 and inner.held
        assert (root / outputs.JOURNAL_NAME).exists()  # the inner release did not end the outer hold
    assert not (root / outputs.JOURNAL_NAME).exists()


def test_journal_survives_torn_lines_and_compacts(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    journal = root / outputs.JOURNAL_NAME
    lines = [{"event": "start", "run": DEAD, "pid": 1}, {"done": "a.png", "run": DEAD},
             {"event": "end", "run": DEAD}, {"done": "a.png", "run": DEAD}]
    journal.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"done": "b.pn')
    with outputs.OutputLock(root, "t", keep_journal=True) as lock:
        assert lock.swept == []
    recs = outputs.read_journal(root)
    assert [r.get("done") or r.get("event") for r in recs] == ["a.png", "start", "end"]


def test_remove_live_partials_deletes_what_this_process_is_writing(tmp_path):
    a = outputs.create_partial(tmp_path / "a.mp4")
    d = outputs.create_partial(tmp_path / "stage", directory=True)
    (d / "f").write_bytes(b"1")
    assert outputs.remove_live_partials() == 2
    assert list(tmp_path.iterdir()) == [] and not outputs.live_partials()
    assert not a.exists()


def test_set_run_id_validates():
    old = outputs.run_id()
    try:
        outputs.set_run_id(DEAD)
        assert outputs.partial_path("x.png").name == f".x.{DEAD}.partial.png"
        with pytest.raises(CycleMaskError, match="12 lowercase hex"):
            outputs.set_run_id("../etc")
    finally:
        outputs.set_run_id(old)


def test_a_forked_child_does_not_keep_the_lock_of_a_dead_parent(tmp_path):
    # The parent takes the lock and forks a long-lived child (as a DataLoader worker is), then
    # dies by SIGKILL: the lock must be free although the child still runs.
    code = (
        "import os, sys, time\n"
        "from cyclemask import outputs\n"
        f"outputs.OutputLock({str(tmp_path / 'out')!r}, 'parent').acquire()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(600); os._exit(0)\n"
        f"open({str(tmp_path / 'child')!r}, 'w').write(str(pid))\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "child").exists() or not (tmp_path / "child").read_text():
            assert parent.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(OutputBusyError):
            outputs.OutputLock(tmp_path / "out", "second").acquire()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(30)
        child = int((tmp_path / "child").read_text())
        os.kill(child, 0)  # still alive
        with outputs.OutputLock(tmp_path / "out", "second"):
            pass
    finally:
        os.killpg(parent.pid, signal.SIGKILL)


def test_temporary_folder_goes_on_the_way_out_and_with_a_hard_exit(tmp_path, monkeypatch):
    import tempfile

    from cyclemask import outputs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        with outputs.temporary_folder("bench-") as scratch:
            (scratch / "clip.mp4").write_bytes(b"x" * 100)
            raise KeyboardInterrupt
    assert not list(tmp_path.iterdir())
    with outputs.temporary_folder("bench-") as scratch:
        (scratch / "clip.mp4").write_bytes(b"x")
        # What a second stop signal runs before os._exit: no unwinding would remove it after.
        assert outputs.remove_live_partials() >= 1
        assert not scratch.exists()
    assert not list(tmp_path.iterdir())
