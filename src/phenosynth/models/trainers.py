"""Trainers that are scikit-learn estimators (``BaseEstimator`` + ``ClassifierMixin``: ``__init__`` only stores its
keyword arguments, ``fit`` returns self, learned attributes end in ``_``, so ``sklearn.base.clone`` and
``get_params``/``set_params`` work), registered by name:

- ``probe`` (default): ``StandardScaler``, then multinomial logistic regression (L2, full-batch L-BFGS-B from scipy) on
  cached features. Objective = mean cross-entropy + ||W||^2 / (2 C n), i.e. scikit-learn's ``LogisticRegression(C)``
  for 3+ classes (with 2, the symmetric softmax halves the penalty: ``LogisticRegression(2 C)``); tests/test_trainers.py
  checks they agree. Fitted directly because it is 8-20x faster here. ``fit(..., sample_weight=s)``: the weighted
  mean cross-entropy + ||W||^2 / (2 C sum(s)) after a weighted ``StandardScaler``, i.e. ``LogisticRegression(C)`` with
  the same ``sample_weight`` (an integer weight is the same as repeating the sample).
- ``se-head``: the RDFace head (SE gate d -> d/16 -> d, BatchNorm, Dropout 0.5, Linear) on cached features, AdamW
  lr 1e-4 wd 1e-4, cosine to 1e-6, best-validation checkpoint.
- ``finetune``: the whole backbone + a linear head on aligned crops, same optimiser recipe; GPU when present.
- ``gallery``: no fitting (GestaltMatcher-style matching): ``fit`` stores the L2-normalised training embeddings as
  the gallery; a condition's score is minus the cosine distance of its nearest gallery embedding (or the mean of its
  ``m`` nearest); conditions with no gallery embedding rank last.

Sample weights (``fit(..., sample_weight=)``, e.g. the mixed regime's ``synthetic_weight``): the probe as above; the
epoch-based heads weight each mini-batch's cross-entropy (``sum(s_i l_i) / sum(s_i)``); the gallery has nothing to
weight and refuses them (:func:`check_sample_weight`).

Test-time augmentation: a trainer's ``tta_averages`` says what the training layer averages over the views of an
image: ``"scores"`` (the heads: ``predict_proba`` of each view's features) or ``"embeddings"`` (the gallery: the
L2-normalised embeddings of the views, before matching). ``finetune`` reads crops itself, so it takes ``tta``.

``y`` are integer class indices in ``[0, n_classes)``; ``predict_proba`` returns ``(N, n_classes)`` so classes absent
from the training data still have a column (probability 0), as the N-way label space requires.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_consistent_length
from threadpoolctl import threadpool_limits
from torch import nn

from phenosynth.models.seeding import seeded
from phenosynth.registry import Registry

log = logging.getLogger(__name__)

TRAINERS: Registry[Any] = Registry("trainer")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run small models on ``n`` intra-op threads (tiny ops on 2 busy cores run far faster on one), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _n_classes(X: Any, y: np.ndarray, n_classes: int | None) -> int:
    """The label-space size, after checking ``X``/``y`` agree in length and ``y`` holds indices in ``[0, C)``."""
    check_consistent_length(X, y)
    if len(y) == 0:
        raise ValueError("fit needs at least one training sample")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class indices, not {y.dtype}")
    k = int(n_classes) if n_classes is not None else int(np.max(y)) + 1
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y must hold class indices in [0, {k}), got {int(y.min())}..{int(y.max())}")
    return k


def check_sample_weight(sample_weight: Any, n: int) -> np.ndarray | None:
    """``sample_weight`` as float64 ``(n,)`` (None stays None): finite, non-negative, not all zero.

    >>> check_sample_weight([1, 0.5], 2).tolist()
    [1.0, 0.5]
    """
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have one value per sample, shape ({n},), not {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    if not w.sum() > 0:
        raise ValueError("sample_weight must not be all zero")
    return w


def _standardised(scaler: StandardScaler, X: Any) -> np.ndarray:
    """``scaler.transform(X)`` as float32 (the dtype every feature trainer computes in)."""
    return scaler.transform(np.asarray(X, np.float32)).astype(np.float32, copy=False)


def _proba(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits as float32 (``-inf`` logits get probability 0)."""
    return softmax(logits, axis=1).astype(np.float32, copy=False)


@TRAINERS.register("probe")
class ProbeClassifier(ClassifierMixin, BaseEstimator):
    """``StandardScaler`` + multinomial logistic regression. ``fit(X (n, d), y (n,))``; ``predict_proba(X) -> (N, C)``.

    Learned: ``scaler_``, ``coef_ (k, d)`` / ``intercept_ (k,)`` for the ``k`` classes ``present_`` in training,
    ``solution_`` (the solver's flat vector, what :meth:`warm_start_from` hands on), ``n_iter_``.

    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (20, 5)), rng.normal(3, 1, (20, 5))]).astype(np.float32)
    >>> y = np.repeat([0, 1], 20)
    >>> clf = ProbeClassifier(C=1.0).fit(X, y, n_classes=3)
    >>> clf.predict_proba(X).shape, float((clf.predict(X) == y).mean())
    ((40, 3), 1.0)
    """

    input_kind = "features"
    uses_validation = False  # fit() ignores X_val: folds with the same training set may share the fitted model
    tta_averages = "scores"

    def __init__(self, *, C: float = 1.0, max_iter: int = 100, tol: float = 1e-4, random_state: int = 0) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, *, n_classes: int | None = None, X_val: Any = None,
            y_val: Any = None, sample_weight: Any = None) -> "ProbeClassifier":
        """``sample_weight (n,)``: each sample's weight in the scaler and the loss (module docstring); a class whose
        samples all weigh 0 counts as absent."""
        X = np.asarray(X, np.float32)
        y = np.asarray(y, np.int64)
        self.n_classes_ = _n_classes(X, y, n_classes)
        self.classes_ = np.arange(self.n_classes_)
        sw = check_sample_weight(sample_weight, len(y))
        if sw is not None and (sw == 0).any():  # zero weight = not there (also for the scaler's variance)
            X, y, sw = X[sw > 0], y[sw > 0], sw[sw > 0]
        self.scaler_ = StandardScaler().fit(X, sample_weight=sw)
        self.n_features_in_ = X.shape[1]
        self.present_ = np.unique(y)
        remap = np.full(self.n_classes_, -1, np.int64)
        remap[self.present_] = np.arange(len(self.present_))
        Xs = _standardised(self.scaler_, X)
        n, d = Xs.shape
        k = len(self.present_)
        with threadpool_limits(limits=1 if n * d * k < 3e8 else None):
            # n << d: solve in the n-dim row space (X = U S V^T, W = V W'); exact for L2, and n/d times cheaper.
            if 2 * n <= d:
                Z, Vt = row_space(Xs)
            else:
                Z, Vt = Xs, None
            init = getattr(self, "_warm_start", None)
            if init is not None and init.shape != (Z.shape[1] * k + k,):
                init = None
            W, b, self.n_iter_ = fit_softmax_lbfgs(Z, remap[y], k, C=self.C, tol=self.tol, max_iter=self.max_iter,
                                                   init=init, sample_weight=sw)
            self.solution_ = np.concatenate([W.ravel(), b]).astype(np.float64)  # in the solver's (row-)space
            if Vt is not None:
                W = Vt.T.astype(np.float32) @ W
        self.coef_ = W.T.copy()  # (k, d): rows = classes present in training
        self.intercept_ = b
        return self

    def warm_start_from(self, other: "ProbeClassifier") -> "ProbeClassifier":
        """Start the next :meth:`fit` from ``other``'s solution (same training data, another ``C``): a cheap path
        over a C grid. The optimum does not depend on the start, only the number of iterations does.
        Not a parameter: ``clone`` forgets it, as it forgets everything learned."""
        self._warm_start = getattr(other, "solution_", None)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits ``(N, n_classes)``; classes never seen in training get -inf."""
        Z = _standardised(self.scaler_, X) @ self.coef_.T + self.intercept_
        out = np.full((len(Z), self.n_classes_), -np.inf, np.float32)
        out[:, self.present_] = Z
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _proba(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.decision_function(X), axis=1)


def row_space(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``X (n, d) = Z (n, r) @ Vt (r, d)`` with orthonormal rows of ``Vt`` (r = numerical rank <= n), via the
    eigen-decomposition of the ``n x n`` Gram matrix (cheaper than an SVD when n << d)."""
    G = X.astype(np.float64) @ X.T.astype(np.float64)
    evals, U = np.linalg.eigh(G)
    keep = evals > max(float(evals.max()), 1e-30) * 1e-10
    s = np.sqrt(evals[keep])
    U = U[:, keep]
    Vt = (U / s).T @ X.astype(np.float64)
    return (U * s).astype(np.float32), Vt.astype(np.float32)


def fit_softmax_lbfgs(
    X: np.ndarray, y: np.ndarray, k: int, *, C: float, tol: float = 1e-4, max_iter: int = 100,
    init: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Minimise mean cross-entropy + ||W||^2 / (2 C n) over ``W (d, k)``, ``b (k,)`` with scipy's L-BFGS-B; with
    ``sample_weight`` s: the s-weighted mean cross-entropy + ||W||^2 / (2 C sum(s)) (scikit-learn's scaling, so that
    an integer weight equals repeating the sample).

    Pure and deterministic; ``X (n, d)`` float32, ``y (n,)`` in ``[0, k)``. Returns ``(W, b, n_iter)``.
    """
    from scipy.optimize import fmin_l_bfgs_b
    from scipy.special import logsumexp

    n, d = X.shape
    Y = np.zeros((n, k), np.float32)
    Y[np.arange(n), y] = 1.0
    total = float(n) if sample_weight is None else float(np.sum(sample_weight, dtype=np.float64))
    # each sample's share of the weighted mean (None: the plain mean, computed as before, bit for bit)
    share = None if sample_weight is None else (np.asarray(sample_weight, np.float64) / total).astype(np.float32)
    lam = 1.0 / (C * total)

    def loss_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        W = w[: d * k].reshape(d, k).astype(np.float32)
        b = w[d * k:].astype(np.float32)
        Zl = X @ W + b
        lse = logsumexp(Zl, axis=1, keepdims=True)
        ce = lse[:, 0] - (Zl * Y).sum(1)
        if share is None:
            G = (np.exp(Zl - lse) - Y) / n
            data_loss = float(np.mean(ce))
        else:
            G = (np.exp(Zl - lse) - Y) * share[:, None]
            data_loss = float((ce * share).sum())
        loss = data_loss + 0.5 * lam * float((W * W).sum())
        grad = np.concatenate([(X.T @ G + lam * W).ravel(), G.sum(0)])
        return loss, grad.astype(np.float64)

    x0 = np.zeros(d * k + k) if init is None else np.asarray(init, np.float64)
    w, _, info = fmin_l_bfgs_b(loss_grad, x0, m=10, maxiter=max_iter, pgtol=tol, factr=1e7)
    return w[: d * k].reshape(d, k).astype(np.float32), w[d * k:].astype(np.float32), int(info["nit"])


def _cosine_optimiser(params: Any, lr: float, weight_decay: float, total_steps: int, eta_min: float) -> tuple[Any, Any]:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps), eta_min=eta_min)
    return opt, sched


class SEHead(nn.Module):
    """RDFace head: ``x * sigmoid(W2 relu(W1 x))`` (d -> d/r -> d), BatchNorm, Dropout, Linear -> ``(N, C)``."""

    def __init__(self, dim: int, n_classes: int, *, reduction: int = 16, dropout: float = 0.5) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.gate = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim), nn.Sigmoid())
        self.bn = nn.BatchNorm1d(dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.bn(x * self.gate(x))))


def _top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean()) if len(y) else 0.0


@TRAINERS.register("se-head")
class SEHeadClassifier(ClassifierMixin, BaseEstimator):
    """The RDFace SE head trained on (standardised) cached features; keeps the best-validation epoch.

    ``fit(X (n, d), y, n_classes=C, X_val=..., y_val=...)``; without a validation set the last epoch is kept.
    """

    input_kind = "features"
    tta_averages = "scores"

    def __init__(self, *, epochs: int = 50, lr: float = 1e-4, weight_decay: float = 1e-4, eta_min: float = 1e-6,
                 batch_size: int = 32, reduction: int = 16, dropout: float = 0.5, max_steps: int | None = None,
                 random_state: int = 0) -> None:
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.eta_min = eta_min
        self.batch_size = batch_size
        self.reduction = reduction
        self.dropout = dropout
        self.max_steps = max_steps
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, *, n_classes: int | None = None, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None, sample_weight: Any = None) -> "SEHeadClassifier":
        X = np.asarray(X, np.float32)
        self.n_classes_ = _n_classes(X, np.asarray(y), n_classes)
        self.classes_ = np.arange(self.n_classes_)
        sw = check_sample_weight(sample_weight, len(X))
        self.scaler_ = StandardScaler().fit(X, sample_weight=sw)
        self.n_features_in_ = X.shape[1]
        Xt, yt = torch.from_numpy(_standardised(self.scaler_, X)), torch.as_tensor(np.asarray(y), dtype=torch.long)
        has_val = X_val is not None and len(X_val) > 0
        Xv = torch.from_numpy(_standardised(self.scaler_, X_val)) if has_val else None
        yv = torch.as_tensor(np.asarray(y_val), dtype=torch.long) if has_val else None
        with seeded(self.random_state), torch_threads(1):
            model = SEHead(X.shape[1], self.n_classes_, reduction=self.reduction, dropout=self.dropout)
            gen = torch.Generator().manual_seed(self.random_state)
            self.loss_curve_, self.val_curve_ = _train_loop(
                model, lambda idx: Xt[idx], yt, self, gen, val=(lambda m: _top1(m(Xv), yv)) if has_val else None,
                sample_weight=sw)
        self.model_ = model.eval()
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch_threads(1):
            return self.model_(torch.from_numpy(_standardised(self.scaler_, X))).numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _proba(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.decision_function(X), axis=1)


def _train_loop(model: nn.Module, get_x: Any, y: torch.Tensor, cfg: Any, gen: torch.Generator,
                val: Any = None, device: torch.device | None = None,
                sample_weight: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """Mini-batch AdamW + cosine schedule; restores the best-validation state (first best wins) at the end.
    ``sample_weight``: each batch's loss is the weighted mean cross-entropy ``sum(s_i l_i) / sum(s_i)``."""
    n = len(y)
    weights = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    opt, sched = _cosine_optimiser(model.parameters(), cfg.lr, cfg.weight_decay, total, cfg.eta_min)
    losses: list[float] = []
    val_curve: list[float] = []
    best, best_state, step = -1.0, None, 0
    for _epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2 and n >= 2:  # BatchNorm needs 2 samples; the remainder joins the next epoch's shuffle
                continue
            xb, yb = get_x(idx), y[idx]
            if device is not None:
                xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            if weights is None:
                loss = nn.functional.cross_entropy(model(xb), yb)
            else:
                wb = weights[idx].to(yb.device)
                if not wb.sum() > 0:  # a batch of zero-weight samples teaches nothing
                    continue
                loss = (nn.functional.cross_entropy(model(xb), yb, reduction="none") * wb).sum() / wb.sum()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if step >= total:
                break
        if val is not None:
            model.eval()
            with torch.inference_mode():
                score = float(val(model))
            val_curve.append(score)
            if score > best:
                best, best_state = score, copy.deepcopy(model.state_dict())
        if step >= total:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return losses, val_curve


@TRAINERS.register("finetune")
class FineTuneClassifier(ClassifierMixin, BaseEstimator):
    """Full fine-tune of a backbone + linear head on aligned crops (``X`` = crop paths); GPU when present.

    ``backbone`` is a registry name (built with ``weights``) or an already built backbone module with
    ``forward_features`` and ``spec`` (tests use a tiny one).
    """

    input_kind = "images"
    tta_averages = "scores"

    def __init__(self, *, backbone: Any = "resnet152", weights: str = "default", preprocessing: str = "paper",
                 epochs: int = 10, lr: float = 1e-4, weight_decay: float = 1e-4, eta_min: float = 1e-6,
                 batch_size: int = 32, max_steps: int | None = None, device: str | None = None,
                 tta: Sequence[str] = (), random_state: int = 0) -> None:
        self.backbone = backbone
        self.weights = weights
        self.preprocessing = preprocessing
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.eta_min = eta_min
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.device = device
        self.tta = tta
        self.random_state = random_state

    def _device(self) -> torch.device:
        if self.device:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _load(self, paths: Sequence[str | Path], view: str = "identity") -> torch.Tensor:
        from phenosynth.models.features import load_crop_tensor

        size, mean, std = self.spec_.preprocessing(self.preprocessing)
        return torch.stack([load_crop_tensor(p, size, mean, std, view) for p in paths])

    def fit(self, X: Sequence[str | Path], y: np.ndarray, *, n_classes: int | None = None,
            X_val: Sequence[str | Path] | None = None, y_val: np.ndarray | None = None,
            sample_weight: Any = None) -> "FineTuneClassifier":
        from phenosynth.models.backbones import create_backbone

        self.n_classes_ = _n_classes(X, np.asarray(y), n_classes)
        sw = check_sample_weight(sample_weight, len(X))
        self.classes_ = np.arange(self.n_classes_)
        device = self._device()
        with seeded(self.random_state):
            net = create_backbone(self.backbone, self.weights) if isinstance(self.backbone, str) \
                else copy.deepcopy(self.backbone)
            self.spec_ = net.spec
            with torch.inference_mode():
                size = self.spec_.preprocessing(self.preprocessing)[0]
                dim = int(net.forward_features(torch.zeros(2, 3, size, size)).shape[1])
            model = nn.Sequential(_Features(net), nn.Linear(dim, self.n_classes_)).to(device)
            paths = list(X)
            yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
            has_val = X_val is not None and len(X_val) > 0
            val = None
            if has_val:
                vpaths, yv = list(X_val), torch.as_tensor(np.asarray(y_val), dtype=torch.long)
                val = lambda m: _top1(self._logits(m, vpaths, device), yv)  # noqa: E731
            gen = torch.Generator().manual_seed(self.random_state)
            self.loss_curve_, self.val_curve_ = _train_loop(
                model, lambda idx: self._load([paths[i] for i in idx.tolist()]), yt, self, gen, val=val,
                device=device, sample_weight=sw)
        self.model_ = model.eval()
        self.device_ = device
        return self

    def _logits(self, model: nn.Module, paths: Sequence[str | Path], device: torch.device,
                view: str = "identity") -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for start in range(0, len(paths), self.batch_size):
                out.append(model(self._load(paths[start:start + self.batch_size], view).to(device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.n_classes_)

    def decision_function(self, X: Sequence[str | Path]) -> np.ndarray:
        """Logits of the identity view (the logits averaged over the ``tta`` views when ``tta`` is set)."""
        from phenosynth.models.views import tta_views

        views = tta_views(self.tta)
        logits = [self._logits(self.model_, list(X), self.device_, v).numpy() for v in views]
        return logits[0] if len(logits) == 1 else np.mean(logits, axis=0).astype(np.float32)

    def predict_proba(self, X: Sequence[str | Path]) -> np.ndarray:
        """Softmax probabilities, averaged over the ``tta`` views when ``tta`` is set."""
        from phenosynth.models.views import tta_views

        views = tta_views(self.tta)
        if len(views) == 1:
            return _proba(self.decision_function(X))
        return np.mean([_proba(self._logits(self.model_, list(X), self.device_, v).numpy()) for v in views],
                       axis=0).astype(np.float32)

    def predict(self, X: Sequence[str | Path]) -> np.ndarray:
        return np.argmax(self.decision_function(X), axis=1)


class _Features(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)


def l2_normalised(X: Any) -> np.ndarray:
    """Rows of ``X`` scaled to unit length (float32; an all-zero row stays zero).

    >>> l2_normalised(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    X = np.asarray(X, np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


def condition_distances(queries: np.ndarray, gallery: np.ndarray, gallery_y: np.ndarray, n_classes: int,
                        m: int = 1) -> np.ndarray:
    """``(N, n_classes)``: per query and condition, the cosine distance (1 - cosine similarity) of the condition's
    nearest gallery embedding (``m`` > 1: the mean of its ``m`` nearest, or of all it has when fewer); ``inf`` for a
    condition with no gallery embedding. ``queries``/``gallery`` must be L2-normalised rows. Pure.

    >>> g = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]); q = np.array([[1.0, 0.0]])
    >>> condition_distances(q, g, np.array([0, 1, 1]), 3).round(2).tolist()
    [[0.0, 0.4, inf]]
    >>> condition_distances(q, g, np.array([0, 1, 1]), 3, m=2).round(2).tolist()
    [[0.0, 0.7, inf]]
    """
    if m < 1:
        raise ValueError(f"m must be at least 1, not {m}")
    D = 1.0 - np.asarray(queries, np.float64) @ np.asarray(gallery, np.float64).T
    out = np.full((len(D), n_classes), np.inf)
    gallery_y = np.asarray(gallery_y)
    for c in np.unique(gallery_y):
        Dc = D[:, gallery_y == c]
        k = min(m, Dc.shape[1])
        nearest = Dc.min(1) if k == 1 else np.sort(Dc, axis=1)[:, :k].mean(1)
        out[:, int(c)] = nearest
    return out


@TRAINERS.register("gallery")
class GalleryMatcher(ClassifierMixin, BaseEstimator):
    """GestaltMatcher-style matching: no training. ``fit(X (n, d), y)`` stores the L2-normalised rows as the gallery;
    a query's score for a condition is minus the cosine distance of the condition's nearest gallery embedding (the
    first hit of that condition in the ranked gallery), or minus the mean distance of its ``m`` nearest.

    ``decision_function(X) -> (N, C)``: ``-distance`` in ``[-2, 0]``; ``-inf`` for conditions with no gallery
    embedding. ``predict_proba(X) -> (N, C)``: the same ranking as finite scores in ``[0, 1]``
    (``1 - distance / 2``; 0 for conditions with no gallery embedding) -- condition scores, not normalised
    probabilities, so that the top-k metrics and ensemble averages can use them like the heads' probabilities.
    The label space is ``n_classes`` (every condition of the study, with or without gallery photos): a condition
    whose photos are only in the gallery (no training photos anywhere else) is matched like any other.

    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]]); m = GalleryMatcher().fit(X, np.array([0, 1]), n_classes=3)
    >>> m.decision_function(np.array([[2.0, 0.1]])).astype(float).round(3).tolist()
    [[-0.001, -0.95, -inf]]
    """

    input_kind = "features"
    uses_validation = False
    tta_averages = "embeddings"

    def __init__(self, *, m: int = 1, random_state: int = 0) -> None:
        self.m = m
        self.random_state = random_state  # unused (nothing random); kept so every trainer takes a seed

    def fit(self, X: np.ndarray, y: np.ndarray, *, n_classes: int | None = None, X_val: Any = None,
            y_val: Any = None, sample_weight: Any = None) -> "GalleryMatcher":
        if sample_weight is not None:
            raise ValueError("the gallery fits nothing, so sample weights do not apply (every gallery image counts)")
        if int(self.m) < 1:
            raise ValueError(f"m must be at least 1, not {self.m}")
        from sklearn.utils.validation import check_array

        X = check_array(X, dtype=np.float32)
        y = np.asarray(y, np.int64)
        self.n_classes_ = _n_classes(X, y, n_classes)
        self.classes_ = np.arange(self.n_classes_)
        self.gallery_ = l2_normalised(X)
        self.gallery_y_ = y
        self.n_features_in_ = self.gallery_.shape[1]
        self.present_ = np.unique(y)
        return self

    def distances(self, X: np.ndarray) -> np.ndarray:
        """``(N, C)`` cosine distances per condition (:func:`condition_distances`; ``inf``: not in the gallery)."""
        from sklearn.utils.validation import check_array, check_is_fitted

        check_is_fitted(self, "gallery_")
        X = check_array(X, dtype=np.float32)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but the gallery has {self.n_features_in_}")
        return condition_distances(l2_normalised(X), self.gallery_, self.gallery_y_, self.n_classes_, int(self.m))

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return (-self.distances(X)).astype(np.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        d = self.distances(X)
        return np.where(np.isfinite(d), 1.0 - np.clip(d, 0.0, 2.0) / 2.0, 0.0).astype(np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.decision_function(X), axis=1)
