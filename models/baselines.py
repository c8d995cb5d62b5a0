# scikit-learn and joblib ship no type stubs (mypy: import-untyped); their names are typed Any here.
"""Baselines that every predictor must beat (DESIGN §2: "a baseline beside every model").

- `ColumnRegressor`: predicts one input column as it is — persistence (the current value) or a physics
  estimate the caller computed (the performance core's power or duration), i.e. "the estimate alone".
- `ConstantQuantileRegressor`: the training target's quantiles for every row — "the median" baseline,
  with an interval.
- The base-rate classifier is scikit-learn's `DummyClassifier(strategy="prior")`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from models._validation import check_quantiles
from models.errors import ModelInputError
from models.quantile import DEFAULT_QUANTILES

FloatArray = npt.NDArray[np.float64]


class ColumnRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Predicts column `column` of X unchanged (learns nothing from y; `fit` only checks the shapes).

    NaN in that column gives a NaN prediction: a baseline that has no value says so.
    """

    def __init__(self, column: int = 0) -> None:
        self.column = column

    def fit(self, X: Any, y: Any) -> ColumnRegressor:
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        if isinstance(self.column, bool) or not isinstance(self.column, int | np.integer):
            raise ModelInputError(f"column(={self.column!r}) must be an integer index.")
        if not -X.shape[1] <= self.column < X.shape[1]:
            raise ModelInputError(f"column(={self.column}) is outside X's {X.shape[1]} columns.")
        self.column_ = int(self.column)
        return self

    def predict(self, X: Any) -> FloatArray:
        check_is_fitted(self, "column_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        return np.asarray(X[:, self.column_], dtype=np.float64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.regressor_tags.poor_score = True  # learns nothing from y: a baseline by design
        return tags


class ConstantQuantileRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """The training target's `quantiles` for every row; `predict` gives the median."""

    def __init__(self, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> None:
        self.quantiles = quantiles

    def fit(self, X: Any, y: Any) -> ConstantQuantileRegressor:
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        self.quantiles_ = check_quantiles(self.quantiles)
        self.values_ = np.quantile(np.asarray(y, dtype=np.float64), self.quantiles_)
        return self

    def predict_quantiles(self, X: Any) -> FloatArray:
        check_is_fitted(self, "values_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        return np.tile(self.values_, (X.shape[0], 1)).astype(np.float64)

    def predict(self, X: Any) -> FloatArray:
        return np.asarray(self.predict_quantiles(X)[:, self.quantiles_.index(0.5)], dtype=np.float64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.regressor_tags.poor_score = True  # learns nothing from y: a baseline by design
        return tags
