"""The Python API, `cyclemask.Masker`: the CLI's output from an object, the faces it used, videos,
errors, and a start-up that loads nothing heavy and needs no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask import Masker
from cyclemask.engine.cli import main
from cyclemask.errors import ConfigError, CycleMaskError, InputError
from cyclemask.face_detect import DETECTOR_ENV, FaceDetector
from cyclemask.image_files import read_image, write_image

from engine_helpers import video_props

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _shipped_detector(monkeypatch):
    monkeypatch.delenv(DETECTOR_ENV, raising=False)


def run(*args):
    return CliRunner().invoke(main, ["--no-progress", *map(str, args)])


def frames_of(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


def face_clip(path: Path, picture: np.ndarray, n: int = 4) -> Path:
    """A clip of a picture drifting right by 2 px a frame: faces to find and follow."""
    h, w = picture.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    assert writer.isOpened()
    for i in range(n):
        writer.write(cv2.cvtColor(np.roll(picture, 2 * i, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.mark.parametrize("aligned", [False, True], ids=["faces", "aligned"])
def test_an_image_comes_out_as_the_cli_writes_it(tmp_path, mask_graph, two_faces, aligned):
    write_image(tmp_path / "in" / "a.png", two_faces)
    flags = ["--aligned"] if aligned else []
    res = run("--model", mask_graph, "--backend", "ort", "--images", tmp_path / "in", "--out", tmp_path / "out", *flags)
    assert res.exit_code == 0, res.output
    cli = read_image(tmp_path / "out" / "a.png")
    with Masker("mask", mask_graph, "ort", aligned=aligned) as masker:
        one = masker(two_faces)
        several = masker.batch([two_faces, two_faces[:, :256]])
    assert one.shape == two_faces.shape and one.dtype == np.uint8
    assert not np.array_equal(one, two_faces)  # the model ran
    np.testing.assert_array_equal(one, cli)
    np.testing.assert_array_equal(several[0], cli)


def test_batch_takes_an_nhwc_array_and_each_image_stands_alone(mask_graph, two_faces):
    with Masker("mask", mask_graph, "ort", batch=3) as masker:
        stack = np.stack([two_faces, two_faces[:, ::-1]])
        outs = masker.batch(stack)
        assert len(outs) == 2
        np.testing.assert_array_equal(outs[0], masker(two_faces))
        np.testing.assert_array_equal(outs[1], masker(np.ascontiguousarray(two_faces[:, ::-1])))
        assert masker.batch([]) == []


def test_an_image_without_faces_comes_back_as_a_copy(mask_graph):
    blank = np.full((48, 64, 3), 90, np.uint8)
    with Masker("mask", mask_graph, "ort") as masker:
        out = masker(blank)
        assert len(masker.faces(blank)) == 0
    np.testing.assert_array_equal(out, blank)
    out[0, 0] = 0  # the caller owns the result: writing to it leaves the input alone
    assert blank[0, 0, 0] == 90


def test_faces_are_the_detectors_and_their_mattes_are_what_changed(mask_graph, two_faces, face_detector_path):
    with Masker("mask", mask_graph, "ort") as masker:
        layout = masker.faces(two_faces)
        out = masker(two_faces)
    # The photo path of cyclemask-run: YuNet with the padded retry and the rotated passes.
    detector = FaceDetector(face_detector_path, score_threshold=0.5, retry_pad=0.5, max_side=640,
                            coarse_side=640, rotations=(25.0, -25.0))
    expected = sorted(f.box for f in detector.detect(two_faces) if f.size >= 32)
    assert len(layout) == len(expected) == 2
    np.testing.assert_allclose(sorted(f.box for f in layout), expected, atol=1e-3)
    changed = np.any(out != two_faces, axis=2)
    assert changed.sum() > 1000
    assert not np.any(changed & (layout.matte == 0))  # nothing outside the mattes moves
    assert layout.matte.shape == two_faces.shape[:2] and layout.matte.dtype == np.float32
    for face in layout:
        x0, y0, x1, y1 = face.crop
        assert x1 - x0 == y1 - y0 and face.matte.shape == (y1 - y0, x1 - x0)
        assert face.landmarks is not None and face.landmarks.shape == (5, 2)
        # The mask zone: both mouth corners under the matte, both eyes out of it.
        weight = [face.matte[int(round(y)) - y0, int(round(x)) - x0] for x, y in face.landmarks]
        assert weight[3] > 0.5 and weight[4] > 0.5, weight
        assert weight[0] < 0.5 and weight[1] < 0.5, weight
        sub = layout.matte[max(y0, 0):y1, max(x0, 0):x1]
        assert sub.max() > 0.99


def test_faces_pasted_as_crops_have_no_landmarks(mask_graph, two_faces):
    with Masker("mask", mask_graph, "ort", paste="crop") as masker:
        layout = masker.faces(two_faces)
    assert len(layout) == 2 and all(f.landmarks is None for f in layout)
    with Masker("mask", mask_graph, "ort", aligned=True) as masker:
        whole = masker.faces(two_faces)
    assert len(whole) == 1 and whole[0].crop == (0, 0, 512, 300) and float(whole.matte.min()) == 1.0


def test_video_writes_what_the_cli_writes(tmp_path, mask_graph, two_faces):
    src = face_clip(tmp_path / "clip.mp4", two_faces)
    res = run("--model", mask_graph, "--backend", "ort", "--video", src, "--out", tmp_path / "cli.mp4")
    assert res.exit_code == 0, res.output
    with Masker("mask", mask_graph, "ort") as masker:
        result = masker.video(src, tmp_path / "api")
    assert result.ok and result.output == tmp_path / "api" / "clip_mask.mp4"
    assert result.report.written == 4 and video_props(result.output) == (4, 10.0, 512, 300)
    api_frames, cli_frames = frames_of(result.output), frames_of(tmp_path / "cli.mp4")
    assert len(api_frames) == len(cli_frames) == 4
    for a, c in zip(api_frames, cli_frames):
        np.testing.assert_array_equal(a, c)
    assert not np.array_equal(api_frames[0], frames_of(src)[0])  # faces were translated


def test_video_refuses_what_it_cannot_write(tmp_path, mask_graph):
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video\n" * 20)
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"keep me")
    good = face_clip(tmp_path / "good.mp4", np.full((48, 64, 3), 80, np.uint8), n=2)
    with Masker("mask", mask_graph, "ort") as masker:
        with pytest.raises(InputError, match="junk.mp4: cannot open as a video"):
            masker.video(junk, tmp_path / "o.mp4")
        with pytest.raises(InputError, match="missing.mp4: no such video file"):
            masker.video(tmp_path / "missing.mp4", tmp_path / "o.mp4")
        with pytest.raises(InputError, match="taken.mp4: already exists; pass overwrite=True"):
            masker.video(good, taken)
        assert taken.read_bytes() == b"keep me"
        assert masker.video(good, taken, overwrite=True).report.written == 2
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("bad, expected", [
    (np.zeros((8, 8, 3), np.float32), "got a float32 array of shape (8, 8, 3) (floats in 0..1"),
    (np.zeros((8, 8), np.uint8), "got a uint8 array of shape (8, 8)"),
    (np.zeros((3, 8, 8), np.uint8), "got a uint8 array of shape (3, 8, 8) (channels first"),
    (np.zeros((8, 8, 4), np.uint8), "got a uint8 array of shape (8, 8, 4)"),
    (np.zeros((0, 8, 3), np.uint8), "got a uint8 array of shape (0, 8, 3)"),
    ([[[0, 0, 0]]], "got a list"),
])
def test_a_wrong_image_names_what_was_expected_and_what_came(mask_graph, bad, expected):
    with Masker("mask", mask_graph, "ort") as masker:
        for call in (masker, masker.faces):
            with pytest.raises(InputError) as info:
                call(bad)
            assert "image: expected a uint8 RGB array of shape (H, W, 3); " + expected in str(info.value)
        with pytest.raises(InputError, match=r"images\[1\]: expected a uint8 RGB array"):
            masker.batch([np.zeros((8, 8, 3), np.uint8), bad])


def test_settings_errors_and_closing(mask_graph, two_faces):
    with pytest.raises(ConfigError, match="direction must be one of 'mask', 'unmask'; got 'off'"):
        Masker("off", mask_graph)
    with pytest.raises(ConfigError, match="model must be a path to a graph, engine or checkpoint, or None"):
        Masker("mask", object())
    with pytest.raises(ConfigError, match="Masker has no option 'pastes'; it takes"):
        Masker("mask", mask_graph, pastes="crop")
    with pytest.raises(CycleMaskError, match="translates 'mask', but --unmask was asked for"):
        Masker("unmask", mask_graph, "ort")
    with pytest.raises(ConfigError, match="paste must be one of"):
        Masker("mask", mask_graph, paste="everything")
    with Masker("mask", mask_graph, "ort") as masker:
        backend = masker._backend
        assert backend.is_active and masker.image_size == 64 and "ort" in masker.backend
    assert not backend.is_active  # the with block freed it
    for call in (lambda: masker(two_faces), lambda: masker.faces(two_faces), lambda: masker.batch([two_faces])):
        with pytest.raises(CycleMaskError, match="this Masker is closed"):
            call()
    masker.close()  # twice is fine


START_UP = r"""
import sys
heavy = ("torch", "cv2", "openvino", "onnxruntime", "av", "onnx", "tensorrt")
import cyclemask
assert not [m for m in heavy + ("cyclemask.engine",) if m in sys.modules], sorted(sys.modules)
from cyclemask import Masker
print(sorted(m for m in heavy if m in sys.modules))
"""


def test_importing_the_api_loads_no_runtime():
    res = subprocess.run([sys.executable, "-c", START_UP], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "[]"


WITHOUT_TORCH = r"""
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
import numpy as np
from cyclemask import Masker
from cyclemask.image_files import read_image

image = read_image(sys.argv[1])
for method in ("gan", "template"):  # the embedded generator's graph, and the default
    with Masker("mask", mask_method=method) as masker:
        out = masker(image)
        faces = masker.faces(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    print("faces", len(faces), "changed", int(np.any(out != image, axis=2).sum()), "torch", "torch" in sys.modules)
"""


def test_the_embedded_model_runs_without_torch(tmp_path, two_faces):
    write_image(tmp_path / "faces.png", two_faces)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(DETECTOR_ENV, None)
    res = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(tmp_path / "faces.png")], capture_output=True,
                         text=True, timeout=300, cwd=REPO, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert len(lines) == 2, res.stdout
    for line in lines:
        words = line.split()
        assert words[:2] == ["faces", "2"] and int(words[3]) > 1000 and words[-1] == "False", res.stdout


def test_the_template_method_and_the_default_are_the_cli_s(tmp_path, two_faces):
    # cyclemask-run --mask with the embedded model masks with the template warp by default; a
    # Masker made the same way must give the same pixels, not run the generator instead.
    write_image(tmp_path / "in" / "a.png", two_faces)
    res = run("--mask", "--images", tmp_path / "in", "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    cli = read_image(tmp_path / "out" / "a.png")
    with Masker("mask") as masker:
        assert masker.options.mask_method == "template"
        default = masker(two_faces)
        layout = masker.faces(two_faces)
    with Masker("mask", mask_method="template") as masker:
        named = masker(two_faces)
    with Masker("mask", mask_method="gan") as masker:
        gan = masker(two_faces)
    np.testing.assert_array_equal(default, cli)
    np.testing.assert_array_equal(named, cli)
    assert not np.array_equal(gan, cli) and len(layout.faces) == 2
