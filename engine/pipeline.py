"""The batched pipeline: decode -> batch -> infer -> write, each on its own thread.

Stages talk through bounded FIFO queues, so a long video holds only a few batches in memory
at any time and every frame leaves in the order it came. The infer stage keeps up to
`backend.max_in_flight` batches submitted (TensorRT runs several on separate streams) and
collects them oldest first.

Per-frame problems (a file that does not decode, an image that cannot be written) are recorded
and the run goes on; anything else (the backend fails, the video cannot be written, Ctrl-C)
stops every stage cleanly, and the report says what was written and what was not. A live input
(`source.live`: a capture device or stream URL) is the exception: Ctrl-C is its normal end, so
the frames already read are finished and the video is kept.

What the pipeline calls on its source, processor and sink is written down in contracts.py, and
it calls exactly that: an object that lacks a member is refused when the pipeline is built.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from cyclemask import outputs
from cyclemask.errors import ConfigError, CycleMaskError
from cyclemask.outputs import is_fatal_write_error

from .contracts import Frame, Processor, Sink, Source, conform

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker passed down the queues
_POLL_S = 0.05


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 8
    # How many batches each queue between two stages may hold: enough to hide jitter between
    # stages, few enough that memory stays flat.
    queue_depth: int = 2

    def __post_init__(self) -> None:
        for name, v in (("batch_size", self.batch_size), ("queue_depth", self.queue_depth)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer; got {v!r}")


@dataclass
class RunReport:
    """What a run did: the CLI prints it, tests assert on it."""

    total: int | None = None  # inputs the source announced (None: unknown, e.g. some videos)
    inputs: int = 0  # inputs that came out of the source
    written: int = 0
    # Frames translated into an all-or-nothing output (a video) that was then not kept: the run
    # stopped, or the file could not be finished. They are not in `written`.
    discarded: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, message), input order
    interrupted: bool = False
    error: str | None = None  # what stopped the run, if anything did
    elapsed_s: float = 0.0
    crops: int = 0  # model inputs translated
    batches: int = 0
    max_queued: dict[str, int] = field(default_factory=dict)  # peak items per queue
    queue_limits: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        return self.interrupted or self.error is not None

    @property
    def ok(self) -> bool:
        return not self.failures and not self.stopped

    @property
    def not_written(self) -> int:
        """Inputs without an output: failures, frames in flight when the run stopped, and inputs
        never reached."""
        total = self.total if self.total is not None else self.inputs
        return max(total, self.inputs) - self.written

    @property
    def fps(self) -> float:
        """Frames translated per second, kept or not."""
        return (self.written + self.discarded) / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class _Work:
    frame: Frame
    crops: list = field(default_factory=list)
    state: Any = None
    outputs: list = field(default_factory=list)
    assigned: int = 0  # crops handed to batches so far


@dataclass
class _Batch:
    slots: list  # (work, crop index), in order
    done: list  # works whose last crop is in this batch or earlier: forward after inference


class _Stopped(Exception):
    """Raised inside a stage when another stage asked everyone to stop."""


class _Queue:
    """A bounded queue whose blocking calls give up when the run is stopping."""

    def __init__(self, name: str, maxsize: int, stop: threading.Event, report: RunReport) -> None:
        self.name, self._q, self._stop, self._report = name, queue.Queue(maxsize), stop, report
        report.queue_limits[name] = maxsize
        report.max_queued[name] = 0

    def put(self, item) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._q.put(item, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        n = self._q.qsize()
        if n > self._report.max_queued[self.name]:
            self._report.max_queued[self.name] = n

    def get(self):
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                return self._q.get(timeout=_POLL_S)
            except queue.Empty:
                continue


class Pipeline:
    """Runs one source through a processor and a backend into a sink.

    The backend must be active. `progress(n)` is called from the writer thread after every n
    finished inputs (written or failed).
    """

    def __init__(self, source: Source, processor: Processor, backend, sink: Sink, config: PipelineConfig | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        conform(source, Source, "source")
        conform(processor, Processor, "processor")
        conform(sink, Sink, "sink")
        self.source, self.processor, self.backend, self.sink = source, processor, backend, sink
        self.config = config or PipelineConfig()
        self.progress = progress
        if backend.max_batch is not None and self.config.batch_size > backend.max_batch:
            raise ConfigError(
                f"batch size {self.config.batch_size} is larger than the model takes "
                f"({backend.description}: at most {backend.max_batch}); use --batch {backend.max_batch}"
            )
        if processor.size != backend.image_size:
            raise ConfigError(f"processor size {processor.size} != model image size {backend.image_size}")
        self.report = RunReport(total=source.total)
        self._live = bool(source.live)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._source_failures: list[str] = []

    def stop(self) -> None:
        """Ask every stage to stop (safe from any thread)."""
        self._stop.set()

    # -- stages ------------------------------------------------------------------------------
    def _decode(self, out: _Queue) -> None:
        frames = iter(self.source)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except CycleMaskError as exc:
                # The input itself went bad (a damaged video): what was decoded so far is still
                # translated and written, and the run reports the failure.
                self._source_failures.append(str(exc))
                break
            if self._stop.is_set():
                raise _Stopped
            work = _Work(frame)
            self.report.inputs += 1
            if frame.error is None:
                try:
                    work.crops, work.state = self.processor.prepare(frame.image, frame.ahead)
                    work.outputs = [None] * len(work.crops)
                except Exception as exc:  # one bad frame must not end the run
                    log.debug("prepare failed for %s", frame.key, exc_info=True)
                    frame.error = f"{frame.path or frame.key}: cannot prepare ({type(exc).__name__}: {exc})"
                    frame.image = None
            out.put(work)
        out.put(_END)

    def _batch(self, inp: _Queue, out: _Queue) -> None:
        size = self.config.batch_size
        slots: list = []
        waiting: collections.deque[_Work] = collections.deque()

        def done_prefix() -> list:
            done = []
            while waiting and waiting[0].assigned == len(waiting[0].crops):
                done.append(waiting.popleft())
            return done

        while True:
            work = inp.get()
            if work is _END:
                break
            waiting.append(work)
            for i in range(len(work.crops)):  # failed frames have none
                slots.append((work, i))
                work.assigned += 1
                if len(slots) == size:
                    out.put(_Batch(slots, done_prefix()))
                    slots = []
            if not slots and waiting:
                # Nothing pending ahead of them: forward frames without crops (failed, or no face)
                # now, so a long stretch of them never piles up here.
                done = done_prefix()
                if done:
                    out.put(_Batch([], done))
        if slots or waiting:  # the partial last batch
            out.put(_Batch(slots, done_prefix()))
        if waiting:  # unreachable: every crop is in a batch by now
            raise RuntimeError("pipeline bug: frames left unbatched")
        out.put(_END)

    def _infer(self, inp: _Queue, out: _Queue) -> None:
        backend = self.backend
        in_flight: collections.deque = collections.deque()

        def collect() -> None:
            batch, handle = in_flight.popleft()
            if handle is not None:
                result = handle.result()
                for k, (work, i) in enumerate(batch.slots):
                    work.outputs[i] = result[k]  # result() hands over an array the caller owns
                    work.crops[i] = None
            out.put(batch.done)

        while True:
            batch = inp.get()
            if batch is _END:
                break
            handle = None
            if batch.slots:
                handle = backend.submit_images([work.crops[i] for work, i in batch.slots])
                self.report.crops += len(batch.slots)
                self.report.batches += 1
            in_flight.append((batch, handle))
            while len(in_flight) >= max(1, backend.max_in_flight):
                collect()
        while in_flight:
            collect()
        out.put(_END)

    def _write(self, inp: _Queue) -> None:
        rep = self.report
        while True:
            works = inp.get()
            if works is _END:
                break
            for work in works:
                frame = work.frame
                if frame.error is None:
                    try:
                        image = self.processor.finish(frame.image, work.state, work.outputs)
                        self.sink.write(frame, image)
                        rep.written += 1
                    except Exception as exc:
                        # A full disk or an unwritable folder fails every file after it the
                        # same way: stop, keeping what is written, rather than list them all.
                        if self.sink.fatal_write_errors or is_fatal_write_error(exc):
                            raise
                        # One output that cannot be made or written (disk full, a codec that
                        # refuses it) costs that file only.
                        log.debug("writing %s failed", frame.key, exc_info=True)
                        frame.error = (str(exc) if isinstance(exc, CycleMaskError)
                                       else f"{frame.path or frame.key}: cannot write the output "
                                            f"({type(exc).__name__}: {exc})")
                if frame.error is not None:
                    rep.failures.append((frame.key, frame.error))
                    self.sink.skip(frame)  # a video still gets the sound that went with the frame
                frame.image = None
                if self.progress is not None:
                    self.progress(1)

    # -- running ---------------------------------------------------------------------------------
    def _stage(self, done: threading.Event, fn, *args) -> None:
        try:
            fn(*args)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - recorded, then every stage stops
            with self._lock:
                if self.report.error is None:
                    self.report.error = str(exc) if isinstance(exc, CycleMaskError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, CycleMaskError):
                log.error("%s stage failed", fn.__name__.strip("_"), exc_info=True)
            self._stop.set()
        finally:
            done.set()

    @staticmethod
    def _wait(done: list[threading.Event]) -> None:
        # Stages are waited for by their own events, not Thread.join: a join that Ctrl-C
        # interrupts can leave is_alive() False for a thread still running (CPython < 3.13).
        for d in done:
            while not d.wait(0.1):
                outputs.raise_lost_stop()  # a stop signal a finalizer swallowed stops the run here

    def _start(self, threads: list[threading.Thread], done: list[threading.Event]) -> None:
        """Start the stages with stop signals held: Thread.start waits for the new thread to
        run, and a Ctrl-C raised inside that wait could not tell whether the thread exists. A
        signal that came meanwhile is handed to its handler once all have started. A stage that
        cannot be started stops the run as an error."""
        with _signals_held():
            for i, t in enumerate(threads):
                try:
                    t.start()
                except Exception as exc:  # noqa: BLE001 - e.g. "can't start new thread"
                    with self._lock:
                        if self.report.error is None:
                            self.report.error = f"could not start the pipeline's {t.name} thread: {exc}"
                    self._stop.set()
                    for d in done[i:]:
                        d.set()  # never started
                    return

    def _end_live(self, done: list[threading.Event]) -> None:
        """Ctrl-C on a live input (capture device, stream URL, named pipe) is its normal end:
        stop reading, let every frame read so far through, keep the file. A second Ctrl-C stops
        at once (the reader may sit in a blocking read: it is a daemon thread, left behind)."""
        self.source.stop_reading()
        try:
            self._wait(done)
            self.report.notes.append("live input ended by Ctrl-C: everything read until then was written")
        except KeyboardInterrupt:
            self.report.interrupted = True
            self._stop.set()
            self._wait(done[1:])

    def run(self) -> RunReport:
        cfg, rep = self.config, self.report
        q_dec = _Queue("decoded", cfg.batch_size * cfg.queue_depth, self._stop, rep)
        q_batch = _Queue("batches", cfg.queue_depth, self._stop, rep)
        q_out = _Queue("translated", cfg.queue_depth, self._stop, rep)
        done = [threading.Event() for _ in range(4)]
        threads = [
            threading.Thread(target=self._stage, args=(done[0], self._decode, q_dec), name="cyclemask-decode", daemon=True),
            threading.Thread(target=self._stage, args=(done[1], self._batch, q_dec, q_batch), name="cyclemask-batch", daemon=True),
            threading.Thread(target=self._stage, args=(done[2], self._infer, q_batch, q_out), name="cyclemask-infer", daemon=True),
            threading.Thread(target=self._stage, args=(done[3], self._write, q_out), name="cyclemask-write", daemon=True),
        ]
        start = time.perf_counter()
        try:
            self._start(threads, done)
            self._wait(done)
        except KeyboardInterrupt:
            if self._live:
                self._end_live(done)
            else:
                rep.interrupted = True
                self._stop.set()
                self._wait(done)
        finally:
            rep.elapsed_s = time.perf_counter() - start
            try:
                if done[0].is_set():  # else it sits in a read of the input: leave that open
                    self.source.close()
            finally:
                # A file's video is all or nothing (the file can be run again); a live input
                # cannot be read again, so its video keeps whatever was written, however it ended.
                commit = not rep.stopped or self._live
                kept = False
                try:
                    rep.notes += self.sink.finish(commit=commit)
                    kept = commit
                except (CycleMaskError, OSError) as exc:  # e.g. the disk filled up
                    rep.error = rep.error or str(exc)
                if not kept and self.sink.all_or_nothing:
                    rep.discarded, rep.written = rep.written, 0
        for problem in self._source_failures + list(self.source.problems):
            rep.failures.append((self.source.name, problem))
        rep.notes += list(self.source.notes)
        return rep


@contextlib.contextmanager
def _signals_held():
    """In the main thread, SIGINT and SIGTERM that have Python handlers are only recorded while
    the block runs, then handed to those handlers in order (the default SIGINT handler raises
    KeyboardInterrupt then). Elsewhere a signal's exception never lands, so nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, Any]] = []
    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if callable(handler):
                previous[sig] = handler  # first: a signal just after the swap still finds it
                signal.signal(sig, lambda signum, frame: held.append((signum, frame)))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raised = None
        for signum, frame in held:  # each, in order: a second Ctrl-C keeps its meaning
            try:
                previous[signum](signum, frame)
            except BaseException as exc:  # noqa: BLE001 - raised after the others had their turn
                raised = raised or exc
        if raised is not None:
            raise raised


def run_pipeline(source, processor, backend, sink, config: PipelineConfig | None = None,
                 progress: Callable[[int], None] | None = None) -> RunReport:
    return Pipeline(source, processor, backend, sink, config, progress).run()
