"""Face-aware `cyclemask-run` (the default mode) and the face stage with the real YuNet detector:
two faces in one picture, pass-through of frames without faces, the shared video clips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.engine.backends import TorchBackend
from cyclemask.engine.cli import main
from cyclemask.engine.faces import FaceConfig, FaceProcessor
from cyclemask.engine.video import VideoSource
from cyclemask.face_detect import DETECTOR_ENV
from cyclemask.image_files import read_image, write_image

from engine_helpers import video_props

SIZE = 64
CLIPS = ["head-pose-face-detection-female-and-male.mp4", "head-pose-face-detection-female.mp4",
         "head-pose-face-detection-male.mp4"]


def run(*args):
    return CliRunner().invoke(main, ["--no-progress", *map(str, args)])


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(DETECTOR_ENV, raising=False)


def outside(boxes, shape) -> np.ndarray:
    keep = np.ones(shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        keep[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = False
    return keep


# --- the CLI's face options and errors -----------------------------------------------------------


def test_face_mode_is_the_default_and_uses_the_shipped_detector(tmp_path, bundle_path, no_env):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "a.png", np.zeros((20, 20, 3), np.uint8))
    res = run("--model", bundle_path, "--images", tmp_path / "in", "--out", tmp_path / "o", "--mask")
    assert res.exit_code == 0, res.output
    assert "face-aware (YuNet face_detection_yunet_2023mar.onnx" in res.output and "mask zone pasted" in res.output
    assert "0 found in 0 of 1 frames" in res.output
    res = run("--model", bundle_path, "--images", tmp_path / "in", "--out", tmp_path / "o2", "--mask",
              "--face-detector", tmp_path / "missing.onnx")
    assert res.exit_code == 1 and "--face-detector" in res.output and "missing.onnx: no such file" in res.output
    assert not (tmp_path / "o2").exists()


def test_detection_options(tmp_path, bundle_path, no_env, two_faces):
    write_image(tmp_path / "in" / "a.png", two_faces)
    res = run("--model", bundle_path, "--images", tmp_path / "in", "--out", tmp_path / "o", "--mask",
              "--rotated-detection", "lost")
    assert res.exit_code == 1 and "--rotated-detection lost needs faces followed across video frames" in res.output
    assert not (tmp_path / "o").exists()
    res = run("--model", bundle_path, "--images", tmp_path / "in", "--out", tmp_path / "o", "--mask")
    assert res.exit_code == 0, res.output
    assert "score >= 0.5, rotated passes on every frame" in res.output and "2 found in 1 of 1 frames" in res.output
    res = run("--model", bundle_path, "--images", tmp_path / "in", "--out", tmp_path / "o2", "--mask",
              "--rotated-detection", "off", "--detect-score", "0.99")
    assert res.exit_code == 0 and "score >= 0.99, min face" in res.output and "0 found in 0 of 1 frames" in res.output
    assert run("--images", tmp_path / "in", "--detect-score", "1.5").exit_code == 2


def test_detector_from_the_environment_must_exist(tmp_path, bundle_path, monkeypatch):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "a.png", np.zeros((20, 20, 3), np.uint8))
    monkeypatch.setenv(DETECTOR_ENV, str(tmp_path / "gone.onnx"))
    res = run("--model", bundle_path, "--images", tmp_path / "in", "--out", tmp_path / "o", "--mask")
    assert res.exit_code == 1 and f"gone.onnx (from ${DETECTOR_ENV}): no such file" in res.output


def test_help_documents_the_face_options():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for opt in ("--face-detector", "--min-face", "--margin", "--no-track", "--no-face-checks", "--color-match", "--detect-side",
                "--detect-workers", "--paste", "--detect-score", "--rotated-detection"):
        assert opt in text, opt
    assert DETECTOR_ENV in text
    assert "[default: 32; x>=1]" in text and "[default: 0.3; 0.0<=x<=2.0]" in text
    assert "[default: 640; 32<=x<=8192]" in text and "[default: 2; 0<=x<=64]" in text
    assert "--paste [auto|zone|crop|hole|hole-below-eyes]" in text and "[default: auto]" in text


def test_bad_face_option_values(tmp_path, bundle_path, face_detector_path):
    for args in (("--min-face", "0"), ("--margin", "-1"), ("--detect-side", "8"), ("--detect-workers", "-1")):
        res = run("--model", bundle_path, "--images", tmp_path, "--mask", "--face-detector", face_detector_path, *args)
        assert res.exit_code == 2 and args[0] in res.output, res.output


# --- real YuNet ---------------------------------------------------------------------------------


def test_two_faces_in_one_picture_are_both_translated(two_faces, face_detector_path, tiny_generator):
    proc = FaceProcessor(SIZE, FaceConfig(track=False), model_path=face_detector_path)
    crops, state = proc.prepare(two_faces)
    assert len(crops) == 2, f"YuNet found {len(crops)} faces"
    left, right = sorted(p.box for p in state)
    assert left[2] <= 300 and right[0] >= 200  # one per portrait
    with TorchBackend(generator=tiny_generator, image_size=SIZE, direction="mask") as be:
        out = proc.finish(two_faces, state, list(be.infer(np.stack(crops))))
    keep = outside([left, right], two_faces.shape)
    np.testing.assert_array_equal(out[keep], two_faces[keep])
    for p in state:  # the mask zone (a patch over the mouth) of both faces is the model's
        mx, my = np.asarray(p.landmarks[3:]).mean(axis=0).astype(int)
        r = (p.box[2] - p.box[0]) // 12
        zone = (slice(my - r, my + r), slice(mx - r, mx + r))
        assert (out[zone] != two_faces[zone]).mean() > 0.9
    assert proc.stats.found == 2 and proc.stats.translated == 2


def _outside_zones(state, shape) -> np.ndarray:
    from cyclemask.face_detect import mask_zone_matte

    keep = np.ones(shape[:2], bool)
    for p in state:
        x0, y0, x1, y1 = p.box
        m = mask_zone_matte(p.landmarks, p.box)
        ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
        keep[ay0:ay1, ax0:ax1] &= m[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] == 0
    return keep


def test_zone_paste_masks_then_unmasks_with_the_shipped_models(two_faces):
    """Both directions with the embedded demo generators and the shipped detector: each pass
    changes the mask zones of the faces it finds, and not one pixel outside them."""
    from cyclemask.engine.backends import OrtBackend
    from cyclemask.demo_model import default_model

    image = two_faces
    for direction in ("mask", "unmask"):
        with OrtBackend(default_model(direction, "ort"), direction, provider="cpu") as be:
            proc = FaceProcessor(be.image_size, FaceConfig(track=False))
            crops, state = proc.prepare(image)
            # The demo model's masks can make YuNet see an extra face: at least the two real ones.
            assert len(crops) >= 2, f"{direction}: YuNet found {len(crops)} faces"
            assert all(p.landmarks is not None for p in state) and proc.stats.whole_crop == 0
            out = proc.finish(image, state, list(be.infer(np.stack(crops))))
        keep = _outside_zones(state, image.shape)
        np.testing.assert_array_equal(out[keep], image[keep])
        assert keep.mean() > 0.7
        for p in sorted(state, key=lambda p: p.box[0] - p.box[2])[:2]:  # the mouths of the two faces
            mx, my = np.asarray(p.landmarks[3:]).mean(axis=0).astype(int)
            patch = (slice(my - 4, my + 5), slice(mx - 4, mx + 5))
            assert np.abs(out[patch].astype(int) - image[patch]).mean() > 8, direction
        image = out


def test_image_folder_in_face_mode(tmp_path, bundle_path, face_detector_path, two_faces, rng):
    src = tmp_path / "photos"
    src.mkdir()
    write_image(src / "two.png", two_faces)
    noise = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    write_image(src / "noise.png", noise)
    res = run("--model", bundle_path, "--images", src, "--out", tmp_path / "out", "--mask",
              "--face-detector", face_detector_path, "--batch", "3")
    assert res.exit_code == 0, res.output
    assert "mode:    face-aware" in res.output
    assert "faces:    2 found in 1 of 2 frames; 2 translated" in res.output
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "noise.png"), noise)  # no face: unchanged
    out = read_image(tmp_path / "out" / "two.png")
    assert out.shape == two_faces.shape
    np.testing.assert_array_equal(out[:10], two_faces[:10])  # the top strip is far from both faces
    assert (out != two_faces).any(axis=2).mean() > 0.05
    assert "warning:" not in res.output  # a face was found: nothing to warn of


def test_a_run_that_finds_no_face_anywhere_says_so_in_one_line(tmp_path, bundle_path, no_env, rng):
    src = tmp_path / "crops"
    src.mkdir()
    for i in range(3):  # noise: nothing YuNet calls a face
        write_image(src / f"{i}.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    res = run("--model", bundle_path, "--images", src, "--out", tmp_path / "out", "--unmask")
    assert res.exit_code == 0, res.output  # passing the photos through is not a failure
    warnings = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, res.output
    assert "no face found in any of the 3 images" in warnings[0]
    for flag in ("--aligned", "--min-face", "--detect-score"):
        assert flag in warnings[0], flag
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]
    res = run("--model", bundle_path, "--images", src, "--out", tmp_path / "aligned", "--unmask", "--aligned")
    assert res.exit_code == 0 and "warning:" not in res.output, res.output  # aligned mode finds no faces by design


def test_mask_and_unmask_together_is_a_usage_error(tmp_path, bundle_path, no_env):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "a.png", np.zeros((20, 20, 3), np.uint8))
    for flags in (("--mask", "--unmask"), ("--unmask", "--mask")):
        res = run("--model", bundle_path, "--images", tmp_path / "in", "--out", tmp_path / "o", *flags)
        assert res.exit_code == 2 and "--mask and --unmask contradict each other" in res.output, res.output
        assert not (tmp_path / "o").exists()
    res = run("--model", bundle_path, "--images", tmp_path / "in", "--out", tmp_path / "o", "--unmask")
    assert res.exit_code == 0 and "(unmask, 64px)" in res.output, res.output


def test_video_without_faces_keeps_fps_count_and_size(tmp_path, bundle_path, face_detector_path, monkeypatch, rng):
    path = tmp_path / "noise.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 7.5, (80, 60))
    for _ in range(9):
        w.write(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    w.release()
    monkeypatch.setenv(DETECTOR_ENV, str(face_detector_path))  # the detector from the environment
    res = run("--model", bundle_path, "--video", path, "--out", tmp_path / "o.mp4", "--unmask", "--no-track",
              "--color-match", "--detect-workers", "0")
    assert res.exit_code == 0, res.output
    assert "each frame on its own, colour matched" in res.output
    assert "faces:    0 found in 0 of 9 frames; 0 translated" in res.output
    assert video_props(tmp_path / "o.mp4") == (9, 7.5, 80, 60)


# --- the shared clips ----------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize("clip", CLIPS)
def test_shared_clips_keep_frame_count_fps_and_size(clip, shared_data, bundle_path, face_detector_path, tmp_path):
    src = shared_data / "video" / clip
    out = tmp_path / "out.mp4"
    res = run("--model", bundle_path, "--video", src, "--out", out, "--mask", "--face-detector", face_detector_path,
              "--batch", "16")
    assert res.exit_code == 0, res.output
    n, fps, w, h = video_props(src)
    assert video_props(out) == (n, fps, w, h) and n > 20
    faces = 2 if "female-and-male" in clip else 1
    assert f"faces:    {faces * n} found in {n} of {n} frames; {faces * n} translated" in res.output


@pytest.mark.shared
def test_shared_clip_two_people_both_translated(shared_data, face_detector_path, tiny_generator):
    frame = next(iter(VideoSource(shared_data / "video" / CLIPS[0]))).image
    proc = FaceProcessor(SIZE, FaceConfig(track=False), model_path=face_detector_path)  # one frame: a photo
    crops, state = proc.prepare(frame)
    assert len(crops) == 2
    with TorchBackend(generator=tiny_generator, image_size=SIZE, direction="mask") as be:
        out = proc.finish(frame, state, list(be.infer(np.stack(crops))))
    keep = _outside_zones(state, frame.shape)
    np.testing.assert_array_equal(out[keep], frame[keep])
    for p in state:
        mx, my = np.asarray(p.landmarks[3:]).mean(axis=0).astype(int)
        r = (p.box[2] - p.box[0]) // 12
        zone = (slice(my - r, my + r), slice(mx - r, mx + r))
        assert (out[zone] != frame[zone]).mean() > 0.9


@pytest.mark.shared
def test_tracking_steadies_the_crops_on_a_real_clip(shared_data, face_detector_path):
    boxes = {}
    for track in (False, True):
        proc = FaceProcessor(SIZE, FaceConfig(track=track), model_path=face_detector_path)
        # Through detect-ahead, as a run goes: it confirms the face on its first frame.
        frames = proc.detect_ahead(VideoSource(shared_data / "video" / CLIPS[1]), 2)
        boxes[track] = np.array([[p.box for p in proc.prepare(f.image, f.ahead)[1]] for f in frames], float)[:, 0]
    centre = {k: np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0]], 1)
              for k, b in boxes.items()}
    jerk = {k: np.abs(np.diff(c, 2, axis=0)).mean() for k, c in centre.items()}
    assert jerk[True] < 0.7 * jerk[False], jerk  # measured: about half
    assert proc.stats.scene_cuts == 0 and proc.stats.held == 0
    side = boxes[False][:, 2] - boxes[False][:, 0]
    assert (np.abs(boxes[True] - boxes[False]).max(axis=1) / side).max() < 0.1  # and no lag behind the face


@pytest.mark.shared
def test_scene_cuts_between_clips_reset_tracks_and_none_inside_a_clip(shared_data, face_detector_path):
    video = shared_data / "video"
    first = [f.image for f in VideoSource(video / CLIPS[1])]
    second = [f.image for f in VideoSource(video / CLIPS[2])]
    proc = FaceProcessor(SIZE, FaceConfig(), model_path=face_detector_path)
    for frame in first + second:
        proc.prepare(frame)
    assert proc.stats.scene_cuts == 1 and proc.stats.held == 0


def test_no_face_warning_wording_for_videos_and_small_faces():
    # The same line ends a --ray run (engine/ray_cli.py), built from the workers' summed counts.
    from cyclemask.engine.faces import FaceStats
    from cyclemask.engine.summary import no_face_warning

    line = no_face_warning(FaceStats(frames=5, too_small=2), min_face=32, detect_score=0.5, video=True)
    assert line.startswith("warning: no face found in any of the 5 frames (2 smaller than --min-face 32 px)")
    assert "--min-face (now 32)" in line and "--detect-score (now 0.5)" in line and "--aligned" in line
    assert no_face_warning(FaceStats(frames=5, found=1), min_face=32, detect_score=0.5, video=True) is None
    assert no_face_warning(FaceStats(), min_face=32, detect_score=0.5, video=False) is None  # nothing read
    assert no_face_warning(None, min_face=32, detect_score=0.5, video=False) is None  # aligned mode
