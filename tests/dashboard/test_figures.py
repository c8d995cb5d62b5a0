"""Every figure titles its axes with units and draws the data it is given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import figures, live
from dashboard.whatif import evaluate_inputs, readme_example
from tests.dashboard.test_live import gpu_row

NOW = 1_700_000_000.0


def _axes(fig: object) -> tuple[str, str]:
    layout = fig.layout  # type: ignore[attr-defined]
    return layout.xaxis.title.text or "", layout.yaxis.title.text or ""


def test_heatmap_has_units_and_one_cell_per_gpu() -> None:
    frame = live.telemetry_frame(
        [gpu_row(f"n{n:02d}", g, power_w=100.0 + n) for n in range(3) for g in range(8)]
    )
    fig = figures.heatmap_figure(live.heatmap(frame, "Power"))
    assert _axes(fig) == ("node", "GPU index")
    assert fig.data[0].colorbar.title.text == "W"
    assert np.asarray(fig.data[0].z).shape == (8, 3)
    assert "Power per GPU (W)" in fig.layout.title.text


def test_power_chart_in_kw_with_forecast_band() -> None:
    series = pd.DataFrame({"ts": [NOW, NOW + 30], "power_w": [200_000.0, 210_000.0], "gpus": [1024, 1024]})
    band = pd.DataFrame({"at_ts": [NOW + 60], "p10": [190_000.0], "p50": [205_000.0], "p90": [220_000.0]})
    fig = figures.power_figure(series, band)
    assert _axes(fig) == ("time (UTC)", "power (kW)")
    assert list(fig.data[0].y) == [200.0, 210.0]
    assert [t.name for t in fig.data][1:] == [None, "forecast P10–P90", "forecast P50"]
    assert len(figures.power_figure(series).data) == 1


def test_what_if_charts_stack_the_parts_against_capacity() -> None:
    result = evaluate_inputs(readme_example()).result
    assert result is not None
    memory = figures.memory_figure([("A", result), ("B", result)])
    assert _axes(memory)[0] == "memory per GPU (GiB)"
    total = sum(trace.x[0] for trace in memory.data)
    assert total * 2**30 == pytest.approx(result["memory"]["total_bytes"])
    assert memory.layout.shapes[0].x0 * 2**30 == pytest.approx(result["memory"]["capacity_bytes"])
    breakdown = figures.breakdown_figure([("A", result)])
    assert _axes(breakdown)[0] == "time per step (s)"
    assert sum(trace.x[0] for trace in breakdown.data) == pytest.approx(sum(result["breakdown_s"].values()))


def test_other_figures_have_units() -> None:
    steps = [(NOW + 10 * k, k, 9.775) for k in range(5)]
    assert _axes(figures.step_time_figure("j", steps, 9.7, 9.78)) == ("time (UTC)", "step time (s)")
    proj = figures.projected_power_figure(
        NOW, {"mean": [480.0, 470.0], "p10": [470.0, 460.0], "p90": [490.0, 480.0]}
    )
    assert _axes(proj) == ("time (UTC)", "power (kW)")
    frame = pd.DataFrame(
        {
            "time_to_train_s": [86_400.0, 2 * 86_400.0, 3 * 86_400.0],
            "cost": [3.0, 1.0, 2.0],
            "fits": [True, True, True],
            "front": [True, True, False],
            "rank": [1, 2, 3],
            "label": ["a", "b", "c"],
        }
    )
    pareto = figures.pareto_figure(frame, "cost", "cost (EUR)", "front")
    assert _axes(pareto) == ("time to train (days, log)", "cost (EUR), log")
    assert list(pareto.data[1].x) == [1.0, 2.0]  # the front, in days
    etas = pd.DataFrame(
        {
            "job": ["j"],
            "eta_p10_ts": [NOW + 86_400],
            "eta_p50_ts": [NOW + 2 * 86_400],
            "eta_p90_ts": [NOW + 4 * 86_400],
        }
    )
    interval = figures.interval_figure(etas, NOW, "ETA")
    assert _axes(interval) == ("days from now", "job")
    assert list(interval.data[0].x) == [2.0] and list(interval.data[0].error_x.array) == [2.0]
    risk = figures.risk_bar_figure(["n01/3"], [40.0], "risk", "failure probability P50 (%)")
    assert _axes(risk)[0] == "failure probability P50 (%)"
