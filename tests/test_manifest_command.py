"""`phenosynth manifest`: the summary table a user reads, the --csv export's content, and no overwriting."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from phenosynth.cli import app
from phenosynth.data.manifest import MANIFEST_COLUMNS, conform
from phenosynth.data.workspace import Workspace

ROWS = [
    {"image_id": "a1x", "path": "real/a1x.png", "label": "A", "subject_id": "a1", "source": "real", "split": "train",
     "fold": 0, "width": 64, "height": 48},
    {"image_id": "a1y", "path": "real/a1y.png", "label": "A", "subject_id": "a1", "source": "real", "split": "train",
     "fold": 0, "width": 64, "height": 48},
    {"image_id": "a2x", "path": "real/a2x.png", "label": "A", "subject_id": "a2", "source": "real", "split": "test"},
    {"image_id": "b1x", "path": "real/b1x.png", "label": "B", "subject_id": "b1", "source": "real", "split": "train",
     "fold": 1},
    {"image_id": "b2x", "path": "real/b2x.png", "label": "B", "subject_id": "b2", "source": "real", "split": "test"},
    {"image_id": "b3x", "path": "real/b3x.png", "label": "B", "subject_id": "b3", "source": "real", "split": "train",
     "exclude_reason": "duplicate"},
    {"image_id": "s1", "path": "synthetic/s1.png", "label": "A", "subject_id": "s1", "source": "synthetic",
     "generator": "shape-warp", "parents": ["a1x"], "split": "train"},
    {"image_id": "s2", "path": "synthetic/s2.png", "label": "A", "subject_id": "s2", "source": "synthetic",
     "generator": "shape-warp", "parents": ["a1x", "a1y"], "split": "train"},
]


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.save_manifest(conform(pd.DataFrame(ROWS)))
    return ws


def flat(text: str) -> str:
    """``text`` without whitespace: rich wraps long lines (paths) at the terminal's width."""
    return "".join(text.split())


def table_rows(output: str) -> dict[str, str]:
    """The two-column rich table as {what: value}."""
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in output.splitlines() if line.count("│") == 3]
    return dict(cells)


def test_manifest_prints_the_counts(ws):
    res = CliRunner().invoke(app, ["manifest", "-w", str(ws.root)])
    assert res.exit_code == 0, res.output
    assert flat(f"Manifest of {ws.root}") in flat(res.output)  # the title wraps to the table's width
    assert table_rows(res.output) == {
        "images": "8", "real": "6", "synthetic": "2", "usable": "7", "classes": "2",
        "subjects": "4",  # usable real subjects: b3 is excluded
        "real test": "2", "real train": "3", "excluded: duplicate": "1",
    }


def test_manifest_csv_export_holds_every_row_and_refuses_to_overwrite(ws, tmp_path):
    out = tmp_path / "manifest.csv"
    res = CliRunner().invoke(app, ["manifest", "-w", str(ws.root), "--csv", str(out)])
    assert res.exit_code == 0, res.output
    assert flat(f"Manifest exported to {out}.") in flat(res.output)
    csv = pd.read_csv(out, keep_default_na=False)
    assert list(csv.columns) == MANIFEST_COLUMNS
    assert csv["image_id"].tolist() == [r["image_id"] for r in ROWS]
    assert csv["parents"].tolist() == [""] * 6 + ["a1x", "a1x;a1y"]  # lists joined with ';'
    assert csv["exclude_reason"].tolist() == [""] * 5 + ["duplicate", "", ""]
    assert csv["fold"].tolist() == ["0", "0", "", "1", "", "", "", ""]
    assert csv.loc[0, ["path", "label", "subject_id", "split", "width", "height"]].tolist() == [
        "real/a1x.png", "A", "a1", "train", "64", "48"]

    out.write_text("mine\n")
    again = CliRunner().invoke(app, ["manifest", "-w", str(ws.root), "--csv", str(out)])
    assert again.exit_code == 2
    assert flat(f"{out} exists; choose another file name (nothing is overwritten).") in flat(again.output)
    assert "Traceback" not in again.output and out.read_text() == "mine\n"
