"""The end-of-run summary of `cyclemask-run` (local or --ray): inputs, outputs, failures, faces,
backend, throughput, as lines for the CLI to print."""

from __future__ import annotations

from cyclemask.cli_util import stop_name

from .pipeline import RunReport

MAX_LISTED_FAILURES = 20


def summary_lines(report: RunReport, backend, reason: str, setup_s: float, output: str = "",
                  faces: str | None = None, extra: list[str] | tuple = (), frames: int | None = None) -> list[str]:
    """The end-of-run summary: inputs, outputs, failures, faces, backend, throughput.

    extra: lines before the backend's (--ray: its workers and timings). frames: the frames
    written, when they are not the inputs (--ray over videos counts files); the throughput is
    then over them, and setup_s is the slowest worker's start."""
    total = report.total if report.total is not None else report.inputs
    lines = ["", "summary:"]
    if report.interrupted:
        lines.append(f"  stopped: interrupted ({stop_name()})")
    elif report.error is not None:
        lines.append(f"  stopped by an error: {report.error}")
    lines.append(f"  inputs:   {total}" + (f" ({report.inputs} read)" if report.inputs != total else ""))
    lines.append(f"  written:  {report.written}" + (f" -> {output}" if output else ""))
    lines.append(f"  failed:   {len(report.failures)}")
    not_reached = report.not_written - len(report.failures) - report.discarded
    if report.discarded:
        lines.append(f"  not written (translated, then discarded with the unfinished video): {report.discarded}")
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
    lines += list(extra)
    lines.append(f"  backend:  {backend.description}")
    lines.append(f"  providers: {', '.join(backend.providers) or 'n/a'}  [{reason}]")
    if frames is not None:
        fps = frames / report.elapsed_s if report.elapsed_s > 0 else 0.0
        lines.append(f"  throughput: {fps:.1f} frames/s ({frames} frames in {report.elapsed_s:.2f} s, "
                     f"slowest worker start {setup_s:.2f} s)")
    else:
        lines.append(
            f"  throughput: {report.fps:.1f} frames/s ({report.written + report.discarded} frames in "
            f"{report.elapsed_s:.2f} s, batch {report.crops / report.batches if report.batches else 0:.1f} on "
            f"average; model load {setup_s:.2f} s)"
        )
    return lines


def videos_summary_lines(result) -> list[str]:
    """The summary of a run over several videos (engine.run.VideosResult): each video's result,
    then the failures as an image folder lists them, the frames, faces, backend, throughput."""
    videos = result.videos
    lines = ["", "summary:"]
    if result.interrupted:
        lines.append(f"  stopped: interrupted ({stop_name()})")
    kept = [v for v in videos if v.kept]
    failed = [v for v in videos if not v.ok]
    total = len(videos) + len(result.not_run)
    lines.append(f"  inputs:   {total} videos")
    lines.append(f"  written:  {len(kept)}")
    lines.append(f"  failed:   {len(failed)}")
    if result.not_run:
        lines.append(f"  not written (run stopped first): {len(result.not_run)}")
    problems = [message for v in failed for message in v.failures]
    for message in problems[:MAX_LISTED_FAILURES]:
        lines.append(f"    - {message}")
    if len(problems) > MAX_LISTED_FAILURES:
        lines.append(f"    ... and {len(problems) - MAX_LISTED_FAILURES} more")
    lines.append("  videos:")
    for v in videos:
        rep = v.report
        if v.kept and rep is not None:
            bad = len(v.failures)
            state = f"{rep.written} frames" + (f", {bad} problem{'s' if bad != 1 else ''}" if bad else "")
            lines.append(f"    - {v.source} -> {v.output}: {state}")
        elif rep is not None and rep.interrupted:
            lines.append(f"    - {v.source}: stopped, not written")
        else:
            lines.append(f"    - {v.source}: failed, not written")
    for item in result.not_run:
        lines.append(f"    - {item.path}: not reached")
    # A note every video has (the encoder used) once; one some videos have, with their names.
    ran = [v for v in videos if v.report is not None]
    seen: list[str] = []
    for v in ran:
        seen += [n for n in v.report.notes if n not in seen]
    for note in seen:
        having = [v.source for v in ran if note in v.report.notes]
        lines.append(f"  note: {note}" if len(having) == len(ran) else f"  note: {', '.join(having)}: {note}")
    reports = [v.report for v in videos if v.report is not None]
    written = sum(r.written for r in reports)
    frames = sum(r.written + r.discarded for r in reports)
    crops, batches = sum(r.crops for r in reports), sum(r.batches for r in reports)
    lines.append(f"  frames:   {written} written")
    if result.faces is not None:
        lines.append(f"  faces:    {result.faces}")
    lines.append(f"  backend:  {result.backend.description}")
    lines.append(f"  providers: {', '.join(result.backend.providers) or 'n/a'}  [{result.reason}]")
    fps = frames / result.elapsed_s if result.elapsed_s > 0 else 0.0
    lines.append(f"  throughput: {fps:.1f} frames/s ({frames} frames in {result.elapsed_s:.2f} s, "
                 f"batch {crops / batches if batches else 0:.1f} on average; model load {result.setup_s:.2f} s)")
    return lines


def no_face_warning(stats, *, min_face: int, detect_score: float, video: bool) -> str | None:
    """One line when face-aware mode found no face in any input it read: the outputs are then the
    inputs passed through, and the summary's counts alone are easy to miss. None otherwise (aligned
    mode, a run that found a face, or one that read nothing)."""
    if stats is None or stats.found or stats.frames == 0:
        return None
    what = f"{stats.frames} frame{'s' if stats.frames != 1 else ''}" if video else \
        f"{stats.frames} image{'s' if stats.frames != 1 else ''}"
    small = f" ({stats.too_small} smaller than --min-face {min_face} px)" if stats.too_small else ""
    return (f"warning: no face found in any of the {what}{small}, so nothing was translated; "
            f"for photos that are already face crops use --aligned; for small faces lower --min-face "
            f"(now {min_face}); for masked, turned or dim faces lower --detect-score "
            f"(now {detect_score:g})")


def ray_lines(report) -> list[str]:
    """The lines a --ray run adds to the summary (report: engine.ray_run.RayReport)."""
    lines = []
    if report.skipped:
        lines.append(f"  resumed:  {report.skipped} output(s) already complete, skipped")
    if report.kind == "videos":
        lines.append(f"  frames:   {report.frames_read} read, {report.frames_written} written")
    workers = len({w for w in report.pids if w})
    nodes = len({w.rsplit(":", 1)[0] for w in report.pids if w})
    line = f"  ray:      {workers} worker process(es) on {nodes} node(s), {report.calls} call(s)"
    if report.calls:
        line += f": {report.call_s / report.calls * 1000:.0f} ms inside each"
        gap = report.gap_per_call_s()
        if gap is not None:
            line += f", {gap * 1000:.0f} ms between calls (Ray's cost)"
    lines.append(line)
    timing = f"  ray time: Ray start {report.start_s:.1f} s"
    if report.spans:
        first = min(s[1] for s in report.spans) - report.started_at
        timing += f", first call {max(0.0, first):.1f} s after the dataset started"
        steady = report.steady_fps()
        if steady is not None:
            timing += f"; {steady:.1f} files/s from the first call to the last"
    lines.append(timing)
    return lines
