"""Shared fixtures: tests make their own data. Helper modules live in this package (``tests._faces_data``,
``tests._study_fakes``); pytest imports it in importlib mode, so no test touches ``sys.path`` by hand."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests._study_fakes import FAKE_CELLS


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake cell functions as an importable module ``fake_cells`` (also for spawned workers and Ray)."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "fake_cells.py").write_text(FAKE_CELLS)
    monkeypatch.syspath_prepend(str(mod_dir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(mod_dir), os.environ.get("PYTHONPATH", "")]))
    return mod_dir
