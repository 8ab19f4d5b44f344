"""Backend options are declared once (engine/backends/options.py): the flag, the RunOptions field,
the BackendOptions field and each backend's keyword all follow the declaration."""

from __future__ import annotations

import dataclasses
import inspect

import click
import pytest

from engine.backends import REGISTRY, BackendOptions, OpenVinoBackend, OrtBackend, TorchBackend, TrtBackend
from engine.backends.options import OPTIONS
from engine.cli import main
from engine.run import RunOptions

CLASSES = {"torch": TorchBackend, "ort": OrtBackend, "openvino": OpenVinoBackend, "trt": TrtBackend}


def _params():
    return {p.name: p for p in main.params}


def test_every_declared_option_is_a_flag_a_field_and_a_backend_keyword():
    params = _params()
    run_fields = {f.name: f for f in dataclasses.fields(RunOptions)}
    be_fields = {f.name: f for f in dataclasses.fields(BackendOptions)}
    for o in OPTIONS:
        assert o.name in be_fields and be_fields[o.name].default == o.default, o.name
        if o.cli:
            p = params[o.run_field]
            assert p.help == o.help and p.default == o.default, o.name
            assert run_fields[o.run_field].default == o.default, o.name
        for backend, target in o.backends.items():
            keyword = target if isinstance(target, str) else target[0]
            assert keyword in inspect.signature(CLASSES[backend]).parameters, (o.name, backend, keyword)


def test_the_cli_fills_the_backend_options_from_the_declarations(monkeypatch):
    """A flag's value reaches the backend's keyword: --ov-requests 3 is OpenVINO's requests=3."""
    seen = {}

    def fake_translate(options, **_):
        seen["options"] = options
        raise SystemExit(0)

    monkeypatch.setattr("engine.cli.translate", fake_translate)
    from click.testing import CliRunner

    r = CliRunner().invoke(main, ["--images", ".", "--ov-requests", "3", "--no-cache", "--size", "64",
                                  "--ort-provider", "cpu", "--compile", "--no-progress"])
    assert r.exit_code == 0, r.output
    opts = seen["options"].backend_options()
    assert opts.keywords("openvino")["requests"] == 3
    assert opts.keywords("openvino")["cache_dir"] is None  # --no-cache: no compiled-model cache
    assert opts.keywords("ort")["provider"] == "cpu"
    assert opts.keywords("torch")["image_size"] == 64 and opts.keywords("torch")["compile"] is True
    assert "requests" not in opts.keywords("torch")
    assert BackendOptions(cache=True).keywords("openvino")["cache_dir"] == "auto"


def test_precision_choices_come_from_the_registry(monkeypatch):
    choices = tuple(_params()["precision"].type.choices)
    assert choices == ("fp32", "fp16", "bf16")
    assert set(choices) == {"fp32"} | {p for spec in REGISTRY.values() for p in spec.precisions}
    # A backend registered with a new precision shows up in --precision without touching the CLI.
    from engine.backends.select import precision_choices

    monkeypatch.setitem(REGISTRY, "fake", dataclasses.replace(REGISTRY["ort"], name="fake", precisions=("int4",)))
    assert precision_choices() == ("fp32", "fp16", "bf16", "int4")


def test_help_shows_the_backend_flags():
    from click.testing import CliRunner

    out = CliRunner().invoke(main, ["--help"], terminal_width=200).output
    for o in OPTIONS:
        if o.cli:
            flag = o.flag or "--" + o.run_field.replace("_", "-")
            assert flag in out, flag
    assert "--probe / --no-probe" in out and "--cache / --no-cache" in out


@pytest.mark.parametrize("name", ["ov_requests", "threads", "streams"])
def test_range_is_enforced_by_the_flag(name):
    o = next(o for o in OPTIONS if o.name == name)
    p = _params()[o.run_field]
    with pytest.raises(click.BadParameter):
        p.type.convert(0, p, None)


@pytest.mark.parametrize("level,expected", [("off", "ORT_DISABLE_ALL"), ("basic", "ORT_ENABLE_BASIC")])
def test_ort_graph_opt_reaches_the_session(mask_graph, monkeypatch, level, expected):
    """--ort-graph-opt, added as one declaration and its use in OrtBackend."""
    import onnxruntime as ort

    from engine.backends import create_backend

    seen = {}
    real = ort.InferenceSession

    def spy(path, so, **kw):
        seen["level"] = so.graph_optimization_level
        return real(path, so, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    opts = RunOptions(ort_graph_opt=level, ort_provider="cpu").backend_options()
    be, _ = create_backend(mask_graph, "ort", None, opts)
    with be:
        pass
    assert seen["level"] == getattr(ort.GraphOptimizationLevel, expected)
