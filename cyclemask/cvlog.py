"""OpenCV's own log lines, which it writes from C++ straight to stderr (a broken PNG gets a WARN
and an ERROR line before the run's one-line message that names the file): the command-line
tools quiet them unless --debug. The level is set when OpenCV is first used, not by importing
it here: the tools start without OpenCV. A user's OPENCV_LOG_LEVEL wins."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

_wanted: bool | None = None  # None: leave OpenCV's level alone (library use)
_applied: bool | None = None
_LOCK = threading.Lock()


def want_quiet(quiet: bool) -> None:
    global _wanted
    if "OPENCV_LOG_LEVEL" in os.environ:
        return
    _wanted = quiet
    if "cv2" in sys.modules:
        apply()


def apply() -> None:
    """Set OpenCV's level as wanted, once (cheap to call before every use)."""
    global _applied
    if _wanted is None or _applied is _wanted:
        return
    import cv2

    log_api = cv2.utils.logging
    log_api.setLogLevel(log_api.LOG_LEVEL_SILENT if _wanted else log_api.LOG_LEVEL_WARNING)
    _applied = _wanted


@contextlib.contextmanager
def at_most_errors():
    """OpenCV no louder than ERROR for a moment (the level is process-wide: one such moment at a
    time), then as it was; a user's OPENCV_LOG_LEVEL is left alone."""
    apply()
    if "OPENCV_LOG_LEVEL" in os.environ:
        yield
        return
    import cv2

    log_api = cv2.utils.logging
    with _LOCK:
        before = log_api.getLogLevel()
        log_api.setLogLevel(min(before, log_api.LOG_LEVEL_ERROR))
        try:
            yield
        finally:
            log_api.setLogLevel(before)
