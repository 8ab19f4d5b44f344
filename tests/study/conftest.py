"""Fixtures of the study tests: two small image folders made in the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import make_folders


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    return make_folders(tmp_path / "in")


@pytest.fixture
def study_config(tmp_path, folders):
    from cyclemask.study.config import StudyConfig

    real, gen = folders
    return StudyConfig(real=real, generated=gen, study_dir=tmp_path / "study", per_person=6, face_check=False)
