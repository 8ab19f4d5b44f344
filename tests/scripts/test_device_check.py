"""scripts/device_check.sh: its --dry-run (the same steps as on a GPU machine, on the CPU with
tiny sizes) passes and writes every result file; usage errors exit 2 with a message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "device_check.sh"
FILES = ("summary.md", "env.txt", "tests.log", "tests.xml", "parity.json", "throughput.md", "throughput.json", "bench.log")


def _run(*args, env_extra=None, timeout=240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, **(env_extra or {}))
    env.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


@pytest.mark.slow  # the whole script in a subprocess (~20 s); its steps are tests/parity and tests/benchmarks, fast
def test_dry_run_passes_and_writes_every_result(tmp_path):
    out = tmp_path / "results"
    t0 = time.perf_counter()
    res = _run("--dry-run", str(out))
    seconds = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # 8 files, nothing else
    summary = (out / "summary.md").read_text()
    assert "dry run (CPU, tiny sizes)" in summary and "All steps passed." in summary
    for step in ("env", "import", "tests", "bench"):
        assert f"| {step} | ok |" in summary, summary

    # tests: the CPU parity case ran and recorded its figures; its CUDA twin was selected and,
    # without a GPU, skipped with the reason.
    parity = json.loads((out / "parity.json").read_text())
    cpu = [r for r in parity if r["variant"] == "torch-cpu-fp32"]
    assert cpu and cpu[0]["max_abs_lsb"] == 0 and cpu[0]["pixel_ok"]
    cases = {c.get("name"): c for c in ET.parse(out / "tests.xml").iter("testcase")}
    assert "test_pixel_parity_small[torch-cpu-fp32]" in cases
    cuda_case = cases["test_pixel_parity_small[torch-cuda-fp32]"]
    skipped = cuda_case.find("skipped")
    import torch

    if not torch.cuda.is_available():
        assert skipped is not None and "needs a CUDA GPU" in skipped.get("message", "")

    # bench: rows for both batch sizes with raw and pipeline figures, in the Markdown table too.
    bench = json.loads((out / "throughput.json").read_text())
    rows = {(r["variant"], r["batch"]): r for r in bench["rows"]}
    assert {("torch-cpu-fp32", 1), ("torch-cpu-fp32", 2)} <= set(rows)
    for r in rows.values():
        assert r["model"] == "tiny" and r["images_per_s"] > 0 and r["latency_p99_ms"] >= r["latency_p50_ms"] > 0
        assert r["video_images_per_s"] > 0 and r["folder_images_per_s"] > 0 and r["macs_per_image"] > 0
    assert "| tiny | torch-cpu-fp32 |" in (out / "throughput.md").read_text()
    assert bench["meta"]["complete"] and "PARTIAL" not in (out / "throughput.md").read_text()
    assert "torch: " in (out / "env.txt").read_text() and "import: installed package" in (out / "env.txt").read_text()
    print(f"device_check.sh --dry-run took {seconds:.1f} s")


def test_usage_errors_exit_2_with_a_message(tmp_path):
    res = _run("--frobnicate")
    assert res.returncode == 2 and "error: unknown option --frobnicate" in res.stderr
    res = _run(str(tmp_path / "a"), str(tmp_path / "b"))
    assert res.returncode == 2 and "one output folder only" in res.stderr
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    res = _run("--dry-run", str(afile))
    assert res.returncode == 2 and f"output folder {afile} exists and is not a folder" in res.stderr
    res = _run("--python", str(tmp_path / "no-python"), str(tmp_path / "c"))
    assert res.returncode == 2 and "Python interpreter" in res.stderr and "not found" in res.stderr
    res = _run("--python")
    assert res.returncode == 2 and "--python needs a value" in res.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()  # nothing was started


def test_help_documents_options_and_default_folder():
    res = _run("--help")
    assert res.returncode == 0
    for text in ("--dry-run", "--python", "OUTDIR", "$OUT", "./device-results", "summary.md", "8 minutes"):
        assert text in res.stdout, text


@pytest.mark.slow  # a subprocess (~5 s)
def test_path_shim_imports_the_checkout_without_an_install(tmp_path):
    """The fallback for a machine where cyclemask is not installed: with the editable install's
    finder removed, the shim alone maps cyclemask.engine etc. onto the checkout's folders."""
    shim = REPO / "scripts" / "pyshim" / "sitecustomize.py"
    code = f"""
import importlib.util, sys
sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '').lower()]
sys.path_hooks[:] = [h for h in sys.path_hooks if 'editable' not in getattr(h, '__module__', '').lower()]
sys.path_importer_cache.clear()
try:
    import cyclemask.engine
    raise SystemExit('cyclemask.engine imported without the shim: the test proves nothing')
except ModuleNotFoundError:
    pass
for k in [k for k in sys.modules if k.startswith('cyclemask')]:
    del sys.modules[k]
spec = importlib.util.spec_from_file_location('shim', {str(shim)!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
import cyclemask.engine.backends, cyclemask.export.verify, cyclemask.train
print(cyclemask.engine.__file__, cyclemask.export.__file__, cyclemask.train.__file__)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == [str(REPO / "engine" / "__init__.py"), str(REPO / "export" / "__init__.py"),
                                  str(REPO / "train" / "__init__.py")]


def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK), f"{SCRIPT} must be executable (git mode 100755)"


#: What the GPU machine is promised to have: torch (with what it needs to import), numpy, pytest.
BARE_DISTS = ("torch", "numpy", "pytest", "pluggy", "iniconfig", "packaging", "pygments", "typing_extensions",
              "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "filelock", "fsspec", "setuptools")


def _bare_python(root: Path) -> Path:
    """A virtual environment holding only BARE_DISTS (linked from this one) and no cyclemask."""
    import importlib.metadata
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    py = root / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    here = Path(sysconfig.get_paths()["purelib"])
    for name in BARE_DISTS:
        dist = importlib.metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = Path(dist.locate_file(top))
            if src.exists() and not (site / top).exists() and top not in ("bin", "__pycache__"):
                (site / top).symlink_to(src)
    assert here.exists()
    return py


@pytest.mark.slow  # the whole script in a subprocess, in a bare environment (~10 s)
def test_dry_run_on_a_machine_with_only_torch_numpy_and_pytest(tmp_path):
    """The GPU machine may have nothing of the project's but torch, numpy and pytest: the check
    still runs to its end, imports the checkout through the path shim, skips what needs a
    missing package with its name, and exits 0."""
    py = _bare_python(tmp_path / "bare")
    probe = subprocess.run([str(py), "-c", "import torch, numpy, pytest\n"
                            "for m in ('onnx', 'cv2', 'click', 'onnxruntime', 'cyclemask'):\n"
                            "    try:\n        __import__(m)\n    except ImportError:\n        continue\n"
                            "    raise SystemExit(m + ' is importable: the environment is not bare')"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:] + probe.stdout
    out = tmp_path / "results"
    env = dict(os.environ, PYTHON=str(py), CYCLEMASK_SHARED=str(tmp_path / "no-shared"))
    env.pop("OUT", None)
    env.pop("PYTHONPATH", None)
    res = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], capture_output=True, text=True, timeout=300,
                         env=env, cwd=REPO)
    summary = (out / "summary.md").read_text()
    assert res.returncode == 0, summary + res.stderr[-3000:]
    assert "| import | ok |" in summary and "path shim" in summary
    assert "| tests | ok |" in summary and "| env | ok |" in summary
    assert "| bench | skipped | 0 | needs the Python package 'click'" in summary
    assert "package onnx: MISSING" in (out / "env.txt").read_text()
    parity = json.loads((out / "parity.json").read_text())
    assert [r["variant"] for r in parity] == ["torch-cpu-fp32"] and parity[0]["pixel_ok"]
