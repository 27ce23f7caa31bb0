"""Which synthetic images go into a training set: selection strategies (a registry of pure functions) and the
workspace façade :func:`select_for_training`.

Every strategy takes a *candidates* frame with columns ``image_id``, ``label`` and (for score-based strategies)
``rank_score`` — one row per usable, ranked synthetic image — and returns a list of image_ids:

- ``top-per-class`` (the paper): the best-scored images of each class; a total ``n`` is spread over the classes as
  evenly as their availability allows.
- ``top-global`` (what the RDFace code does): the global top-``n`` over all classes; a class whose images score
  lower may get few or none.
- ``random`` (the ablation the papers lack): a seeded, class-stratified random draw with the same per-class counts
  as ``top-per-class``.
- ``diverse``: per class, walk the images in rank order and skip one that is too similar to an image already chosen
  for its class (cosine of representation vectors centred on the class mean); skipped images only fill a class's
  quota when there are not enough dissimilar ones. It needs the representation vectors: without them it raises
  (never a silent fallback).
- ``diverse-score``: the same walk with distance in score space (images with nearly the same score count as
  near-duplicates): what to ask for explicitly when there are no representation vectors.

Ties in score are broken by ``image_id`` (ascending), so the result never depends on row order. The pure strategies
take every candidate (and log it) when asked for more than exist; the workspace façade :func:`select_for_training`
refuses that with :class:`NotEnoughSyntheticError` (via :func:`check_n_available`, the one check of "is n
available" that ``train`` and ``study`` use) unless ``allow_fewer`` is set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenosynth.errors import PhenosynthError
from phenosynth.registry import Registry
from phenosynth.synth.ranking_table import DEFAULT_REPRESENTATION, RANKING_FILE, load_ranking

log = logging.getLogger(__name__)

#: ``fn(candidates, n, *, per_class, seed, vectors) -> list[image_id]``
SelectionFn = Callable[..., list[str]]


@dataclass(frozen=True)
class SelectionStrategy:
    """A registered strategy: the pure function plus what it needs from the workspace."""

    name: str
    select: SelectionFn
    needs_scores: bool
    uses_vectors: bool = False


SELECTION_STRATEGIES: Registry[SelectionStrategy] = Registry("selection strategy")


def _register(name: str, *, needs_scores: bool, uses_vectors: bool = False) -> Callable[[SelectionFn], SelectionFn]:
    def decorator(fn: SelectionFn) -> SelectionFn:
        strategy = SelectionStrategy(name, fn, needs_scores, uses_vectors)
        SELECTION_STRATEGIES.register(name)(lambda: strategy)
        return fn

    return decorator


def get_strategy(name: str) -> SelectionStrategy:
    """The registered strategy ``name`` (unknown names raise, listing close matches)."""
    return SELECTION_STRATEGIES.create(name)


def strategy_names() -> list[str]:
    return SELECTION_STRATEGIES.names()


class NotEnoughSyntheticError(PhenosynthError):
    """An n asks for more synthetic images than selection can give, and fewer were not allowed."""


def selectable_count(counts: Mapping[str, int], *, per_class: bool) -> int:
    """The largest n selection can honour from ``counts`` (label -> candidates; every real class, 0 where none):
    the number of candidates, or with ``per_class`` (n per class) the fewest any class has.

    >>> selectable_count({"a": 4, "b": 2}, per_class=False), selectable_count({"a": 4, "b": 2}, per_class=True)
    (6, 2)
    """
    values = [int(v) for v in counts.values()]
    if per_class:
        return min(values, default=0)
    return sum(values)


def check_n_available(n: int | None, available: Mapping[str, int], *, per_class: bool = False,
                      allow_fewer: bool = False) -> None:
    """Refuse an ``n`` larger than what can be selected: ``available`` maps where (``"fold 0"``, ...) to
    :func:`selectable_count` there. ``n=None`` ("all") and ``allow_fewer`` never raise (a shortfall is logged).

    >>> check_n_available(5, {"fold 0": 6, "fold 1": 5})
    >>> check_n_available(6, {"fold 0": 6, "fold 1": 5})
    Traceback (most recent call last):
    ...
    phenosynth.synth.selection.NotEnoughSyntheticError: n = 6 synthetic images asked for, but only 5 are available in fold 1 (fold 0: 6, fold 1: 5; counting usable, ranked synthetic images of a real class; a fold leaves out the children of its validation photos). Lower n (--n-synthetic, or the n values under regimes: in a study spec), generate more (phenosynth generate -w WS --generator NAME --per-class K), or allow fewer (--allow-fewer, or allow_fewer: true in a study spec) to train on what there is.
    """
    if n is None:
        return
    short = {where: a for where, a in available.items() if int(n) > int(a)}
    if not short:
        return
    what = "synthetic images per class" if per_class else "synthetic images"
    fewest = min(short.values())
    places = ", ".join(w for w, a in short.items() if a == fewest)
    if allow_fewer:
        log.warning("n = %d %s asked for, but only %d are available in %s: training on fewer (allow_fewer).",
                    n, what, fewest, places)
        return
    counts = ", ".join(f"{w}: {a}" for w, a in available.items()) + "; " if len(available) > 1 else ""
    per = " in the class with the fewest" if per_class else ""
    raise NotEnoughSyntheticError(
        f"n = {n} {what} asked for, but only {fewest} are available{per} in {places} ({counts}counting usable, ranked "
        "synthetic images of a real class; a fold leaves out the children of its validation photos). Lower n "
        "(--n-synthetic, or the n values under regimes: in a study spec), generate more (phenosynth generate -w WS "
        "--generator NAME --per-class K), or allow fewer (--allow-fewer, or allow_fewer: true in a study spec) to "
        "train on what there is."
    )


# --- pure helpers ---------------------------------------------------------------------------------------------------


def allocate_per_class(available: Mapping[str, int], n: int) -> dict[str, int]:
    """Spread ``n`` images over classes as evenly as their availability allows (water-filling).

    Classes with fewer images than an even share give all they have; the rest is shared among the others. Leftover
    units after an even split go to classes in label order. Asking for more than the total available returns every
    class's full availability.

    >>> allocate_per_class({"a": 10, "b": 2, "c": 10}, 12)
    {'a': 5, 'b': 2, 'c': 5}
    >>> allocate_per_class({"a": 3, "b": 3}, 5)
    {'a': 3, 'b': 2}
    """
    if n < 0:
        raise PhenosynthError(f"The number of images to select must be >= 0 (got {n}).")
    quota = {label: 0 for label in sorted(available)}
    remaining = int(n)
    open_labels = [label for label in quota if available[label] > 0]
    while remaining > 0 and open_labels:
        share, extra = divmod(remaining, len(open_labels))
        if share == 0:  # fewer units than classes: one each, in label order
            for label in open_labels[:extra]:
                quota[label] += 1
            remaining = 0
            break
        still_open = []
        for label in open_labels:
            take = min(share, available[label] - quota[label])
            quota[label] += take
            remaining -= take
            if quota[label] < available[label]:
                still_open.append(label)
        open_labels = still_open
    return quota


def _ordered(candidates: pd.DataFrame) -> pd.DataFrame:
    """Candidates by descending score, ties by image_id."""
    return candidates.sort_values(["rank_score", "image_id"], ascending=[False, True], kind="mergesort")


def _check_candidates(candidates: pd.DataFrame, *, needs_scores: bool) -> pd.DataFrame:
    need = ["image_id", "label"] + (["rank_score"] if needs_scores else [])
    missing = [c for c in need if c not in candidates.columns]
    if missing:
        raise PhenosynthError(f"Selection candidates lack the column(s) {missing}; they need {need}.")
    out = candidates.reset_index(drop=True)
    if out["image_id"].duplicated().any():
        raise PhenosynthError("Selection candidates contain a duplicated image_id; pass one row per image.")
    if needs_scores and out["rank_score"].isna().any():
        raise PhenosynthError("Some selection candidates have no rank_score; drop unranked images first.")
    out = out.assign(image_id=out["image_id"].astype(str), label=out["label"].astype(str))
    return out


def _quotas(candidates: pd.DataFrame, n: int, per_class: bool) -> dict[str, int]:
    available = candidates.groupby("label").size().to_dict()
    total_available = int(sum(available.values()))
    if per_class:
        quota = {label: min(int(n), int(a)) for label, a in sorted(available.items())}
        short = {label: a for label, a in available.items() if a < n}
        if short:
            log.warning(
                "Asked for %d synthetic images per class; %d class(es) have fewer and give all they have: %s",
                n, len(short), ", ".join(f"{k} ({v})" for k, v in sorted(short.items())[:10]),
            )
        return quota
    if n > total_available:
        log.warning("Asked for %d synthetic images, only %d are available: taking all of them.", n, total_available)
    return allocate_per_class(available, n)


# --- strategies -----------------------------------------------------------------------------------------------------


@_register("top-per-class", needs_scores=True)
def select_top_per_class(
    candidates: pd.DataFrame, n: int, *, per_class: bool = False, seed: int = 0, vectors: np.ndarray | None = None
) -> list[str]:
    """The best-scored images of each class (``n`` per class, or a total spread evenly over classes).

    Returned in descending score order (ties by image_id).
    """
    cand = _ordered(_check_candidates(candidates, needs_scores=True))
    quota = _quotas(cand, n, per_class)
    rank_in_class = cand.groupby("label").cumcount()
    keep = rank_in_class < cand["label"].map(quota).fillna(0).astype(int)
    return cand.loc[keep, "image_id"].tolist()


@_register("top-global", needs_scores=True)
def select_top_global(
    candidates: pd.DataFrame, n: int, *, per_class: bool = False, seed: int = 0, vectors: np.ndarray | None = None
) -> list[str]:
    """The global top-``n`` over all classes (with ``per_class``, ``n`` x number of classes), best first."""
    cand = _ordered(_check_candidates(candidates, needs_scores=True))
    total = int(n) * cand["label"].nunique() if per_class else int(n)
    if total < 0:
        raise PhenosynthError(f"The number of images to select must be >= 0 (got {n}).")
    if total > len(cand):
        log.warning("Asked for %d synthetic images, only %d are available: taking all of them.", total, len(cand))
    return cand["image_id"].head(total).tolist()


@_register("random", needs_scores=False)
def select_random(
    candidates: pd.DataFrame, n: int, *, per_class: bool = False, seed: int = 0, vectors: np.ndarray | None = None
) -> list[str]:
    """A seeded random draw, stratified by class with the same per-class counts as ``top-per-class``.

    The result depends only on ``seed`` and the set of candidates (not their row order); returned sorted by
    (label, image_id).
    """
    cand = _check_candidates(candidates, needs_scores=False).sort_values(["label", "image_id"], kind="mergesort")
    quota = _quotas(cand, n, per_class)
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for label, ids in cand.groupby("label", sort=True)["image_id"]:
        k = quota.get(str(label), 0)
        if k:
            picked = rng.choice(len(ids), size=k, replace=False)
            chosen.extend(sorted(ids.iloc[picked].tolist()))
    return chosen


def _greedy_diverse(
    order: np.ndarray, similarity: np.ndarray, quota: int, threshold: float
) -> list[int]:
    """Indices (into ``order``'s index space) of a greedy non-redundant pick.

    order: (m,) candidate indices, best first; similarity: (m, m) in that index space (higher = more alike).
    Walk in order, keep one unless it is more similar than ``threshold`` to any kept; then fill the quota from the
    skipped ones in rank order.
    """
    kept: list[int] = []
    skipped: list[int] = []
    for i in order:
        if len(kept) >= quota:
            break
        if kept and float(similarity[i, kept].max()) > threshold:
            skipped.append(int(i))
        else:
            kept.append(int(i))
    if len(kept) < quota:
        rest = [int(i) for i in order if int(i) not in set(kept)]
        kept.extend(rest[: quota - len(kept)])
    return kept


def _select_diverse(cand: pd.DataFrame, n: int, per_class: bool, vectors: np.ndarray | None,
                    redundancy_quantile: float) -> list[str]:
    """The greedy walk of ``diverse`` (``vectors`` given: cosine of class-centred vectors) and ``diverse-score``
    (``vectors`` None: ``-|score_i - score_j|``)."""
    quota = _quotas(cand, n, per_class)
    chosen_rows: list[int] = []
    for label, group in cand.groupby("label", sort=True):
        k = quota.get(str(label), 0)
        if k == 0:
            continue
        group = _ordered(group)
        rows = group.index.to_numpy()
        m = len(rows)
        if vectors is not None:
            v = vectors[rows] - vectors[rows].mean(axis=0, keepdims=True)
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            sim = v @ v.T
        else:
            s = group["rank_score"].to_numpy(dtype=np.float64)
            sim = -np.abs(s[:, None] - s[None, :])
        if m > 1:
            off = sim[~np.eye(m, dtype=bool)]
            threshold = float(np.quantile(off, redundancy_quantile))
        else:
            threshold = np.inf
        picked = _greedy_diverse(np.arange(m), sim, k, threshold)
        chosen_rows.extend(rows[picked].tolist())
    out = _ordered(cand.loc[chosen_rows])
    return out["image_id"].tolist()


@_register("diverse", needs_scores=True, uses_vectors=True)
def select_diverse(
    candidates: pd.DataFrame,
    n: int,
    *,
    per_class: bool = False,
    seed: int = 0,
    vectors: np.ndarray | None = None,
    redundancy_quantile: float = 0.9,
) -> list[str]:
    """Top-ranked per class, skipping images too similar to ones already chosen for the class.

    vectors: (N, d) representation vectors aligned with ``candidates`` rows (required: without them this raises;
    ``diverse-score`` is the explicit score-space variant). Similarity is the cosine between vectors centred on the
    class mean. An image is redundant when its similarity to a chosen one is above the class's
    ``redundancy_quantile`` of pairwise similarities (scale-free, so it works for every representation). Per-class
    counts are those of ``top-per-class``; returned best first.
    """
    cand = _check_candidates(candidates, needs_scores=True)
    if vectors is None:
        raise PhenosynthError(
            "diverse selection needs the representation vectors of the candidates, and none were given. Use "
            "--selection diverse-score to judge similarity by rank score instead."
        )
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) != len(cand):
        raise PhenosynthError(
            f"diverse selection needs one vector per candidate: got shape {vectors.shape} for {len(cand)} rows."
        )
    return _select_diverse(cand, n, per_class, vectors, redundancy_quantile)


@_register("diverse-score", needs_scores=True)
def select_diverse_by_score(candidates: pd.DataFrame, n: int, *, per_class: bool = False, seed: int = 0,
                            vectors: np.ndarray | None = None, redundancy_quantile: float = 0.9) -> list[str]:
    """``diverse`` with similarity ``-|score_i - score_j|``: images with nearly the same rank score count as
    near-duplicates (no representation vectors needed). Per-class counts are those of ``top-per-class``."""
    cand = _check_candidates(candidates, needs_scores=True)
    return _select_diverse(cand, n, per_class, None, redundancy_quantile)


def select(
    candidates: pd.DataFrame,
    strategy: str,
    n: int,
    *,
    per_class: bool = False,
    seed: int = 0,
    vectors: np.ndarray | None = None,
) -> list[str]:
    """Run the registered ``strategy`` on a candidates frame (pure; see the module docstring)."""
    s = get_strategy(strategy)
    return s.select(candidates, int(n), per_class=per_class, seed=seed, vectors=vectors if s.uses_vectors else None)


# --- workspace façade -----------------------------------------------------------------------------------------------



def selection_candidates(
    ws,  # noqa: ANN001 (phenosynth.data.Workspace)
    manifest: pd.DataFrame,
    *,
    strategy: str,
    representation: str | None = None,
    warn_unranked: bool = True,
) -> pd.DataFrame:
    """The images :func:`select_for_training` chooses from: ``image_id, label`` (+ ``rank_score`` for score-based
    strategies, unranked images left out and logged), one row per usable synthetic image of a real class.

    ``warn_unranked=False`` logs the unranked images at DEBUG only: for callers that select once per fold and have
    warned once for the whole manifest (:func:`phenosynth.training.cell.warn_unranked`).

    Raises :class:`PhenosynthError` when a strategy needs scores and none are stored (run ``phenosynth rank``).
    """
    from phenosynth.data.manifest import real_classes, synthetic

    chosen_strategy = get_strategy(strategy)
    synth = synthetic(manifest)
    synth = synth[synth["label"].isin(real_classes(manifest))]
    candidates = synth[["image_id", "label"]].astype(str).reset_index(drop=True)
    if candidates.empty or not chosen_strategy.needs_scores:
        return candidates

    ranking = load_ranking(ws, representation)
    if ranking.empty:
        rep = representation or DEFAULT_REPRESENTATION
        raise PhenosynthError(
            f"Selection '{strategy}' needs rank scores, and none are stored for representation '{rep}' in "
            f"{ws.root / RANKING_FILE}. Run first: phenosynth rank -w {ws.root} --representation {rep}"
        )
    rep = str(ranking["representation"].iloc[0])
    scored = candidates.merge(ranking[["image_id", "rank_score"]], on="image_id", how="left")
    unranked = scored["rank_score"].isna()
    if unranked.any():
        (log.warning if warn_unranked else log.debug)(
            "%d of %d synthetic images have no '%s' rank score (no face found, or made after the last "
            "`phenosynth rank`) and are left out of selection.", int(unranked.sum()), len(scored), rep,
        )
    scored = scored[~unranked].reset_index(drop=True)
    if scored.empty:
        raise PhenosynthError(
            f"None of the synthetic images has a '{rep}' rank score. Run: phenosynth rank -w {ws.root} "
            f"--representation {rep}"
        )
    return scored


def candidate_counts(manifest: pd.DataFrame, candidates: pd.DataFrame) -> dict[str, int]:
    """label -> number of candidates, for every real class (0 where a class has none)."""
    from phenosynth.data.manifest import real_classes

    have = candidates["label"].value_counts() if len(candidates) else pd.Series(dtype=int)
    return {c: int(have.get(c, 0)) for c in real_classes(manifest)}


def select_for_training(
    ws,  # noqa: ANN001 (phenosynth.data.Workspace)
    manifest: pd.DataFrame,
    *,
    strategy: str,
    n: int | None,
    per_class: bool = False,
    seed: int = 0,
    representation: str | None = None,
    allow_fewer: bool = False,
    where: str = "the workspace",
    detector: str | None = None,
    landmarker: str | None = None,
    warn_unranked: bool = True,
) -> list[str]:
    """The image_ids of the synthetic images to train on (``n=None``: every candidate).

    Candidates (:func:`selection_candidates`) are the manifest's usable synthetic images whose label is a real class
    (``real_classes``). Score-based strategies use the scores stored by ``phenosynth rank`` in
    ``WS/ranking.parquet`` for ``representation`` (default: the one stored, ``rdface25`` when several); unranked
    images (no face found, or generated after the last ``rank``) are left out and logged. ``random`` needs no
    scores. ``diverse`` also needs the representation vectors (faces of ``detector``/``landmarker``, resolved by
    :func:`phenosynth.faces.facepass.resolve_face_settings`): when some candidate has none it raises, naming
    ``diverse-score`` (score-space distance) as the explicit alternative. ``warn_unranked``: see
    :func:`selection_candidates`.

    Raises :class:`NotEnoughSyntheticError` when ``n`` is more than the candidates (``where`` names the manifest
    in the message, e.g. ``"fold 2"``) unless ``allow_fewer``; :class:`PhenosynthError` when a strategy needs scores
    and none are stored (run ``phenosynth rank``).
    """
    chosen_strategy = get_strategy(strategy)
    candidates = selection_candidates(ws, manifest, strategy=strategy, representation=representation,
                                      warn_unranked=warn_unranked)
    if candidates.empty:
        log.warning("The manifest has no usable synthetic images of a real class: nothing to select.")
        return []
    check_n_available(n, {where: selectable_count(candidate_counts(manifest, candidates), per_class=per_class)},
                      per_class=per_class, allow_fewer=allow_fewer)
    if n is None:
        n, per_class = len(candidates), False
    if not chosen_strategy.needs_scores:
        return chosen_strategy.select(candidates, int(n), per_class=per_class, seed=seed)
    vectors = None
    if chosen_strategy.uses_vectors:
        rep = str(load_ranking(ws, representation)["representation"].iloc[0])
        vectors = _candidate_vectors(ws, candidates["image_id"].tolist(), rep, detector, landmarker)
    return chosen_strategy.select(candidates, int(n), per_class=per_class, seed=seed, vectors=vectors)


def _candidate_vectors(ws, image_ids: Sequence[str], representation: str, detector: str | None = None,  # noqa: ANN001
                       landmarker: str | None = None) -> np.ndarray:
    """Representation vectors for ``image_ids`` (row-aligned); raises :class:`PhenosynthError` when they cannot be
    computed or some image has none (``diverse`` never falls back silently)."""
    from phenosynth.faces.facepass import FaceSettingsError
    from phenosynth.synth.ranking import representation_vectors

    hint = ("; or choose --selection diverse-score to judge similarity by rank score instead (no vectors "
            "needed).")
    try:
        ids, X = representation_vectors(ws, list(image_ids), representation, detector=detector,
                                        landmarker=landmarker)
    except FaceSettingsError:
        raise  # several face settings and none chosen: the user must choose, not another strategy
    except ImportError as exc:
        raise PhenosynthError(f"diverse selection needs '{representation}' vectors, which cannot be computed here "
                              f"({exc}){hint}") from None
    except PhenosynthError as exc:
        raise PhenosynthError(f"diverse selection needs '{representation}' vectors: {exc}{hint}") from None
    pos = {i: k for k, i in enumerate(ids)}
    missing = [i for i in image_ids if i not in pos]
    if missing:
        raise PhenosynthError(
            f"diverse selection needs a '{representation}' vector of every candidate, and {len(missing)} of "
            f"{len(image_ids)} have none (no face in faces.parquet, e.g. {missing[0]}). Run: phenosynth faces -w "
            f"{ws.root}{hint}"
        )
    return X[[pos[i] for i in image_ids]]
