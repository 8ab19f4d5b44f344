"""FFmpeg through PyAV, as reading and writing both need it: the import (with FFmpeg's log set up
once), its error messages, its rationals, and which of its errors are the output file's own."""

from __future__ import annotations

import errno
import logging
import os
import threading
from fractions import Fraction

_logging_ready = False
_logging_lock = threading.Lock()


def _av():
    """PyAV, imported on first use, with FFmpeg's log set up once.

    FFmpeg explains its failures in log lines (PyAV appends the last one to its exceptions), but
    it is far too chatty to print: errors are kept for the exceptions and shown only with
    --debug. Encoders that log on their own (SVT-AV1) are asked for errors only.
    """
    global _logging_ready
    import av

    if not _logging_ready:
        with _logging_lock:
            if not _logging_ready:
                if av.logging.get_level() is None:
                    av.logging.set_level(av.logging.ERROR)
                    if not logging.getLogger().isEnabledFor(logging.DEBUG):
                        logging.getLogger("libav").setLevel(logging.CRITICAL)
                os.environ.setdefault("SVT_LOG", "1")
                _logging_ready = True
    return av


def _reason(exc: BaseException) -> str:
    """FFmpeg's message for an error, with its last log line, without PyAV's errno prefix."""
    msg = getattr(exc, "strerror", None) or str(exc)
    last = getattr(exc, "log", None)
    if last and len(last) == 3 and last[2] and last[2].strip() not in msg:
        msg = f"{msg}: {last[2].strip()}"
    return msg


# Errors of the output file itself (a full disk, a quota, a size limit, no permission): they end
# the run with the one line every output error gets, whichever FFmpeg call met them first.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM})


def _output_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS


def _frac(r) -> Fraction | None:
    """A PyAV rational (a Fraction, or an AVRational in later PyAV) as a Fraction; None when
    unset."""
    if r is None:
        return None
    num, den = getattr(r, "numerator", None), getattr(r, "denominator", None)
    if num is None:
        num, den = r.num, r.den
    return Fraction(int(num), int(den)) if num and den else None


def _rescale(value: int, src: Fraction, dst: Fraction) -> int:
    return int(round(value * src / dst))


def _codec_name(stream) -> str:
    ctx = stream.codec_context
    if ctx is not None:
        try:
            return ctx.codec.canonical_name
        except Exception:  # noqa: BLE001 - an unknown codec still has a type to report
            return ctx.name or "unknown codec"
    return "no codec"
