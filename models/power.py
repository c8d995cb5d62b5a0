# scikit-learn and joblib ship no type stubs (mypy: import-untyped); their names are typed Any here.
"""Power-draw forecasts per node and per cluster, 1 min to 1 h ahead, with P10/P50/P90 (DataFrames in).

Input: GPU telemetry rows (`cluster, node, gpu_index, ts, power_w`, optionally `gpu_util_pct,
mem_util_pct, temp_c` — the store's `telemetry_frame` columns) and, optionally, the caller's physics
estimate of each node's power per time (`cluster, node, ts, physics_power_w`: the performance core's
power for the jobs scheduled on the node, idle power elsewhere), which may reach into the future.

Telemetry is folded into buckets of `bucket_s` (60 s): a node's power in a bucket is the sum over its GPUs
of each GPU's mean sample — the 1-minute mean, since a single sample swings with the training step's
phases (compute ~98 % of TDP, pipeline bubble near idle). A cluster's power is the sum of its nodes.

The forecast made at the end of bucket t for horizon h is the mean power of the bucket that ends h later.
One quantile booster per horizon, shared by every node, learns the change from the current bucket's
power (a change is scale-free, so nodes of any size share a model) from: lags and rolling
mean/std/min/max of power (relative to now), GPU utilisation, busy GPUs and how long that count has held
(the job phase), memory utilisation, temperature and its trend, and, when given, the physics estimate
now and at the target time (scheduled load: a job that starts or ends in the next hour). A cluster's
forecast is bottom-up (`PowerForecaster`).

Baselines (`power_backtest`): persistence (the current bucket's power) and the physics estimate at the
target time. Split: by time, first `train_fraction` of the buckets to fit, the rest to test; training rows
whose target lies in the test period are dropped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from models._validation import check_quantiles, require_columns, require_frame
from models.errors import InsufficientHistoryError, ModelInputError
from models.quantile import (
    DEFAULT_N_THREADS,
    DEFAULT_QUANTILES,
    SEED_BOUND,
    QuantileGradientBoostingRegressor,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TELEMETRY_REQUIRED: Final = ("cluster", "node", "gpu_index", "ts", "power_w")
TELEMETRY_OPTIONAL: Final = ("gpu_util_pct", "mem_util_pct", "temp_c")
PHYSICS_REQUIRED: Final = ("cluster", "node", "ts", "physics_power_w")
LEVELS: Final = ("node", "cluster")  # the `level` column of a forecast

# Horizons of the issue: 1 min, 15 min, 1 h.
DEFAULT_HORIZONS_S: Final = (60.0, 900.0, 3600.0)
# Bucket: one minute, the shortest horizon (a training step is seconds, so a minute averages it out).
DEFAULT_BUCKET_S: Final = 60.0
# Look-back in buckets: 1, 2, 5, 15 and 60 minutes for lags; 5, 15 and 60 for rolling statistics.
# ASSUMPTION: the longest horizon's own length of history (1 h) is the longest pattern worth a feature.
DEFAULT_LAGS: Final = (1, 2, 5, 15, 60)
DEFAULT_WINDOWS: Final = (5, 15, 60)
# A GPU counts as busy in a bucket when its mean utilisation is at least this. Idle GPUs report 0 % and
# allocated ones 97–100 % in the Acme A100 fleet (sensors.fleet_profile), so any middle value splits them.
BUSY_UTIL_PCT: Final = 50.0
# Temperature trend: °C change over this many buckets (5 min ≈ 15 thermal time constants of 20 s,
# sensors.sim_telemetry, so a trend is a change of load, not the lag of the die).
TEMP_TREND_BUCKETS: Final = 5
# Fitting needs this many buckets with a known target beyond the look-back and the longest horizon.
# ASSUMPTION: an hour of targets per series is the least that lets a booster with 20-sample leaves split.
MIN_FIT_BUCKETS: Final = 60
# The newest fifth of the training rows calibrates the P10–P90 interval (conformal, models.quantile).
# ASSUMPTION: a fifth is the usual split-conformal hold-out; it costs the boosters a fifth of the data.
DEFAULT_CALIBRATION_FRACTION: Final = 0.2


# ---------------------------------------------------------------------------------------------- panel


@dataclass(frozen=True, slots=True)
class PowerPanel:
    """Per-series values on a regular bucket grid: arrays are (T buckets, S series).

    `keys` are (cluster, node) per series (node "" for a cluster series); `ts` the bucket starts (unix s).
    `physics` has T + `ahead` rows: the physics estimate reaches `ahead` buckets past the telemetry.
    """

    ts: FloatArray
    keys: tuple[tuple[str, str], ...]
    power_w: FloatArray
    gpus: FloatArray
    busy_gpus: FloatArray
    gpu_util_pct: FloatArray
    mem_util_pct: FloatArray
    temp_c: FloatArray
    physics_w: FloatArray | None
    bucket_s: float


def _series_codes(cluster: pd.Series, node: pd.Series) -> tuple[IntArray, list[tuple[str, str]]]:
    c_codes, c_names = pd.factorize(cluster.astype(str), sort=True)
    n_codes, n_names = pd.factorize(node.astype(str), sort=True)
    width = max(1, len(n_names))
    codes, uniques = pd.factorize(c_codes.astype(np.int64) * width + n_codes, sort=True)
    keys = [(str(c_names[int(p) // width]), str(n_names[int(p) % width])) for p in uniques]
    return codes.astype(np.int64), keys


def build_panel(
    telemetry: pd.DataFrame,
    physics: pd.DataFrame | None = None,
    *,
    bucket_s: float = DEFAULT_BUCKET_S,
    ahead_buckets: int = 0,
) -> PowerPanel:
    """Fold telemetry rows into a node panel of `bucket_s` buckets (see the module docstring).

    `physics` (optional) is bucketed onto the same grid extended `ahead_buckets` past the telemetry.
    """
    telemetry = require_frame(telemetry, "telemetry")
    require_columns(telemetry, TELEMETRY_REQUIRED, "telemetry")
    if not (isinstance(bucket_s, int | float) and math.isfinite(bucket_s) and bucket_s > 0):
        raise ModelInputError(f"bucket_s(={bucket_s!r}) must be a positive number of seconds.")
    ts = pd.to_numeric(telemetry["ts"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    power = pd.to_numeric(telemetry["power_w"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    keep = np.isfinite(ts) & np.isfinite(power)
    if not keep.any():
        raise InsufficientHistoryError("telemetry has no row with a finite ts and power_w.")
    frame = telemetry.loc[keep]
    ts, power = ts[keep], power[keep]
    series, keys = _series_codes(frame["cluster"], frame["node"])
    bucket = np.floor(ts / bucket_s).astype(np.int64)
    first = int(bucket.min())
    t_index = bucket - first
    n_t, n_s = int(t_index.max()) + 1, len(keys)

    def optional(name: str) -> FloatArray:
        if name not in frame.columns:
            return np.full(len(frame), np.nan)
        values = pd.to_numeric(frame[name], errors="coerce")
        return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)

    gpu_index = pd.to_numeric(frame["gpu_index"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(gpu_index).all() or (gpu_index < 0).any():
        raise ModelInputError("telemetry column 'gpu_index' must be an integer >= 0 on every row.")
    # Per GPU and bucket: the mean of its samples (NumPy group-by: one sort, then bincounts).
    width = int(gpu_index.max()) + 1
    cell = (series * n_t + t_index) * width + gpu_index.astype(np.int64)
    cells, inverse = np.unique(cell, return_inverse=True)
    gpu_power, _ = _group_mean(inverse, power, cells.size)
    gpu_util, _ = _group_mean(inverse, optional("gpu_util_pct"), cells.size)
    gpu_mem, _ = _group_mean(inverse, optional("mem_util_pct"), cells.size)
    gpu_temp, _ = _group_mean(inverse, optional("temp_c"), cells.size)
    # Per node and bucket: sum of the GPUs' mean power, mean of their other means, busy GPUs.
    node_cell = cells // width  # = series * n_t + t
    nodes, node_inverse = np.unique(node_cell, return_inverse=True)
    n_nodes = nodes.size
    busy = np.where(np.isnan(gpu_util), np.nan, (gpu_util >= BUSY_UTIL_PCT) * 1.0)
    busy_mean, busy_known = _group_mean(node_inverse, busy, n_nodes)
    s_idx, t_idx = nodes // n_t, nodes % n_t

    def grid(values: FloatArray) -> FloatArray:
        out = np.full((n_t, n_s), np.nan)
        out[t_idx, s_idx] = values
        return out

    gpus = np.bincount(node_inverse, minlength=n_nodes).astype(np.float64)
    physics_w = None
    if physics is not None:
        physics_w = _physics_grid(physics, keys, first, n_t + ahead_buckets, bucket_s)
    return PowerPanel(
        ts=np.asarray((first + np.arange(n_t)) * float(bucket_s), dtype=np.float64),
        keys=tuple(keys),
        power_w=grid(np.bincount(node_inverse, weights=gpu_power, minlength=n_nodes).astype(np.float64)),
        gpus=grid(gpus),
        busy_gpus=grid(np.where(busy_known > 0, busy_mean * busy_known, np.nan)),
        gpu_util_pct=grid(_group_mean(node_inverse, gpu_util, n_nodes)[0]),
        mem_util_pct=grid(_group_mean(node_inverse, gpu_mem, n_nodes)[0]),
        temp_c=grid(_group_mean(node_inverse, gpu_temp, n_nodes)[0]),
        physics_w=physics_w,
        bucket_s=float(bucket_s),
    )


def _group_mean(inverse: IntArray, values: FloatArray, groups: int) -> tuple[FloatArray, FloatArray]:
    """Per group: the mean of its non-NaN values (NaN when none) and how many there were."""
    known = ~np.isnan(values)
    count = np.bincount(inverse, weights=known.astype(np.float64), minlength=groups).astype(np.float64)
    total = np.bincount(inverse, weights=np.where(known, values, 0.0), minlength=groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(count > 0, total / count, np.nan), dtype=np.float64), count


def _physics_grid(
    physics: pd.DataFrame, keys: list[tuple[str, str]], first: int, rows: int, bucket_s: float
) -> FloatArray:
    """The physics estimate on the panel's grid (`rows` buckets from bucket `first`), mean per bucket."""
    physics = require_frame(physics, "physics")
    require_columns(physics, PHYSICS_REQUIRED, "physics")
    ts = pd.to_numeric(physics["ts"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    t_all = np.floor(ts / bucket_s) - first
    window = np.isfinite(t_all) & (t_all >= 0) & (t_all < rows)  # only the rows the grid holds
    physics, t_idx = physics.loc[window], t_all[window].astype(np.int64)
    value = pd.to_numeric(physics["physics_power_w"], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    wanted = pd.MultiIndex.from_tuples(keys, names=["cluster", "node"])
    given = pd.MultiIndex.from_arrays([physics["cluster"].astype(str), physics["node"].astype(str)])
    s_idx = wanted.get_indexer(given)
    ok = (s_idx >= 0) & np.isfinite(value)
    cell = t_idx[ok] * len(keys) + s_idx[ok]
    cells, inverse = np.unique(cell, return_inverse=True)
    means, _ = _group_mean(inverse, value[ok], cells.size)
    out = np.full((rows, len(keys)), np.nan)
    out[cells // len(keys), cells % len(keys)] = means
    return out


# ------------------------------------------------------------------------------------------- features


def _ffill(a: FloatArray) -> FloatArray:
    return np.asarray(pd.DataFrame(a).ffill().to_numpy(dtype=np.float64))


def _shift(a: FloatArray, k: int) -> FloatArray:
    """a[t − k] (k > 0: the past; k < 0: the future), NaN outside."""
    out = np.full_like(a, np.nan)
    if k > 0:
        out[k:] = a[:-k]
    elif k < 0:
        out[:k] = a[-k:]
    else:
        out[:] = a
    return out


def _run_length(a: FloatArray, cap: int) -> FloatArray:
    """Buckets for which each series' value has equalled its current one (capped at `cap`)."""
    out = np.zeros_like(a)
    for t in range(1, a.shape[0]):
        same = (a[t] == a[t - 1]) | (np.isnan(a[t]) & np.isnan(a[t - 1]))
        out[t] = np.where(same, np.minimum(out[t - 1] + 1, cap), 0)
    return out


def feature_names(lags: Sequence[int], windows: Sequence[int], physics: bool) -> list[str]:
    names = ["power_w", "gpus", "busy_fraction", "busy_run_buckets", "gpu_util_pct", "mem_util_pct"]
    names += ["temp_c", "temp_trend_c"]
    names += [f"lag{k}_delta_w" for k in lags]
    for w in windows:
        names += [f"mean{w}_delta_w", f"std{w}_w", f"min{w}_delta_w", f"max{w}_delta_w"]
    if physics:
        names += ["physics_now_w", "physics_target_w", "physics_change_w", "physics_gap_w"]
    return names


# Below this many buckets to featurise, windows are cut out with NumPy; above, pandas' rolling windows
# (vectorised over the whole history) are faster. Both give the same numbers (tests/models/test_power.py).
ROLLING_ROWS: Final = 8


@dataclass(frozen=True, slots=True)
class PanelFeatures:
    """The horizon-free features of the buckets `t` (all series of each, time-major rows) and the anchor
    (the current bucket's power, forward-filled over silent buckets)."""

    t: IntArray
    X: FloatArray
    anchor: FloatArray


def base_features(
    panel: PowerPanel, lags: Sequence[int], windows: Sequence[int], t: IntArray | None = None
) -> PanelFeatures:
    """Horizon-free features (the non-physics part of `feature_names`) of buckets `t` (default: all)."""
    p = panel.power_w
    n_t = p.shape[0]
    rows_t = np.arange(n_t) if t is None else np.asarray(t, dtype=np.int64)
    cap = max([*lags, *windows])
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        anchor = _ffill(p)
        columns: list[FloatArray] = [
            anchor[rows_t],
            panel.gpus[rows_t],
            (panel.busy_gpus / panel.gpus)[rows_t],
            _run_length(panel.busy_gpus, cap)[rows_t],
            panel.gpu_util_pct[rows_t],
            panel.mem_util_pct[rows_t],
            panel.temp_c[rows_t],
            (panel.temp_c - _shift(panel.temp_c, TEMP_TREND_BUCKETS))[rows_t],
        ]
        a = anchor[rows_t]
        columns += [_shift(p, k)[rows_t] - a for k in lags]
        if rows_t.size > ROLLING_ROWS:
            frame = pd.DataFrame(p)
            for w in windows:
                rolling = frame.rolling(w, min_periods=1)
                columns += [
                    rolling.mean().to_numpy()[rows_t] - a,
                    rolling.std(ddof=0).to_numpy()[rows_t],
                    rolling.min().to_numpy()[rows_t] - a,
                    rolling.max().to_numpy()[rows_t] - a,
                ]
        else:
            for w in windows:
                blocks = np.stack([p[max(0, i - w + 1) : i + 1] for i in rows_t.tolist()])  # (R, ≤w, S)
                if blocks.ndim == 3:
                    stats = [
                        np.nanmean(blocks, 1),
                        np.nanstd(blocks, 1),
                        np.nanmin(blocks, 1),
                        np.nanmax(blocks, 1),
                    ]
                else:  # windows of unequal length (near the start): one bucket at a time
                    stats = [
                        np.stack([f(p[max(0, i - w + 1) : i + 1], axis=0) for i in rows_t.tolist()])
                        for f in (np.nanmean, np.nanstd, np.nanmin, np.nanmax)
                    ]
                columns += [stats[0] - a, stats[1], stats[2] - a, stats[3] - a]
    X = np.stack([c.reshape(-1) for c in columns], axis=1)
    return PanelFeatures(rows_t, X, a.reshape(-1))


def horizon_features(
    panel: PowerPanel, base: PanelFeatures, horizon_buckets: int, physics: bool
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The full feature matrix for one horizon, the target change (power at t + horizon − anchor; NaN
    past the data) and the physics estimate at the target (NaN without physics)."""
    p = panel.power_w
    n_t, n_s = p.shape
    future = base.t + horizon_buckets
    inside = future < n_t
    target = np.full((base.t.size, n_s), np.nan)
    target[inside] = p[future[inside]]
    target = target.reshape(-1) - base.anchor
    physics_target = np.full(base.t.size * n_s, np.nan)
    if not physics:
        return base.X, target, physics_target
    if panel.physics_w is None:
        raise ModelInputError("this forecaster was fitted with physics_power_w; pass physics=.")
    ext = panel.physics_w
    reach = future < ext.shape[0]
    at_target = np.full((base.t.size, n_s), np.nan)
    at_target[reach] = ext[future[reach]]
    physics_target = at_target.reshape(-1)
    now = ext[base.t].reshape(-1)
    extra = np.stack([now, physics_target, physics_target - now, base.anchor - now], axis=1)
    return np.concatenate([base.X, extra], axis=1), target, physics_target


# ----------------------------------------------------------------------------------------- estimator


def quantile_columns(quantiles: Sequence[float], unit: str = "w") -> list[str]:
    """Column names of forecast quantiles: 0.1 → "p10_w"."""
    return [f"p{round(q * 100)}_{unit}" for q in quantiles]


class PowerForecaster(BaseEstimator):  # type: ignore[misc]
    """Node and cluster power forecasts for `horizons_s`, quantiles `quantiles` (see module docstring).

    One quantile booster per horizon, shared by every node. A cluster's forecast is bottom-up: the sum of
    its nodes' medians, plus the quantiles of that sum's error on the held-out newest training rows
    (`calibration_fraction`; in-sample errors when it is 0) — measured 1.5–2.8× more accurate than a
    booster fitted on the one cluster series, which has a node-count times fewer rows.

    `fit(telemetry, physics=None)`; `predict(recent_telemetry, physics=None)` returns one row per
    (level, series, horizon) made at the end of the newest bucket. With physics at fit, `predict` needs
    physics reaching the longest horizon past the telemetry. Booster parameters (and the conformal
    `calibration_fraction`, `n_threads`) are those of `QuantileGradientBoostingRegressor`; `random_state`
    seeds them.
    """

    def __init__(
        self,
        horizons_s: Sequence[float] = DEFAULT_HORIZONS_S,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        *,
        bucket_s: float = DEFAULT_BUCKET_S,
        lags: Sequence[int] = DEFAULT_LAGS,
        windows: Sequence[int] = DEFAULT_WINDOWS,
        max_iter: int = 150,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 40,
        calibration_fraction: float = DEFAULT_CALIBRATION_FRACTION,
        n_threads: int | None = DEFAULT_N_THREADS,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.horizons_s = horizons_s
        self.quantiles = quantiles
        self.bucket_s = bucket_s
        self.lags = lags
        self.windows = windows
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.calibration_fraction = calibration_fraction
        self.n_threads = n_threads
        self.random_state = random_state

    # --- parameters -------------------------------------------------------------------------------

    def _validated(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(horizons in buckets, lags, windows) or `ModelInputError` naming the parameter."""
        bucket = self.bucket_s
        if isinstance(bucket, bool) or not (
            isinstance(bucket, int | float) and math.isfinite(bucket) and bucket > 0
        ):
            raise ModelInputError(f"bucket_s(={bucket!r}) must be a positive number of seconds.")
        horizons = []
        for h in self.horizons_s:
            k = float(h) / bucket
            if not (math.isfinite(k) and k >= 1 and abs(k - round(k)) < 1e-9):
                raise ModelInputError(f"horizons_s entry(={h!r}) must be a positive multiple of bucket_s.")
            horizons.append(round(k))
        if not horizons or len(set(horizons)) != len(horizons):
            raise ModelInputError(f"horizons_s(={self.horizons_s!r}) must be distinct and not empty.")
        for name, values, least in (("lags", self.lags, 1), ("windows", self.windows, 2)):
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < least for v in values):
                raise ModelInputError(f"{name}(={values!r}) must be integers >= {least}.")
        return tuple(sorted(horizons)), tuple(self.lags), tuple(self.windows)

    def _lookback(self) -> int:
        return max([*self.lags, *self.windows, TEMP_TREND_BUCKETS])

    def _fit_needs(self) -> int:
        horizons, _, _ = self._validated()
        return self._lookback() + max(horizons) + MIN_FIT_BUCKETS

    # --- fit --------------------------------------------------------------------------------------

    def fit(
        self, telemetry: pd.DataFrame, y: None = None, physics: pd.DataFrame | None = None
    ) -> PowerForecaster:
        """Fit on GPU telemetry (and the physics estimate, optional); `y` is unused (the target is the
        telemetry's own future)."""
        check_quantiles(self.quantiles)
        needed = self._fit_needs()
        panel = build_panel(telemetry, physics, bucket_s=float(self.bucket_s))
        if panel.ts.size < needed:
            raise InsufficientHistoryError(
                f"too little history to fit the power forecaster: it needs at least "
                f"{needed * self.bucket_s:,.0f} s of telemetry ({needed} buckets of {self.bucket_s:g} s: "
                f"{self._lookback()} of look-back, {needed - self._lookback() - MIN_FIT_BUCKETS} for the "
                f"longest horizon, {MIN_FIT_BUCKETS} to learn from); "
                f"got {panel.ts.size * self.bucket_s:,.0f} s."
            )
        return self._fit_panel(panel, panel.ts.size)

    def _fit_panel(self, panel: PowerPanel, train_end: int) -> PowerForecaster:
        """Fit on rows whose anchor and target both lie before bucket index `train_end`."""
        horizons, lags, windows = self._validated()
        self.quantiles_ = check_quantiles(self.quantiles)
        self.uses_physics_ = panel.physics_w is not None
        self.feature_names_ = feature_names(lags, windows, self.uses_physics_)
        self.n_features_in_ = len(self.feature_names_)
        self.horizons_s_ = tuple(k * float(self.bucket_s) for k in horizons)
        self.min_history_s_ = (self._lookback() + 1) * float(self.bucket_s)
        self.estimators_: dict[float, QuantileGradientBoostingRegressor] = {}
        self.cluster_residual_w_: dict[float, FloatArray] = {}
        self.n_train_rows_: dict[float, int] = {}
        rng = check_random_state(self.random_state)
        n_s = len(panel.keys)
        t_of_row = np.repeat(np.arange(panel.ts.size), n_s)
        base = base_features(panel, lags, windows)
        anchor = base.anchor
        for k in horizons:
            h = k * float(self.bucket_s)
            X, target, _ = horizon_features(panel, base, k, self.uses_physics_)
            rows = np.flatnonzero((t_of_row + k < train_end) & np.isfinite(target) & np.isfinite(anchor))
            if rows.size < MIN_FIT_BUCKETS:
                raise InsufficientHistoryError(
                    f"too little history to fit the power forecaster at {h:g} s: {rows.size} rows with a "
                    f"known target; it needs {MIN_FIT_BUCKETS}."
                )
            est = QuantileGradientBoostingRegressor(
                self.quantiles_,
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf,
                calibration_fraction=self.calibration_fraction,
                n_threads=self.n_threads,
                random_state=int(rng.randint(SEED_BOUND)),
            ).fit(X[rows], target[rows])
            self.estimators_[h] = est
            self.n_train_rows_[h] = int(rows.size)
            held_out = rows[rows.size - est.n_calibration_rows_ :] if est.n_calibration_rows_ else rows
            median = est.predict(X[held_out]) + anchor[held_out]
            _, predicted, actual = _cluster_sums(panel, held_out, median, target[held_out] + anchor[held_out])
            residual = (actual - predicted)[np.isfinite(actual)]
            if residual.size == 0:
                raise InsufficientHistoryError(
                    f"too little history to calibrate the cluster forecast at {h:g} s: no bucket has every "
                    "node's target; give a longer history."
                )
            self.cluster_residual_w_[h] = np.quantile(residual, self.quantiles_)
        return self

    # --- predict ----------------------------------------------------------------------------------

    def predict(self, telemetry: pd.DataFrame, physics: pd.DataFrame | None = None) -> pd.DataFrame:
        """Forecasts made at the end of the newest bucket of `telemetry` (give at least `min_history_s_`).

        Columns: level ("node" or "cluster"), cluster, node ("" for a cluster), made_at_ts, horizon_s,
        p10_w…p90_w (one per quantile), current_w (the persistence baseline), physics_w (the physics
        estimate at the target; NaN without physics). A cluster sums the nodes that reported in the
        look-back.
        """
        check_is_fitted(self, "estimators_")
        telemetry = require_frame(telemetry, "telemetry")
        require_columns(telemetry, TELEMETRY_REQUIRED, "telemetry")
        if self.uses_physics_ and physics is None:
            raise ModelInputError("this forecaster was fitted with physics_power_w; pass physics=.")
        bucket = float(self.bucket_s)
        lookback = self._lookback() + 1
        ts = pd.to_numeric(telemetry["ts"], errors="coerce")
        newest = float(ts.max()) if len(ts) else math.nan
        if not math.isfinite(newest):
            raise InsufficientHistoryError("telemetry has no row with a finite ts.")
        since = (math.floor(newest / bucket) - lookback + 1) * bucket
        oldest = float(ts.min())
        if oldest > since:
            have = (math.floor(newest / bucket) - math.floor(oldest / bucket) + 1) * bucket
            raise InsufficientHistoryError(
                f"too little history to forecast power: it needs at least {self.min_history_s_:,.0f} s of "
                f"telemetry ({lookback} buckets of {bucket:g} s); got {have:,.0f} s."
            )
        recent = telemetry.loc[ts >= since]
        ahead = round(max(self.horizons_s_) / bucket)
        panel = build_panel(
            recent, physics if self.uses_physics_ else None, bucket_s=bucket, ahead_buckets=ahead
        )
        return self._predict_rows(panel, panel.ts.size - 1).drop(columns="actual_w")

    def _predict_rows(self, panel: PowerPanel, start: int) -> pd.DataFrame:
        """Node and cluster forecasts for every bucket index ≥ `start`, with the actual (NaN if unknown)."""
        _, lags, windows = self._validated()
        names = quantile_columns(self.quantiles_)
        median_at = self.quantiles_.index(0.5)
        n_s = len(panel.keys)
        base = base_features(panel, lags, windows, np.arange(start, panel.ts.size))
        t_of_row = np.repeat(base.t, n_s)
        s_of_row = np.tile(np.arange(n_s), base.t.size)
        clusters = np.array([c for c, _ in panel.keys], dtype=object)
        nodes = np.array([n for _, n in panel.keys], dtype=object)
        parts = []
        for h, est in self.estimators_.items():
            k = round(h / float(self.bucket_s))
            X, target, physics_target = horizon_features(panel, base, k, self.uses_physics_)
            rows = np.flatnonzero(np.isfinite(base.anchor))
            anchor = base.anchor[rows]
            q = np.maximum(est.predict_quantiles(X[rows]) + anchor[:, None], 0.0)  # never negative
            actual = target[rows] + anchor
            node = pd.DataFrame(
                {
                    "level": "node",
                    "cluster": clusters[s_of_row[rows]],
                    "node": nodes[s_of_row[rows]],
                    "made_at_ts": panel.ts[t_of_row[rows]] + panel.bucket_s,
                    "horizon_s": h,
                }
            )
            node[names] = q
            node["current_w"] = anchor
            node["physics_w"] = physics_target[rows]
            node["actual_w"] = actual
            row_index = (t_of_row[rows]) * n_s + s_of_row[rows]
            keys, predicted, actual_sum = _cluster_sums(
                panel, row_index, q[:, median_at], actual, complete=False
            )
            _, current, physics_sum = _cluster_sums(
                panel, row_index, anchor, physics_target[rows], complete=False
            )
            cluster = pd.DataFrame(
                {
                    "level": "cluster",
                    "cluster": clusters[keys[:, 0]] if keys.size else np.array([], dtype=object),
                    "node": "",
                    "made_at_ts": panel.ts[keys[:, 1]] + panel.bucket_s,
                    "horizon_s": h,
                }
            )
            cluster[names] = np.maximum(predicted[:, None] + self.cluster_residual_w_[h][None, :], 0.0)
            cluster["current_w"] = current
            cluster["physics_w"] = physics_sum
            cluster["actual_w"] = actual_sum
            parts += [node, cluster]
        out: pd.DataFrame = pd.concat(parts, ignore_index=True)
        return out


def _cluster_sums(
    panel: PowerPanel, rows: IntArray, predicted: FloatArray, actual: FloatArray, *, complete: bool = True
) -> tuple[IntArray, FloatArray, FloatArray]:
    """Per (cluster, bucket) over the node rows `rows` (time-major row indices t·S + s of `panel`): the
    (first member series, t) keys, the sums of `predicted` and of `actual`. A sum of `actual` is NaN
    unless every node of the cluster has a row with a finite value; `complete` keeps only such buckets.

    Keys hold the index of a member series (to look its cluster up) and the bucket index."""
    n_s = len(panel.keys)
    names = [c for c, _ in panel.keys]
    code_of = {name: i for i, name in enumerate(dict.fromkeys(names))}
    series_cluster = np.array([code_of[c] for c in names], dtype=np.int64)
    first_member = np.array([names.index(c) for c in code_of], dtype=np.int64)
    members = np.bincount(series_cluster, minlength=len(code_of))
    group = (rows // n_s) * len(code_of) + series_cluster[rows % n_s]
    groups, inverse = np.unique(group, return_inverse=True)
    predicted_sum = np.bincount(inverse, weights=predicted, minlength=groups.size).astype(np.float64)
    known = np.isfinite(actual)
    known_sum = np.bincount(inverse, weights=np.where(known, actual, 0.0), minlength=groups.size)
    counted = np.bincount(inverse, weights=known.astype(np.float64), minlength=groups.size)
    whole = counted == members[groups % len(code_of)]
    actual_sum = np.where(whole, known_sum, np.nan).astype(np.float64)
    keys = np.stack([first_member[groups % len(code_of)], groups // len(code_of)], axis=1).astype(np.int64)
    if complete:
        return keys[whole], predicted_sum[whole], actual_sum[whole]
    return keys, predicted_sum, actual_sum


# ----------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class PowerScore:
    """Held-out errors of one (level, horizon), W, on the same rows for the model and the baselines."""

    level: str
    horizon_s: float
    n_test: int
    mae_w: float
    persistence_mae_w: float
    physics_mae_w: float | None
    interval_coverage: float  # share of actuals inside [lowest, highest quantile]

    @property
    def baseline_mae_w(self) -> float:
        """The better baseline's MAE."""
        values = [self.persistence_mae_w] + ([self.physics_mae_w] if self.physics_mae_w is not None else [])
        return min(values)


def power_backtest(
    telemetry: pd.DataFrame,
    physics: pd.DataFrame | None = None,
    *,
    forecaster: PowerForecaster | None = None,
    train_fraction: float = 0.7,
) -> tuple[list[PowerScore], pd.DataFrame]:
    """Fit on the first `train_fraction` of the buckets, forecast every later bucket, score against the
    persistence and physics baselines. Returns the scores per (level, horizon) and the test forecasts
    (with `actual_w`)."""
    if not 0.0 < train_fraction < 1.0:
        raise ModelInputError(f"train_fraction(={train_fraction!r}) must be in (0, 1).")
    model = forecaster if forecaster is not None else PowerForecaster(random_state=0)
    horizons, _, _ = model._validated()
    needed = model._fit_needs()
    panel = build_panel(telemetry, physics, bucket_s=float(model.bucket_s))
    split = int(panel.ts.size * train_fraction)
    if split < needed or panel.ts.size - split <= max(horizons):
        total = math.ceil(max(needed / train_fraction, needed + max(horizons) + 1))
        raise InsufficientHistoryError(
            f"too little history to backtest the power forecaster: it needs at least "
            f"{total * model.bucket_s:,.0f} s of telemetry ({total} buckets of {model.bucket_s:g} s); "
            f"got {panel.ts.size * model.bucket_s:,.0f} s."
        )
    model._fit_panel(panel, split)
    forecasts = model._predict_rows(panel, split)
    names = quantile_columns(model.quantiles_)
    lo, hi, median = names[0], names[-1], names[model.quantiles_.index(0.5)]
    scores = []
    for (level, h), group in forecasts.groupby(["level", "horizon_s"], sort=False):
        ok = np.isfinite(group["actual_w"]) & np.isfinite(group["current_w"])
        if physics is not None:
            ok &= np.isfinite(group["physics_w"])
        g = group[ok]
        actual = g["actual_w"].to_numpy()
        scores.append(
            PowerScore(
                level=str(level),
                horizon_s=float(cast(float, h)),
                n_test=len(g),
                mae_w=float(np.mean(np.abs(g[median].to_numpy() - actual))),
                persistence_mae_w=float(np.mean(np.abs(g["current_w"].to_numpy() - actual))),
                physics_mae_w=None
                if physics is None
                else float(np.mean(np.abs(g["physics_w"].to_numpy() - actual))),
                interval_coverage=float(np.mean((g[lo] <= actual) & (actual <= g[hi]))),
            )
        )
    return scores, forecasts
