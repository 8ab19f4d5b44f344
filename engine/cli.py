"""`cyclemask-run`: translate an image folder or a video with a graph, engine or checkpoint.

The CLI parses, builds the source, backend and sink, runs the pipeline with a progress bar and
prints a summary. Exit status: 0 when every input was written, 1 when anything failed (the
summary lists what), 130 after Ctrl-C.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from cyclemask.cli_util import Command, debug_option

from .backends import BACKEND_NAMES, BackendOptions, create_backend
from .pipeline import PipelineConfig, RunReport, run_pipeline
from .processing import AlignedProcessor
from .sinks import ImageFolderSink, VideoSink, default_images_out, video_output_path
from .sources import DEFAULT_MAX_PIXELS, ImageFolderSource, VideoSource

log = logging.getLogger(__name__)

FACE_AWARE_PENDING = (
    "face-aware mode (find each face, translate it, paste it back) is not available yet. "
    "Pass --aligned to use the whole image as the model input (resized to the model size and "
    "back), which is right for photos that are already face crops."
)
MAX_LISTED_FAILURES = 20


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@debug_option
@click.option("--model", type=click.Path(path_type=Path), required=True,
              help="The model: an ONNX graph (.onnx), a TensorRT engine (.engine/.plan, with its "
                   ".json sidecar) or a checkpoint (.pt/.pth; a training bundle holds both directions).")
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
                   "for aligned face crops. Required for now; face-aware mode will be the default.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="auto", show_default=True,
              help="auto: trt for an engine, ort for a graph (best provider that really loads), "
                   "torch for a checkpoint; it says which and why.")
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
@click.option("--streams", type=click.IntRange(1, 16), default=2, show_default=True,
              help="trt backend: CUDA streams (execution contexts), i.e. batches in flight.")
@click.option("--threads", type=click.IntRange(1, 512), default=None,
              help="CPU threads for the torch / ort backends. Default: the library's choice.")
@click.option("--cuda-graphs", is_flag=True, help="torch backend on CUDA: capture and replay a CUDA graph.")
@click.option("--channels-last", is_flag=True, help="torch backend: channels-last memory format.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that already exist (never inputs).")
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="--images: refuse images with more pixels than this (each is reported).")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG quality of JPEG outputs.")
@click.option("--queue-depth", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Batches buffered between pipeline stages (memory stays bounded by it).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.pass_context
def main(ctx: click.Context, model: Path, images: Path | None, video: Path | None, out: Path | None,
         direction: str | None, aligned: bool, backend: str, batch: int, device: str, precision: str,
         ort_provider: str, size: int | None, streams: int, threads: int | None, cuda_graphs: bool,
         channels_last: bool, overwrite: bool, max_pixels: int, quality: int, queue_depth: int,
         progress: bool) -> None:
    """Mask or unmask the faces in an image folder or a video."""
    if (images is None) == (video is None):
        raise click.UsageError("give exactly one input: --images DIR or --video FILE")
    if not aligned:
        raise click.UsageError(FACE_AWARE_PENDING)

    t0 = time.perf_counter()
    source = ImageFolderSource(images, max_pixels=max_pixels) if images is not None else VideoSource(video)
    options = BackendOptions(device=device, precision=precision, image_size=size, max_batch=batch,
                             ort_provider=ort_provider, threads=threads, streams=streams,
                             cuda_graphs=cuda_graphs, channels_last=channels_last)
    be, reason = create_backend(model, backend, direction, options)
    try:
        with be:
            setup_s = time.perf_counter() - t0
            name = be.direction or "out"
            if images is not None:
                out_root = out if out is not None else default_images_out(images, name)
                sink = ImageFolderSink(images, out_root, source.paths, overwrite=overwrite, quality=quality)
            else:
                sink = VideoSink(video_output_path(video, out, name), source.info, source=video,
                                 overwrite=overwrite)
            click.echo(f"input:   {source.describe()}")
            click.echo(f"output:  {sink.describe()}")
            click.echo(f"model:   {model} ({be.direction or 'direction not recorded'}, {be.image_size}px)")
            click.echo(f"backend: {be.description}  [{reason}]")
            for note in getattr(be, "notes", []) + getattr(be, "warnings", []):
                click.echo(f"note:    {note}")
            report = _run(source, be, sink, PipelineConfig(batch, queue_depth), progress)
    finally:
        source.close()
    for line in summary_lines(report, be, reason, setup_s, output=sink.describe()):
        click.echo(line)
    if report.interrupted:
        ctx.exit(130)
    if not report.ok:
        ctx.exit(1)


def _run(source, backend, sink, config: PipelineConfig, progress: bool) -> RunReport:
    from tqdm import tqdm

    processor = AlignedProcessor(backend.image_size)
    with tqdm(total=source.total, unit="frame", disable=not progress, dynamic_ncols=True,
              desc="translating", leave=True) as bar:
        return run_pipeline(source, processor, backend, sink, config, progress=bar.update)


def summary_lines(report: RunReport, backend, reason: str, setup_s: float, output: str = "") -> list[str]:
    """The end-of-run summary: inputs, outputs, failures, backend, throughput."""
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
