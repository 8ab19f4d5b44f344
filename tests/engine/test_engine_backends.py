"""Backends: the shared contract, TorchBackend, OrtBackend, and how `auto` chooses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from cyclemask.artifacts import ArtefactError, checkpoint_image_size
from cyclemask.engine.backends import (
    BackendOptions,
    OrtBackend,
    TorchBackend,
    create_backend,
    model_kind,
)
from cyclemask.errors import BackendError, CheckpointError, ConfigError, InputError
from cyclemask.image_tensors import eager_translate

SIZE = 64  # the tiny generators of conftest.py


def test_torch_backend_equals_eager_reference(bundle_path, tiny_pair, batch64):
    with TorchBackend(bundle_path, "unmask") as be:
        assert be.direction == "unmask" and be.image_size == SIZE
        assert "recorded in the checkpoint" in be.description
        out = be.infer(batch64)
    np.testing.assert_array_equal(out, eager_translate(tiny_pair["unmask"], batch64))


def test_torch_backend_from_generator_object(tiny_pair, batch64):
    with TorchBackend(generator=tiny_pair["mask"], image_size=SIZE, direction="mask") as be:
        np.testing.assert_array_equal(be.infer(batch64), eager_translate(tiny_pair["mask"], batch64))


def test_backend_checks_its_input(bundle_path, batch64):
    be = TorchBackend(bundle_path, "mask")
    with pytest.raises(BackendError, match="activate"):
        be.infer(batch64)
    with be:
        with pytest.raises(InputError, match="expected dtype uint8; got float32"):
            be.infer(batch64.astype(np.float32))
        with pytest.raises(InputError, match="expected images of 64x64; got 32x32"):
            be.infer(batch64[:, :32, :32])
        with pytest.raises(InputError, match=r"expected shape \[N, H, W, 3\]; got \[64, 64, 3\]"):
            be.infer(batch64[0])
    assert not be.is_active


def test_torch_backend_rejects_bad_settings(bundle_path):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        TorchBackend(bundle_path, "mask", precision="fp16")
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
        TorchBackend(bundle_path, "mask", cuda_graphs=True, max_batch=4)
    with pytest.raises(ConfigError, match="multiple of 4"):
        TorchBackend(bundle_path, "mask", image_size=30)
    with pytest.raises(ConfigError, match="direction must be one of mask, unmask"):
        TorchBackend(bundle_path, "sideways")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message; a GPU is present")
def test_torch_backend_cuda_without_gpu(bundle_path):
    with pytest.raises(BackendError, match="torch sees no CUDA GPU"):
        TorchBackend(bundle_path, "mask", device="cuda").activate()


def test_bundle_needs_a_direction(bundle_path):
    with pytest.raises(CheckpointError, match="holds generators for mask and unmask: pass --mask or --unmask"):
        TorchBackend(bundle_path).activate()


def test_image_size_sources(tmp_path, tiny_pair, bundle_path):
    from cyclemask.checkpoint import save_network

    assert checkpoint_image_size({"train_config": {"crop_size": 128, "load_size": 143}}) == 128
    assert checkpoint_image_size({"image_size": 96}) == 96
    assert checkpoint_image_size({"step": 3}) is None
    single = tmp_path / "g.pt"
    save_network(single, tiny_pair["mask"], direction="mask")
    with TorchBackend(single) as be:  # the file holds one direction: no flag needed
        assert be.direction == "mask" and be.image_size == 256 and "default" in be.description
    with TorchBackend(bundle_path, "mask", image_size=32) as be:
        assert be.image_size == 32 and "given" in be.description


def test_ort_cpu_matches_torch_within_one_lsb(mask_graph, bundle_path, batch64):
    with OrtBackend(mask_graph, provider="cpu") as ort_be, TorchBackend(bundle_path, "mask") as torch_be:
        assert ort_be.providers == ["CPUExecutionProvider"]
        assert ort_be.direction == "mask" and ort_be.image_size == SIZE
        a, b = ort_be.infer(batch64), torch_be.infer(batch64)
    diff = np.abs(a.astype(int) - b.astype(int))
    assert a.shape == b.shape == batch64.shape and diff.max() <= 1


def test_ort_runs_the_fp16_graph(mask_graph, bundle_path, batch64, tmp_path):
    from cyclemask.export.fp16 import to_fp16

    fp16 = to_fp16(mask_graph, tmp_path / "mask.fp16.onnx")
    with OrtBackend(fp16, "mask", provider="cpu") as half, TorchBackend(bundle_path, "mask") as ref:
        assert "fp16 graph" in half.description and half.direction == "mask"
        diff = np.abs(half.infer(batch64).astype(int) - ref.infer(batch64).astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.1  # InstanceNorm and pre/post stay FP32 in the graph


def test_ort_auto_reports_what_it_really_got(mask_graph):
    with OrtBackend(mask_graph) as be:
        got = be.providers
        assert got and got[-1] == "CPUExecutionProvider"
        assert be.description.startswith(f"ort ({got[0]}")
        if got[0] == "CPUExecutionProvider":  # GPU providers listed by the build but not loadable
            import onnxruntime as ort

            if len(ort.get_available_providers()) > 1:
                assert any("could not use" in n for n in be.notes)


def test_ort_pool_threads_do_not_spin_between_calls(mask_graph):
    # Spinning threads took the CPU a face-aware run's decode, detection and encoding need.
    with OrtBackend(mask_graph, provider="cpu") as be:
        opts = be._session.get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks ONNX Runtime's silent CPU fallback; a GPU is present")
def test_ort_explicit_provider_that_does_not_load_is_an_error(mask_graph):
    import onnxruntime as ort

    be = OrtBackend(mask_graph, provider="cuda")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        with pytest.raises(BackendError, match="asked ONNX Runtime for CUDAExecutionProvider, but the session runs on CPUExecutionProvider"):
            be.activate()
    else:
        with pytest.raises(BackendError, match="this onnxruntime build has only"):
            be.activate()


def test_ort_direction_mismatch(mask_graph):
    with pytest.raises(BackendError, match="translates 'mask', but --unmask was asked for"):
        OrtBackend(mask_graph, "unmask", provider="cpu").activate()


def test_ort_rejects_a_graph_without_the_uint8_contract(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 64, 64])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "float.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ArtefactError, match=r"float.onnx: not a cyclemask graph: expected input 'image' uint8"):
        OrtBackend(path, provider="cpu").activate()


def test_ort_corrupt_graph(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(BackendError, match="broken.onnx: ONNX Runtime cannot load this graph"):
        OrtBackend(path, provider="cpu").activate()


def test_model_kind(tmp_path, bundle_path, mask_graph):
    assert model_kind(mask_graph) == "graph"
    assert model_kind(bundle_path) == "checkpoint"
    (tmp_path / "m.engine").write_bytes(b"x")
    assert model_kind(tmp_path / "m.engine") == "engine"
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(bundle_path.read_bytes())
    assert model_kind(renamed) == "checkpoint"  # torch.save's zip, found by content
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BackendError, match="notes.txt: cannot tell what kind of model"):
        model_kind(tmp_path / "notes.txt")
    with pytest.raises(BackendError, match="no such model file"):
        model_kind(tmp_path / "missing.onnx")
    with pytest.raises(BackendError, match="is a folder"):
        model_kind(tmp_path)


def test_create_backend_auto_and_explicit(bundle_path, mask_graph, tmp_path):
    be, why = create_backend(mask_graph, "auto", None, BackendOptions(ort_provider="cpu"))
    assert isinstance(be, OrtBackend) and "auto: ort" in why and "ONNX graph" in why
    be, why = create_backend(bundle_path, "auto", "mask", BackendOptions(device="cpu"))
    assert isinstance(be, TorchBackend) and "auto: torch on cpu" in why and "checkpoint" in why
    be, why = create_backend(bundle_path, "torch", "mask", BackendOptions(device="cpu"))
    assert why == "--backend torch"
    with pytest.raises(BackendError, match="is an ONNX graph, but --backend torch runs checkpoints"):
        create_backend(mask_graph, "torch")
    with pytest.raises(BackendError, match="is a checkpoint, but --backend ort runs ONNX graphs"):
        create_backend(bundle_path, "ort")
    with pytest.raises(ConfigError, match="--size applies to checkpoints only"):
        create_backend(mask_graph, "auto", options=BackendOptions(image_size=128))
    with pytest.raises(ConfigError, match="backend must be one of auto, trt, ort, torch"):
        create_backend(mask_graph, "tensorflow")


def test_engine_without_tensorrt_says_so(tmp_path):
    from cyclemask.engine.backends import tensorrt_status

    ok, why = tensorrt_status()
    if ok:
        pytest.skip("TensorRT and CUDA are present: the refusal cannot happen here")
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(BackendError, match="a TensorRT engine needs TensorRT and a CUDA GPU"):
        create_backend(tmp_path / "m.engine", "auto")


@pytest.mark.gpu
def test_torch_cuda_matches_cpu(bundle_path, batch64):
    with TorchBackend(bundle_path, "mask") as cpu, TorchBackend(bundle_path, "mask", device="cuda") as gpu:
        diff = np.abs(cpu.infer(batch64).astype(int) - gpu.infer(batch64).astype(int))
    assert diff.max() <= 1


@pytest.mark.gpu
def test_torch_cuda_graphs_and_fp16(bundle_path, batch64):
    with TorchBackend(bundle_path, "mask", device="cuda") as plain, \
            TorchBackend(bundle_path, "mask", device="cuda", cuda_graphs=True, max_batch=4) as graphed, \
            TorchBackend(bundle_path, "mask", device="cuda", precision="fp16", channels_last=True) as half:
        ref = plain.infer(batch64)
        # The graph runs a padded batch of 4, eager a batch of 3 (or 1): cuDNN may pick other
        # convolution algorithms per batch size, which can move a value across a rounding edge.
        for got, want in ((graphed.infer(batch64), ref), (graphed.infer(batch64[:1]), ref[:1])):
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        diff = np.abs(half.infer(batch64).astype(int) - ref.astype(int))
    assert diff.max() <= 8 and diff.mean() < 1.0


def test_ort_tensorrt_provider_gets_one_profile_for_all_batch_sizes(mask_graph, tmp_path):
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no TensorRT execution provider")
    be = OrtBackend(mask_graph, provider="tensorrt", max_batch=8, trt_cache_dir=tmp_path)
    requested = be._requested(ort)
    name, opts = requested[0]
    assert name == "TensorrtExecutionProvider" and requested[-1][0] == "CPUExecutionProvider"
    assert opts["trt_profile_min_shapes"] == "image:1x64x64x3"
    assert opts["trt_profile_max_shapes"] == "image:8x64x64x3"
    assert opts["trt_engine_cache_path"] == str(tmp_path)


# ---------------------------------------------------------------------------------------------
# auto on a CPU machine: OpenVINO unless another runtime is clearly faster (timings injected)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def auto_on_cpu(monkeypatch, tmp_path):
    """`create_backend(graph, "auto")` on a CPU machine with both runtimes present, the two
    candidates stubbed and the warm-up's timings given: choose(openvino_ms, ort_ms, **options)
    returns (the backend chosen, the reason). `timed` counts the warm-ups that ran."""
    import dataclasses

    import cyclemask.engine.backends.select as select
    from cyclemask.engine import model_cache
    from cyclemask.engine.backends import SyncBackend

    class Candidate(SyncBackend):
        def __init__(self, name, path, direction):
            super().__init__(path, direction)
            self.name = name

        def _activate(self):
            self._image_size = 8

        def _deactivate(self):
            pass

        def _run(self, batch):
            return batch

    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"stands for a small graph: nothing loads it")
    for name in ("ort", "openvino"):
        monkeypatch.setitem(select.REGISTRY, name, dataclasses.replace(select.REGISTRY[name], available=lambda: None))
    monkeypatch.setattr(select, "cuda_gpu_present", lambda: False)
    monkeypatch.setattr(select, "_openvino", lambda p, d, o: Candidate("openvino", p, d))
    monkeypatch.setattr(select, "_ort", lambda p, d, o: Candidate("ort", p, d))
    monkeypatch.setattr(model_cache, "estimated_gmacs", lambda p: 0.1)  # small: timed, not judged by size
    timed = []

    def choose(openvino_ms, ort_ms, **options):
        def warm_up(cands, x):
            timed.append((openvino_ms, ort_ms))
            return {"openvino": openvino_ms / 1000, "ort": ort_ms / 1000}

        monkeypatch.setattr(select, "_time_per_image", warm_up)
        be, why = create_backend(graph, "auto", None, BackendOptions(**options))
        be.deactivate()
        return be.name, why

    choose.graph, choose.timed = graph, timed
    return choose


def test_auto_keeps_openvino_unless_ort_is_more_than_ten_percent_faster(auto_on_cpu):
    # The two runs of one graph: ORT 5.6 % faster is noise; 11.2 % is not.
    name, why = auto_on_cpu(113.1, 106.8, cache=False)
    assert name == "openvino", why
    assert "113.1 ms per image vs ort 106.8 ms" in why and "more than 10% faster" in why
    assert auto_on_cpu(121.1, 108.9, cache=False)[0] == "ort"
    assert auto_on_cpu(110.0, 100.0, cache=False)[0] == "openvino"  # exactly 10 %: kept
    assert auto_on_cpu(110.2, 100.0, cache=False)[0] == "ort"
    assert auto_on_cpu(90.0, 100.0, cache=False)[0] == "openvino"


def test_auto_no_cache_times_again_with_the_margin(auto_on_cpu):
    assert auto_on_cpu(104.0, 100.0)[0] == "openvino"
    assert len(auto_on_cpu.timed) == 1
    name, why = auto_on_cpu(200.0, 100.0)  # remembered: these timings are never taken
    assert name == "openvino" and "remembered" in why and len(auto_on_cpu.timed) == 1
    assert auto_on_cpu(200.0, 100.0, cache=False)[0] == "ort"  # --no-cache: timed again
    assert len(auto_on_cpu.timed) == 2


def test_a_choice_remembered_under_the_old_rule_is_judged_again(auto_on_cpu):
    from cyclemask.engine.model_cache import graph_sha256, probe_key, remember_probe

    # Written before the margin: ORT won by 5.6 %. Read back, the figures decide, not the name.
    remember_probe(probe_key(graph_sha256(auto_on_cpu.graph), None, "throughput"), "ort",
                   {"openvino": 113.1, "ort": 106.8})
    name, why = auto_on_cpu(200.0, 100.0)
    assert name == "openvino" and "remembered" in why and not auto_on_cpu.timed


def test_auto_runs_a_graph_on_onnx_runtime_where_a_cuda_gpu_is_present(auto_on_cpu, monkeypatch):
    # OpenVINO runs on the CPU only: with a GPU, ONNX Runtime (CUDA or TensorRT provider) runs
    # the graph, untimed. The timings given would make a CPU machine keep OpenVINO.
    import cyclemask.engine.backends as backends
    import cyclemask.engine.backends.select as select

    # The real probe (the fixture stubs it), which asks torch when torch is loaded, as here.
    monkeypatch.setattr(select, "cuda_gpu_present", backends.cuda_gpu_present)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backends.cuda_gpu_present()
    name, why = auto_on_cpu(100.0, 100.0)
    assert name == "ort" and "a CUDA GPU is present" in why
    assert not auto_on_cpu.timed


def test_auto_runs_a_checkpoint_on_the_cuda_gpu_where_one_is_present(bundle_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    be, why = create_backend(bundle_path, "auto", "mask")  # built, not loaded: no GPU is touched
    assert isinstance(be, TorchBackend) and be.providers == ["cuda"]
    assert why.startswith("auto: torch on cuda, because the model is a checkpoint and a CUDA GPU is present")
