"""`cyclemask-data`: build and inspect the two-domain face data set.

    cyclemask-data prepare --a RAW_UNMASKED --b RAW_MASKED --out DATA
    cyclemask-data report DATA [--reason no_face]
    cyclemask-data synth --in FACES --out PAIRS --templates MASK_TEMPLATES
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cyclemask.cli_util import Command, Group, StageBars, debug_option
from cyclemask.errors import DataError
from cyclemask.face_detect import DETECTOR_ENV, FIT_MODES
from cyclemask.outputs import lock_outputs

from .prepare import FORMATS, LAYOUTS, MANIFEST_NAME, PrepareConfig, prepare_dataset
from . import synth as _synth


@click.group(cls=Group)
@debug_option
def main() -> None:
    """Build and inspect the unmasked (A) / masked (B) face data set."""


@main.command(cls=Command)
@click.option("--a", "sources_a", multiple=True, required=True, type=click.Path(file_okay=False),
              help="Folder of raw photos WITHOUT masks (domain A); repeat for several. Searched recursively.")
@click.option("--b", "sources_b", multiple=True, required=True, type=click.Path(file_okay=False),
              help="Folder of raw photos WITH masks (domain B); repeat for several. Searched recursively.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: trainA/ trainB/ testA/ testB/ and manifest.json are written there.")
@click.option("--size", default=256, show_default=True, help="Side of the square output images, in pixels.")
@click.option("--margin", default=0.3, show_default=True,
              help="Context around the face box on each side, as a fraction of the box's long side.")
@click.option("--fit", type=click.Choice(FIT_MODES), default="shift", show_default=True,
              help="shift: a square that would leave the image is shrunk/moved inside it (real pixels only); "
                   "pad: keep it centred and replicate the image border outside.")
@click.option("--min-face", default=64, show_default=True,
              help="Smallest usable face (short side of the detected box, in source pixels).")
@click.option("--score-threshold", default=0.6, show_default=True, help="YuNet confidence needed to count a face.")
@click.option("--detector", type=click.Path(dir_okay=False), default=None,
              help=f"A YuNet ONNX model (face_detection_yunet_2023mar.onnx) to use instead of the one "
                   f"shipped with cyclemask. Default: ${DETECTOR_ENV} when set, else the shipped model.")
@click.option("--no-detect", is_flag=True,
              help="Inputs are already aligned face crops: take the centred square of each image, no detection.")
@click.option("--test-count", type=int, default=None,
              help="Test images per domain (the paper used 1000). Default: --test-fraction of the usable images.")
@click.option("--test-fraction", default=0.1, show_default=True, help="Share of usable images per domain held out for test.")
@click.option("--train-count", type=int, default=None,
              help="At most this many training images per domain (the paper used 6000). Default: all the rest.")
@click.option("--seed", default=0, show_default=True, help="Seed of the train/test split.")
@click.option("--dup-threshold", default=28, show_default=True,
              help="Near duplicates: crops whose 256-bit difference hashes (also mirrored) differ in at most "
                   "this many bits count as one photo; 0 keeps only exact-hash matches as duplicates.")
@click.option("--holdout", multiple=True, type=click.Path(file_okay=False),
              help="Folder of images that must not appear (even as near duplicates) in the output, e.g. an "
                   "evaluation set such as observations_pairs/. Repeatable.")
@click.option("--format", "image_format", type=click.Choice(FORMATS), default="jpg", show_default=True,
              help="Output image format.")
@click.option("--quality", default=95, show_default=True, help="JPEG quality of the outputs.")
@click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True,
              help="auto: an FFHQ root reads images1024x1024/ only, a MaskedFace-Net root reads CMFD/ only; "
                   "plain: every image under each folder.")
@debug_option
def prepare(**kwargs) -> None:
    """Detect, crop, deduplicate and split raw photos into trainA/ trainB/ testA/ testB/.

    Keeps images with exactly one usable face, crops a square around it, drops exact and near
    duplicates across all splits, splits with a fixed seed and writes manifest.json with the
    counts and every rejected file with its reason. Re-running is idempotent and reuses the
    previous run's detections.
    """
    kwargs["detect"] = not kwargs.pop("no_detect")
    config = PrepareConfig(**kwargs)
    bar = StageBars()
    try:
        with lock_outputs("cyclemask-data prepare", folders=[config.out]):
            result = prepare_dataset(config, progress=bar)
    finally:
        bar.close()
    _print_counts(result.manifest)
    click.echo(f"wrote {result.written} image(s), {result.unchanged} unchanged, removed {result.removed} stale; "
               f"manifest: {Path(config.out) / MANIFEST_NAME}")


def _print_counts(manifest: dict) -> None:
    for domain, c in manifest["counts"].items():
        rejected = ", ".join(f"{k} {v}" for k, v in c["rejected"].items()) or "none"
        if domain == "holdout":
            click.echo(f"held out: {c['found']} found, {c['usable']} usable for duplicate checks")
        else:
            click.echo(f"domain {domain}: {c['found']} found -> train {c['train']}, test {c['test']}; "
                       f"rejected {c['rejected_total']} ({rejected})")


@main.command(cls=Command)
@click.argument("data", type=click.Path(file_okay=False))
@click.option("--reason", default=None, help="List the rejected files with this reason (e.g. no_face, near_duplicate).")
@debug_option
def report(data: str, reason: str | None) -> None:
    """Print the counts of a prepared data set, and optionally its rejected files."""
    p = Path(data) / MANIFEST_NAME
    if not p.is_file():
        raise DataError(f"{p}: no manifest (is {data} the --out folder of cyclemask-data prepare?)")
    try:
        manifest = json.loads(p.read_text())
    except ValueError as exc:
        raise DataError(f"{p}: not valid JSON ({exc})") from None
    if manifest.get("status") != "complete":
        raise DataError(f"{p}: the run that wrote it did not finish; run cyclemask-data prepare again")
    _print_counts(manifest)
    if reason is not None:
        rows = [r for r in manifest["rejected"] if r["reason"] == reason]
        known = sorted({r["reason"] for r in manifest["rejected"]})
        if not rows and reason not in known:
            raise DataError(f"no rejections with reason {reason!r}; present: {', '.join(known) or 'none'}")
        for r in rows:
            click.echo(f"{r['domain']}  {r['source']}  {r['detail']}")


@main.command(cls=Command)
@click.option("--in", "source", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of face photos WITHOUT masks (searched recursively), e.g. a prepared trainA/.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: with_mask/<name> (the masked twins), without_mask/<name> (the sources), synth.json.")
@click.option("--templates", required=True, type=click.Path(exists=True, file_okay=False),
              help="Mask templates in MaskTheFace's layout: RGBA PNGs and masks.cfg with six anchors each.")
@click.option("--textures", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of texture images for patterned cloth masks (optional).")
@click.option("--kinds", default=",".join(_synth.DEFAULT_KINDS), show_default=True,
              help="Comma-separated template kinds (surgical: all its colours) or styles (surgical_blue: one "
                   "colour) to use: masks.cfg section names without _left/_right (and without the colour, for a kind).")
@click.option("--keep-colour", default=0.35, show_default=True,
              help="Share of masks left in the template's own colour; the rest get a plain colour or a texture.")
@click.option("--texture-share", default=0.25, show_default=True,
              help="Share of recoloured masks that get a texture (with --textures).")
@click.option("--min-face", default=40, show_default=True, help="Smallest face to mask (short side of its box, px).")
@click.option("--score-threshold", default=0.6, show_default=True, help="YuNet confidence needed to count a face.")
@click.option("--detector", type=click.Path(dir_okay=False), default=None,
              help=f"YuNet ONNX model. Default: ${DETECTOR_ENV}, else the one shipped with cyclemask.")
@click.option("--all-faces", is_flag=True, help="Mask every face; by default photos with several faces are skipped.")
@click.option("--format", "image_format", type=click.Choice(_synth.FORMATS), default="same", show_default=True,
              help="Output format; same keeps each input's.")
@click.option("--quality", default=95, show_default=True, help="JPEG quality of the outputs.")
@click.option("--seed", default=0, show_default=True,
              help="Seed; each image's choices come from (seed, its path), so re-runs write the same twins.")
@debug_option
def synth(**kwargs) -> None:
    """Put a mask on every face photo: paired masked / unmasked twins, no GAN needed.

    Each face's five YuNet landmarks place a mask template (nose bridge, cheeks, jaw, chin),
    chosen to match the head's turn, recoloured or textured at random, warped to the face's
    roll and scale and shaded with its light. Writes PAIRS/with_mask/ and PAIRS/without_mask/
    under the same names (the layout `cyclemask-eval model --pairs` and `cyclemask-train
    --pairs` read) and PAIRS/synth.json: every pair with its template, colour and landmarks,
    and every skipped photo with its reason.
    """
    kwargs["kinds"] = tuple(k.strip() for k in kwargs["kinds"].split(",") if k.strip())
    config = _synth.SynthConfig(**kwargs)
    bar = StageBars()
    try:
        with lock_outputs("cyclemask-data synth", folders=[config.out]):
            result = _synth.synthesize(config, progress=bar)
    finally:
        bar.close()
    c = result.manifest["counts"]
    reasons = ", ".join(f"{k} {v}" for k, v in c["skipped_by_reason"].items()) or "none"
    click.echo(f"masked {c['written']} of {c['found']} photo(s); skipped {c['skipped']} ({reasons}); "
               f"manifest: {Path(config.out) / _synth.MANIFEST_NAME}")
