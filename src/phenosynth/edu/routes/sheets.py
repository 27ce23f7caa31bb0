"""The counselling-sheet button of a deck's condition (issue 13, item 5): the sheet of
:func:`phenosynth.edu.sheet.write_sheet` for the condition's deck faces, as HTML (to view and print) or PDF.

The faces are the condition's deck images that are workspace images, not retired, and that
:func:`phenosynth.edu.sheet.select_sheet_images` finds shareable now (the audit gate, checked again: an image the
audit flagged since it joined the deck never appears); images imported from a deck zip are left out (a sheet names
the audited generator runs its faces come from, which an imported image no longer has). The annotation is the
deck's: name, features, HPO terms, description. Educators only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from phenosynth.data.filenames import safe_name
from phenosynth.edu import decks as D
from phenosynth.edu import sheet as S
from phenosynth.edu.annotations import PLAIN_LANGUAGE, Annotation
from phenosynth.edu.db import FROM_WORKSPACE, DeckCondition
from phenosynth.edu.deps import current_educator, get_db
from phenosynth.errors import PhenosynthError

router = APIRouter(tags=["sheets"], dependencies=[Depends(current_educator)])

#: The sheet is a standalone page with its own print styles and embedded faces; nothing else may load.
SHEET_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
MAX_FACES = 12


def deck_annotation(condition: DeckCondition) -> Annotation:
    features = tuple(line.strip() for line in condition.features_text.splitlines() if line.strip())
    return Annotation(condition=condition.name, name=condition.name, features=features,
                      hpo=tuple((t, PLAIN_LANGUAGE.get(t, "")) for t in condition.hpo_terms or []),
                      description=condition.description)


def sheet_image_ids(condition: DeckCondition, images: D.WorkspaceImages) -> tuple[str, list[str]]:
    """``(workspace label, image ids)``: the condition's deck faces a sheet may show, in deck order (at most
    :data:`MAX_FACES`)."""
    table = images.table()
    candidates = [i for i in condition.images if i.origin == FROM_WORKSPACE and not i.retired
                  and i.image_id in table.index]
    labels = sorted({str(table.at[i.image_id, "condition"]) for i in candidates})
    if not candidates:
        raise D.DeckError(f"Condition '{condition.name}' has no workspace face in this deck to put on a sheet.")
    if len(labels) > 1:
        raise D.DeckError(f"Condition '{condition.name}' mixes faces of the workspace conditions "
                          f"{', '.join(labels)}: a sheet shows one condition.")
    try:
        shareable, _ = S.select_sheet_images(images.ws, labels[0], n=len(table))
        ok = set(shareable["image_id"].astype(str))
    except PhenosynthError:  # no shareable face of the condition in the whole workspace
        ok = set()
    ids = [i.image_id for i in candidates if i.image_id in ok][:MAX_FACES]
    if not ids:
        raise D.DeckError(f"No face of '{condition.name}' in this deck passes the audit now: no sheet.")
    return labels[0], ids


@router.get("/decks/{deck_id:int}/conditions/{condition_id:int}/sheet")
def condition_sheet(request: Request, deck_id: int, condition_id: int, format: str = "html",
                    db: Session = Depends(get_db, scope="function")) -> Response:
    condition = db.get(DeckCondition, condition_id)
    if condition is None or condition.deck_id != deck_id:
        raise HTTPException(status_code=404, detail=f"Deck {deck_id} has no condition {condition_id}.")
    if format not in ("html", "pdf"):
        raise HTTPException(status_code=404, detail=f"No sheet format '{format}' (use: html, pdf).")
    images: D.WorkspaceImages = request.app.state.images
    label, ids = sheet_image_ids(condition, images)
    name = safe_name(condition.name)
    with tempfile.TemporaryDirectory(prefix="phenosynth-sheet-") as tmp:
        result = S.write_sheet(images.ws, label, annotations={label: deck_annotation(condition)}, image_ids=ids,
                               out=Path(tmp) / f"{name}.html", pdf=format == "pdf")
        if format == "pdf":
            if result.pdf is None:
                raise HTTPException(status_code=503, detail=f"No PDF: {result.pdf_note}. Open the HTML sheet and "
                                                            "print it from the browser.")
            return Response(result.pdf.read_bytes(), media_type="application/pdf",
                            headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'})
        body = result.html.read_text(encoding="utf-8")
    return Response(body, media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": SHEET_CSP,
                             "Content-Disposition": f'inline; filename="{name}.html"'})
