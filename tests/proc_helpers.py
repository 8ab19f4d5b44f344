"""Real commands in real child processes, for the tests that signal, kill or starve them.

A child starts in its own session (signals go to it alone unless a test signals its group) with
SIGINT and SIGTERM at their defaults: a test run started in the background by a non-interactive
shell inherits SIGINT ignored, and cyclemask leaves an inherited ignore alone, as a user's
background job would. Output goes to files, so a chatty child never blocks on a full pipe.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

BIN = Path(sys.executable).parent
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def command(name: str) -> str:
    """The installed console script (cyclemask-run, ...)."""
    return str(BIN / name)


def can_drop_dac() -> str | None:
    """None when a child can be made to obey file modes as root; else why not."""
    if os.geteuid() != 0:
        return None  # not root: modes apply already
    try:
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_drop_dac, check=True, capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"root here cannot drop CAP_DAC_OVERRIDE from a child ({exc})"
    return None


def _drop_dac() -> None:
    # Root ignores file modes through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH. Removed from the
    # bounding set before exec, the child runs as root without them: a folder of mode 0555 is
    # then unwritable to it (EACCES), while it can still read its own interpreter and packages
    # (which setuid to nobody could not, under /root).
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


class Child:
    def __init__(self, args: list, logs: Path, *, fsize: int | None = None, drop_dac: bool = False,
                 env: dict | None = None) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        n = len(list(logs.glob("*.out")))
        self.out_path, self.err_path = logs / f"{n}.out", logs / f"{n}.err"

        def setup() -> None:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            if drop_dac and os.geteuid() == 0:
                _drop_dac()

        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(a) for a in args], stdout=out, stderr=err, start_new_session=True, preexec_fn=setup,
                env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, cond: Callable[[], bool], what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited ({self.proc.returncode}) before {what}:\n{self.stdout[-2000:]}\n{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"timed out waiting for {what}:\n{self.stderr[-3000:]}")
            time.sleep(0.05)

    def send(self, sig: int, group: bool = False) -> None:
        (os.killpg if group else os.kill)(self.proc.pid, sig)

    def finish(self, timeout: float = 180) -> int:
        """Wait for the exit (a hang guard, not a timing check)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"did not exit within {timeout} s:\n{self.stderr[-3000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(60)

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def partials(folder: Path) -> list[Path]:
    """Partial files and staging folders anywhere under folder."""
    return sorted(p for p in folder.rglob("*") if ".partial" in p.name)
