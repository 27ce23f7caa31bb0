"""Progress of trainees and cohorts: the app's Answer rows as :mod:`phenosynth.edu.scoring`'s answers frame, the
numbers of :func:`phenosynth.edu.scoring.progress` over it, and the charts of the progress pages.

**Rows -> frame** (:func:`answers_frame`). An :class:`~phenosynth.edu.db.Answer` belongs to an Attempt of one
trainee at one Exercise; its phase is the exercise's kind (:data:`PHASE_OF_KIND`: ``pretest`` -> ``pre``,
``posttest`` -> ``post``, ``quiz`` -> ``quiz``, ``practice`` -> ``practice``; the schema has no phase column, the
kind says it). ``n_choices`` is the number of options the answer was actually chosen from: the choices its quiz
question showed (the attempt's ``items[item]["choices"]``: every condition of the deck when the quiz was made, or the
k most confusable ones), for a practice trial the number of conditions of its deck. So the chance rate (odds ratio
against guessing) and the Brier score of answers from decks of different sizes are each against their own options,
not against the label space (:func:`label_space`: every condition of the decks the answers come from plus every
label answered, the rows and columns of the confusion matrix).

**Views.** A progress page scores either the tests (``pre``, ``quiz`` and ``post`` answers: :data:`VIEWS`
``"tests"``, the default, Waikel et al.'s measures) or the practice trials (``"practice"``). The pre -> post change
uses the pre and post answers whatever the view.

**Charts** are drawn by matplotlib on the server (a :class:`matplotlib.figure.Figure`, no pyplot state) and put in
the page as ``data:image/svg+xml`` URIs: no JavaScript, no CDN, and the page's Content-Security-Policy
(``img-src 'self' data:``) allows them, which it would not for inline ``<svg style=...>``.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from phenosynth.edu import scoring
from phenosynth.edu.db import TRAINEE, Answer, Attempt, Cohort, DeckCondition, Exercise, Membership, User
from phenosynth.errors import PhenosynthError

PHASE_OF_KIND = {"pretest": "pre", "posttest": "post", "quiz": "quiz", "practice": "practice"}
VIEWS = {"tests": ("pre", "quiz", "post"), "practice": ("practice",)}
#: Columns of :func:`answers_frame`: scoring's answer columns, then where each answer comes from.
FRAME_COLUMNS = [*scoring.ANSWER_COLUMNS, "n_choices", "trainee_id", "deck_id", "exercise_id", "attempt_id",
                 "deck_image_id", "answered_at"]


def check_view(view: str) -> tuple[str, ...]:
    """The phases a view scores; :class:`PhenosynthError` for an unknown view."""
    if view not in VIEWS:
        raise PhenosynthError(f"Unknown progress view '{view}' (use: {', '.join(VIEWS)}).")
    return VIEWS[view]


def _n_choices(items: object, item: int | None, n_deck_conditions: int) -> float:
    """How many options an answer was chosen from: the choices its quiz question showed (``attempt.items[item]
    ["choices"]``), else (a practice trial, which offers the deck's conditions) the number of its deck's conditions."""
    if isinstance(items, list) and item is not None and 0 <= item < len(items):
        choices = items[item].get("choices") if isinstance(items[item], dict) else None
        if isinstance(choices, list) and len(choices) >= 2:
            return float(len(choices))
    return float(n_deck_conditions) if n_deck_conditions >= 2 else np.nan


def answers_frame(db: Session, *, user_ids: Sequence[int] | None = None, deck_id: int | None = None) -> pd.DataFrame:
    """The answers of ``user_ids`` (default: every trainee) as scoring's answers frame (:data:`FRAME_COLUMNS`),
    oldest first; ``deck_id`` keeps one deck's answers. ``trainee`` is the trainee's email."""
    q = (select(Answer.correct_label, Answer.chosen_label, Answer.confidence, Answer.response_ms, Exercise.kind,
                Attempt.items, Answer.item, User.email, User.id, Exercise.deck_id, Exercise.id, Attempt.id,
                Answer.deck_image_id, Answer.answered_at)
         .join(Attempt, Answer.attempt_id == Attempt.id).join(Exercise, Attempt.exercise_id == Exercise.id)
         .join(User, Attempt.user_id == User.id).order_by(Answer.answered_at, Answer.id))
    q = q.where(User.role == TRAINEE) if user_ids is None else q.where(User.id.in_(list(user_ids)))
    if deck_id is not None:
        q = q.where(Exercise.deck_id == deck_id)
    n_conditions = dict(db.execute(select(DeckCondition.deck_id, func.count()).group_by(DeckCondition.deck_id)).all())
    rows = [{"trainee": email, "condition_true": true, "condition_chosen": chosen, "confidence": int(conf),
             "response_ms": int(ms), "phase": PHASE_OF_KIND[kind], "correct": true == chosen,
             "n_choices": _n_choices(items, item, n_conditions.get(did, 0)), "trainee_id": uid, "deck_id": did,
             "exercise_id": eid, "attempt_id": aid, "deck_image_id": iid, "answered_at": at}
            for true, chosen, conf, ms, kind, items, item, email, uid, did, eid, aid, iid, at in db.execute(q)]
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    frame["correct"] = frame["correct"].astype(bool)
    frame["n_choices"] = frame["n_choices"].astype(float)
    return frame


def label_space(db: Session, answers: pd.DataFrame) -> list[str]:
    """Every condition of the decks the answers come from, and every label answered, sorted."""
    decks = sorted({int(d) for d in answers["deck_id"]})
    names = set(db.scalars(select(DeckCondition.name).where(DeckCondition.deck_id.in_(decks)))) if decks else set()
    return sorted(names | set(scoring.conditions_of(answers)))


@dataclass(frozen=True)
class Report:
    """A progress page's content: the numbers (None when there is no answer in the view) and the answers."""

    title: str
    view: str
    progress: scoring.Progress | None
    answers: pd.DataFrame  # every answer of the trainee(s) (all phases; the export's "answers" table)
    conditions: list[str]
    members: list[scoring.Progress]  # a cohort's trainees (empty for one trainee)


def _scored(answers: pd.DataFrame, phases: Sequence[str]) -> pd.DataFrame:
    return answers[answers["phase"].isin(list(phases))]


def trainee_report(db: Session, user: User, *, view: str = "tests", deck_id: int | None = None) -> Report:
    """One trainee's numbers (:func:`phenosynth.edu.scoring.progress`) over the answers of ``view``."""
    phases = check_view(view)
    answers = answers_frame(db, user_ids=[user.id], deck_id=deck_id)
    labels = label_space(db, answers)
    numbers = (scoring.progress(answers[scoring.ANSWER_COLUMNS + ["n_choices"]], labels, who=user.email,
                                phases=phases) if len(_scored(answers, phases)) else None)
    return Report(title=user.email, view=view, progress=numbers, answers=answers, conditions=labels, members=[])


def cohort_members(db: Session, cohort: Cohort) -> list[User]:
    return list(db.scalars(select(User).join(Membership, Membership.user_id == User.id)
                           .where(Membership.cohort_id == cohort.id, User.role == TRAINEE).order_by(User.email)))


def group_report(db: Session, title: str, users: Sequence[User], *, view: str = "tests",
                 deck_id: int | None = None) -> Report:
    """A group's numbers over all its answers (:func:`phenosynth.edu.scoring.cohort_progress`: the pre -> post change
    paired by trainee) and each trainee's own (trainees without an answer in the view are left out)."""
    phases = check_view(view)
    answers = answers_frame(db, user_ids=[u.id for u in users], deck_id=deck_id)
    labels = label_space(db, answers)
    scored = _scored(answers, phases)
    if not len(scored):
        return Report(title=title, view=view, progress=None, answers=answers, conditions=labels, members=[])
    frame = answers[answers["trainee"].isin(set(scored["trainee"]))][scoring.ANSWER_COLUMNS + ["n_choices"]]
    whole, members = scoring.cohort_progress(frame, labels, phases=phases)
    return Report(title=title, view=view, progress=whole, answers=answers, conditions=labels, members=members)


def cohort_report(db: Session, cohort: Cohort, *, view: str = "tests", deck_id: int | None = None) -> Report:
    return group_report(db, cohort.name, cohort_members(db, cohort), view=view, deck_id=deck_id)


EXPORT_TABLES = ("summary", "per_condition", "answers")


def export_table(report: Report, table: str) -> pd.DataFrame:
    """A CSV table of a report: ``summary`` (:func:`scoring.summary_frame`: the trainee, or the cohort's trainees
    then the cohort), ``per_condition`` (:func:`scoring.per_condition_frame`) or ``answers`` (every answer)."""
    if table not in EXPORT_TABLES:
        raise PhenosynthError(f"Unknown export table '{table}' (use: {', '.join(EXPORT_TABLES)}).")
    if table == "answers":
        return report.answers
    results = [*report.members, report.progress] if report.progress is not None else []
    if not results:
        return pd.DataFrame(columns=["who"])
    return scoring.summary_frame(results) if table == "summary" else scoring.per_condition_frame(results)


def export_json(report: Report) -> str:
    """The report as JSON: ``{"view", "conditions", "progress": Progress.to_json(), "members": [...]}``."""
    import json

    def doc(p: scoring.Progress | None) -> object:
        return json.loads(p.to_json()) if p is not None else None

    return json.dumps({"title": report.title, "view": report.view, "conditions": report.conditions,
                       "n_answers_all_phases": len(report.answers), "progress": doc(report.progress),
                       "members": [doc(m) for m in report.members]}, indent=2, ensure_ascii=False)


# --- charts -----------------------------------------------------------------------------------------------------------


def _svg_uri(fig: object) -> str:
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "phenosynth", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")  # type: ignore[attr-defined]
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> tuple[object, object]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


def confusion_chart(confusion: pd.DataFrame) -> str:
    """The confusion matrix as a heat map (counts written in the cells), an SVG data URI."""
    n = len(confusion)
    fig, ax = _figure(1.6 + 0.7 * n, 1.2 + 0.6 * n)
    m = confusion.to_numpy()
    ax.imshow(m, cmap="Blues", vmin=0, vmax=max(int(m.max()), 1))
    ax.set_xticks(range(n), [str(c) for c in confusion.columns], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(c) for c in confusion.index])
    ax.set_xlabel("chosen")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    return _svg_uri(fig)


def reliability_chart(reliability: pd.DataFrame) -> str:
    """Observed share correct against the stated probability, per confidence level (the diagonal: calibrated)."""
    fig, ax = _figure(3.6, 3.4)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="calibrated")
    used = reliability[reliability["n"] > 0]
    ax.plot(used["stated"], used["observed"], marker="o", color="#23395d", label="trainee(s)")
    for _, r in used.iterrows():
        ax.annotate(f"{int(r['confidence'])} (n={int(r['n'])})", (r["stated"], r["observed"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("stated probability (confidence)")
    ax.set_ylabel("observed share correct")
    ax.legend(loc="upper left", fontsize=7)
    return _svg_uri(fig)


def per_condition_chart(per_condition: pd.DataFrame) -> str:
    """Sensitivity and specificity per condition as grouped bars."""
    n = len(per_condition)
    fig, ax = _figure(1.5 + 0.8 * n, 3.0)
    x = np.arange(n)
    ax.bar(x - 0.2, per_condition["sensitivity"].fillna(0), 0.4, label="sensitivity", color="#23395d")
    ax.bar(x + 0.2, per_condition["specificity"].fillna(0), 0.4, label="specificity", color="#8fb3de")
    ax.set_xticks(x, [str(c) for c in per_condition["condition"]], rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower right")
    return _svg_uri(fig)


def charts(p: scoring.Progress) -> dict[str, str]:
    """The page's three charts: ``confusion``, ``reliability``, ``per_condition`` (SVG data URIs)."""
    return {"confusion": confusion_chart(p.confusion), "reliability": reliability_chart(p.reliability),
            "per_condition": per_condition_chart(p.per_condition)}


__all__ = ["answers_frame", "label_space", "trainee_report", "group_report", "cohort_report", "cohort_members",
           "export_table", "export_json", "charts", "Report", "PHASE_OF_KIND", "VIEWS", "EXPORT_TABLES",
           "FRAME_COLUMNS", "check_view"]
