"""`cyclemask-eval`: model scoring (FID_AB / FID_BA / KID / paired PSNR-SSIM), figures, errors.

A tiny TorchScript feature network stands in for Inception here (the real one costs ~0.5 s per
image on CPU and is tested in test_metrics_fid.py); generators are tiny (ngf 8, 2 blocks).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cyclemask.checkpoint import save_generators
from cyclemask.config import GeneratorConfig
from cyclemask.errors import ConfigError, DataError, InputError
from cyclemask.image_files import read_image, write_image
from cyclemask.metrics import evaluate as ev
from cyclemask.metrics.cli import main as eval_cli
from cyclemask.metrics.fid import load_inception
from cyclemask.metrics.figures import changed_region, cycle_sheet, outline_sheet
from cyclemask.models import build_generator

SIZE = 32


@pytest.fixture(scope="module")
def generators():
    torch.manual_seed(0)
    return {d: build_generator(GeneratorConfig(ngf=8, n_blocks=2)).eval() for d in ("mask", "unmask")}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, generators) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "generators.pt"
    save_generators(path, generators, extra={"image_size": SIZE})
    return path


def faces(rng, n, tint):
    """Smooth random images; `tint` shifts the colour so the two domains differ."""
    import cv2

    out = []
    for _ in range(n):
        small = rng.integers(0, 200, (4, 4, 3)).astype(np.int16) + np.array(tint, np.int16)
        out.append(cv2.resize(np.clip(small, 0, 255).astype(np.uint8), (40, 40), interpolation=cv2.INTER_CUBIC))
    return out


@pytest.fixture
def data(tmp_path, rng) -> Path:
    root = tmp_path / "data"
    for split, tint in (("testA", (0, 0, 0)), ("testB", (50, 50, 50))):
        for i, im in enumerate(faces(rng, 6, tint)):
            write_image(root / split / f"{i}.png", im)
    return root


@pytest.fixture
def pairs(tmp_path, rng) -> Path:
    root = tmp_path / "pairs"
    for i, im in enumerate(faces(rng, 4, (0, 0, 0))):
        masked = im.copy()
        masked[24:, 8:32] = (230, 230, 240)  # a "mask" over the lower half
        write_image(root / "without_mask" / f"{i}.png", im)
        write_image(root / "with_mask" / f"{i}.png", masked)
    write_image(root / "without_mask" / "lonely.png", im)  # no partner: ignored
    return root


# --- library -------------------------------------------------------------------------------


def test_identity_translators_reproduce_the_reference(data, pairs, tiny_features_path):
    """Identity generators: FID_AB is then exactly FID(testA, testB), and paired scores equal
    the identity baseline: checks the wiring of which set is compared with which."""
    a, b = ev.load_folder(data / "testA"), ev.load_folder(data / "testB")
    cache = ev.FeatureCache(load_inception(tiny_features_path))
    ident = {"mask": lambda x: x.copy(), "unmask": lambda x: x.copy()}
    p = ev.load_pairs(pairs, SIZE, detector=None)
    r = ev.evaluate_translators(ident, SIZE, a, b, cache, p, ev.EvalOptions(kid_subsets=5))
    assert r["AB"]["fid"] == pytest.approx(r["reference"]["FID_A_vs_B"], rel=1e-9)
    assert r["BA"]["fid"] == pytest.approx(r["reference"]["FID_A_vs_B"], rel=1e-9)
    assert r["paired"]["unmask"] == r["paired"]["identity"]["unmask"]
    assert r["paired"]["n"] == 4 and r["AB"]["n_fake"] == 6


def test_perfect_translators_score_perfectly(data, pairs, tiny_features_path):
    a, b = ev.load_folder(data / "testA"), ev.load_folder(data / "testB")
    cache = ev.FeatureCache(load_inception(tiny_features_path))
    p = ev.load_pairs(pairs, SIZE, detector=None)
    lookup_b = {ev.fit_size(x, SIZE).tobytes(): ev.fit_size(y, SIZE) for x, y in zip(a.images, b.images)}
    lookup_b.update({u.tobytes(): m for u, m in zip(p.unmasked, p.masked)})
    lookup_a = {ev.fit_size(y, SIZE).tobytes(): ev.fit_size(x, SIZE) for x, y in zip(a.images, b.images)}
    lookup_a.update({m.tobytes(): u for u, m in zip(p.unmasked, p.masked)})
    oracle = {"mask": lambda x: np.stack([lookup_b[i.tobytes()] for i in x]),
              "unmask": lambda x: np.stack([lookup_a[i.tobytes()] for i in x])}
    r = ev.evaluate_translators(oracle, SIZE, a, b, cache, p, ev.EvalOptions(kid_subsets=5))
    assert abs(r["AB"]["fid"]) < 1e-6 and abs(r["BA"]["fid"]) < 1e-6
    assert r["paired"]["unmask"]["psnr"] == float("inf") and r["paired"]["mask"]["ssim"] == pytest.approx(1.0)
    assert r["reference"]["FID_A_vs_B"] > 1e-3


def test_pairs_cropped_with_one_box(tmp_path, face_detector_path):
    """The box found on the unmasked photo cuts both photos: the crops stay aligned."""
    import matplotlib
    from cyclemask.face_detect import FaceDetector

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    img = read_image(p)
    masked = img.copy()
    masked[330:420, 190:350] = (200, 220, 240)
    write_image(tmp_path / "pairs" / "without_mask" / "gh.png", img)
    write_image(tmp_path / "pairs" / "with_mask" / "gh.png", masked)
    write_image(tmp_path / "pairs" / "without_mask" / "noise.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    write_image(tmp_path / "pairs" / "with_mask" / "noise.png", np.zeros((64, 64, 3), np.uint8))
    s = ev.load_pairs(tmp_path / "pairs", 64, FaceDetector(face_detector_path))
    assert s.names == ["gh.png"]
    assert [(r["name"], r["reason"]) for r in s.rejected] == [("noise.png", "no_face")]
    diff = np.abs(s.unmasked[0].astype(int) - s.masked[0].astype(int)).sum(axis=2)
    assert diff[:20].max() == 0  # the top of the face is the same in both crops
    assert diff[40:].max() > 0
    zone = s.zones[0]  # the mask zone: the lower half of the face, found on the unmasked photo
    assert zone.shape == (64, 64) and not zone[:20].any() and zone[40:].any()


def test_pair_errors(tmp_path):
    (tmp_path / "p" / "without_mask").mkdir(parents=True)
    with pytest.raises(DataError, match=r"with_mask/ is missing"):
        ev.load_pairs(tmp_path / "p", 32, None)
    (tmp_path / "p" / "with_mask").mkdir()
    write_image(tmp_path / "p" / "without_mask" / "a.png", np.zeros((20, 20, 3), np.uint8))
    write_image(tmp_path / "p" / "with_mask" / "b.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(DataError, match="no file name is in both"):
        ev.load_pairs(tmp_path / "p", 32, None)
    write_image(tmp_path / "p" / "with_mask" / "a.png", np.zeros((21, 20, 3), np.uint8))
    with pytest.raises(DataError, match=r"no usable pair \(rejected: 1\)"):
        ev.load_pairs(tmp_path / "p", 32, None)


def test_unreadable_test_images_are_skipped_and_recorded(data):
    (data / "testA" / "broken.png").write_bytes(b"\x89PNG broken")
    s = ev.load_folder(data / "testA")
    assert len(s.images) == 6 and len(s.skipped) == 1 and "broken.png" in s.skipped[0]["error"]
    only_broken = data / "broken_only"
    only_broken.mkdir()
    (only_broken / "x.jpg").write_bytes(b"\xff\xd8 nope")
    with pytest.raises(DataError, match="broken_only: no readable images"):
        ev.load_folder(only_broken)
    with pytest.raises(DataError, match="not a folder"):
        ev.load_folder(data / "nope")


@pytest.mark.slow  # two full evaluations (~7 s)
def test_torch_and_onnx_models_score_alike(tmp_path, data, generators, bundle, tiny_features_path):
    from cyclemask.export.onnx import export_onnx

    graph = export_onnx(generators["mask"], tmp_path / "mask.onnx", image_size=SIZE, metadata={"direction": "mask"})
    a, b = ev.load_folder(data / "testA"), ev.load_folder(data / "testB")
    cache = ev.FeatureCache(load_inception(tiny_features_path))
    with ev.open_models(bundle, None) as m:
        assert m.size == SIZE and m.info["mask"]["backend"].startswith("torch") and set(m.backends) == {"mask"}
        r_torch = ev.evaluate_translators(m.translators(), m.size, a, b, cache, None, ev.EvalOptions(kid_subsets=3))
    with ev.open_models(graph, None) as m:
        # auto on a CPU machine runs a graph on OpenVINO or ONNX Runtime (engine.backends).
        assert m.info["mask"]["backend"].startswith(("ort", "openvino"))
        r_ort = ev.evaluate_translators(m.translators(), m.size, a, b, cache, None, ev.EvalOptions(kid_subsets=3))
    assert "BA" not in r_ort
    assert r_ort["AB"]["fid"] == pytest.approx(r_torch["AB"]["fid"], rel=1e-3, abs=1e-4)


def test_open_models_errors(tmp_path, bundle, generators):
    with pytest.raises(ConfigError, match="no model given"):
        ev.open_models(None, None)
    other = tmp_path / "other.pt"
    save_generators(other, {"unmask": generators["unmask"]}, extra={"image_size": 48})
    with pytest.raises(ConfigError, match=r"different image sizes \(\{'mask': 32, 'unmask': 48\}\)"):
        ev.open_models(bundle, other)


def test_markdown_report(data, tiny_features_path):
    a, b = ev.load_folder(data / "testA"), ev.load_folder(data / "testB")
    cache = ev.FeatureCache(load_inception(tiny_features_path))
    r = ev.evaluate_translators({"mask": lambda x: 255 - x}, SIZE, a, b, cache, None, ev.EvalOptions(kid_subsets=2))
    md = ev.to_markdown(r)
    assert f"| FID | {r['AB']['fid']:.2f} | - |" in md and "Reference without translation" in md
    with pytest.raises(ConfigError, match="keyed by mask, unmask"):
        ev.evaluate_translators({"forward": lambda x: x}, SIZE, a, b, cache)


# --- figures -------------------------------------------------------------------------------


def test_outline_surrounds_the_changed_square(rng):
    base = np.full((64, 64, 3), 120, np.uint8)

    def paint(batch):
        out = batch.copy()
        out[:, 32:56, 16:48] = (250, 250, 250)
        return out

    sheet = outline_sheet(paint, 64, [base], threshold=30, tile=64)
    region = changed_region(base, paint(base[None])[0], 30)
    ys, xs = np.nonzero(region)
    assert 30 <= ys.min() <= 33 and 54 <= ys.max() <= 57 and 14 <= xs.min() <= 17 and 46 <= xs.max() <= 49
    red = (sheet[..., 0] > 200) & (sheet[..., 1] < 120)
    assert red.sum() > 50  # contours drawn (on both tiles)
    unchanged = changed_region(base, base, 30)
    assert not unchanged.any()


def test_cycle_sheet_layout(generators):
    from cyclemask.image_tensors import eager_translate

    tr = {d: (lambda x, g=g: eager_translate(g, x)) for d, g in generators.items()}
    rng = np.random.default_rng(0)
    a = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(2)]
    b = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)]
    sheet = cycle_sheet(tr, SIZE, a, b, tile=48)
    # 3 columns of 48 px with 4 px gaps; a 22 px title strip, then 3 rows of 48 + 4.
    assert sheet.shape == (22 + 3 * (48 + 4), 4 * 4 + 3 * 48, 3)
    with pytest.raises(ConfigError, match="needs both directions; the 'unmask' generator is missing"):
        cycle_sheet({"mask": tr["mask"]}, SIZE, a, b)
    with pytest.raises(InputError, match="at least one input image"):
        cycle_sheet(tr, SIZE, [], [])


# --- CLI -----------------------------------------------------------------------------------


def test_cli_model_report(tmp_path, data, pairs, bundle, tiny_features_path):
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    r = CliRunner().invoke(eval_cli, ["model", "--model", str(bundle), "--data", str(data), "--pairs", str(pairs),
                                      "--pairs-aligned", "--inception", str(tiny_features_path), "--kid-subsets", "3",
                                      "--feature-device", "cpu", "--out-json", str(out_json), "--out-md", str(out_md)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out_json.read_text())
    assert set(rep) >= {"AB", "BA", "paired", "reference", "models", "inception"}
    assert rep["inception"]["standard"] is False and rep["models"]["mask"]["path"] == str(bundle)
    assert rep["paired"]["n"] == 4 and set(rep["paired"]) >= {"mask", "unmask", "identity"}
    md = out_md.read_text()
    assert "| FID |" in md and "NON-STANDARD" in md and "Paired photos (4 pairs" in md


def test_cli_fid_between_folders(tmp_path, data, tiny_features_path):
    r = CliRunner().invoke(eval_cli, ["fid", str(data / "testA"), str(data / "testA"), "--inception",
                                      str(tiny_features_path), "--json", str(tmp_path / "f.json"), "--kid-subsets", "2"])
    assert r.exit_code == 0, r.output
    assert "FID 0.000" in r.output and "non-standard feature network" in r.output
    assert abs(json.loads((tmp_path / "f.json").read_text())["fid"]) < 1e-6


def test_cli_figures(tmp_path, data, bundle):
    r = CliRunner().invoke(eval_cli, ["figures", "cycle", "--model", str(bundle), "--data", str(data), "--n", "2",
                                      "--out", str(tmp_path / "cycle.png")])
    assert r.exit_code == 0, r.output
    assert read_image(tmp_path / "cycle.png").shape == (22 + 4 * (128 + 4), 4 * 4 + 3 * 128, 3)
    r = CliRunner().invoke(eval_cli, ["figures", "outline", "--model", str(bundle), "--direction", "unmask",
                                      "--images", str(data / "testB"), "--n", "3", "--out", str(tmp_path / "o.png")])
    assert r.exit_code == 0, r.output
    assert read_image(tmp_path / "o.png").shape == (22 + 3 * (128 + 4), 3 * 4 + 2 * 128, 3)


def test_cli_errors(tmp_path, data, bundle):
    runner = CliRunner()
    r = runner.invoke(eval_cli, ["model", "--data", str(data)])
    assert r.exit_code == 1 and "Error: no model given" in r.output
    r = runner.invoke(eval_cli, ["model", "--model", str(bundle), "--data", str(tmp_path / "none")])
    assert r.exit_code == 1 and "testA: not a folder" in r.output
    r = runner.invoke(eval_cli, ["model", "--model", str(tmp_path / "missing.pt"), "--data", str(data)])
    assert r.exit_code == 1 and "missing.pt" in r.output
    r = runner.invoke(eval_cli, ["figures", "cycle", "--model", str(bundle), "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "no inputs: pass --data" in r.output
    r = runner.invoke(eval_cli, ["fid", str(data / "testA"), str(data / "testB"), "--feature-device", "cuda:3"])
    if not torch.cuda.is_available():
        assert r.exit_code == 1 and "torch sees no CUDA GPU" in r.output
    r = runner.invoke(eval_cli, ["figures", "outline", "--model", str(bundle), "--images", str(data / "testA"),
                                 "--threshold", "0", "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "threshold must be > 0" in r.output
    assert not (tmp_path / "x.png").exists()
