"""scripts/demo_sheet.py: the README's before/after picture is the embedded model's own."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _demo_sheet():
    spec = importlib.util.spec_from_file_location("demo_sheet", REPO / "scripts" / "demo_sheet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_picture_was_made_by_the_embedded_model():
    ds = _demo_sheet()
    # A changed embedded model without a remade picture: the README would show another model's work.
    assert ds.recorded_digests() == ds.model_digests(), "run python scripts/demo_sheet.py and commit its files"
    # Nor may it show another mask method than the one the demo now masks with.
    assert ds.recorded_mask_method() == ds.mask_method() == "template", "run python scripts/demo_sheet.py --force"
    # ... nor another paste than the one the demo's unmasking now gets.
    assert ds.recorded_unmask_paste() == ds.unmask_paste() == "hole-below-eyes", "run python scripts/demo_sheet.py"
    assert 10_000 < ds.PICTURE.stat().st_size <= ds.MAX_BYTES
    assert ds.main(["--check"]) == 0
    assert "](docs/demo_before_after.png)" in (REPO / "README.md").read_text()
