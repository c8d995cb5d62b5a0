"""models.power: bucketing telemetry into node power, the forecaster on simulated history (it beats
persistence and the physics estimate on a held-out time split), its predict path, the store as a
source, and the errors for too little history and missing columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.errors import InsufficientHistoryError, MissingColumnsError, ModelInputError
from models.power import ROLLING_ROWS, PowerForecaster, build_panel, power_backtest
from twin.predictors import SimulatedHistory, store_history, write_telemetry
from twin.store.repository import Store

T0 = 1_700_000_000.0
# A light forecaster for tests (the defaults use 150 iterations).
FAST: dict[str, Any] = {"max_iter": 60, "random_state": 0}


def telemetry_rows(rows: list[tuple[str, int, float, float, float]]) -> pd.DataFrame:
    """(node, gpu_index, ts, power_w, util) rows of cluster "c"."""
    frame = pd.DataFrame(rows, columns=["node", "gpu_index", "ts", "power_w", "gpu_util_pct"])
    frame.insert(0, "cluster", "c")
    return frame


def test_node_power_is_the_sum_of_each_gpus_mean_over_the_bucket() -> None:
    frame = telemetry_rows(
        [
            ("n1", 0, T0 + 0, 100.0, 100.0),
            ("n1", 0, T0 + 30, 300.0, 100.0),  # GPU 0: mean 200 W, busy
            ("n1", 1, T0 + 10, 60.0, 0.0),  # GPU 1: one sample, idle
            ("n1", 0, T0 + 60, 50.0, 0.0),  # next bucket
            ("n2", 0, T0 + 70, 80.0, 0.0),
        ]
    )
    panel = build_panel(frame, bucket_s=60.0)
    assert panel.keys == (("c", "n1"), ("c", "n2"))
    first = int((T0 // 60) * 60)
    np.testing.assert_array_equal(panel.ts, [first, first + 60] if T0 % 60 == 0 else panel.ts)
    t0 = int(np.flatnonzero(panel.ts <= T0)[-1])
    assert panel.power_w[t0, 0] == pytest.approx(260.0)
    assert panel.gpus[t0, 0] == 2 and panel.busy_gpus[t0, 0] == 1
    assert np.isnan(panel.power_w[t0, 1])  # n2 silent in that bucket


def test_forecaster_beats_persistence_and_physics_on_held_out_time(small_history: SimulatedHistory) -> None:
    scores, forecasts = power_backtest(
        small_history.telemetry, small_history.physics, forecaster=PowerForecaster(**FAST)
    )
    assert {(s.level, s.horizon_s) for s in scores} == {
        (level, h) for level in ("node", "cluster") for h in (60.0, 900.0, 3600.0)
    }
    for s in scores:
        assert s.n_test > 0
        assert s.physics_mae_w is not None
        assert s.mae_w < s.persistence_mae_w, s
        assert s.mae_w < s.physics_mae_w, s
    node = [s for s in scores if s.level == "node"]
    assert all(0.6 < s.interval_coverage < 0.95 for s in node)
    assert (forecasts["p10_w"] <= forecasts["p50_w"]).all() and (
        forecasts["p50_w"] <= forecasts["p90_w"]
    ).all()


@pytest.fixture(scope="module")
def fitted(small_history: SimulatedHistory) -> PowerForecaster:
    return PowerForecaster(**FAST).fit(small_history.telemetry, physics=small_history.physics)


def test_predict_gives_the_backtests_forecast_for_the_newest_bucket(
    small_history: SimulatedHistory, fitted: PowerForecaster
) -> None:
    telemetry, physics, model = small_history.telemetry, small_history.physics, fitted
    live = model.predict(telemetry, physics=physics)
    nodes = sorted(telemetry["node"].unique())
    assert len(live) == 3 * (len(nodes) + 1)
    assert live["made_at_ts"].nunique() == 1
    assert live["made_at_ts"].iloc[0] == (telemetry["ts"].max() // 60 + 1) * 60
    # The same forecasts as the backtest's path at the last bucket: predict featurises one bucket from a
    # 61-minute tail with NumPy windows, the backtest many buckets of the whole history with pandas'.
    panel = build_panel(telemetry, physics, bucket_s=60.0, ahead_buckets=60)
    buckets = 20
    assert buckets > ROLLING_ROWS  # so the backtest path uses pandas' rolling windows
    many = model._predict_rows(panel, panel.ts.size - buckets).drop(columns="actual_w")
    full = many[many["made_at_ts"] == many["made_at_ts"].max()]
    key = ["level", "node", "horizon_s"]
    pd.testing.assert_frame_equal(
        live.sort_values(key).reset_index(drop=True), full.sort_values(key).reset_index(drop=True)
    )
    cluster = live[live["level"] == "cluster"]
    node_sum = live[live["level"] == "node"].groupby("horizon_s")["current_w"].sum()
    np.testing.assert_allclose(cluster.set_index("horizon_s")["current_w"], node_sum)


def test_the_store_is_a_source_of_history(small_history: SimulatedHistory, tmp_path: Path) -> None:
    part = small_history.telemetry[small_history.telemetry["ts"] < T0 + 4 * 3600]
    with Store.open(f"sqlite:///{tmp_path / 'twin.db'}") as store:
        assert write_telemetry(store, part) == len(part)
        back = store_history(store)
    assert len(back) == len(part)
    a = build_panel(part)
    b = build_panel(back)
    np.testing.assert_allclose(a.power_w, b.power_w)
    np.testing.assert_allclose(a.temp_c, b.temp_c)


def test_too_little_history_says_how_much_is_needed(
    small_history: SimulatedHistory, fitted: PowerForecaster
) -> None:
    short = small_history.telemetry[small_history.telemetry["ts"] < T0 + 3600]
    with pytest.raises(InsufficientHistoryError, match=r"needs at least 10,800 s of telemetry") as fit_error:
        PowerForecaster(**FAST).fit(short)
    assert "got 3,600 s" in str(fit_error.value)
    with pytest.raises(InsufficientHistoryError, match=r"needs at least 3,660 s of telemetry"):
        fitted.predict(short[short["ts"] < T0 + 1800], physics=small_history.physics)


def test_missing_and_renamed_columns_are_named(small_history: SimulatedHistory) -> None:
    renamed = small_history.telemetry.rename(columns={"power_w": "power_W"}).drop(columns="gpu_index")
    with pytest.raises(MissingColumnsError) as error:
        PowerForecaster(**FAST).fit(renamed)
    message = str(error.value)
    assert "'gpu_index'" in message and "'power_w' (found 'power_W': renamed?)" in message
    assert error.value.missing == ("gpu_index", "power_w")


def test_a_forecaster_fitted_with_physics_needs_it_to_predict(
    small_history: SimulatedHistory, fitted: PowerForecaster
) -> None:
    assert fitted.uses_physics_
    with pytest.raises(ModelInputError, match="physics"):
        fitted.predict(small_history.telemetry)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"horizons_s": (90.0,)}, "multiple of bucket_s"),
        ({"lags": (0,)}, "lags"),
        ({"bucket_s": -1.0}, "bucket_s"),
    ],
)
def test_bad_parameters_name_themselves(
    small_history: SimulatedHistory, params: dict[str, object], message: str
) -> None:
    with pytest.raises(ModelInputError, match=message):
        PowerForecaster(**params).fit(small_history.telemetry)  # type: ignore[arg-type]
