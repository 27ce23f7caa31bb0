"""CLI: sheet (a printable counselling sheet of audited synthetic faces of one condition)."""

from __future__ import annotations

from pathlib import Path

import typer

from phenosynth.cli._app import WORKSPACE_OPTION, command, console
from phenosynth.data.workspace import Workspace


@command("sheet")
def sheet_command(
    workspace: Path = WORKSPACE_OPTION,
    condition: str = typer.Option(..., "--condition", help="The condition (a label of the workspace)."),
    run: str = typer.Option(None, "--run", help="Faces of this audited generator run only (default: every one)."),
    annotations: Path = typer.Option(
        None, "--annotations", help="CSV or YAML of condition -> name, features, HPO terms, description "
                                    "(the demo's conditions.csv is one)."),
    out: Path = typer.Option(None, "--out", help="HTML or PDF path (default: WS/sheets/CONDITION.html)."),
    n: int = typer.Option(12, "--n", help="Number of faces on the sheet."),
    image: list[str] = typer.Option(None, "--image", help="These image ids only (repeat the option); each must be "
                                                          "an audited, unflagged synthetic face of the condition."),
    pdf: bool = typer.Option(True, "--pdf/--no-pdf", help="Also print a PDF with Chromium (when installed)."),
) -> None:
    """Write a printable one-page counselling sheet for one condition: a grid of its audited, unflagged synthetic
    faces, its features in plain language, and a clear line on what the faces are: computer-generated (they belong
    to no real child) or, from a phenotype-transfer run with donor identities, computer-altered photographs of
    volunteers who agreed to their use (no patient's). HTML (self-contained) and, with Chromium installed, PDF.
    Refuses real photos, unaudited or flagged images, and images made from patients' photos (shape-warp).

    Example: [bold]phenosynth sheet -w ws --condition sim01 --annotations demo/conditions.csv[/]
    """
    from phenosynth.edu.annotations import load_annotations
    from phenosynth.edu.sheet import write_sheet

    ws = Workspace.open(workspace, need_manifest=True)
    notes = load_annotations(annotations) if annotations is not None else None
    res = write_sheet(ws, condition, annotations=notes, run=run, image_ids=image or None, n=n, out=out, pdf=pdf)
    for line in res.notes:
        console.print(f"Note: {line}.", highlight=False, soft_wrap=True)
    if notes is not None and condition not in notes:
        console.print(f"Note: {annotations} has no entry for '{condition}': the sheet lists no features.",
                      highlight=False, soft_wrap=True)
    console.print(f"The sheet says: {res.disclaimer}", highlight=False, soft_wrap=True)
    pdf_line = f" and {res.pdf}" if res.pdf else f"; no PDF ({res.pdf_note})"
    console.print(f"Counselling sheet of '{condition}': {res.n_images} audited synthetic face(s) from run(s) "
                  f"{', '.join(res.runs)}, written to {res.html}{pdf_line}.", highlight=False, soft_wrap=True)
