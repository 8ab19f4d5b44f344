"""The end-of-run summary of `cyclemask-run` (local or --ray): inputs, outputs, failures, faces,
backend, throughput, as lines for the CLI to print."""

from __future__ import annotations

from cyclemask.cli_util import stop_name

from .pipeline import RunReport

MAX_LISTED_FAILURES = 20


def summary_lines(report: RunReport, backend, reason: str, setup_s: float, output: str = "",
                  faces: str | None = None) -> list[str]:
    """The end-of-run summary: inputs, outputs, failures, faces, backend, throughput."""
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
    lines.append(f"  backend:  {backend.description}")
    lines.append(f"  providers: {', '.join(backend.providers) or 'n/a'}  [{reason}]")
    lines.append(
        f"  throughput: {report.fps:.1f} frames/s ({report.written + report.discarded} frames in {report.elapsed_s:.2f} s, "
        f"batch {report.crops / report.batches if report.batches else 0:.1f} on average; "
        f"model load {setup_s:.2f} s)"
    )
    return lines
