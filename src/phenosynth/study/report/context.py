"""What the workspace says about a study, for report.html: the manifest summary, the face pass and the synthetic
images with their selection ranking. Each part is None (or empty) where the workspace does not have it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class WorkspaceStats:
    """Statistics of the workspace a study ran on."""

    manifest: dict[str, Any] | None = None
    """:func:`phenosynth.data.manifest.summarize` of the manifest."""
    faces: dict[str, Any] | None = None
    """Face-pass counts by outcome ("ok (one face)" -> 12, ...)."""
    synthetic: dict[str, Any] | None = None
    """Usable synthetic images and their selection ranking ("by generator" -> "shape-warp: 480", ...)."""
    flagged: dict[str, int] = field(default_factory=dict)
    """Synthetic images left out, by reason."""

    @property
    def n_classes(self) -> int | None:
        return self.manifest["classes"] if self.manifest else None


def workspace_root(ws: Any, config: dict[str, Any], run_dir: Path) -> Path | None:
    """The workspace of ``run_dir``: ``ws`` (a :class:`Workspace` or a path) when given, else config.yaml's
    ``workspace``, else the folder two levels up when it holds a manifest; None when there is none."""
    if ws is not None:
        return Path(ws) if isinstance(ws, (str, Path)) else Path(ws.root)
    if config.get("workspace") and Path(config["workspace"]).exists():
        return Path(config["workspace"])
    return run_dir.parent.parent if (run_dir.parent.parent / "manifest.parquet").exists() else None


def workspace_stats(ws_root: Path | None, representation: str | None = None) -> WorkspaceStats:
    """Manifest summary, face-pass and selection statistics from the workspace (empty where absent)."""
    if ws_root is None or not (ws_root / "manifest.parquet").exists():
        return WorkspaceStats()
    from phenosynth.data import manifest as mf
    from phenosynth.data.workspace import Workspace

    ws = Workspace(ws_root)
    df = ws.load_manifest()
    stats = WorkspaceStats(manifest=mf.summarize(df))
    syn_all = df[df["source"] == mf.SYNTHETIC]
    stats.flagged = {str(k): int(v) for k, v in syn_all["exclude_reason"].dropna().value_counts().items()}
    stats.synthetic = _synthetic_stats(ws, mf.synthetic(df), stats.n_classes, representation)
    if ws.faces_path.exists():
        try:
            stats.faces = _face_stats(pd.read_parquet(ws.faces_path))
        except Exception as exc:  # noqa: BLE001 - the report shows what it can
            log.warning("could not read %s: %s", ws.faces_path, exc)
    return stats


def _synthetic_stats(ws: Any, syn: pd.DataFrame, n_classes: int | None,
                     representation: str | None) -> dict[str, Any] | None:
    if not len(syn):
        return None
    per_class = syn["label"].value_counts()
    info: dict[str, Any] = {
        "usable synthetic images": len(syn),
        "by generator": ", ".join(f"{g}: {c}" for g, c in syn["generator"].fillna("?").value_counts().items()),
        "per class (min / median / max)": f"{per_class.min()} / {per_class.median():g} / {per_class.max()}",
        "classes with synthetic images": f"{per_class.size} of {n_classes}",
    }
    ranking = _ranking(ws, representation)
    if ranking is not None and len(ranking):
        score = ranking["rank_score"]
        info["ranked by"] = str(ranking["representation"].iloc[0])
        info["rank score, cosine to own class prototype (mean / min / max)"] = (
            f"{score.mean():.3f} / {score.min():.3f} / {score.max():.3f}")
        info["closest to own class prototype (own class ranked 1st)"] = (
            f"{100 * (ranking['own_class_rank'] == 1).mean():.1f} %")
    return info


def _ranking(ws: Any, representation: str | None) -> pd.DataFrame | None:
    try:
        from phenosynth.synth.selection import load_ranking

        return load_ranking(ws, representation)
    except Exception as exc:  # noqa: BLE001 - the report shows what it can
        log.warning("no ranking statistics: %s", exc)
        return None


def _face_stats(faces: pd.DataFrame) -> dict[str, Any]:
    status = faces["status"].astype(str)
    settings = zip(faces.get("detector", ["?"] * len(faces)), faces.get("landmarker", ["?"] * len(faces)))
    out: dict[str, Any] = {
        "rows": len(faces),
        "settings": ", ".join(sorted({f"{d}/{lm}" for d, lm in settings})),
        "ok (one face)": int((status == "ok").sum()),
        "ok, largest of several faces": int(status.str.startswith("ok-largest").sum()),
        "no face": int((status == "no-face").sum()),
        "errors": int(status.str.startswith("error").sum()),
    }
    if "score" in faces.columns:
        s = pd.to_numeric(faces["score"], errors="coerce").dropna()
        if len(s):
            out["detection score (median)"] = f"{s.median():.3f}"
    return out
