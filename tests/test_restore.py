"""Erase-then-restore unmasking: the networks, their checkpoint, the hole paste, synth's mattes,
the segmenter's graph and the judges' arithmetic (tiny networks throughout)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cyclemask.artifacts import ArtefactError
from cyclemask.checkpoint import load_generator, load_generators, load_segmenter, save_restore
from cyclemask.errors import CheckpointError, ConfigError, DataError
from cyclemask.image_tensors import eager_translate
from cyclemask.restore_models import (
    EraseRestore,
    MaskSegmenter,
    Restorer,
    RestorerConfig,
    SegmenterConfig,
    SegmenterGraph,
    grow_hole,
)

TINY_SEG = SegmenterConfig(channels=(4, 8))
TINY_RES = RestorerConfig(channels=(4, 8), n_res=1, grow=1)


def tiny_nets(seg_bias: float | None = None, seed: int = 0):
    torch.manual_seed(seed)
    seg, res = MaskSegmenter(TINY_SEG).eval(), Restorer(TINY_RES).eval()
    if seg_bias is not None:  # a segmenter that sees no mask (very negative) or mask everywhere
        with torch.no_grad():
            seg.net.out.weight.zero_()
            seg.net.out.bias.fill_(seg_bias)
    return seg, res


def faces(n=2, size=32, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_no_mask_found_gives_the_crop_back_bit_for_bit():
    seg, res = tiny_nets(seg_bias=-30.0)
    x = faces()
    assert np.array_equal(eager_translate(EraseRestore(seg, res), x), x)


def test_mask_everywhere_gives_the_restorer_its_whole_output():
    seg, res = tiny_nets(seg_bias=30.0)
    x = faces()
    y = eager_translate(EraseRestore(seg, res), x)
    with torch.no_grad():
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
        want = res(t * 0, torch.ones_like(t[:, :1]))
    want_u8 = torch.clamp(torch.round((want + 1) * 127.5), 0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    assert np.abs(y.astype(int) - want_u8).max() <= 1
    assert (y != x).mean() > 0.5


def test_grow_hole_grows_by_its_radius_and_ramps():
    m = torch.zeros(1, 1, 16, 16)
    m[..., 8, 8] = 1.0
    h = grow_hole(m, 2)
    assert h[0, 0, 6:11, 6:11].eq(1).all() and h.sum() == 25
    assert grow_hole(torch.full((1, 1, 4, 4), 0.5), 0).eq(0.5).all()  # the ramp's middle


def test_restore_bundle_round_trip_and_refusals(tmp_path):
    seg, res = tiny_nets()
    path = tmp_path / "restore.pt"
    save_restore(path, seg, res, {"image_size": 32})
    loaded = load_generators(path)
    assert list(loaded) == ["unmask"]
    g = load_generator(path)
    assert isinstance(g.generator, EraseRestore) and g.direction == "unmask"
    x = faces()
    assert np.array_equal(eager_translate(g.generator, x), eager_translate(EraseRestore(seg, res), x))
    assert isinstance(load_segmenter(path), MaskSegmenter)
    with pytest.raises(CheckpointError, match="ngf do not apply"):
        load_generators(path, ngf=16)
    obj = torch.load(path, weights_only=True)
    key = next(iter(obj["restorer"]["state_dict"]))
    obj["restorer"]["state_dict"][key] = obj["restorer"]["state_dict"][key] + 1
    torch.save(obj, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="restorer weights do not match"):
        load_generator(tmp_path / "edited.pt")


# -- the hole paste ------------------------------------------------------------------------


def test_changed_matte_is_where_the_output_differs():
    from cyclemask.engine.faces import changed_matte

    sent = faces(1, 64)[0]
    got = sent.copy()
    got[20:40, 10:50] = 0
    w = changed_matte(sent, got)
    assert w[22:38, 12:48].min() > 0.99  # inside the change
    assert w[:15].max() == 0 and w[46:].max() == 0 and w[:, :5].max() == 0  # far from it
    assert changed_matte(sent, sent).max() == 0
    noisy = np.clip(sent.astype(int) + np.random.default_rng(0).integers(-2, 3, sent.shape), 0, 255).astype(np.uint8)
    assert changed_matte(sent, noisy).max() == 0  # BF16-sized noise is not a hole


class _ChangeSquare:
    """A backend stand-in that blacks out a square in the middle of every crop."""

    def __call__(self, batch):
        out = batch.copy()
        s = batch.shape[1]
        out[:, s // 2 - 6:s // 2 + 6, s // 2 - 6:s // 2 + 6] = 0
        return out


def test_hole_paste_changes_only_around_what_the_graph_changed():
    from cyclemask.engine.faces import FaceConfig, FaceProcessor
    from cyclemask.face_detect import Face

    class OneFace:
        def detect(self, image):
            return [Face((40.0, 40.0, 104.0, 104.0), 0.9, np.array([[60, 60], [84, 60], [72, 75], [62, 88], [82, 88]],
                                                                      np.float32))]

    frame = np.random.default_rng(3).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    proc = FaceProcessor(64, FaceConfig(track=False, paste="hole"), detector_factory=OneFace)
    crops, state = proc.prepare(frame)
    out = proc.finish(frame, state, list(_ChangeSquare()(np.stack(crops))))
    changed = np.any(out != frame, axis=2)
    ys, xs = np.nonzero(changed)
    box = state[0].box
    scale = (box[2] - box[0]) / 64
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert changed.any()
    # Only within the square (6 px of the crop each side of its centre) plus the feather.
    reach = (6 + 4) * scale
    assert np.abs(xs - cx).max() <= reach and np.abs(ys - cy).max() <= reach
    crops, state = proc.prepare(frame)
    assert np.array_equal(proc.finish(frame, state, list(crops)), frame)  # nothing changed: nothing pasted


def test_hole_below_eyes_paste_keeps_the_eyes_and_reaches_past_the_zone():
    from cyclemask.engine.faces import FaceConfig, FaceProcessor
    from cyclemask.face_detect import Face, mask_zone_matte

    eye_y, mouth_y = 60, 88

    class OneFace:
        def detect(self, image):
            return [Face((40.0, 40.0, 64.0, 64.0), 0.9,
                         np.array([[60, eye_y], [84, eye_y], [72, 75], [62, mouth_y], [82, mouth_y]], np.float32))]

    def changed_by(paste):
        frame = np.full((160, 160, 3), 128, np.uint8)
        proc = FaceProcessor(64, FaceConfig(track=False, paste=paste), detector_factory=OneFace)
        crops, state = proc.prepare(frame)
        out = proc.finish(frame, state, [np.zeros_like(c) for c in crops])  # the "graph" changed every pixel
        return np.any(out != frame, axis=2), state[0].box

    hole, _ = changed_by("hole")
    below, box = changed_by("hole-below-eyes")
    x0, y0, x1, y1 = box
    zone = np.zeros(below.shape, np.float32)
    zone[y0:y1, x0:x1] = mask_zone_matte(OneFace().detect(None)[0].landmarks, box)  # the default zone
    assert hole[:eye_y].any()  # the whole hole reaches the eyes and above
    assert not below[:eye_y + 3].any()  # cut off under the eye line, as the zone is
    assert below[mouth_y].any()
    assert (below & (zone == 0)).sum() > 0.3 * (zone > 0).sum()  # past the zone, at the sides and below
    assert not ((zone > 0.5) & ~below).any()


# -- synth's mattes ------------------------------------------------------------------------


@pytest.mark.shared
def test_synth_writes_each_twins_matte(tmp_path):
    from tests.conftest import SHARED_DATA
    from cyclemask.train.synth import SynthConfig, synthesize

    src = tmp_path / "faces"
    src.mkdir()
    pics = sorted((SHARED_DATA / "faces" / "observations_pairs" / "without_mask").glob("*.jpg"))[20:23]
    for p in pics:
        (src / p.name).write_bytes(p.read_bytes())
    res = synthesize(SynthConfig(source=src, out=tmp_path / "out", templates=SHARED_DATA / "mask_templates", seed=0))
    assert res.written >= 2
    import cv2

    from cyclemask.image_files import read_image

    for rec in json.loads((tmp_path / "out" / "synth.json").read_text())["pairs"]:
        matte = cv2.imread(str(tmp_path / "out" / "mattes" / rec["matte"]), cv2.IMREAD_GRAYSCALE)
        twin = read_image(tmp_path / "out" / "with_mask" / rec["twin"]).astype(int)
        bare = read_image(src / rec["source"]).astype(int)
        differs = np.abs(twin - bare).max(axis=2) > 30
        assert matte.shape == differs.shape
        # The mask's pixels are the matte's: nearly every strongly changed pixel lies under it,
        # and the matte is not the whole photo.
        assert (matte[differs] > 64).mean() > 0.97
        assert 0.02 < (matte > 127).mean() < 0.6


# -- the segmenter's graph -----------------------------------------------------------------


@pytest.mark.slow
def test_segmenter_graph_matches_eager_and_keeps_its_contract(tmp_path):
    import onnx
    import onnxruntime as ort

    from cyclemask.export.segmenter import check_segmenter_io, eager_matte, export_segmenter
    from cyclemask.segmenter import Segmenter

    seg, _ = tiny_nets()
    x = faces(3, 32)
    path = export_segmenter(seg, tmp_path / "segmenter.onnx", image_size=32, verify=x)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert got.shape == (3, 32, 32, 1) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - eager_matte(seg, x)).max() <= 1
    assert np.allclose(Segmenter(path)(x), got[..., 0] / 255.0)
    assert check_segmenter_io(onnx.load(path), 32, "t") == 32
    with pytest.raises(ArtefactError, match="not a cyclemask segmenter"):
        check_segmenter_io(onnx.load(path), 64, "t")


def test_segmenter_graph_wrapper_is_the_sigmoid_matte():
    seg, _ = tiny_nets(seg_bias=30.0)
    y = SegmenterGraph(seg)(torch.from_numpy(faces()))
    assert y.dtype == torch.uint8 and y.shape[-1] == 1 and y.eq(255).all()


# -- the judges' arithmetic ----------------------------------------------------------------


class _Judge:
    """A stand-in judge: each photo's descriptor is its mean colour (so who is who is set by the
    test), located everywhere."""

    info = {"descriptor": "test"}

    def locate(self, image):
        return object()

    def describe(self, image, rect):
        return image.reshape(-1, 3).mean(axis=0) / 100.0


def test_identity_report_counts_matches_closer_and_impostors():
    from cyclemask.metrics.unmasking import PairPhotos, identity_report

    def photo(v):
        return np.full((8, 8, 3), v, np.uint8)

    # Owners 0, 100, 200 (far apart in the stand-in's units); masked twins 50 off (0.87 apart).
    pairs = PairPhotos(["a", "b", "c"], [photo(0), photo(100), photo(200)], [photo(50), photo(150), photo(250)], [])
    back = {"restore": lambda m: photo(int(m[0, 0, 0]) - 45),   # 0.087 from the owner: closer, a match
            "worse": lambda m: photo(int(m[0, 0, 0]) + 5)}      # further than the twin
    r = identity_report(pairs, back, masker=lambda b: b, judge=_Judge())
    v = r["variants"]
    assert v["masked"]["match_rate"] == 0.0 and v["restore"]["match_rate"] == 1.0
    assert v["restore"]["closer_than_masked"] == 1.0 and v["worse"]["closer_than_masked"] == 0.0
    assert v["our_mask"]["match_rate"] == 1.0
    assert v["restore"]["impostor_match_rate"] == 0.0
    assert r["pairs"] == 3


def test_hole_quality_scores_inside_the_true_mask_only():
    from cyclemask.metrics.unmasking import Twins, hole_quality

    bare = faces(2, 16)
    matte = np.zeros((2, 16, 16), np.float32)
    matte[:, 4:12, 4:12] = 1
    masked = bare.copy()
    masked[:, 4:12, 4:12] = 0
    t = Twins(["a", "b"], bare, masked, matte)
    assert hole_quality(bare, t)["psnr"] > 100
    outside_only = masked.copy()
    outside_only[:, :4] = 255 - outside_only[:, :4]  # wrong outside the mask: no effect
    assert hole_quality(outside_only, t)["psnr"] == pytest.approx(hole_quality(masked, t)["psnr"])
    with pytest.raises(DataError, match="empty"):
        hole_quality(bare, Twins(["a", "b"], bare, masked, np.zeros_like(matte)))


def test_segmenter_report_iou():
    from cyclemask.metrics.unmasking import Twins, segmenter_report

    matte = np.zeros((2, 16, 16), np.float32)
    matte[:, 8:] = 1

    class Perfect:
        def __call__(self, crops):
            return matte if crops[0, 0, 0, 0] == 7 else np.zeros_like(matte)

    bare = np.zeros((2, 16, 16, 3), np.uint8)
    t = Twins(["a", "b"], bare, bare + 7, matte)
    r = segmenter_report(Perfect(), t)
    assert r["iou"] == 1.0 and r["bare_false_area_mean"] == 0.0

    class Half(Perfect):
        def __call__(self, crops):
            m = super().__call__(crops).copy()
            m[:, :8] = 1  # the top half of the image too: IoU 1/2
            return m

    assert segmenter_report(Half(), t)["iou"] == pytest.approx(0.5)


def test_face_judge_needs_its_extra_or_says_so():
    from cyclemask.errors import ConfigError
    from cyclemask.metrics.unmasking import FaceJudge

    try:
        judge = FaceJudge()
    except ConfigError as exc:
        assert "cyclemask[judge]" in str(exc)
        pytest.skip(f"dlib judge not installed: {exc}")
    photo = np.zeros((8, 8, 3), np.uint8)
    assert judge.locate(photo) is None


# -- training ------------------------------------------------------------------------------


@pytest.fixture
def tiny_bank(monkeypatch):
    """Two random faces, four masked variants with a block matte, and tiny networks in the loop."""
    from cyclemask.train import restore as R
    import cyclemask.restore_models as RM

    monkeypatch.setattr(RM, "MaskSegmenter",
                        lambda c=TINY_SEG: MaskSegmenter(SegmenterConfig(TINY_SEG.channels, n_res=c.n_res, mirror=c.mirror)))
    monkeypatch.setattr(RM, "Restorer", lambda *a: Restorer(TINY_RES))
    rng = np.random.default_rng(0)
    bare = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    matte = np.zeros((4, 32, 32), np.uint8)
    matte[:, 16:, 8:24] = 255
    return R.Bank(bare, bare[[0, 0, 1, 1]] // 2, matte, np.array([0, 0, 1, 1], np.int32), ["a", "b"])


def test_augmentation_keeps_each_image_on_its_matte():
    from cyclemask.train.restore import _augment_pair

    matte = np.zeros((4, 16, 16), np.float32)
    matte[:, 2:9, 1:6] = 255.0  # off-centre: a flip of one and not the other shows
    image = np.zeros((4, 16, 16, 3), np.float32)
    image[..., 0] = matte
    flipped = 0
    for seed in range(12):
        out = _augment_pair(np.concatenate([image, matte[..., None]], axis=3), np.random.default_rng(seed))
        red, m = out[..., 0], out[..., 3] > 127
        flipped += bool(m[:, :, 8:].any())
        for i in range(len(out)):
            assert np.array_equal(red[i] > red[i].mean(), m[i]), f"seed {seed}: image and matte parted"
        assert not np.array_equal(out[..., :3], image)  # the photometric jitter did run
    assert 0 < flipped < 12  # both ways were seen


def test_framing_cuts_image_and_matte_alike_as_a_photo_edge_does():
    from cyclemask.train.restore import _augment_pair

    h = w = 20
    both = np.zeros((64, h, w, 4), np.float32)
    both[..., 0] = 40.0 + np.arange(h)[:, None] * 5.0  # red counts rows, green columns (within
    both[..., 1] = 40.0 + np.arange(w)[None, :] * 5.0  # what the jitter leaves unclipped)
    both[..., 3] = np.arange(h)[:, None] * 10.0  # the matte counts rows too
    out = _augment_pair(both, np.random.default_rng(0), framing=0.5)
    bottoms = []
    for i in range(len(out)):
        rows = np.rint(out[i, :, w // 2, 3] / 10.0).astype(int)
        # rows run in order, then the last one kept repeats to the bottom edge
        assert np.all(np.diff(rows) >= 0) and np.all(np.diff(rows) <= 1), rows
        bottoms.append(h - 1 - rows.max())
        # the image's rows were cut where its matte's were (red has been jittered: compare ranks)
        red = out[i, :, w // 2, 0]
        assert np.array_equal(np.diff(red) == 0, np.diff(rows) == 0), i
    bottoms = np.array(bottoms)
    assert 0.25 < (bottoms > 0).mean() < 0.75  # about half the crops cut, at up to 30 % of the height
    assert bottoms.max() <= int(0.3 * h) and bottoms.max() >= 3
    plain = _augment_pair(both, np.random.default_rng(0), framing=0.0)
    assert all(np.array_equal(np.rint(plain[i, :, w // 2, 3] / 10.0), np.arange(h)) for i in range(len(plain)))


@pytest.mark.parametrize("kind", ["segmenter", "restorer"])
def test_training_loop_runs_resumes_and_writes_a_network(tmp_path, kind, tiny_bank):
    from cyclemask.train import restore as R

    bank = tiny_bank
    cfg = R.LoopConfig(kind=kind, out=tmp_path, minutes=5, batch_size=2, iterations=3, save_every=2)
    assert R.train_loop(bank, cfg)["iteration"] == 3
    assert (tmp_path / f"{kind}.pt").is_file()
    cfg.iterations = 5
    assert R.train_loop(bank, cfg)["iteration"] == 5  # resumed at 3, not from 0


def test_cosine_rate_runs_from_lr_to_lr_end_and_a_resumed_run_stays_on_it(tmp_path, tiny_bank):
    import json

    from cyclemask.train import restore as R

    cfg = R.LoopConfig(kind="segmenter", out=tmp_path, lr=1e-3, lr_end=1e-5, iterations=100)
    assert R.learning_rate(cfg, 0) == pytest.approx(1e-3)
    assert R.learning_rate(cfg, 50) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert R.learning_rate(cfg, 100) == pytest.approx(1e-5)
    assert R.learning_rate(R.LoopConfig(kind="segmenter", out=tmp_path, lr=1e-3, iterations=100), 50) == 1e-3

    bank = tiny_bank
    curve = R.LoopConfig(kind="segmenter", out=tmp_path, minutes=5, batch_size=2, iterations=40, lr=1e-3,
                         lr_end=1e-5)
    R.train_loop(bank, R.LoopConfig(**{**curve.__dict__, "iterations": 20}))  # a run cut short at 20
    R.train_loop(bank, curve)  # resumed
    rows = [json.loads(line) for line in (tmp_path / "segmenter_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [20, 40]
    # the rate logged at iteration 40 was set for step 39 of the 40-iteration curve, not restarted
    assert rows[1]["lr"] == pytest.approx(R.learning_rate(curve, 39))
    # a resumed constant-rate run takes the rate it is given, not the one saved with the optimiser
    R.train_loop(bank, R.LoopConfig(kind="segmenter", out=tmp_path, minutes=5, batch_size=2, iterations=60, lr=3e-4))
    rows = [json.loads(line) for line in (tmp_path / "segmenter_log.jsonl").read_text().splitlines()]
    assert rows[-1]["iteration"] == 60 and rows[-1]["lr"] == pytest.approx(3e-4)


def test_a_resumed_gan_run_sets_the_discriminators_rate_from_its_options_too(tmp_path, tiny_bank):
    import torch

    from cyclemask.train import restore as R

    bank = tiny_bank
    base = dict(kind="restorer", out=tmp_path, minutes=5, batch_size=2, gan_weight=0.1, gan_after=0)
    R.train_loop(bank, R.LoopConfig(**base, iterations=2, lr=1e-3))
    R.train_loop(bank, R.LoopConfig(**base, iterations=4, lr=2e-4))
    st = torch.load(tmp_path / "restorer_state.pt", weights_only=True)
    assert st["opt"]["param_groups"][0]["lr"] == pytest.approx(2e-4)
    assert st["dopt"]["param_groups"][0]["lr"] == pytest.approx(1e-4)


@pytest.mark.parametrize("args, says", [
    (["--kind", "segmenter", "--lr-end", "1e-5"], "--lr-end needs --iterations"),
    (["--kind", "segmenter", "--iterations", "0"], "--iterations must be at least 1"),
    (["--kind", "restorer", "--lr", "0"], "must be positive"),
    (["--kind", "bundle", "--init-from", "x.pt"], "--init-from is for --kind segmenter or restorer"),
    (["--kind", "segmenter", "--seg-res", "-1"], "--seg-res must be >= 0"),
    (["--kind", "restorer", "--seg-res", "2"], "is for --kind segmenter"),
    (["--kind", "restorer", "--seg-channels", "8,16"], "--seg-channels is for --kind segmenter"),
    (["--kind", "segmenter", "--framing", "1.5"], "--framing is a share of crops"),
    (["--kind", "bundle", "--framing", "0.5"], "--framing is for --kind segmenter or restorer"),
])
def test_training_options_are_checked_before_any_work(tmp_path, args, says):
    from cyclemask.errors import ConfigError
    from cyclemask.train import restore as R

    with pytest.raises(ConfigError, match=says):
        R.main(["--prepared", str(tmp_path / "none"), "--templates", "x", "--bank", str(tmp_path / "b.npz"),
                "--out", str(tmp_path / "out"), *args])
    assert not (tmp_path / "b.npz").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["segmenter", "restorer"])
def test_a_new_run_can_start_from_a_bundles_network(tmp_path, kind, tiny_bank):
    import torch

    from cyclemask.checkpoint import save_restore
    from cyclemask.train import restore as R

    torch.manual_seed(1)
    seg, res = MaskSegmenter(TINY_SEG), Restorer(TINY_RES)
    save_restore(tmp_path / "b.pt", seg, res, {"image_size": 32})
    bank = tiny_bank
    cfg = R.LoopConfig(kind=kind, out=tmp_path / "run", minutes=5, batch_size=2, iterations=1, lr=1e-9,
                       init_from=tmp_path / "b.pt")
    R.train_loop(bank, cfg)
    trained = torch.load(tmp_path / "run" / f"{kind}_state.pt", weights_only=True)["net"]
    start = (seg if kind == "segmenter" else res).state_dict()
    assert all(torch.allclose(trained[k], start[k], atol=1e-6) for k in start)


def test_a_segmenter_grown_with_residual_blocks_starts_as_the_function_it_grew_from(tmp_path, tiny_bank):
    import torch

    from cyclemask.checkpoint import save_restore
    from cyclemask.train import restore as R

    torch.manual_seed(2)
    seg, res = MaskSegmenter(TINY_SEG).eval(), Restorer(TINY_RES)
    save_restore(tmp_path / "b.pt", seg, res, {"image_size": 32})
    cfg = R.LoopConfig(kind="segmenter", out=tmp_path / "run", minutes=5, batch_size=2, iterations=1, lr=1e-9,
                       init_from=tmp_path / "b.pt", seg_res=2)
    R.train_loop(tiny_bank, cfg)
    st = torch.load(tmp_path / "run" / "segmenter_state.pt", weights_only=True)
    assert st["config"]["n_res"] == 2 and "n_res" not in SegmenterConfig().to_dict()
    grown = MaskSegmenter(SegmenterConfig(**st["config"])).eval()
    grown.load_state_dict(st["net"], strict=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(grown(x), seg(x), atol=1e-5)
    # the bundle keeps the grown config, so the file loads as the network that was trained
    R.train_loop(tiny_bank, R.LoopConfig(kind="restorer", out=tmp_path / "run", minutes=5, batch_size=2,
                                         iterations=1))
    R.bundle(tmp_path / "run" / "segmenter_state.pt", tmp_path / "run" / "restorer_state.pt",
             tmp_path / "joined.pt", 32)
    assert load_segmenter(tmp_path / "joined.pt").config.n_res == 2
    # a resumed run must have the config it saved
    with pytest.raises(ConfigError, match="holds a segmenter with config"):
        R.train_loop(tiny_bank, R.LoopConfig(**{**cfg.__dict__, "iterations": 2, "seg_res": 1}))
    # a state written before configs were saved holds a segmenter without the blocks
    del st["config"]
    torch.save(st, tmp_path / "run" / "segmenter_state.pt")
    with pytest.raises(ConfigError, match="holds a segmenter with config"):
        R.train_loop(tiny_bank, R.LoopConfig(**{**cfg.__dict__, "iterations": 2}))


def test_segmenter_widths_are_chosen_kept_through_a_resume_and_bundled(tmp_path):
    import torch

    from cyclemask.train import restore as R

    rng = np.random.default_rng(0)
    bare = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    matte = np.zeros((4, 32, 32), np.uint8)
    matte[:, 16:, 8:24] = 255
    bank = R.Bank(bare, bare[[0, 0, 1, 1]] // 2, matte, np.array([0, 0, 1, 1], np.int32), ["a", "b"])
    cfg = R.LoopConfig(kind="segmenter", out=tmp_path, minutes=5, batch_size=2, iterations=1,
                       seg_channels=(4, 8, 12))
    R.train_loop(bank, cfg)
    assert torch.load(tmp_path / "segmenter_state.pt", weights_only=True)["config"]["channels"] == [4, 8, 12]
    with pytest.raises(ConfigError, match="holds a segmenter with config"):
        R.train_loop(bank, R.LoopConfig(**{**cfg.__dict__, "iterations": 2, "seg_channels": (4, 8)}))
    R.train_loop(bank, R.LoopConfig(kind="restorer", out=tmp_path, minutes=5, batch_size=2, iterations=1))
    R.bundle(tmp_path / "segmenter_state.pt", tmp_path / "restorer_state.pt", tmp_path / "b.pt", 32)
    assert load_segmenter(tmp_path / "b.pt").config.channels == (4, 8, 12)


@pytest.mark.parametrize("text", ["8,a", "8,0", ""])
def test_bad_segmenter_widths_are_a_usage_error(tmp_path, text, capsys):
    from cyclemask.train import restore as R

    with pytest.raises(SystemExit) as e:
        R.main(["--prepared", "p", "--templates", "t", "--bank", str(tmp_path / "b.npz"), "--out", "o",
                "--kind", "segmenter", "--seg-channels", text])
    assert e.value.code == 2 and "--seg-channels" in capsys.readouterr().err


def test_growing_refuses_anything_but_added_residual_blocks():
    from cyclemask.train.restore import grow_from

    with pytest.raises(ConfigError, match="only residual blocks may be added"):
        grow_from(MaskSegmenter(SegmenterConfig((4, 16), n_res=1)), MaskSegmenter(TINY_SEG))
    with pytest.raises(ConfigError, match="only residual blocks may be added"):
        grow_from(MaskSegmenter(TINY_SEG), MaskSegmenter(SegmenterConfig(TINY_SEG.channels, n_res=1)))


def test_a_segmenter_file_written_before_residual_blocks_still_loads(tmp_path):
    seg, res = tiny_nets()
    save_restore(tmp_path / "b.pt", seg, res, {"image_size": 32})
    obj = torch.load(tmp_path / "b.pt", weights_only=True)
    obj["segmenter"]["config"] = {"channels": list(TINY_SEG.channels)}  # as such files were written
    torch.save(obj, tmp_path / "old.pt")
    assert load_segmenter(tmp_path / "old.pt").config.n_res == 0
    with pytest.raises(ConfigError, match="n_res must be >= 0"):
        SegmenterConfig(n_res=-1)


def test_a_mirrored_segmenter_averages_the_crop_and_its_mirror_at_inference_only():
    torch.manual_seed(3)
    plain = MaskSegmenter(TINY_SEG).eval()
    mirrored = MaskSegmenter(SegmenterConfig(TINY_SEG.channels, mirror=True)).eval()
    mirrored.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        want = 0.5 * (plain(x) + plain(x.flip(3)).flip(3))
        assert torch.allclose(mirrored(x), want, atol=1e-6)
        assert torch.allclose(mirrored(x.flip(3)), mirrored(x).flip(3), atol=1e-5)  # a mirror's matte is mirrored
        assert not torch.allclose(plain(x.flip(3)), plain(x).flip(3), atol=1e-3)
        assert torch.allclose(mirrored.train()(x), plain(x))  # training sees the one view
    assert "mirror" not in TINY_SEG.to_dict() and mirrored.config.to_dict()["mirror"] is True
    with pytest.raises(ConfigError, match="mirror must be true or false"):
        SegmenterConfig(mirror="yes")


@pytest.mark.slow
def test_a_mirrored_segmenter_exports_within_the_tensorrt_rules_and_matches_eager(tmp_path):
    from cyclemask.export.segmenter import export_segmenter

    torch.manual_seed(4)
    seg = MaskSegmenter(SegmenterConfig(TINY_SEG.channels, mirror=True)).eval()
    x = faces(3, 32)
    path = export_segmenter(seg, tmp_path / "segmenter.onnx", image_size=32, verify=x)  # lint + parity inside
    import onnx

    assert "Gather" in {n.op_type for n in onnx.load(path).graph.node}


def test_bundle_with_seg_mirror_writes_a_mirrored_segmenter(tmp_path, tiny_bank):
    from cyclemask.train import restore as R

    for kind in ("segmenter", "restorer"):
        R.train_loop(tiny_bank, R.LoopConfig(kind=kind, out=tmp_path, minutes=5, batch_size=2, iterations=1))
    R.main(["--prepared", "p", "--templates", "t", "--bank", "b.npz", "--out", str(tmp_path), "--kind", "bundle",
            "--seg-mirror"])
    assert load_segmenter(tmp_path / "restore.pt").config.mirror is True
    R.bundle(tmp_path / "segmenter_state.pt", tmp_path / "restorer_state.pt", tmp_path / "plain.pt", 32)
    assert load_segmenter(tmp_path / "plain.pt").config.mirror is False
    with pytest.raises(ConfigError, match="--seg-mirror is for --kind bundle"):
        R.main(["--prepared", "p", "--templates", "t", "--bank", str(tmp_path / "none.npz"), "--out",
                str(tmp_path / "o"), "--kind", "segmenter", "--seg-mirror"])


# -- the runtime's choices -----------------------------------------------------------------


def test_paste_auto_follows_the_graph_kind():
    from cyclemask.engine.run import RunOptions, paste_for

    class Be:
        def __init__(self, method):
            self.metadata = {"method": method} if method else {}

    assert paste_for("auto", Be("restore")) == "hole-below-eyes"
    assert paste_for("auto", Be("cyclegan")) == "zone" and paste_for("auto", Be(None)) == "zone"
    assert paste_for("auto", None) == "zone" and paste_for("crop", Be("restore")) == "crop"
    assert RunOptions(paste="auto").face_config(video=False, backend=Be("restore")).paste == "hole-below-eyes"
    # the default, by figures
    assert RunOptions().face_config(video=False, backend=Be("restore")).paste == "hole-below-eyes"
    assert RunOptions().face_config(video=False, backend=Be("cyclegan")).paste == "zone"
    assert RunOptions(paste="zone").face_config(video=False, backend=Be("restore")).paste == "zone"
    assert RunOptions(paste="hole").face_config(video=False, backend=Be("restore")).paste == "hole"


def test_the_eval_pastes_each_unmasker_as_the_runtime_would_and_telea_as_ours():
    from cyclemask.engine.run import PASTE_CHOICES
    from cyclemask.metrics.cli import EVAL_PASTES, _pastes

    assert set(EVAL_PASTES) == set(PASTE_CHOICES) - {"crop"}  # every runtime paste but whole crops
    assert _pastes("restore", "cyclegan", "auto") == {
        "ours": "hole-below-eyes", "telea": "hole-below-eyes", "baseline": "zone"}
    assert _pastes("restore", "cyclegan", "hole") == {"ours": "hole", "telea": "hole", "baseline": "zone"}
    # a generator is never pasted as a hole; Telea, which only fills a hole, keeps the whole hole then
    assert _pastes("cyclegan", "cyclegan", "auto") == {"ours": "zone", "telea": "hole", "baseline": "zone"}
    assert _pastes("restore", "cyclegan", "zone")["ours"] == "zone"


def test_unmask_method_options_are_checked():
    from cyclemask.engine.run import RunOptions
    from cyclemask.errors import ConfigError

    with pytest.raises(ConfigError, match="unmask_method must be one of restore, cyclegan"):
        RunOptions(direction="unmask", unmask_method="telea")
    with pytest.raises(ConfigError, match="applies to --unmask"):
        RunOptions(direction="mask", unmask_method="restore")
    with pytest.raises(ConfigError, match="cannot be given with --model"):
        RunOptions(direction="unmask", unmask_method="restore", model="x.onnx")


def test_default_model_picks_the_unmask_method(tmp_path, monkeypatch):
    import cyclemask.demo_model as dm

    for name in ("mask.onnx", "unmask.onnx", "unmask_cyclegan.onnx", "unmask_restore.onnx", "generators.pt", "restore.pt"):
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(dm, "assets_dir", lambda: tmp_path)
    monkeypatch.setattr(dm, "demo_info", lambda: {"unmask_method": "restore"})
    assert dm.default_model("unmask").name == "unmask.onnx"
    assert dm.default_model("unmask", "torch").name == "restore.pt"
    assert dm.default_model("unmask", "ort", "cyclegan").name == "unmask_cyclegan.onnx"
    assert dm.default_model("unmask", "torch", "cyclegan").name == "generators.pt"
    assert dm.default_model("mask", "ort", None).name == "mask.onnx"
    monkeypatch.setattr(dm, "demo_info", lambda: {"unmask_method": "cyclegan"})
    assert dm.default_model("unmask", "torch").name == "generators.pt"
    assert dm.default_model("unmask").name == "unmask.onnx"
    assert dm.default_model("unmask", "ort", "restore").name == "unmask_restore.onnx"


@pytest.mark.shared
def test_face_judge_tells_the_owner_from_another_person():
    from tests.conftest import SHARED_DATA
    from cyclemask.errors import ConfigError
    from cyclemask.image_files import read_image
    from cyclemask.metrics.unmasking import MATCH_THRESHOLD, FaceJudge

    try:
        judge = FaceJudge()
    except ConfigError as exc:
        pytest.skip(f"dlib judge not installed: {exc}")
    bare = SHARED_DATA / "faces" / "observations_pairs" / "without_mask"
    a, b = read_image(bare / "65.jpg"), read_image(bare / "133.jpg")
    ra, rb = judge.locate(a), judge.locate(b)
    assert ra is not None and rb is not None
    da = judge.describe(a, ra)
    flipped = np.ascontiguousarray(a[:, ::-1])
    same = np.linalg.norm(judge.describe(flipped, judge.locate(flipped)) - da)
    other = np.linalg.norm(judge.describe(b, rb) - da)
    assert same < MATCH_THRESHOLD < other, (same, other)


@pytest.mark.shared
def test_eval_unmasking_cli_scores_the_embedded_models_on_twins(tmp_path):
    """cyclemask-eval unmasking end to end: synth twins (aligned crops) of three shared photos,
    the embedded restore graph, Telea and the CycleGAN baseline; the report holds every row."""
    from click.testing import CliRunner

    from tests.conftest import SHARED_DATA
    from cyclemask.metrics.cli import main as eval_main
    from cyclemask.train.synth import SynthConfig, synthesize

    src = tmp_path / "faces"
    src.mkdir()
    for p in sorted((SHARED_DATA / "faces" / "observations_pairs" / "without_mask").glob("*.jpg"))[30:33]:
        (src / p.name).write_bytes(p.read_bytes())
    synthesize(SynthConfig(source=src, out=tmp_path / "twins", templates=SHARED_DATA / "mask_templates", seed=0))
    r = CliRunner().invoke(eval_main, ["unmasking", "--twins", str(tmp_path / "twins"), "--out-json",
                                       str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert set(rep["holes"]) == {"masked", "ours", "telea", "baseline"}
    assert rep["segmenter_on_twins"]["n"] >= 2 and 0.0 <= rep["segmenter_on_twins"]["iou"] <= 1.0
    # Any unmasking that fills the hole at all beats leaving the mask on inside it.
    assert rep["holes"]["ours"]["psnr"] > rep["holes"]["masked"]["psnr"]
