"""INT8 graphs and the BF16 check: quantisation (NNCF), verification on held-out faces against
eager FP32 (PSNR, LSB histogram, classifier task), refusal out of bounds, and the CLI.

NNCF tests skip with the reason where nncf is not installed; the check against the real bounds
runs the shipped (trained) demo generators on the shared faces (marked `shared`)."""

from __future__ import annotations

import importlib.util
import json
import math

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from cyclemask.errors import ExportError
from cyclemask.export import lowp
from cyclemask.export.cli import main
from cyclemask.export.lowp import LowpCheck, LowpOptions, TaskFigures, check_outputs, lsb_histogram
from cyclemask.export.verify import BF16_BOUNDS, INT8_BOUNDS, Bounds, compare_uint8
from export_helpers import SIZE

needs_nncf = pytest.mark.skipif(importlib.util.find_spec("nncf") is None,
                                reason="nncf is not installed (pip install 'cyclemask[int8]'): no INT8 quantisation")
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")


def _faces_dir(path, n, size=48, seed=0):
    """Face-like textured crops (never flat: InstanceNorm of a flat image is all rounding noise)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = rng.uniform(40, 200, 3) + 40 * np.sin(2 * np.pi * (rng.uniform(1, 4) * xx + rng.uniform(1, 4) * yy))[..., None]
        face = ((yy - 0.55) / 0.35) ** 2 + ((xx - 0.5) / 0.28) ** 2 < 1
        base[face] = rng.uniform(120, 230, 3)
        img = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(path / f"{i:03d}.png"), img)
    return path


# ------------------------------------------------------------------------------------------------
# Figures and bounds
# ------------------------------------------------------------------------------------------------


def test_lsb_histogram_bins_and_sums():
    want = np.zeros((1, 4, 5, 3), np.uint8) + 100
    got = want.copy()
    flat = got.reshape(-1)
    flat[:3] += 1
    flat[3:5] += 2
    flat[5] += 7
    flat[6] = 255
    hist = dict(lsb_histogram(got, want))
    n = want.size
    assert hist["0"] == pytest.approx((n - 7) / n) and hist["1"] == pytest.approx(3 / n)
    assert hist["2"] == pytest.approx(2 / n) and hist["5-8"] == pytest.approx(1 / n)
    assert hist["65-255"] == pytest.approx(1 / n) and list(hist)[-1] == "65-255"
    assert sum(hist.values()) == pytest.approx(1.0)


def test_low_precision_bounds_name_what_they_check():
    assert BF16_BOUNDS.describe() == ">= 95% within 2 LSB, PSNR >= 40 dB"
    assert INT8_BOUNDS.describe() == "PSNR >= 35 dB"
    with pytest.raises(ExportError, match="min_within_2 must be a fraction"):
        Bounds(max_abs=None, min_within_2=95)
    a = np.full((1, 8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[0, :4] += 3  # half the values 3 LSB off
    s = compare_uint8(b, a)
    assert s.frac_within_2 == pytest.approx(0.5)
    assert s.failures(BF16_BOUNDS) == ["50.00% within 2 LSB < 95%"]


def test_task_bound_names_the_change():
    a = np.full((4, 8, 8, 3), 100, np.uint8)
    check = LowpCheck("x.int8.onnx", "int8", "ort (CPU)", compare_uint8(a, a), lsb_histogram(a, a), INT8_BOUNDS,
                      TaskFigures("masked", 0.90, 0.80, 10, 1), lowp.TASK_MAX_DROP)
    assert check.failures() == ["classifier success 80.0% vs FP32 90.0%: 10.0 points > 3"]
    with pytest.raises(ExportError, match=r"x.int8.onnx: INT8 verification on ort against eager FP32 failed: "
                                          r"classifier success 80.0% vs FP32 90.0%: 10.0 points > 3 \(bounds: PSNR >= 35 dB, "
                                          r"classifier success within 3 points of FP32"):
        lowp.require(check)
    ok = check_outputs(a, a, artefact="y", precision="bf16", runtime="openvino", direction=None)
    assert ok.passed and math.isinf(ok.stats.psnr_db) and ok.task is None


def test_task_figures_count_success_by_direction():
    # The parity suite's INT8 task bound scores the 'unmask' direction in its slow tests only:
    # both directions' scoring is checked here with a classifier that returns set probabilities.
    class Scores:
        def __init__(self):
            self.calls = iter([[0.9, 0.8, 0.2, 0.6], [0.9, 0.3, 0.2, 0.4]])

        def p_masked(self, images):
            assert len(images) == 4
            return np.array(next(self.calls))

    x = np.zeros((4, 8, 8, 3), np.uint8)
    assert lowp.task_figures("mask", x, x, Scores()) == TaskFigures("masked", 0.75, 0.25, 4, 2)
    assert lowp.task_figures("unmask", x, x, Scores()) == TaskFigures("unmasked", 0.25, 0.75, 4, 2)


def test_lowp_options_are_checked():
    with pytest.raises(ExportError, match="--int8 needs calibration faces: --calib DIR"):
        LowpOptions(int8=True)
    with pytest.raises(ExportError, match="--calib given twice for mask"):
        LowpOptions(int8=True, calib=(("mask", "a"), ("mask", "b")))
    opts = LowpOptions(int8=True, calib=(("*", "faces"), ("unmask", "masked")))
    assert opts.folder("calib", "mask") == "faces" and opts.folder("calib", "unmask") == "masked"
    with pytest.raises(ExportError, match="this export has no 'unmask' generator"):
        opts.check_directions(["mask"])
    notes = LowpOptions(int8=True, calib=(("*", "faces"),)).check_directions(["mask", "unmask"])
    assert "one --calib folder serves both generators" in notes[0]


def test_held_out_split_is_fixed_and_disjoint(tmp_path):
    from cyclemask.export.quantize import load_face_sets

    d = _faces_dir(tmp_path / "faces", 30)
    a = load_face_sets(d, 16, calib_count=100, holdout_count=100)
    b = load_face_sets(d, 16, calib_count=100, holdout_count=100)
    assert a.holdout_names == b.holdout_names and 0 < len(a.holdout) < 30
    assert len(a.calib) + len(a.holdout) == 30 and a.calib.shape[1:] == (16, 16, 3)
    with pytest.raises(ExportError, match="must not be the calibration faces"):
        load_face_sets(d, 16, holdout_dir=d)
    with pytest.raises(ExportError, match="calibration folder does not exist"):
        load_face_sets(tmp_path / "nope", 16)


# ------------------------------------------------------------------------------------------------
# Quantisation
# ------------------------------------------------------------------------------------------------


@needs_nncf
def test_quantized_graph_keeps_the_contract_and_first_last_convs_fp32(graphs, tmp_path, rng):
    from cyclemask.export.quantize import Int8Config, quantize_graph
    from cyclemask.export.verify import graph_outputs

    p32, p16 = graphs
    calib = rng.integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)
    q = quantize_graph(p32, tmp_path / "mask.int8.onnx", calib, Int8Config(calib_count=8))
    m = onnx.load(str(q))
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["precision"] == "int8" and meta["direction"] == "mask"
    assert json.loads(meta["int8_calibration"])["faces"] == 8 and json.loads(meta["int8_config"])["fp32_convs"] == "first,last"
    producers = {o: n.op_type for n in m.graph.node for o in n.output}
    convs = [n for n in m.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    fed = [any(producers.get(i) == "DequantizeLinear" for i in c.input) for c in convs]
    assert not fed[0] and not fed[-1] and all(fed[1:-1]), fed
    assert not any(producers.get(i) == "DequantizeLinear" for n in m.graph.node
                   if n.op_type == "InstanceNormalization" for i in n.input)
    out = graph_outputs(q, calib[:3], batch_size=2)
    assert out.shape == (3, SIZE, SIZE, 3) and out.dtype == np.uint8
    with pytest.raises(ExportError, match="starts from the FP32 graph; this one is fp16"):
        quantize_graph(p16, tmp_path / "x.onnx", calib)


# ------------------------------------------------------------------------------------------------
# cyclemask-export --int8 / --bf16
# ------------------------------------------------------------------------------------------------


def test_cli_low_precision_usage_errors(bundle, tmp_path):
    r = CliRunner().invoke(main, ["--checkpoint", str(bundle), "--calib", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--calib / --holdout are for --int8 and --bf16" in r.output
    r = CliRunner().invoke(main, ["--checkpoint", str(bundle), "--int8", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "--int8 needs calibration faces" in r.output
    r = CliRunner().invoke(main, ["--checkpoint", str(bundle), "--int8", "--calib", "masks=x", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "the part before '=' must be mask or unmask" in r.output
    r = CliRunner().invoke(main, ["--from-onnx", str(tmp_path / "m.fp16.onnx"), "--int8"])
    assert r.exit_code == 2 and "start from the checkpoint" in r.output


def test_cli_int8_without_nncf_says_how_to_get_it(bundle, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    r = CliRunner().invoke(main, ["--checkpoint", str(bundle), "--int8", "--calib", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "pip install 'cyclemask[int8]'" in r.output


@needs_nncf
def test_int8_out_of_bounds_writes_nothing_and_names_the_bound(bundle, tmp_path, monkeypatch):
    faces = _faces_dir(tmp_path / "faces", 16)
    monkeypatch.setattr(lowp, "INT8_BOUNDS", Bounds(max_abs=None, min_psnr_db=99.0))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["--checkpoint", str(bundle), "--direction", "mask", "--int8", "--calib", str(faces),
                                  "--out", str(out), "--verify-random", "0", "--calib-count", "8"])
    assert r.exit_code == 1
    assert "mask.int8.onnx: INT8 verification on " in r.output and "< 99 dB" in r.output and "(bounds: PSNR >= 99 dB" in r.output
    assert not list(out.glob("*.onnx")) and not list(out.glob(".*partial*"))


@needs_nncf
def test_int8_export_writes_a_verified_graph_that_runs(bundle, tmp_path, monkeypatch):
    # A random tiny generator cannot meet the trained-generator bounds (see the shared test for
    # those): loosened here to follow the artefact from export to run.
    faces = _faces_dir(tmp_path / "faces", 16)
    monkeypatch.setattr(lowp, "INT8_BOUNDS", Bounds(max_abs=None, min_psnr_db=10.0))
    monkeypatch.setattr(lowp, "TASK_MAX_DROP", 1.0)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["--checkpoint", str(bundle), "--direction", "mask", "--int8", "--calib", str(faces),
                                  "--out", str(out), "--verify-random", "0", "--calib-count", "8"])
    assert r.exit_code == 0, r.output
    assert "onnx-int8" in r.output and "|diff| histogram (LSB): 0: " in r.output and "task: called masked: FP32" in r.output
    assert "held-out faces: " in r.output and "(a fixed 20% by file name, not calibrated on)" in r.output
    q = out / "mask.int8.onnx"
    meta = {p.key: p.value for p in onnx.load(str(q)).metadata_props}
    checks = json.loads(meta["int8_verification"])
    assert meta["precision"] == "int8" and {c["runtime"].split(" ")[0] for c in checks} >= {"ort"}
    from cyclemask.engine.cli import main as run_main

    r = CliRunner().invoke(run_main, ["--no-progress", "--model", str(q), "--images", str(faces), "--aligned",
                                      "--backend", "ort", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "int8 graph" in r.output and "note:    INT8 graph, verified at export: PSNR" in r.output


@pytest.fixture
def bf16_export(monkeypatch, tmp_path):
    """lowp.export_steps for --bf16 on a tiny generator, OpenVINO counted as installed, the CPU's
    BF16 as `caps` says, and the BF16 measurement injected: run(caps, measured) returns the
    result; `measured(reference)` gives the BF16 outputs (None: nothing may be measured)."""
    import dataclasses

    from cyclemask.engine import cpu_features
    from cyclemask.engine.backends import REGISTRY
    from export_helpers import make_generator

    monkeypatch.setitem(REGISTRY, "openvino", dataclasses.replace(REGISTRY["openvino"], available=lambda: None))
    held = np.random.default_rng(3).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    # The staged FP32 graph the figures would be written into (any graph will do for that).
    staged = tmp_path / "staged.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, [None, SIZE, SIZE, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.UINT8, [None, SIZE, SIZE, 3])
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])],
                                                            "staged", [x], [y])), str(staged))

    def run(caps, measured):
        monkeypatch.setattr(cpu_features, "openvino_capabilities", lambda core=None: caps)

        def check_graph(model, backend, precision, images, reference, **kw):
            assert measured is not None, "BF16 was measured on a CPU without it"
            return check_outputs(measured(reference), reference, artefact=kw["artefact"], precision=precision,
                                 runtime=f"{backend} (injected)", direction=kw["direction"])

        monkeypatch.setattr(lowp, "check_graph", check_graph)
        return lowp.export_steps("mask", make_generator(0), staged, tmp_path / "staged.int8.onnx",
                                 final_fp32=tmp_path / "mask.onnx", final_int8=tmp_path / "mask.int8.onnx",
                                 options=LowpOptions(bf16=True), size=SIZE, fallback_faces=held, threads=1,
                                 tick=lambda _: None)

    run.recorded = lambda: {p.key for p in onnx.load(str(staged)).metadata_props} & {"bf16_verification"}
    return run


def test_bf16_out_of_bounds_is_refused_naming_the_bound(bf16_export):
    # A BF16 run that drifts from FP32 must stop the export (nothing written), not be recorded.
    with pytest.raises(ExportError) as err:
        bf16_export(["BF16", "FP32"], lambda ref: ref ^ np.uint8(0x10))
    msg = str(err.value)
    assert msg.startswith("mask.onnx: BF16 verification on openvino against eager FP32 failed: ")
    assert "< 40 dB" in msg and f"(bounds: {BF16_BOUNDS.describe()}" in msg
    assert not bf16_export.recorded()  # no graph was given BF16 figures


def test_bf16_is_not_measured_where_the_cpu_has_none(bf16_export):
    # OpenVINO would run FP32 under the BF16 hint: a measurement would verify FP32 and be
    # recorded as BF16. The export says so and records nothing.
    res = bf16_export(["FP32", "INT8"], None)
    assert not res.bf16_checks
    assert any(n.startswith("mask: BF16 not verified here: OpenVINO's CPU plugin reports no BF16") for n in res.notes)
    assert not bf16_export.recorded()


@pytest.mark.slow  # the shipped generators quantised and checked (~8 s); test_int8_export_writes_a_verified_graph_that_runs stays fast
@pytest.mark.shared
@needs_nncf
@needs_openvino
def test_int8_and_bf16_of_the_shipped_generators_meet_the_real_bounds(shared_data, tmp_path):
    """The trained demo generators, the faces of ../shared, the bounds as shipped."""
    from cyclemask.demo_model import BUNDLE_NAME, assets_dir
    from cyclemask.engine.cpu_features import bf16_support

    faces = shared_data / "faces" / "observations_pairs" / "without_mask"
    out = tmp_path / "out"
    args = ["--checkpoint", str(assets_dir() / BUNDLE_NAME), "--direction", "mask", "--int8", "--calib", str(faces),
            "--calib-count", "32", "--holdout-count", "40", "--out", str(out), "--verify-random", "0"]
    if bf16_support()[0]:
        args.append("--bf16")
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert r.output.count("bounds: PSNR >= 35 dB, classifier success within 3 points of FP32  PASS") >= 1
    if bf16_support()[0]:
        assert "bounds: >= 95% within 2 LSB, PSNR >= 40 dB  PASS" in r.output
        meta = {p.key: p.value for p in onnx.load(str(out / "mask.onnx")).metadata_props}
        assert json.loads(meta["bf16_verification"])["passed"] is True
