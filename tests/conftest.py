"""Shared fixtures: tests make their own data. Helper modules live in this package (``tests._faces_data``,
``tests._study_fakes``, ``tests._workspaces``); pytest imports it in importlib mode, so no test touches ``sys.path``
by hand."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests import _postgres, _workspaces
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


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core machine run far faster (and steadier) on one intra-op thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def pool_starts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The worker counts of the process pools started through ``phenosynth.parallel.process_pool`` (the one helper
    every stage must use), in order."""
    from phenosynth import parallel

    starts: list[int] = []
    real = parallel.process_pool

    def spy(workers: int, *args, **kwargs):
        starts.append(workers)
        return real(workers, *args, **kwargs)

    monkeypatch.setattr(parallel, "process_pool", spy)
    return starts



@pytest.fixture(scope="session")
def postgres_server_url():
    """A PostgreSQL server for the session (``PHENOSYNTH_TEST_PG_URL``, else a throw-away cluster: tests/_postgres.py);
    skips, saying why, where there is none."""
    try:
        with _postgres.postgres_server() as url:
            yield url
    except _postgres.PostgresUnavailable as e:
        pytest.skip(f"no PostgreSQL to test against: {e}")


@pytest.fixture
def postgres_url(postgres_server_url):
    """The URL of a new, empty PostgreSQL database (dropped after the test)."""
    url = _postgres.fresh_database(postgres_server_url)
    yield url
    _postgres.drop_database(postgres_server_url, url)


# --- workspace builders: factory fixtures ``make_<builder>`` handing tests a builder of tests/_workspaces.py (its
# docstring says what data it makes), called as ``make_x_workspace(root, ...)``; the workspace is made at root / "ws" --


def _builder_fixture(build):
    return pytest.fixture(scope="session", name=f"make_{build.__name__}")(lambda: build)


make_photo_workspace = _builder_fixture(_workspaces.photo_workspace)  # (root, {name: image}) -> (ws, {name: id})
make_landmark_workspace = _builder_fixture(_workspaces.landmark_workspace)  # (root) -> (ws, faces)
make_colour_workspace = _builder_fixture(_workspaces.colour_workspace)  # (root, *, n_classes, ...) -> (ws, paths)
make_noise_workspace = _builder_fixture(_workspaces.noise_workspace)  # (root, n) -> (ws, paths)
make_feature_workspace = _builder_fixture(_workspaces.feature_workspace)  # (root, *, n_classes, ..., dims) -> ws
make_patient_workspace = _builder_fixture(_workspaces.patient_workspace)  # (root) -> (ws, paths, faces)
