"""The ranking table ``WS/ranking.parquet``: where it lives, how it is read and written.

Columns ``image_id, representation, rank_score, own_class_rank``, one row per ranked synthetic image and
representation. :func:`phenosynth.synth.ranking.rank` writes it; selection and the study read it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from phenosynth.data.workspace import Workspace, atomic_write
from phenosynth.errors import PhenosynthError

RANKING_FILE = "ranking.parquet"
RANKING_COLUMNS = ["image_id", "representation", "rank_score", "own_class_rank"]
#: The representation read when several are stored and none is asked for.
DEFAULT_REPRESENTATION = "rdface25"


def ranking_path(ws: Workspace) -> Path:
    """``WS/ranking.parquet``."""
    return ws.root / RANKING_FILE


def load_ranking(ws: Workspace, representation: str | None = None) -> pd.DataFrame:
    """``WS/ranking.parquet`` rows (image_id, representation, rank_score, own_class_rank) for one representation.

    With ``representation=None``: the only one stored, else ``rdface25`` when stored. An empty frame when nothing is
    stored for it.
    """
    path = ranking_path(ws)
    if not path.exists():
        return pd.DataFrame({c: [] for c in RANKING_COLUMNS})
    ranking = pd.read_parquet(path)
    stored = sorted(ranking["representation"].dropna().unique().tolist())
    if representation is None:
        if len(stored) == 1:
            representation = stored[0]
        elif DEFAULT_REPRESENTATION in stored:
            representation = DEFAULT_REPRESENTATION
        elif stored:
            raise PhenosynthError(
                f"{path} holds rankings by several representations ({', '.join(stored)}); choose one "
                "(e.g. --representation shape68)."
            )
    return ranking[ranking["representation"] == representation].reset_index(drop=True)


def save_ranking(ws: Workspace, table: pd.DataFrame, representation: str) -> Path:
    """Write ``table`` (the rows of ``representation``) to ``WS/ranking.parquet``, replacing that representation's
    earlier rows and keeping the other representations'; returns the path."""
    path = ranking_path(ws)
    table = table[RANKING_COLUMNS]
    if path.exists():
        old = pd.read_parquet(path)
        table = pd.concat([old[old["representation"] != representation], table], ignore_index=True)
    table = table.astype({"image_id": "string", "representation": "string", "rank_score": "float64",
                          "own_class_rank": "int64"})
    atomic_write(path, lambda p: table.to_parquet(p, index=False))
    return path
