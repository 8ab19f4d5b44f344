"""The masked / unmasked classifier (task metric) and the mask-zone scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.errors import ConfigError, InputError
from cyclemask.image_files import list_images, read_image, write_image
from cyclemask.metrics import evaluate as ev
from cyclemask.metrics.classifier import DEFAULT_PATH, MaskClassifier
from cyclemask.metrics.cli import main as eval_cli
from cyclemask.metrics.quality import psnr, psnr_in, ssim


def _faces(rng, n, masked):
    import cv2

    out = []
    for _ in range(n):
        small = rng.integers(60, 200, (4, 4, 3)).astype(np.uint8)
        img = cv2.resize(small, (72, 72), interpolation=cv2.INTER_CUBIC)
        if masked:  # a light block over the lower half, as a mask would be
            img[40:68, 10:62] = rng.integers(200, 255, 3)
        out.append(img)
    return out


def test_train_classifier_cli_writes_a_verified_graph_that_separates_the_classes(tmp_path):
    rng = np.random.default_rng(0)
    for cls, masked in (("plain", False), ("masked", True)):
        for i, im in enumerate(_faces(rng, 40, masked)):
            write_image(tmp_path / cls / f"{i}.png", im)
    r = CliRunner().invoke(eval_cli, ["train-classifier", "--unmasked", str(tmp_path / "plain"), "--masked",
                                      str(tmp_path / "masked"), "--out", str(tmp_path / "clf"), "--epochs", "24"])
    assert r.exit_code == 0, r.output
    assert "held-out accuracy" in r.output
    record = json.loads((tmp_path / "clf" / "mask_classifier.json").read_text())
    assert record["onnx_vs_torch_max_abs"] <= 1e-4 and record["counts"]["val"] == 8
    clf = MaskClassifier(tmp_path / "clf" / "mask_classifier.onnx")
    fresh = np.random.default_rng(9)
    assert clf.rates(_faces(fresh, 20, True), want_masked=True)["success"] >= 0.8
    assert clf.rates(_faces(fresh, 20, False), want_masked=False)["success"] >= 0.8


def test_classifier_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        MaskClassifier(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(ConfigError, match="cannot load"):
        MaskClassifier(tmp_path / "bad.onnx")


@pytest.mark.shared
def test_shipped_classifier_tells_real_masked_from_unmasked_photos(shared_data):
    """On photos it never trained on in this form (whole cfmd photos, not crops of the split)."""
    clf = MaskClassifier()
    assert clf.path == DEFAULT_PATH
    cfmd = shared_data / "faces" / "cfmd"
    masked = [read_image(p) for p in list_images(cfmd / "with_mask")[::40]]
    plain = [read_image(p) for p in list_images(cfmd / "without_mask")[::40]]
    assert clf.rates(masked, want_masked=True)["success"] >= 0.8
    assert clf.rates(plain, want_masked=False)["success"] >= 0.8


def test_region_scores():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = a.copy()
    b[16:] = 255 - b[16:]  # only the lower half differs
    lower = np.zeros((32, 32), bool)
    lower[16:] = True
    assert psnr_in(a, b, ~lower) == float("inf")
    assert psnr_in(a, b, lower) < psnr(a, b) < float("inf")
    assert ssim(a, b, region=~lower) > ssim(a, b) > ssim(a, b, region=lower)
    with pytest.raises(InputError, match="non-empty boolean mask"):
        psnr_in(a, b, np.zeros((32, 32), bool))


def test_zone_in_crop_covers_nose_mouth_chin_not_eyes():
    lm = [(60, 60), (100, 60), (80, 85), (65, 110), (95, 110)]
    box = (20, 10, 140, 130)  # a 120 px square crop, scored at 64 px
    zone = ev.zone_in_crop(lm, box, 64)
    s = 64 / 120

    def at(x, y):
        return zone[int((y - box[1]) * s), int((x - box[0]) * s)]

    assert at(80, 85) and at(65, 110) and at(95, 110) and at(80, 125)  # nose, mouth, chin
    assert not at(60, 60) and not at(100, 60)  # eyes


def test_success_is_the_share_called_what_was_wanted():
    # A rate that counted every face (or every face the graph saw) as a success would make
    # an untranslated input look like a perfect translation.
    class Given(MaskClassifier):
        def __init__(self, p):
            self.p = np.asarray(p, np.float32)

        def p_masked(self, images, batch_size=64):
            return self.p[:len(images)]

    clf = Given([0.9, 0.5, 0.49, 0.1])  # 0.5 counts as masked
    images = [np.zeros((8, 8, 3), np.uint8)] * 4
    assert clf.rates(images, want_masked=True) == {"success": 0.5, "n": 4, "called": "masked"}
    assert clf.rates(images, want_masked=False) == {"success": 0.5, "n": 4, "called": "unmasked"}
    assert clf.rates(images[:1], want_masked=False)["success"] == 0.0
    assert math.isnan(clf.rates([], want_masked=True)["success"])


def test_success_rates_in_the_report(tmp_path, tiny_features_path):
    """An identity 'mask' translator succeeds exactly as often as testA is called masked."""
    from cyclemask.metrics.fid import load_inception

    rng = np.random.default_rng(1)
    for split, masked in (("testA", False), ("testB", True)):
        for i, im in enumerate(_faces(rng, 6, masked)):
            write_image(tmp_path / split / f"{i}.png", im)

    class Fixed(MaskClassifier):
        """Calls an image masked when its lower half is brighter than its top. Only the graph is
        replaced: the success rates are MaskClassifier's own."""

        def __init__(self):
            pass

        def p_masked(self, images, batch_size=64):
            return np.array([0.9 if im[40:].mean() > im[:30].mean() + 20 else 0.1 for im in images])

    a, b = ev.load_folder(tmp_path / "testA"), ev.load_folder(tmp_path / "testB")
    ident = {"mask": lambda x: x.copy(), "unmask": lambda x: x.copy()}
    r = ev.evaluate_translators(ident, 72, a, b, ev.FeatureCache(load_inception(tiny_features_path)),
                                options=ev.EvalOptions(kid_subsets=3), classifier=Fixed())
    sc = r["success"]
    assert sc["mask"]["success"] == pytest.approx(1.0 - sc["reference"]["testA_called_unmasked"]["success"])
    assert sc["unmask"]["success"] == pytest.approx(1.0 - sc["reference"]["testB_called_masked"]["success"])
    assert sc["mask"]["success"] == 0.0 and sc["unmask"]["success"] == 0.0
    assert "Task success" in ev.to_markdown(r)


def test_face_aware_photo_translator_changes_only_the_mask_zone():
    """The product path eval scores: a model that inverts every crop changes the lower face only."""
    import matplotlib

    from cyclemask.metrics.cli import _photo_translators

    photo = read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")

    class Invert:
        def infer(self, batch):
            return 255 - batch

    class Models:
        size = 64
        backends = {"mask": Invert()}

    out = _photo_translators(Models(), None)["mask"](photo)
    changed = np.abs(out.astype(int) - photo.astype(int)).max(axis=2) > 0
    rows = np.nonzero(changed.any(axis=1))[0]
    assert changed.sum() > 2000  # the zone was pasted
    assert rows.min() > 200  # below the eyes (at y ~195 in this photo): the eyes keep their pixels
    assert not changed[:200].any() and not changed[:, :100].any()


def test_face_aware_photo_translators_paste_an_erase_restore_graph_as_asked():
    import matplotlib

    from cyclemask.metrics.cli import _photo_translators

    photo = read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")

    class Invert:
        metadata = {"method": "gan"}

        def infer(self, batch):
            return 255 - batch

    class Restore(Invert):
        metadata = {"method": "restore"}

    class Models:
        size = 64
        backends = {"mask": Invert(), "unmask": Restore()}

    photos = _photo_translators(Models(), None, "hole")
    assert (photos["mask"].paste, photos["unmask"].paste) == ("zone", "hole")  # a generator keeps the zone
    changed = np.abs(photos["unmask"](photo).astype(int) - photo.astype(int)).max(axis=2) > 0
    assert changed[:150].any()  # the whole crop changed: the hole paste takes all of it, eyes included
    below = _photo_translators(Models(), None, "hole-below-eyes")["unmask"]
    changed = np.abs(below(photo).astype(int) - photo.astype(int)).max(axis=2) > 0
    assert changed.sum() > 2000 and not changed[:200].any()


def test_face_aware_scores_in_the_report(tmp_path, tiny_features_path):
    import matplotlib

    from cyclemask.metrics.fid import load_inception

    photo = read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    for split in ("testA", "testB"):
        for i in range(3):
            write_image(tmp_path / split / f"{i}.png", photo[i * 10:, i * 5:])
    a, b = ev.load_folder(tmp_path / "testA"), ev.load_folder(tmp_path / "testB")
    ident = {"mask": lambda x: x.copy(), "unmask": lambda x: x.copy()}
    photos = {"mask": lambda p: p.copy(), "unmask": lambda p: p.copy()}
    r = ev.evaluate_translators(ident, 64, a, b, ev.FeatureCache(load_inception(tiny_features_path)),
                                options=ev.EvalOptions(kid_subsets=3), photo_translators=photos)
    fa = r["face_aware"]
    # Photos that come back as they were score exactly as the untranslated sets.
    assert fa["AB"]["fid"] == pytest.approx(r["reference"]["FID_A_vs_B"], rel=1e-9) and fa["BA"]["n_fake"] == 3
    assert "Face-aware, as cyclemask-run gives it" in ev.to_markdown(r)
    r["face_aware"]["paste"] = {"AB": "zone", "BA": "hole-below-eyes"}
    assert "paste back: AB zone, BA hole-below-eyes" in ev.to_markdown(r)
