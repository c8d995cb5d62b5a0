# scikit-learn and joblib ship no type stubs (mypy: import-untyped); their names are typed Any here.
"""Failure risk: the probability that a GPU fails within a horizon, calibrated (DataFrames in).

`FailureRiskModel` is a calibrated boosted classifier over named columns; the same class scores a job's
failure from its request (`models.duration`). Two datasets feed it:

- `titan_landmarks`: OLCF Titan's 30,207 GPU lifetimes (Ostrouchov et al., SC'20, "GPU Lifetimes on
  Titan Supercomputer"; ../shared/traces/olcf-titan-gpu-life). Lifetimes are right-censored (a GPU still
  in service, or removed without failing, at the end), so the label is made with landmarks: at each age
  a = 0, `every_years`, … that a GPU reached alive, the row asks "does it fail in (a, a + horizon]?",
  and a GPU whose observation ends inside that window without a failure gives no row at that landmark
  (its answer is unknown). Features: position in the machine (cabinet column/row, cage, slot, node —
  cooling differs along the air path), manufacturing batch, age.
- `telemetry_risk_dataset`: per-GPU windows of telemetry before each landmark time — temperature level
  and trend, correctable-ECC count and rate, XID history, power level, spread and anomaly against the
  node's other GPUs, utilisation, age, position — labelled by whether the GPU fails (double-bit ECC,
  XID 48; or falls off the bus, XID 79) within the horizon. A node that goes silent censors its GPUs.

Baseline: the base rate (scikit-learn's `DummyClassifier(strategy="prior")`): ROC-AUC 0.5, PR-AUC equal
to the positive share.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import GroupShuffleSplit
from sklearn.utils.validation import check_is_fitted

from models._validation import numeric_matrix, require_columns, require_frame
from models.calibrated import CalibratedBoostingClassifier
from models.errors import InsufficientHistoryError, ModelInputError
from models.quantile import DEFAULT_N_THREADS
from models.tabular import check_names, encode, fit_categories

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# --- Titan -------------------------------------------------------------------------------------------
TITAN_REQUIRED: Final = ("SN", "years", "dead", "col", "row", "cage", "slot", "node", "batch")
TITAN_FEATURES: Final = ("age_years", "col", "row", "cage", "slot", "node", "batch_old")
# Horizon one year, a landmark every half year. ASSUMPTION: a year is the planning horizon for
# replacing hardware; Titan's lifetimes span 0–5.7 years, so half-year landmarks give 12 per long life.
TITAN_HORIZON_YEARS: Final = 1.0
TITAN_EVERY_YEARS: Final = 0.5

# --- simulated telemetry -------------------------------------------------------------------------------
TELEMETRY_RISK_REQUIRED: Final = ("cluster", "node", "gpu_index", "ts", "power_w")
TELEMETRY_RISK_OPTIONAL: Final = ("temp_c", "gpu_util_pct", "ecc_sbe_total", "ecc_dbe_total", "xid_last")
TELEMETRY_RISK_FEATURES: Final = (
    "age_s",
    "gpu_index",
    "temp_c",
    "temp_max_c",
    "temp_trend_c",
    "power_mean_w",
    "power_std_w",
    "power_anomaly_w",
    "util_mean_pct",
    "sbe_total",
    "sbe_rate_per_h",
    "xid_last",
    "xid_changed",
)
# XIDs that are the failure itself, not a precursor (NVIDIA Xid catalogue): 48 double-bit ECC error,
# 79 GPU has fallen off the bus.
XID_FAILURES: Final = (48, 79)
SECONDS_PER_HOUR: Final = 3600.0
# Defaults of the telemetry dataset: horizon 1 h, features over the previous 30 min, a landmark every
# 10 min, 2-min buckets. ASSUMPTION: an hour is enough to drain a node and checkpoint a job; the window
# spans a few thermal and precursor time scales (sensors.sim_telemetry τ = 20 s; bursts of ~hours).
RISK_HORIZON_S: Final = 3600.0
RISK_WINDOW_S: Final = 1800.0
RISK_EVERY_S: Final = 600.0
RISK_BUCKET_S: Final = 120.0
# A GPU missing from this many seconds of telemetry at the end while others still report has gone
# (fallen off the bus without a last reading, or its node went silent). ASSUMPTION: 5 minutes, a few
# polls at the usual 1–60 s intervals.
RISK_SILENT_AFTER_S: Final = 300.0
# Booster settings for the simulated telemetry: a few hundred positives among ~10⁵ rows, so fewer, slower
# iterations and large leaves. Measured over simulation seeds 0–2: ROC-AUC 0.56–0.74 with these against
# 0.57–0.71 with the defaults, and a Brier score 1–12 % below the base rate's against 1.5–4.7 %.
SIMULATED_RISK_MAX_ITER: Final = 50
SIMULATED_RISK_LEARNING_RATE: Final = 0.05
SIMULATED_RISK_MIN_SAMPLES_LEAF: Final = 200
# Fewer positives than this on either side of a split give no meaningful ROC/PR estimate.
MIN_POSITIVES: Final = 5


# ------------------------------------------------------------------------------------------ estimator


class FailureRiskModel(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Calibrated probability of failure from the named `features` (numeric) and `categorical` columns.

    `fit(frame, y, groups=None)`: `y` is 1 for a failure within the horizon; `groups` (e.g. the GPU's
    serial) keeps each group inside one calibration fold. `predict_risk(frame)` gives P(failure).
    The booster and calibration parameters are `CalibratedBoostingClassifier`'s.
    """

    def __init__(
        self,
        features: Sequence[str] = TELEMETRY_RISK_FEATURES,
        categorical: Sequence[str] = (),
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
        self.features = features
        self.categorical = categorical
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.calibration = calibration
        self.cv = cv
        self.n_threads = n_threads
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y: Any, groups: Any = None) -> FailureRiskModel:
        """Fit on the frame `X` (its `features` and `categorical` columns) and 0/1 labels `y`."""
        features = check_names(self.features, "features")
        categorical = check_names(self.categorical, "categorical")
        if not features and not categorical:
            raise ModelInputError("features and categorical are both empty; the model needs a column.")
        X = require_frame(X, "failure-risk frame")
        require_columns(X, [*features, *categorical], "failure-risk frame")
        labels = np.asarray(y)
        if labels.shape != (len(X),):
            raise ModelInputError(f"y has shape {labels.shape}; expected ({len(X)},), one label per row.")
        self.categories_ = fit_categories(X, categorical)
        self.feature_names_in_ = np.asarray([*features, *categorical], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.classifier_ = CalibratedBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            calibration=self.calibration,
            cv=self.cv,
            n_threads=self.n_threads,
            random_state=self.random_state,
        ).fit(encode(X, features, self.categories_, "failure-risk frame"), labels, groups)
        self.classes_ = self.classifier_.classes_
        return self

    def _matrix(self, X: pd.DataFrame) -> FloatArray:
        check_is_fitted(self, "classifier_")
        numeric = [str(n) for n in self.feature_names_in_ if n not in self.categories_]
        return encode(X, numeric, self.categories_, "failure-risk frame")

    def predict_proba(self, X: pd.DataFrame) -> FloatArray:
        """n × 2 probabilities (columns in `classes_` order)."""
        matrix = self._matrix(X)
        return self.classifier_.predict_proba(matrix)

    def predict(self, X: pd.DataFrame) -> npt.NDArray[Any]:
        matrix = self._matrix(X)
        return self.classifier_.predict(matrix)

    def predict_risk(self, X: pd.DataFrame) -> FloatArray:
        """P(failure) per row: the probability of the larger class label (1, or True)."""
        return np.asarray(self.predict_proba(X)[:, -1], dtype=np.float64)


# ------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True, slots=True)
class RiskScore:
    """Held-out discrimination and calibration of a risk model against the base rate."""

    dataset: str
    n_train: int
    n_test: int
    positives_test: int
    roc_auc: float
    pr_auc: float
    baseline_roc_auc: float
    baseline_pr_auc: float
    brier: float
    baseline_brier: float

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def require_both_classes(dataset: str, y_train: Any, y_test: Any) -> None:
    """`InsufficientHistoryError` unless each split holds `MIN_POSITIVES` failures and survivals."""
    for name, labels in (("training", np.asarray(y_train)), ("test", np.asarray(y_test))):
        positives = int(labels.astype(int).sum())
        if positives < MIN_POSITIVES or labels.size - positives < MIN_POSITIVES:
            raise InsufficientHistoryError(
                f"the {name} split of {dataset} has {positives} failures and {labels.size - positives} "
                f"survivals; scoring needs at least {MIN_POSITIVES} of each (give more history)."
            )


def score_risk(dataset: str, y_train: Any, y_test: Any, risk: FloatArray) -> RiskScore:
    """ROC-AUC, PR-AUC and Brier score of `risk` on `y_test`, and of the training base rate."""
    y_train, y_test = np.asarray(y_train).astype(int), np.asarray(y_test).astype(int)
    require_both_classes(dataset, y_train, y_test)
    dummy = DummyClassifier(strategy="prior").fit(np.zeros((y_train.size, 1)), y_train)
    base = dummy.predict_proba(np.zeros((y_test.size, 1)))[:, 1]
    return RiskScore(
        dataset=dataset,
        n_train=int(y_train.size),
        n_test=int(y_test.size),
        positives_test=int(y_test.sum()),
        roc_auc=float(roc_auc_score(y_test, risk)),
        pr_auc=float(average_precision_score(y_test, risk)),
        baseline_roc_auc=float(roc_auc_score(y_test, base)),
        baseline_pr_auc=float(average_precision_score(y_test, base)),
        brier=float(brier_score_loss(y_test, risk)),
        baseline_brier=float(brier_score_loss(y_test, base)),
    )


# --------------------------------------------------------------------------------------------- Titan


def titan_landmarks(
    gpus: pd.DataFrame,
    *,
    horizon_years: float = TITAN_HORIZON_YEARS,
    every_years: float = TITAN_EVERY_YEARS,
) -> pd.DataFrame:
    """Landmark rows from Titan's one-row-per-GPU summary (see the module docstring for the censoring).

    Columns: SN, the `TITAN_FEATURES` and `label` (1: fails within `horizon_years` after the landmark).
    """
    gpus = require_frame(gpus, "titan frame")
    require_columns(gpus, TITAN_REQUIRED, "titan frame")
    for name, value in (("horizon_years", horizon_years), ("every_years", every_years)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ModelInputError(f"{name}(={value!r}) must be a positive number of years.")
    years = numeric_matrix(gpus, ["years"], "titan frame")[:, 0]
    dead = gpus["dead"].astype(bool).to_numpy()
    base = pd.DataFrame({"SN": gpus["SN"].to_numpy()})
    for name in ("col", "row", "cage", "slot", "node"):
        base[name] = numeric_matrix(gpus, [name], "titan frame")[:, 0]
    base["batch_old"] = (gpus["batch"].astype(str).str.lower() == "old").astype(float).to_numpy()
    parts = []
    finite = years[np.isfinite(years)]
    last = float(finite.max()) if finite.size else 0.0
    for age in np.arange(0.0, last, every_years):
        alive = years > age
        fails = dead & (years <= age + horizon_years)
        censored = ~dead & (years <= age + horizon_years)
        keep = alive & ~censored
        if keep.any():
            part = base[keep].copy()
            part["age_years"] = float(age)
            part["label"] = fails[keep].astype(int)
            parts.append(part)
    if not parts:
        raise InsufficientHistoryError("titan frame has no GPU alive at age 0 with a known outcome.")
    out = pd.concat(parts, ignore_index=True)
    return out[["SN", *TITAN_FEATURES, "label"]]


def evaluate_titan(
    gpus: pd.DataFrame,
    *,
    test_fraction: float = 0.3,
    horizon_years: float = TITAN_HORIZON_YEARS,
    model: FailureRiskModel | None = None,
    random_state: int = 0,
) -> RiskScore:
    """Fit on 70 % of the GPUs (all landmarks of a GPU on one side), score on the other 30 %."""
    rows = titan_landmarks(gpus, horizon_years=horizon_years)
    model = model if model is not None else FailureRiskModel(TITAN_FEATURES, random_state=random_state)
    split = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=random_state)
    train, test = next(split.split(rows, rows["label"], rows["SN"]))
    y = rows["label"].to_numpy()
    model.fit(rows.iloc[train], y[train], groups=rows["SN"].to_numpy()[train])
    return score_risk("titan", y[train], y[test], model.predict_risk(rows.iloc[test]))


# ------------------------------------------------------------------------------------ simulated data


def _gpu_grid(
    telemetry: pd.DataFrame, bucket_s: float
) -> tuple[pd.DataFrame, FloatArray, dict[str, FloatArray]]:
    """GPU keys (cluster, node, gpu_index), bucket starts, and (T, G) arrays of per-bucket values: means
    of power, temperature and utilisation, maxima of the ECC counters and of "an XID that is a failure",
    the newest sample's XID, and the sample count. NumPy group-by: one sort by (GPU, bucket, ts)."""
    ts = numeric_matrix(telemetry, ["ts"], "telemetry")[:, 0]
    keep = np.isfinite(ts)
    frame = telemetry.loc[keep]
    ts = ts[keep]
    if not ts.size:
        raise InsufficientHistoryError("telemetry has no row with a finite ts.")
    c_codes, c_names = pd.factorize(frame["cluster"].astype(str), sort=True)
    n_codes, n_names = pd.factorize(frame["node"].astype(str), sort=True)
    index = numeric_matrix(frame, ["gpu_index"], "telemetry")[:, 0]
    if not np.isfinite(index).all() or (index < 0).any():
        raise ModelInputError("telemetry column 'gpu_index' must be an integer >= 0 on every row.")
    width = int(index.max()) + 1
    gpu_code = (c_codes.astype(np.int64) * len(n_names) + n_codes) * width + index.astype(np.int64)
    gpus, g = np.unique(gpu_code, return_inverse=True)
    bucket = np.floor(ts / bucket_s).astype(np.int64)
    first = int(bucket.min())
    t = bucket - first
    n_t, n_g = int(t.max()) + 1, gpus.size

    def column(name: str) -> FloatArray:
        if name not in frame.columns:
            return np.full(len(frame), np.nan)
        return numeric_matrix(frame, [name], "telemetry")[:, 0]

    order = np.lexsort((ts, t * n_g + g))
    cell = (t * n_g + g)[order]
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    ends = np.r_[starts[1:], cell.size] - 1
    ti, gi = cell[starts] // n_g, cell[starts] % n_g

    def mean(values: FloatArray) -> FloatArray:
        v = values[order]
        known = ~np.isnan(v)
        total = np.add.reduceat(np.where(known, v, 0.0), starts)
        count = np.add.reduceat(known.astype(np.float64), starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.where(count > 0, total / count, np.nan), dtype=np.float64)

    def maximum(values: FloatArray) -> FloatArray:
        return np.asarray(np.fmax.reduceat(values[order], starts), dtype=np.float64)

    xid = column("xid_last")
    per_cell = {
        "power_w": mean(column("power_w")),
        "temp_c": mean(column("temp_c")),
        "util": mean(column("gpu_util_pct")),
        "sbe": maximum(column("ecc_sbe_total")),
        "dbe": maximum(column("ecc_dbe_total")),
        "xid": xid[order][ends],
        "xid_failure": maximum(np.isin(xid, XID_FAILURES).astype(np.float64)),
        "samples": (ends - starts + 1).astype(np.float64),
    }
    grids: dict[str, FloatArray] = {}
    for name, values in per_cell.items():
        grid = np.full((n_t, n_g), np.nan)
        grid[ti, gi] = values
        grids[name] = grid
    gpu_keys = pd.DataFrame(
        {
            "cluster": [str(c_names[int(k) // width // len(n_names)]) for k in gpus],
            "node": [str(n_names[int(k) // width % len(n_names)]) for k in gpus],
            "gpu_index": (gpus % width).astype(np.int64),
        }
    )
    return gpu_keys, np.asarray((first + np.arange(n_t)) * bucket_s, dtype=np.float64), grids


@dataclass(frozen=True, slots=True)
class _RiskGrids:
    """Per-GPU feature arrays (T buckets × G GPUs) and what the labels need."""

    keys: pd.DataFrame
    starts: FloatArray
    features: dict[str, FloatArray]
    present: npt.NDArray[np.bool_]
    first_seen: IntArray
    fail_t: IntArray
    censor_t: IntArray


def _check_seconds(**values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not (
            isinstance(value, int | float) and math.isfinite(value) and value > 0
        ):
            raise ModelInputError(f"{name}(={value!r}) must be a positive number of seconds.")


def _risk_grids(
    telemetry: pd.DataFrame, window_s: float, bucket_s: float, silent_after_s: float
) -> _RiskGrids:
    telemetry = require_frame(telemetry, "telemetry")
    require_columns(telemetry, TELEMETRY_RISK_REQUIRED, "telemetry")
    _check_seconds(window_s=window_s, bucket_s=bucket_s, silent_after_s=silent_after_s)
    keys, starts, g = _gpu_grid(telemetry, bucket_s)
    n_t = g["power_w"].shape[0]
    window_b = max(2, math.ceil(window_s / bucket_s))
    present = g["samples"] > 0
    first_seen = np.where(present.any(axis=0), np.argmax(present, axis=0), n_t).astype(np.int64)
    last_seen = n_t - 1 - np.argmax(present[::-1], axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dbe0 = np.nanmin(g["dbe"], axis=0)
    failed = (g["xid_failure"] > 0) | (np.nan_to_num(g["dbe"], nan=-np.inf) > np.nan_to_num(dbe0, nan=np.inf))
    fail_t = np.where(failed.any(axis=0), np.argmax(failed, axis=0), n_t).astype(np.int64)
    silent_b = math.ceil(silent_after_s / bucket_s)
    gone = (last_seen < n_t - silent_b) & (fail_t == n_t)
    censor_t = np.where(gone, last_seen + 1, n_t).astype(np.int64)

    frame = {k: pd.DataFrame(v) for k, v in g.items() if k in ("power_w", "temp_c", "util")}
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        roll = {k: f.rolling(window_b, min_periods=1) for k, f in frame.items()}
        power_mean = roll["power_w"].mean().to_numpy()
        temp_ff = frame["temp_c"].ffill().to_numpy()
        sbe_ff = pd.DataFrame(g["sbe"]).ffill().to_numpy()
        xid_ff = pd.DataFrame(g["xid"]).ffill().to_numpy()
        window_h = (window_b - 1) * bucket_s / SECONDS_PER_HOUR
        age_s = (np.arange(n_t)[:, None] - first_seen[None, :]) * bucket_s
        features = {
            "age_s": np.where(age_s >= 0, age_s, np.nan),
            "gpu_index": np.broadcast_to(pd.to_numeric(keys["gpu_index"]).to_numpy(np.float64), age_s.shape),
            "temp_c": roll["temp_c"].mean().to_numpy(),
            "temp_max_c": roll["temp_c"].max().to_numpy(),
            "temp_trend_c": temp_ff - _lag(temp_ff, window_b - 1),
            "power_mean_w": power_mean,
            "power_std_w": roll["power_w"].std(ddof=0).to_numpy(),
            "power_anomaly_w": power_mean - _node_median(keys, power_mean),
            "util_mean_pct": roll["util"].mean().to_numpy(),
            "sbe_total": sbe_ff,
            "sbe_rate_per_h": (sbe_ff - _lag(sbe_ff, window_b - 1)) / window_h,
            "xid_last": xid_ff,
            "xid_changed": (xid_ff != _lag(xid_ff, window_b - 1)).astype(float),
        }
    return _RiskGrids(keys, starts, features, present, first_seen, fail_t, censor_t)


def telemetry_risk_dataset(
    telemetry: pd.DataFrame,
    *,
    horizon_s: float = RISK_HORIZON_S,
    window_s: float = RISK_WINDOW_S,
    every_s: float = RISK_EVERY_S,
    bucket_s: float = RISK_BUCKET_S,
    silent_after_s: float = RISK_SILENT_AFTER_S,
) -> pd.DataFrame:
    """Landmark rows per GPU from raw telemetry: the `TELEMETRY_RISK_FEATURES` over the `window_s`
    before each landmark (every `every_s`) and `label` = 1 if the GPU fails within `horizon_s`.

    A failure is the first bucket with a double-bit ECC count above the GPU's first one, or XID 48/79.
    A GPU that stops reporting for `silent_after_s` while others report is censored from then on (its
    node went silent, or it vanished without a last reading); landmarks whose horizon runs past the
    data are left out (their outcome is unknown), as are GPUs censored within the horizon.
    """
    _check_seconds(horizon_s=horizon_s, every_s=every_s)
    grids = _risk_grids(telemetry, window_s, bucket_s, silent_after_s)
    n_t = grids.present.shape[0]
    horizon_b = max(1, math.ceil(horizon_s / bucket_s))
    window_b = max(2, math.ceil(window_s / bucket_s))
    every_b = max(1, round(every_s / bucket_s))
    if n_t <= window_b + horizon_b:
        need = (window_b + horizon_b + 1) * bucket_s
        raise InsufficientHistoryError(
            f"too little history for failure-risk rows: it needs more than {need:,.0f} s of telemetry "
            f"({window_s:g} s of window + {horizon_s:g} s of horizon); got {n_t * bucket_s:,.0f} s."
        )
    landmarks = np.arange(window_b - 1, n_t - horizon_b, every_b)
    lt = landmarks[:, None]
    fail_t, censor_t = grids.fail_t[None, :], grids.censor_t[None, :]
    label = fail_t <= lt + horizon_b
    eligible = (
        grids.present[landmarks] & (fail_t > lt) & (censor_t > lt) & (label | (censor_t > lt + horizon_b))
    )
    li, gi = np.nonzero(eligible)
    t_rows = landmarks[li]
    out = _feature_rows(grids, t_rows, gi, bucket_s)
    out["label"] = label[li, gi].astype(int)
    return out


def _feature_rows(grids: _RiskGrids, t_rows: IntArray, gi: IntArray, bucket_s: float) -> pd.DataFrame:
    out = grids.keys.iloc[gi].reset_index(drop=True)
    out["gpu_index"] = pd.to_numeric(out["gpu_index"])
    out["ts"] = grids.starts[t_rows] + bucket_s
    for name in TELEMETRY_RISK_FEATURES:
        out[name] = grids.features[name][t_rows, gi]
    return out


def telemetry_risk_features(
    telemetry: pd.DataFrame,
    *,
    window_s: float = RISK_WINDOW_S,
    bucket_s: float = RISK_BUCKET_S,
    silent_after_s: float = RISK_SILENT_AFTER_S,
) -> pd.DataFrame:
    """The `TELEMETRY_RISK_FEATURES` of every GPU that reports in the newest bucket and has not failed:
    the rows to score now (`ts` is the end of that bucket). Give at least `window_s` of telemetry."""
    grids = _risk_grids(telemetry, window_s, bucket_s, silent_after_s)
    n_t = grids.present.shape[0]
    window_b = max(2, math.ceil(window_s / bucket_s))
    if n_t < window_b:
        raise InsufficientHistoryError(
            f"too little history to score failure risk: it needs at least {window_b * bucket_s:,.0f} s of "
            f"telemetry ({window_b} buckets of {bucket_s:g} s); got {n_t * bucket_s:,.0f} s."
        )
    last = n_t - 1
    gi = np.flatnonzero(grids.present[last] & (grids.fail_t > last))
    return _feature_rows(grids, np.full(gi.size, last), gi, bucket_s)


def _lag(a: FloatArray, k: int) -> FloatArray:
    out = np.full_like(a, np.nan)
    if k > 0:
        out[k:] = a[:-k]
    else:
        out[:] = a
    return out


def _node_median(keys: pd.DataFrame, values: FloatArray) -> FloatArray:
    """Per time, each GPU's node's median of `values` across that node's GPUs."""
    out = np.full_like(values, np.nan)
    node_codes, _ = pd.factorize(keys["cluster"] + "\x1f" + keys["node"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for code in np.unique(node_codes):
            members = np.flatnonzero(node_codes == code)
            out[:, members] = np.nanmedian(values[:, members], axis=1)[:, None]
    return out


def evaluate_telemetry_risk(
    rows: pd.DataFrame,
    *,
    horizon_s: float = RISK_HORIZON_S,
    train_fraction: float = 0.7,
    model: FailureRiskModel | None = None,
    random_state: int = 0,
) -> RiskScore:
    """Temporal split of `telemetry_risk_dataset` rows: fit on landmarks whose horizon ends before the
    split time (the first `train_fraction` of the time span), score on landmarks from the split on.
    Calibration folds keep each GPU's landmarks together."""
    rows = require_frame(rows, "failure-risk rows")
    require_columns(rows, ["cluster", "node", "ts", "label", *TELEMETRY_RISK_FEATURES], "failure-risk rows")
    if not 0.0 < train_fraction < 1.0:
        raise ModelInputError(f"train_fraction(={train_fraction!r}) must be in (0, 1).")
    ts = rows["ts"].to_numpy(dtype=np.float64)
    split_ts = ts.min() + train_fraction * (ts.max() - ts.min())
    train = ts + horizon_s <= split_ts
    test = ts >= split_ts
    y = rows["label"].to_numpy()
    model = (
        model
        if model is not None
        else FailureRiskModel(
            TELEMETRY_RISK_FEATURES,
            max_iter=SIMULATED_RISK_MAX_ITER,
            learning_rate=SIMULATED_RISK_LEARNING_RATE,
            min_samples_leaf=SIMULATED_RISK_MIN_SAMPLES_LEAF,
            random_state=random_state,
        )
    )
    require_both_classes("simulated", y[train], y[test])
    gpu = rows["cluster"].astype(str) + "/" + rows["node"].astype(str) + "/" + rows["gpu_index"].astype(str)
    model.fit(rows[train], y[train], groups=gpu.to_numpy()[train])
    return score_risk("simulated", y[train], y[test], model.predict_risk(rows[test]))
