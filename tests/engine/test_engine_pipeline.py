"""The pipeline: order, batching, bounded memory, per-frame failures, clean stops."""

from __future__ import annotations

import _thread
import concurrent.futures
import threading
import time
import tracemalloc

import numpy as np
import pytest

from cyclemask.errors import BackendError, ConfigError, InputError
from cyclemask.engine.backends import Backend
from cyclemask.engine.contracts import Sink, Source
from cyclemask.engine.pipeline import Pipeline, PipelineConfig, run_pipeline
from cyclemask.engine.processing import AlignedProcessor, FrameProcessor
from cyclemask.engine.sources import Frame


class FakeSource(Source):
    """n frames of size x size whose pixels encode their index."""

    def __init__(self, n, size=16, errors=(), on_yield=None):
        self.n, self.size, self.errors, self.on_yield = n, size, set(errors), on_yield
        self.yielded = 0
        self.closed = False
        self.problems = []

    @property
    def total(self):
        return self.n

    def describe(self):
        return f"{self.n} fake frames"

    def __iter__(self):
        for i in range(self.n):
            self.yielded = i + 1
            if self.on_yield:
                self.on_yield(i)
            if i in self.errors:
                yield Frame(i, f"f{i:05d}", None, error=f"f{i:05d}: broken on purpose")
            else:
                yield Frame(i, f"f{i:05d}", np.full((self.size, self.size, 3), i % 251, np.uint8))

    def close(self):
        self.closed = True


class InvertBackend(Backend):
    """255 - x. `in_flight` > 1 computes on a thread pool with random delays, so handles finish
    out of order; `fail_at` raises on that batch."""

    name = "invert"

    def __init__(self, size=16, in_flight=1, fail_at=None, max_batch=None, delay=0.0):
        super().__init__(None, "mask")
        self._image_size, self.max_in_flight, self.fail_at, self.max_batch = size, in_flight, fail_at, max_batch
        self.delay = delay
        self.batch_sizes = []
        self._pool = None
        self._rng = np.random.default_rng(1)

    def _activate(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(4)

    def _deactivate(self):
        self._pool.shutdown()

    def _compute(self, batch, pause):
        time.sleep(pause)
        return 255 - batch

    def _start(self, batch):
        self.batch_sizes.append(batch.shape[0])
        if self.fail_at is not None and len(self.batch_sizes) == self.fail_at:
            raise BackendError("invert backend: failing on purpose")
        pause = float(self._rng.uniform(0, 0.01)) if self.max_in_flight > 1 else self.delay
        return self._pool.submit(self._compute, batch.copy(), pause)


class ListSink(Sink):
    fatal_write_errors = False

    def __init__(self, on_write=None, fail_keys=(), delay=0.0):
        self.items, self.on_write, self.fail_keys, self.delay = [], on_write, set(fail_keys), delay
        self.committed = None

    def describe(self):
        return "a list"

    def write(self, frame, image):
        if frame.key in self.fail_keys:
            raise OSError(f"disk full writing {frame.key}")
        if self.delay:
            time.sleep(self.delay)
        self.items.append((frame.index, image[0, 0, 0]))
        if self.on_write:
            self.on_write(len(self.items))

    def finish(self, commit):
        self.committed = commit
        return []


def _run(source, backend, sink, batch=4, depth=2, processor=None):
    with backend:
        return run_pipeline(source, processor or AlignedProcessor(backend.image_size), backend, sink,
                            PipelineConfig(batch, depth))


@pytest.mark.parametrize("in_flight", [1, 3])
def test_order_and_content_are_preserved(in_flight):
    be, sink = InvertBackend(in_flight=in_flight), ListSink()
    rep = _run(FakeSource(103), be, sink, batch=4)
    assert [i for i, _ in sink.items] == list(range(103))
    assert all(v == 255 - (i % 251) for i, v in sink.items)  # each output is its own input's
    assert rep.ok and rep.written == 103 and rep.inputs == 103 and sink.committed is True
    assert be.batch_sizes == [4] * 25 + [3]  # full batches, then the partial last one
    assert rep.crops == 103 and rep.batches == 26


def test_frames_without_crops_pass_in_order():
    """The face-aware hook: a processor may return no crops (no face) or several per frame."""

    class OddFrames(FrameProcessor):
        def prepare(self, image, ahead=None):
            i = int(image[0, 0, 0])
            return [image] * (0 if i % 2 else (i % 3) + 1), i

        def finish(self, image, state, outputs):
            return image if not outputs else outputs[-1]

    be, sink = InvertBackend(in_flight=2), ListSink()
    rep = _run(FakeSource(40), be, sink, batch=3, processor=OddFrames(16))
    assert [i for i, _ in sink.items] == list(range(40))
    assert all(v == (i if i % 2 else 255 - i) for i, v in sink.items)
    assert rep.crops == sum((i % 3) + 1 for i in range(0, 40, 2)) and rep.ok
    assert max(be.batch_sizes) == 3


def test_per_frame_failures_are_reported_and_the_rest_written():
    sink = ListSink(fail_keys={"f00007"})
    rep = _run(FakeSource(20, errors={3, 11}), InvertBackend(), sink)
    assert [i for i, _ in sink.items] == [i for i in range(20) if i not in (3, 7, 11)]
    assert [k for k, _ in rep.failures] == ["f00003", "f00007", "f00011"]
    assert "broken on purpose" in rep.failures[0][1] and "disk full" in rep.failures[1][1]
    assert not rep.ok and rep.written == 17 and rep.not_written == 3 and not rep.stopped


def test_backend_error_stops_everything_cleanly():
    src, sink = FakeSource(400), ListSink()
    start = time.perf_counter()
    rep = _run(src, InvertBackend(fail_at=3), sink, batch=4)
    assert time.perf_counter() - start < 10
    assert rep.error == "invert backend: failing on purpose" and rep.stopped and not rep.ok
    assert rep.written <= 8 and rep.not_written == 400 - rep.written
    assert sink.committed is False and src.closed
    assert src.yielded < 400  # the decoder stopped too


def test_ctrl_c_stops_cleanly_with_a_report():
    src = FakeSource(1000)
    sink = ListSink(on_write=lambda n: _thread.interrupt_main() if n == 10 else None)
    rep = _run(src, InvertBackend(), sink, batch=4)
    assert rep.interrupted and rep.stopped and sink.committed is False
    assert 10 <= rep.written < 1000 and rep.not_written == 1000 - rep.written
    assert [i for i, _ in sink.items] == list(range(rep.written))


def test_memory_stays_bounded_on_a_long_video():
    """2000 frames of 96x96 (55 MB if all were held) through a slow writer: the decoder may run
    only a few batches ahead, and the traced peak stays a small fraction of the whole."""
    batch, depth, in_flight, n = 4, 2, 2, 2000
    lead = {"max": 0}
    sink = ListSink()

    def on_yield(i):
        lead["max"] = max(lead["max"], i - len(sink.items))

    src = FakeSource(n, size=96, on_yield=on_yield)
    be = InvertBackend(size=96, in_flight=in_flight)
    tracemalloc.start()
    try:
        rep = _run(src, be, sink, batch=batch, depth=depth)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rep.ok and rep.written == n
    for name, limit in rep.queue_limits.items():
        assert rep.max_queued[name] <= limit
    # decoded queue + batcher + batch queue + in flight + translated queue + the frame in hand
    bound = batch * depth + batch + depth * batch + in_flight * batch + depth * batch + 2
    assert lead["max"] <= bound
    frame_bytes = 96 * 96 * 3
    assert peak < 4 * bound * frame_bytes  # every live frame has an input, an output and copies
    assert peak < n * frame_bytes / 8


def test_batch_larger_than_the_model_takes():
    with InvertBackend(max_batch=2) as be:
        with pytest.raises(ConfigError, match="batch size 4 is larger than the model takes"):
            Pipeline(FakeSource(3), AlignedProcessor(16), be, ListSink(), PipelineConfig(4))


def test_pipeline_config_validation():
    with pytest.raises(ConfigError, match="batch_size must be a positive integer; got 0"):
        PipelineConfig(batch_size=0)
    with pytest.raises(ConfigError, match="queue_depth must be a positive integer"):
        PipelineConfig(queue_depth=-1)


def test_aligned_processor_round_trip_sizes():
    proc = AlignedProcessor(64)
    for h, w in ((1, 1), (270, 480), (64, 64), (30, 200)):
        img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        crops, state = proc.prepare(img)
        assert len(crops) == 1 and crops[0].shape == (64, 64, 3) and crops[0].flags.c_contiguous
        assert proc.finish(img, state, crops).shape == (h, w, 3)
    same = np.zeros((64, 64, 3), np.uint8)
    assert proc.finish(same, proc.prepare(same)[1], [same]) is same


def test_a_source_that_goes_bad_keeps_what_it_gave():
    class Exploding(FakeSource):
        def __iter__(self):
            yield from list(super().__iter__())[:5]
            raise InputError("video.mp4: frame 5 is 10x10, but the video started at 16x16")

    sink = ListSink()
    rep = _run(Exploding(50), InvertBackend(), sink)
    assert rep.written == 5 and [i for i, _ in sink.items] == list(range(5))
    assert rep.failures == [("input", "video.mp4: frame 5 is 10x10, but the video started at 16x16")]
    assert not rep.ok and not rep.stopped and sink.committed is True and rep.not_written == 45


def test_a_bug_in_a_stage_stops_the_run_with_its_name():
    class Buggy(FakeSource):
        def __iter__(self):
            yield from list(super().__iter__())[:3]
            raise ZeroDivisionError("division by zero")

    rep = _run(Buggy(50), InvertBackend(), ListSink())
    assert rep.error == "ZeroDivisionError: division by zero" and rep.stopped


def test_no_thread_is_left_behind():
    before = {t.name for t in threading.enumerate()}
    _run(FakeSource(30), InvertBackend(fail_at=2), ListSink())
    time.sleep(0.2)
    leftover = {t.name for t in threading.enumerate()} - before
    assert not any(name.startswith("cyclemask-") for name in leftover)
