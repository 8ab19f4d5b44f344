"""Helpers of the study tests: synthetic face-sized images, and the study server as a real
subprocess whose printed addresses the tests read."""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

START_TIMEOUT_S = 120  # hang guard for a server start on a loaded machine, not a timing claim


def pattern(seed: int, h: int = 160, w: int = 160) -> np.ndarray:
    """A smooth random RGB picture, unlike any other seed's (about half of the 256 difference-
    hash bits differ), with a disc in the middle where a face would be."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.random((6, 6, 3)).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, colour, -1)
    return img


def write(path: Path, image: np.ndarray) -> Path:
    from cyclemask.image_files import write_image

    write_image(path, image)
    return path


def make_folders(root: Path, n_real: int = 8, n_generated: int = 8) -> tuple[Path, Path]:
    """real/ (JPEG, assorted sizes) and generated/ (PNG, 128 px): different formats and sizes,
    as a real study gets them."""
    real, gen = root / "real", root / "generated"
    for i in range(n_real):
        write(real / f"r{i:02d}.jpg", pattern(1000 + i, 150 + 10 * i, 140 + 7 * i))
    for i in range(n_generated):
        write(gen / f"g{i:02d}.png", pattern(2000 + i, 128, 128))
    return real, gen


def db_rows(study_dir: Path, sql: str, args=()) -> list[tuple]:
    """Read the study database directly (read-only), as an independent check of what is stored."""
    con = sqlite3.connect(f"file:{study_dir / 'study.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def image_sources(study_dir: Path) -> dict[str, str]:
    return dict(db_rows(study_dir, "SELECT id, source FROM images"))


class StudyServer:
    """`cyclemask-study serve` in a child process (port 0), with the addresses it printed."""

    def __init__(self, real: Path, generated: Path, study_dir: Path, *extra: str) -> None:
        cmd = [sys.executable, "-c", "from cyclemask.study.cli import main; main()", "serve",
               "--real", str(real), "--generated", str(generated), "--study-dir", str(study_dir),
               "--port", "0", "--no-face-check", *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.url, self.results_url = self._wait_for_addresses()
        self.token = self.results_url.split("token=", 1)[1]

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line)
        self._q.put(None)

    def _wait_for_addresses(self) -> tuple[str, str]:
        deadline = time.monotonic() + START_TIMEOUT_S
        url = results = None
        while results is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AssertionError("hang guard: the server printed no address in time:\n" + "\n".join(self.lines))
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait()
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n" + "\n".join(self.lines))
            if m := re.match(r"participants: (http://\S+?)/?$", line.strip()):
                url = m.group(1)
            if m := re.match(r"results \(keep private\): (http://\S+)$", line.strip()):
                results = m.group(1)
        return url, results

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("hang guard: the server did not stop within 60 s of SIGTERM") from None

    def output(self) -> str:
        time.sleep(0.2)
        return "\n".join(self.lines)

    def __enter__(self) -> "StudyServer":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
