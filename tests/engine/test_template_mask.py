"""--mask-method template (engine/template_mask.py): a mask template per face, no model.

A stub detector turns each pure-green square of a frame into a face with plausible landmarks,
so the processor runs on tiny synthetic frames; one case runs the real CLI on the portrait
matplotlib ships, in a fresh interpreter (no torch, no backend, no model).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.engine.cli import main as run_main
from cyclemask.engine.faces import FaceConfig
from cyclemask.engine.template_mask import MaskSet, TemplateConfig, TemplateMaskProcessor, check_method
from cyclemask.errors import ConfigError
from cyclemask.face_detect import Face, mask_anchors
from cyclemask.mask_templates import load_templates, shipped_templates_dir

REPO = Path(__file__).resolve().parents[2]
GREEN = (0, 255, 0)


def landmarks_of(x, y, s, turn=0.0):
    """Eyes, nose tip, mouth corners of a face in the square (x, y, s); `turn` moves the nose
    towards one eye (a head turned to the side)."""
    return ((x + 0.3 * s, y + 0.4 * s), (x + 0.7 * s, y + 0.4 * s), (x + (0.5 + turn) * s, y + 0.58 * s),
            (x + 0.36 * s, y + 0.75 * s), (x + 0.64 * s, y + 0.75 * s))


class GreenFaces:
    """Every pure-green square is a face; its top-left pixel's red channel, when odd, marks a
    head turned to the side (so a test can turn a head without moving the square)."""

    def detect(self, image):
        hit = np.all(image[..., 1:] == np.array(GREEN[1:], np.uint8), axis=2) & (image[..., 0] <= 1)
        contours, _ = cv2.findContours(hit.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        faces = []
        for x, y, w, h in sorted(cv2.boundingRect(c) for c in contours):
            turn = 0.17 if image[y, x, 0] == 1 else 0.0
            faces.append(Face((float(x), float(y), float(w), float(h)), 0.9, landmarks_of(x, y, w, turn)))
        return faces


def scene(rng, faces, size=(160, 240)):
    """Noise (never pure green) with a green square per (x, y, side[, turned])."""
    img = rng.integers(0, 200, (*size, 3), dtype=np.uint8)
    for x, y, s, *turned in faces:
        img[y:y + s, x:x + s] = GREEN
        if turned and turned[0]:
            img[y, x, 0] = 1
    return img


def processor(seed=0, track=True, min_face=32, templates=None) -> TemplateMaskProcessor:
    masks = MaskSet(TemplateConfig(templates=templates, seed=seed))
    # No face checks: these tests are about the looks of faces from their first frame on
    # (confirmation is tested in test_face_checks.py).
    return TemplateMaskProcessor(masks, FaceConfig(track=track, min_face=min_face, rotated="off", face_checks=False),
                                 detector_factory=GreenFaces)


def run(proc, frames):
    """Each frame through prepare and finish; (outputs, per-frame looks)."""
    outs, looks = [], []
    for img in frames:
        crops, state = proc.prepare(img)
        assert crops == []  # nothing for a model
        outs.append(proc.finish(img, state, []))
        looks.append([look for _, look, _ in state])
    return outs, looks


def identity(look):
    """What a person's mask is, as drawn: the style of the template it is drawn with (kind and
    colour variant, any view) and its colour or texture."""
    return look.view.name.removesuffix("_left").removesuffix("_right"), look.choice.colour, look.choice.texture


def test_only_pixels_near_the_mask_change(rng):
    img = scene(rng, [(40, 30, 70), (150, 50, 60)])
    (out,), _ = run(processor(track=False), [img])
    near = np.zeros(img.shape[:2], bool)
    for x, y, s in ((40, 30, 70), (150, 50, 60)):
        a = mask_anchors(landmarks_of(x, y, s))
        # Generous: the anchors' box grown by half the face on each side (ear loops, the template's margin).
        (x0, y0), (x1, y1) = np.floor(a.min(0) - 0.5 * s).astype(int), np.ceil(a.max(0) + 0.5 * s).astype(int)
        near[max(y0, 0):y1, max(x0, 0):x1] = True
        nose, mouth = landmarks_of(x, y, s)[2], landmarks_of(x, y, s)[3]
        for px, py in (nose, mouth):  # the mask sits on nose and mouth: they changed
            assert (out[int(py), int(px)] != img[int(py), int(px)]).any()
        for px, py in landmarks_of(x, y, s)[:2]:  # the eyes stay as they were
            np.testing.assert_array_equal(out[int(py), int(px)], img[int(py), int(px)])
    np.testing.assert_array_equal(out[~near], img[~near])


def test_one_track_keeps_its_template_and_colour_across_frames(rng):
    # A face walking right and growing, with a second one beside it, over 8 frames.
    frames = [scene(rng, [(20 + 4 * i, 30, 60 + i), (150, 40, 60)]) for i in range(8)]
    proc = processor(seed=5)
    _, looks = run(proc, frames)
    assert all(len(ls) == 2 for ls in looks)
    for k in range(2):
        assert len({identity(ls[k]) for ls in looks}) == 1, [identity(ls[k]) for ls in looks]
        assert len({ls[k].view.name for ls in looks}) == 1
    assert proc.stats.translated == 16 and proc.stats.found == 16


def test_a_turning_head_changes_view_not_mask(rng):
    frames = [scene(rng, [(60, 30, 70, i >= 3)]) for i in range(6)]
    _, looks = run(processor(seed=1), frames)
    views = [ls[0].view for ls in looks]
    assert views[0].yaw == pytest.approx(0.5, abs=0.1) and abs(views[-1].yaw - 0.5) > 0.2  # front, then a side view
    assert len({identity(ls[0]) for ls in looks}) == 1  # the same kind and colour throughout


def test_different_faces_can_get_different_masks(rng):
    faces = [(8 + 58 * i, 20 + 70 * j, 50) for i in range(4) for j in range(2)]
    _, (looks,) = run(processor(seed=0), [scene(rng, faces)])
    assert len(looks) == 8
    assert len({identity(look) for look in looks}) >= 3


def test_the_same_seed_gives_the_same_masks_and_another_seed_other_masks(rng):
    frames = [scene(rng, [(20 + 3 * i, 30, 64), (150, 40, 56)]) for i in range(4)]
    first, looks = run(processor(seed=7), frames)
    again, _ = run(processor(seed=7), frames)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    others = [run(processor(seed=s), frames[:1])[1][0] for s in range(1, 6)]
    assert any([identity(x) for x in o] != [identity(x) for x in looks[0]] for o in others)


def test_faces_under_min_face_are_left_alone_and_counted(rng):
    img = scene(rng, [(10, 10, 24), (100, 30, 70)])
    proc = processor(track=False, min_face=32)
    (out,), (looks,) = run(proc, [img])
    assert len(looks) == 1
    np.testing.assert_array_equal(out[0:50, 0:50], img[0:50, 0:50])
    assert proc.stats.too_small == 1
    assert proc.stats.summary(32) == ("1 found in 1 of 1 frames; 1 under --min-face 32 px left as they were; "
                                      "1 given a template mask")


def test_a_small_face_gets_the_whole_mask(rng):
    """A 36 px face: the template covers nose, mouth and chin, and the eyes stay clear."""
    x, y, s = 50, 40, 36
    img = scene(rng, [(x, y, s)], size=(120, 140))
    (out,), _ = run(processor(track=False), [img])
    lm = landmarks_of(x, y, s)
    changed = np.any(out != img, axis=2)
    for px, py in lm[2:]:
        assert changed[int(py), int(px)]
    chin = mask_anchors(lm)[4]
    assert changed[int(chin[1]) - 2, int(chin[0])]
    for px, py in lm[:2]:
        assert not changed[int(py), int(px)]


def test_mask_kinds_limit_the_choice(rng):
    faces = [(8 + 58 * i, 20 + 70 * j, 50) for i in range(4) for j in range(2)]
    masks = MaskSet(TemplateConfig(kinds=("surgical_blue", "KN95")))
    proc = TemplateMaskProcessor(masks, FaceConfig(track=False, rotated="off"), detector_factory=GreenFaces)
    _, (looks,) = run(proc, [scene(rng, faces)])
    assert {identity(look)[0] for look in looks} == {"surgical_blue", "KN95"}


def test_shipped_templates_every_kind_in_three_views_small_and_licensed():
    folder = shipped_templates_dir()
    templates = load_templates(folder)
    for kind in ("surgical", "cloth", "KN95", "N95"):
        yaws = sorted(t.yaw for t in templates if t.kind == kind)
        assert yaws[0] < 0.4 and 0.4 <= yaws[len(yaws) // 2] <= 0.6 and yaws[-1] > 0.6, (kind, yaws)
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2_000_000
    assert "MIT License" in (folder / "LICENSE_MaskTheFace.txt").read_text()
    assert "MaskTheFace" in (folder / "SOURCE.md").read_text()


def test_a_template_folder_that_is_not_one_is_named(tmp_path):
    with pytest.raises(ConfigError, match=rf"--mask-templates {tmp_path / 'none'}: not a folder"):
        MaskSet(TemplateConfig(templates=tmp_path / "none"))
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'masks.cfg'}: no such file"):
        MaskSet(TemplateConfig(templates=tmp_path))


@pytest.mark.parametrize("args, message", [
    (["--unmask", "--mask-method", "template"], "cannot --unmask"),
    (["--mask-method", "template", "--aligned"], "not with --aligned"),
    (["--mask-method", "template", "--model", "m.onnx"], "runs no model"),
    (["--mask-method", "template", "--ray"], "not with --ray"),
    (["--mask-method", "template", "--model", "m.pt", "--demo", "--out", "o"], "runs no model"),
    (["--mask", "--mask-method", "gan", "--mask-seed", "3"], "--mask-seed: only with --mask-method template"),
    (["--mask", "--mask-method", "gan", "--mask-templates", "x"], "--mask-templates: only with --mask-method template"),
    (["--mask", "--mask-method", "gan", "--mask-kinds", "cloth"], "--mask-kinds: only with --mask-method template"),
])
def test_options_that_do_not_go_with_the_template_method_are_usage_errors(tmp_path, args, message):
    (tmp_path / "in").mkdir()
    res = CliRunner().invoke(run_main, ["--images", str(tmp_path / "in"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_the_default_method_is_the_template_where_one_can_serve():
    from cyclemask.engine.template_mask import DEFAULT_METHOD, default_method

    assert DEFAULT_METHOD == "template"
    assert default_method(direction="mask") == "template"
    assert default_method(direction=None) == "template"  # the embedded model's own direction is mask
    assert default_method(direction="unmask") == "gan"
    assert default_method(direction="mask", model="m.onnx") == "gan"
    assert default_method(direction="mask", aligned=True) == "gan"
    assert default_method(direction="mask", elsewhere=True) == "gan"


@pytest.mark.parametrize("args", [["--mask", "--unmask-method", "restore"], ["--unmask"], ["--mask", "--aligned"]])
def test_the_default_leaves_unmasking_and_aligned_runs_to_the_model(tmp_path, args):
    (tmp_path / "in").mkdir()
    res = CliRunner().invoke(run_main, ["--images", str(tmp_path / "in"), "--out", str(tmp_path / "o"), *args])
    assert "--mask-method template" not in res.output and "cannot --unmask" not in res.output, res.output


def test_the_library_refuses_the_same_options():
    from cyclemask.engine.run import RunOptions

    with pytest.raises(ConfigError, match="cannot --unmask"):
        RunOptions(mask_method="template", direction="unmask")
    with pytest.raises(ConfigError, match="--mask-seed: only with --mask-method template"):
        RunOptions(mask_method="gan", mask_seed=1)
    with pytest.raises(ConfigError, match="--mask-seed: only with --mask-method template"):
        RunOptions(direction="mask", model="mine.onnx", mask_seed=1)  # a model of one's own: the generator
    # Unset, the method is the CLI's default: the template warp for the embedded model.
    assert RunOptions(direction="mask").mask_method == "template"
    assert RunOptions(direction="unmask").mask_method == "gan"
    with pytest.raises(ConfigError, match="mask_method must be one of gan, template"):
        check_method("warp")


RUN_TEMPLATE = r"""
import pathlib, shutil, sys, tempfile
import matplotlib
from click.testing import CliRunner

import cyclemask.engine.run as run
from cyclemask.image_files import read_image


def no_model(*args, **kwargs):
    raise AssertionError("the template method asked for a model or a backend")


run.create_backend = run.resolve_model = no_model
import cyclemask.engine.cli as cli

d = pathlib.Path(tempfile.mkdtemp())
(d / "in").mkdir()
src = pathlib.Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
shutil.copy(src, d / "in" / "portrait.jpg")
res = CliRunner().invoke(cli.main, ["--mask", *sys.argv[1:], "--images", str(d / "in"),
                                    "--out", str(d / "out"), "--no-progress"])
assert res.exit_code == 0, res.output
assert "1 given a template mask" in res.output, res.output
out = read_image(d / "out" / "portrait.jpg")
diff = abs(out.astype(int) - read_image(d / "in" / "portrait.jpg").astype(int)).max(axis=2)
print("changed share:", round(float((diff > 40).mean()), 4))
print("torch imported:", "torch" in sys.modules)
"""


@pytest.mark.parametrize("flags", [["--mask-method", "template"], []], ids=["given", "default"])
def test_runs_on_a_real_face_without_model_backend_or_torch(flags):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", RUN_TEMPLATE, *flags], capture_output=True, text=True, timeout=300,
                         env=env, cwd=REPO)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "torch imported: False" in res.stdout
    share = float(res.stdout.split("changed share:")[1].split()[0])
    assert 0.02 < share < 0.25, res.stdout  # a mask over the lower face of a portrait, not the whole image


@pytest.mark.parametrize("method", ["gan", "template"])
def test_the_run_says_how_many_faces_it_left_under_min_face(tmp_path, method):
    """A 43 px face with --min-face 80: both methods leave it as it was and the summary says so."""
    import matplotlib

    from cyclemask.image_files import read_image, write_image

    portrait = read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    small = cv2.resize(portrait, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    write_image(tmp_path / "in" / "small.png", small)
    args = ["--mask", "--mask-method", method, "--images", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
            "--min-face", "80", "--no-progress"] + (["--backend", "ort"] if method == "gan" else [])
    res = CliRunner().invoke(run_main, args)
    assert res.exit_code == 0, res.output
    assert "1 under --min-face 80 px left as they were" in res.output, res.output
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "small.png"), small)


def test_model_options_given_to_a_template_run_are_named_not_dropped_silently(tmp_path):
    from cyclemask import Masker

    (tmp_path / "in").mkdir()
    args = ["--images", str(tmp_path / "in"), "--mask", "--no-progress"]
    res = CliRunner().invoke(run_main, [*args, "--out", str(tmp_path / "a"), "--backend", "ort", "--batch", "4"])
    assert ("--backend, --batch: no effect with the mask template method" in res.output
            and "add --mask-method gan" in res.output), res.output
    res = CliRunner().invoke(run_main, [*args, "--out", str(tmp_path / "b"), "--mask-method", "template", "--threads", "2"])
    assert "--threads: no effect" in res.output and "add --mask-method gan" not in res.output, res.output
    res = CliRunner().invoke(run_main, [*args, "--out", str(tmp_path / "c"), "--detect-score", "0.6"])
    assert "no effect" not in res.output, res.output  # the face path's options do apply
    with pytest.warns(UserWarning, match="batch: no effect.*mask_method='gan'"):
        Masker("mask", batch=4).close()
