"""Live cluster page (Streamlit calls only; the logic is in `dashboard.live`, `dashboard.figures`).

The body is one `st.fragment(run_every=refresh_s)`: each refresh re-reads the store and redraws this
fragment only, not the page (no full-page rerun, no flicker of the sidebar or the controls above it).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Final

import pandas as pd
import streamlit as st

from dashboard import figures, live
from dashboard.formatting import (
    MISSING,
    fmt_age,
    fmt_count,
    fmt_duration,
    fmt_money,
    fmt_pct,
    fmt_power,
    fmt_step_time,
    fmt_tokens,
)
from dashboard.resources import HOW_TO_START, live_projection, open_store
from dashboard.settings import DashboardSettings
from twin.store.repository import Store

WINDOWS_S: Final = {"15 min": 900.0, "30 min": 1_800.0, "1 h": 3_600.0, "6 h": 21_600.0, "24 h": 86_400.0}
ALERTS_HEIGHT_PX: Final = 360
NO_DATA: Final = "No telemetry for cluster `{cluster}` in the store yet. "
SEVERITY_ICON: Final = {
    "error": ":red[:material/error:]",
    "warning": ":orange[:material/warning:]",
    "info": ":blue[:material/info:]",
}


def _eta(ts: float | None, now_s: float) -> str:
    if ts is None:
        return MISSING
    when = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M")
    return f"{when} (in {fmt_duration(max(0.0, ts - now_s))})"


def _jobs_table(rows: list[dict[str, Any]], now_s: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "job": [r["job"] for r in rows],
            "state": [r["state"] for r in rows],
            "model": [r["model"] for r in rows],
            "nodes": [r["nodes"] for r in rows],
            "step": [fmt_count(r["step"]) for r in rows],
            "tokens": [fmt_tokens(r["tokens"]) for r in rows],
            "progress": [fmt_pct(r["progress"], 3) for r in rows],
            "observed step": [fmt_step_time(r["observed step"]) for r in rows],
            "predicted step": [fmt_step_time(r["predicted step"]) for r in rows],
            "calibrated step": [fmt_step_time(r["calibrated step"]) for r in rows],
            "ETA P50": [_eta(r["ETA P50"], now_s) for r in rows],
            "ETA P90": [_eta(r["ETA P90"], now_s) for r in rows],
            "reason": [r["reason"] or "" for r in rows],
        }
    )


def _alerts(alerts: list[live.Alert]) -> None:
    st.subheader(f"Alerts ({len(alerts)})")
    if not alerts:
        st.success("No alerts: every node reports; no failures, thermal or failure-risk warnings.")
        return
    counts = Counter(a.kind for a in alerts)
    st.markdown(" · ".join(f"{SEVERITY_ICON[_worst(alerts, k)]} **{n}** {k}" for k, n in counts.items()))
    st.dataframe(
        pd.DataFrame(
            {
                "severity": [a.severity for a in alerts],
                "kind": [a.kind for a in alerts],
                "where": [a.where for a in alerts],
                "message": [a.message for a in alerts],
            }
        ),
        hide_index=True,
        height=ALERTS_HEIGHT_PX,
        key="live_alerts",
    )


def _worst(alerts: list[live.Alert], kind: str) -> str:
    return min((a.severity for a in alerts if a.kind == kind), key=live.SEVERITY_ORDER.__getitem__)


def _windows(configured_s: float) -> dict[str, float]:
    """The power-history choices, with the configured window (`--window-s`) among them, shortest first."""
    if configured_s in WINDOWS_S.values():
        return dict(WINDOWS_S)
    label = f"{fmt_duration(configured_s)} (--window-s)"
    return dict(sorted({**WINDOWS_S, label: configured_s}.items(), key=lambda item: item[1]))


def _clusters(store: Store, default: str) -> list[str]:
    names = sorted({str(n["cluster"]) for n in store.nodes()} | {str(j["cluster"]) for j in store.jobs()})
    return [default, *[n for n in names if n != default]] if default in names or not names else names


def render(settings: DashboardSettings) -> None:
    st.title("Live cluster")
    store = open_store(settings.db_url)
    if isinstance(store, str):
        st.info(store, icon=":material/info:")
        return
    clusters = _clusters(store, settings.cluster)
    top = st.columns([1, 1, 1, 3])
    cluster = top[0].selectbox("Cluster", clusters, key="live_cluster")
    metric = top[1].selectbox("Heatmap", list(live.HEATMAP_METRICS), key="live_metric")
    windows = _windows(settings.window_s)
    default = next(label for label, s in windows.items() if s == settings.window_s)
    window = top[2].selectbox(
        "Power history", list(windows), index=list(windows).index(default), key="live_window"
    )
    top[3].caption(
        f"Refreshes every {settings.refresh_s:g} s (this section only). Nodes silent for more than "
        f"{settings.stale_after_s:g} s are stale."
    )

    @st.fragment(run_every=settings.refresh_s)
    def body() -> None:
        _body(settings, store, cluster, metric, windows[window])

    body()


def _body(settings: DashboardSettings, store: Store, cluster: str, metric: str, window_s: float) -> None:
    now_s = time.time()
    data = live.read_live(store, cluster, now_s, window_s, settings.stale_after_s)
    if data.empty:
        st.info(
            NO_DATA.format(cluster=cluster) + HOW_TO_START.format(url=settings.db_url), icon=":material/info:"
        )
        return
    from dashboard.forecasts import failure_risks, power_band, read_forecasts

    forecasts = read_forecasts(store, cluster)
    summary = live.summary(data.frame, data.nodes, data.jobs, now_s, settings.stale_after_s)
    alerts = live.alerts(
        data.nodes, data.frame, data.jobs, now_s, settings.stale_after_s, failure_risks(forecasts.frame)
    )
    cols = st.columns(6)
    cols[0].metric(
        "GPUs reporting", fmt_count(summary.gpus_reporting), help="newest sample within the stale limit"
    )
    cols[1].metric("Nodes reporting", f"{summary.nodes_reporting} / {summary.nodes}")
    cols[2].metric("GPU power", fmt_power(summary.power_w))
    cols[3].metric(
        "Mean utilisation", fmt_pct(None if summary.mean_util_pct is None else summary.mean_util_pct / 100)
    )
    cols[4].metric("Hottest GPU", MISSING if summary.max_temp_c is None else f"{summary.max_temp_c:.0f} °C")
    cols[5].metric("Newest sample", fmt_age(None if summary.newest_ts is None else now_s - summary.newest_ts))

    st.plotly_chart(figures.heatmap_figure(live.heatmap(data.frame, metric)), key="live_heatmap")
    left, right = st.columns([3, 2])
    with left:
        band = power_band(forecasts.frame) if not forecasts.empty else None
        if len(data.power):
            st.plotly_chart(figures.power_figure(data.power, band), key="live_power")
        else:
            st.info("No telemetry in this window yet for a power history.")
    with right:
        _alerts(alerts)

    st.subheader("Jobs")
    projection = live_projection(settings, cluster, now_s)
    if not projection.available:
        st.warning(f"projection unavailable: {projection.reason}", icon=":material/warning:")
    rows = live.job_rows(data.jobs, data.step_times, projection.jobs if projection.available else None)
    if not rows:
        st.info(
            "No training jobs have reported yet (jobs publish start/step events; see `sensors.job_reporter`)."
        )
        return
    st.dataframe(_jobs_table(rows, now_s), hide_index=True, key="live_jobs")
    if projection.available:
        totals = [p for p in projection.jobs.values() if p.get("cost_to_completion") is not None]
        if totals:
            cost = sum(float(p["cost_to_completion"]) for p in totals)
            st.caption(
                f"Projection: {projection.hours:g} h ahead, {settings.projection_replications} replications; "
                f"cost to completion of the projected jobs {fmt_money(cost, projection.currency)}."
            )
        if projection.notes:
            with st.expander(f"Projection notes ({len(projection.notes)})"):
                for note in projection.notes:
                    st.caption(note)
    job_ids = [r["job"] for r in rows]
    chosen = st.selectbox("Step times of job", job_ids, key="live_job")
    proj = projection.jobs.get(chosen, {}) if projection.available else {}
    st.plotly_chart(
        figures.step_time_figure(
            chosen,
            data.step_times.get(chosen, []),
            proj.get("predicted_step_time_s"),
            proj.get("calibrated_step_time_s"),
        ),
        key="live_steps",
    )
    if projection.available and projection.power_kw_hourly and projection.now_s is not None:
        st.plotly_chart(
            figures.projected_power_figure(projection.now_s, projection.power_kw_hourly),
            key="live_projected_power",
        )
