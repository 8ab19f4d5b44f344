"""`cyclemask-export`: checkpoint -> verified ONNX graphs (FP32, FP16) and TensorRT engines."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import click

from cyclemask.artifacts import DEFAULT_STREAMS
from cyclemask.cli_util import Command, check_stop, debug_option, require_torch, stop_at_safe_points
from cyclemask.config import NORMS
from cyclemask.errors import ExportError
from cyclemask.outputs import OutputLock

log = logging.getLogger(__name__)


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="A cyclemask checkpoint (generator bundle or network file) or a reference-repository "
                   "generator file (latest_net_G_A.pth, ...). Required unless --from-onnx.")
@click.option("--from-onnx", "from_onnx", type=click.Path(path_type=Path), default=None,
              help="Build only the TensorRT engine from an FP16 graph written earlier (X.fp16.onnx), on this "
                   "machine; implies --engine. The command the export prints where no engine could be built.")
@click.option("--direction", type=click.Choice(["mask", "unmask", "both"]), default=None,
              help="Which generator to export. Default: every generator the file holds; for a reference file "
                   "without a direction, G_A in the name means mask and G_B unmask.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder. Default: ./exported (with --from-onnx: the graph's folder).")
@click.option("--image-size", type=int, default=None,
              help="Model input size S of the uint8 [N,S,S,3] graphs. Default: the size the checkpoint was "
                   "trained at, else 256 (reference files do not record it).")
@click.option("--ngf", type=int, default=None,
              help="Generator width; checked against the file (reference files: read off the weights; paper: 64).")
@click.option("--n-blocks", type=int, default=None,
              help="Residual blocks; checked against the file (paper: 9).")
@click.option("--norm", type=click.Choice(NORMS), default=None,
              help="Normalisation; checked against the file (paper: instance).")
@click.option("--fp16", is_flag=True, default=False,
              help="Also write the mixed-precision graph (FP16 convolutions; InstanceNorm and uint8 pre/post in "
                   "FP32), verified, and build an engine from it where TensorRT and a GPU exist.")
@click.option("--engine/--no-engine", "engine", default=None,
              help="Require a TensorRT engine (error, exit 1, if none can be built here; implies --fp16), or "
                   "never build one. Default: build one with --fp16 when possible.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace existing output files (only after the new ones pass verification).")
@click.option("--min-batch", type=click.IntRange(1), default=1, help="Engine profile: smallest batch.")
@click.option("--opt-batch", type=click.IntRange(1), default=8, help="Engine profile: batch TensorRT tunes for.")
@click.option("--max-batch", type=click.IntRange(1), default=32, help="Engine profile: largest batch.")
@click.option("--streams", type=click.IntRange(1, 16), default=DEFAULT_STREAMS,
              help="Engine: optimization profiles, one per CUDA stream `cyclemask-run --streams` will run at once "
                   "(TensorRT needs a profile per concurrent execution context; the runtime runs no more streams "
                   "than the engine has profiles). Build time grows with the count.")
@click.option("--timing-cache", type=click.Path(path_type=Path), default=None,
              help="TensorRT timing cache file, read before and updated after each build. Default: "
                   "OUT/trt_timing.cache.")
@click.option("--workspace-gib", type=float, default=None, help="TensorRT workspace limit in GiB. Default: TensorRT's.")
@click.option("--typing", type=click.Choice(["strong", "weak-fp16"]), default="strong",
              help="strong: the graph's precisions (TensorRT 11 has no other mode). weak-fp16: TensorRT 10.x only, "
                   "weakly typed with the FP16 builder flag (for comparisons).")
@click.option("--instance-norm", type=click.Choice(["native", "plugin"]), default="native",
              help="TensorRT InstanceNormalization: the native layer or the plugin (10.x parser flag).")
@click.option("--verify-images", type=click.Path(path_type=Path), default=None, envvar="CYCLEMASK_VERIFY_IMAGES",
              help="Folder of face photos to verify with (first --verify-count, sorted, resized to S). Default: "
                   "the public-domain portrait shipped with matplotlib. Env: CYCLEMASK_VERIFY_IMAGES.")
@click.option("--verify-count", type=click.IntRange(0), default=4, help="Real photos used for verification.")
@click.option("--verify-random", type=click.IntRange(0), default=2, help="Uniform-noise images used for verification.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for PyTorch and ONNX Runtime. Default: their own choice.")
@click.option("--int8", is_flag=True, default=False,
              help="Also write D.int8.onnx: INT8 post-training quantisation (NNCF; pip install 'cyclemask[int8]'), "
                   "calibrated on --calib faces and verified on held-out faces on every installed CPU runtime "
                   "(OpenVINO, ONNX Runtime): PSNR >= 35 dB against eager FP32 and the masked/unmasked classifier's "
                   "success within 3 points of FP32, else nothing is written. Run it with --model D.int8.onnx.")
@click.option("--bf16", is_flag=True, default=False,
              help="Also check the FP32 graph under OpenVINO's BF16 precision (what cyclemask-run --precision bf16 "
                   "runs) on held-out faces: PSNR >= 40 dB and >= 95% of values within 2 LSB of eager FP32, else "
                   "nothing is written. The figures go into the graph's metadata. Needs a CPU with native BF16.")
@click.option("--calib", "calib", multiple=True, metavar="[DIRECTION=]DIR",
              help="--int8: face crops to calibrate on, the generator's own input (unmasked faces for mask, masked "
                   "for unmask); mask=DIR / unmask=DIR give each generator its own folder. Repeatable.")
@click.option("--holdout", "holdout", multiple=True, metavar="[DIRECTION=]DIR",
              help="--int8 / --bf16: held-out faces to verify on (never calibrated on). Default: a fixed 20% of the "
                   "--calib folder, by file name. Repeatable like --calib.")
@click.option("--calib-count", type=click.IntRange(1), default=64, help="--int8: calibration faces used (sorted, first N).")
@click.option("--holdout-count", type=click.IntRange(1), default=100, help="Held-out faces used (sorted, first N).")
@click.option("--int8-fp32-convs", type=click.Choice(["first,last", "first", "last", "none"]), default="first,last",
              help="--int8: convolutions kept in FP32 (InstanceNorm and the uint8 pre/post always are).")
@click.option("--int8-fp32-adds", is_flag=True, default=False, help="--int8: keep the residual additions in FP32 too.")
@click.option("--int8-preset", type=click.Choice(["performance", "mixed"]), default="performance",
              help="--int8: NNCF preset (mixed: asymmetric activation ranges).")
@click.option("--int8-bias-correction", type=click.Choice(["fast", "full"]), default="fast",
              help="--int8: NNCF bias correction (full: slower, per-layer on the calibration faces).")
@click.option("--int8-accuracy-aware", is_flag=True, default=False,
              help="--int8: NNCF accuracy control: layers return to FP32, most harmful first, until the graph reaches "
                   "--int8-target-psnr against FP32 on a quarter of the calibration faces (slow: many runs).")
@click.option("--int8-target-psnr", type=click.FloatRange(20, 80), default=38.0,
              help="--int8-accuracy-aware: the PSNR (dB) against FP32 to reach.")
@debug_option
def main(checkpoint, from_onnx, direction, out_dir, image_size, ngf, n_blocks, norm, fp16, engine, overwrite,
         min_batch, opt_batch, max_batch, streams, timing_cache, workspace_gib, typing, instance_norm, verify_images,
         verify_count, verify_random, threads, int8, bf16, calib, holdout, calib_count, holdout_count,
         int8_fp32_convs, int8_fp32_adds, int8_preset, int8_bias_correction, int8_accuracy_aware, int8_target_psnr):
    """Export generators to verified ONNX graphs and, where TensorRT and a GPU exist, FP16 engines.

    Every graph is run with ONNX Runtime (CPU) against the PyTorch model before it is kept:
    FP32 within 1 LSB anywhere and PSNR >= 65 dB; FP16 within the calibrated bounds (at most
    4 LSB, >= 99.9% of values within 1 LSB, PSNR >= 53 dB). Files are written under temporary
    names and moved into place only after that; a failed export exits 1 and leaves none of its
    files. Where TensorRT is installed but the engine build fails, the verified graphs are kept
    and a note says so (with --engine it is an error).

    \b
    Examples:
      cyclemask-export --checkpoint runs/x/latest.pt --fp16 --out exported/
      cyclemask-export --checkpoint latest_net_G_A.pth --image-size 256 --out exported/
      cyclemask-export --from-onnx exported/mask.fp16.onnx        # on the GPU machine
      cyclemask-export --checkpoint runs/x/latest.pt --int8 --bf16 \\
          --calib mask=crops/trainA --holdout mask=crops/testA \\
          --calib unmask=crops/trainB --holdout unmask=crops/testB
    """
    # Every usage error comes before torch and onnx are imported (10-20 s on a small CPU): a
    # mistyped command is answered at once.
    if (checkpoint is None) == (from_onnx is None):
        raise click.UsageError("give exactly one of --checkpoint and --from-onnx")
    if from_onnx is not None and (int8 or bf16):
        raise click.UsageError("--int8 / --bf16 start from the checkpoint (the eager model is the reference): use --checkpoint")
    if (calib or holdout) and not (int8 or bf16):
        raise click.UsageError("--calib / --holdout are for --int8 and --bf16")
    if from_onnx is not None:
        for name, value in (("--direction", direction), ("--image-size", image_size), ("--ngf", ngf),
                            ("--n-blocks", n_blocks), ("--norm", norm)):
            if value is not None:
                raise click.UsageError(f"{name} does not apply to --from-onnx (the graph records it)")
        if engine is False:
            raise click.UsageError("--from-onnx builds an engine; --no-engine contradicts it")
        fp16, engine = True, True
    elif engine:
        fp16 = True
    calib_pairs, holdout_pairs = _folder_pairs(calib, "--calib"), _folder_pairs(holdout, "--holdout")

    require_torch("cyclemask-export")
    from tqdm import tqdm

    from .pipeline import ExportOptions, engine_from_onnx, export_checkpoint
    from .tensorrt import EngineBuildConfig, EngineProfile

    if threads:
        import torch

        torch.set_num_threads(threads)
    build = EngineBuildConfig(
        profile=EngineProfile(min_batch, opt_batch, max_batch), timing_cache=timing_cache,
        workspace_gib=workspace_gib, typing=typing, instance_norm=instance_norm, profiles=streams,
    )
    if out_dir is None:
        out_dir = from_onnx.parent if from_onnx is not None else Path("exported")
    from .lowp import LowpOptions
    from .quantize import Int8Config

    lowp = LowpOptions(int8=int8, bf16=bf16, calib=calib_pairs, holdout=holdout_pairs, holdout_count=holdout_count,
                       config=Int8Config(calib_count=calib_count, fp32_convs=int8_fp32_convs,
                                         fp32_residual_adds=int8_fp32_adds, preset=int8_preset,
                                         bias_correction=int8_bias_correction, accuracy_aware=int8_accuracy_aware,
                                         target_psnr_db=int8_target_psnr))
    if int8:
        from .quantize import nncf_available

        ok, why = nncf_available()
        if not ok:
            raise ExportError(why)
    options = ExportOptions(out_dir=out_dir, image_size=image_size, fp16=fp16, engine=engine, overwrite=overwrite,
                            build=build, verify_images=verify_images, verify_count=verify_count,
                            n_random=verify_random, threads=threads, lowp=lowp)
    bar = tqdm(total=None, unit="step", desc="export", leave=False, dynamic_ncols=True)

    def plan(total: int) -> None:
        bar.total = total
        bar.refresh()

    def step(what: str) -> None:
        bar.set_postfix_str(what[:60])
        bar.update(1)
        check_stop()  # between two steps: the staging folder is removed on the way out

    stop_at_safe_points("the current step")

    lock = OutputLock(out_dir, "cyclemask-export")
    try:
        if out_dir.is_dir() or not out_dir.exists():  # else the export's own check says what is wrong
            lock.acquire()
        if from_onnx is not None:
            if not from_onnx.is_file():
                raise ExportError(f"{from_onnx}: no such ONNX file")
            result = engine_from_onnx(from_onnx, options, progress=step, on_plan=plan)
        else:
            result = export_checkpoint(checkpoint, options, direction=direction, ngf=ngf, n_blocks=n_blocks,
                                       norm=norm, progress=step, on_plan=plan)
    finally:
        bar.close()
        lock.release()
    _print_summary(result)


def _folder_pairs(values: tuple[str, ...], flag: str) -> tuple[tuple[str, str], ...]:
    """[DIRECTION=]DIR values as (direction or "*", folder) pairs."""
    out = []
    for v in values:
        head, sep, tail = v.partition("=")
        if sep and head in ("mask", "unmask"):
            out.append((head, tail))
        elif sep and head and "/" not in head:
            raise click.BadParameter(f"{v!r}: the part before '=' must be mask or unmask", param_hint=flag)
        else:
            out.append(("*", v))
    return tuple(out)


def _fmt_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _print_summary(result) -> None:
    echo = click.echo
    echo("")
    echo(f"Verified on {len(result.image_sources)} images: "
         + ", ".join(sorted(set(Path(s).name if not s.startswith("random") else s for s in result.image_sources))))
    for d in result.directions:
        echo(f"[{d.direction}] {d.seconds:.1f} s")
        for a in d.artefacts:
            echo(f"  {a.kind:9s} {a.path}  {_fmt_size(a.size)}")
            for c in a.checks:
                s = c.stats
                psnr = "inf" if math.isinf(s.psnr_db) else f"{s.psnr_db:.1f}"
                echo(f"            vs {c.against}: max |diff| {s.max_abs} LSB, within 1 LSB {s.frac_within_1:.3%}, "
                     f"exact {s.frac_exact:.2%}, mean {s.mean_abs:.4f}, PSNR {psnr} dB  [bounds: {c.bounds.describe()}] "
                     f"{'PASS' if c.passed else 'FAIL'}")
            for check in a.lowp:
                for line in check.lines():
                    echo(f"            {line}")
    if result.engine_built:
        echo(result.engine_note)
    for note in result.notes:
        echo(f"Note: {note}")
    n = len(result.artefacts)
    echo(f"Wrote {n} file{'s' if n != 1 else ''}.")


if __name__ == "__main__":  # pragma: no cover
    main()
