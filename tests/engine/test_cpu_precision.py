"""The CPU's low precisions at run time: BF16 detection and its clear refusal, --precision per
backend, the backend line, per-backend default batches, OpenVINO's model cache keyed on the
graph's content, and reading graph metadata without onnx."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from cyclemask.engine import cpu_features
from cyclemask.engine.backends import BackendOptions, OrtBackend, TorchBackend, create_backend
from cyclemask.engine.cli import main
from cyclemask.engine.run_defaults import CPU_BATCH, default_batch, precision_notes
from cyclemask.errors import BackendError, ConfigError
from cyclemask.image_tensors import eager_translate

SIZE = 64
XEON = "processor\t: 0\nmodel name\t: Test Xeon\nflags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8\n"
OLD_X86 = "processor\t: 0\nmodel name\t: Old Core\nflags\t\t: fpu sse avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\nCPU part\t: 0xd4f\n"

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino is not installed (pip install openvino)")


def _lsb(a, b) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.fixture
def no_bf16_cpu(monkeypatch):
    """This machine seen as a CPU without native BF16 (cpuinfo and OpenVINO both say so)."""
    feats = cpu_features._parse_cpuinfo(OLD_X86)
    monkeypatch.setattr(cpu_features, "cpu_features", lambda *a: feats)
    monkeypatch.setattr(cpu_features, "openvino_capabilities", lambda core=None: ["FP32", "INT8"])
    return feats


def _has_bf16() -> bool:
    return cpu_features.bf16_support()[0]


needs_bf16 = pytest.mark.skipif(not _has_bf16(), reason=f"no native BF16 here: {cpu_features.bf16_support()[1]}")


# ------------------------------------------------------------------------------------------------
# Detection
# ------------------------------------------------------------------------------------------------


def test_cpuinfo_flags_are_read_per_architecture():
    xeon, old, arm = (cpu_features._parse_cpuinfo(t) for t in (XEON, OLD_X86, ARM))
    assert xeon.model == "Test Xeon" and xeon.bf16 == ["amx_bf16", "avx512_bf16"]
    assert xeon.int8 == ["amx_int8", "avx512_vnni"] and "avx512_bf16" in xeon.describe()
    assert old.known and old.bf16 == [] and "no native BF16" in old.describe()
    assert arm.bf16 == ["bf16"] and arm.int8 == ["i8mm"]


def test_bf16_support_takes_openvinos_word_for_openvino():
    ok, why = cpu_features.bf16_support(["FP32", "INT8"])
    assert not ok and "OpenVINO's CPU plugin reports no BF16" in why
    ok, why = cpu_features.bf16_support(["BF16", "FP32"])
    assert ok and "OpenVINO reports BF16" in why


def test_unreadable_cpuinfo_is_unknown_not_a_guess(tmp_path):
    cpu_features.cpu_features.cache_clear()
    try:
        feats = cpu_features.cpu_features(str(tmp_path / "missing"))
    finally:
        cpu_features.cpu_features.cache_clear()
    assert not feats.known and feats.bf16 == [] and "unknown" in feats.describe()


def test_torch_bf16_is_refused_clearly_on_a_cpu_without_it(no_bf16_cpu, bundle_path):
    with pytest.raises(ConfigError, match=r"--precision bf16 \(torch on the CPU\): Old Core has no native BF16.*use --precision fp32"):
        TorchBackend(bundle_path, "mask", precision="bf16")


@needs_openvino
def test_openvino_bf16_is_refused_clearly_on_a_cpu_without_it(no_bf16_cpu, mask_graph):
    from cyclemask.engine.backends.openvino import OpenVinoBackend

    with pytest.raises(ConfigError, match=r"--precision bf16 \(openvino\): OpenVINO's CPU plugin reports no BF16"):
        OpenVinoBackend(mask_graph, precision="bf16").activate()


def test_bf16_is_the_cpus_precision_and_fp16_cudas(bundle_path):
    with pytest.raises(ConfigError, match="add --device cpu, or on the CUDA device use --precision fp16"):
        TorchBackend(bundle_path, "mask", device="cuda", precision="bf16")
    with pytest.raises(ConfigError, match="precision must be one of fp32, fp16, bf16"):
        TorchBackend(bundle_path, "mask", precision="int8")


# ------------------------------------------------------------------------------------------------
# Running at BF16
# ------------------------------------------------------------------------------------------------


@needs_bf16
def test_torch_bf16_runs_in_bfloat16_close_to_fp32(bundle_path, tiny_pair, batch64):
    with TorchBackend(bundle_path, "mask", precision="bf16", threads=1) as be:
        out = be.infer(batch64)
        assert "bf16" in be.description and be._dtype.is_floating_point and str(be._dtype) == "torch.bfloat16"
    ref = eager_translate(tiny_pair["mask"], batch64)
    diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    # A random tiny generator: not the trained bounds, but BF16 (8-bit mantissa) and not garbage.
    assert 0 < diff.max() <= 64 and diff.mean() < 4


@needs_openvino
@needs_bf16
def test_openvino_bf16_says_so_and_differs_from_fp32_only_a_little(mask_graph, tiny_pair, batch64):
    from cyclemask.engine.backends.openvino import OpenVinoBackend

    with OpenVinoBackend(mask_graph, mode="latency", threads=1, precision="bf16") as be:
        out = be.infer(batch64)
        assert "fp32 graph, bf16 inference" in be.description and be.bf16_evidence
    with OpenVinoBackend(mask_graph, mode="latency", threads=1) as fp32:
        ref32 = fp32.infer(batch64)
        assert "fp32 graph, fp32 inference" in fp32.description
    diff = np.abs(out.astype(np.int16) - ref32.astype(np.int16))
    assert diff.max() > 0 and diff.mean() < 4
    assert _lsb(ref32, eager_translate(tiny_pair["mask"], batch64)) <= 1  # FP32 stays FP32 (OpenVINO's default is BF16 here)


def test_precision_is_checked_against_the_model_and_backend(mask_graph, bundle_path, tmp_path):
    with pytest.raises(ConfigError, match="--backend ort runs a graph in its own precision; --precision bf16 runs on "
                                          "--backend openvino"):
        create_backend(mask_graph, "ort", options=BackendOptions(precision="bf16"))
    with pytest.raises(ConfigError, match="is a graph and runs its own precision; for FP16 run the FP16 graph"):
        create_backend(mask_graph, "auto", options=BackendOptions(precision="fp16"))
    with pytest.raises(ConfigError, match="--precision bf16 runs on OpenVINO; ONNX Runtime"):
        create_backend(mask_graph, "auto", options=BackendOptions(precision="bf16", ort_provider="cpu"))
    with pytest.raises(ConfigError, match="precision must be one of"):
        create_backend(mask_graph, "auto", options=BackendOptions(precision="int4"))


@needs_openvino
def test_auto_with_bf16_takes_openvino_and_never_picks_bf16_itself(mask_graph):
    be, why = create_backend(mask_graph, "auto", options=BackendOptions(precision="bf16"))
    assert be.name == "openvino" and be.precision == "bf16" and "--precision bf16 was asked for" in why
    be, why = create_backend(mask_graph, "auto", options=BackendOptions(probe=False))
    assert be.precision == "fp32"


def test_auto_with_bf16_without_openvino_says_what_is_missing(mask_graph, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(BackendError, match="--precision bf16 runs a graph on OpenVINO, which is not installed"):
        create_backend(mask_graph, "auto", options=BackendOptions(precision="bf16"))


# ------------------------------------------------------------------------------------------------
# Default batch, the backend line, notes
# ------------------------------------------------------------------------------------------------


@needs_openvino
def test_default_batch_per_backend(mask_graph, bundle_path):
    from cyclemask.engine.backends.openvino import OpenVinoBackend

    with TorchBackend(bundle_path, "mask") as be:
        assert default_batch(be)[0] == CPU_BATCH
    with OrtBackend(mask_graph, provider="cpu") as be:
        assert default_batch(be)[0] == CPU_BATCH
    with OpenVinoBackend(mask_graph, mode="throughput", threads=2, requests=2) as be:
        assert default_batch(be) == (2, "one image per OpenVINO infer request")
    with OpenVinoBackend(mask_graph, mode="latency", threads=1) as be:
        assert default_batch(be)[0] == 1
    with TorchBackend(bundle_path, "mask", max_batch=3, compile=False) as be:
        assert default_batch(be)[0] == 3  # a backend built for a batch keeps it


def test_default_batch_of_a_tensorrt_engine_is_its_tuned_batch():
    from types import SimpleNamespace

    engine = SimpleNamespace(name="trt", opt_batch=8, max_batch=32, providers=["TensorRT 10.9", "GPU"],
                             max_in_flight=2)
    assert default_batch(engine) == (8, "the batch the TensorRT engine's profile was tuned for")


def test_run_options_leave_the_batch_to_the_backend_unless_given(bundle_path):
    from cyclemask.engine.run import RunOptions

    opts = RunOptions()
    assert opts.batch is None and opts.backend_options().max_batch is None and opts.backend_options().cache
    assert RunOptions(batch=4).backend_options().max_batch == 4
    assert RunOptions(compile=True, device="cpu").backend_options().max_batch == CPU_BATCH  # compiled for it
    assert not RunOptions(cache=False).backend_options().cache
    with TorchBackend(bundle_path, "mask") as be:
        assert opts.batch_for(be) == (CPU_BATCH, "batching does not speed up a CPU backend")
        assert RunOptions(batch=4).batch_for(be) == (4, None)
    with pytest.raises(ConfigError, match="batch must be a positive integer"):
        RunOptions(batch=0)


class _Fake:
    def __init__(self, name, precision="fp32", metadata=None):
        self.name, self.precision, self.metadata = name, precision, metadata or {}


def test_precision_notes_say_what_was_verified():
    import json

    rec = json.dumps({"summary": "PSNR 54.5 dB, 99.9% within 2 LSB on 171 held-out faces (openvino)"})
    assert precision_notes(_Fake("openvino")) == []
    assert precision_notes(_Fake("openvino", "bf16", {"bf16_verification": rec})) == [
        "BF16 verified for this graph at export: PSNR 54.5 dB, 99.9% within 2 LSB on 171 held-out faces (openvino)"]
    assert "has not been verified" in precision_notes(_Fake("openvino", "bf16"))[0]
    int8 = precision_notes(_Fake("ort", metadata={"precision": "int8", "int8_verification": json.dumps([json.loads(rec)])}))
    assert int8 == ["INT8 graph, verified at export: PSNR 54.5 dB, 99.9% within 2 LSB on 171 held-out faces (openvino)"]
    assert "without a recorded verification" in precision_notes(_Fake("ort", metadata={"precision": "int8"}))[0]


@needs_openvino
def test_cli_prints_precision_and_batch(mask_graph, tmp_path, rng):
    import cv2

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"{i}.png"), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    res = CliRunner().invoke(main, ["--no-progress", "--model", str(mask_graph), "--images", str(src), "--aligned",
                                    "--backend", "openvino", "--ov-mode", "latency", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "fp32 graph, fp32 inference" in res.output and "batch:   1 (OpenVINO latency mode" in res.output
    assert "written:  3" in res.output
    res = CliRunner().invoke(main, ["--no-progress", "--model", str(mask_graph), "--images", str(src), "--aligned",
                                    "--backend", "ort", "--precision", "bf16", "--out", str(tmp_path / "o2")])
    assert res.exit_code == 1 and "--precision bf16 runs on --backend openvino" in res.output


# ------------------------------------------------------------------------------------------------
# Start-up: the model cache, metadata without onnx, the graph's cost
# ------------------------------------------------------------------------------------------------


@needs_openvino
def test_openvino_cache_is_keyed_on_the_graphs_content(mask_graph, tmp_path, monkeypatch, batch64):
    import shutil

    from cyclemask.engine.backends.openvino import OpenVinoBackend
    from cyclemask.engine.model_cache import graph_sha256

    monkeypatch.setenv("CYCLEMASK_CACHE_DIR", str(tmp_path / "cache"))
    with OpenVinoBackend(mask_graph, mode="latency", threads=1, cache_dir="auto") as cold:
        want = cold.infer(batch64)
        assert cold.cache_dir.name == graph_sha256(mask_graph)[:24] and cold.loaded_from_cache is False
    with OpenVinoBackend(mask_graph, mode="latency", threads=1, cache_dir="auto") as warm:
        assert warm.loaded_from_cache is True and "compiled model from cache" in warm.description
        np.testing.assert_array_equal(warm.infer(batch64), want)
    # The same path with other content gets its own folder: never its predecessor's blob.
    other = tmp_path / "mask.onnx"
    shutil.copyfile(mask_graph, other)
    m = onnx.load(str(other))
    m.metadata_props.add(key="note", value="changed")
    onnx.save(m, str(other))
    with OpenVinoBackend(other, mode="latency", threads=1, cache_dir="auto") as changed:
        assert changed.cache_dir != warm.cache_dir and changed.loaded_from_cache is False
    monkeypatch.setenv("CYCLEMASK_CACHE_DIR", "off")
    with OpenVinoBackend(mask_graph, mode="latency", threads=1, cache_dir="auto") as off:
        assert off.cache_dir is None and off.loaded_from_cache is None


def test_cache_keeps_the_most_recent_graphs(tmp_path, monkeypatch):
    from cyclemask.engine import model_cache

    monkeypatch.setenv("CYCLEMASK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(model_cache, "MAX_OPENVINO_ENTRIES", 3)
    import hashlib

    made = [model_cache.openvino_cache_dir(hashlib.sha256(bytes([i])).hexdigest()) for i in range(5)]
    left = sorted(p.name for p in (tmp_path / "openvino").iterdir())
    assert len(left) == 3 and made[-1].name in left


def test_metadata_scan_matches_onnx_and_refuses_junk(mask_graph, tmp_path):
    from cyclemask.onnx_props import NotOnnx, scan_metadata_props

    want = {e.key: e.value for e in onnx.load(str(mask_graph)).metadata_props}
    assert scan_metadata_props(mask_graph) == want and want["direction"] == "mask"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
    with pytest.raises(NotOnnx):
        scan_metadata_props(junk)


def test_reading_a_graphs_metadata_does_not_load_onnx(mask_graph):
    """The runtime reads metadata by the scan alone: importing onnx and parsing a 45 MB graph
    would cost most of a second of start-up."""
    import subprocess
    import sys

    code = ("import sys; from cyclemask.artifacts import read_onnx_metadata; "
            f"m = read_onnx_metadata({str(mask_graph)!r}); "
            "print(m['direction'], m['image_size'], 'onnx' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["mask", "64", "False"]


def test_graph_cost_estimate(mask_graph, tmp_path):
    from cyclemask.engine.model_cache import estimated_gmacs

    est = estimated_gmacs(mask_graph)
    # ngf 8, 2 blocks at 64 px: tiny, far under the threshold at which auto stops timing.
    assert est is not None and 0 < est < 0.1
    plain = tmp_path / "plain.onnx"
    m = onnx.load(str(mask_graph))
    del m.metadata_props[:]
    onnx.save(m, str(plain))
    assert estimated_gmacs(plain) is None  # no recorded size: auto times it instead
