"""cyclemask-export end to end on a tiny checkpoint, and every refusal path."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cyclemask.artifacts import read_onnx_metadata
from cyclemask.export import pipeline
from cyclemask.export.cli import main
from cyclemask.export.verify import graph_outputs
from cyclemask.image_tensors import eager_translate
from export_helpers import SIZE


def run(args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)


def no_partials(folder):
    return not [p for p in folder.iterdir() if ".partial" in p.name] if folder.exists() else True


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make the refusal paths deterministic on machines that do have TensorRT."""
    monkeypatch.setattr(pipeline, "tensorrt_status", lambda: (False, "TensorRT is not installed (test)"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, bundle):
    """One real --fp16 export of both directions of the tiny bundle (without TensorRT)."""
    out = tmp_path_factory.mktemp("cli") / "out"
    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline, "tensorrt_status", lambda: (False, "TensorRT is not installed (test)"))
    try:
        res = run(["--checkpoint", bundle, "--fp16", "--out", out, "--threads", 1, "--verify-random", 2])
    finally:
        mp.undo()
    return out, res


def test_fp16_export_writes_both_graphs_per_direction_verified(exported, gen_a, gen_b, rng):
    out, res = exported
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["mask.fp16.onnx", "mask.onnx", "unmask.fp16.onnx", "unmask.onnx"]
    for d, g in (("mask", gen_a), ("unmask", gen_b)):
        for name, prec in ((f"{d}.onnx", "fp32"), (f"{d}.fp16.onnx", "fp16")):
            meta = read_onnx_metadata(out / name)
            assert (meta["direction"], meta["precision"], meta["image_size"]) == (d, prec, SIZE)
            assert meta["checkpoint_name"] == "generators.pt" and len(meta["checkpoint_sha256"]) == 64
        x = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
        diff = np.abs(graph_outputs(out / f"{d}.onnx", x).astype(int) - eager_translate(g, x))
        assert diff.max() <= 1, f"{d}.onnx does not hold the {d} generator"


def test_summary_lists_every_artefact_with_size_and_figures(exported):
    out, res = exported
    text = res.output
    for name in ("mask.onnx", "mask.fp16.onnx", "unmask.onnx", "unmask.fp16.onnx"):
        assert re.search(rf"{re.escape(str(out / name))}\s+\d+\.\d (kB|MB)", text), text
    assert text.count("PASS") == 4 and "FAIL" not in text
    assert "within 1 LSB" in text and "PSNR" in text
    assert "Wrote 4 files." in text


def test_no_engine_is_said_plainly_with_the_command_that_builds_it(exported):
    out, res = exported
    assert "no TensorRT engine was built: TensorRT is not installed" in res.output
    assert f"cyclemask-export --from-onnx {out / 'mask.fp16.onnx'} --out {out}" in res.output
    assert f"cyclemask-export --from-onnx {out / 'unmask.fp16.onnx'} --out {out}" in res.output


def test_existing_files_are_not_replaced_without_overwrite(exported, bundle):
    out, _ = exported
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = run(["--checkpoint", bundle, "--fp16", "--out", out])
    assert res.exit_code == 1
    assert "refusing to replace existing" in res.output and "--overwrite" in res.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overwrite_replaces_after_verification_and_flags_stale_files(tmp_path, bundle, gen_b):
    out = tmp_path / "out"
    out.mkdir()
    (out / "unmask.onnx").write_bytes(b"old")
    (out / "unmask.fp16.onnx").write_bytes(b"old fp16")
    res = run(["--checkpoint", bundle, "--direction", "unmask", "--out", out, "--overwrite", "--verify-count", 0])
    assert res.exit_code == 0, res.output
    assert read_onnx_metadata(out / "unmask.onnx")["direction"] == "unmask"
    assert (out / "unmask.fp16.onnx").read_bytes() == b"old fp16"  # not ours to delete...
    assert "unmask.fp16.onnx is from an earlier export and was not replaced" in res.output  # ...but said
    assert no_partials(out)


def test_failed_verification_exits_1_and_leaves_nothing(tmp_path, bundle, monkeypatch):
    # Stand in for a graph that disagrees with eager: corrupt the reference it is compared with.
    real = pipeline.eager_outputs
    monkeypatch.setattr(pipeline, "eager_outputs", lambda g, x, b=2: 255 - real(g, x, b))
    out = tmp_path / "out"
    res = run(["--checkpoint", bundle, "--direction", "mask", "--out", out, "--verify-count", 0])
    assert res.exit_code == 1
    assert re.search(r"mask\.onnx: verification against eager \(PyTorch FP32\) failed: max \|diff\| \d+ LSB > 1", res.output)
    assert "no 'mask' file was written; nothing was written" in res.output
    assert not out.exists()  # not even the folder it made


def test_explicit_engine_request_that_cannot_be_met_is_exit_1(tmp_path, bundle, no_tensorrt):
    out = tmp_path / "out"
    res = run(["--checkpoint", bundle, "--engine", "--out", out])
    assert res.exit_code == 1
    assert "--engine was requested, but no engine can be built here: TensorRT is not installed" in res.output
    assert not out.exists()


def test_from_onnx_refuses_here_and_refuses_fp32_or_foreign_graphs(tmp_path, graphs, no_tensorrt):
    res = run(["--from-onnx", graphs[1], "--out", tmp_path])
    assert res.exit_code == 1 and "cannot build an engine here: TensorRT is not installed" in res.output
    res = run(["--from-onnx", graphs[0], "--out", tmp_path])
    assert res.exit_code == 1 and "is a fp32 graph; engines are built from the FP16 graph" in res.output
    import onnx

    foreign = onnx.load(str(graphs[1]))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    res = run(["--from-onnx", tmp_path / "foreign.onnx", "--out", tmp_path])
    assert res.exit_code == 1 and "not a graph written by cyclemask-export" in res.output
    res = run(["--from-onnx", tmp_path / "missing.onnx"])
    assert res.exit_code == 1 and "missing.onnx: no such ONNX file" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.onnx"]


@pytest.mark.parametrize("args,match", [
    ([], "give exactly one of --checkpoint and --from-onnx"),
    (["--checkpoint", "a.pt", "--from-onnx", "b.onnx"], "give exactly one of --checkpoint and --from-onnx"),
    (["--from-onnx", "b.onnx", "--image-size", "64"], "--image-size does not apply to --from-onnx"),
    (["--from-onnx", "b.onnx", "--no-engine"], "--no-engine contradicts it"),
    (["--checkpoint", "a.pt", "--direction", "sideways"], "Invalid value for '--direction'"),
])
def test_usage_errors_exit_2(args, match):
    res = run(args)
    assert res.exit_code == 2 and match in res.output


# A driver in a fresh interpreter: this test process has imported torch long ago.
_LIGHT_DRIVER = """
import sys
from cyclemask.export.cli import main
try:
    main(sys.argv[1:], prog_name="cyclemask-export")
except SystemExit as exc:
    heavy = sorted(m for m in ("torch", "onnx", "onnxruntime", "openvino", "onnxscript") if m in sys.modules)
    print(f"exit {exc.code}; heavy modules: {','.join(heavy) or 'none'}")
"""


@pytest.mark.parametrize("args,match", [
    (["--fp16"], "give exactly one of --checkpoint and --from-onnx"),
    (["--from-onnx", "b.onnx", "--int8"], "--int8 / --bf16 start from the checkpoint"),
    (["--checkpoint", "a.pt", "--calib", "crops/"], "--calib / --holdout are for --int8 and --bf16"),
    (["--checkpoint", "a.pt", "--int8", "--calib", "sideways=crops"], "the part before '=' must be mask or unmask"),
])
def test_usage_errors_come_before_torch_and_onnx_are_imported(args, match):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _LIGHT_DRIVER, *args], capture_output=True, text=True, timeout=120)
    assert match in proc.stderr, proc.stderr
    assert "exit 2; heavy modules: none" in proc.stdout, proc.stdout


def test_checkpoint_refusals(tmp_path, bundle, gen_a):
    res = run(["--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "o"])
    assert res.exit_code == 1 and "none.pt: no such checkpoint file" in res.output
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    res = run(["--checkpoint", tmp_path / "junk.pt", "--out", tmp_path / "o"])
    assert res.exit_code == 1 and "junk.pt: not a readable checkpoint" in res.output
    res = run(["--checkpoint", bundle, "--ngf", 64, "--out", tmp_path / "o"])
    assert res.exit_code == 1 and "has ngf=8, but ngf=64 was given" in res.output
    res = run(["--checkpoint", bundle, "--image-size", 30, "--out", tmp_path / "o"])
    assert res.exit_code == 1 and "image size must be a multiple of 4" in res.output
    res = run(["--checkpoint", bundle, "--fp16", "--min-batch", 4, "--opt-batch", 2, "--out", tmp_path / "o"])
    assert res.exit_code == 1 and "min <= opt <= max" in res.output
    (tmp_path / "afile").write_text("x")
    res = run(["--checkpoint", bundle, "--direction", "mask", "--out", tmp_path / "afile"])
    assert res.exit_code == 1 and "afile: --out must be a folder" in res.output
    assert not (tmp_path / "o").exists()


def test_direction_refusals(tmp_path, gen_a):
    from cyclemask.checkpoint import save_generators

    only_mask = tmp_path / "only_mask.pt"
    save_generators(only_mask, {"mask": gen_a})
    res = run(["--checkpoint", only_mask, "--direction", "unmask", "--out", tmp_path / "o"])
    assert res.exit_code == 1 and "has no 'unmask' generator (it holds mask)" in res.output
    res = run(["--checkpoint", only_mask, "--direction", "both", "--out", tmp_path / "o"])
    assert res.exit_code == 1 and "--direction both, but the file holds only mask" in res.output
    ref = tmp_path / "generator.pth"
    torch.save(gen_a.state_dict(), ref)
    res = run(["--checkpoint", ref, "--out", tmp_path / "o"])
    assert res.exit_code == 1 and "does not say which way it translates: pass --direction mask" in res.output
    res = run(["--checkpoint", ref, "--direction", "both", "--out", tmp_path / "o"])
    assert res.exit_code == 1 and "holds one generator; --direction both needs a two-generator checkpoint" in res.output


@pytest.mark.slow  # a full export of a reference file (~5 s); test_reference_file_records_no_size_and_its_direction_comes_from_its_name checks the same reading fast
def test_reference_repository_file_exports_with_flags_and_direction_from_name(tmp_path, gen_b):
    # The reference saves a bare state dict; old PyTorch versions added InstanceNorm running stats.
    sd = dict(gen_b.state_dict())
    sd["model.2.running_mean"] = torch.zeros(8)
    sd["model.2.running_var"] = torch.ones(8)
    ref = tmp_path / "latest_net_G_B.pth"
    torch.save(sd, ref)
    out = tmp_path / "out"
    res = run(["--checkpoint", ref, "--ngf", 8, "--n-blocks", 2, "--norm", "instance", "--image-size", SIZE,
               "--out", out, "--verify-count", 0])
    assert res.exit_code == 0, res.output
    assert "direction 'unmask' taken from the file name" in res.output
    meta = read_onnx_metadata(out / "unmask.onnx")
    assert (meta["direction"], meta["checkpoint_source"], meta["ngf"], meta["n_blocks"]) == ("unmask", "reference", 8, 2)
    x = np.random.default_rng(3).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    assert np.abs(graph_outputs(out / "unmask.onnx", x).astype(int) - eager_translate(gen_b, x)).max() <= 1


def test_reference_file_records_no_size_and_its_direction_comes_from_its_name(tmp_path, gen_a):
    from cyclemask.checkpoint import recorded_image_size
    from cyclemask.export import pipeline as pl

    ref = tmp_path / "latest_net_G_A.pth"
    torch.save(gen_a.state_dict(), ref)
    gens, notes = pl.resolve_generators(ref, None)
    assert list(gens) == ["mask"] and gens["mask"].source == "reference"
    assert recorded_image_size(ref) is None
    assert pl._guess_direction(ref) == "mask"
    assert pl._guess_direction(tmp_path / "net_G_Bx.pth") is None


def test_help_documents_every_option_and_default():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    for opt in ("--checkpoint", "--from-onnx", "--direction", "--out", "--image-size", "--ngf", "--n-blocks",
                "--norm", "--fp16", "--engine / --no-engine", "--overwrite", "--min-batch", "--opt-batch",
                "--max-batch", "--timing-cache", "--workspace-gib", "--typing", "--instance-norm",
                "--verify-images", "--verify-count", "--verify-random", "--threads", "--debug"):
        assert opt in res.output, opt
    assert "[default: 8;" in res.output and "[default: strong]" in res.output


# ------------------------------------------------------------------------------------------------
# A TensorRT build that fails. These tests make the build step raise on a CPU machine: they test
# cyclemask-export's control flow around the build (what is kept, what is said, the exit
# status), not TensorRT, which never runs here.
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def failing_build(monkeypatch):
    from cyclemask.export import tensorrt

    monkeypatch.setattr(pipeline, "tensorrt_status", lambda: (True, "TensorRT 10.99 on a pretend GPU (test)"))
    calls = []

    def build_engine(onnx_path, engine_path, config, **kw):
        calls.append((onnx_path, config.profiles))
        engine_path.write_bytes(b"half an engine")  # a partial file must not survive either
        raise RuntimeError("pretend TensorRT: [graphShapeAnalyzer] unsupported node")

    monkeypatch.setattr(tensorrt, "build_engine", build_engine)
    return calls


@pytest.mark.slow  # a full export (~6 s); test_explicit_engine_build_failure_is_an_error_and_writes_nothing takes the same build-failure path fast
def test_automatic_engine_build_failure_keeps_the_verified_graphs(tmp_path, bundle, failing_build):
    out = tmp_path / "out"
    res = run(["--checkpoint", bundle, "--direction", "mask", "--fp16", "--out", out, "--threads", 1,
               "--streams", 3])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["mask.fp16.onnx", "mask.onnx"]
    assert read_onnx_metadata(out / "mask.fp16.onnx")["precision"] == "fp16"
    assert failing_build and failing_build[0][1] == 3  # --streams became the profile count
    assert "Note: mask: no TensorRT engine: TensorRT failed (RuntimeError: pretend TensorRT" in res.output
    assert f"cyclemask-export --from-onnx {out / 'mask.fp16.onnx'} --out {out} --streams 3" in res.output
    assert "engine built with" not in res.output and "Wrote 2 files." in res.output
    assert no_partials(out)


def test_explicit_engine_build_failure_is_an_error_and_writes_nothing(tmp_path, bundle, failing_build):
    out = tmp_path / "out"
    res = run(["--checkpoint", bundle, "--direction", "mask", "--engine", "--out", out, "--threads", 1])
    assert res.exit_code == 1
    assert "mask: TensorRT failed (RuntimeError: pretend TensorRT" in res.output
    assert "no 'mask' file was written" in res.output
    # Nothing at all: the output folder the failed export created is removed with its staging.
    assert not out.exists() or ([p.name for p in out.iterdir() if not p.name.startswith(".")] == [] and no_partials(out))
