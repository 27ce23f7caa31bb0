"""The trainers are scikit-learn estimators: ``clone`` and ``get_params``/``set_params`` work on each, the contract
checks of ``sklearn.utils.estimator_checks`` pass, and the fast L-BFGS probe reaches ``LogisticRegression``'s
optimum."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks
from sklearn.utils.validation import check_is_fitted

from phenosynth.models.trainers import TRAINERS, FineTuneClassifier, GalleryMatcher, ProbeClassifier, SEHeadClassifier

#: One instance of every registered trainer, each with a non-default value for every parameter it has.
CONFIGURED = {
    "probe": ProbeClassifier(C=0.5, max_iter=50, tol=1e-6, random_state=7),
    "se-head": SEHeadClassifier(epochs=3, lr=1e-2, weight_decay=0.0, eta_min=0.0, batch_size=8, reduction=4,
                                dropout=0.1, max_steps=20, random_state=7),
    "finetune": FineTuneClassifier(backbone="resnet18", weights="none", preprocessing="native", epochs=2, lr=1e-3,
                                   weight_decay=0.0, eta_min=0.0, batch_size=4, max_steps=5, device="cpu",
                                   tta=["flip"], random_state=7),
    "gallery": GalleryMatcher(m=3, random_state=7),
}


def _problem(n: int = 120, d: int = 12, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(n_samples=n, n_features=d, n_informative=min(d, 8), n_redundant=0, n_classes=k,
                               n_clusters_per_class=1, random_state=seed)
    return X.astype(np.float32), y


def test_every_registered_trainer_is_covered():
    assert sorted(CONFIGURED) == TRAINERS.names()
    assert all(type(est) is TRAINERS.get(name) for name, est in CONFIGURED.items())


@pytest.mark.parametrize("name", sorted(CONFIGURED))
def test_clone_and_params_round_trip(name):
    est = CONFIGURED[name]
    params = est.get_params()
    defaults = type(est)().get_params()
    assert sorted(params) == sorted(defaults) and all(params[p] != defaults[p] for p in params)
    copy = clone(est)
    assert type(copy) is type(est) and copy is not est and copy.get_params() == params
    rebuilt = type(est)().set_params(**params)
    assert rebuilt.get_params() == params
    assert repr(rebuilt) == repr(est) and "random_state=7" in repr(est)
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'"):
        type(est)().set_params(bogus=1)


@pytest.mark.parametrize("name", sorted(CONFIGURED))
@pytest.mark.parametrize("check", [
    "check_no_attributes_set_in_init", "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params", "check_estimator_cloneable", "check_estimator_repr",
])
def test_sklearn_contract_checks(name, check):
    getattr(estimator_checks, check)(name, CONFIGURED[name])


@pytest.mark.parametrize("name", ["probe", "se-head", "gallery"])
@pytest.mark.parametrize("check", [
    "check_dont_overwrite_parameters", "check_estimators_overwrite_params", "check_fit_check_is_fitted",
    "check_n_features_in", "check_fit2d_predict1d", "check_estimators_pickle",
])
def test_sklearn_fit_checks_on_the_feature_trainers(name, check):
    est = TRAINERS.create(name, **({"epochs": 2} if name == "se-head" else {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        getattr(estimator_checks, check)(name, est)


@pytest.mark.parametrize("name", ["probe", "se-head"])
def test_clone_of_a_fitted_trainer_is_unfitted_and_refits_bit_identically(name):
    X, y = _problem()
    est = clone(CONFIGURED[name]).fit(X[:80], y[:80], n_classes=5, X_val=X[80:], y_val=y[80:])
    assert est.predict_proba(X).shape == (120, 5)
    again = clone(est)
    with pytest.raises(NotFittedError):
        check_is_fitted(again)
    assert again.fit(X[:80], y[:80], n_classes=5, X_val=X[80:], y_val=y[80:]) is again
    assert np.array_equal(again.predict_proba(X), est.predict_proba(X))


def test_probe_warm_start_reaches_the_same_optimum_and_clone_forgets_it():
    X, y = _problem()
    cold = ProbeClassifier(C=10.0, tol=1e-6, max_iter=500).fit(X, y)
    path = ProbeClassifier(C=1.0, tol=1e-6, max_iter=500).fit(X, y)
    warm = ProbeClassifier(C=10.0, tol=1e-6, max_iter=500).warm_start_from(path).fit(X, y)
    # the start is used: from the optimum itself only a few steps are left. (Whether C=1's optimum is a
    # shorter path to C=10's than zero depends on the L-BFGS line search of the SciPy release: 34 vs 33 on 1.17.1.)
    again = ProbeClassifier(C=10.0, tol=1e-6, max_iter=500).warm_start_from(cold).fit(X, y)
    assert again.n_iter_ <= 5 < cold.n_iter_
    np.testing.assert_allclose(warm.predict_proba(X), cold.predict_proba(X), atol=1e-3)  # solver tolerance
    fresh = clone(warm).fit(X, y)  # a clone starts cold again: same iterations, same bits as the cold fit
    assert fresh.n_iter_ == cold.n_iter_ and np.array_equal(fresh.predict_proba(X), cold.predict_proba(X))


@pytest.mark.parametrize(("n", "d"), [(300, 20), (40, 200)])  # the second is solved in the 40-d row space
@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
def test_probe_equals_sklearn_logistic_regression(n, d, C):
    X, y = _problem(n=n, d=d)
    probe = ProbeClassifier(C=C, tol=1e-6, max_iter=1000).fit(X, y)
    Xs = StandardScaler().fit_transform(X)
    ref = LogisticRegression(C=C, solver="lbfgs", tol=1e-10, max_iter=10_000).fit(Xs, y)
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(Xs), rtol=0, atol=1e-3)


def test_binary_probe_is_logistic_regression_at_twice_C():
    """Two classes: the symmetric softmax (w1 = -w0) halves the penalty of sklearn's single weight vector."""
    X, y = _problem(n=200, d=15, k=2)
    Xs = StandardScaler().fit_transform(X)
    probe = ProbeClassifier(C=1.0, tol=1e-6, max_iter=1000).fit(X, y).predict_proba(X)
    twice = LogisticRegression(C=2.0, tol=1e-10, max_iter=10_000).fit(Xs, y).predict_proba(Xs)
    same = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(Xs, y).predict_proba(Xs)
    np.testing.assert_allclose(probe, twice, rtol=0, atol=1e-3)
    assert np.abs(probe - same).max() > 1e-2


def test_constant_feature_is_left_unscaled_not_nan():
    X, y = _problem()
    X[:, 3] = 7.0
    proba = ProbeClassifier().fit(X, y).predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba, ProbeClassifier().fit(np.delete(X, 3, 1), y).predict_proba(np.delete(X, 3, 1)),
                               atol=1e-5)


@pytest.mark.parametrize("name", ["probe", "se-head"])
def test_bad_training_input_is_a_value_error(name):
    X, y = _problem()
    est = TRAINERS.create(name, **({"epochs": 1} if name == "se-head" else {}))
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[120, 119\]"):
        est.fit(X, y[:-1])
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\), got 0\.\.3"):
        est.fit(X, y, n_classes=3)
    with pytest.raises(ValueError, match="X has 11 features, but StandardScaler is expecting 12"):
        est.fit(X, y).predict_proba(X[:, :11])


@pytest.mark.parametrize(("n", "d"), [(300, 20), (40, 200)])  # the second is solved in the 40-d row space
@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
def test_weighted_probe_equals_sklearn_logistic_regression_with_sample_weight(n, d, C):
    X, y = _problem(n=n, d=d)
    w = np.random.default_rng(1).uniform(0.1, 3.0, n)
    probe = ProbeClassifier(C=C, tol=1e-6, max_iter=1000).fit(X, y, sample_weight=w)
    Xs = StandardScaler().fit(X, sample_weight=w).transform(X)  # the probe's scaler is weighted too
    ref = LogisticRegression(C=C, solver="lbfgs", tol=1e-10, max_iter=10_000).fit(Xs, y, sample_weight=w)
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(Xs), rtol=0, atol=1e-3)
    plain = ProbeClassifier(C=C, tol=1e-6, max_iter=1000).fit(X, y).predict_proba(X)
    assert np.abs(probe.predict_proba(X) - plain).max() > 5e-3  # the weights matter (10x the tolerance)


def test_probe_integer_weights_repeat_samples_and_zero_weights_drop_them():
    X, y = _problem(n=90, d=10)
    w = np.tile([0, 1, 3], 30)
    weighted = ProbeClassifier(C=1.0, tol=1e-8, max_iter=2000).fit(X, y, n_classes=5, sample_weight=w)
    rows = np.repeat(np.arange(90), w)  # row i repeated w[i] times (0: left out)
    repeated = ProbeClassifier(C=1.0, tol=1e-8, max_iter=2000).fit(X[rows], y[rows], n_classes=5)
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), rtol=0, atol=1e-3)
    assert weighted.predict_proba(X).shape == (90, 5)
    ones = ProbeClassifier().fit(X, y, sample_weight=np.ones(90)).predict_proba(X)
    np.testing.assert_allclose(ones, ProbeClassifier().fit(X, y).predict_proba(X), rtol=0, atol=1e-6)


def test_se_head_sample_weight_zero_ignores_mislabelled_samples():
    X, y = _problem(n=200, d=12, k=3, seed=3)
    rng = np.random.default_rng(0)
    bad = rng.random(200) < 0.5
    y_noisy = np.where(bad, (y + 1) % 3, y)  # half the labels shifted to the next class
    head = dict(epochs=60, lr=1e-2, batch_size=32, random_state=0)
    plain = SEHeadClassifier(**head).fit(X, y_noisy)
    weighted = SEHeadClassifier(**head).fit(X, y_noisy, sample_weight=(~bad).astype(float))
    acc_plain = float((plain.predict(X) == y).mean())
    acc_weighted = float((weighted.predict(X) == y).mean())
    assert acc_weighted >= 0.75 and acc_weighted > acc_plain + 0.15, (acc_plain, acc_weighted)


@pytest.mark.parametrize("name", ["probe", "se-head"])
def test_bad_sample_weight_is_a_value_error(name):
    X, y = _problem()
    est = TRAINERS.create(name, **({"epochs": 1} if name == "se-head" else {}))
    with pytest.raises(ValueError, match=r"one value per sample, shape \(120,\), not \(119,\)"):
        est.fit(X, y, sample_weight=np.ones(119))
    with pytest.raises(ValueError, match="finite and non-negative"):
        est.fit(X, y, sample_weight=np.r_[-1.0, np.ones(119)])
    with pytest.raises(ValueError, match="all zero"):
        est.fit(X, y, sample_weight=np.zeros(120))


def test_gallery_refuses_sample_weight():
    X, y = _problem()
    with pytest.raises(ValueError, match="sample weights do not apply"):
        GalleryMatcher().fit(X, y, sample_weight=np.ones(120))
