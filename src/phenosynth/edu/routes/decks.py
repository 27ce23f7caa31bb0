"""Educator pages for decks: list and create, the grid (audit scores), add/reorder/retire images, annotations, zip
export and import. Every route depends on :func:`current_educator` (403 for a trainee, /login when signed out)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, object_session

from phenosynth.edu import decks as D
from phenosynth.edu.db import Deck, DeckCondition, User
from phenosynth.edu.deps import current_educator, gated_file, get_db, render
from phenosynth.edu.routes.practice import deck_practice_open

router = APIRouter(tags=["decks"], dependencies=[Depends(current_educator)])

#: Candidates shown per page of the grid.
GRID_PAGE = 120


def _deck(db: Session, deck_id: int) -> Deck:
    deck = D.deck_by_id(db, deck_id)
    if deck is None:
        raise HTTPException(status_code=404, detail=f"No deck {deck_id}.")
    return deck


def _deck_page(request: Request, deck: Deck, run: str | None = None, *, messages: list[str] | None = None,
               refused: list[tuple[str, str]] | None = None, error: str | None = None,
               status_code: int = 200) -> Response:
    images: D.WorkspaceImages = request.app.state.images
    table = images.table()
    runs = images.runs()
    run = run if run in runs else (runs[0] if runs else None)
    in_deck = {i.image_id for i in deck.images}
    candidates = []
    if run is not None:
        rows = table[(table["run"] == run)].sort_values(["condition"], kind="stable")
        for image_id, r in rows.head(GRID_PAGE).iterrows():
            candidates.append({"image_id": image_id, "condition": r["condition"], "refused": r["refused"],
                               "audit": r["audit"] or {}, "in_deck": image_id in in_deck})
    now_refused = {i.image_id: images.verdict(i.image_id) for i in deck.images if i.origin == "workspace"}
    return render(request, "deck.html", {
        "deck": deck, "runs": runs, "run": run, "candidates": candidates, "n_run": int((table["run"] == run).sum()),
        "now_refused": {k: v for k, v in now_refused.items() if v}, "messages": messages or [],
        "refused": refused or [], "error": error, "grid_page": GRID_PAGE,
        "practice_open": deck_practice_open(object_session(deck), deck.id)}, status_code=status_code)


@router.get("/decks")
def list_decks(request: Request, db: Session = Depends(get_db, scope="function")) -> Response:
    decks = db.scalars(select(Deck).order_by(Deck.created_at.desc())).all()
    return render(request, "decks.html", {"decks": decks, "runs": request.app.state.images.runs()})


@router.post("/decks")
def new_deck(request: Request, name: str = Form(""), description: str = Form(""), run: str = Form(""),
             db: Session = Depends(get_db, scope="function"), user: User = Depends(current_educator)) -> Response:
    images: D.WorkspaceImages = request.app.state.images
    table = images.table()
    conditions = sorted(set(table.loc[(table["run"] == run) & table["refused"].isna(), "condition"])) if run else []
    deck = D.create_deck(db, user, name, description, conditions)
    return RedirectResponse(f"/decks/{deck.id}" + (f"?run={run}" if run else ""), status_code=303)


@router.get("/decks/import")
def import_page(request: Request) -> Response:
    return render(request, "deck_import.html", {})


@router.post("/decks/import")
async def import_zip(request: Request, file: UploadFile = File(...), db: Session = Depends(get_db, scope="function"),
                     user: User = Depends(current_educator)) -> Response:
    limits: D.ZipLimits = request.app.state.zip_limits
    data = await file.read(limits.max_zip_bytes + 1)
    try:
        result = await run_in_threadpool(D.import_deck, db, user, data, request.app.state.edu_dir, limits)
    except D.DeckError as exc:
        return render(request, "deck_import.html", {"error": str(exc)}, status_code=400)
    messages = [f"Imported {result.imported} image(s) into deck '{result.deck.name}'."]
    return _deck_page(request, result.deck, messages=messages, refused=result.refused,
                      status_code=422 if result.refused else 200)


@router.get("/decks/{deck_id:int}")
def show_deck(request: Request, deck_id: int, run: str | None = None, db: Session = Depends(get_db, scope="function")) -> Response:
    return _deck_page(request, _deck(db, deck_id), run)


@router.post("/decks/{deck_id:int}/images")
def add_images(request: Request, deck_id: int, run: str = Form(""), image_id: list[str] = Form(default=[]),
               db: Session = Depends(get_db, scope="function")) -> Response:
    deck = _deck(db, deck_id)
    result = D.add_images(db, deck, request.app.state.images, image_id)
    messages = [f"Added {len(result.added)} image(s)."] + (
        [f"{len(result.already)} already in the deck."] if result.already else [])
    return _deck_page(request, deck, run or None, messages=messages, refused=result.refused,
                      status_code=422 if result.refused else 200)


@router.post("/decks/{deck_id:int}/order")
async def reorder(request: Request, deck_id: int, db: Session = Depends(get_db, scope="function")) -> Response:
    deck = _deck(db, deck_id)
    form = await request.form()
    positions = {}
    for key, value in form.items():
        if key.startswith("pos-") and key[4:].isdigit():
            try:
                positions[int(key[4:])] = float(str(value))
            except ValueError:
                raise D.DeckError(f"Position '{str(value)[:20]}' is not a number.") from None
    D.reorder(db, deck, positions)
    return RedirectResponse(f"/decks/{deck.id}", status_code=303)


@router.post("/decks/{deck_id:int}/images/{image_pk:int}/retire")
def retire(deck_id: int, image_pk: int, retired: str = Form("1"), db: Session = Depends(get_db, scope="function")) -> Response:
    deck = _deck(db, deck_id)
    D.set_retired(db, deck, image_pk, retired == "1")
    return RedirectResponse(f"/decks/{deck.id}", status_code=303)


@router.post("/decks/{deck_id:int}/conditions/{condition_id:int}")
def annotate(request: Request, deck_id: int, condition_id: int, name: str = Form(""), hpo_terms: str = Form(""),
             features_text: str = Form(""), description: str = Form(""), db: Session = Depends(get_db, scope="function")) -> Response:
    deck = _deck(db, deck_id)
    cond = db.get(DeckCondition, condition_id)
    if cond is None or cond.deck_id != deck.id:
        raise HTTPException(status_code=404, detail=f"Deck '{deck.name}' has no condition {condition_id}.")
    try:
        D.annotate(db, cond, name=name, hpo_terms=hpo_terms, features_text=features_text, description=description)
    except D.DeckError as exc:
        db.rollback()
        return _deck_page(request, deck, error=str(exc), status_code=422)
    return RedirectResponse(f"/decks/{deck.id}#condition-{cond.id}", status_code=303)


@router.get("/decks/{deck_id:int}/images/{image_pk:int}")
def deck_image_file(request: Request, deck_id: int, image_pk: int, db: Session = Depends(get_db, scope="function")) -> Response:
    deck = _deck(db, deck_id)
    return gated_file(lambda: D.image_path(D.deck_image(deck, image_pk), request.app.state.images,
                                           request.app.state.edu_dir))


@router.get("/workspace/images/{image_id}")
def candidate_file(request: Request, image_id: str) -> Response:
    """A workspace image for the grid: only one a deck may take (never a real photo or a flagged image)."""
    return gated_file(lambda: request.app.state.images.file(image_id))


@router.get("/decks/{deck_id:int}/export")
def export_zip(request: Request, deck_id: int, db: Session = Depends(get_db, scope="function")) -> Response:
    deck = _deck(db, deck_id)
    data, left_out = D.export_deck(deck, request.app.state.images, request.app.state.edu_dir)
    from phenosynth.data.filenames import safe_name

    headers = {"Content-Disposition": f'attachment; filename="{safe_name(deck.name)}.zip"',
               "X-Phenosynth-Left-Out": str(len(left_out))}
    return Response(data, media_type="application/zip", headers=headers)
