"""Input checks of the study and the re-encoding that makes every face look alike on the wire."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from study_helpers import make_folders, pattern, write

from cyclemask.errors import ConfigError, InputError
from cyclemask.study import catalog as cat
from cyclemask.study.catalog import build_catalog, cached_image_path
from cyclemask.study.config import StudyConfig


def _decode(path):
    import cv2

    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_every_image_is_reencoded_alike_without_metadata(tmp_path, study_config):
    from PIL import Image, PngImagePlugin

    real, gen = study_config.real, study_config.generated
    # A phone JPEG with EXIF (camera, GPS-like text, orientation 6) and a PNG with a text chunk.
    half = np.zeros((200, 300, 3), np.uint8)
    half[:, :150] = (220, 30, 30)   # left half red
    half[:, 150:] = (30, 30, 220)   # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6                # display rotated 90 degrees clockwise: left becomes top
    exif[0x010F] = "SecretCam"
    Image.fromarray(half).save(real / "phone.jpg", exif=exif.tobytes(), quality=95)
    # Upside down and square: turned once, not twice (a 180-degree turn applied twice is none).
    square = np.zeros((240, 240, 3), np.uint8)
    square[:120] = (220, 30, 30)    # top half red, as shown
    flip = Image.Exif()
    flip[0x0112] = 3
    Image.fromarray(square[::-1].copy()).save(real / "upside.jpg", exif=flip.tobytes(), quality=95)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "cyclemask-generator-v1")
    Image.fromarray(pattern(7, 96, 96)).save(gen / "tagged.png", pnginfo=info)
    write(gen / "big.jpg", pattern(8, 1024, 768))

    c = build_catalog(study_config)
    assert c.count("real") == 10 and c.count("generated") == 10
    for im in c.images:
        data = cached_image_path(study_config.image_dir, im.sha256).read_bytes()
        assert data[:3] == b"\xff\xd8\xff"                      # JPEG whatever the source format
        for leak in (b"Exif", b"SecretCam", b"cyclemask-generator", b"Software", b"ICC_PROFILE", b"tEXt"):
            assert leak not in data, (im.name, leak)
        assert _decode(cached_image_path(study_config.image_dir, im.sha256)).shape == (256, 256, 3)
    phone = next(im for im in c.images if im.name == "phone.jpg")
    shown = _decode(cached_image_path(study_config.image_dir, phone.sha256)).astype(int)
    top, bottom = shown[:100].mean(axis=(0, 1)), shown[-100:].mean(axis=(0, 1))
    assert top[0] > 180 and top[2] < 80, "EXIF orientation 6 not applied: the left (red) half should be on top"
    assert bottom[2] > 180 and bottom[0] < 80
    upside = next(im for im in c.images if im.name == "upside.jpg")
    shown = _decode(cached_image_path(study_config.image_dir, upside.sha256)).astype(int)
    assert shown[:100, :, 0].mean() > 180 and shown[-100:, :, 0].mean() < 80, "orientation 3 applied twice or not at all"


def test_display_image_is_a_centred_square():
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = 255
    out = cat.display_image(img, 64)
    assert out.shape == (64, 64, 3) and out.min() == 255   # only the white centre is left
    assert cat.display_image(np.zeros((40, 40, 3), np.uint8), 64).shape == (64, 64, 3)


def test_missing_and_empty_folders_are_refused(tmp_path, folders):
    real, gen = folders
    base = dict(study_dir=tmp_path / "s", face_check=False)
    with pytest.raises(InputError, match=r"nowhere: no such folder \(the generated images\)"):
        build_catalog(StudyConfig(real=real, generated=tmp_path / "nowhere", **base))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match=r"empty: no images \(the real images; looked for .jpg"):
        build_catalog(StudyConfig(real=tmp_path / "empty", generated=gen, **base))
    with pytest.raises(InputError, match="not a folder"):
        build_catalog(StudyConfig(real=real / "r00.jpg", generated=gen, **base))
    with pytest.raises(ConfigError, match="the same folder"):
        StudyConfig(real=real, generated=real, **base)


def test_unreadable_images_are_listed_then_skipped_on_request(study_config):
    gen = study_config.generated
    (gen / "broken.png").write_bytes(b"this is not a png")
    good = (study_config.real / "r00.jpg").read_bytes()
    (study_config.real / "cut.jpg").write_bytes(good[: len(good) // 2])
    (gen / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError) as ei:
        build_catalog(study_config)
    msg = str(ei.value)
    assert msg.startswith("3 problems with the study images") and "--skip-bad" in msg
    assert "broken.png: not a decodable image" in msg
    assert "cut.jpg: truncated JPEG" in msg
    assert "empty.jpg: empty file" in msg
    c = build_catalog(dataclasses.replace(study_config, skip_bad=True))
    assert c.count("real") == 8 and c.count("generated") == 8 and len(c.skipped) == 3
    assert not any(im.name in ("broken.png", "cut.jpg", "empty.jpg") for im in c.images)


def test_duplicates_across_sets_are_refused(study_config):
    import cv2

    real, gen = study_config.real, study_config.generated
    shutil.copy(real / "r01.jpg", gen / "copy_of_r01.jpg")                       # identical bytes
    src = cv2.imread(str(real / "r02.jpg"))
    small = cv2.resize(src, (src.shape[1] * 3 // 4, src.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(gen / "resized_r02.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 60])  # re-encoded, rescaled
    cv2.imwrite(str(gen / "mirror_r03.png"), cv2.imread(str(real / "r03.jpg"))[:, ::-1])  # mirrored
    with pytest.raises(InputError) as ei:
        build_catalog(study_config)
    msg = str(ei.value)
    assert msg.startswith("3 problems")
    assert "r01.jpg (real) and " in msg and "copy_of_r01.jpg (generated): the same file in both sets" in msg
    assert "r02.jpg (real) and " in msg and "resized_r02.jpg (generated): look like the same photo" in msg
    assert "mirror_r03.png (generated): look like the same photo" in msg
    # Both sides of a duplicate are left out: which one carries the wrong label is unknown.
    c = build_catalog(dataclasses.replace(study_config, skip_bad=True))
    names = {im.name for im in c.images}
    assert {"r01.jpg", "copy_of_r01.jpg", "r02.jpg", "r03.jpg", "resized_r02.jpg", "mirror_r03.png"}.isdisjoint(names)
    assert c.count("real") == 5 and c.count("generated") == 8
    # The near-duplicate check can be turned off; identical bytes are still refused.
    with pytest.raises(InputError, match=r"^1 problem with .*\n.*same file in both sets"):
        build_catalog(dataclasses.replace(study_config, dup_threshold=0))


def test_copies_within_one_folder_are_shown_once(study_config):
    shutil.copy(study_config.real / "r04.jpg", study_config.real / "again.jpg")
    c = build_catalog(study_config)
    assert c.count("real") == 8
    assert any("a copy of" in w and "identical bytes" in w for w in c.warnings)


def test_distinct_images_are_not_near_duplicates(tmp_path):
    real, gen = make_folders(tmp_path / "many", 40, 40)
    c = build_catalog(StudyConfig(real=real, generated=gen, study_dir=tmp_path / "s", face_check=False))
    assert len(c.images) == 80 and not c.warnings


def test_restart_decodes_nothing_already_cached(study_config, monkeypatch):
    c1 = build_catalog(study_config)
    known = {im.sha256: {"dhash": im.dhash, "dhash_mirror": im.dhash_mirror, "faces": im.faces} for im in c1.images}

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(cat, "read_image", no_decoding)
    c2 = build_catalog(study_config, known)
    assert [(im.sha256, im.dhash) for im in c2.images] == [(im.sha256, im.dhash) for im in c1.images]
    cached_image_path(study_config.image_dir, c1.images[0].sha256).unlink()   # a lost cache file is rebuilt
    monkeypatch.undo()
    build_catalog(study_config, known)
    assert cached_image_path(study_config.image_dir, c1.images[0].sha256).is_file()


def test_face_check_skipped_with_a_note_when_no_detector(study_config, monkeypatch):
    import cyclemask.face_detect

    def no_model(model_path=None, **kw):
        # What FaceDetector raises where no model is given or installed.
        raise ConfigError(f"no face detector model given: pass --detector, or set the {cyclemask.face_detect.DETECTOR_ENV} "
                          "environment variable to its path")

    monkeypatch.setattr(cyclemask.face_detect, "FaceDetector", no_model)
    c = build_catalog(dataclasses.replace(study_config, face_check=True))
    assert c.face_check.startswith("face check skipped: no face detector model given")
    assert cyclemask.face_detect.DETECTOR_ENV in c.face_check
    assert all(im.faces is None for im in c.images) and len(c.images) == 16
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="nope.onnx.*no such file"):  # a detector asked for must exist
        build_catalog(dataclasses.replace(study_config, face_check=True, detector=study_config.study_dir / "nope.onnx"))


@pytest.mark.shared
def test_face_check_refuses_non_faces(tmp_path, shared_data, face_detector_path):
    faces = sorted((shared_data / "faces" / "observations_pairs" / "without_mask").glob("*.jpg"))[:6]
    masked = sorted((shared_data / "faces" / "cfmd" / "with_mask").glob("*.jpg"))[:6]
    real, gen = tmp_path / "real", tmp_path / "gen"
    real.mkdir()
    gen.mkdir()
    for f in faces:
        shutil.copy(f, real / f.name)
    for f in masked:
        shutil.copy(f, gen / f.name)
    write(gen / "landscape.png", pattern(99, 200, 300))
    config = StudyConfig(real=real, generated=gen, study_dir=tmp_path / "s", detector=face_detector_path)
    with pytest.raises(InputError) as ei:
        build_catalog(config)
    lines = str(ei.value).splitlines()[1:]
    assert any("landscape.png: no face found (generated)" in line for line in lines)
    c = build_catalog(dataclasses.replace(config, skip_bad=True))
    kept = {im.name for im in c.images}
    assert "landscape.png" not in kept
    assert c.face_check == "faces checked with YuNet (face_detection_yunet_2023mar.onnx)"
    # Photos the detector misses are listed by name: every skipped line names a file.
    assert all(": no face found" in s for s in c.skipped)
    assert len(kept) + len(c.skipped) == 13 and len(kept) >= 9
