"""The README's before/after picture: `cyclemask-run --demo`'s sheet, made small enough to commit.

    python scripts/demo_sheet.py           # remake docs/demo_before_after.png if the embedded model changed
    python scripts/demo_sheet.py --force   # remake it anyway
    python scripts/demo_sheet.py --check   # exit 1 if the picture is older than the embedded model

The picture records which embedded generators made it (sha256 of each file in
cyclemask/assets/demo/), the mask method the demo used (`cyclemask-run --mask`'s default) and how
the unmasking was pasted back (`--paste`'s default, resolved for the embedded graph) in
docs/demo_before_after.json; tests/scripts/test_demo_sheet.py fails when any differs, so a new
embedded model or a new default comes with its new picture. Needs only the base
install (the demo runs the ONNX graphs).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PICTURE = REPO / "docs" / "demo_before_after.png"
RECORD = PICTURE.with_suffix(".json")
MODEL_FILES = ("generators.pt", "mask.onnx", "unmask.onnx")
WIDTH = 720  # pixels: readable on a README page, and under MAX_BYTES
MAX_BYTES = 300_000


def model_digests() -> dict[str, str]:
    """sha256 of each embedded demo model file, by name."""
    from cyclemask.demo_model import assets_dir

    out = {}
    for name in MODEL_FILES:
        path = assets_dir() / name
        if not path.is_file():
            raise SystemExit(f"{path}: the embedded demo model file is missing")
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _record() -> dict | None:
    try:
        return json.loads(RECORD.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise SystemExit(f"{RECORD}: not the record this script writes ({exc})") from None


def _field(name: str):
    record = _record()
    if record is None:
        return None
    if not isinstance(record, dict) or "models_sha256" not in record:
        raise SystemExit(f"{RECORD}: not the record this script writes (no 'models_sha256')")
    return record.get(name)  # a record from before a field was added: stale, not broken


def recorded_digests() -> dict[str, str] | None:
    return _field("models_sha256")


def mask_method() -> str:
    """How the demo masks now: RunOptions' default, as `cyclemask-run --demo` runs it."""
    from cyclemask.engine.run import RunOptions

    return RunOptions().mask_method


def recorded_mask_method() -> str | None:
    return _field("mask_method")


def unmask_paste() -> str:
    """How the demo pastes the unmasking now: RunOptions' --paste, resolved for the embedded graph."""
    from cyclemask.demo_model import assets_dir
    from cyclemask.engine.ray_run import model_method
    from cyclemask.engine.run import RunOptions, paste_for_method

    return paste_for_method(RunOptions().paste, model_method(assets_dir() / "unmask.onnx"))


def recorded_unmask_paste() -> str | None:
    return _field("unmask_paste")


def shrink(png: bytes) -> bytes:
    """The sheet at WIDTH pixels; in 256 dithered colours when the full-colour PNG is too big."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    img = img.resize((WIDTH, round(img.height * WIDTH / img.width)), Image.LANCZOS)
    for candidate in (img, img.quantize(256, dither=Image.Dither.FLOYDSTEINBERG)):
        buf = io.BytesIO()
        candidate.save(buf, "PNG", optimize=True)
        if buf.tell() <= MAX_BYTES:
            return buf.getvalue()
    raise SystemExit(f"the demo sheet is {buf.tell()} bytes even in 256 colours (limit {MAX_BYTES}): "
                     "lower WIDTH in scripts/demo_sheet.py")


def make() -> None:
    from cyclemask.engine.demo import SHEET_NAME, run_demo
    from cyclemask.engine.run import RunOptions

    with tempfile.TemporaryDirectory(prefix="cyclemask-demo-sheet-") as tmp:
        report = run_demo(tmp, RunOptions(progress=False))
        if not report.ok:
            raise SystemExit("the demo failed: " + "; ".join(map(str, report.failures)))
        data = shrink((Path(tmp) / SHEET_NAME).read_bytes())
    PICTURE.parent.mkdir(parents=True, exist_ok=True)
    PICTURE.write_bytes(data)
    RECORD.write_text(json.dumps({"what": "the embedded demo models, mask method and unmask paste that made "
                                          "demo_before_after.png (scripts/demo_sheet.py)",
                                  "mask_method": report.mask_method,
                                  "unmask_paste": unmask_paste(),
                                  "models_sha256": model_digests()}, indent=1) + "\n")
    print(f"wrote {PICTURE.relative_to(REPO)} ({len(data) / 1000:.0f} kB) and {RECORD.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="remake the picture even if the model is unchanged")
    ap.add_argument("--check", action="store_true", help="only say whether the picture is current (exit 1 if not)")
    args = ap.parse_args(argv)
    current = (model_digests() == recorded_digests() and mask_method() == recorded_mask_method()
               and unmask_paste() == recorded_unmask_paste() and PICTURE.is_file())
    if args.check:
        print(f"{PICTURE.relative_to(REPO)}: " + ("made by the embedded model" if current else
              "older than the embedded model or the demo's mask method: run python scripts/demo_sheet.py"))
        return 0 if current else 1
    if current and not args.force:
        print(f"{PICTURE.relative_to(REPO)} is current (the embedded model is unchanged); --force remakes it")
        return 0
    make()
    return 0


if __name__ == "__main__":
    sys.exit(main())
