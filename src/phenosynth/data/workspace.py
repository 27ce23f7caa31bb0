"""The workspace folder that every command reads and writes (docs/DESIGN.md, "Workspace and data model")."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from phenosynth.data.manifest import conform, empty_manifest, to_csv_frame
from phenosynth.errors import WorkspaceError


@dataclass(frozen=True)
class Workspace:
    """Paths inside a workspace plus manifest I/O. Create with :meth:`open`."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike[str], *, create: bool = False, need_manifest: bool = False) -> "Workspace":
        path = Path(root).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise WorkspaceError(f"Workspace {path} exists and is not a folder.")
        if not path.exists():
            if not create:
                raise WorkspaceError(
                    f"Workspace {path} does not exist. Create one with: phenosynth ingest SRC -w {path}"
                )
            path.mkdir(parents=True)
        ws = cls(path)
        if need_manifest and not ws.manifest_path.exists():
            raise WorkspaceError(
                f"Workspace {path} has no manifest.parquet yet. Run first: phenosynth ingest SRC -w {path}"
            )
        return ws

    # --- fixed layout -------------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def ingest_report_path(self) -> Path:
        return self.root / "ingest_report.csv"

    @property
    def split_report_path(self) -> Path:
        return self.root / "split_report.csv"

    @property
    def faces_path(self) -> Path:
        return self.root / "faces.parquet"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def synthetic_dir(self) -> Path:
        return self.root / "synthetic"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    # --- paths stored in the manifest ---------------------------------------------------------------------------
    def relpath(self, path: str | os.PathLike[str]) -> str:
        """How ``path`` is stored in the manifest: relative to the workspace when inside it, else absolute."""
        p = Path(path).absolute()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    def resolve(self, stored: str) -> Path:
        """The file a manifest ``path`` refers to."""
        p = Path(stored)
        return p if p.is_absolute() else self.root / p

    # --- manifest I/O ---------------------------------------------------------------------------------------------
    def load_manifest(self) -> pd.DataFrame:
        if not self.manifest_path.exists():
            return empty_manifest()
        return conform(pd.read_parquet(self.manifest_path))

    def save_manifest(self, df: pd.DataFrame) -> None:
        """Write atomically: a crash never leaves a half-written manifest."""
        df = conform(df)
        if df["image_id"].duplicated().any():
            dup = df.loc[df["image_id"].duplicated(), "image_id"].iloc[0]
            raise WorkspaceError(f"Refusing to save a manifest with a duplicated image_id ({dup}).")
        atomic_write(self.manifest_path, lambda p: df.to_parquet(p, index=False))

    def export_manifest_csv(self, out: str | os.PathLike[str]) -> Path:
        out = Path(out)
        to_csv_frame(self.load_manifest()).to_csv(out, index=False)
        return out


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the result over ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
