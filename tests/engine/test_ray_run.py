"""`cyclemask-run --ray`: on a local Ray (2 CPUs, started once for this module) it writes the
bytes a local run writes, reports a broken file the same way, resumes from the output folder's
journal, and loses nothing when a worker is killed mid-run. The option checks and the worker
plan need no Ray."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cyclemask.engine.cli import main
from cyclemask.engine.ray_run import RAY_INSTALL, RayOptions, plan_workers
from cyclemask.errors import ConfigError
from cyclemask.outputs import JOURNAL_NAME, read_journal


def run(*args):
    return CliRunner().invoke(main, ["--no-progress", *map(str, args)])


def _common(graph: Path) -> list:
    # ORT on one thread on both sides: the same runtime, so the same bytes.
    return ["--model", graph, "--backend", "ort", "--aligned", "--threads", "1", "--batch", "4"]


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != JOURNAL_NAME}


def _summary(output: str) -> dict:
    """The counts and the failure list of a summary, without the output path."""
    lines = output.splitlines()
    counts = {m[1]: int(m[2]) for m in (re.match(r"  (inputs|written|failed):\s+(\d+)", x) for x in lines) if m}
    return {"counts": counts, "failures": [x for x in lines if x.startswith("    - ")]}


def _done_records(root: Path) -> list[str]:
    return [r["done"] for r in read_journal(root) if "done" in r]


def _partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]


def _images(root: Path, n: int, seed: int, side: int = 40) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = root / ("sub" if i % 3 == 0 else "") / f"img{seed}_{i:02d}.{'jpg' if i % 4 == 1 else 'png'}"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), rng.integers(0, 256, size=(side + i % 5, side + 2 * (i % 3), 3), dtype=np.uint8))
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------
# Without Ray
# ---------------------------------------------------------------------------------------------


def test_plan_defaults_fit_the_cluster():
    gpu = plan_workers(RayOptions(), cluster_cpus=16, cluster_gpus=4, local=True)
    assert (gpu.workers, gpu.gpus, gpu.cpus) == (4, 1.0, 1.0)
    cpu = plan_workers(RayOptions(), cluster_cpus=16, cluster_gpus=0, local=True)
    assert (cpu.workers, cpu.gpus, cpu.cpus) == (4, 0.0, 4.0)
    small = plan_workers(RayOptions(workers=3), cluster_cpus=2, cluster_gpus=0, local=True)
    assert small.workers == 3 and small.cpus == pytest.approx(2 / 3, abs=1e-3) and "fit" in small.notes[0]
    with pytest.raises(ConfigError, match="need 2 GPUs; the cluster has 1"):
        plan_workers(RayOptions(workers=2, gpus_per_worker=1), cluster_cpus=8, cluster_gpus=1, local=True)
    # A running cluster may grow (an autoscaler): a note, not an error.
    remote = plan_workers(RayOptions(workers=2, gpus_per_worker=1), cluster_cpus=8, cluster_gpus=1, local=False)
    assert any("wait until the cluster grows" in n for n in remote.notes)


def test_model_direction_read_without_a_runtime(mask_graph, bundle_path):
    from cyclemask.engine.ray_run import model_direction

    assert model_direction(mask_graph) == "mask"  # the graph's metadata
    assert model_direction(bundle_path) is None  # a bundle holds both: --mask or --unmask decides


def test_model_method_read_without_a_runtime(mask_graph, bundle_path):
    from cyclemask.demo_model import default_model
    from cyclemask.engine.ray_run import model_direction, model_method

    restore = default_model("unmask", "ort", "restore")
    assert model_method(restore) == "restore" and model_direction(restore) == "unmask"
    assert model_method(mask_graph) != "restore" and model_method(bundle_path) == "cyclegan"


def test_the_mode_line_under_ray_names_the_paste_the_workers_use(tmp_path, monkeypatch):
    import matplotlib

    from cyclemask.image_files import read_image, write_image

    _use_fake_ray(monkeypatch)
    write_image(tmp_path / "photos" / "a.png", read_image(Path(matplotlib.get_data_path()) / "sample_data"
                                                          / "grace_hopper.jpg"))
    args = ["--images", tmp_path / "photos", "--unmask", "--backend", "ort", "--threads", "1"]
    local = run(*args, "--out", tmp_path / "local")
    on_ray = run(*args, "--out", tmp_path / "ray", "--ray", "--workers", "1")
    assert local.exit_code == 0, local.output
    assert on_ray.exit_code == 0, on_ray.output
    mode = [line for line in local.output.splitlines() if line.startswith("mode:")]
    assert mode and "the segmented mask below the eyes erased and restored" in mode[0]
    assert mode[0] in on_ray.output.splitlines()
    assert _digest(tmp_path / "ray") == _digest(tmp_path / "local")


class _StubEngine:
    """Stands in for TensorRT (no GPU here): reads what TrtBackend reads off an engine's sidecar,
    its direction and image size, and inverts the image where the engine would run."""

    @staticmethod
    def make(path, direction, opts):
        from cyclemask.artifacts import load_engine_sidecar
        from cyclemask.engine.backends import TrtBackend
        from cyclemask.engine.backends.base import Ready

        class Stub(TrtBackend):
            def _activate(self):
                self.sidecar = self.metadata = load_engine_sidecar(self.model_path)
                side_dir = self.sidecar.get("direction")
                self._check_direction(side_dir if side_dir in ("mask", "unmask") else None, "engine")
                self._image_size = int(self.sidecar["image_size"])

            def _deactivate(self):
                pass

            def _start(self, batch):
                return Ready(255 - batch)

            def _start_images(self, images):
                return self._start(np.stack(images))

            @property
            def providers(self):
                return ["stub"]

            @property
            def description(self):
                return "stub TensorRT engine"

        return Stub(path, direction, streams=opts.streams)


def _use_fake_ray(monkeypatch) -> None:
    """--ray runs on `_fake_ray_modules`, connected to no cluster."""
    import sys

    from cyclemask.engine import ray_cli, ray_run

    ray, data = _fake_ray_modules()
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.data", data)
    monkeypatch.setattr(ray_cli, "require_ray", lambda: ray)
    monkeypatch.setattr(ray_run, "require_ray", lambda: ray)
    monkeypatch.setattr(ray_run, "connect", lambda address, debug=False: (False, 2.0, 0.0))


def _fake_ray_modules():
    """`ray` and `ray.data` as far as ray_run uses them, running each call's worker in this
    process: the run's own code (the job, the journal, the summary) runs unchanged around it."""
    import types

    class Dataset:
        def __init__(self, items):
            self.items, self.worker, self.size = items, None, 1

        def map_batches(self, worker_class, *, batch_size, **_):
            self.worker, self.size = worker_class, batch_size
            return self

        def iter_batches(self, **_):
            worker = self.worker()
            for i in range(0, len(self.items), self.size):
                chunk = self.items[i:i + self.size]
                yield worker({k: np.array([c[k] for c in chunk], dtype=object) for k in ("key", "out")})

    ray = types.ModuleType("ray")
    data = types.ModuleType("ray.data")
    data.from_items = Dataset
    data.ActorPoolStrategy = lambda size: None
    ray.data = data
    ray.is_initialized = lambda: False
    ray.shutdown = lambda: None
    return ray, data


def test_an_engine_under_ray_is_named_by_its_direction_as_a_local_run_names_it(tmp_path, monkeypatch):
    """An engine records its direction in its sidecar only. The --ray CLI reads it before any
    worker starts, to name the default output folder; a local run takes it from the loaded
    backend. Both must agree (they once did not: `_out` under --ray, `_unmask` locally)."""
    import dataclasses

    from cyclemask.artifacts import ENGINE_FORMAT, sidecar_path
    from cyclemask.engine.backends import REGISTRY

    engine = tmp_path / "model" / "unmask.fp16.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"not a real engine: the stub never reads it")
    sidecar_path(engine).write_text(json.dumps({
        "format": ENGINE_FORMAT, "format_version": 1, "tensorrt_version": "10.3.0", "gpu_name": "stub",
        "compute_capability": "9.0", "image_size": 16, "onnx_sha256": "cd" * 32, "direction": "unmask",
        "profile": {"min": [1, 16, 16, 3], "opt": [2, 16, 16, 3], "max": [4, 16, 16, 3]}}))
    monkeypatch.setitem(REGISTRY, "trt", dataclasses.replace(REGISTRY["trt"], factory=_StubEngine.make,
                                                             available=lambda: None))
    _use_fake_ray(monkeypatch)

    args = ["--model", engine, "--backend", "trt", "--aligned", "--batch", "2"]
    for where in ("local", "ray"):
        _images(tmp_path / where / "photos", 3, seed=7)
    local = run("--images", tmp_path / "local" / "photos", *args)
    on_ray = run("--images", tmp_path / "ray" / "photos", *args, "--ray", "--workers", "1")
    assert local.exit_code == 0, local.output
    assert on_ray.exit_code == 0, on_ray.output
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == ["photos", "photos_unmask"]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["photos", "photos_unmask"]
    assert _digest(tmp_path / "ray" / "photos_unmask") == _digest(tmp_path / "local" / "photos_unmask")
    assert len(_digest(tmp_path / "local" / "photos_unmask")) == 3


def test_the_ray_worker_gets_the_runs_own_options(tmp_path, monkeypatch, mask_graph):
    """--ray changes only where batches run: the worker's spec holds the RunOptions the local
    run would use (every flag, a backend option included), with only the paths made absolute and
    the per-worker threads and probe set; and the worker's processor is the one make_processor builds."""
    import dataclasses
    import sys

    from cyclemask.engine import cli, ray_run, run as run_mod

    _use_fake_ray(monkeypatch)
    seen, local = {}, {}
    real_worker_class, real_make = ray_run.worker_class, run_mod.make_processor
    monkeypatch.setattr(ray_run, "worker_class", lambda spec: seen.setdefault("spec", spec) and real_worker_class(spec))

    def make(*a, **kw):
        seen["processor"] = real_make(*a, **kw)
        return seen["processor"]

    monkeypatch.setattr(run_mod, "make_processor", make)
    monkeypatch.setattr(cli, "translate", lambda options, **kw: local.setdefault("options", options) and sys.exit(0))
    args = ["--model", mask_graph, "--backend", "ort", "--ort-graph-opt", "basic", "--paste", "crop",
            "--margin", "0.4", "--quality", "80", "--batch", "2", "--detect-workers", "0"]
    _images(tmp_path / "in", 2, seed=3)
    assert run("--images", tmp_path / "in", *args).exit_code == 0
    res = run("--images", tmp_path / "in", *args, "--ray", "--workers", "1")
    assert res.exit_code == 0, res.output
    spec = seen["spec"]
    assert isinstance(spec.options, type(local["options"]))
    expected = dataclasses.replace(local["options"], model=mask_graph.resolve(), threads=2, probe=False,  # 2 CPUs, 1 worker
                                   face_detector=spec.options.face_detector)
    assert spec.options == expected
    assert spec.options.backend_options().keywords("ort")["graph_opt"] == "basic"
    from cyclemask.engine.faces import FaceProcessor

    assert isinstance(seen["processor"], FaceProcessor) and seen["processor"].config.paste == "crop"


def test_ray_options_are_checked():
    with pytest.raises(ConfigError, match="reserves nothing"):
        RayOptions(cpus_per_worker=0, gpus_per_worker=0)
    with pytest.raises(ConfigError, match="--workers must be a positive integer"):
        RayOptions(workers=0)


def test_ray_only_options_need_ray(tmp_path):
    res = run("--images", tmp_path, "--aligned", "--resume", "--workers", "2")
    assert res.exit_code == 2 and "--workers, --resume: only with --ray" in res.output


def test_missing_ray_says_how_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    _images(tmp_path / "in", 1, seed=0)
    res = run("--images", tmp_path / "in", "--aligned", "--ray")
    assert res.exit_code == 1
    assert RAY_INSTALL in res.output and "pip install 'cyclemask[ray]'" in res.output
    assert not (tmp_path / "in_mask").exists()


# ---------------------------------------------------------------------------------------------
# On a local Ray
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'cyclemask[ray]')")
    pytest.importorskip("ray.data", reason="ray.data needs the [data] extra (pip install 'cyclemask[ray]')")
    if ray.is_initialized():
        ray.shutdown()
    # Workers inherit the environment: one thread each on this small machine.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture
def photos(tmp_path) -> Path:
    """22 small images in two folders, plus three files that cannot be read."""
    root = tmp_path / "photos"
    _images(root, 22, seed=1)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image at all")
    (root / "sub" / "empty.jpg").write_bytes(b"")
    good = cv2.imencode(".jpg", np.full((30, 30, 3), 128, np.uint8))[1].tobytes()
    (root / "sub" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return root


@pytest.mark.slow  # a local Ray (~5-10 s each); the fake-Ray tests above run the same driver and worker fast
def test_ray_writes_the_bytes_and_the_report_of_a_local_run(local_ray, mask_graph, photos, tmp_path):
    local = run("--images", photos, "--out", tmp_path / "local", *_common(mask_graph))
    on_ray = run("--images", photos, "--out", tmp_path / "ray", *_common(mask_graph), "--ray", "--workers", "2",
                 "--files-per-call", "5")
    assert local.exit_code == on_ray.exit_code == 1, on_ray.output  # the broken files fail both runs
    assert _digest(tmp_path / "ray") == _digest(tmp_path / "local")
    assert len(_digest(tmp_path / "local")) == 22
    want, got = _summary(local.output), _summary(on_ray.output)
    assert want["counts"] == got["counts"] == {"inputs": 25, "written": 22, "failed": 3}
    assert got["failures"] == want["failures"]  # the same lines, in the same (input) order
    assert any("broken.png: not a decodable image" in line for line in got["failures"])
    assert "2 workers x (1 CPU)" in on_ray.output
    # Every output is in the journal once; the broken inputs are not.
    done = _done_records(tmp_path / "ray")
    assert sorted(done) == sorted(_digest(tmp_path / "local")) and len(done) == len(set(done))
    assert not _partials(tmp_path / "ray")


@pytest.mark.slow  # a local Ray (~5-10 s each); the fake-Ray tests above run the same driver and worker fast
def test_resume_skips_what_the_journal_records(local_ray, mask_graph, tmp_path):
    src = tmp_path / "in"
    _images(src, 12, seed=2)
    out = tmp_path / "out"
    first = run("--images", src, "--out", out, *_common(mask_graph), "--ray", "--workers", "1")
    assert first.exit_code == 0, first.output
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*")
              if p.is_file() and p.name != JOURNAL_NAME}

    new = _images(src, 3, seed=3)
    # An output that exists but was never recorded (its worker's row never came back): made again.
    stray = out / new[0].relative_to(src)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half of something")

    refused = run("--images", src, "--out", out, *_common(mask_graph), "--ray", "--workers", "1")
    assert refused.exit_code == 1 and "already exist" in refused.output and "--resume" in refused.output

    again = run("--images", src, "--out", out, *_common(mask_graph), "--ray", "--workers", "1", "--resume")
    assert again.exit_code == 0, again.output
    assert "resumed:  12 output(s) already complete, skipped" in again.output
    assert _summary(again.output)["counts"] == {"inputs": 3, "written": 3, "failed": 0}
    # The finished outputs were not touched: same inode (no rename onto them), same mtime.
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in before} == before
    assert stray.read_bytes() != b"half of something"
    assert cv2.imread(str(stray)) is not None
    done = _done_records(out)
    assert len(done) == len(set(done)) == 15


def _busy_worker_pids() -> list[int]:
    """Ray Data actors running our worker's call right now (Ray names the process after it)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            title = (d / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if title.startswith("ray::MapWorker(MapBatches(CycleMaskWorker))") and title.endswith(".submit"):
            found.append(int(d.name))
    return found


@pytest.mark.slow  # a local Ray (~5-10 s each); the fake-Ray tests above run the same driver and worker fast
def test_a_killed_worker_loses_nothing(local_ray, mask_graph, tmp_path):
    src = tmp_path / "in"
    _images(src, 40, seed=4, side=256)  # large enough that a call of 2 files takes a while
    ref = run("--images", src, "--out", tmp_path / "local", *_common(mask_graph), "--batch", "1")
    assert ref.exit_code == 0, ref.output
    out = tmp_path / "ray"
    killed: list[int] = []
    stop = threading.Event()

    def killer():
        while not stop.is_set():
            # Once some outputs exist: kill the first worker caught inside a call.
            if out.is_dir() and sum(1 for _ in out.rglob("*.png")) >= 2:
                busy = _busy_worker_pids()
                if busy:
                    os.kill(busy[0], signal.SIGKILL)
                    killed.append(busy[0])
                    return
            time.sleep(0.005)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        res = run("--images", src, "--out", out, *_common(mask_graph), "--batch", "1", "--ray", "--workers", "2",
                  "--files-per-call", "2")
    finally:
        stop.set()
        t.join(5)
    assert killed, "no worker was caught inside a call: the run ended before the kill"
    assert res.exit_code == 0, res.output
    assert _summary(res.output)["counts"] == {"inputs": 40, "written": 40, "failed": 0}
    assert _digest(out) == _digest(tmp_path / "local")  # nothing lost, nothing half-written
    done = _done_records(out)
    assert len(done) == len(set(done)) == 40  # each output recorded once
    assert not _partials(out)
    assert not Path(f"/proc/{killed[0]}").exists() or "zombie" in Path(f"/proc/{killed[0]}/status").read_text()


@pytest.mark.slow  # a local Ray (~5-10 s each); the fake-Ray tests above run the same driver and worker fast
def test_a_folder_of_videos_runs_one_task_per_video(local_ray, mask_graph, tmp_path):
    from video_clips import make_clip

    src = tmp_path / "clips"
    (src / "sub").mkdir(parents=True)
    make_clip(src / "a.mp4", n=10, size=(96, 64))
    make_clip(src / "sub" / "b.mp4", n=6, size=(64, 48))
    (src / "bad.mp4").write_bytes(b"not a video")
    args = [*_common(mask_graph), "--preset", "ultrafast"]
    res = run("--video", src, "--out", tmp_path / "out", *args, "--ray", "--workers", "2")
    assert res.exit_code == 1, res.output
    assert _summary(res.output)["counts"] == {"inputs": 3, "written": 2, "failed": 1}
    assert "bad.mp4: cannot open as a video" in _summary(res.output)["failures"][0]
    assert "frames:   16 read, 16 written" in res.output
    for rel in ("a.mp4", "sub/b.mp4"):  # what a local run of each video writes
        local = run("--video", src / rel, "--out", tmp_path / "local" / rel, *args)
        assert local.exit_code == 0, local.output
        assert (tmp_path / "out" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes()
    assert sorted(_done_records(tmp_path / "out")) == ["a.mp4", "sub/b.mp4"]


@pytest.mark.slow  # a local Ray (~5-10 s each); the fake-Ray tests above run the same driver and worker fast
def test_face_aware_run_matches_a_local_one(local_ray, mask_graph, face_detector_path, tmp_path):
    import matplotlib

    from cyclemask.image_files import read_image, write_image

    portrait = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not portrait.is_file():
        pytest.skip(f"matplotlib's sample portrait {portrait} is absent in this installation")
    src = tmp_path / "photos"
    face = cv2.resize(read_image(portrait), (256, 300), interpolation=cv2.INTER_AREA)
    write_image(src / "a.png", face)
    write_image(src / "b" / "mirrored.png", np.ascontiguousarray(face[:, ::-1]))
    write_image(src / "noface.png", np.random.default_rng(5).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    args = ["--model", mask_graph, "--backend", "ort", "--threads", "1", "--face-detector", face_detector_path]
    local = run("--images", src, "--out", tmp_path / "local", *args)
    on_ray = run("--images", src, "--out", tmp_path / "ray", *args, "--ray", "--workers", "2", "--files-per-call", "2")
    assert local.exit_code == on_ray.exit_code == 0, on_ray.output
    assert "mode:    face-aware" in on_ray.output
    assert _digest(tmp_path / "ray") == _digest(tmp_path / "local")
    faces = [line for line in local.output.splitlines() if line.startswith("  faces:")]
    assert faces and faces[0].startswith("  faces:    2 found in 2 of 3 frames")
    assert faces[0] in on_ray.output.splitlines()  # the face counts summed over the workers


@pytest.mark.slow  # a local Ray (~5-10 s each); the fake-Ray tests above run the same driver and worker fast
def test_a_model_that_does_not_load_stops_the_run_with_one_line(local_ray, mask_graph, tmp_path):
    src = tmp_path / "in"
    _images(src, 3, seed=6)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(mask_graph.read_bytes()[:1000])
    res = run("--images", src, "--out", tmp_path / "out", "--model", bad, "--mask", "--backend", "ort", "--aligned",
              "--ray", "--workers", "1")
    assert res.exit_code == 1
    assert f"stopped by an error: {bad}: ONNX Runtime cannot load this graph" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()  # nothing written, no journal left behind
