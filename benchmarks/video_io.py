"""What decoding and encoding a video costs per frame, next to what the generator costs.

    python benchmarks/video_io.py                              # 480p, 720p, 1080p; 120 frames each
    python benchmarks/video_io.py --sizes 720p --frames 300 --json
    python benchmarks/video_io.py --sizes 160x96 --frames 8    # a smoke run

For each size, one input clip is made first (H.264 in MP4 with an AAC track: what users bring),
from textured synthetic faces that drift from frame to frame, so the encoders have real work.
Then, all in this one process, one after another:

Every figure is wall time from opening the input to the output file closed, divided by the
frames:

- new (FFmpeg through PyAV, what `cyclemask-run` uses): decode = `VideoSource` (demux, decode,
  YUV -> RGB with the stream's matrix, the audio carried along); encode = `VideoSink` (RGB ->
  YUV, H.264 through libx264 at the default CRF and preset, the audio copied, MP4 with the index
  first), fed frames already decoded; pipeline = both through `run_pipeline` with a pass-through
  model (frames unchanged, so only the video I/O costs anything; decode and encode overlap on
  their threads).
- old (OpenCV, the path before): decode = `cv2.VideoCapture` + BGR -> RGB; encode =
  `cv2.VideoWriter` mp4v + RGB -> BGR; pipeline = the same two behind the same pipeline. No
  audio either way (OpenCV drops it).
- generator: the embedded demo generator (or --model GRAPH) on one crop per frame, as
  `--aligned` runs it, through the backend `auto` picks: ms per image at --batch.

Milliseconds per frame (median of --repeats runs), frames/s of the pipelines, and the ratio of
the new pipeline's per-frame cost to the generator's. Timings move with other load: the load
average is printed before and after.

Not part of the installed package: run it from the repository root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `benchmarks.*` importable
    sys.path.insert(0, str(REPO))

from benchmarks import inputs  # noqa: E402
from cyclemask.engine.contracts import Sink, Source  # noqa: E402

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}


def parse_size(text: str) -> tuple[str, tuple[int, int]]:
    if text in SIZES:
        return text, SIZES[text]
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m:
        raise click.BadParameter(f"{text!r}: use {', '.join(SIZES)} or WIDTHxHEIGHT")
    return text, (int(m.group(1)), int(m.group(2)))


def make_clip(path: Path, n: int, size: tuple[int, int], fps: int = 30) -> Path:
    """n frames of drifting textured faces, H.264 (crf 18, preset fast) + AAC, in MP4."""
    import av

    from cyclemask.engine.video import VideoOutputConfig

    w, h = size
    rng = np.random.default_rng(0)
    bases = [inputs.synthetic_face(h, w, rng) for _ in range(4)]
    tb = Fraction(1, fps)
    with av.open(str(path), "w", container_options={"movflags": "+faststart"}) as out:
        v = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "fast"})
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.time_base = tb
        a = out.add_stream("aac", rate=48000)
        a.layout = "stereo"
        sample = 0
        for i in range(n):
            img = np.roll(bases[(i // 30) % len(bases)], (i % 30) * 2, axis=1)
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU709",
                                                                          dst_color_range=1)
            f.pts, f.time_base = i, tb
            out.mux(v.encode(f))
            while sample < (i + 1) * 48000 // fps:
                t = (sample + np.arange(1024)) / 48000
                x = np.repeat((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], 2, axis=0)
                af = av.AudioFrame.from_ndarray(x, format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = 48000, sample, Fraction(1, 48000)
                out.mux(a.encode(af))
                sample += 1024
        out.mux(v.encode(None))
        out.mux(a.encode(None))
    return path


# -- the old path (OpenCV), kept here only to compare against ---------------------------------


class OpenCVSource(Source):
    """The frames of a video through cv2.VideoCapture, as RGB (the reader before PyAV)."""

    kind = "video"

    def __init__(self, path: Path) -> None:
        import cv2

        self.path, self._cap = path, cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        self.fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.total = None
        self.problems: list[str] = []

    @property
    def name(self) -> str:
        return str(self.path)

    def describe(self) -> str:
        return f"{self.path} (OpenCV)"

    def __iter__(self):
        import cv2

        from cyclemask.engine.sources import Frame

        i = 0
        while True:
            ok, bgr = self._cap.read()
            if not ok:
                break
            yield Frame(i, f"frame {i}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            i += 1

    def close(self) -> None:
        self._cap.release()


class OpenCVSink(Sink):
    """cv2.VideoWriter with mp4v (the writer before PyAV)."""

    fatal_write_errors = True

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        self._w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._w.isOpened():
            raise RuntimeError(f"{path}: OpenCV cannot write mp4v here")
        self.path = path

    def describe(self) -> str:
        return f"{self.path} (OpenCV mp4v)"

    def write(self, frame, image) -> None:
        import cv2

        self._w.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def finish(self, commit: bool) -> list[str]:
        self._w.release()
        return []


# -- timing ------------------------------------------------------------------------------------


def _identity_backend():
    from cyclemask.engine.backends import SyncBackend

    class Identity(SyncBackend):
        name = "identity"

        def __init__(self) -> None:
            super().__init__(None, None)
            self._image_size = 16

        def _activate(self) -> None:
            pass

        def _deactivate(self) -> None:
            pass

        def _run(self, batch):
            return batch

    return Identity()


def time_new(clip: Path, out_dir: Path, batch: int, preset: str | None = None) -> dict[str, float]:
    from cyclemask.engine.pipeline import PipelineConfig, run_pipeline
    from cyclemask.engine.processing import PassThroughProcessor
    from cyclemask.engine.video import VideoOutputConfig, VideoSink, VideoSource

    config = VideoOutputConfig(preset=preset) if preset else VideoOutputConfig()

    t0 = time.perf_counter()
    source = VideoSource(clip)
    frames = list(source)
    decode_s = time.perf_counter() - t0
    n = len(frames)
    t0 = time.perf_counter()
    sink = VideoSink(out_dir / "new_encode.mp4", source.info, source=source, overwrite=True, config=config)
    for f in frames:
        sink.write(f, f.image)
    sink.finish(commit=True)
    encode_s = time.perf_counter() - t0
    source.close()
    del frames
    t0 = time.perf_counter()
    source = VideoSource(clip)
    sink = VideoSink(out_dir / "new_pipeline.mp4", source.info, source=source, overwrite=True, config=config)
    with _identity_backend() as be:
        rep = run_pipeline(source, PassThroughProcessor(be.image_size), be, sink, PipelineConfig(batch_size=batch))
    source.close()
    pipeline_s = time.perf_counter() - t0
    if not rep.ok or rep.written != n:
        raise RuntimeError(f"new pipeline wrote {rep.written} of {n}: {rep.error or rep.failures[:1]}")
    return {"frames": n, "decode_ms": 1e3 * decode_s / n, "encode_ms": 1e3 * encode_s / n,
            "pipeline_ms": 1e3 * pipeline_s / n}


def time_old(clip: Path, out_dir: Path, batch: int) -> dict[str, float]:
    from cyclemask.engine.pipeline import PipelineConfig, run_pipeline
    from cyclemask.engine.processing import PassThroughProcessor

    t0 = time.perf_counter()
    source = OpenCVSource(clip)
    frames = list(source)
    decode_s = time.perf_counter() - t0
    source.close()
    n = len(frames)
    h, w = frames[0].image.shape[:2]
    t0 = time.perf_counter()
    sink = OpenCVSink(out_dir / "old_encode.mp4", source.fps, (w, h))
    for f in frames:
        sink.write(f, f.image)
    sink.finish(True)
    encode_s = time.perf_counter() - t0
    del frames
    t0 = time.perf_counter()
    source = OpenCVSource(clip)
    sink = OpenCVSink(out_dir / "old_pipeline.mp4", source.fps, (w, h))
    with _identity_backend() as be:
        rep = run_pipeline(source, PassThroughProcessor(be.image_size), be, sink, PipelineConfig(batch_size=batch))
    pipeline_s = time.perf_counter() - t0
    if not rep.ok or rep.written != n:
        raise RuntimeError(f"old pipeline wrote {rep.written} of {n}: {rep.error or rep.failures[:1]}")
    return {"frames": n, "decode_ms": 1e3 * decode_s / n, "encode_ms": 1e3 * encode_s / n,
            "pipeline_ms": 1e3 * pipeline_s / n}


def time_generator(model: Path | None, batch: int, seconds: float) -> dict:
    """ms per image of the generator through the backend `auto` picks, batches of `batch`."""
    from cyclemask.engine.backends import BackendOptions, create_backend
    from cyclemask.demo_model import default_model

    path = model or default_model("mask")
    be, reason = create_backend(path, "auto", None, BackendOptions(max_batch=batch))
    with be:
        x = np.stack(inputs.synthetic_faces(batch, be.image_size)[0])
        be.infer(x)  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 3:
            be.infer(x)
            n += 1
        per_image = 1e3 * (time.perf_counter() - t0) / (n * batch)
        return {"model": str(path), "backend": be.description, "reason": reason, "size": be.image_size,
                "batch": batch, "ms_per_image": per_image}


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--sizes", default="480p,720p,1080p", show_default=True,
              help="Comma-separated: 480p, 720p, 1080p or WIDTHxHEIGHT.")
@click.option("--frames", type=click.IntRange(2), default=120, show_default=True, help="Frames per clip.")
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True,
              help="Runs of each measurement; the median is reported.")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True)
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An ONNX graph to time as the generator. Default: the embedded demo generator.")
@click.option("--generator-seconds", type=float, default=3.0, show_default=True)
@click.option("--preset", default=None, help="x264 preset of the new path. Default: cyclemask-run's default.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def main(sizes: str, frames: int, repeats: int, batch: int, model: Path | None, generator_seconds: float, preset: str | None,
         as_json: bool) -> None:
    """Per-frame cost of the video decode and encode (new: PyAV; old: OpenCV) against the
    generator's."""
    import av

    from cyclemask.engine.video import VideoOutputConfig

    chosen = [parse_size(s.strip()) for s in sizes.split(",") if s.strip()]
    load0 = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="cyclemask-video-io-"))
    rows = []
    try:
        gen = time_generator(model, batch, generator_seconds)
        for name, size in chosen:
            clip = make_clip(work / f"{name}.mp4", frames, size)
            new = [time_new(clip, work, batch, preset) for _ in range(repeats)]
            old = [time_old(clip, work, batch) for _ in range(repeats)]
            row = {"size": name, "width": size[0], "height": size[1], "frames": frames}
            for tag, runs in (("new", new), ("old", old)):
                for key in ("decode_ms", "encode_ms", "pipeline_ms"):
                    row[f"{tag}_{key}"] = round(_median(runs, key), 3)
                row[f"{tag}_pipeline_fps"] = round(1e3 / row[f"{tag}_pipeline_ms"], 1)
            row["new_over_generator"] = round(row["new_pipeline_ms"] / gen["ms_per_image"], 2)
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"rows": rows, "generator": gen, "cpus": os.cpu_count(), "pyav": av.__version__,
              "ffmpeg": ".".join(map(str, av.ffmpeg_version_info)) if isinstance(av.ffmpeg_version_info, tuple)
              else str(av.ffmpeg_version_info),
              "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
              "encoder": f"new: libx264 crf 18 preset {preset or VideoOutputConfig.preset}"
                         f"{' (the default)' if preset in (None, VideoOutputConfig.preset) else ''}, AAC copied; old: OpenCV mp4v, no audio"}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    g = gen
    click.echo(f"generator: {Path(g['model']).name} {g['size']}px on {g['backend']}: "
               f"{g['ms_per_image']:.2f} ms per image (batch {g['batch']})")
    click.echo(f"PyAV {result['pyav']} (FFmpeg {result['ffmpeg']}), {result['cpus']} CPUs, load "
               f"{result['load_before']} -> {result['load_after']}; {result['encoder']}")
    click.echo("")
    click.echo("| size | new decode ms | new encode ms | new pipeline ms (fps) | old decode ms | old encode ms "
               "| old pipeline ms (fps) | new pipeline / generator |")
    click.echo("|---|---|---|---|---|---|---|---|")
    for r in rows:
        click.echo(f"| {r['size']} ({r['width']}x{r['height']}) | {r['new_decode_ms']:.2f} | {r['new_encode_ms']:.2f} "
                   f"| {r['new_pipeline_ms']:.2f} ({r['new_pipeline_fps']}) | {r['old_decode_ms']:.2f} "
                   f"| {r['old_encode_ms']:.2f} | {r['old_pipeline_ms']:.2f} ({r['old_pipeline_fps']}) "
                   f"| {r['new_over_generator']}x |")


if __name__ == "__main__":
    main()
