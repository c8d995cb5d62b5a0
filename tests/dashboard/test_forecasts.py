"""Forecasts from the store (`twin.store.forecasts`): empty state, power band, risk ranking, durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard import forecasts
from twin.store.forecasts import Forecast, write_forecasts
from twin.store.repository import Store

MADE = 1_700_000_000.0


def _write(store: Store) -> None:
    rows = []
    for made in (MADE - 3600, MADE):  # an older run and the newest
        for h in (3600.0, 7200.0):
            rows.append(Forecast("power", "demo", "cluster", "demo", made, h, 1e6 + h, p10=9e5, p90=1.2e6))
            rows.append(Forecast("power", "demo", "node", "n01", made, h, 1e4, p10=9e3, p90=1.1e4))
    for target, p in (("n01/3", 0.4), ("n02/0", 0.05)):
        rows.append(Forecast("failure", "demo", "gpu", target, MADE, 86_400.0, p, unit="probability"))
    rows.append(Forecast("failure", "demo", "node", "n07", MADE, 86_400.0, 0.3, unit="probability"))
    rows.append(Forecast("duration", "demo", "job", "job-000", MADE, 0.0, 2e5, p10=1e5, p90=4e5, unit="s"))
    rows.append(Forecast("power", "other", "cluster", "other", MADE, 3600.0, 5.0))  # another cluster
    write_forecasts(store, rows)


def test_no_forecasts_is_an_empty_state_that_says_what_to_do(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'f.db'}") as store:
        data = forecasts.read_forecasts(store, "demo")
    assert data.empty and data.reason == forecasts.HOW_TO_FORECAST
    assert forecasts.power_band(data.frame).empty
    assert all(part.empty for part in forecasts.failure_ranking(data.frame))
    assert forecasts.duration_predictions(data.frame).empty and forecasts.failure_risks(data.frame) == []


def test_forecasts_are_read_and_summarised(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'f.db'}") as store:
        _write(store)
        data = forecasts.read_forecasts(store, "demo")
    assert data.reason is None and len(data.frame) == 12 and set(data.frame["cluster"]) == {"demo"}
    band = forecasts.power_band(data.frame)
    assert list(band["at_ts"]) == [MADE + 3600, MADE + 7200]  # the newest run, the cluster's own forecast
    assert list(band["p50"]) == pytest.approx([1e6 + 3600, 1e6 + 7200])
    gpus, nodes = forecasts.failure_ranking(data.frame)
    assert list(gpus["target"]) == ["n01/3", "n02/0"] and list(nodes["target"]) == ["n07"]
    durations = forecasts.duration_predictions(data.frame)
    assert list(durations["eta_p50_ts"]) == [MADE + 2e5] and list(durations["eta_p90_ts"]) == [MADE + 4e5]
    assert forecasts.failure_risks(data.frame) == [("n01/3", 0.4), ("n02/0", 0.05), ("n07", 0.3)]


def test_node_power_forecasts_are_summed_without_a_cluster_forecast(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'f.db'}") as store:
        write_forecasts(
            store,
            [
                Forecast("power", "demo", "node", n, MADE, 600.0, 100.0, p10=90.0, p90=120.0)
                for n in ("a", "b")
            ],
        )
        band = forecasts.power_band(forecasts.read_forecasts(store, "demo").frame)
    assert band.to_dict("records") == [{"at_ts": MADE + 600, "p10": 180.0, "p50": 200.0, "p90": 240.0}]
