"""Torch CPU and ONNX Runtime CPU give the same frames through the whole runtime (decode, resize,
translate, resize back), within the export parity bound: FP32, at most 1 LSB.

Frames are compared before encoding (mp4 is lossy); image folders are also compared through the
CLI with lossless PNG outputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.engine.backends import OrtBackend, TorchBackend
from cyclemask.engine.cli import main
from cyclemask.engine.contracts import Sink
from cyclemask.engine.pipeline import PipelineConfig, run_pipeline
from cyclemask.engine.processing import AlignedProcessor
from cyclemask.engine.sources import ImageFolderSource
from cyclemask.engine.video import VideoSource
from cyclemask.image_files import read_image

CLIP = "video/head-pose-face-detection-female-and-male.mp4"  # 480x270, 12.5 fps, 56 frames


class CaptureSink(Sink):
    """Keeps the frames the pipeline would encode."""

    fatal_write_errors = True

    def describe(self):
        return "captured frames"

    def __init__(self):
        self.frames = {}

    def write(self, frame, image):
        self.frames[frame.key] = image.copy()

    def finish(self, commit):
        return []


def _capture(source, backend, batch=8):
    sink = CaptureSink()
    with backend:
        rep = run_pipeline(source, AlignedProcessor(backend.image_size), backend, sink, PipelineConfig(batch))
    assert rep.ok, rep
    return sink.frames


def _assert_within_one_lsb(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    worst = 0
    for key in a:
        assert a[key].shape == b[key].shape, key
        worst = max(worst, int(np.abs(a[key].astype(int) - b[key].astype(int)).max()))
    assert worst <= 1


@pytest.mark.shared
def test_video_frames_torch_and_ort_agree(shared_data, bundle_path, mask_graph):
    clip = shared_data / CLIP
    torch_frames = _capture(VideoSource(clip), TorchBackend(bundle_path, "mask"), batch=8)
    ort_frames = _capture(VideoSource(clip), OrtBackend(mask_graph, provider="cpu"), batch=5)
    assert len(torch_frames) == 56 and torch_frames["frame 0"].shape == (270, 480, 3)
    _assert_within_one_lsb(torch_frames, ort_frames)


@pytest.mark.shared
def test_image_folder_torch_and_ort_agree(shared_data, bundle_path, mask_graph):
    def source():
        src = ImageFolderSource(shared_data / "faces" / "observations_pairs" / "with_mask")
        src.paths = src.paths[:40]
        return src

    a = _capture(source(), TorchBackend(bundle_path, "mask"), batch=8)
    b = _capture(source(), OrtBackend(mask_graph, provider="cpu"), batch=3)
    assert len(a) == 40
    _assert_within_one_lsb(a, b)


@pytest.mark.shared
def test_cli_video_with_torch_and_ort(shared_data, bundle_path, mask_graph, tmp_path):
    outs = {}
    for backend, model, extra in (("torch", bundle_path, ["--device", "cpu"]), ("ort", mask_graph, ["--ort-provider", "cpu"])):
        out = tmp_path / f"{backend}.mp4"
        res = CliRunner().invoke(main, ["--no-progress", "--model", str(model), "--video", str(shared_data / CLIP),
                                        "--out", str(out), "--mask", "--aligned", "--backend", backend,
                                        "--crf", "8", *extra])
        assert res.exit_code == 0, res.output
        assert "written:  56" in res.output and "frames/s" in res.output
        cap = cv2.VideoCapture(str(out))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        assert len(frames) == 56 and cap.get(cv2.CAP_PROP_FPS) == 12.5 and frames[0].shape == (270, 480, 3)
        outs[backend] = np.stack(frames).astype(np.int16)
    # After lossy encoding only a loose check remains: the two videos are nearly the same (near
    # lossless --crf 8, so the encoder's own choices do not swamp the backends' 1 LSB).
    assert np.abs(outs["torch"] - outs["ort"]).mean() < 1.0


def test_cli_image_folder_torch_and_ort_agree(bundle_path, mask_graph, tmp_path, rng):
    src = tmp_path / "faces"
    (src / "sub").mkdir(parents=True)
    # No 1-pixel or flat images here: a constant input has zero variance at every InstanceNorm,
    # which then amplifies float rounding noise, so two correct backends can differ by many LSB
    # on it (the messy-folder test checks that such files are processed).
    for i, (h, w) in enumerate(((64, 64), (100, 80), (37, 200), (2, 3), (300, 260))):
        cv2.imwrite(str(src / ("sub" if i % 2 else ".") / f"{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    outs = {}
    for backend, model, extra in (("torch", bundle_path, ["--device", "cpu"]), ("ort", mask_graph, ["--ort-provider", "cpu"])):
        out = tmp_path / backend
        res = CliRunner().invoke(main, ["--no-progress", "--model", str(model), "--images", str(src), "--out", str(out),
                                        "--mask", "--aligned", "--backend", backend, "--batch", "2", *extra])
        assert res.exit_code == 0, res.output
        outs[backend] = {p.relative_to(out).as_posix(): read_image(p) for p in sorted(out.rglob("*.png"))}
    assert len(outs["torch"]) == 5
    _assert_within_one_lsb(outs["torch"], outs["ort"])
