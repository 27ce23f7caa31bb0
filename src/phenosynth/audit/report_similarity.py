"""How alike are the VLM phenotype reports of synthetic and real faces of one condition (RDFace's check), with the two
baselines that make the number interpretable.

RDFace reports one number: the mean similarity of a synthetic face's report to the reports of real faces of the same
condition. Alone it says little (two reports of *any* faces share most of their words); here it stands beside

- **real↔real, same condition**: reports of two real photos of the condition, of *different* subjects (what the
  synthetic↔real number would be if the generator drew new patients as alike as real patients are), and
- **real↔real, other condition**: reports of real photos of this condition against those of the other conditions
  (the floor: how alike two reports are when the phenotype differs).

A synthetic↔real value near the same-condition baseline and above the other-condition one says the reports describe
the condition's phenotype; one at the other-condition floor says they do not. A synthetic image is never compared
with its own parent photos (a warp of a photo is described like that photo: it would inflate the number).

Two similarity measures: TF-IDF cosine (scikit-learn, always available) and the cosine of a sentence embedding (any
sentence-transformers model from a local folder; :func:`load_sentence_embedder`). Everything here is a pure function
of the reports, except the embedder's loader.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from phenosynth.errors import PhenosynthError

TFIDF = "tfidf"
EMBEDDING = "embedding"
OVERALL = "overall"
#: Columns :func:`compare_reports` reads: one row per report (a synthetic image or a real training photo).
REPORT_COLUMNS = ("image_id", "label", "subject", "synthetic", "parents", "text")

#: Texts -> L2-normalised embeddings ``(n, d)``.
Encoder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class ReportSimilarity:
    """One condition's (or ``overall``'s) mean report similarities by one measure; ``n_pairs_*`` count the pairs."""

    condition: str
    method: str
    synthetic_real: float  # RDFace's number: synthetic vs real reports of the same condition
    real_real_same: float  # baseline: real vs real, same condition, different subjects
    real_real_other: float  # baseline: real of this condition vs real of the others
    n_synthetic: int
    n_real: int
    n_pairs_synthetic_real: int
    n_pairs_same: int
    n_pairs_other: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tfidf_similarity(texts: list[str]) -> np.ndarray:
    """Cosine similarity ``(n, n)`` of the texts' TF-IDF vectors (English stop words removed, sublinear term
    frequency), fit on these texts.

    >>> S = tfidf_similarity(["wide nasal bridge", "wide nasal bridge, short philtrum", "small ears"])
    >>> bool(S[0, 1] > S[0, 2]), float(S[0, 0])
    (True, 1.0)
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        X = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform(texts)
    except ValueError:  # no word left (empty reports or stop words only)
        return np.full((len(texts), len(texts)), np.nan)
    return np.asarray((X @ X.T).toarray(), dtype=np.float64)


def embedding_similarity(texts: list[str], encode: Encoder) -> np.ndarray:
    """Cosine similarity ``(n, n)`` of the texts' sentence embeddings."""
    E = np.asarray(encode(texts), dtype=np.float64)
    E = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    return E @ E.T


def _mean(S: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    n = int(mask.sum())
    return (float(S[mask].mean()) if n else float("nan")), n


def compare_reports(reports: pd.DataFrame, similarity: np.ndarray, method: str) -> list[ReportSimilarity]:
    """Per condition of the synthetic reports (sorted), then ``overall`` (all pairs pooled): the mean similarity of
    synthetic↔real reports of the same condition beside the real↔real baselines.

    Args:
        reports: one row per report, columns :data:`REPORT_COLUMNS` (``synthetic`` bool; ``parents``: the image ids
            a synthetic image was made from, never compared with it; ``subject``: the real photo's person).
        similarity: ``(n, n)`` similarity of the reports' texts in row order (:func:`tfidf_similarity`, ...).
        method: the measure's name, carried into the rows.
    """
    label = reports["label"].astype(str).to_numpy()
    subject = reports["subject"].astype(str).to_numpy()
    syn = reports["synthetic"].to_numpy(dtype=bool)
    real = ~syn
    ids = reports["image_id"].astype(str).to_numpy()
    position = {i: k for k, i in enumerate(ids)}
    own_parent = np.zeros((len(ids), len(ids)), dtype=bool)
    for row, (parents, is_syn) in enumerate(zip(reports["parents"], syn)):
        cols = [position[p] for p in (parents if is_syn and parents is not None else ()) if p in position]
        own_parent[row, cols] = True
    same_label = label[:, None] == label[None, :]
    upper = np.triu(np.ones((len(ids), len(ids)), dtype=bool), k=1)
    real_pair = real[:, None] & real[None, :]
    syn_real = syn[:, None] & real[None, :] & same_label & ~own_parent
    real_same = real_pair & same_label & (subject[:, None] != subject[None, :]) & upper
    real_other = real_pair & ~same_label

    rows = []
    for cond in [*sorted(set(label[syn])), OVERALL]:
        here = np.ones(len(ids), bool) if cond == OVERALL else label == cond
        sr, n_sr = _mean(similarity, syn_real & here[:, None])
        rs, n_rs = _mean(similarity, real_same & here[:, None])
        other = real_other & upper if cond == OVERALL else real_other & here[:, None]
        ro, n_ro = _mean(similarity, other)
        rows.append(ReportSimilarity(cond, method, sr, rs, ro, int((syn & here).sum()), int((real & here).sum()),
                                     n_sr, n_rs, n_ro))
    return rows


def load_sentence_embedder(path: str | Path) -> Encoder:
    """The encoder of the sentence-transformers model saved in folder ``path`` (no download: a missing folder is an
    error naming it). Needs the optional extra ``pip install 'phenosynth[vlm]'``."""
    path = Path(path)
    if not path.is_dir():
        raise PhenosynthError(f"Sentence-embedding model folder not found: {path}. Give the folder of a "
                              "sentence-transformers model (SentenceTransformer.save), or leave --vlm-embedder out "
                              "(TF-IDF only).")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise PhenosynthError("The sentence embedding needs sentence-transformers: pip install 'phenosynth[vlm]'") \
            from None
    try:
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise PhenosynthError(f"Cannot load a sentence-transformers model from {path}: {exc}") from None

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False), dtype=np.float64)

    return encode


def similarity_tables(reports: pd.DataFrame, encode: Encoder | None = None) -> list[ReportSimilarity]:
    """:func:`compare_reports` by TF-IDF, and by the sentence embedding when ``encode`` is given."""
    texts = reports["text"].astype(str).tolist()
    out = compare_reports(reports, tfidf_similarity(texts), TFIDF)
    if encode is not None:
        out += compare_reports(reports, embedding_similarity(texts, encode), EMBEDDING)
    return out


__all__ = ["ReportSimilarity", "compare_reports", "tfidf_similarity", "embedding_similarity", "similarity_tables",
           "load_sentence_embedder", "REPORT_COLUMNS", "TFIDF", "EMBEDDING", "OVERALL"]
