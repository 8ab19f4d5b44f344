"""The written contract between the pipeline and its sources, processors and sinks
(engine/contracts.py): what lacks a member is refused by name, every source, processor and sink
of the engine implements it, and detect-ahead's detections ride on their own frame."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cyclemask.engine.backends import SyncBackend
from cyclemask.engine.contracts import Frame, Processor, Sink, Source, conform, members
from cyclemask.engine.detect_ahead import DetectAheadSource
from cyclemask.engine.faces import FaceConfig, FaceProcessor
from cyclemask.engine.memory import MemorySink, MemorySource
from cyclemask.engine.pipeline import Pipeline, PipelineConfig, run_pipeline
from cyclemask.engine.processing import AlignedProcessor, PassThroughProcessor
from cyclemask.engine.sinks import ImageFolderSink
from cyclemask.engine.sources import ImageFolderSource
from cyclemask.face_detect import Face
from cyclemask.image_files import write_image

from video_clips import make_clip

SIZE = 16


class Invert(SyncBackend):
    name = "invert"

    def __init__(self, size=SIZE):
        super().__init__(None, "mask")
        self._image_size = size

    def _activate(self):
        pass

    def _deactivate(self):
        pass

    def _run(self, batch):
        return 255 - batch


class DuckSource:
    """A source written before the contract: frames and a total, nothing else."""

    total = 1

    def __iter__(self):
        yield Frame(0, "f0", np.zeros((SIZE, SIZE, 3), np.uint8))

    def close(self):
        pass


class DuckSink:
    fatal_write_errors = True

    def write(self, frame, image):
        pass

    def finish(self, commit):
        return []


class DuckProcessor:
    def prepare(self, image, ahead=None):
        return [image], None

    def finish(self, image, state, outputs):
        return outputs[0]


def test_the_protocols_name_what_the_pipeline_calls():
    assert members(Source) == ["total", "live", "problems", "notes", "name", "__iter__", "describe",
                               "stop_reading", "close"]
    assert members(Processor) == ["size", "prepare", "finish"]
    assert members(Sink) == ["fatal_write_errors", "all_or_nothing", "describe", "write", "skip", "finish"]


def test_a_source_sink_or_processor_missing_a_member_is_refused_by_name():
    good_source, good_sink = MemorySource([("a", np.zeros((SIZE, SIZE, 3), np.uint8))]), MemorySink()
    with Invert() as be:
        with pytest.raises(TypeError, match=r"^source DuckSource does not implement engine\.contracts\.Source: "
                                            r"it lacks live, problems, notes, name, describe, stop_reading "
                                            r"\(derive it from Source for the defaults\)$"):
            Pipeline(DuckSource(), AlignedProcessor(SIZE), be, good_sink)
        with pytest.raises(TypeError, match=r"^sink DuckSink does not implement engine\.contracts\.Sink: "
                                            r"it lacks all_or_nothing, describe, skip "):
            Pipeline(good_source, AlignedProcessor(SIZE), be, DuckSink())
        with pytest.raises(TypeError, match=r"^processor DuckProcessor .* it lacks size "):
            Pipeline(good_source, DuckProcessor(), be, good_sink)
        assert not isinstance(DuckSource(), Source) and not isinstance(DuckSink(), Sink)

    # Deriving from a protocol gives its defaults; what has none must still be written.
    class Derived(DuckSource, Source):
        def describe(self):
            return "derived"

    assert isinstance(Derived(), Source) and Derived().name == "input" and Derived().problems == ()
    conform(Derived(), Source, "source")

    class NoWrite(Sink):
        fatal_write_errors = False

        def describe(self):
            return "nothing"

        def finish(self, commit):
            return []

    with pytest.raises(TypeError, match=r"abstract method.*\bwrite\b"):
        NoWrite()

    class Undecided(Sink):  # says nothing about whether a failed write ends the run
        def describe(self):
            return "?"

        def write(self, frame, image):
            pass

        def finish(self, commit):
            return []

    with pytest.raises(TypeError, match="it lacks fatal_write_errors "):
        conform(Undecided(), Sink, "sink")


def test_a_processor_whose_prepare_takes_no_ahead_is_refused_before_any_frame():
    """Written before `prepare` took the frame's `ahead`: every frame would fail with a TypeError
    on the decode thread; the pipeline says why once instead."""

    class OldStyle(AlignedProcessor):
        def prepare(self, image):
            return super().prepare(image)

    with Invert() as be:
        with pytest.raises(TypeError, match=r"^processor OldStyle does not implement engine\.contracts\.Processor: "
                                            r"its prepare does not take Processor\.prepare's arguments "
                                            r"\('image', 'ahead'\)$"):
            Pipeline(MemorySource([("a", np.zeros((SIZE, SIZE, 3), np.uint8))]), OldStyle(SIZE), be, MemorySink())


def test_every_source_sink_and_processor_of_the_engine_keeps_the_contract(tmp_path):
    from cyclemask.engine.video import VideoSink, VideoSource

    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "a.png", np.zeros((8, 8, 3), np.uint8))
    folder = ImageFolderSource(tmp_path / "in")
    video = VideoSource(make_clip(tmp_path / "clip.mkv", n=2, size=(32, 24)))
    memory = MemorySource([("a", np.zeros((8, 8, 3), np.uint8))])
    faces = FaceProcessor(SIZE, FaceConfig(track=False), detector_factory=lambda: NoFaces())
    try:
        for source in (folder, video, memory, faces.detect_ahead(memory, 1)):
            assert isinstance(source, Source)
            conform(source, Source, "source")
        assert folder.name == str(tmp_path / "in") and video.name == str(tmp_path / "clip.mkv")
        for sink in (ImageFolderSink(tmp_path / "in", tmp_path / "out", folder.paths), MemorySink(),
                     VideoSink(tmp_path / "clip_out.mp4", video.info, source=video)):
            assert isinstance(sink, Sink)
            conform(sink, Sink, "sink")
        for processor in (AlignedProcessor(SIZE), PassThroughProcessor(SIZE), faces):
            assert isinstance(processor, Processor)
            conform(processor, Processor, "processor")
    finally:
        video.close()


class NoFaces:
    def detect(self, image):
        return []


def test_detect_ahead_detections_travel_with_their_own_frame():
    """Six frames of identical pixels, a detector that answers every call with a face of its
    own: each frame must be prepared with the answer to its own detection, made once, ahead."""
    calls: list[tuple[str, int, tuple]] = []  # (thread, id of the image detected, box answered)
    lock = threading.Lock()

    class OneFacePerCall:
        def detect(self, image):
            with lock:
                box = (10.0 * len(calls), 5.0, 60.0, 60.0)
                calls.append((threading.current_thread().name, id(image), box))
            return [Face(box, 0.9, ((0.0, 0.0),) * 5)]

    prepared: dict[int, tuple] = {}

    class Recording(FaceProcessor):
        def prepare(self, image, ahead=None):
            crops, state = super().prepare(image, ahead)
            prepared[id(image)] = state[0].face
            return crops, state

    image = np.full((120, 200, 3), 90, np.uint8)
    items = [(f"f{i}", image.copy()) for i in range(6)]
    proc = Recording(64, FaceConfig(track=False, paste="crop", min_face=20), detector_factory=OneFacePerCall)
    source = proc.detect_ahead(MemorySource(items), 2)
    assert isinstance(source, DetectAheadSource)
    with Invert(64) as be:
        report = run_pipeline(source, proc, be, MemorySink(), PipelineConfig(batch_size=2))
    assert report.ok and report.written == 6 and report.crops == 6
    assert len(calls) == 6  # once per frame: prepare waited for detect-ahead's answer, found no face itself
    assert all(thread.startswith("cyclemask-detect") for thread, _, _ in calls)
    assert {image_id: box for _, image_id, box in calls} == prepared
    assert len(set(prepared.values())) == 6
