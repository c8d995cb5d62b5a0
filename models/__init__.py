"""Predictors of power draw, job duration and failure risk: scikit-learn estimators, DataFrames in.

`models` imports nothing else of ours (DESIGN §1); the twin feeds it (`twin.predictors`), persists it
(`twin.model_registry`) and stores its forecasts (`twin.store.forecasts`).

- `models.power.PowerForecaster`: node and cluster power, 1 min / 15 min / 1 h ahead, P10/P50/P90;
  `power_backtest` scores it against persistence and the physics estimate on a time split.
- `models.duration.JobDurationModel`: job duration quantiles (hybrid with the analytic estimate when given);
  `evaluate_jobs` scores it and the job-failure classifier on the Alibaba 2023 pods.
- `models.failure.FailureRiskModel`: calibrated failure probability; `evaluate_titan` (OLCF Titan GPU
  lifetimes, censoring-aware landmarks) and `evaluate_telemetry_risk` (simulated precursors).
- Array-level estimators: `models.quantile.QuantileGradientBoostingRegressor`,
  `models.calibrated.CalibratedBoostingClassifier`; baselines in `models.baselines`.
- Errors (`models.errors`): `ModelInputError` (a `ValueError`), `MissingColumnsError`,
  `InsufficientHistoryError`. An unfitted estimator raises scikit-learn's `NotFittedError`.

Import the submodules (this package imports nothing heavy itself).
"""
