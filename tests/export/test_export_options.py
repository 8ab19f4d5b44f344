"""cyclemask-export's options are declared once (export/options.py): each flag reaches the field of
the settings object its declaration names, without running an export."""

from __future__ import annotations

import dataclasses

from click.testing import CliRunner

from cyclemask.export import pipeline
from cyclemask.export.cli import main
from cyclemask.export.options import OPTIONS, ExportArgs


def test_every_flag_reaches_its_settings_object(tmp_path, monkeypatch):
    seen = {}

    def fake_export(checkpoint, options, **kw):
        seen.update(options=options, kw=kw)
        raise SystemExit(0)

    monkeypatch.setattr(pipeline, "export_checkpoint", fake_export)
    args = ["--checkpoint", "a.pt", "--out", tmp_path / "out", "--image-size", 64, "--ngf", 8, "--n-blocks", 2,
            "--norm", "batch", "--overwrite", "--min-batch", 2, "--opt-batch", 3, "--max-batch", 5, "--streams", 3,
            "--timing-cache", tmp_path / "t.cache", "--workspace-gib", 1.5, "--typing", "weak-fp16",
            "--instance-norm", "plugin", "--verify-count", 1, "--verify-random", 5, "--threads", 1, "--bf16",
            "--holdout", "h", "--calib-count", 9, "--holdout-count", 7, "--int8-fp32-convs", "first",
            "--int8-fp32-adds", "--int8-preset", "mixed", "--int8-bias-correction", "full",
            "--int8-accuracy-aware", "--int8-target-psnr", 40]
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    o = seen["options"]
    assert (o.image_size, o.overwrite, o.verify_count, o.n_random, o.threads) == (64, True, 1, 5, 1)
    b = o.build
    assert (b.profile.min_batch, b.profile.opt_batch, b.profile.max_batch) == (2, 3, 5)
    assert (b.profiles, b.timing_cache, b.workspace_gib, b.typing, b.instance_norm) == \
        (3, tmp_path / "t.cache", 1.5, "weak-fp16", "plugin")
    lp = o.lowp
    assert (lp.int8, lp.bf16, lp.holdout, lp.holdout_count) == (False, True, (("*", "h"),), 7)
    c = lp.config
    assert (c.calib_count, c.fp32_convs, c.fp32_residual_adds, c.preset, c.bias_correction, c.accuracy_aware,
            c.target_psnr_db) == (9, "first", True, "mixed", "full", True, 40.0)
    assert seen["kw"] == {"direction": None, "ngf": 8, "n_blocks": 2, "norm": "batch",
                          "progress": seen["kw"]["progress"], "on_plan": seen["kw"]["on_plan"]}


def test_declarations_match_the_flags():
    params = {p.name: p for p in main.params}
    fields = {f.name: f.default for f in dataclasses.fields(ExportArgs)}
    for o in OPTIONS:
        assert params[o.name].help == o.help and params[o.name].default == o.default, o.name
        assert fields[o.name] == o.default
    assert set(params) - {"debug"} == {o.name for o in OPTIONS}
