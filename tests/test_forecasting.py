"""Periodic forecasts: predictors loaded from a registry, written to the store by `twin serve`."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from twin.cli import main
from twin.demo_forecasts import train_demo_predictors
from twin.forecasting import forecast_loop, forecast_once, load_predictors
from twin.model_registry import RegistryError
from twin.store.forecasts import delete_forecasts_before, forecast_frame
from twin.store.repository import Store

CLUSTER = "demo"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A store holding 3 h of simulated history and a registry with the power and GPU-risk models."""
    folder = tmp_path_factory.mktemp("forecasting")
    db = f"sqlite:///{folder / 'twin.db'}"
    train_demo_predictors(db, CLUSTER, folder / "models", live_start_ts=time.time(), seed=1, gpu="h100-sxm")
    return db, folder / "models"


def test_predictors_load_from_the_registry_and_forecast_from_the_store(trained: tuple[str, Path]) -> None:
    db, registry = trained
    predictors = load_predictors(registry)
    assert predictors.power_version == "power-0001"
    assert predictors.risk_version == "gpu-risk-0001"
    written = forecast_once(db, CLUSTER, predictors)
    assert written["power"] == 17 * 3  # 16 nodes and the cluster, 3 horizons
    assert written["failure"] == 128
    with Store.open(db) as store:
        frame = forecast_frame(store, cluster=CLUSTER)
    cluster_rows = frame[(frame["kind"] == "power") & (frame["scope"] == "cluster")]
    assert ((cluster_rows["p10"] <= cluster_rows["p50"]) & (cluster_rows["p50"] <= cluster_rows["p90"])).all()
    assert frame[frame["kind"] == "failure"]["p50"].between(0, 1).all()


def test_a_failed_round_is_logged_and_the_loop_goes_on(
    trained: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, registry = trained
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    forecast_loop("sqlite:////nonexistent/dir/x.db", CLUSTER, load_predictors(registry), stop, every_s=0.1)
    assert "forecast round failed" in caplog.text  # more than one round ran, each failure logged


def test_twin_serve_writes_forecasts_periodically(trained: tuple[str, Path], tmp_path: Path) -> None:
    db, registry = trained
    with Store.open(db) as store:
        delete_forecasts_before(store, time.time() + 86_400)  # every forecast so far
        assert forecast_frame(store, cluster=CLUSTER).empty
    out = io.StringIO()
    argv = ["serve", "--db", db, "--cluster", CLUSTER, "--embedded-port", "0", "--duration-s", "3"]
    assert main([*argv, "--forecast-registry", str(registry), "--forecast-every-s", "1"], out=out) == 0
    assert "forecasts every 1 s" in out.getvalue()
    with Store.open(db) as store:
        assert set(forecast_frame(store, cluster=CLUSTER)["kind"]) == {"power", "failure"}


def test_twin_serve_refuses_a_registry_without_a_power_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--embedded-port", "0", "--duration-s", "1"]
    assert main([*argv, "--forecast-registry", str(tmp_path / "empty")], out=io.StringIO()) == 2
    assert "--forecast-registry" in capsys.readouterr().err
    with pytest.raises(RegistryError):
        load_predictors(tmp_path / "empty")
