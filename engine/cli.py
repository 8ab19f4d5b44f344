"""`cyclemask-run`: translate an image folder or a video with a graph, engine or checkpoint.

By default it is face-aware: it finds the faces in each image or frame (YuNet), translates each
and pastes it back (engine/faces.py); `--aligned` uses the whole image as the model input, for
photos that are already aligned face crops.

The CLI parses its flags into one `RunOptions` (engine/run.py, shared with --demo), runs
`engine.run.translate` with a progress bar and prints what it did. Exit status: 0 when every input was written, 1 when anything failed (the
summary lists what), 130 after Ctrl-C.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from cyclemask import DIRECTIONS
from cyclemask.artifacts import DEFAULT_STREAMS
from cyclemask.cli_util import Command, debug_option
from cyclemask.errors import ConfigError
from cyclemask.faces import DETECTOR_ENV

from .backends import BACKEND_NAMES
from .faces import FaceConfig
from .pipeline import RunReport
from .run import RunOptions, RunStart, translate
from .sources import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)

MAX_LISTED_FAILURES = 20


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@debug_option
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="The model: an ONNX graph (.onnx), a TensorRT engine (.engine/.plan, with its "
                   ".json sidecar) or a checkpoint (.pt/.pth; a training bundle holds both directions). "
                   "Default: the embedded demo generators shipped with cyclemask (small, CPU-trained, "
                   "not the paper's model; the ONNX graph of the direction, the bundle for --backend torch).")
@click.option("--demo", is_flag=True,
              help="Mask and unmask the public-domain portrait shipped with matplotlib "
                   "(grace_hopper.jpg) and write the results and a before/after sheet to --out: "
                   "nothing to download. Uses the embedded demo generators unless --model names a "
                   "checkpoint bundle; faces: --face-detector / $CYCLEMASK_FACE_DETECTOR when given, "
                   "else the portrait's known face box.")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Translate every image under this folder (recursive). The output tree mirrors "
                   "the input's names and formats.")
@click.option("--video", type=click.Path(path_type=Path), default=None,
              help="Translate every frame of this video. The output keeps its frame rate, frame "
                   "count and size (mp4v).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (--images), or output video file (.mp4/.mov/.m4v/.avi) or folder "
                   "(--video). Never the input folder or inside it. Default: beside the input, named "
                   "<input>_<direction>.")
@click.option("--mask", "direction", flag_value="mask",
              help="Put a mask on (the 'mask' generator). Default: the direction the model holds.")
@click.option("--unmask", "direction", flag_value="unmask",
              help="Take a mask off (the 'unmask' generator).")
@click.option("--aligned", is_flag=True,
              help="Use the whole image as the model input (resize to the model size and back): "
                   "for photos that are already aligned face crops. Default: face-aware mode (find "
                   "each face, translate it, paste it back with a feathered edge).")
@click.option("--face-detector", type=click.Path(path_type=Path), default=None,
              help=f"Face-aware mode: the YuNet ONNX file (face_detection_yunet_2023mar.onnx). "
                   f"Default: ${DETECTOR_ENV}.")
@click.option("--min-face", type=click.IntRange(1), default=FaceConfig.min_face, show_default=True,
              help="Face-aware mode: faces smaller than this (short side of the detected box, in "
                   "pixels) are left as they are.")
@click.option("--margin", type=click.FloatRange(0.0, 2.0), default=FaceConfig.margin, show_default=True,
              help="Face-aware mode: the square crop around a face adds this fraction of the face's "
                   "size on each side; use the margin the training crops were made with "
                   "(cyclemask-data prepare --margin).")
@click.option("--no-track", is_flag=True,
              help="Face-aware mode, videos: detect every frame on its own, without following faces "
                   "from frame to frame (tracking smooths the crop boxes so the result does not "
                   "jitter; image folders are never tracked).")
@click.option("--color-match", is_flag=True,
              help="Face-aware mode: bring dark faces to a normal exposure for the model and the result "
                   "back to the frame's, and match its colour to the frame around the face (for "
                   "under-exposed footage).")
@click.option("--detect-side", type=click.IntRange(32, 8192), default=FaceConfig.detect_side, show_default=True,
              help="Face-aware mode: frames larger than this (long side, pixels) are downscaled for "
                   "detection only.")
@click.option("--detect-workers", type=click.IntRange(0, 64), default=2, show_default=True,
              help="Face-aware mode: threads that detect faces ahead of the pipeline (0: detect on the "
                   "decode thread).")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="auto", show_default=True,
              help="auto: trt for an engine; for a graph, ort on a GPU machine (best provider that "
                   "really loads) and on a CPU machine openvino or ort (see --probe); torch for a "
                   "checkpoint. It says which and why. "
                   "openvino runs graphs on the CPU (pip install openvino).")
@click.option("--batch", type=click.IntRange(1, 4096), default=8, show_default=True,
              help="Images per model call (the last batch may be smaller).")
@click.option("--device", default="auto", show_default=True,
              help="torch backend: auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="torch backend: fp16 needs CUDA.")
@click.option("--ort-provider", type=click.Choice(["auto", "tensorrt", "cuda", "cpu"]), default="auto",
              show_default=True,
              help="ort backend: the ONNX Runtime execution provider; an explicit one that does not "
                   "load is an error (auto takes the best that does).")
@click.option("--size", type=click.IntRange(4, 4096), default=None,
              help="torch backend: model input size in pixels (multiple of 4). Default: the size the "
                   "checkpoint records, else 256. Graphs and engines fix their own.")
@click.option("--streams", type=click.IntRange(1, 16), default=DEFAULT_STREAMS, show_default=True,
              help="trt backend: CUDA streams (execution contexts), i.e. batches in flight; at most as many as "
                   "the engine has optimization profiles (cyclemask-export --streams).")
@click.option("--threads", type=click.IntRange(1, 512), default=None,
              help="CPU threads for the torch / ort / openvino backends. Default: the library's choice "
                   "(openvino: the CPUs this process may use).")
@click.option("--cuda-graphs", is_flag=True, help="torch backend on CUDA: capture and replay a CUDA graph.")
@click.option("--channels-last", is_flag=True, help="torch backend: channels-last memory format.")
@click.option("--compile", "compile_", is_flag=True,
              help="torch backend: torch.compile the model (CPU or CUDA). Compiling takes seconds to "
                   "a minute at load (reported); the kernels are cached in $TORCHINDUCTOR_CACHE_DIR "
                   "(default ~/.cache/cyclemask/torchinductor) for later runs.")
@click.option("--ov-mode", type=click.Choice(["throughput", "latency"]), default="throughput", show_default=True,
              help="openvino backend: throughput keeps several batches in flight on separate CPU "
                   "streams (folders, videos); latency puts every thread on one batch.")
@click.option("--ov-requests", type=click.IntRange(1, 64), default=None,
              help="openvino backend, throughput mode: infer requests (batches) in flight. "
                   "Default: OpenVINO's optimum for this CPU.")
@click.option("--probe/--no-probe", default=True, show_default=True,
              help="--backend auto with a graph on a CPU machine: time OpenVINO and ONNX Runtime on "
                   "single images for about a second and keep the faster; a model whose first image "
                   "takes over 0.25 s (the full generator on a small CPU) gets OpenVINO untimed. "
                   "--no-probe: OpenVINO whenever it is installed.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that already exist (never inputs).")
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="--images: refuse images with more pixels than this (each is reported).")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG quality of JPEG outputs.")
@click.option("--queue-depth", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Batches buffered between pipeline stages (memory stays bounded by it).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.pass_context
def main(ctx: click.Context, demo: bool, images: Path | None, video: Path | None, out: Path | None, **params) -> None:
    """Mask or unmask the faces in an image folder or a video.

    By default every face found is translated and pasted back into the image or frame (faces
    are followed across video frames); --aligned translates whole images instead.
    """
    options = RunOptions.from_cli(params)
    if demo:
        if images is not None or video is not None:
            raise click.UsageError("--demo runs on the shipped portrait: do not give --images or --video")
        if out is None:
            raise click.UsageError("--demo needs --out DIR (the folder for the results and the before/after sheet)")
        if not _demo(options, out):
            ctx.exit(1)
        return
    if (images is None) == (video is None):
        raise click.UsageError("give exactly one input: --images DIR or --video FILE")
    bar = None

    def start(info: RunStart):
        nonlocal bar
        from tqdm import tqdm

        be = info.backend
        click.echo(f"input:   {info.source}")
        click.echo(f"output:  {info.output}")
        click.echo(f"model:   {info.model} ({be.direction or 'direction not recorded'}, {be.image_size}px)")
        click.echo(f"backend: {be.description}  [{info.reason}]")
        for note in be.notes + be.warnings:
            click.echo(f"note:    {note}")
        click.echo(f"mode:    {info.mode}")
        bar = tqdm(total=info.total, unit="frame", disable=not options.progress, dynamic_ncols=True,
                   desc="translating", leave=True)
        return bar.update

    try:
        result = translate(options, images=images, video=video, out=out, on_start=start)
    finally:
        if bar is not None:
            bar.close()
    for line in summary_lines(result.report, result.backend, result.reason, result.setup_s, output=result.output,
                              faces=result.faces):
        click.echo(line)
    if result.model_note:
        click.echo(f"  model:    {result.model_note}")
    if result.report.interrupted:
        ctx.exit(130)
    if not result.report.ok:
        ctx.exit(1)


def _demo(options: RunOptions, out: Path) -> bool:
    """`--demo`: run it and print what it did; True when everything was written."""
    from cyclemask.demo_model import describe_default

    from .backends import model_kind
    from .demo import run_demo

    models = None
    if options.model is not None:
        if model_kind(options.model) != "checkpoint":
            raise ConfigError(f"--demo --model {options.model}: the demo runs both directions, so it needs a "
                              "checkpoint bundle holding both (e.g. a run's generators.pt), not one graph or engine")
        models = {d: options.model for d in DIRECTIONS}
    t0 = time.perf_counter()
    report = run_demo(out, options, models=models, progress=lambda name: click.echo(f"portrait: {name}"))
    click.echo("")
    click.echo("summary:")
    click.echo(f"  models:   {describe_default() if options.model is None else options.model}")
    for d in DIRECTIONS:
        click.echo(f"    {d}: {report.models[d]}")
        click.echo(f"      backend: {report.backends[d]}")
    click.echo(f"  faces:    {report.detector}; found: " + ", ".join(f"{k} {v}" for k, v in report.faces.items()))
    click.echo(f"  written:  {len(report.written)} -> {report.out_dir}")
    for p in report.written:
        click.echo(f"    - {p.name}")
    click.echo(f"  failed:   {len(report.failures)}")
    for f in report.failures:
        click.echo(f"    - {f}")
    click.echo(f"  time:     {time.perf_counter() - t0:.2f} s")
    return report.ok


def summary_lines(report: RunReport, backend, reason: str, setup_s: float, output: str = "",
                  faces: str | None = None) -> list[str]:
    """The end-of-run summary: inputs, outputs, failures, faces, backend, throughput."""
    total = report.total if report.total is not None else report.inputs
    lines = ["", "summary:"]
    if report.interrupted:
        lines.append("  stopped: interrupted (Ctrl-C)")
    elif report.error is not None:
        lines.append(f"  stopped by an error: {report.error}")
    lines.append(f"  inputs:   {total}" + (f" ({report.inputs} read)" if report.inputs != total else ""))
    lines.append(f"  written:  {report.written}" + (f" -> {output}" if output else ""))
    lines.append(f"  failed:   {len(report.failures)}")
    not_reached = report.not_written - len(report.failures)
    if not_reached > 0:
        lines.append(f"  not written (run stopped first): {not_reached}")
    for key, message in report.failures[:MAX_LISTED_FAILURES]:
        lines.append(f"    - {message if key in message else key + ': ' + message}")
    if len(report.failures) > MAX_LISTED_FAILURES:
        lines.append(f"    ... and {len(report.failures) - MAX_LISTED_FAILURES} more")
    for note in report.notes:
        lines.append(f"  note: {note}")
    if faces is not None:
        lines.append(f"  faces:    {faces}")
    lines.append(f"  backend:  {backend.description}")
    lines.append(f"  providers: {', '.join(backend.providers) or 'n/a'}  [{reason}]")
    lines.append(
        f"  throughput: {report.fps:.1f} frames/s ({report.written} frames in {report.elapsed_s:.2f} s, "
        f"batch {report.crops / report.batches if report.batches else 0:.1f} on average; "
        f"model load {setup_s:.2f} s)"
    )
    return lines


if __name__ == "__main__":  # pragma: no cover
    main()
