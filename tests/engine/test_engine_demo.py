"""The embedded demo: shipped package data, `cyclemask-run --demo`, and the default model."""

from __future__ import annotations

import json
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cyclemask.checkpoint import load_generators
from cyclemask.errors import ConfigError
from cyclemask.face_detect import FaceDetector, crop_face, mask_zone_matte, square_crop_box
from cyclemask.image_files import read_image
from cyclemask.image_tensors import eager_translate
from cyclemask import demo_model
from cyclemask.engine import demo
from cyclemask.engine.cli import main
from cyclemask.engine.run import RunOptions

REPO = Path(__file__).resolve().parents[2]
# All package data together (generators, restore bundle, segmenter, classifier, YuNet, templates).
MAX_ASSET_BYTES = 25 * 1000 * 1000
SHIPPED = ("generators.pt", "mask.onnx", "unmask.onnx", "demo.json", "restore.pt", "segmenter.onnx",
           "unmask_cyclegan.onnx")


def run(*args):
    return CliRunner().invoke(main, ["--no-progress", *map(str, args)])


@pytest.fixture(scope="module")
def tiny_graphs(tmp_path_factory, tiny_pair) -> dict[str, Path]:
    from cyclemask.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("demo_onnx")
    return {d: Path(export_onnx(g, root / f"{d}.onnx", image_size=64, metadata={"direction": d}))
            for d, g in tiny_pair.items()}


def _portrait() -> demo.Portrait:
    found = demo.demo_portraits()
    if not found:
        pytest.fail("matplotlib's sample_data/grace_hopper.jpg is missing: the demo has no input")
    return found[0]


def _face(image):
    """The portrait's face as the shipped detector finds it (the demo's own detection)."""
    faces = FaceDetector(retry_pad=0.5).detect(image)
    assert len(faces) == 1, faces
    return faces[0]


# -------------------------------------------------------------------------------------------
# Package data


def test_shipped_assets_present_and_small():
    root = demo_model.assets_dir()
    sizes = {name: (root / name).stat().st_size for name in SHIPPED if (root / name).is_file()}
    assert sorted(sizes) == sorted(SHIPPED), f"missing from {root}: {set(SHIPPED) - set(sizes)}"
    total = sum(p.stat().st_size for p in root.parent.rglob("*") if p.is_file())
    assert total <= MAX_ASSET_BYTES, f"package data is {total / 1e6:.1f} MB, over the 25 MB limit"
    info = json.loads((root / "demo.json").read_text())
    for key in ("image_size", "command", "iterations", "train_seconds", "unmask_method", "restore"):
        assert key in info, f"demo.json lacks {key}"


def test_demo_json_records_the_digest_of_each_shipped_model():
    # demo.json is the record of how the shipped files were made: a file replaced without a
    # new record would be described by another model's figures.
    import hashlib

    root = demo_model.assets_dir()
    recorded = json.loads((root / "demo.json").read_text())["files"]
    assert sorted(recorded) == sorted(n for n in SHIPPED if n != "demo.json")
    for name, digest in recorded.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, f"{name} differs from demo.json"


def test_package_data_glob_ships_the_assets():
    # An editable install finds files anywhere; a wheel only carries what package-data names.
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = cfg["tool"]["setuptools"]["package-data"]["cyclemask"]
    for name in SHIPPED:
        rel = f"assets/demo/{name}"
        assert any(fnmatch(rel, g) and g.count("/") == rel.count("/") for g in globs), f"{rel} not in {globs}"


def test_shipped_checkpoint_and_onnx_agree_within_one_lsb(rng):
    from cyclemask.engine.backends import OrtBackend

    root = demo_model.assets_dir()
    gens = load_generators(root / "generators.pt")
    size = json.loads((root / "demo.json").read_text())["image_size"]
    p = _portrait()
    image = read_image(p.path)
    crop, _ = crop_face(image, _face(image).box, size)
    batch = np.stack([crop, rng.integers(0, 256, (size, size, 3), dtype=np.uint8)])
    restore = load_generators(root / "restore.pt")["unmask"].generator
    pairs = [("mask", gens["mask"].generator, "mask"), ("unmask", gens["unmask"].generator, "cyclegan"),
             ("unmask", restore, "restore")]
    for d, net, method in pairs:
        with torch.no_grad():
            eager = eager_translate(net.eval(), batch)
        graph_path = demo_model.default_model(d, "ort", method if d == "unmask" else None)
        with OrtBackend(graph_path, d, provider="cpu") as be:
            graph = be.infer(batch)
        diff = np.abs(eager.astype(np.int16) - graph.astype(np.int16))
        assert diff.max() <= 1, f"{graph_path.name}: ONNX differs from its checkpoint by {diff.max()} LSB"


# -------------------------------------------------------------------------------------------
# run_demo with tiny stand-in models (fast, and checks the geometry exactly); the generator
# masks there (mask_method "gan"), the template method has its own tests below.

GAN = RunOptions(mask_method="gan")


@pytest.mark.parametrize("kind", ["torch", "ort"])
def test_run_demo_tiny_models(tmp_path, kind, bundle_path, tiny_graphs):
    models = {"mask": bundle_path, "unmask": bundle_path} if kind == "torch" else tiny_graphs
    report = demo.run_demo(tmp_path / "out", RunOptions(backend="auto", mask_method="gan"), models=models)
    assert report.ok, report.failures
    p = _portrait()
    names = sorted(x.name for x in report.written)
    assert names == sorted(demo.output_names([p]))
    src = read_image(p.path)
    masked = read_image(tmp_path / "out" / f"{p.name}_masked.png")
    unmasked = read_image(tmp_path / "out" / f"{p.name}_unmasked.png")
    assert masked.shape == unmasked.shape == src.shape
    f = _face(src)
    x0, y0, x1, y1 = box = square_crop_box(f.box, src.shape, 0.3, fit="pad")
    outside = np.ones(src.shape[:2], bool)
    outside[max(y0, 0):y1, max(x0, 0):x1] = False
    # Pixels outside the face's crop box keep their values bit for bit; the face itself changes.
    assert np.array_equal(masked[outside], src[outside])
    assert np.array_equal(unmasked[outside], src[outside])
    # The mask pass (zone paste, the default) changes nothing outside the face's mask zone either.
    matte = mask_zone_matte(f.landmarks, box)
    zero = np.zeros(src.shape[:2], bool)
    zero[y0:y1, x0:x1] = matte == 0
    assert np.array_equal(masked[zero], src[zero]) and zero[y0:y1, x0:x1].mean() > 0.3
    nx, ny = (int(v) for v in f.landmarks[2])  # the nose tip is in the zone
    assert np.abs(masked[ny - 5:ny + 5, nx - 5:nx + 5].astype(int) - src[ny - 5:ny + 5, nx - 5:nx + 5]).mean() > 5
    sheet = read_image(tmp_path / "out" / demo.SHEET_NAME)
    assert sheet.shape[0] > 400 and sheet.shape[1] > 600
    assert report.faces == {p.name: 1}


def test_run_demo_refuses_to_overwrite_then_overwrites(tmp_path, bundle_path):
    models = {"mask": bundle_path, "unmask": bundle_path}
    demo.run_demo(tmp_path, GAN, models=models)
    before = (tmp_path / demo.SHEET_NAME).stat().st_mtime_ns
    with pytest.raises(ConfigError, match="already holds .*--overwrite"):
        demo.run_demo(tmp_path, GAN, models=models)
    assert (tmp_path / demo.SHEET_NAME).stat().st_mtime_ns == before
    assert demo.run_demo(tmp_path, RunOptions(overwrite=True, mask_method="gan"), models=models).ok


def test_run_demo_errors(tmp_path, bundle_path, monkeypatch):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        demo.run_demo(a_file, GAN, models={"mask": bundle_path, "unmask": bundle_path})
    with pytest.raises(ConfigError, match="missing: unmask"):
        demo.run_demo(tmp_path / "o", GAN, models={"mask": bundle_path})
    # The template method runs no mask model: one given with it would be silently unused.
    with pytest.raises(ConfigError, match="template runs no mask model"):
        demo.run_demo(tmp_path / "o", models={"mask": bundle_path, "unmask": bundle_path})
    monkeypatch.setattr(demo_model, "assets_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="embedded demo model .*missing.*--model"):
        demo.run_demo(tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_run_demo_portrait_without_face_is_reported(tmp_path, bundle_path):
    from cyclemask.image_files import write_image

    p = _portrait()
    write_image(tmp_path / "wall.png", np.full((200, 160, 3), 128, np.uint8))
    wall = demo.Portrait("wall", tmp_path / "wall.png", "test")
    report = demo.run_demo(tmp_path / "o", GAN, models={"mask": bundle_path, "unmask": bundle_path},
                           portraits=[wall, p])
    assert not report.ok
    assert any("no face found" in f and "wall.png" in f for f in report.failures)
    assert (tmp_path / "o" / f"{p.name}_masked.png").is_file()  # the other portrait is still done


def test_unmask_pass_reuses_an_input_face_the_detector_misses():
    a = demo.Face((10.0, 10.0, 50.0, 50.0), 0.9, ())
    b = demo.Face((200.0, 10.0, 50.0, 50.0), 0.9, ())
    moved = demo.Face((12.0, 11.0, 50.0, 50.0), 0.7, ())
    stray = demo.Face((400.0, 300.0, 40.0, 40.0), 0.7, ())
    faces, missed = demo._faces_on_masked([moved, stray], [a, b])
    assert faces == [moved, b] and missed == 1  # the masked detection wins; a stray one is ignored


def test_demo_runs_through_the_pipeline(tmp_path, bundle_path, monkeypatch):
    """One inference path: the demo's translations go through Pipeline from memory."""
    from cyclemask.engine import pipeline

    calls = []
    real = pipeline.Pipeline.run

    def counted(self):
        calls.append(type(self.source).__name__)
        return real(self)

    monkeypatch.setattr(pipeline.Pipeline, "run", counted)
    assert demo.run_demo(tmp_path, GAN, models={"mask": bundle_path, "unmask": bundle_path}).ok
    assert calls == ["MemorySource", "MemorySource"]  # mask, then unmask of the masked image
    calls.clear()
    assert demo.run_demo(tmp_path / "template", models={"unmask": bundle_path}).ok
    assert calls == ["MemorySource", "MemorySource"]  # the template pass goes through it too


def test_run_demo_paste_modes(tmp_path, bundle_path):
    """Zone paste keeps the eyes (and glasses) as they were; whole-crop paste replaces them."""
    models = {"mask": bundle_path, "unmask": bundle_path}
    p = _portrait()
    src = read_image(p.path)
    eyes = np.asarray(_face(src).landmarks[:2]).astype(int)
    for paste in ("zone", "crop"):
        assert demo.run_demo(tmp_path / paste, RunOptions(paste=paste, mask_method="gan"), models=models).ok
        masked = read_image(tmp_path / paste / f"{p.name}_masked.png")
        changed = [np.abs(masked[y - 6:y + 6, x - 6:x + 6].astype(int) - src[y - 6:y + 6, x - 6:x + 6]).mean()
                   for x, y in eyes]
        if paste == "zone":
            assert max(changed) == 0, changed
        else:
            assert min(changed) > 3, changed
    with pytest.raises(ConfigError, match="paste must be one of auto, zone, crop, hole"):
        demo.run_demo(tmp_path / "bad", RunOptions(paste="face", mask_method="gan"), models=models)


# -------------------------------------------------------------------------------------------
# The demo masks as `cyclemask-run --mask` does: the template method by default


def _images_mask(tmp_path, image, *flags) -> np.ndarray:
    """What `cyclemask-run --images DIR --mask` writes for this image (as a lossless PNG)."""
    from cyclemask.image_files import write_image

    write_image(tmp_path / "in" / "portrait.png", image)
    r = run("--images", tmp_path / "in", "--out", tmp_path / "run_out", "--mask", *flags)
    assert r.exit_code == 0, r.output
    return read_image(tmp_path / "run_out" / "portrait.png")


def test_the_demo_masks_with_the_template_as_a_mask_run_does(tmp_path, bundle_path):
    """With the embedded models, the demo's masked portrait is, pixel for pixel, what
    `--images --mask` (its default method, the template warp) writes for the same portrait; the
    unmask model still runs, and a given unmask model needs no mask model beside it."""
    p = _portrait()
    src = read_image(p.path)
    report = demo.run_demo(tmp_path / "demo", RunOptions(backend="ort"))  # ort: no backend timing for the unmask pass
    assert report.ok, report.failures
    masked = read_image(tmp_path / "demo" / f"{p.name}_masked.png")
    np.testing.assert_array_equal(masked, _images_mask(tmp_path, src))
    assert (masked != src).any(axis=2).mean() > 0.02  # a mask, not the input untouched
    assert report.mask_method == "template" and "mask templates" in report.models["mask"]
    unmasked = read_image(tmp_path / "demo" / f"{p.name}_unmasked.png")
    assert not np.array_equal(unmasked, masked)
    own = demo.run_demo(tmp_path / "own", models={"unmask": bundle_path})
    assert own.ok and np.array_equal(read_image(tmp_path / "own" / f"{p.name}_masked.png"), masked)


def test_cli_demo_says_which_method_masked_and_keeps_the_generator_reachable(tmp_path, monkeypatch):
    monkeypatch.delenv("CYCLEMASK_FACE_DETECTOR", raising=False)
    p = _portrait()
    r = run("--demo", "--out", tmp_path / "template")
    assert r.exit_code == 0, r.output
    assert "masked:   with a mask template warped onto the face (--mask-method template, no model)" in r.output
    assert ("mask: mask template warped onto the landmarks; unmask: mask below the eyes erased and restored; "
            "found: grace_hopper 1") in r.output
    g = run("--demo", "--out", tmp_path / "gan", "--mask-method", "gan", "--backend", "ort")
    assert g.exit_code == 0, g.output
    assert "masked:   by the mask generator (--mask-method gan)" in g.output
    assert "mask.onnx" in g.output and "mask: mask zone pasted; unmask: mask below the eyes erased and restored" in g.output
    by_template = read_image(tmp_path / "template" / f"{p.name}_masked.png")
    by_gan = read_image(tmp_path / "gan" / f"{p.name}_masked.png")
    assert not np.array_equal(by_template, by_gan)
    # The generator's pass is what `--images --mask --mask-method gan` writes with the same graph.
    src = read_image(p.path)
    np.testing.assert_array_equal(by_gan, _images_mask(tmp_path, src, "--mask-method", "gan", "--backend", "ort"))


# -------------------------------------------------------------------------------------------
# The CLI: --demo and the default model, with the shipped assets


@pytest.mark.slow  # the shipped models end to end through the CLI (~5 s); test_run_demo_tiny_models runs the same demo fast
def test_cli_demo_with_shipped_models(tmp_path, monkeypatch):
    monkeypatch.delenv("CYCLEMASK_FACE_DETECTOR", raising=False)
    r = run("--demo", "--out", tmp_path / "demo_out")
    assert r.exit_code == 0, r.output
    assert "embedded demo generators" in r.output
    assert "face_detection_yunet_2023mar.onnx), mask: mask template warped onto the landmarks; unmask: mask below " \
           "the eyes erased and restored; found: grace_hopper 1" in r.output
    p = _portrait()
    for name in demo.output_names([p]):
        assert (tmp_path / "demo_out" / name).is_file(), name
    src = read_image(p.path)
    masked = read_image(tmp_path / "demo_out" / f"{p.name}_masked.png")
    assert masked.shape == src.shape and not np.array_equal(masked, src)
    # A second run without --overwrite refuses and says so.
    r2 = run("--demo", "--out", tmp_path / "demo_out")
    assert r2.exit_code == 1 and "--overwrite" in r2.output


def test_cli_demo_usage_errors(tmp_path):
    r = run("--demo")
    assert r.exit_code == 2 and "--demo needs --out" in r.output
    r = run("--demo", "--out", tmp_path / "o", "--images", tmp_path)
    assert r.exit_code == 2 and "--demo" in r.output and "--images" in r.output


def test_cli_without_model_uses_the_demo_generators(tmp_path):
    from cyclemask.image_files import write_image

    src = tmp_path / "faces"
    p = _portrait()
    image = read_image(p.path)
    write_image(src / "hopper.png", image[100:400, 150:400])
    r = run("--images", src, "--out", tmp_path / "default", "--aligned")
    assert r.exit_code == 0, r.output
    assert "embedded demo generators" in r.output
    explicit = run("--images", src, "--out", tmp_path / "explicit", "--aligned",
                   "--model", demo_model.assets_dir() / "mask.onnx")
    assert explicit.exit_code == 0, explicit.output
    a = read_image(tmp_path / "default" / "hopper.png")
    b = read_image(tmp_path / "explicit" / "hopper.png")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, image[100:400, 150:400])
