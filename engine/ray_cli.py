"""The `--ray` branch of `cyclemask-run`: the run's own `RunOptions`, with only where batches run
changed. It resolves the model and the outputs' name as a local run does, draws a progress bar
over files and prints the summary a local run prints. The work is in engine/ray_run.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from cyclemask.cli_util import stop_exit_code

from .backends import model_kind
from .ray_run import (RayOptions, WorkerBackend, WorkerSpec, image_job, model_direction, model_method, require_ray, run,
                      video_job)
from .run import RunOptions, describe_mode, face_detector_path, output_name, paste_for_method, resolve_model


def ray_main(opts: RayOptions, options: RunOptions, *, images: Path | None, video: str | None, out: Path | None,
             debug: bool = False) -> int:
    """Run on Ray and print what happened; returns the exit status (0, 1, or 130 / 143 after Ctrl-C / SIGTERM)."""
    from tqdm import tqdm

    from .faces import FaceStats
    from .summary import no_face_warning, ray_lines, summary_lines

    require_ray()  # before anything is read: say how to install it
    model, model_note = resolve_model(options)
    model_kind(model)  # a missing or unknown model file is refused before Ray starts
    model_label = f"{model}: {model_note}" if model_note else str(model)
    detector = face_detector_path(options)
    face_config = None if options.aligned else options.face_config(video=video is not None)
    if face_config is not None:  # the paste follows the graph, as in the workers' loaded backends
        face_config = dataclasses.replace(face_config, paste=paste_for_method(options.paste, model_method(model)))
    # Named before any backend loads, from what the model file records: what a local run's loaded
    # backend says (the embedded model without --unmask is the mask generator).
    direction = options.direction or model_direction(model) or ("mask" if options.model is None else None)
    name = output_name(direction)
    # Every node reads the same paths: absolute ones, and the embedded model named as a file.
    options = dataclasses.replace(options, model=Path(model).resolve(), unmask_method=None,
                                  face_detector=Path(detector).resolve() if detector is not None else None)
    spec = WorkerSpec(kind="", in_root="", out_root="", options=options)
    if images is not None:
        job = image_job(images, out if out is not None else _default_images_out(images, name), spec,
                        options.max_pixels, options.overwrite)
    else:
        job = video_job(video, out, name, spec, options.overwrite)
    click.echo(f"input:   {job.describe_input}")
    click.echo(f"output:  {job.lock_root}")
    click.echo(f"model:   {model_label}")
    click.echo(f"mode:    {describe_mode(face_config, detector)}")
    with tqdm(total=len(job.keys), unit="file", disable=not options.progress, dynamic_ncols=True,
              desc="translating", leave=True) as bar:
        report = run(job, opts, echo=click.echo, progress=bar.update, debug=debug)
    rep = report.run
    be = report.backend or WorkerBackend("no worker answered", [], "", None, None)
    stats = FaceStats(**report.faces) if face_config is not None and report.faces else None
    faces = stats.summary(face_config.min_face) if stats is not None else None
    for line in summary_lines(rep, be, be.reason, report.setup_s, output=str(job.lock_root), faces=faces,
                              extra=ray_lines(report),
                              frames=report.frames_written if report.kind == "videos" else None):
        click.echo(line)
    warning = no_face_warning(stats, min_face=options.min_face, detect_score=options.detect_score,
                              video=video is not None)
    if warning:
        click.echo(warning)
    if rep.interrupted:
        return stop_exit_code()
    return 0 if rep.ok else 1


def _default_images_out(images: Path, name: str) -> Path:
    from .sinks import default_images_out

    return default_images_out(images, name, fallback=False)  # the current folder is this machine's only
