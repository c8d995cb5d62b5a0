"""Plotly figures of the dashboard: data in, `go.Figure` out, every axis titled with its unit.

No Streamlit here, so the figures are unit-tested (axis titles, traces, values) and cheap to rebuild.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.formatting import BYTES_PER_GIB, fmt_gib
from dashboard.live import Heatmap

# Memory parts of a what-if result (result["memory"] keys), in stacking order, with their labels.
MEMORY_PARTS: Final = (
    ("params_bytes", "weights"),
    ("grads_bytes", "gradients"),
    ("optimizer_bytes", "optimizer states"),
    ("activations_bytes", "activations"),
    ("other_bytes", "buffers & other"),
)
# Step-time parts (twin.perf.step breakdown keys) → labels.
BREAKDOWN_LABELS: Final[Mapping[str, str]] = {
    "compute_s": "compute",
    "tp_comm_s": "TP communication",
    "cp_comm_s": "CP communication",
    "pp_bubble_s": "pipeline bubble",
    "pp_p2p_s": "pipeline sends",
    "dp_comm_s": "DP communication",
    "zero3_comm_s": "ZeRO-3 gathers",
    "offload_s": "offload transfers",
    "optimizer_s": "optimizer step",
}
# Largest number of non-Pareto layouts drawn in a Pareto chart (evenly spaced by rank): a browser draws
# 2,000 WebGL points instantly, 25,000 (the full sweep of the README example) sluggishly.
MAX_PARETO_BACKGROUND_POINTS: Final = 2_000
CHART_HEIGHT_PX: Final = 360
HEATMAP_ROW_PX: Final = 28
MARGIN: Final = {"l": 60, "r": 20, "t": 40, "b": 40}
# Height added under the plot for a legend below the x-axis title (a legend above collides with the title).
LEGEND_PX: Final = 60
W_PER_KW: Final = 1_000.0
SECONDS_PER_DAY: Final = 86_400.0


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = CHART_HEIGHT_PX) -> go.Figure:
    """Title, axis titles (with units) and a legend under the plot, below the x-axis title."""
    legend = sum(1 for trace in fig.data if trace.showlegend is not False) > 1
    fig.update_layout(
        title={"text": title, "x": 0.0},
        xaxis_title=x,
        yaxis_title=y,
        height=height + (LEGEND_PX if legend else 0),
        margin={**MARGIN, "b": MARGIN["b"] + (LEGEND_PX if legend else 0)},
        showlegend=legend,
        legend={"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0.0, "x": 0.0},
    )
    return fig


def _datetimes(ts: Sequence[float] | np.ndarray | pd.Series) -> list[datetime]:
    return [datetime.fromtimestamp(float(t), tz=UTC) for t in ts]


def heatmap_figure(data: Heatmap) -> go.Figure:
    """Node × GPU heatmap: x = node, y = GPU index, colour = the metric with its unit."""
    fig = go.Figure(
        go.Heatmap(
            z=data.z,
            x=list(data.nodes),
            y=[str(i) for i in data.gpu_indices],
            colorscale=data.colorscale,
            colorbar={"title": {"text": data.unit}},
            hovertemplate=f"node %{{x}} · GPU %{{y}}<br>{data.metric}: %{{z:.1f}} {data.unit}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    fig.update_xaxes(type="category", showticklabels=len(data.nodes) <= 64)
    fig.update_yaxes(type="category", autorange="reversed")
    height = max(CHART_HEIGHT_PX // 2, 120 + HEATMAP_ROW_PX * len(data.gpu_indices))
    return _layout(fig, f"{data.metric} per GPU ({data.unit})", "node", "GPU index", height)


def power_figure(
    series: pd.DataFrame,
    forecast: pd.DataFrame | None = None,
) -> go.Figure:
    """Cluster GPU power over time (kW), with the forecast's P10–P90 band and P50 when there is one.

    `series`: ts, power_w (cluster_power_series); `forecast`: at_ts, p10, p50, p90 (W).
    """
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=_datetimes(series["ts"]),
            y=series["power_w"].to_numpy(dtype=np.float64) / W_PER_KW,
            mode="lines",
            name="measured (telemetry)",
            line={"width": 2},
        )
    )
    if forecast is not None and len(forecast):
        x = _datetimes(forecast["at_ts"])
        fig.add_trace(
            go.Scatter(x=x, y=forecast["p90"] / W_PER_KW, mode="lines", line={"width": 0}, showlegend=False)
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=forecast["p10"] / W_PER_KW,
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor="rgba(255,127,14,0.25)",
                name="forecast P10–P90",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x, y=forecast["p50"] / W_PER_KW, mode="lines", line={"dash": "dash"}, name="forecast P50"
            )
        )
    return _layout(fig, "Cluster GPU power", "time (UTC)", "power (kW)")


def projected_power_figure(now_s: float, power_kw_hourly: Mapping[str, Sequence[float]]) -> go.Figure:
    """The live projection's cluster IT power per hour ahead: mean with its P10–P90 band (kW)."""
    mean = list(power_kw_hourly.get("mean", ()))
    p10 = list(power_kw_hourly.get("p10", mean))
    p90 = list(power_kw_hourly.get("p90", mean))
    x = _datetimes([now_s + 3600.0 * (h + 0.5) for h in range(len(mean))])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=p90, mode="lines", line={"width": 0}, showlegend=False))
    fig.add_trace(
        go.Scatter(
            x=x,
            y=p10,
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.25)",
            name="P10–P90",
        )
    )
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name="mean"))
    return _layout(fig, "Projected cluster IT power (GPUs + hosts), hourly", "time (UTC)", "power (kW)")


def step_time_figure(
    job_id: str,
    steps: Sequence[tuple[float, int | None, float]],
    predicted_s: float | None,
    calibrated_s: float | None,
) -> go.Figure:
    """A job's observed step times (s) against the twin's predicted and calibrated step time."""
    fig = go.Figure()
    x = _datetimes([ts for ts, _, _ in steps])
    fig.add_trace(go.Scatter(x=x, y=[s for _, _, s in steps], mode="markers+lines", name="observed"))
    for value, name, dash in ((predicted_s, "predicted", "dot"), (calibrated_s, "calibrated", "dash")):
        if value is not None and x:
            fig.add_trace(
                go.Scatter(x=[x[0], x[-1]], y=[value, value], mode="lines", name=name, line={"dash": dash})
            )
    fig.update_yaxes(rangemode="tozero")  # a steady job is a flat line, not noise magnified
    return _layout(fig, f"Step time of {job_id}", "time (UTC)", "step time (s)")


def memory_figure(results: Sequence[tuple[str, Mapping[str, Any]]]) -> go.Figure:
    """Per-GPU memory of one or more what-if results as stacked parts (GiB), with usable and total HBM."""
    labels = [label for label, _ in results]
    fig = go.Figure()
    for key, name in MEMORY_PARTS:
        values = [float(r["memory"][key]) / BYTES_PER_GIB for _, r in results]
        fig.add_trace(
            go.Bar(
                y=labels,
                x=values,
                name=name,
                orientation="h",
                hovertemplate=f"{name}: %{{x:.2f}} GiB<extra></extra>",
            )
        )
    annotated: set[float] = set()
    for k, (_, r) in enumerate(results):
        capacity = float(r["memory"]["capacity_bytes"]) / BYTES_PER_GIB
        fig.add_shape(
            type="line", x0=capacity, x1=capacity, y0=k - 0.45, y1=k + 0.45, line={"color": "red", "width": 3}
        )
        if capacity not in annotated:  # one label per distinct capacity
            annotated.add(capacity)
            fig.add_annotation(
                x=capacity,
                y=k,
                text=f"usable HBM {fmt_gib(r['memory']['capacity_bytes'])}",
                showarrow=False,
                xanchor="left",
                xshift=6,
                font={"color": "red"},
            )
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed", type="category")
    height = max(CHART_HEIGHT_PX // 2 + 40, 110 + 60 * len(results))
    return _layout(fig, "Memory per GPU vs usable HBM", "memory per GPU (GiB)", "", height)


def breakdown_figure(results: Sequence[tuple[str, Mapping[str, Any]]]) -> go.Figure:
    """Step-time breakdown (s) of one or more what-if results, as stacked horizontal bars."""
    labels = [label for label, _ in results]
    keys = [k for k in BREAKDOWN_LABELS if any(float(r["breakdown_s"].get(k, 0.0)) > 0 for _, r in results)]
    keys += sorted({k for _, r in results for k in r["breakdown_s"]} - set(BREAKDOWN_LABELS))
    fig = go.Figure()
    for key in keys:
        name = BREAKDOWN_LABELS.get(key, key.removesuffix("_s"))
        fig.add_trace(
            go.Bar(
                y=labels,
                x=[float(r["breakdown_s"].get(key, 0.0)) for _, r in results],
                name=name,
                orientation="h",
                hovertemplate=f"{name}: %{{x:.3f}} s<extra></extra>",
            )
        )
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed", type="category")
    height = max(CHART_HEIGHT_PX // 2 + 40, 110 + 60 * len(results))
    return _layout(fig, "Step time breakdown", "time per step (s)", "", height)


def zero_memory_figure(rows: Sequence[tuple[int, Mapping[str, Any]]]) -> go.Figure:
    """Per-GPU memory of one layout across ZeRO stages 0–3: stacked parts (GiB) and the usable HBM."""
    fig = memory_figure([(f"ZeRO-{stage}", result) for stage, result in rows])
    fig.update_layout(title={"text": "Memory per GPU across ZeRO stages"})
    return fig


def pareto_figure(frame: pd.DataFrame, y: str, y_title: str, front: str) -> go.Figure:
    """Time to train (days) vs `y` of the fitting layouts, the Pareto front highlighted.

    `frame` columns: time_to_train_s, `y`, `front` (bool), rank, label. Background points are thinned to
    MAX_PARETO_BACKGROUND_POINTS (evenly by rank).
    """
    fits = frame[frame["fits"]]
    on_front = fits[fits[front]].sort_values("time_to_train_s")
    rest = fits[~fits[front]]
    if len(rest) > MAX_PARETO_BACKGROUND_POINTS:
        step = math.ceil(len(rest) / MAX_PARETO_BACKGROUND_POINTS)
        rest = rest.sort_values("rank").iloc[::step]
    fig = go.Figure()
    fig.add_trace(
        go.Scattergl(
            x=rest["time_to_train_s"] / SECONDS_PER_DAY,
            y=rest[y],
            mode="markers",
            name="other fitting layouts",
            marker={"size": 4, "color": "rgba(120,120,120,0.35)"},
            text=rest["label"],
            hovertemplate="%{text}<br>%{x:.1f} days, %{y:,.0f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=on_front["time_to_train_s"] / SECONDS_PER_DAY,
            y=on_front[y],
            mode="markers+lines",
            name="Pareto front",
            marker={"size": 8},
            text=on_front["label"],
            hovertemplate="%{text}<br>%{x:.1f} days, %{y:,.0f}<extra></extra>",
        )
    )
    # Log axes: the layouts span an order of magnitude in time and cost, the front sits in a corner.
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return _layout(
        fig, f"Time to train vs {y_title.split(' (')[0]}", "time to train (days, log)", f"{y_title}, log"
    )


def risk_bar_figure(targets: Sequence[str], values: Sequence[float], title: str, x_title: str) -> go.Figure:
    """Horizontal bars of a ranking (highest first at the top)."""
    fig = go.Figure(go.Bar(x=list(values), y=list(targets), orientation="h"))
    fig.update_yaxes(autorange="reversed", type="category")
    height = max(CHART_HEIGHT_PX // 2, 100 + 22 * len(targets))
    return _layout(fig, title, x_title, "", height)


def interval_figure(frame: pd.DataFrame, now_s: float, title: str) -> go.Figure:
    """Job ETAs as P50 markers with P10–P90 error bars, in days from `now_s`.

    `frame` columns: job, eta_p10_ts, eta_p50_ts, eta_p90_ts (unix s; P10/P90 may be missing)."""
    p50 = (frame["eta_p50_ts"].astype(float) - now_s) / SECONDS_PER_DAY
    p10 = (frame["eta_p10_ts"].astype(float) - now_s) / SECONDS_PER_DAY
    p90 = (frame["eta_p90_ts"].astype(float) - now_s) / SECONDS_PER_DAY
    fig = go.Figure(
        go.Scatter(
            x=p50,
            y=frame["job"],
            mode="markers",
            marker={"size": 10},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": (p90 - p50).fillna(0.0),
                "arrayminus": (p50 - p10).fillna(0.0),
            },
            name="P50 (bars: P10–P90)",
        )
    )
    fig.update_yaxes(type="category", autorange="reversed")
    height = max(CHART_HEIGHT_PX // 2, 100 + 26 * len(frame))
    return _layout(fig, title, "days from now", "job", height)
