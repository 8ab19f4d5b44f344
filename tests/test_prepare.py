"""`cyclemask-data prepare`: filtering, duplicates, split, manifest, idempotent re-runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.errors import ConfigError, DataError
from cyclemask.face_detect import DETECTOR_ENV
from cyclemask.image_files import read_image, write_image
from cyclemask.train import prepare as prep
from cyclemask.train.data_cli import main as data_cli
from cyclemask.train.prepare import PrepareConfig, prepare_dataset


def blobs(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A smooth random image: distinct from others at hash level, stable under small changes."""
    import cv2

    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def make_folder(folder: Path, images: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        write_image(folder / name, img)
    return folder


@pytest.fixture
def raw(tmp_path, rng):
    a = make_folder(tmp_path / "raw" / "unmasked", {f"a{i:02d}.png": blobs(rng) for i in range(12)})
    b = make_folder(tmp_path / "raw" / "masked", {f"b{i:02d}.png": blobs(rng) for i in range(10)})
    (b / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (b / "empty.png").write_bytes(b"")
    (b / "notes.txt").write_text("not an image: ignored")
    return a, b


def config(a, b, out, **kw) -> PrepareConfig:
    kw.setdefault("size", 32)
    kw.setdefault("detect", False)
    kw.setdefault("min_face", 16)
    kw.setdefault("test_count", 2)
    return PrepareConfig(sources_a=(str(a),) if isinstance(a, Path) else a,
                         sources_b=(str(b),) if isinstance(b, Path) else b, out=str(out), **kw)


def split_files(out: Path) -> dict[str, list[str]]:
    return {s: sorted(p.name for p in (out / s).iterdir()) if (out / s).is_dir() else [] for s in prep.SPLITS}


def test_builds_splits_and_manifest(raw, tmp_path):
    a, b = raw
    out = tmp_path / "data"
    res = prepare_dataset(config(a, b, out))
    files = split_files(out)
    assert len(files["testA"]) == 2 and len(files["trainA"]) == 10
    assert len(files["testB"]) == 2 and len(files["trainB"]) == 8
    img = read_image(out / "trainA" / files["trainA"][0])
    assert img.shape == (32, 32, 3)
    m = json.loads((out / "manifest.json").read_text())
    assert m == res.manifest and m["status"] == "complete"
    assert m["counts"]["A"] == {"found": 12, "rejected": {}, "rejected_total": 0, "train": 10, "test": 2}
    assert m["counts"]["B"]["found"] == 12 and m["counts"]["B"]["rejected"] == {"unreadable": 2}
    reasons = {Path(r["source"]).name: (r["reason"], r["detail"]) for r in m["rejected"]}
    assert reasons["corrupt.jpg"][0] == "unreadable" and "corrupt.jpg" in reasons["corrupt.jpg"][1]
    assert reasons["empty.png"] == ("unreadable", f"{b / 'empty.png'}: empty file")
    # Every output is listed with its source and hash; nothing else is in the folders.
    listed = {(f["split"], f["name"]) for f in m["files"]}
    assert listed == {(s, n) for s, names in files.items() for n in names}
    assert all(f["source"].startswith(str(tmp_path)) and len(f["sha256"]) == 64 for f in m["files"])
    assert not list(out.rglob("*.tmp"))


def test_duplicates_dropped_across_sources_and_splits(tmp_path, rng):
    import cv2

    base = {f"p{i}.png": blobs(rng) for i in range(8)}
    a1 = make_folder(tmp_path / "src1", base)
    p0, p1, p2 = base["p0.png"], base["p1.png"], base["p2.png"]
    a2 = make_folder(tmp_path / "src2", {
        "p0.png": p0,  # identical file bytes
        "brighter.png": np.clip(p1.astype(int) + 12, 0, 255).astype(np.uint8),
        "mirrored.png": p2[:, ::-1].copy(),
        "rescaled.png": cv2.resize(cv2.resize(p0, (96, 96)), (48, 48), interpolation=cv2.INTER_AREA),
        "new.png": blobs(rng),
    })
    b = make_folder(tmp_path / "b", {"p0.png": p0, **{f"q{i}.png": blobs(rng) for i in range(4)}})
    m = prepare_dataset(config((str(a1), str(a2)), b, tmp_path / "out", test_count=3)).manifest
    rej = {Path(r["source"]).name: r for r in m["rejected"] if r["domain"] == "A"}
    assert rej["p0.png"]["reason"] == "duplicate" and str(a1 / "p0.png") in rej["p0.png"]["detail"]
    for name, twin in (("brighter.png", "p1.png"), ("mirrored.png", "p2.png"), ("rescaled.png", "p0.png")):
        assert rej[name]["reason"] == "near_duplicate", name
        assert str(a1 / twin) in rej[name]["detail"]
    assert m["counts"]["A"]["train"] + m["counts"]["A"]["test"] == 9  # 8 + new.png
    # Domains are deduplicated separately: the same photo may be in A and B (paired data sets).
    assert m["counts"]["B"]["rejected_total"] == 0


def test_holdout_images_never_reach_the_output(tmp_path, rng):
    imgs = {f"p{i}.png": blobs(rng) for i in range(6)}
    a = make_folder(tmp_path / "a", imgs)
    b = make_folder(tmp_path / "b", {f"q{i}.png": blobs(rng) for i in range(5)})
    hold = make_folder(tmp_path / "eval", {"x.png": imgs["p3.png"], "y.png": np.clip(imgs["p4.png"].astype(int) - 9, 0, 255).astype(np.uint8)})
    m = prepare_dataset(config(a, b, tmp_path / "out", holdout=(str(hold),), test_count=1)).manifest
    rej = {Path(r["source"]).name: r["reason"] for r in m["rejected"]}
    assert rej == {"p3.png": "held_out_duplicate", "p4.png": "held_out_duplicate"}
    assert m["counts"]["holdout"] == {"found": 2, "rejected": {}, "rejected_total": 0, "usable": 2}


def test_rerun_is_idempotent_and_uses_the_cache(raw, tmp_path, monkeypatch):
    a, b = raw
    out = tmp_path / "data"
    prepare_dataset(config(a, b, out))
    first = (out / "manifest.json").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    decoded = []
    real_read = prep.read_image
    monkeypatch.setattr(prep, "read_image", lambda p: decoded.append(p) or real_read(p))
    res = prepare_dataset(config(a, b, out))
    assert (out / "manifest.json").read_bytes() == first
    assert res.written == 0 and res.removed == 0 and res.unchanged == 22
    assert decoded == []  # detections and outputs came from the manifest's cache
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes


def test_rerun_with_new_options_removes_stale_outputs(raw, tmp_path):
    a, b = raw
    out = tmp_path / "data"
    prepare_dataset(config(a, b, out, seed=0))
    before = split_files(out)
    prepare_dataset(config(a, b, out, seed=1, test_count=3))
    after = split_files(out)
    assert after != before
    m = json.loads((out / "manifest.json").read_text())
    assert {s: sorted(v) for s, v in m["planned"].items()} == after
    assert len(after["testA"]) == 3 and len(after["trainA"]) == 9
    # Same options again: the first layout comes back exactly.
    prepare_dataset(config(a, b, out, seed=0))
    assert split_files(out) == before


def test_split_is_stable_and_seeded(raw, tmp_path):
    a, b = raw
    prepare_dataset(config(a, b, tmp_path / "o1", seed=5))
    prepare_dataset(config(a, b, tmp_path / "o2", seed=5))
    prepare_dataset(config(a, b, tmp_path / "o3", seed=6))
    assert split_files(tmp_path / "o1") == split_files(tmp_path / "o2")
    assert split_files(tmp_path / "o1")["testA"] != split_files(tmp_path / "o3")["testA"]


def test_interrupted_run_is_finished_by_a_rerun(raw, tmp_path, monkeypatch):
    a, b = raw
    out = tmp_path / "data"
    real_write = prep.write_bytes_atomic
    n = {"calls": 0}

    def dying_write(path, data):
        n["calls"] += 1
        if n["calls"] == 6:  # the interim manifest, then four images
            raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(prep, "write_bytes_atomic", dying_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(config(a, b, out))
    assert json.loads((out / "manifest.json").read_text())["status"] == "writing"
    monkeypatch.setattr(prep, "write_bytes_atomic", real_write)
    prepare_dataset(config(a, b, out))
    clean = tmp_path / "clean"
    prepare_dataset(config(a, b, clean))
    assert split_files(out) == split_files(clean)
    for s, names in split_files(clean).items():
        for name in names:
            assert (out / s / name).read_bytes() == (clean / s / name).read_bytes()


def test_refuses_files_it_did_not_write(raw, tmp_path):
    a, b = raw
    out = tmp_path / "data"
    write_image(out / "trainA" / "mine.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"1 file\(s\) in the split folders were not written by cyclemask-data prepare \(e\.g\. trainA/mine\.png\)"):
        prepare_dataset(config(a, b, out))


def test_foreign_manifest_is_refused(raw, tmp_path):
    a, b = raw
    out = tmp_path / "data"
    out.mkdir()
    (out / "manifest.json").write_text('{"something": "else"}')
    with pytest.raises(DataError, match="not a cyclemask-data prepare manifest"):
        prepare_dataset(config(a, b, out))


def test_counts_and_their_errors(raw, tmp_path):
    a, b = raw
    m = prepare_dataset(config(a, b, tmp_path / "o", test_count=2, train_count=5)).manifest
    assert m["counts"]["A"]["train"] == 5 and m["counts"]["A"]["rejected"] == {"unused_over_count": 5}
    with pytest.raises(DataError, match=r"domain B: --test-count 11 but only 10 usable images"):
        prepare_dataset(config(a, b, tmp_path / "o2", test_count=11))
    with pytest.raises(DataError, match=r"domain B: no images left for training \(10 usable, 10 for test\)"):
        prepare_dataset(config(a, b, tmp_path / "o3", test_count=10))
    m = prepare_dataset(config(a, b, tmp_path / "o4", test_count=None, test_fraction=0.25)).manifest
    assert m["counts"]["A"]["test"] == 3 and m["counts"]["B"]["test"] == 2  # round(12 / 4), round(10 / 4)


@pytest.mark.parametrize("kw, message", [
    ({"size": 8}, "size must be an integer >= 16"),
    ({"fit": "stretch"}, "fit must be one of shift, pad"),
    ({"margin": -1.0}, r"margin must be in \[0, 2\]"),
    ({"score_threshold": 1.0}, r"score_threshold must be in \(0, 1\)"),
    ({"test_fraction": 1.0}, r"test_fraction must be in \[0, 1\)"),
    ({"dup_threshold": 256}, r"dup_threshold must be in \[0, 256\)"),
    ({"image_format": "gif"}, "image_format must be one of jpg, png"),
    ({"layout": "ffhq"}, "layout must be one of auto, plain"),
])
def test_config_validation(kw, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, tmp_path, tmp_path / "o", **kw)


def test_missing_sources_and_out_inside_source(raw, tmp_path):
    a, b = raw
    with pytest.raises(ConfigError, match=r"source folder .*nope: not a folder"):
        prepare_dataset(config(tmp_path / "nope", b, tmp_path / "o"))
    with pytest.raises(ConfigError, match="must lie outside the source folder"):
        prepare_dataset(config(a, b, a / "out"))
    with pytest.raises(ConfigError, match="both domains need at least one source folder"):
        PrepareConfig(sources_a=(), sources_b=(str(b),), out=str(tmp_path / "o"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images found in the domain B sources"):
        prepare_dataset(config(a, empty, tmp_path / "o"))


def test_known_layouts(tmp_path, rng):
    make_folder(tmp_path / "ffhq" / "images1024x1024" / "00000", {f"{i:05d}.png": blobs(rng) for i in range(4)})
    make_folder(tmp_path / "ffhq" / "thumbnails128x128" / "00000", {"00000.png": blobs(rng)})
    mfn = tmp_path / "mfn"
    make_folder(mfn / "CMFD" / "00000", {f"{i:05d}_Mask.jpg": blobs(rng) for i in range(3)})
    make_folder(mfn / "IMFD" / "00000", {"00000_Mask_Mouth_Chin.jpg": blobs(rng)})
    assert prep.resolve_source(tmp_path / "ffhq") == tmp_path / "ffhq" / "images1024x1024"
    assert prep.resolve_source(mfn) == mfn / "CMFD"
    assert prep.resolve_source(mfn, "plain") == mfn
    m = prepare_dataset(config(tmp_path / "ffhq", mfn, tmp_path / "o", test_count=1)).manifest
    assert m["counts"]["A"]["found"] == 4 and m["counts"]["B"]["found"] == 3


def test_output_names_are_unique_and_readable(tmp_path, rng):
    a1 = make_folder(tmp_path / "x" / "faces", {"0.png": blobs(rng), "0.jpg": blobs(rng), "sub/1.png": blobs(rng)})
    a2 = make_folder(tmp_path / "y" / "faces", {"0.png": blobs(rng)})
    b = make_folder(tmp_path / "b", {f"q{i}.png": blobs(rng) for i in range(3)})
    m = prepare_dataset(config((str(a1), str(a2)), b, tmp_path / "o", test_count=0, image_format="png")).manifest
    names = sorted(f["name"] for f in m["files"] if f["split"] == "trainA")
    assert names == ["x-faces__0.png", "x-faces__0_png.png", "x-faces__sub_1.png", "y-faces__0.png"]


# --- with the face detector ----------------------------------------------------------------


@pytest.fixture(scope="module")
def portrait():
    import matplotlib

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        pytest.skip(f"matplotlib's sample portrait {p} is absent in this installation")
    return read_image(p)


def test_face_filters(portrait, face_detector_path, tmp_path, rng):
    import cv2

    canvas = np.full((900, 800, 3), 128, np.uint8)
    canvas[150:750, 100:612] = portrait
    a = make_folder(tmp_path / "a", {
        "portrait.jpg": portrait,
        "in_canvas.png": canvas,  # same face, other framing: a near duplicate once cropped
        "two.png": np.concatenate([portrait, portrait[:, ::-1]], axis=1),
        "tiny.png": cv2.resize(portrait, (60, 70), interpolation=cv2.INTER_AREA),
        "noise.png": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
    })
    b = make_folder(tmp_path / "b", {"grey.png": cv2.cvtColor(cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)})
    cfg = PrepareConfig(sources_a=(str(a),), sources_b=(str(b),), out=str(tmp_path / "o"), size=64,
                        detector=str(face_detector_path), test_count=0)
    m = prepare_dataset(cfg).manifest
    rej = {Path(r["source"]).name: r["reason"] for r in m["rejected"]}
    # Sorted order: in_canvas.png comes first and is kept; portrait.jpg is its near duplicate.
    assert rej == {"portrait.jpg": "near_duplicate", "two.png": "multiple_faces",
                   "tiny.png": "face_too_small", "noise.png": "no_face"}
    (kept,) = [f for f in m["files"] if f["split"] == "trainA"]
    assert kept["name"] == "a__in_canvas.jpg" and kept["face"]["score"] > 0.8
    x0, y0, x1, y1 = kept["crop_box"]
    assert x1 - x0 == y1 - y0 and 100 <= x0 and 150 <= y0 and x1 <= 612 and y1 <= 750
    assert m["detector"]["sha256"] and m["counts"]["B"]["train"] == 1


@pytest.mark.shared
def test_shared_cfmd_and_pairs_overlap_is_removed(shared_data, face_detector_path, tmp_path):
    """observations_pairs photos that are also in cfmd come out once, whether the copy is
    byte-identical or re-encoded (other quality, brightness). Rescaled copies are caught less
    reliably (detection jitter moves the crop): see the module notes in train/prepare.py."""
    pairs = sorted((shared_data / "faces" / "observations_pairs" / "without_mask").iterdir())
    cfmd = shared_data / "faces" / "cfmd" / "without_mask"
    picked = [p for p in pairs if (cfmd / p.name).is_file()][:6]
    if len(picked) < 6:
        pytest.skip("fewer than 6 observations_pairs files share a name with cfmd here")
    a1, a2, b = tmp_path / "cfmd", tmp_path / "pairs", tmp_path / "b"
    for d in (a1, a2, b):
        d.mkdir()
    for i, p in enumerate(picked):
        shutil.copy(cfmd / p.name, a1 / p.name)
        if i % 2:
            img = np.clip(read_image(p).astype(np.int16) + 8, 0, 255).astype(np.uint8)
            write_image(a2 / p.name, img, quality=70)
        else:
            shutil.copy(p, a2 / p.name)
    for p in sorted((shared_data / "faces" / "observations_pairs" / "with_mask").iterdir())[:3]:
        shutil.copy(p, b / p.name)
    cfg = PrepareConfig(sources_a=(str(a1), str(a2)), sources_b=(str(b),), out=str(tmp_path / "o"),
                        size=64, detector=str(face_detector_path), test_count=1)
    m = prepare_dataset(cfg).manifest
    kept_a1 = {Path(f["source"]).name for f in m["files"] if f["split"].endswith("A") and f["source"].startswith(str(a1))}
    rej_a2 = {Path(r["source"]).name: r["reason"] for r in m["rejected"] if r["source"].startswith(str(a2))}
    for i, p in enumerate(picked):
        if p.name in kept_a1:
            assert rej_a2.get(p.name) == ("near_duplicate" if i % 2 else "duplicate"), p.name
    assert len(kept_a1) >= 4
    assert not [f for f in m["files"] if f["source"].startswith(str(a2))]


# --- CLI -----------------------------------------------------------------------------------


def test_cli_prepare_and_report(raw, tmp_path):
    a, b = raw
    out = tmp_path / "data"
    runner = CliRunner()
    r = runner.invoke(data_cli, ["prepare", "--a", str(a), "--b", str(b), "--out", str(out), "--no-detect",
                                 "--size", "32", "--min-face", "16", "--test-count", "2", "--format", "png"])
    assert r.exit_code == 0, r.output
    assert "domain A: 12 found -> train 10, test 2; rejected 0 (none)" in r.output
    assert "domain B: 12 found -> train 8, test 2; rejected 2 (unreadable 2)" in r.output
    assert "wrote 22 image(s)" in r.output
    r = runner.invoke(data_cli, ["report", str(out), "--reason", "unreadable"])
    assert r.exit_code == 0 and "corrupt.jpg" in r.output and "empty.png" in r.output
    r = runner.invoke(data_cli, ["report", str(out), "--reason", "no_face"])
    assert r.exit_code == 1 and "no rejections with reason 'no_face'; present: unreadable" in r.output


def test_cli_errors(raw, tmp_path, monkeypatch):
    a, b = raw
    monkeypatch.setenv(DETECTOR_ENV, str(tmp_path / "gone.onnx"))
    runner = CliRunner()
    r = runner.invoke(data_cli, ["prepare", "--a", str(a), "--b", str(b), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and f"Error: face detector model {tmp_path / 'gone.onnx'} (from ${DETECTOR_ENV})" in r.output
    assert not (tmp_path / "o").exists()
    r = runner.invoke(data_cli, ["report", str(tmp_path)])
    assert r.exit_code == 1 and "no manifest" in r.output
    r = runner.invoke(data_cli, ["prepare", "--a", str(a), "--b", str(b), "--out", str(tmp_path / "o"), "--fit", "zoom"])
    assert r.exit_code == 2


def test_cli_help_documents_defaults():
    r = CliRunner().invoke(data_cli, ["prepare", "--help"])
    assert r.exit_code == 0
    for text in ("--min-face", "default: 64", "--dup-threshold", "--holdout", DETECTOR_ENV, "--test-count"):
        assert text in r.output.replace("\n", " ") or text in r.output


@pytest.mark.parametrize("fast_popcount", [True, False])
def test_near_pairs_matches_brute_force(rng, monkeypatch, fast_popcount):
    if not fast_popcount:
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    h = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    m = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    h[250] = h[3] ^ np.eye(32, dtype=np.uint8)[5] * 7  # 3 bits from row 3
    m[260] = h[10]  # mirrored copy of row 10
    got = prep.near_pairs(h, m, threshold=40, chunk=64)
    bits = lambda x: np.unpackbits(x, axis=-1).astype(int)  # noqa: E731
    for i in range(300):
        d = np.minimum((bits(h[i]) != bits(h[:i])).sum(1), (bits(m[i]) != bits(h[:i])).sum(1))
        assert got[i] == [(j, int(d[j])) for j in np.nonzero(d <= 40)[0]]
    assert (3, 3) in got[250] and (10, 0) in got[260]
