"""The whole runtime (decode -> resize -> batched backend -> resize back) gives the same frames
with every variant as with the eager model (TorchBackend on the CPU runs exactly
`cyclemask.image_tensors.eager_translate`), within the variant's precision bounds.

On a GPU machine this is the CUDA pipeline check: frames cross to the device in batches, run on
its stream (CUDA graphs replay a captured batch of 4, padding the partial last one), and come
back in order. Frames are compared before encoding (mp4 is lossy).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.inputs import make_image_folder, make_video
from benchmarks.variants import ArtefactUnavailable, variants
from cyclemask.engine.backends import TorchBackend
from cyclemask.engine.pipeline import PipelineConfig, run_pipeline
from cyclemask.engine.processing import AlignedProcessor
from cyclemask.engine.sources import ImageFolderSource
from cyclemask.engine.contracts import Sink
from cyclemask.engine.video import VideoSource
from cyclemask.export.verify import compare_uint8
from parity_helpers import BOUNDS

BATCH = 4


class CaptureSink(Sink):
    """Keeps the frames the pipeline would encode, by key."""

    fatal_write_errors = True

    def describe(self):
        return "captured frames"

    def __init__(self) -> None:
        self.frames: dict[str, np.ndarray] = {}

    def write(self, frame, image) -> None:
        self.frames[frame.key] = image.copy()

    def finish(self, commit: bool) -> list[str]:
        return []


@pytest.fixture(scope="session")
def pipeline_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline-inputs")
    # 7 images and 7 frames: two batches of 4, the second partial.
    return make_image_folder(d / "faces", 7), make_video(d / "clip.mp4", 7)


def _frames(source, backend) -> dict[str, np.ndarray]:
    """Frames of one pipeline run; the backend must be active."""
    sink = CaptureSink()
    rep = run_pipeline(source, AlignedProcessor(backend.image_size), backend, sink, PipelineConfig(BATCH))
    assert rep.ok, (rep.error, rep.failures)
    return sink.frames


def _both(backend, folder, video) -> dict[str, dict[str, np.ndarray]]:
    """One activation for both inputs (a torch.compile variant compiles once)."""
    with backend:
        return {"images": _frames(ImageFolderSource(folder), backend), "video": _frames(VideoSource(video), backend)}


@pytest.fixture(scope="session")
def eager_frames(small_case, pipeline_inputs):
    folder, video = pipeline_inputs
    gen = small_case.artefacts.generator
    size = small_case.image_size
    return _both(TorchBackend(generator=gen, image_size=size, direction="mask"), folder, video)


# On the seeded small generator: the variants whose bounds hold for trained generators only
# (BF16, INT8) are checked on the trained cases of test_parity.py instead.
@pytest.mark.parametrize("variant", [pytest.param(v, id=v.name, marks=[getattr(pytest.mark, m) for m in v.markers])
                                     for v in variants() if not v.trained_only])
def test_pipeline_frames_match_eager(small_case, pipeline_inputs, eager_frames, variant):
    why = variant.unavailable()
    if why:
        pytest.skip(f"{variant.name}: {why}")
    folder, video = pipeline_inputs
    try:
        backend, _ = variant.build(small_case.artefacts, batch=BATCH)
        frames = _both(backend, folder, video)
    except ArtefactUnavailable as exc:  # only "not available here" skips; every other error fails
        pytest.skip(f"{variant.name}: {exc}")
    for kind, got in frames.items():
        want = eager_frames[kind]
        assert got.keys() == want.keys() and len(want) == 7
        for key in want:
            assert got[key].shape == want[key].shape, key
        stats = compare_uint8(np.concatenate([got[k].ravel() for k in want]),
                              np.concatenate([want[k].ravel() for k in want]))
        bad = stats.failures(BOUNDS[variant.precision])
        worst = sorted(want, key=lambda k: -int(np.abs(got[k].astype(int) - want[k].astype(int)).max()))[:3]
        assert not bad, f"{variant.name} pipeline on {kind}: {'; '.join(bad)} ({stats.describe()}); worst: {worst}"
