"""models.quantile and models.calibrated: ordered quantiles, interval coverage, conformal widening,
determinism, grouped calibration folds, and the errors for bad parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.calibrated import CalibratedBoostingClassifier
from models.errors import ModelInputError
from models.quantile import QuantileGradientBoostingRegressor

N_ROWS = 3_000


def heteroscedastic(seed: int, n: int = N_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """y = 3x + noise whose spread grows with x (so a constant interval cannot fit)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 4.0, size=(n, 2))
    y = 3.0 * X[:, 0] + rng.normal(0.0, 0.2 + X[:, 0], n)
    return X, y


def test_quantiles_are_ordered_and_cover_about_their_nominal_share() -> None:
    X, y = heteroscedastic(0)
    X_test, y_test = heteroscedastic(1)
    model = QuantileGradientBoostingRegressor(max_iter=60, random_state=0).fit(X, y)
    q = model.predict_quantiles(X_test)
    assert (np.diff(q, axis=1) >= 0).all()
    coverage = np.mean((q[:, 0] <= y_test) & (y_test <= q[:, 2]))
    assert 0.7 < coverage < 0.9  # nominal P10–P90: 80 %
    np.testing.assert_array_equal(model.predict(X_test), q[:, 1])


def test_conformal_margin_widens_an_interval_that_undercovers() -> None:
    X, y = heteroscedastic(2, 800)
    X_test, y_test = heteroscedastic(3)
    # Boosters overfitted on few rows: their P10–P90 is far too narrow on new data.
    overfit: dict[str, Any] = {
        "max_iter": 60,
        "learning_rate": 0.5,
        "min_samples_leaf": 2,
        "max_leaf_nodes": 63,
    }
    coverage = {}
    for fraction in (0.0, 0.3):
        model = QuantileGradientBoostingRegressor(calibration_fraction=fraction, random_state=0, **overfit)
        q = model.fit(X, y).predict_quantiles(X_test)
        coverage[fraction] = np.mean((q[:, 0] <= y_test) & (y_test <= q[:, 2]))
    assert coverage[0.0] < 0.5
    assert model.n_calibration_rows_ == int(800 * 0.3) and model.interval_margin_ > 0
    assert abs(coverage[0.3] - 0.8) < 0.07  # back near the nominal 80 %


def test_a_margin_never_moves_the_outer_quantiles_past_the_median() -> None:
    X, y = heteroscedastic(4)
    model = QuantileGradientBoostingRegressor(max_iter=20, calibration_fraction=0.3, random_state=0).fit(X, y)
    model.interval_margin_ = -1e6  # an absurd shrink
    q = model.predict_quantiles(X)
    assert (q[:, 0] <= q[:, 1]).all() and (q[:, 2] >= q[:, 1]).all()


def test_same_random_state_same_predictions() -> None:
    X, y = heteroscedastic(5)
    a = QuantileGradientBoostingRegressor(max_iter=20, early_stopping=True, random_state=7).fit(X, y)
    b = QuantileGradientBoostingRegressor(max_iter=20, early_stopping=True, random_state=7).fit(X, y)
    np.testing.assert_array_equal(a.predict_quantiles(X), b.predict_quantiles(X))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"quantiles": (0.1, 0.9)}, "must contain 0.5"),
        ({"quantiles": (0.5, 1.2)}, "in \\(0, 1\\)"),
        ({"calibration_fraction": 1.0}, "calibration_fraction"),
        ({"n_threads": 0}, "n_threads"),
    ],
)
def test_bad_parameters_are_refused_with_their_value(params: dict[str, object], message: str) -> None:
    X, y = heteroscedastic(6, 100)
    with pytest.raises(ModelInputError, match=message):
        QuantileGradientBoostingRegressor(max_iter=5, **params).fit(X, y)  # type: ignore[arg-type]


def test_grouped_calibration_keeps_each_group_in_one_fold() -> None:
    rng = np.random.default_rng(8)
    X = rng.normal(size=(600, 3))
    y = (X[:, 0] + rng.normal(0.0, 0.5, 600) > 0).astype(int)
    groups = np.repeat(np.arange(60), 10)
    model = CalibratedBoostingClassifier(max_iter=20, cv=3, random_state=0).fit(X, y, groups=groups)
    assert model.calibrated_
    for calibrated in model.estimator_.calibrated_classifiers_:
        assert calibrated.estimator.n_iter_ >= 1
    proba = model.predict_proba(X)
    assert proba.shape == (600, 2) and np.allclose(proba.sum(axis=1), 1.0)


def test_a_classifier_needs_two_classes() -> None:
    with pytest.raises(ModelInputError, match="one class"):
        CalibratedBoostingClassifier(max_iter=5).fit(np.zeros((10, 2)), np.ones(10))
