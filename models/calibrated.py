# scikit-learn and joblib ship no type stubs (mypy: import-untyped); their names are typed Any here.
"""A gradient-boosted classifier with calibrated probabilities (isotonic or sigmoid, cross-validated).

Boosted trees rank well but their raw scores are not probabilities; `CalibratedClassifierCV` refits the
booster on K−1 folds and maps its scores to frequencies on the held-out fold (Zadrozny & Elkan 2002 for
isotonic, Platt 1999 for sigmoid), averaging the K calibrated models. When rows are not independent (many
rows per GPU), pass `groups` so that one GPU never sits on both sides of a calibration fold — otherwise the
calibrator learns from rows the booster has memorised and the probabilities come out overconfident.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from models.errors import ModelInputError
from models.quantile import DEFAULT_N_THREADS, SEED_BOUND, thread_limit

FloatArray = npt.NDArray[np.float64]

CALIBRATION_METHODS: Final = ("isotonic", "sigmoid")


class CalibratedBoostingClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """`HistGradientBoostingClassifier` whose probabilities are calibrated by cross-validation.

    `cv` folds (stratified and shuffled with `random_state`, or grouped when `fit` gets `groups`); with
    fewer members in a class than folds, the folds shrink to that count (at least 2), below that the
    booster's own probabilities are used (`calibrated_ = False`). `n_threads` caps OpenMP threads
    (`models.quantile.DEFAULT_N_THREADS` says why one is the default).
    """

    def __init__(
        self,
        *,
        max_iter: int = 100,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        calibration: str = "isotonic",
        cv: int = 3,
        n_threads: int | None = DEFAULT_N_THREADS,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.calibration = calibration
        self.cv = cv
        self.n_threads = n_threads
        self.random_state = random_state

    def fit(self, X: Any, y: Any, groups: Any = None) -> CalibratedBoostingClassifier:
        """Fit on `X` (n × features, NaN allowed) and labels `y`; `groups` (n) keeps a group in one fold."""
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan")
        check_classification_targets(y)
        if self.calibration not in CALIBRATION_METHODS:
            raise ModelInputError(f"calibration(={self.calibration!r}) must be one of {CALIBRATION_METHODS}.")
        if isinstance(self.cv, bool) or not isinstance(self.cv, int) or self.cv < 2:
            raise ModelInputError(f"cv(={self.cv!r}) must be an integer >= 2.")
        self.classes_, counts = np.unique(y, return_counts=True)
        if self.classes_.size < 2:
            raise ModelInputError(f"y has one class (={self.classes_[0]!r}); a classifier needs two.")
        rng = check_random_state(self.random_state)
        booster = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=False,
            random_state=int(rng.randint(SEED_BOUND)),
        )
        folds = min(self.cv, int(counts.min()))
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (X.shape[0],):
                raise ModelInputError(f"groups has shape {groups.shape}; expected ({X.shape[0]},).")
            folds = min(folds, np.unique(groups).size)
        self.calibrated_ = folds >= 2
        if not self.calibrated_:
            with thread_limit(self.n_threads):
                self.estimator_: Any = booster.fit(X, y)
            self.n_iter_ = np.array([booster.n_iter_], dtype=np.int64)
            return self
        splitter: Any
        if groups is not None:
            splitter = list(GroupKFold(n_splits=folds).split(X, y, groups))
        else:
            splitter = StratifiedKFold(
                n_splits=folds, shuffle=True, random_state=int(rng.randint(SEED_BOUND))
            )
        with thread_limit(self.n_threads):
            self.estimator_ = CalibratedClassifierCV(booster, method=self.calibration, cv=splitter).fit(X, y)
        self.n_iter_ = np.array(
            [c.estimator.n_iter_ for c in self.estimator_.calibrated_classifiers_], dtype=np.int64
        )
        return self

    def predict_proba(self, X: Any) -> FloatArray:
        """n × classes probabilities (columns in `classes_` order)."""
        check_is_fitted(self, "estimator_")
        X = validate_data(self, X, ensure_all_finite="allow-nan", reset=False)
        with thread_limit(self.n_threads):
            return np.asarray(self.estimator_.predict_proba(X), dtype=np.float64)

    def predict(self, X: Any) -> npt.NDArray[Any]:
        """The most probable class of each row."""
        check_is_fitted(self, "estimator_")
        return np.asarray(self.classes_[np.argmax(self.predict_proba(X), axis=1)])

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
