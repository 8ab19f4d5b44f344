"""The export run behind `cyclemask-export`: checkpoint -> verified graphs (and engines).

Per direction, everything is written into a staging folder inside the output folder
(.D.<run>.partial/, see cyclemask.outputs), verified, and only then moved into place (os.replace, so each final file
appears whole or not at all). Existing files are refused before any work unless `overwrite`.
A failed direction leaves nothing of itself behind; directions finished before it stay, and
the error says which were written.

Files per direction D (in `out_dir`):
  D.onnx             FP32 graph                       (always; with bf16, its BF16 check in the metadata)
  D.int8.onnx        INT8 graph (NNCF, QDQ)           (int8, export/quantize.py; verified by export/lowp.py)
  D.fp16.onnx        mixed-precision graph            (fp16)
  D.fp16.engine      TensorRT engine                  (fp16, where TensorRT and a GPU exist)
  D.fp16.engine.json its sidecar
and `trt_timing.cache` (unless another path is given), reused by every build.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cyclemask import DIRECTIONS
from cyclemask.artifacts import ONNX_FORMAT, engine_rebuild_command, read_onnx_metadata, sidecar_path, write_json_atomic
from cyclemask.engine.backends.trt import tensorrt_status
from cyclemask.errors import CycleMaskError, ExportError
from cyclemask.outputs import commit_partial, create_partial, discard_partial

from .fp16 import to_fp16
from .lowp import LowpCheck, LowpOptions
from .onnx import OPSET, export_onnx
from .tensorrt import EngineBuildConfig
from .verify import (
    ENGINE_BOUNDS,
    FP16_BOUNDS,
    FP32_BOUNDS,
    Verification,
    eager_outputs,
    engine_outputs,
    graph_outputs,
    verification_images,
    verify_outputs,
)

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 256
TIMING_CACHE_NAME = "trt_timing.cache"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    out_dir: Path
    image_size: int | None = None  # None: what the checkpoint records, else DEFAULT_IMAGE_SIZE
    fp16: bool = False
    engine: bool | None = None  # None: build one with fp16 where possible; True: required; False: never
    overwrite: bool = False
    build: EngineBuildConfig = EngineBuildConfig()
    verify_images: Path | None = None
    verify_count: int = 4
    n_random: int = 2
    batch_size: int = 2
    threads: int | None = None
    lowp: LowpOptions = LowpOptions()  # INT8 graph and BF16 check (export/lowp.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.engine and not self.fp16:
            raise ExportError("an engine is built from the FP16 graph: --engine needs --fp16")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 8 or self.image_size % 4):
            raise ExportError(f"image size must be a multiple of 4 and at least 8; got {self.image_size!r}")
        if self.verify_count < 0 or self.n_random < 0 or self.verify_count + self.n_random < 1:
            raise ExportError("verification needs at least one image (verify_count + n_random >= 1)")
        if self.batch_size < 1:
            raise ExportError(f"verification batch size must be positive; got {self.batch_size}")

    @property
    def timing_cache(self) -> Path:
        return self.build.timing_cache or self.out_dir / TIMING_CACHE_NAME


@dataclass
class Artefact:
    kind: str  # "onnx-fp32" | "onnx-int8" | "onnx-fp16" | "engine" | "sidecar"
    path: Path
    size: int
    checks: list[Verification] = field(default_factory=list)
    lowp: list[LowpCheck] = field(default_factory=list)  # BF16 / INT8 checks on held-out faces


@dataclass
class DirectionResult:
    direction: str
    artefacts: list[Artefact]
    seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportResult:
    directions: list[DirectionResult]
    engine_built: bool
    engine_note: str
    notes: list[str] = field(default_factory=list)
    image_sources: list[str] = field(default_factory=list)

    @property
    def artefacts(self) -> list[Artefact]:
        return [a for d in self.directions for a in d.artefacts]


def artefact_paths(out_dir: Path, direction: str) -> dict[str, Path]:
    return {
        "onnx-fp32": out_dir / f"{direction}.onnx",
        "onnx-int8": out_dir / f"{direction}.int8.onnx",
        "onnx-fp16": out_dir / f"{direction}.fp16.onnx",
        "engine": out_dir / f"{direction}.fp16.engine",
        "sidecar": sidecar_path(out_dir / f"{direction}.fp16.engine"),
    }


def plan_engine(options: ExportOptions) -> tuple[bool, str]:
    """Whether this run builds engines, and the reason shown in the summary.

    An explicit engine request that cannot be met is an ExportError (exit 1), raised before any
    work is done.
    """
    if not options.fp16:
        return False, "no engine: engines are built from the FP16 graph (pass --fp16)"
    if options.engine is False:
        return False, "no engine: --no-engine was given"
    ok, why = tensorrt_status()
    if ok:
        return True, f"engine built with {why}"
    if options.engine:
        raise ExportError(f"--engine was requested, but no engine can be built here: {why}")
    return False, f"no TensorRT engine was built: {why}"


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise ExportError(
            f"refusing to replace existing {', '.join(str(p) for p in existing)}: pass --overwrite to replace "
            "(they are replaced only after the new files pass verification)"
        )
    dirs = [p for p in existing if p.is_dir()]
    if dirs:
        raise ExportError(f"{dirs[0]} is a folder; an export file would go there")


def _ensure_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: --out must be a folder; a file is there")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise ExportError(f"{out_dir}: the output folder is not writable")


# ------------------------------------------------------------------------------------------------
# Checkpoint -> generators
# ------------------------------------------------------------------------------------------------


def _guess_direction(path: Path) -> str | None:
    """The reference names its generators G_A (A->B: our "mask") and G_B (B->A: "unmask")."""
    name = path.name
    if re.search(r"(^|[^A-Za-z])G_A([^A-Za-z]|$)", name):
        return "mask"
    if re.search(r"(^|[^A-Za-z])G_B([^A-Za-z]|$)", name):
        return "unmask"
    return None


SEGMENTER_FILE = "segmenter.onnx"


def method_of(generator) -> str:
    """What a graph does, recorded in its metadata: "restore" (segment, erase, restore: the
    runtime pastes only the pixels it changed) or "cyclegan"."""
    from cyclemask.restore_models import EraseRestore

    return "restore" if isinstance(generator, EraseRestore) else "cyclegan"


def resolve_generators(checkpoint: Path, direction: str | None, *, ngf=None, n_blocks=None, norm=None):
    """Load the generators to export, keyed by direction.

    `direction`: "mask", "unmask", "both" or None (everything the file holds). A file that does
    not record its direction (a reference repository file, or a network file saved without
    one) is "mask" for names with G_A, "unmask" for G_B, else `direction` must say it.
    """
    from cyclemask.checkpoint import load_generators

    if direction not in (None, "both", *DIRECTIONS):
        raise ExportError(f"direction must be mask, unmask or both; got {direction!r}")
    loaded = load_generators(checkpoint, ngf=ngf, n_blocks=n_blocks, norm=norm)
    notes: list[str] = []
    single = len(loaded) == 1 and next(iter(loaded.values())).direction is None
    if single:
        g = next(iter(loaded.values()))
        what = "a reference-repository generator file" if g.source == "reference" else "a generator file without a direction"
        if direction == "both":
            raise ExportError(f"{checkpoint}: {what} holds one generator; --direction both needs a two-generator checkpoint")
        d = direction or _guess_direction(checkpoint)
        if d is None:
            raise ExportError(
                f"{checkpoint}: {what} does not say which way it translates: pass --direction mask "
                "(unmasked -> masked, the reference's G_A) or --direction unmask (G_B)"
            )
        if direction is None:
            notes.append(f"{checkpoint.name}: direction '{d}' taken from the file name (G_A = mask, G_B = unmask)")
        notes.extend(g.notes)
        return {d: g}, notes
    if direction in (None, "both"):
        if direction == "both" and set(loaded) != set(DIRECTIONS):
            raise ExportError(f"{checkpoint}: --direction both, but the file holds only {', '.join(sorted(loaded))}")
        return dict(sorted(loaded.items(), key=lambda kv: DIRECTIONS.index(kv[0]))), notes
    if direction not in loaded:
        raise ExportError(f"{checkpoint}: has no '{direction}' generator (it holds {', '.join(sorted(loaded))})")
    return {direction: loaded[direction]}, notes


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def _verification_set(options: ExportOptions, image_size: int):
    return verification_images(image_size, n_random=options.n_random, image_dir=options.verify_images,
                               n_real=options.verify_count)


def steps_per_direction(options: ExportOptions, engine: bool) -> int:
    lowp = options.lowp
    return (3 + (2 if options.fp16 else 0) + (2 if engine else 0) + (1 if lowp.active else 0)
            + (2 if lowp.int8 else 0) + (1 if lowp.bf16 else 0))


def export_checkpoint(
    checkpoint: str | os.PathLike,
    options: ExportOptions,
    *,
    direction: str | None = None,
    ngf: int | None = None,
    n_blocks: int | None = None,
    norm: str | None = None,
    progress: Progress | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> ExportResult:
    """Export the generators of `checkpoint` as `options` says; see the module docstring.

    `progress(step)` is called after each step; `on_plan(total_steps)` once the work is known.
    """
    from cyclemask.artifacts import file_sha256
    from cyclemask.checkpoint import recorded_image_size

    ckpt = Path(checkpoint)
    gens, notes = resolve_generators(ckpt, direction, ngf=ngf, n_blocks=n_blocks, norm=norm)
    recorded = recorded_image_size(ckpt)
    if options.image_size is not None:
        size = options.image_size
        if recorded is not None and recorded != size:
            notes.append(f"exporting at {size} px; the checkpoint was trained at {recorded} px")
    elif recorded is not None:
        size = recorded
    else:
        size = DEFAULT_IMAGE_SIZE
        notes.append(f"{ckpt.name} does not record an image size: exporting at {size} px (set --image-size)")

    engine, engine_note = plan_engine(options)
    planned: list[Path] = []
    for d in gens:
        paths = artefact_paths(options.out_dir, d)
        planned.append(paths["onnx-fp32"])
        if options.lowp.int8:
            planned.append(paths["onnx-int8"])
        if options.fp16:
            planned.append(paths["onnx-fp16"])
        if engine:
            planned += [paths["engine"], paths["sidecar"]]
    segmenters = {d: g.generator.segmenter for d, g in gens.items() if method_of(g.generator) == "restore"}
    if segmenters:
        if size % 16:
            raise ExportError(f"{ckpt}: the erase-then-restore graph works on sizes that are a multiple of 16; got {size}")
        planned.append(options.out_dir / SEGMENTER_FILE)
    _refuse_existing(planned, options.overwrite)
    _ensure_out_dir(options.out_dir)
    if on_plan:
        on_plan(1 + len(gens) * steps_per_direction(options, engine))

    notes += options.lowp.check_directions(list(gens))
    ckpt_sha = file_sha256(ckpt)
    images, sources = _verification_set(options, size)
    if progress:
        progress("loaded checkpoint and verification images")
    result = ExportResult([], engine, engine_note, notes, sources)
    for d, g in gens.items():
        meta = {"direction": d, "checkpoint_sha256": ckpt_sha, "weights_sha256": g.sha256,
                "checkpoint_name": ckpt.name, "checkpoint_source": g.source, "method": method_of(g.generator)}
        try:
            result.directions.append(
                _export_direction(d, g.generator, size, meta, images, options, engine, progress))
        except CycleMaskError as exc:
            done = [str(a.path) for a in result.artefacts]
            written = f"written before the failure: {', '.join(done)}" if done else "nothing was written"
            raise ExportError(f"{d}: {exc} -- no '{d}' file was written; {written}") from exc
    for d, segmenter in segmenters.items():
        # The restore graph carries its segmenter inside; this copy is evaluation's judge of the
        # mask left after unmasking (cyclemask.segmenter), verified against eager the same way.
        from .segmenter import export_segmenter

        path = export_segmenter(segmenter, options.out_dir / SEGMENTER_FILE, image_size=size,
                                metadata={"checkpoint_sha256": ckpt_sha, "checkpoint_name": ckpt.name}, verify=images)
        result.directions[-1].artefacts.append(Artefact("onnx-segmenter", path, path.stat().st_size))
    if options.fp16 and not engine:
        cmds = "; ".join(engine_rebuild_command(artefact_paths(options.out_dir, d)["onnx-fp16"], options.out_dir,
                                                options.build.profiles) for d in gens)
        result.notes.append(f"{engine_note}. Build it on the target GPU machine with: {cmds}")
    for d in result.directions:
        result.notes.extend(d.notes)
    if engine and not any(a.kind == "engine" for a in result.artefacts):
        result.engine_built = False
        result.engine_note = "no TensorRT engine was built: the build failed (see the notes)"
    _note_stale(result, options, engine)
    return result


def _note_stale(result: ExportResult, options: ExportOptions, engine: bool) -> None:
    """Warn about older derived files this run did not replace: they no longer match."""
    for d in result.directions:
        written = {a.path for a in d.artefacts}
        for kind, p in artefact_paths(options.out_dir, d.direction).items():
            if p.exists() and p not in written and kind != "onnx-fp32":
                result.notes.append(f"{p} is from an earlier export and was not replaced: it does not match the new graph")


def _export_direction(direction, generator, size, meta, images, options: ExportOptions, engine: bool,
                      progress: Progress | None) -> DirectionResult:
    t0 = time.perf_counter()
    final = artefact_paths(options.out_dir, direction)
    tick = progress or (lambda _s: None)
    artefacts: list[Artefact] = []
    notes: list[str] = []
    stage = create_partial(options.out_dir / direction, directory=True)
    try:
        staged: dict[str, Path] = {k: stage / p.name for k, p in final.items()}
        export_onnx(generator, staged["onnx-fp32"], image_size=size, metadata=meta)
        tick(f"{direction}: exported FP32 graph")
        reference = eager_outputs(generator, images, options.batch_size)
        t1 = time.perf_counter()
        got32 = graph_outputs(staged["onnx-fp32"], images, batch_size=options.batch_size, threads=options.threads,
                              direction=direction)
        v32 = verify_outputs(got32, reference, FP32_BOUNDS, artefact=str(final["onnx-fp32"]), against="eager (PyTorch FP32)",
                             seconds=time.perf_counter() - t1)
        artefacts.append(Artefact("onnx-fp32", final["onnx-fp32"], 0, [v32]))
        tick(f"{direction}: verified FP32 graph")
        if options.lowp.active:
            notes += _lowp_steps(direction, generator, size, images, staged, final, options, tick, artefacts)
        if options.fp16:
            to_fp16(staged["onnx-fp32"], staged["onnx-fp16"])
            tick(f"{direction}: converted to FP16")
            t1 = time.perf_counter()
            got16 = graph_outputs(staged["onnx-fp16"], images, batch_size=options.batch_size, threads=options.threads,
                                  direction=direction)
            v16 = verify_outputs(got16, reference, FP16_BOUNDS, artefact=str(final["onnx-fp16"]),
                                 against="eager (PyTorch FP32)", seconds=time.perf_counter() - t1)
            artefacts.append(Artefact("onnx-fp16", final["onnx-fp16"], 0, [v16]))
            tick(f"{direction}: verified FP16 graph")
            if engine:
                try:
                    artefacts += _engine_steps(staged, final, images, got16, reference, options, tick, direction)
                except CycleMaskError as exc:
                    if options.engine:  # asked for with --engine: no engine is a failed export
                        raise
                    # Built because TensorRT happened to be there: the verified graphs are the
                    # export's product; the engine can be built later on its own.
                    redo = engine_rebuild_command(final["onnx-fp16"], options.out_dir, options.build.profiles)
                    notes.append(f"{direction}: no TensorRT engine: {exc}. The verified ONNX graphs were kept; "
                                 f"build the engine with: {redo}")
                    tick(f"{direction}: engine build failed (noted)")
        for a in artefacts:
            a.size = staged[a.kind].stat().st_size
        # Graphs first, then the engine, then its sidecar: a reader that finds a sidecar finds
        # everything it describes.
        for kind in ("onnx-fp32", "onnx-int8", "onnx-fp16", "engine", "sidecar"):
            if any(a.kind == kind for a in artefacts):
                commit_partial(staged[kind], final[kind])
        tick(f"{direction}: moved into place")
    finally:
        discard_partial(stage)
    return DirectionResult(direction, artefacts, time.perf_counter() - t0, notes)


def _lowp_steps(direction, generator, size, images, staged, final, options: ExportOptions, tick,
                artefacts: list[Artefact]) -> list[str]:
    """INT8 graph and BF16 check on held-out faces (export/lowp.py). The BF16 figures belong to
    the FP32 graph's Artefact (they are about running that graph); the INT8 graph is a new one.
    Returns the notes."""
    from .lowp import export_steps

    real = images[:len(images) - options.n_random]  # verification_images: real photos first, then noise
    res = export_steps(direction, generator, staged["onnx-fp32"], staged["onnx-int8"], final_fp32=final["onnx-fp32"],
                       final_int8=final["onnx-int8"], options=options.lowp, size=size, fallback_faces=real,
                       threads=options.threads, tick=tick)
    artefacts[0].lowp = res.bf16_checks
    if res.int8_checks:
        artefacts.append(Artefact("onnx-int8", final["onnx-int8"], 0, [], res.int8_checks))
    return res.notes


def _engine_steps(staged, final, images, got16, reference, options: ExportOptions, tick, label) -> list[Artefact]:
    """Build the engine into the staging folder and check it against the FP16 graph on ORT
    (and against eager when `reference` is given); the figures go into the sidecar."""
    from .tensorrt import build_engine

    build = options.build
    if build.timing_cache is None:
        build = dataclasses.replace(build, timing_cache=options.timing_cache)
    try:
        sidecar = build_engine(staged["onnx-fp16"], staged["engine"], build,
                               onnx_final_path=final["onnx-fp16"], engine_final_path=final["engine"])
        tick(f"{label}: built TensorRT engine")
        t1 = time.perf_counter()
        got_trt = engine_outputs(staged["engine"], images, direction=label)
    except CycleMaskError:
        raise
    except Exception as exc:  # the bindings raise RuntimeError/TypeError of their own
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"TensorRT failed ({type(exc).__name__}: {first[:300]})") from exc
    secs = time.perf_counter() - t1
    checks = [verify_outputs(got_trt, got16, ENGINE_BOUNDS, artefact=str(final["engine"]),
                             against="FP16 graph on ORT CPU", seconds=secs)]
    if reference is not None:
        checks.append(verify_outputs(got_trt, reference, ENGINE_BOUNDS, artefact=str(final["engine"]),
                                     against="eager (PyTorch FP32)", seconds=secs))
    sidecar["parity"] = [c.to_dict() for c in checks]
    write_json_atomic(staged["sidecar"], sidecar)
    tick(f"{label}: engine parity checked")
    return [Artefact("engine", final["engine"], 0, checks), Artefact("sidecar", final["sidecar"], 0)]


# ------------------------------------------------------------------------------------------------
# Engine from an existing FP16 graph (the rebuild command)
# ------------------------------------------------------------------------------------------------


def engine_from_onnx(onnx_path: str | os.PathLike, options: ExportOptions, *, progress: Progress | None = None,
                     on_plan: Callable[[int], None] | None = None) -> ExportResult:
    """Build (or rebuild) the engine of a verified FP16 graph written by cyclemask-export, on
    this machine, and check it against the graph on ONNX Runtime CPU.

    The engine goes to options.out_dir (<graph name>.engine); an engine is required here, so a
    machine without TensorRT or a GPU is an ExportError.
    """
    src = Path(onnx_path)
    meta = read_onnx_metadata(src)
    if meta.get("format") != ONNX_FORMAT:
        raise ExportError(f"{src}: not a graph written by cyclemask-export (no cyclemask metadata); export the checkpoint instead")
    if meta.get("precision") != "fp16" and options.build.typing == "strong":
        raise ExportError(
            f"{src}: is a {meta.get('precision')} graph; engines are built from the FP16 graph "
            "(<direction>.fp16.onnx), whose precision TensorRT keeps"
        )
    if int(meta.get("opset", OPSET)) != OPSET:
        log.warning("%s was written with opset %s (this version pins %d)", src, meta.get("opset"), OPSET)
    ok, why = tensorrt_status()
    if not ok:
        raise ExportError(f"cannot build an engine here: {why}")
    direction = meta.get("direction") or src.name.split(".")[0]
    stem = src.name[:-len(".onnx")] if src.name.endswith(".onnx") else src.name
    final = {"onnx-fp16": src, "engine": options.out_dir / f"{stem}.engine"}
    final["sidecar"] = sidecar_path(final["engine"])
    _refuse_existing([final["engine"], final["sidecar"]], options.overwrite)
    _ensure_out_dir(options.out_dir)
    if on_plan:
        on_plan(3)
    images, sources = _verification_set(options, int(meta["image_size"]))
    t0 = time.perf_counter()
    got16 = graph_outputs(src, images, batch_size=options.batch_size, threads=options.threads)
    tick = progress or (lambda _s: None)
    tick(f"{direction}: ran the FP16 graph on ORT CPU")
    stage = create_partial(options.out_dir / direction, directory=True)
    try:
        staged = {"onnx-fp16": src, "engine": stage / final["engine"].name, "sidecar": stage / final["sidecar"].name}
        arts = _engine_steps(staged, final, images, got16, None, options, tick, direction)
        for a in arts:
            a.size = staged[a.kind].stat().st_size
        commit_partial(staged["engine"], final["engine"])
        commit_partial(staged["sidecar"], final["sidecar"])
    finally:
        discard_partial(stage)
    d = DirectionResult(direction, arts, time.perf_counter() - t0)
    return ExportResult([d], True, f"engine built with {why}", [], sources)
