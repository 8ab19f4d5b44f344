"""`cyclemask-run`: translate an image folder or a video with a graph, engine or checkpoint.

By default it is face-aware: it finds the faces in each image or frame (YuNet, shipped with the
package), translates each and pastes its mask zone back (an erase-then-restore graph: the hole it
restored, below the eyes; engine/faces.py); `--aligned` uses the whole image as the model input,
for photos that are already aligned face crops.

The CLI parses its flags into one `RunOptions` (engine/run.py, shared with --demo), runs
`engine.run.translate` with a progress bar and prints what it did. Exit status: 0 when every
input was written, 1 when anything failed (the summary lists what), 130 after Ctrl-C and 143
after SIGTERM (the same stop: the summary says what was written; a file's video stopped early is
discarded whole; on a live video input, Ctrl-C is its normal end: 0).

`--ray` runs the same work on a Ray cluster (engine/ray_run.py): the same outputs, the same summary.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from cyclemask import DIRECTIONS
from cyclemask.cli_util import Command, click_options, debug_option, stop_exit_code
from cyclemask.errors import ConfigError
from cyclemask.face_detect import DETECTOR_ENV

from .backends import BACKEND_NAMES
from .backends.select import precision_choices
from .backends.options import OPTIONS as BACKEND_OPTIONS
from .faces import ROTATED_MODES, FaceConfig
from .run import PASTE_CHOICES, RunOptions, RunStart, translate
from .summary import no_face_warning, summary_lines
from .template_mask import METHODS, check_method, default_method, ignored_by_template, model_only_fields
from .sources import DEFAULT_MAX_PIXELS
from .video import CODECS, DEFAULT_CRF, DEFAULT_PRESET, PRESETS

log = logging.getLogger(__name__)



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
                   "nothing to download. Masks as --mask does (a mask template by default, "
                   "--mask-method gan for the generator) and unmasks with the embedded unmask model, "
                   "unless --model names a checkpoint bundle (both directions by the model), and the "
                   "shipped face detector unless --face-detector / "
                   "$CYCLEMASK_FACE_DETECTOR names another; --paste and --margin apply.")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Translate every image under this folder (recursive). The output tree mirrors "
                   "the input's names and formats.")
@click.option("--video", metavar="FILE|FOLDER|DEVICE|URL", multiple=True,
              help="Translate every frame of this video: a file, a folder of videos (recursive), a "
                   "capture device (/dev/video0) or a stream URL (rtsp://, http://, ...). Repeat it for "
                   "several: one model load and one summary for all; a video that cannot be read does "
                   "not stop the others (exit status 1 names it). The output keeps every frame's "
                   "timestamp, the size and the sound and subtitles. Ctrl-C on a device or stream ends "
                   "it and keeps the video; on a file it discards the unfinished output.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (--images), or output video file (.mp4/.m4v/.mov/.mkv/.avi) or folder "
                   "(--video; a folder with several videos: each is <name>_<direction>.mp4 in it, a "
                   "folder's videos in its subfolders). Never the input folder or inside it. Default: "
                   "beside the input, named <input>_<direction> (a folder of videos: the folder "
                   "<folder>_<direction>; in the current folder for a device or stream, or where the "
                   "input's folder is read-only).")
@click.option("--codec", type=click.Choice(list(CODECS)), default="h264", show_default=True,
              help="--video: the output's video codec. h264 (libx264) plays everywhere; hevc (libx265) and "
                   "av1 (SVT-AV1) are smaller for the same quality and slower; mpeg4 is the old MPEG-4 "
                   "Part 2. On a machine with an NVIDIA driver NVENC is tried first (see --nvenc).")
@click.option("--crf", type=click.IntRange(0, 63), default=None,
              help="--video: constant quality, lower is better and bigger. Default: "
                   + ", ".join(f"{c} {q}" for c, q in DEFAULT_CRF.items())
                   + " (mpeg4: the quantiser, 1-31).")
@click.option("--preset", type=click.Choice(PRESETS), default=DEFAULT_PRESET, show_default=True,
              help="--video: encoder speed against size (x264's names; mapped onto the others).")
@click.option("--no-audio", is_flag=True,
              help="--video: drop the audio and subtitle streams. Default: copy them as they are, or "
                   "re-encode audio to AAC / convert subtitles where the output container needs it.")
@click.option("--nvenc/--no-nvenc", default=None,
              help="--video: try (or never try) the NVIDIA GPU encoder. Default: try it where an NVIDIA "
                   "driver is present; when it does not open, the CPU encoder takes over with a note.")
# Two flags, not one option with two flag values: with a shared destination click keeps the
# last one given, so `--mask --unmask` would run unmask without a word.
@click.option("--mask", "mask_flag", is_flag=True,
              help="Put a mask on: a mask template per face with the embedded model (see --mask-method), "
                   "the 'mask' generator of a --model. Default: the direction the model holds.")
@click.option("--unmask", "unmask_flag", is_flag=True,
              help="Take a mask off (the 'unmask' generator). Not together with --mask.")
@click.option("--unmask-method", type=click.Choice(["restore", "cyclegan"]), default=None,
              help="--unmask with the embedded model: restore finds the mask with a segmenter, erases it "
                   "and restores the face there (every other pixel stays the photo's own); cyclegan runs "
                   "the CycleGAN generator over the mask zone. Default: the one the shipped figures chose "
                   "(see the README).")
@click.option("--mask-method", type=click.Choice(METHODS), default=None,
              help="--mask: template warps a MaskTheFace mask template onto each face's landmarks, shaded "
                   "by the face's lighting, with the colour choice of cyclemask-data synth: no model, no "
                   "backend, fast, and clean on small faces; a followed face keeps its mask across frames. "
                   "gan translates each face with the model. Default: template (it scored best on held-out "
                   "real masked faces, see the README; --demo too), gan with --model, --unmask, --aligned or --ray.")
@click.option("--mask-templates", type=click.Path(path_type=Path), default=None,
              help="--mask-method template: a folder of templates in MaskTheFace's layout (RGBA PNGs and "
                   "masks.cfg). Default: the surgical, cloth, KN95 and N95 templates shipped with cyclemask.")
@click.option("--mask-textures", type=click.Path(path_type=Path), default=None,
              help="--mask-method template: a folder of texture images; a quarter of the recoloured masks "
                   "then get a texture instead of a plain colour. Default: plain colours only.")
@click.option("--mask-kinds", default=None,
              help="--mask-method template: comma-separated kinds (surgical: all its colours and views) or "
                   "styles (surgical_blue) to choose from. Default: surgical, cloth, KN95, N95 (as "
                   "cyclemask-data synth).")
@click.option("--mask-seed", type=int, default=None,
              help="--mask-method template: the seed of every mask's choice (default 0): the same input and "
                   "seed give the same masks.")
@click.option("--aligned", is_flag=True,
              help="Use the whole image as the model input (resize to the model size and back): "
                   "for photos that are already aligned face crops. Default: face-aware mode (find "
                   "each face, translate it, paste its mask zone back: see --paste).")
@click.option("--face-detector", type=click.Path(path_type=Path), default=None,
              help=f"Face-aware mode: a YuNet ONNX file to use instead of the one shipped with "
                   f"cyclemask (face_detection_yunet_2023mar.onnx). Default: ${DETECTOR_ENV} when set, "
                   f"else the shipped model.")
@click.option("--min-face", type=click.IntRange(1), default=FaceConfig.min_face, show_default=True,
              help="Face-aware mode: faces smaller than this (short side of the detected box, in "
                   "pixels) are left as they are; the summary says how many. The generator's masks on "
                   "faces under about 80 px are poor: raise it to 80 to leave them, or use "
                   "--mask-method template, which stays clean there.")
@click.option("--margin", type=click.FloatRange(0.0, 2.0), default=FaceConfig.margin, show_default=True,
              help="Face-aware mode: the square crop around a face adds this fraction of the face's "
                   "size on each side; use the margin the training crops were made with "
                   "(cyclemask-data prepare --margin).")
@click.option("--no-track", is_flag=True,
              help="Face-aware mode, videos: detect every frame on its own, without following faces "
                   "from frame to frame (tracking smooths the crop boxes so the result does not "
                   "jitter; image folders are never tracked).")
@click.option("--no-face-checks", is_flag=True,
              help="Face-aware mode: translate every detection, as it comes. By default a detection "
                   "whose landmarks no real face has (eyes below the mouth, crossed mouth corners...) "
                   "is left alone, and in a video a new face is translated only once it is seen in 2 "
                   "of 3 frames (the frames detected ahead confirm it, so it is translated from its "
                   "first frame; with --detect-workers 0, from its second detection).")
@click.option("--no-upright", is_flag=True,
              help="Face-aware mode: skip the second look at rolled faces. By default a face whose head "
                   "rolls (or whose eye line disagrees with its mouth) is detected again on a crop "
                   "turned upright, so the mask zone stays below both eyes; this costs two more "
                   "detections per rolled face and frame.")
@click.option("--color-match", is_flag=True,
              help="Face-aware mode: bring dark faces to a normal exposure for the model and the result "
                   "back to the frame's, and match its colour to the frame around the face (for "
                   "under-exposed footage).")
@click.option("--paste", type=click.Choice(PASTE_CHOICES), default="auto", show_default=True,
              help="Face-aware mode: zone pastes the model's output only where a mask sits (nose bridge "
                   "to under the chin, cheek to cheek, placed from the face's landmarks), colour-matched "
                   "to the frame, and keeps every other pixel (eyes, hair, background; the lower part of "
                   "glasses lies inside the zone) as it was; crop pastes the whole face crop with a "
                   "feathered edge; hole (erase-then-restore unmasking graphs only) pastes exactly the "
                   "pixels the graph changed: the whole mask its segmenter found, and no more; "
                   "hole-below-eyes: that hole, but never above the zone's top (what the segmenter took "
                   "for mask at the eyes, such as a rim of glasses, keeps its pixels); auto: "
                   "hole-below-eyes for such a graph, zone for a generator.")
@click.option("--detect-side", type=click.IntRange(32, 8192), default=FaceConfig.detect_side, show_default=True,
              help="Face-aware mode: frames larger than this (long side, pixels) are downscaled for "
                   "detection only.")
@click.option("--detect-score", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              default=FaceConfig.score_threshold, show_default=True,
              help="Face-aware mode: the detector's confidence needed to count a face (masked faces "
                   "score lower than bare ones; lower finds more and risks false faces).")
@click.option("--rotated-detection", type=click.Choice(("auto",) + ROTATED_MODES), default="auto",
              show_default=True,
              help="Face-aware mode: also detect on copies rotated by +-25 degrees, for tilted heads. "
                   "full: the whole image, every image (about 3x the detection time); lost: videos, only "
                   "around a followed face the upright pass lost; off. auto: full for --images, lost for "
                   "--video (full without tracking).")
@click.option("--detect-workers", type=click.IntRange(0, 64), default=2, show_default=True,
              help="Face-aware mode: threads that detect faces ahead of the pipeline (0: detect on the "
                   "decode thread).")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="auto", show_default=True,
              help="auto: trt for an engine; for a graph, ort on a GPU machine (best provider that "
                   "really loads) and on a CPU machine openvino or ort (see --probe); torch for a "
                   "checkpoint. It says which and why. "
                   "openvino runs graphs on the CPU (pip install openvino).")
@click.option("--batch", type=click.IntRange(1, 4096), default=None,
              help="Images per model call (the last batch may be smaller). Default: what suits the backend: "
                   "1 on the CPU (batching does not speed it up), one per infer request for OpenVINO's "
                   "throughput mode, the engine's tuned batch for TensorRT, 8 on a GPU.")
# --device ... --cache: the backend options, generated from their declarations.
@click_options(BACKEND_OPTIONS, choices={"precision": precision_choices()})
@click.option("--overwrite", is_flag=True, help="Replace outputs that already exist (never inputs).")
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="--images: refuse images with more pixels than this (each is reported).")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG quality of JPEG outputs.")
@click.option("--queue-depth", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Batches buffered between pipeline stages (memory stays bounded by it).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Spread the run over a Ray cluster (pip install 'cyclemask[ray]'): without ADDRESS, a local "
                   "Ray on this machine; 'auto' joins the cluster `ray start` made here; HOST:PORT or "
                   "ray://HOST:10001 joins that one. Image folders, and --video with a file or a folder of "
                   "videos (one video per task). Inputs, --out and the model must be at the same paths on "
                   "every node.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="--ray: workers, each holding one backend. Default: one per GPU in the cluster; without "
                   "GPUs, one per 4 CPUs.")
@click.option("--gpus-per-worker", type=click.FloatRange(0), default=None,
              help="--ray: GPUs each worker reserves (fractions share a GPU). Default: 1 on a cluster with "
                   "GPUs, else 0.")
@click.option("--cpus-per-worker", type=click.FloatRange(0), default=None,
              help="--ray: CPUs each worker reserves, and the CPU threads of its backend. Default: 1 with "
                   "GPUs, 4 without; a fraction where the machine has fewer CPUs than the workers need.")
@click.option("--files-per-call", type=click.IntRange(1), default=None,
              help="--ray: images handed to a worker at a time. More spreads Ray's per-call cost thinner; "
                   "fewer redo less when a worker dies. Default: 4 x --batch, at least 16.")
@click.option("--resume", is_flag=True,
              help="--ray: finish a run that stopped: skip the inputs whose outputs the output folder's "
                   "journal (.cyclemask-journal) records as complete; the others are made again, replacing "
                   "any file of that name.")
@click.pass_context
def main(ctx: click.Context, demo: bool, images: Path | None, video: tuple[str, ...], out: Path | None,
         ray_address: str | None, workers: int | None, gpus_per_worker: float | None,
         cpus_per_worker: float | None, files_per_call: int | None, resume: bool, mask_flag: bool,
         unmask_flag: bool, **params) -> None:
    """Mask or unmask the faces in an image folder or a video.

    By default every face found is translated and pasted back into the image or frame (the mask
    zone; the restored hole below the eyes for the erase-then-restore unmasking model; faces are
    followed across video frames); --aligned translates whole images instead.
    """
    if mask_flag and unmask_flag:
        raise click.UsageError("--mask and --unmask contradict each other: give one (or neither, for a model "
                               "that holds one direction)")
    params["direction"] = "mask" if mask_flag else "unmask" if unmask_flag else None
    if ray_address is None:
        given = [f for f, v in (("--workers", workers), ("--gpus-per-worker", gpus_per_worker),
                                ("--cpus-per-worker", cpus_per_worker), ("--files-per-call", files_per_call),
                                ("--resume", resume or None)) if v is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only with --ray")
    defaulted = params["mask_method"] is None
    if defaulted:
        params["mask_method"] = default_method(direction=params["direction"], model=params["model"],
                                               aligned=params["aligned"], elsewhere=ray_address is not None)
    try:
        check_method(params["mask_method"], direction=params["direction"], aligned=params["aligned"],
                     model=params["model"], templates=params["mask_templates"], textures=params["mask_textures"],
                     seed=params["mask_seed"], kinds=params["mask_kinds"])
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if params["mask_method"] == "template" and not demo:  # --demo's unmask pass runs a model
        model_only = model_only_fields()
        given = [p.opts[0] for p in ctx.command.params if p.name in model_only
                 and ctx.get_parameter_source(p.name) is click.core.ParameterSource.COMMANDLINE]
        warning = ignored_by_template(given, defaulted)
        if warning:
            click.echo(f"warning: {warning}", err=True)
    # A Ray worker holds one model backend and has no template path.
    if params["mask_method"] == "template" and ray_address is not None:
        raise click.UsageError("--mask-method template: not with --ray (it runs on this machine, on --images, "
                               "--video or --demo)")
    options = RunOptions.from_cli(params)
    if demo:
        if ray_address is not None:
            raise click.UsageError("--demo runs on this machine: do not give --ray")
        if images is not None or video:
            raise click.UsageError("--demo runs on the shipped portrait: do not give --images or --video")
        if out is None:
            raise click.UsageError("--demo needs --out DIR (the folder for the results and the before/after sheet)")
        from cyclemask.outputs import lock_outputs

        ctx.with_resource(lock_outputs("cyclemask-run --demo", folders=[out]))
        if not _demo(options, out):
            ctx.exit(1)
        return
    if (images is None) == (not video):
        raise click.UsageError("give exactly one input: --images DIR, or --video FILE (repeatable)")
    if ray_address is not None:
        if len(video) > 1:
            raise click.UsageError("--ray takes one --video: a file, or a folder of videos")
        ctx.exit(_ray(options, ray_address, workers, gpus_per_worker, cpus_per_worker, files_per_call, resume,
                      images=images, video=video[0] if video else None, out=out))
    if len(video) > 1 or (video and Path(video[0]).is_dir()):
        _videos(ctx, options, list(video), out)
        return
    bar = None

    def start(info: RunStart):
        nonlocal bar
        from tqdm import tqdm

        _echo_start(info, options.mask_method)
        bar = tqdm(total=info.total, unit="frame", disable=not options.progress, dynamic_ncols=True,
                   desc="translating", leave=True)
        return bar.update

    try:
        result = translate(options, images=images, video=video[0] if video else None, out=out, on_start=start)
    finally:
        if bar is not None:
            bar.close()
    for line in summary_lines(result.report, result.backend, result.reason, result.setup_s, output=result.output,
                              faces=result.faces):
        click.echo(line)
    if result.model_note:
        click.echo(f"  model:    {result.model_note}")
    # Last, under the summary it explains, where it is read.
    warning = no_face_warning(result.face_stats, min_face=options.min_face, detect_score=options.detect_score,
                              video=bool(video))
    if warning:
        click.echo(warning)
    if result.report.interrupted:
        ctx.exit(stop_exit_code())
    if not result.report.ok:
        ctx.exit(1)


def _echo_start(info: RunStart, mask_method: str = "gan") -> None:
    be = info.backend
    click.echo(f"input:   {info.source}")
    click.echo(f"output:  {info.output}")
    if mask_method == "template":
        click.echo(f"masks:   {info.model}")
    else:
        click.echo(f"model:   {info.model} ({be.direction or 'direction not recorded'}, {be.image_size}px)")
    click.echo(f"backend: {be.description}  [{info.reason}]")
    if info.batch_reason:
        click.echo(f"batch:   {info.batch} ({info.batch_reason}; --batch to change)")
    for note in be.notes + be.warnings + info.notes:
        click.echo(f"note:    {note}")
    click.echo(f"mode:    {info.mode}")


def _videos(ctx: click.Context, options: RunOptions, videos: list[str], out: Path | None) -> None:
    """Several videos (or a folder of them): one backend, a progress bar per video, one summary."""
    from .run import translate_videos
    from .summary import videos_summary_lines

    bars = []

    def video_start(source: str, output: Path, frames: int | None):
        from tqdm import tqdm

        for b in bars:
            b.close()
        bars.clear()
        click.echo(f"video:   {source} -> {output}")
        bars.append(tqdm(total=frames, unit="frame", disable=not options.progress, dynamic_ncols=True,
                         desc=Path(source).name, leave=False))
        return bars[0].update

    try:
        result = translate_videos(options, videos, out=out, on_start=lambda i: _echo_start(i, options.mask_method),
                                  on_video=video_start)
    finally:
        for b in bars:
            b.close()
    for line in videos_summary_lines(result):
        click.echo(line)
    if result.model_note:
        click.echo(f"  model:    {result.model_note}")
    if result.interrupted:
        ctx.exit(stop_exit_code())
    if not result.ok:
        ctx.exit(1)


def _ray(options: RunOptions, address: str, workers, gpus_per_worker, cpus_per_worker, files_per_call, resume,
         *, images, video, out) -> int:
    """`--ray`: the same run on a Ray cluster (engine/ray_cli.py); returns the exit status."""
    from .ray_cli import ray_main
    from .ray_run import RayOptions

    return ray_main(RayOptions(address=address or None, workers=workers, gpus_per_worker=gpus_per_worker,
                               cpus_per_worker=cpus_per_worker, files_per_call=files_per_call, resume=resume),
                    options, images=images, video=video, out=out, debug=log.isEnabledFor(logging.DEBUG))


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
    click.echo("  masked:   " + ("with a mask template warped onto the face (--mask-method template, no model)"
                                 if report.mask_method == "template" else
                                 "by the mask generator (--mask-method gan)"))
    for d in DIRECTIONS:
        click.echo(f"    {d}: {report.models[d]}")
        click.echo(f"      backend: {report.backends[d]}")
    click.echo(f"  faces:    {report.detector}; found: " + ", ".join(f"{k} {v}" for k, v in report.faces.items()))
    missed = {k: v for k, v in report.reused.items() if v}
    if missed:
        click.echo("  unmask:   not detected on the masked image, the input's face box used: "
                   + ", ".join(f"{k} {v}" for k, v in missed.items()))
    click.echo(f"  written:  {len(report.written)} -> {report.out_dir}")
    for p in report.written:
        click.echo(f"    - {p.name}")
    click.echo(f"  failed:   {len(report.failures)}")
    for f in report.failures:
        click.echo(f"    - {f}")
    click.echo(f"  time:     {time.perf_counter() - t0:.2f} s")
    return report.ok


if __name__ == "__main__":  # pragma: no cover
    main()
