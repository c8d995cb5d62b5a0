"""twin.store.forecasts and twin.predictors' forecast helpers: idempotent writes, the newest run,
validation, and power and GPU-risk forecasts from the store's telemetry."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.failure import TELEMETRY_RISK_FEATURES, FailureRiskModel, telemetry_risk_dataset
from models.power import PowerForecaster
from twin.predictors import (
    SimulatedHistory,
    forecast_failure_risk,
    forecast_power,
    simulate_risk_history,
    write_telemetry,
)
from twin.store.forecasts import (
    Forecast,
    delete_forecasts_before,
    forecast_frame,
    read_forecasts,
    write_forecasts,
)
from twin.store.repository import Store
from twin.store.urls import StoreError


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'twin.db'}")


def power(made_at: float, p50: float, target: str = "n01", horizon: float = 900.0) -> Forecast:
    return Forecast("power", "demo", "node", target, made_at, horizon, p50, p10=p50 - 10, p90=p50 + 10)


def test_writes_are_idempotent_and_newest_only_reads_the_latest_run(store: Store) -> None:
    assert write_forecasts(store, [power(100.0, 500.0), power(200.0, 600.0), power(200.0, 610.0, "n02")]) == 3
    assert write_forecasts(store, [power(200.0, 650.0)]) == 1  # same identity: replaced
    risk = Forecast("failure", "demo", "gpu", "n01/3", 150.0, 3600.0, 0.02, unit="probability")
    write_forecasts(store, [risk])
    rows = read_forecasts(store, newest_only=True)
    assert [(r["kind"], r["target"], r["made_at_ts"], r["p50"]) for r in rows] == [
        ("power", "n01", 200.0, 650.0),
        ("power", "n02", 200.0, 610.0),
        ("failure", "n01/3", 150.0, 0.02),
    ]
    assert len(read_forecasts(store, kind="power")) == 3
    assert len(read_forecasts(store, kind="power", target="n01", newest_only=True)) == 1
    frame = forecast_frame(store, kind="failure")
    assert frame["p10"].isna().all()
    assert delete_forecasts_before(store, 200.0) == 2
    assert len(read_forecasts(store)) == 2


@pytest.mark.parametrize(
    ("forecast", "message"),
    [
        (Forecast("weather", "c", "node", "n", 1.0, 60.0, 1.0), "kind"),
        (Forecast("power", "c", "rack", "n", 1.0, 60.0, 1.0), "scope"),
        (Forecast("power", "c", "node", "", 1.0, 60.0, 1.0), "target"),
        (Forecast("power", "c", "node", "n", float("nan"), 60.0, 1.0), "made_at_ts"),
        (Forecast("power", "c", "node", "n", 1.0, -1.0, 1.0), "horizon_s"),
        (Forecast("power", "c", "node", "n", 1.0, 60.0, 1.0, p10=2.0), "p10"),
    ],
)
def test_bad_forecasts_name_the_field(store: Store, forecast: Forecast, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        write_forecasts(store, [forecast])


def test_power_forecasts_from_the_store(small_history: SimulatedHistory, store: Store) -> None:
    telemetry = small_history.telemetry
    model = PowerForecaster(max_iter=30, random_state=0).fit(telemetry)
    tail = telemetry[telemetry["ts"] >= telemetry["ts"].max() - 2 * 3600]
    write_telemetry(store, tail)
    now = float(tail["ts"].max())
    nodes = tail["node"].nunique()
    assert forecast_power(store, model, "power-0001", now_ts=now) == 3 * (nodes + 1)
    rows = read_forecasts(store, kind="power", newest_only=True)
    assert {r["scope"] for r in rows} == {"node", "cluster"}
    assert all(r["p10"] <= r["p50"] <= r["p90"] and r["unit"] == "W" for r in rows)
    assert {r["model_version"] for r in rows} == {"power-0001"}


def test_gpu_risk_forecasts_from_the_store(store: Store) -> None:
    telemetry = simulate_risk_history(nodes=8, hours=6.0, failure_rate_scale=2000.0, seed=3)
    rows = telemetry_risk_dataset(telemetry)
    model = FailureRiskModel(TELEMETRY_RISK_FEATURES, max_iter=10, cv=2, random_state=0)
    model.fit(rows, rows["label"].to_numpy())
    write_telemetry(store, telemetry[telemetry["ts"] >= telemetry["ts"].max() - 3600])
    written = forecast_failure_risk(store, model, "gpu-risk-0001", now_ts=float(telemetry["ts"].max()))
    stored = read_forecasts(store, kind="failure")
    assert written == len(stored) > 0
    assert all(0.0 <= r["p50"] <= 1.0 and r["scope"] == "gpu" and "/" in r["target"] for r in stored)
