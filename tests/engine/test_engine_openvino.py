"""The OpenVINO backend, torch.compile in TorchBackend, and how `auto` chooses on a CPU machine.

OpenVINO tests skip with the reason when the openvino package is not installed; the compile
tests are marked slow (torch.compile of even a tiny generator takes 10-30 s on 2 cores).
"""

from __future__ import annotations

import importlib.util
import sys

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from cyclemask.artifacts import ArtefactError
from cyclemask.engine.backends import BackendOptions, OrtBackend, TorchBackend, create_backend
from cyclemask.engine.cli import main
from cyclemask.errors import BackendError, ConfigError, InputError
from cyclemask.image_tensors import eager_translate

SIZE = 64  # the tiny generators of conftest.py

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None,
    reason="openvino is not installed (pip install openvino): the OpenVINO backend cannot run here",
)


def _lsb(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.fixture(scope="module")
def ov_cls():
    pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")
    from cyclemask.engine.backends.openvino import OpenVinoBackend

    return OpenVinoBackend


@pytest.mark.parametrize("mode", ["latency", "throughput"])
def test_openvino_matches_eager_within_one_lsb(ov_cls, mask_graph, tiny_pair, batch64, mode):
    with ov_cls(mask_graph, mode=mode, threads=1) as be:
        assert be.direction == "mask" and be.image_size == SIZE
        assert f"{mode} mode" in be.description and "1 threads" in be.description
        out3 = be.infer(batch64)
        out1 = be.infer(batch64[:1])  # dynamic batch: another size on the same compiled model
    ref = eager_translate(tiny_pair["mask"], batch64)
    assert out3.shape == (3, SIZE, SIZE, 3) and out3.dtype == np.uint8
    assert _lsb(out3, ref) <= 1 and _lsb(out1, ref[:1]) <= 1
    assert not be.is_active and be.providers == ["OpenVINO CPU"]


def test_openvino_throughput_mode_keeps_batches_in_flight_in_order(ov_cls, mask_graph, rng):
    batches = [rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8) for n in (2, 1, 3, 2, 1)]
    with ov_cls(mask_graph, mode="throughput", threads=2, requests=2) as be:
        assert be.max_in_flight == 2
        singles = [be.infer(b) for b in batches]
        # More handles open than requests: the backend finishes the oldest instead of reusing
        # its buffer, so every handle still returns its own batch's output.
        handles = [be.submit(b) for b in batches]
        outs = [h.result() for h in handles]
        again = handles[0].result()
    for s, o in zip(singles, outs):
        np.testing.assert_array_equal(s, o)
    np.testing.assert_array_equal(again, outs[0])
    # Outputs are the caller's: not views of a request buffer that the next batch overwrites.
    assert all(o.flags.owndata or o.base is None or o.base.flags.owndata for o in outs)
    assert not np.shares_memory(outs[0], outs[2])


def test_openvino_throughput_mode_splits_a_batch_over_the_free_requests(ov_cls, mask_graph, rng):
    # One batch keeps every stream busy (otherwise the last batch of a folder runs on one).
    batch = rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    with ov_cls(mask_graph, mode="latency", threads=2) as lat:
        ref = lat.infer(batch)
    with ov_cls(mask_graph, mode="throughput", threads=2, requests=2) as be:
        h = be.submit(batch)
        assert len(h._handle._requests) == 2 and not be._free  # the backend's own handle inside the checked one
        np.testing.assert_array_equal(h.result(), ref)
        assert len(be._free) == 2 and not be._owner
        # One image cannot be split: it takes one request and leaves the other for the next.
        h1, h2 = be.submit(batch[:1]), be.submit(batch[1:2])
        assert len(h1._handle._requests) == len(h2._handle._requests) == 1
        np.testing.assert_array_equal(np.concatenate([h1.result(), h2.result()]), ref[:2])


_SIGNAL_AFTER_TWO_MODELS = """
import os, signal, sys
import numpy as np
import cyclemask.engine.backends.openvino as bo
if sys.argv[2] == "unguarded":
    bo._LIBC = None  # what the backend did before keeps_signal_stack
a = bo.OpenVinoBackend(sys.argv[1], mode="latency", threads=1); a.activate()
b = bo.OpenVinoBackend(sys.argv[1], mode="latency", threads=1); b.activate()
x = np.zeros((1, a.image_size, a.image_size, 3), np.uint8)
a.infer(x); b.infer(x)
a.deactivate(); b.deactivate()  # out of order: A's signal stack buffer is freed first
got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
os.kill(os.getpid(), signal.SIGUSR1)
print("handled", len(got))
"""


@pytest.mark.slow  # two fresh interpreters (~5 s)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="alternate signal stacks are checked on Linux only")
def test_signals_still_work_after_two_models_are_freed_out_of_order(ov_cls, mask_graph):
    # OpenVINO leaves the thread's alternate signal stack on a freed buffer; without the
    # backend's guard the next Python signal handler crashed the process (SIGSEGV). The
    # unguarded run first shows the bug is still there, so that the guarded run means something.
    import subprocess

    def run(guard: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _SIGNAL_AFTER_TWO_MODELS, str(mask_graph), guard],
                              capture_output=True, text=True, timeout=120)

    unguarded = run("unguarded")
    if unguarded.returncode != -11:
        pytest.skip(f"this OpenVINO no longer leaves a freed signal stack behind (unguarded run exit "
                    f"{unguarded.returncode}): the guarded case would prove nothing, keeps_signal_stack may go")
    guarded = run("guarded")
    assert guarded.returncode == 0 and "handled 1" in guarded.stdout, guarded.stderr[-2000:]


def test_openvino_keeps_the_callers_signal_stack(ov_cls, mask_graph, batch64):
    from cyclemask.engine.backends.openvino import current_signal_stack

    if current_signal_stack() is None:
        pytest.skip("sigaltstack is not available here (Linux only)")
    before = current_signal_stack()
    a, b = ov_cls(mask_graph, mode="latency", threads=1), ov_cls(mask_graph, mode="throughput", threads=1)
    a.activate(); b.activate()
    a.infer(batch64); b.submit(batch64).result()
    assert current_signal_stack() == before
    a.deactivate(); b.deactivate()
    assert current_signal_stack() == before


def test_openvino_errors_name_the_file(ov_cls, mask_graph, tmp_path, batch64):
    with pytest.raises(BackendError, match="missing.onnx: no such ONNX graph"):
        ov_cls(tmp_path / "missing.onnx").activate()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph at all")
    with pytest.raises(BackendError, match="junk.onnx: OpenVINO cannot read this graph"):
        ov_cls(junk).activate()
    # A valid ONNX graph that breaks the uint8 contract (float input).
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])
    y = helper.make_tensor_value_info("translated", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])
    g = helper.make_graph([helper.make_node("Identity", ["image"], ["translated"])], "g", [x], [y])
    floaty = tmp_path / "float.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(floaty))
    with pytest.raises(ArtefactError, match=r"float.onnx: not a cyclemask graph: expected input 'image' uint8"):
        ov_cls(floaty).activate()
    with pytest.raises(BackendError, match="translates 'mask', but --unmask was asked for"):
        ov_cls(mask_graph, "unmask").activate()
    with pytest.raises(ConfigError, match="OpenVINO mode must be one of latency, throughput"):
        ov_cls(mask_graph, mode="fastest")
    with pytest.raises(ConfigError, match="infer requests must be >= 1"):
        ov_cls(mask_graph, requests=0)
    be = ov_cls(mask_graph)
    with pytest.raises(BackendError, match="activate"):
        be.infer(batch64)
    with be:
        with pytest.raises(InputError, match="expected images of 64x64; got 32x32"):
            be.infer(batch64[:, :32, :32])
        with pytest.raises(InputError, match="expected dtype uint8; got float32"):
            be.submit(batch64.astype(np.float32))


def test_openvino_missing_package_is_a_clear_error(mask_graph, monkeypatch):
    from cyclemask.engine.backends.openvino import OpenVinoBackend

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendError, match=r"mask.onnx: the openvino backend needs the openvino package \(pip install"):
        OpenVinoBackend(mask_graph).activate()


@needs_openvino
def test_create_backend_openvino_and_auto_on_cpu(mask_graph, bundle_path, tiny_pair, batch64):
    from cyclemask.engine.backends.openvino import OpenVinoBackend

    be, why = create_backend(mask_graph, "openvino", None, BackendOptions(ov_mode="latency", threads=1))
    assert isinstance(be, OpenVinoBackend) and be.mode == "latency" and why == "--backend openvino"
    with pytest.raises(BackendError, match="is a checkpoint, but --backend openvino runs ONNX graphs"):
        create_backend(bundle_path, "openvino", "mask")
    with pytest.raises(ConfigError, match="--compile applies to the torch backend"):
        create_backend(mask_graph, "auto", options=BackendOptions(compile=True))
    be, why = create_backend(mask_graph, "auto", None, BackendOptions(probe=False))
    assert isinstance(be, OpenVinoBackend) and not be.is_active and "--no-probe" in why
    # The measured choice: both candidates timed, the winner handed back active, the reason
    # carries both figures.
    be, why = create_backend(mask_graph, "auto", None, BackendOptions(threads=1))
    try:
        assert be.is_active and isinstance(be, (OpenVinoBackend, OrtBackend))
        assert f"auto: {be.name}," in why and "warm-up" in why and "ms per image vs" in why
        other = "ort" if be.name == "openvino" else "openvino"
        assert f"vs {other} " in why
        assert _lsb(be.infer(batch64), eager_translate(tiny_pair["mask"], batch64)) <= 1
    finally:
        be.deactivate()


@needs_openvino
def test_auto_takes_openvino_untimed_for_a_heavy_graph(mask_graph, monkeypatch):
    import cyclemask.engine.backends.select as backends
    from cyclemask.engine.backends.openvino import OpenVinoBackend

    monkeypatch.setattr(backends, "PROBE_HEAVY_GMACS", 0.0)  # every graph counts as heavy
    built = []
    real_ort = backends._ort
    monkeypatch.setattr(backends, "_ort", lambda *a: built.append(a) or real_ort(*a))
    be, why = create_backend(mask_graph, "auto")
    # No warm-up inference at all: the choice comes from the graph's size, and the backend is
    # handed back unloaded (the run loads it once).
    assert isinstance(be, OpenVinoBackend) and not be.is_active
    assert "GMACs per image" in why and "not timed" in why and not built


@needs_openvino
def test_auto_judges_a_graph_without_a_recorded_size_by_its_first_image(mask_graph, monkeypatch, tmp_path):
    import cyclemask.engine.backends.select as backends
    from cyclemask.engine.backends.openvino import OpenVinoBackend

    plain = tmp_path / "plain.onnx"
    m = onnx.load(str(mask_graph))
    del m.metadata_props[:]
    onnx.save(m, str(plain))
    monkeypatch.setattr(backends, "PROBE_HEAVY_S", 0.0)  # every first image counts as slow
    built = []
    real_ort = backends._ort
    monkeypatch.setattr(backends, "_ort", lambda *a: built.append(a) or real_ort(*a))
    be, why = create_backend(plain, "auto")
    try:
        assert isinstance(be, OpenVinoBackend) and be.is_active
        assert "too long to time ONNX Runtime" in why and not built
    finally:
        be.deactivate()


@needs_openvino
def test_auto_remembers_its_measured_choice(mask_graph, monkeypatch, tmp_path):
    import cyclemask.engine.backends.select as backends

    monkeypatch.setenv("CYCLEMASK_CACHE_DIR", str(tmp_path / "cache"))
    be, why = create_backend(mask_graph, "auto", None, BackendOptions(threads=1))
    be.deactivate()
    assert "warm-up it took" in why and (tmp_path / "cache" / "probe.json").is_file()
    built = []
    real_ort = backends._ort
    monkeypatch.setattr(backends, "_ort", lambda *a: built.append(a) or real_ort(*a))
    again, why2 = create_backend(mask_graph, "auto", None, BackendOptions(threads=1))
    # A probe hands its winner back active; a remembered choice builds only the winner, unloaded.
    assert again.name == be.name and not again.is_active and "remembered" in why2
    assert len(built) == (1 if be.name == "ort" else 0)
    # Another thread setting is another measurement; --no-cache never reads or writes the file.
    other, why3 = create_backend(mask_graph, "auto", None, BackendOptions(threads=2, cache=False))
    other.deactivate()
    assert "warm-up it took" in why3


def test_auto_without_openvino_takes_ort_and_says_why(mask_graph, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    be, why = create_backend(mask_graph, "auto")
    assert isinstance(be, OrtBackend) and "openvino is not installed" in why


def test_auto_with_an_explicit_ort_provider_keeps_ort(mask_graph):
    be, why = create_backend(mask_graph, "auto", None, BackendOptions(ort_provider="cpu"))
    assert isinstance(be, OrtBackend) and "--ort-provider cpu was given" in why


def test_auto_checkpoint_on_cpu_points_to_the_faster_graph_path(bundle_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: auto runs a checkpoint on it")
    be, why = create_backend(bundle_path, "auto", "mask")
    assert isinstance(be, TorchBackend) and "cyclemask-export" in why


def test_compile_settings_are_checked(bundle_path):
    with pytest.raises(ConfigError, match="--compile and --cuda-graphs are exclusive"):
        TorchBackend(bundle_path, "mask", device="cuda", compile=True, cuda_graphs=True, max_batch=2)


@pytest.mark.slow
def test_torch_compile_matches_eager_and_reports_its_time(bundle_path, tiny_pair, batch64, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    with TorchBackend(bundle_path, "mask", compile=True, max_batch=3, threads=2) as be:
        assert be.compile_s is not None and be.compile_s > 0
        assert "torch.compile in" in be.description and be.compile_cache == str(tmp_path / "inductor")
        out = be.infer(batch64)
        part = be.infer(batch64[:1])  # padded to the compiled batch, cut back
    ref = eager_translate(tiny_pair["mask"], batch64)
    assert part.shape == (1, SIZE, SIZE, 3) and out.shape == (3, SIZE, SIZE, 3)
    assert _lsb(out, ref) <= 1 and _lsb(part, ref[:1]) <= 1
    assert any((tmp_path / "inductor").rglob("*")), "inductor wrote nothing to its cache folder"


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def _folder(tmp_path, rng, n=5):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(n):
        cv2.imwrite(str(d / f"{i}.png"), rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    return d


@needs_openvino
def test_cli_runs_openvino_and_auto_says_what_it_chose(mask_graph, tmp_path, rng):
    src = _folder(tmp_path, rng)
    res = CliRunner().invoke(main, ["--no-progress", "--model", str(mask_graph), "--images", str(src), "--aligned",
                                    "--backend", "openvino", "--ov-mode", "latency", "--out", str(tmp_path / "o1")])
    assert res.exit_code == 0, res.output
    assert "openvino (CPU, latency mode" in res.output and "written:  5" in res.output
    assert len(list((tmp_path / "o1").glob("*.png"))) == 5
    res = CliRunner().invoke(main, ["--no-progress", "--model", str(mask_graph), "--images", str(src), "--aligned",
                                    "--out", str(tmp_path / "o2"), "--batch", "2"])
    assert res.exit_code == 0, res.output
    assert "[auto: " in res.output and "warm-up" in res.output and "written:  5" in res.output


def test_cli_new_options_documented_and_checked(mask_graph, tmp_path, rng):
    res = CliRunner().invoke(main, ["--help"])
    text = " ".join(res.output.split())
    for opt in ("--compile", "--ov-mode", "--ov-requests", "--no-probe", "openvino"):
        assert opt in text, opt
    assert "[default: throughput]" in text
    src = _folder(tmp_path, rng, 1)
    res = CliRunner().invoke(main, ["--no-progress", "--model", str(mask_graph), "--images", str(src), "--aligned",
                                    "--compile", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "--compile applies to the torch backend" in res.output
    res = CliRunner().invoke(main, ["--no-progress", "--model", str(mask_graph), "--images", str(src), "--aligned",
                                    "--ov-mode", "fast"])
    assert res.exit_code == 2


@needs_openvino
def test_openvino_is_imported_without_its_model_converter_which_stays_importable():
    # In a fresh interpreter: the runtime's import leaves openvino.tools.ovc out (it was half of
    # the import time), the backend's classes are there, and a later import of the converter works.
    import subprocess

    code = ("import sys\n"
            "from cyclemask.engine.openvino_import import import_openvino\n"
            "ov = import_openvino()\n"
            "print('ovc' if 'openvino.tools.ovc' in sys.modules else 'no-ovc', hasattr(ov, 'Core'))\n"
            "import openvino.tools.ovc as ovc\n"
            "print(callable(ovc.convert_model), import_openvino() is ov)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["no-ovc", "True", "True", "True"]
