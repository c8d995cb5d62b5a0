# scikit-learn and joblib ship no type stubs (mypy: import-untyped); their names are typed Any here.
"""scikit-learn's estimator checks: the array-level estimators pass `check_estimator`'s whole suite; the
DataFrame-level predictors follow the API conventions the suite checks without fitting on arrays."""

from __future__ import annotations

from typing import Any

import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    parametrize_with_checks,
)

from models.baselines import ColumnRegressor, ConstantQuantileRegressor
from models.calibrated import CalibratedBoostingClassifier
from models.duration import JobDurationModel
from models.failure import FailureRiskModel
from models.power import PowerForecaster
from models.quantile import QuantileGradientBoostingRegressor

# Few boosting iterations (the checks fit each estimator dozens of times on tiny data), yet enough for
# `check_regressors_train`'s R² > 0.5. The baselines learn nothing from y by design; they say so with
# scikit-learn's `poor_score` tag, which waives that one assertion.
ARRAY_ESTIMATORS = [
    QuantileGradientBoostingRegressor(max_iter=10, random_state=0),
    QuantileGradientBoostingRegressor(max_iter=10, calibration_fraction=0.3, random_state=0),
    CalibratedBoostingClassifier(max_iter=10, cv=2, random_state=0),
    ColumnRegressor(),
    ConstantQuantileRegressor(),
]


@parametrize_with_checks(ARRAY_ESTIMATORS)  # type: ignore[untyped-decorator]
def test_array_estimators_pass_the_sklearn_checks(estimator: Any, check: Any) -> None:
    check(estimator)


FRAME_ESTIMATORS = [PowerForecaster(), JobDurationModel(), FailureRiskModel()]


@pytest.mark.parametrize("estimator", FRAME_ESTIMATORS, ids=lambda e: type(e).__name__)
def test_frame_estimators_follow_the_api_conventions(estimator: Any) -> None:
    name = type(estimator).__name__
    check_no_attributes_set_in_init(name, estimator)
    check_parameters_default_constructible(name, estimator)
    check_get_params_invariance(name, estimator)
    assert clone(estimator).get_params() == estimator.get_params()


@pytest.mark.parametrize(
    ("estimator", "method"),
    [(PowerForecaster(), "predict"), (JobDurationModel(), "predict"), (FailureRiskModel(), "predict_risk")],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_frame_estimators_refuse_to_predict_before_fit(estimator: Any, method: str) -> None:
    import pandas as pd

    with pytest.raises(NotFittedError):
        getattr(estimator, method)(pd.DataFrame())
