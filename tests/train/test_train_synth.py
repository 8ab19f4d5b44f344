"""Masked twins: templates, the warp onto landmarks, the run and its manifest."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.errors import ConfigError
from cyclemask.face_detect import mask_anchors
from cyclemask.image_files import read_image
from cyclemask.train.data_cli import main as data_main
from cyclemask.train.synth import (MaskChoice, SynthConfig, apply_mask, choose_mask, load_templates,
                                   synthesize)

# A frontal face in a 200 x 200 image: eyes, nose tip, mouth corners.
LANDMARKS = [(75, 80), (125, 80), (100, 110), (80, 135), (120, 135)]


def _template_folder(root, names=("plain", "plain_left")):
    """Templates: a 120 x 80 white rectangle (alpha 255 inside, 0 in a 10 px border)."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = []
    for name in names:
        rgba = np.zeros((100, 140, 4), np.uint8)
        rgba[10:90, 10:130] = (240, 240, 240, 255)
        cv2.imwrite(str(root / f"{name}.png"), rgba)
        b = 70 if not name.endswith("_left") else 30  # a left view has its top centre off to one side
        cfg.append(f"[{name}]\ntemplate: masks/templates/{name}.png\nmask_a: 10, 15\nmask_b: {b}, 10\n"
                   f"mask_c: 130, 15\nmask_d: 12, 70\nmask_e: 70, 90\nmask_f: 128, 70\n")
    (root / "masks.cfg").write_text("\n".join(cfg))
    return root


def test_mask_covers_nose_mouth_and_chin_and_leaves_the_rest_exactly(tmp_path):
    templates = load_templates(_template_folder(tmp_path / "t"))
    image = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    out, alpha = apply_mask(image, LANDMARKS, templates[0], MaskChoice("plain", "template"), {},
                            np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    untouched = alpha == 0
    assert untouched.mean() > 0.5
    np.testing.assert_array_equal(out[untouched], image[untouched])  # outside the mask: bit for bit
    for (x, y) in LANDMARKS[2:]:  # nose tip and mouth corners are under the mask
        assert alpha[int(y), int(x)] > 0.99
    chin = mask_anchors(LANDMARKS)[4]
    assert alpha[int(chin[1]) - 4, int(chin[0])] > 0.5
    for (x, y) in LANDMARKS[:2]:  # both eyes stay visible
        assert alpha[int(y), int(x)] == 0


def test_view_follows_the_head_turn(tmp_path):
    templates = load_templates(_template_folder(tmp_path / "t"))
    front = mask_anchors(LANDMARKS)
    turned = mask_anchors([(75, 80), (125, 80), (82, 110), (72, 135), (110, 135)])  # nose near one eye
    rng = np.random.default_rng(0)
    assert choose_mask(templates, [], front, rng, 1.0, 0.0)[0].name == "plain"
    assert choose_mask(templates, [], turned, rng, 1.0, 0.0)[0].name == "plain_left"


def test_recolour_changes_colour_keeps_shape(tmp_path):
    templates = load_templates(_template_folder(tmp_path / "t"))
    image = np.full((200, 200, 3), (150, 128, 110), np.uint8)  # a colour photo (a grey one gets grey masks)
    white, a1 = apply_mask(image, LANDMARKS, templates[0], MaskChoice("plain", "template"), {}, np.random.default_rng(0))
    red, a2 = apply_mask(image, LANDMARKS, templates[0], MaskChoice("plain", "red"), {}, np.random.default_rng(0))
    np.testing.assert_array_equal(a1, a2)
    inside = a1 > 0.99
    assert red[inside][:, 0].mean() > 2 * red[inside][:, 1].mean()  # red dominates
    assert abs(int(white[inside][:, 0].mean()) - int(white[inside][:, 1].mean())) < 5


def test_grey_photos_get_grey_masks_colour_photos_keep_theirs(tmp_path):
    templates = load_templates(_template_folder(tmp_path / "t"))
    rng = np.random.default_rng(3)
    grey = np.repeat(rng.integers(60, 200, (200, 200, 1), dtype=np.uint8), 3, axis=2)
    out, alpha = apply_mask(grey, LANDMARKS, templates[0], MaskChoice("plain", "red"), {}, np.random.default_rng(0))
    inside = alpha > 0.5
    assert inside.sum() > 1000
    spread = np.abs(out[inside].astype(int) - out[inside].astype(int).mean(axis=1, keepdims=True)).max()
    assert spread <= 1  # R = G = B, up to rounding
    assert 30 < out[alpha > 0.99].mean() < 200  # the red mask's brightness, not a blank
    colour = grey.copy()
    colour[..., 0] = np.clip(colour[..., 0].astype(int) + 25, 0, 255)
    red, _ = apply_mask(colour, LANDMARKS, templates[0], MaskChoice("plain", "red"), {}, np.random.default_rng(0))
    assert red[inside][:, 0].mean() > 2 * red[inside][:, 1].mean()


def test_template_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="masks.cfg"):
        load_templates(tmp_path)
    _template_folder(tmp_path / "t")
    with pytest.raises(ConfigError, match="no usable template of the kinds surgical"):
        load_templates(tmp_path / "t", ("surgical",))


@pytest.mark.shared
def test_synth_run_on_real_faces_writes_pairs_and_manifest(shared_data, face_detector_path, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    faces = sorted((shared_data / "faces" / "observations_pairs" / "without_mask").iterdir())[:4]
    for p in faces:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "flat.png").write_bytes(cv2.imencode(".png", np.full((64, 64, 3), 90, np.uint8))[1].tobytes())
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    tmpl = shared_data / "mask_templates"
    args = ["synth", "--in", str(src), "--out", str(tmp_path / "pairs"), "--templates", str(tmpl),
            "--textures", str(shared_data / "mask_textures"), "--detector", str(face_detector_path)]
    res = CliRunner().invoke(data_main, args)
    assert res.exit_code == 0, res.output
    assert "masked 4 of 6 photo(s); skipped 2 (no_face 1, unreadable 1)" in res.output
    manifest = json.loads((tmp_path / "pairs" / "synth.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["pairs"]) == 4
    assert {s["source"]: s["reason"] for s in manifest["skipped"]} == {"flat.png": "no_face", "broken.jpg": "unreadable"}
    for pair in manifest["pairs"]:
        assert pair["faces"][0]["template"] in manifest["templates"] and len(pair["faces"][0]["anchors"]) == 6
        before = read_image(tmp_path / "pairs" / "without_mask" / pair["twin"])
        after = read_image(tmp_path / "pairs" / "with_mask" / pair["twin"])
        assert before.shape == after.shape
        changed = np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 24
        assert 0.03 < changed.mean() < 0.6  # a mask, not nothing and not the whole photo
    # Same seed: the same bytes again.
    first = {p.name: p.read_bytes() for p in (tmp_path / "pairs" / "with_mask").iterdir()}
    res = CliRunner().invoke(data_main, args[:4] + [str(tmp_path / "again")] + args[5:])
    assert res.exit_code == 0, res.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "again" / "with_mask").iterdir()} == first


def test_synth_refuses_output_inside_input(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(ConfigError, match="outside the input folder"):
        synthesize(SynthConfig(source=tmp_path / "in", out=tmp_path / "in" / "x", templates=tmp_path))
