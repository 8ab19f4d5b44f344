"""Detect-ahead: the stage between a source and face-aware processing that runs face detection
on a small thread pool, so detection (the slowest part of `prepare` on a CPU) overlaps decoding
and the frames before.

`DetectAheadSource` wraps a source. It reads the wrapped source on the caller's thread (the
pipeline's decode thread), submits each usable frame's detection, and yields frames in order
once up to `depth` are in flight, each carrying the Future of its own detections in
`Frame.ahead`; the pipeline hands that to `FaceProcessor.prepare`, which waits on it instead of
detecting. The result rides on the frame itself, so no frame can pick up another's detections,
and a frame the pipeline never prepares costs nothing but its detection. Tracking stays in
`prepare`, in frame order: detection is stateless, tracking is not.

Each frame's `ahead` is an `Ahead`: its own Future (`result()`), and, as `following`, the
Futures of the frames read after it (up to `depth` - 1). Tracking looks at those to confirm a
new face on its first frame (engine/tracking.py) instead of waiting for the frames to come, so
a real face is translated from its first frame while a one-frame false one never is.
"""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Callable, Iterator

import numpy as np

from .contracts import Frame, Source


class Ahead:
    """A frame's detections running ahead (`result()`), and those of the frames after it."""

    __slots__ = ("own", "following")

    def __init__(self, own: concurrent.futures.Future, following: list) -> None:
        self.own, self.following = own, following

    def result(self):
        return self.own.result()


class DetectAheadSource(Source):
    """`source`'s frames, each with `detect(frame.image)` running ahead on `workers` threads.

    At most `depth` frames are read ahead of the pipeline, so memory stays bounded. Everything
    else a source reports (total, live, problems, notes, name) is the wrapped source's.
    """

    def __init__(self, source: Source, detect: Callable[[np.ndarray], list], workers: int, depth: int) -> None:
        self._source, self._detect = source, detect
        self.workers, self.depth = workers, max(1, depth)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # The wrapped source's own report, read when the pipeline asks (after the last frame).
    @property
    def total(self) -> int | None:
        return self._source.total

    @property
    def live(self) -> bool:
        return self._source.live

    @property
    def problems(self):
        return self._source.problems

    @property
    def notes(self):
        return self._source.notes

    @property
    def name(self) -> str:
        return self._source.name

    def describe(self) -> str:
        return self._source.describe()

    def stop_reading(self) -> None:
        self._source.stop_reading()

    def __iter__(self) -> Iterator[Frame]:
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="cyclemask-detect")
        pending: collections.deque[Frame] = collections.deque()
        frames = iter(self._source)
        failure: BaseException | None = None
        try:
            while True:
                while failure is None and len(pending) < self.depth:
                    try:
                        frame = next(frames)
                    except StopIteration:
                        failure = StopIteration()
                        break
                    except Exception as exc:  # the source went bad: yield what came before, then raise
                        failure = exc
                        break
                    if frame.error is None and frame.image is not None:
                        frame.ahead = self._pool.submit(self._detect, frame.image)
                    pending.append(frame)
                if not pending:
                    break
                frame = pending.popleft()
                if isinstance(frame.ahead, concurrent.futures.Future):
                    frame.ahead = Ahead(frame.ahead, [_own(f.ahead) for f in pending])
                yield frame
        finally:
            self._shutdown()
        if failure is not None and not isinstance(failure, StopIteration):
            raise failure

    def _shutdown(self) -> None:
        # Detections not started yet are cancelled: their frames were never prepared (the run
        # stopped), or `prepare` detects them itself (see FaceProcessor.prepare).
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self._shutdown()
        self._source.close()


def _own(ahead) -> concurrent.futures.Future | None:
    """A pending frame's own detection Future (None for a frame with nothing to detect)."""
    return ahead.own if isinstance(ahead, Ahead) else ahead
