"""Start-up cost of the runtime, as whole processes: import time and time to the first output.

    python benchmarks/startup.py [--model X.onnx] [--faces 12] [--repeats 5] [--checkout DIR]

For each repeat, in a fresh interpreter:

- import: `import cyclemask.engine.cli` (what every `cyclemask-run` pays before it reads a
  flag), and whether that imported torch;
- run: `python -m cyclemask.engine.cli --model X --images DIR --aligned --out OUT`, timed from
  process start to the first output file on disk and to the end of the process.

The median of the repeats is printed. `--checkout DIR` measures another checkout of this
repository (its scripts/pyshim maps `cyclemask` onto it), so that two versions can be compared on
the same machine in one sitting. Default model: the embedded demo graph; default inputs: the
shared faces (../shared/data) or synthetic ones. Timings move with the load on the machine: the
load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

IMPORT_CODE = ("import sys, time; t0 = time.perf_counter(); import cyclemask.engine.cli; "
               "print(time.perf_counter() - t0, 'torch' in sys.modules)")


def _env(checkout: Path | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout / "scripts" / "pyshim")
    return env


def time_import(checkout: Path | None) -> tuple[float, float, bool]:
    """(seconds inside the interpreter, seconds for the whole process, torch imported?)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", IMPORT_CODE], capture_output=True, text=True, env=_env(checkout),
                         check=True)
    wall = time.perf_counter() - t0
    inner, torch = res.stdout.split()
    return float(inner), wall, torch == "True"


def time_run(model: Path, images: Path, out: Path, checkout: Path | None) -> tuple[float, float]:
    """(seconds to the first output file, seconds to the end) of one cyclemask-run process."""
    cmd = [sys.executable, "-m", "cyclemask.engine.cli", "--model", str(model), "--images", str(images),
           "--aligned", "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(checkout))
    first = None
    while proc.poll() is None:
        if first is None and out.is_dir() and any(p.suffix for p in out.iterdir() if not p.name.startswith(".")):
            first = time.perf_counter() - t0
        time.sleep(0.005)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"cyclemask-run failed ({proc.returncode}): {proc.stderr.read().decode()[-800:]}")
    return (first if first is not None else total), total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="an ONNX graph (default: the embedded demo graph)")
    ap.add_argument("--faces", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--checkout", type=Path, default=None, help="measure this checkout instead of the installed one")
    a = ap.parse_args(argv)
    from benchmarks.inputs import make_image_folder

    if a.model is None:
        from cyclemask.demo_model import assets_dir

        a.model = assets_dir() / "mask.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        images = make_image_folder(Path(tmp) / "faces", a.faces)
        imports, runs = [], []
        for i in range(a.repeats):
            imports.append(time_import(a.checkout))
            runs.append(time_run(a.model, images, Path(tmp) / f"out{i}", a.checkout))
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    med = statistics.median
    print(f"checkout: {a.checkout or REPO} | model: {a.model} | {a.faces} faces | {a.repeats} repeats | "
          f"load average {load[0]:.1f}")
    print(f"import cyclemask.engine.cli: {med(x[0] for x in imports):.2f} s in the interpreter, "
          f"{med(x[1] for x in imports):.2f} s as a process; torch imported: {imports[0][2]}")
    print(f"cyclemask-run: first output after {med(r[0] for r in runs):.2f} s, whole process "
          f"{med(r[1] for r in runs):.2f} s (medians)")


if __name__ == "__main__":
    main()
