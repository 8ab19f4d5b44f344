"""`cyclemask-study`: the paper's human study ("real or generated?") as a local web page.

    cyclemask-study serve --real photos/ --generated fakes/ [--per-person 22] [--port 8000]
    cyclemask-study report [--study-dir cyclemask-study] [--out DIR]
"""

from __future__ import annotations

import socket
from pathlib import Path

import click

from cyclemask.cli_util import Command, Group, StageBars, debug_option

DEFAULT_STUDY_DIR = "cyclemask-study"


@click.group(cls=Group)
def main() -> None:
    """Run the paper's human study on your own images: people see faces one at a time and say
    "real" or "generated"; the answers give the error rate, the fool rate on generated faces
    and the accuracy on real ones, beside the paper's 40.08 %."""


@main.command(cls=Command)
@click.option("--real", "real", required=True, type=click.Path(path_type=Path),
              help="Folder of real face photos (searched recursively).")
@click.option("--generated", "--fake", "generated", required=True, type=click.Path(path_type=Path),
              help="Folder of generated faces, e.g. the outputs of cyclemask-run (searched recursively).")
@click.option("--study-dir", default=DEFAULT_STUDY_DIR, show_default=True, type=click.Path(path_type=Path),
              help="Where the answers (study.sqlite3) and the re-encoded images live. Start again with the same "
                   "folder to resume the study; use a new folder for a new study.")
@click.option("--per-person", type=int, default=None,
              help="Images per participant, half real and half generated. Default: 22 (the paper's), or fewer "
                   "when a folder has fewer than 11 images.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default is this machine only; 0.0.0.0 opens the study to your "
                   "network (participants on phones, for example).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port).")
@click.option("--size", default=256, show_default=True,
              help="Every face is centre-cropped square and shown at this many pixels, re-encoded the same way, "
                   "so size, format and metadata give nothing away.")
@click.option("--quality", default=90, show_default=True, help="JPEG quality of the re-encoded faces.")
@click.option("--detector", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YuNet ONNX model (face_detection_yunet_2023mar.onnx) for the face check. Default: "
                   "$CYCLEMASK_FACE_DETECTOR, else the default detector where one is installed; with none, the "
                   "check is skipped with a note.")
@click.option("--no-face-check", is_flag=True, help="Do not refuse images in which no face is found.")
@click.option("--dup-threshold", default=28, show_default=True,
              help="A real and a generated image whose 256-bit difference hashes (also mirrored) differ in at most "
                   "this many bits count as the same photo and are refused; 0 refuses identical files only.")
@click.option("--skip-bad", is_flag=True,
              help="Leave out unreadable, faceless and duplicated images (each listed) instead of refusing to start.")
@click.option("--max-participants", type=click.IntRange(1), default=None,
              help="Turn away new visitors once this many have started.")
@debug_option
def serve(real, generated, study_dir, per_person, host, port, size, quality, detector, no_face_check,
          dup_threshold, skip_bad, max_participants) -> None:
    """Check the images, then serve the study until Ctrl-C.

    Prints the participants' address and the results address (it holds a secret token: keep it
    to yourself). Every answer is committed to SQLite before the next image is shown; stop and
    start the server at any time with the same --study-dir, and participants carry on where
    they were.
    """
    from .config import StudyConfig
    from .server import bind_socket, is_loopback, open_study, run_server

    config = StudyConfig(real=real, generated=generated, study_dir=study_dir, per_person=per_person, size=size,
                         quality=quality, face_check=not no_face_check, detector=detector,
                         dup_threshold=dup_threshold, skip_bad=skip_bad, max_participants=max_participants)
    sock = bind_socket(host, port)  # first: a busy port fails before minutes of image checks
    bars = StageBars(leave=False)
    try:
        study = open_study(config, progress=bars)
    except BaseException:
        sock.close()
        raise
    finally:
        bars.close()
    cat = study.catalog
    counts = study.store.image_counts()
    click.echo(f"images: {counts['real']} real, {counts['generated']} generated; {study.per_person} per participant "
               f"({cat.face_check or 'face check off'})")
    if cat.skipped:
        click.echo(f"left out {len(cat.skipped)} problem(s) (--skip-bad):")
        for msg in cat.skipped:
            click.echo(f"  {msg}")
    if cat.warnings:
        click.echo(f"{len(cat.warnings)} warning(s): duplicates within a folder (see the log above)")
    n = study.store.participant_count()
    if n:
        click.echo(f"resuming: {n} participant(s) so far")
    click.echo(f"study data: {config.study_dir.resolve()}")

    def ready(url: str) -> None:
        click.echo(f"participants: {url}/")
        click.echo(f"results (keep private): {url}/results?token={study.token}")
        if not is_loopback(host):
            port_s = url.rsplit(":", 1)[1]
            click.echo(f"listening on {host}: anyone who can reach this machine on port {port_s} can take part, "
                       f"at http://{socket.gethostname()}:{port_s}/ or this machine's address")
        click.echo("Ctrl-C stops the server; starting it again with the same --study-dir resumes the study.")

    run_server(study, sock, on_ready=ready)
    click.echo("server stopped; every answer given is in " + str(config.db_path))


@main.command(cls=Command)
@click.option("--study-dir", default=DEFAULT_STUDY_DIR, show_default=True, type=click.Path(path_type=Path),
              help="The study's folder (as given to serve).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write answers.csv, images.csv, participants.csv, summary.txt and plot.png. "
                   "Default: STUDY_DIR/report.")
@debug_option
def report(study_dir, out) -> None:
    """Print the study's figures and write them as CSV files and a plot (safe while the server runs).

    The overall error rate (wrong answers on real and generated images together) is the paper's
    40.08 %; beside it the fool rate (generated judged real) with a 95 % Wilson interval, the
    accuracy on real images, exact binomial tests against chance, and per-image and
    per-participant rates.
    """
    from .config import DB_NAME
    from .stats import report_lines, summarize, write_report
    from .store import Store

    store = Store(Path(study_dir) / DB_NAME, create=False)
    try:
        answers = store.answer_rows()
        summary = summarize(answers, store.participant_rows(), store.image_rows())
    finally:
        store.close()
    for line in report_lines(summary):
        click.echo(line)
    out = Path(out) if out is not None else Path(study_dir) / "report"
    for path in write_report(summary, answers, out):
        click.echo(f"wrote {path}")
