"""Forecasts page logic: the store's forecasts (`twin.store.forecasts`, written by the predictors) → power
band, failure-risk ranking of GPUs and nodes, job durations with intervals. No Streamlit here.

Rows (`ForecastRow`): kind (power | failure | duration), cluster, scope (cluster | node | gpu | job),
target (the cluster, a node, `node/index`, a job id), made_at_ts, horizon_s, p10/p50/p90 in `unit`
(W for power; the probability of a failure within the horizon in p50; for a duration, the job's remaining
time in s from made_at_ts). The module is imported lazily: a store without it, or without rows, gives an
empty state that says how to make forecasts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Final

import pandas as pd
from sqlalchemy.exc import SQLAlchemyError

from twin.errors import TwinError
from twin.store.repository import Store

COLUMNS: Final = (
    "kind",
    "cluster",
    "scope",
    "target",
    "made_at_ts",
    "horizon_s",
    "p10",
    "p50",
    "p90",
    "unit",
)
HOW_TO_FORECAST: Final = (
    "No forecasts in the store yet. The predictors write them from the store's history "
    "(`twin models train --db URL`, then `twin models forecast --db URL`); until then "
    "this page shows the failure precursors in the live telemetry and, with `--sim-spec`, the simulation's "
    "projection of the live jobs."
)


@dataclass(frozen=True, slots=True)
class ForecastData:
    """The forecasts of one cluster (COLUMNS), newest first, or why there are none."""

    frame: pd.DataFrame
    reason: str | None = None

    @property
    def empty(self) -> bool:
        return self.frame.empty


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=list(COLUMNS))


def read_forecasts(store: Store, cluster: str) -> ForecastData:
    """Every stored forecast of `cluster`; an empty frame with the reason when there is none."""
    try:
        module = importlib.import_module("twin.store.forecasts")
    except ImportError as exc:
        return ForecastData(_empty(), f"forecasts are not available in this build ({exc})")
    try:
        raw = module.forecast_frame(store, cluster=cluster)
    except (SQLAlchemyError, TwinError) as exc:
        return ForecastData(_empty(), f"forecasts cannot be read: {type(exc).__name__}: {exc}")
    frame = pd.DataFrame(raw, columns=list(COLUMNS)) if len(raw) else _empty()
    for column in ("made_at_ts", "horizon_s", "p10", "p50", "p90"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    if frame.empty:
        return ForecastData(frame, HOW_TO_FORECAST)
    return ForecastData(frame)


def newest_run(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows of `kind` from its newest forecast run (made_at_ts), sorted by target and horizon, with
    `at_ts` = made_at_ts + horizon_s."""
    rows = frame[frame["kind"] == kind]
    if rows.empty:
        return rows.assign(at_ts=pd.Series(dtype="float64"))
    out = rows[rows["made_at_ts"] == rows["made_at_ts"].max()].copy()
    out["at_ts"] = out["made_at_ts"] + out["horizon_s"]
    ordered: pd.DataFrame = out.sort_values(["target", "horizon_s"], ignore_index=True)
    return ordered


def power_band(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest cluster power forecast as at_ts, p10, p50, p90 (W). Without a cluster-scope forecast,
    the node forecasts summed per time (their quantiles summed: a wider band than the cluster's own)."""
    rows = newest_run(frame, "power")
    cluster_rows = rows[rows["scope"] == "cluster"]
    chosen = (
        cluster_rows
        if len(cluster_rows)
        else rows.groupby("at_ts", as_index=False)[["p10", "p50", "p90"]].sum()
    )
    out = pd.DataFrame(chosen, columns=["at_ts", "p10", "p50", "p90"])
    out["p10"] = out["p10"].fillna(out["p50"])
    out["p90"] = out["p90"].fillna(out["p50"])
    return out.sort_values("at_ts", ignore_index=True)


def failure_ranking(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The newest failure forecasts ranked by probability (p50), highest first: (GPUs, nodes); a target's
    longest horizon counts."""
    rows = newest_run(frame, "failure")
    if rows.empty:
        return rows, rows
    per_target = rows.sort_values("horizon_s").groupby(["scope", "target"], as_index=False).last()
    ranked = per_target.sort_values(["p50", "target"], ascending=[False, True], ignore_index=True)
    gpus = ranked[ranked["scope"] == "gpu"].reset_index(drop=True)
    nodes = ranked[ranked["scope"] == "node"].reset_index(drop=True)
    return gpus, nodes


def duration_predictions(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest remaining-duration forecast per job (s) with its ETA P10/P50/P90 (unix s), soonest first."""
    rows = newest_run(frame, "duration")
    if rows.empty:
        return rows
    out = rows.groupby("target", as_index=False).last()
    for q in ("p10", "p50", "p90"):
        out[f"eta_{q}_ts"] = out["made_at_ts"] + out[q]
    ordered: pd.DataFrame = out.sort_values("p50", ignore_index=True)
    return ordered


def failure_risks(frame: pd.DataFrame) -> list[tuple[str, float]]:
    """(target, probability) of the newest failure forecasts, for the live page's alerts."""
    gpus, nodes = failure_ranking(frame)
    return [
        (str(t), float(p)) for part in (gpus, nodes) for t, p in zip(part["target"], part["p50"], strict=True)
    ]
