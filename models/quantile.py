# scikit-learn and joblib ship no type stubs (mypy: import-untyped); their names are typed Any here.
"""Quantile regression with gradient-boosted trees: one `HistGradientBoostingRegressor(loss="quantile")`
per quantile (scikit-learn's pinball-loss boosting), predictions sorted so the quantiles never cross, and
optionally the outer interval conformalised on the newest rows.

Histogram boosting bins each feature into ≤ 255 levels, so fitting scales to millions of rows on two cores,
and it takes missing values (NaN) natively: a lag that reaches before the history is simply missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import ThreadpoolController

from models._validation import check_quantiles
from models.errors import ModelInputError

FloatArray = npt.NDArray[np.float64]

DEFAULT_QUANTILES: Final = (0.1, 0.5, 0.9)
# One OpenMP thread by default. Measured on the 2-core development machine under a load average of 4
# (other processes running): one booster (46,000 rows × 29 features, 150 iterations) took 0.6–0.9 s with
# one thread and 1.0–12 s with two, whose threads spin while waiting for a busy core. The twin's ingest
# service shares the machine with the forecasts, so predictable beats the best case.
DEFAULT_N_THREADS: Final = 1
# Seeds drawn for the per-quantile boosters lie in [0, 2**31): NumPy's legacy seed range.
SEED_BOUND: Final = 2**31 - 1
# Conformal calibration needs this many held-out rows to estimate a margin at all.
MIN_CALIBRATION_ROWS: Final = 20


def thread_limit(n_threads: int | None) -> Any:
    """A context limiting OpenMP threads to `n_threads` (None: the library's default, no limit)."""
    if n_threads is None:
        return nullcontext()
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise ModelInputError(f"n_threads(={n_threads!r}) must be None or an integer >= 1.")
    return _limited(n_threads)


@cache
def _controller() -> ThreadpoolController:
    """The process's thread pools, found once: scanning the loaded libraries costs ~3 ms, a limit taken
    through the found controller ~20 µs (measured). The pools a process has loaded do not change here:
    scikit-learn's OpenMP runtime is loaded when this module imports it."""
    return ThreadpoolController()


@contextmanager
def _limited(n_threads: int) -> Iterator[None]:
    with _controller().limit(limits=n_threads, user_api="openmp"):
        yield


class QuantileGradientBoostingRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """P10/P50/P90 (or any `quantiles` containing 0.5) from gradient-boosted trees.

    `predict` returns the median; `predict_quantiles` every quantile, columns in ascending order, sorted
    row-wise (boosters fitted separately can cross; sorting is the monotone rearrangement of Chernozhukov
    et al. 2010, "Quantile and probability curves without crossing", which never increases pinball loss).

    `calibration_fraction` > 0 conformalises the outer interval (Romano et al. 2019, "Conformalized
    quantile regression"): the boosters are fitted on the first rows, the last `calibration_fraction` of
    the rows (pass them in time order: the newest are the most like tomorrow's) give the conformity scores
    max(lowest − y, y − highest), and the lowest/highest quantiles move out (or in) by their
    ⌈(n+1)(1−α)⌉/n empirical quantile, α = 1 − (highest − lowest quantile). `interval_margin_` holds it.
    `refit=True` then refits the boosters on every row and keeps the margin: the point forecasts use the
    newest rows too, and the interval is calibrated for a model fitted on a little less data.

    Tree parameters are `HistGradientBoostingRegressor`'s; `random_state` seeds every booster (it only
    matters with `early_stopping=True`, whose validation split is random); `n_threads` caps OpenMP threads.
    """

    def __init__(
        self,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        *,
        max_iter: int = 100,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        early_stopping: bool = False,
        calibration_fraction: float = 0.0,
        refit: bool = False,
        n_threads: int | None = DEFAULT_N_THREADS,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.quantiles = quantiles
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.early_stopping = early_stopping
        self.calibration_fraction = calibration_fraction
        self.refit = refit
        self.n_threads = n_threads
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> QuantileGradientBoostingRegressor:
        """Fit one booster per quantile on `X` (n × features, NaN allowed) and `y` (n, finite)."""
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", y_numeric=True)
        self.quantiles_ = check_quantiles(self.quantiles)
        fraction = self.calibration_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction < 1.0:
            raise ModelInputError(f"calibration_fraction(={fraction!r}) must be in [0, 1).")
        n_cal = int(X.shape[0] * fraction)
        if fraction > 0.0 and (n_cal < MIN_CALIBRATION_ROWS or X.shape[0] - n_cal < MIN_CALIBRATION_ROWS):
            n_cal = 0  # too few rows to hold some out: no conformal margin
        n_fit = X.shape[0] - n_cal
        rng = check_random_state(self.random_state)
        seeds = [int(rng.randint(SEED_BOUND)) for _ in self.quantiles_]
        with thread_limit(self.n_threads):
            self.estimators_ = self._boosters(X[:n_fit], y[:n_fit], seeds)
            self.interval_margin_ = 0.0
            if n_cal and len(self.quantiles_) > 1:
                raw = self._raw(X[n_fit:])
                scores = np.maximum(raw[:, 0] - y[n_fit:], y[n_fit:] - raw[:, -1])
                alpha = 1.0 - (self.quantiles_[-1] - self.quantiles_[0])
                level = min(1.0, math.ceil((n_cal + 1) * (1.0 - alpha)) / n_cal)
                self.interval_margin_ = float(np.quantile(scores, level))
                if self.refit:
                    self.estimators_ = self._boosters(X, y, seeds)
        self.n_calibration_rows_ = n_cal
        self.n_iter_ = np.array([est.n_iter_ for est in self.estimators_], dtype=np.int64)
        return self

    def _boosters(
        self, X: FloatArray, y: FloatArray, seeds: list[int]
    ) -> list[HistGradientBoostingRegressor]:
        return [
            HistGradientBoostingRegressor(
                loss="quantile",
                quantile=q,
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf,
                l2_regularization=self.l2_regularization,
                early_stopping=self.early_stopping,
                random_state=seed,
            ).fit(X, y)
            for q, seed in zip(self.quantiles_, seeds, strict=True)
        ]

    def _raw(self, X: FloatArray) -> FloatArray:
        out = np.column_stack([est.predict(X) for est in self.estimators_]).astype(np.float64)
        out.sort(axis=1)
        return out

    def predict_quantiles(self, X: Any) -> FloatArray:
        """n × len(quantiles_) predictions, ascending quantiles, sorted row-wise (no crossing)."""
        check_is_fitted(self, "estimators_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        with thread_limit(self.n_threads):
            out = self._raw(X)
        if self.interval_margin_ and out.shape[1] > 1:  # never past the neighbouring quantile
            out[:, 0] = np.minimum(out[:, 0] - self.interval_margin_, out[:, 1])
            out[:, -1] = np.maximum(out[:, -1] + self.interval_margin_, out[:, -2])
        return out

    def predict(self, X: Any) -> FloatArray:
        """The median (P50) prediction, n values."""
        check_is_fitted(self, "estimators_")
        return np.asarray(self.predict_quantiles(X)[:, self.quantiles_.index(0.5)], dtype=np.float64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
