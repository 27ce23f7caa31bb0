"""A statistical shape model of facial landmarks with per-condition phenotypes (pure arrays, no I/O).

1. Generalised Procrustes analysis (:func:`phenosynth.faces.procrustes.generalized_procrustes`): every shape
   ``(K, 2)`` is mapped by a similarity transform onto a reference that is iterated to the normalised mean shape.
2. PCA (scikit-learn) of the aligned shapes of *all* real training faces, keeping ``variance_kept`` of the variance.
3. A condition's phenotype is its mean in PCA-score space; its spread is its own scatter shrunk toward the pooled
   within-condition covariance, ``S_c = l * W_c + (1 - l) * W_pooled`` with ``l = (n_c - 1) / (n_c - 1 + shrinkage)``
   (few photos per condition — ``n_c`` around 4 — give a noisy ``W_c``; a singleton uses ``W_pooled`` alone).
4. New shapes: ``mean_c + scale * N(0, S_c)``, each PCA score clipped to ``clip_sd`` standard deviations of the
   whole population (the usual active-shape-model plausibility limit), mapped back to landmark space.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from phenosynth.errors import PhenosynthError
from phenosynth.faces.procrustes import generalized_procrustes


class ShapeModel:
    """Procrustes + PCA shape model with per-class (condition) Gaussians in score space.

    Fitted attributes: ``reference_ (K, 2)``, ``pca_``, ``scores_ (N, k)``, ``classes_``, ``class_counts_ (C,)``,
    ``class_means_ (C, k)``, ``class_covs_ (C, k, k)``, ``pooled_cov_ (k, k)``, ``to_model_ (N, 3, 3)`` (each
    training shape's own frame -> model frame).
    """

    def __init__(
        self,
        *,
        variance_kept: float = 0.98,
        shrinkage: float = 4.0,
        clip_sd: float = 3.0,
        max_components: int | None = None,
    ) -> None:
        self.variance_kept = variance_kept
        self.shrinkage = shrinkage
        self.clip_sd = clip_sd
        self.max_components = max_components

    def fit(self, shapes: np.ndarray, labels: Sequence[object]) -> "ShapeModel":
        """shapes ``(N, K, 2)`` landmarks of real training faces (any frame), labels ``(N,)``."""
        X = np.asarray(shapes, dtype=np.float64)
        lab = np.asarray([str(v) for v in labels], dtype=object)
        if X.ndim != 3 or X.shape[-1] != 2 or len(lab) != len(X):
            raise ValueError(f"need shapes (N, K, 2) and N labels, got {X.shape} and {len(lab)} labels")
        if len(X) < 2:
            raise PhenosynthError("The shape model needs at least 2 training faces with landmarks.")
        aligned, mats, ref = generalized_procrustes(X)
        flat = aligned.reshape(len(X), -1)
        max_k = min(len(X) - 1, flat.shape[1])
        if self.max_components is not None:
            max_k = min(max_k, int(self.max_components))
        from sklearn.decomposition import PCA  # lazy: sklearn costs ~1 s of every CLI start-up

        # the fewest components that keep variance_kept of the variance (scikit-learn's fractional n_components),
        # at most max_k (the last of N components of N centred shapes carries no variance)
        pca = PCA(n_components=self.variance_kept if self.variance_kept < 1 else max_k, svd_solver="full").fit(flat)
        if pca.n_components_ > max_k:
            pca = PCA(n_components=max_k, svd_solver="full").fit(flat)
        scores = pca.transform(flat)

        classes = sorted(set(lab.tolist()))
        k = scores.shape[1]
        means = np.zeros((len(classes), k))
        scatters = np.zeros((len(classes), k, k))
        counts = np.zeros(len(classes), dtype=int)
        for c, name in enumerate(classes):
            s = scores[lab == name]
            counts[c] = len(s)
            means[c] = s.mean(0)
            d = s - means[c]
            scatters[c] = d.T @ d
        dof = len(X) - len(classes)
        if dof >= 2:
            pooled = scatters.sum(0) / dof
        else:  # (almost) every class a singleton: only between-face variation is observable
            pooled = np.atleast_2d(np.cov(scores, rowvar=False))
        ridge = 1e-10 * max(float(np.trace(pooled)), 1e-12) * np.eye(k)
        covs = np.zeros_like(scatters)
        for c in range(len(classes)):
            n_c = counts[c]
            lam = (n_c - 1) / (n_c - 1 + self.shrinkage) if n_c > 1 else 0.0
            own = scatters[c] / (n_c - 1) if n_c > 1 else np.zeros((k, k))
            covs[c] = lam * own + (1.0 - lam) * pooled + ridge

        self.reference_ = ref
        self.pca_ = pca
        self.scores_ = scores
        self.to_model_ = mats
        self.classes_ = classes
        self.class_counts_ = counts
        self.class_means_ = means
        self.class_covs_ = covs
        self.pooled_cov_ = pooled
        self.n_points_ = X.shape[1]
        return self

    def _class_index(self, label: object) -> int:
        try:
            return self.classes_.index(str(label))
        except ValueError:
            raise PhenosynthError(f"The shape model has no class '{label}'.") from None

    def mean_shape(self, label: object) -> np.ndarray:
        """The condition's phenotype: its mean shape ``(K, 2)`` in the model frame."""
        return self.shapes_from_scores(self.class_means_[self._class_index(label)][None])[0]

    def sample_scores(self, label: object, n: int, rng: np.random.Generator, *, scale: float = 1.0) -> np.ndarray:
        """``(n, k)`` PCA scores drawn from the condition's (shrunk) Gaussian, clipped to plausible shapes."""
        b = self.class_means_[self._class_index(label)] + self.variation_scores(label, n, rng, scale=scale)
        return self.clip_scores(b)

    def variation_scores(self, label: object, n: int, rng: np.random.Generator, *, scale: float = 1.0) -> np.ndarray:
        """``(n, k)`` zero-mean PCA scores drawn from the condition's (shrunk) covariance, times ``scale``: its
        variation without its mean."""
        w, V = np.linalg.eigh(self.class_covs_[self._class_index(label)])
        root = V * np.sqrt(np.clip(w, 0.0, None))
        z = rng.standard_normal((int(n), len(w)))
        return scale * z @ root.T

    def clip_scores(self, scores: np.ndarray) -> np.ndarray:
        """``scores (n, k)`` clipped to ``clip_sd`` population standard deviations per component."""
        limit = self.clip_sd * np.sqrt(self.pca_.explained_variance_)
        return np.clip(scores, -limit, limit)

    def offset_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """PCA scores ``(n, k)`` -> shape offsets ``(n, K, 2)`` from the population mean, in the model frame."""
        return (np.atleast_2d(scores) @ self.pca_.components_).reshape(-1, self.n_points_, 2)

    def shapes_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """PCA scores ``(n, k)`` -> shapes ``(n, K, 2)`` in the model frame."""
        return self.pca_.inverse_transform(np.atleast_2d(scores)).reshape(-1, self.n_points_, 2)

    def sample(self, label: object, n: int, rng: np.random.Generator, *, scale: float = 1.0) -> np.ndarray:
        """``(n, K, 2)`` new shapes of condition ``label`` in the model frame."""
        return self.shapes_from_scores(self.sample_scores(label, n, rng, scale=scale))

    def mahalanobis_to_class(self, scores: np.ndarray, label: object) -> np.ndarray:
        """``(n,)`` Mahalanobis distance of scores ``(n, k)`` from the condition's mean under its covariance."""
        c = self._class_index(label)
        d = np.atleast_2d(scores) - self.class_means_[c]
        sol = np.linalg.solve(self.class_covs_[c], d.T).T
        return np.sqrt(np.einsum("ij,ij->i", d, sol))
