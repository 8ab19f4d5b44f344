"""`cyclemask-export`: checkpoint -> verified ONNX graphs (FP32, FP16) and TensorRT engines."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import click

from cyclemask.cli_util import Command, check_stop, click_options, debug_option, require_torch, stop_at_safe_points
from cyclemask.errors import ExportError
from cyclemask.outputs import OutputLock

from .options import OPTIONS as EXPORT_OPTIONS
from .options import ExportArgs

log = logging.getLogger(__name__)


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
# Every option is declared once in export/options.py (flag, help, default, where it goes).
@click_options(EXPORT_OPTIONS, show_defaults=False)
@debug_option
def main(**params):
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
    args = ExportArgs(**params)
    checkpoint, from_onnx, direction, out_dir = args.checkpoint, args.from_onnx, args.direction, args.out_dir
    fp16, engine, int8, bf16, calib, holdout = args.fp16, args.engine, args.int8, args.bf16, args.calib, args.holdout
    # Every usage error comes before torch and onnx are imported (10-20 s on a small CPU): a
    # mistyped command is answered at once.
    if (checkpoint is None) == (from_onnx is None):
        raise click.UsageError("give exactly one of --checkpoint and --from-onnx")
    if from_onnx is not None and (int8 or bf16):
        raise click.UsageError("--int8 / --bf16 start from the checkpoint (the eager model is the reference): use --checkpoint")
    if (calib or holdout) and not (int8 or bf16):
        raise click.UsageError("--calib / --holdout are for --int8 and --bf16")
    if from_onnx is not None:
        for name, value in (("--direction", direction), ("--image-size", args.image_size), ("--ngf", args.ngf),
                            ("--n-blocks", args.n_blocks), ("--norm", args.norm)):
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

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    build = EngineBuildConfig(profile=EngineProfile(**args.keywords("profile")), **args.keywords("build"))
    if out_dir is None:
        out_dir = from_onnx.parent if from_onnx is not None else Path("exported")
    from .lowp import LowpOptions
    from .quantize import Int8Config

    lowp = LowpOptions(calib=calib_pairs, holdout=holdout_pairs, config=Int8Config(**args.keywords("int8")),
                       **args.keywords("lowp"))
    if int8:
        from .quantize import nncf_available

        ok, why = nncf_available()
        if not ok:
            raise ExportError(why)
    options = ExportOptions(out_dir=out_dir, fp16=fp16, engine=engine, build=build, lowp=lowp, **args.keywords("export"))
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
            result = export_checkpoint(checkpoint, options, direction=direction, ngf=args.ngf, n_blocks=args.n_blocks,
                                       norm=args.norm, progress=step, on_plan=plan)
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
