"""The `--ray` branch of `cyclemask-run`: builds the job from the command line's choices, draws
a progress bar over files and prints the summary a local run prints. The work is in
engine/ray_run.py."""

from __future__ import annotations

from pathlib import Path

import click

from cyclemask.cli_util import stop_exit_code

from .backends import BackendOptions, model_kind
from .faces import FaceConfig
from .pipeline import PipelineConfig
from .ray_run import RayOptions, WorkerBackend, WorkerSpec, image_job, model_direction, require_ray, run, summary_extra, video_job


def ray_main(opts: RayOptions, *, images: Path | None, video: str | None, out: Path | None, model: Path | None,
             backend: str, direction: str | None, options: BackendOptions, face_config: FaceConfig | None,
             face_detector: Path | None, detect_workers: int, pipeline: PipelineConfig, quality: int,
             max_pixels: int, video_config, overwrite: bool, progress: bool, mode: str, debug: bool = False,
             batch_given: bool = True, paste_auto: bool = False) -> int:
    """Run on Ray and print what happened; returns the exit status (0, 1, or 130 / 143 after Ctrl-C / SIGTERM)."""
    from tqdm import tqdm

    from .summary import summary_lines
    from .faces import FaceStats

    require_ray()  # before anything is read: say how to install it
    model_label = str(model)
    if model is None:
        from cyclemask.demo_model import default_model, describe_default

        model = default_model(direction, backend)
        model_label = f"{model}: {describe_default()}"
        name = direction or "mask"
    else:
        model_kind(model)  # a missing or unknown model file is refused before Ray starts
        name = direction or model_direction(model) or "out"
    spec = WorkerSpec(kind="", in_root="", out_root="", model=str(Path(model).resolve()), backend=backend,
                      direction=direction, options=options, face=face_config,
                      face_detector=str(Path(face_detector).resolve()) if face_detector is not None else None,
                      detect_workers=detect_workers, pipeline=pipeline, quality=quality, max_pixels=max_pixels,
                      video=video_config, batch_given=batch_given, paste_auto=paste_auto)
    if images is not None:
        job = image_job(images, out if out is not None else _default_images_out(images, name), spec, max_pixels,
                        overwrite)
    else:
        job = video_job(video, out, name, spec, overwrite)
    click.echo(f"input:   {job.describe_input}")
    click.echo(f"output:  {job.lock_root}")
    click.echo(f"model:   {model_label}")
    click.echo(f"mode:    {mode}")
    with tqdm(total=len(job.keys), unit="file", disable=not progress, dynamic_ncols=True,
              desc="translating", leave=True) as bar:
        report = run(job, opts, echo=click.echo, progress=bar.update, debug=debug)
    rep = report.run
    be = report.backend or WorkerBackend("no worker answered", [], "", None, None)
    faces = None
    if face_config is not None and report.faces:
        faces = FaceStats(**report.faces).summary(face_config.min_face)
    lines = summary_lines(rep, be, be.reason, report.setup_s, output=str(job.lock_root), faces=faces)
    at = next((i for i, line in enumerate(lines) if line.startswith("  backend:")), len(lines))
    lines[at:at] = summary_extra(report)
    if report.kind == "videos":
        fps = report.frames_written / rep.elapsed_s if rep.elapsed_s > 0 else 0.0
        lines = [f"  throughput: {fps:.1f} frames/s ({report.frames_written} frames in {rep.elapsed_s:.2f} s, "
                 f"slowest worker start {report.setup_s:.2f} s)" if line.startswith("  throughput:") else line
                 for line in lines]
    for line in lines:
        click.echo(line)
    if face_config is not None and report.faces:
        from .summary import no_face_warning

        warning = no_face_warning(FaceStats(**report.faces), min_face=face_config.min_face,
                                  detect_score=face_config.score_threshold, video=video is not None)
        if warning:
            click.echo(warning)
    if rep.interrupted:
        return stop_exit_code()
    return 0 if rep.ok else 1


def _default_images_out(images: Path, name: str) -> Path:
    from .sinks import default_images_out

    return default_images_out(images, name, fallback=False)  # the current folder is this machine's only
