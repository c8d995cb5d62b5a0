"""Forecasts page (Streamlit calls only; the logic is in `dashboard.forecasts`, `dashboard.live`).

Two sources, each shown when it exists: the predictors' forecasts in the store (`twin models`: power band,
failure-risk ranking, job durations with intervals) and the twin's simulation projection of the live jobs
(`twin.live_sim`, with `--sim-spec`). Without predictor forecasts the failure-risk ranking falls back to
the live telemetry's failure precursors (correctable ECC errors, pending row remaps), labelled as such.
"""

from __future__ import annotations

import time
from typing import Final

import pandas as pd
import streamlit as st

from dashboard import figures, forecasts, live
from dashboard.formatting import fmt_duration, fmt_energy_kwh, fmt_pct
from dashboard.resources import live_projection, open_store
from dashboard.settings import DashboardSettings
from twin.store.repository import Store

RANKED_SHOWN: Final = 20


def render(settings: DashboardSettings) -> None:
    st.title("Forecasts")
    store = open_store(settings.db_url)
    if isinstance(store, str):
        st.info(store, icon=":material/info:")
        return
    cluster = st.session_state.get("live_cluster", settings.cluster)
    now_s = time.time()
    data = forecasts.read_forecasts(store, cluster)
    if data.empty:
        st.info(data.reason or forecasts.HOW_TO_FORECAST, icon=":material/info:")
    else:
        _predictor_forecasts(data.frame, now_s)
    _precursor_ranking(store, cluster, data.empty)
    _simulation(settings, cluster, now_s)


def _predictor_forecasts(frame: pd.DataFrame, now_s: float) -> None:
    st.header("Predictor forecasts")
    band = forecasts.power_band(frame)
    if len(band):
        st.plotly_chart(
            figures.power_figure(pd.DataFrame({"ts": [], "power_w": []}), band).update_layout(
                title={"text": "Cluster power forecast (P10–P90, P50)"}
            ),
            key="fc_power",
        )
    else:
        st.caption("No power forecast in the newest run.")
    gpus, nodes = forecasts.failure_ranking(frame)
    cols = st.columns(2)
    for col, ranked, what in ((cols[0], gpus, "GPUs"), (cols[1], nodes, "nodes")):
        with col:
            if ranked.empty:
                st.caption(f"No failure forecast for {what}.")
                continue
            head = ranked.head(RANKED_SHOWN)
            horizon = fmt_duration(float(head["horizon_s"].iloc[0]))
            st.plotly_chart(
                figures.risk_bar_figure(
                    list(head["target"]),
                    list(head["p50"] * 100),
                    f"Failure risk of {what} ({horizon} ahead)",
                    "failure probability P50 (%)",
                ),
                key=f"fc_risk_{what}",
            )
    durations = forecasts.duration_predictions(frame)
    if len(durations):
        table = durations.rename(columns={"target": "job"})
        st.plotly_chart(
            figures.interval_figure(table, now_s, "Job durations: predicted completion"), key="fc_dur"
        )
        st.dataframe(
            pd.DataFrame(
                {
                    "job": table["job"],
                    "remaining P10": [fmt_duration(v) for v in table["p10"]],
                    "remaining P50": [fmt_duration(v) for v in table["p50"]],
                    "remaining P90": [fmt_duration(v) for v in table["p90"]],
                }
            ),
            hide_index=True,
            key="fc_dur_table",
        )


def _precursor_ranking(store: Store, cluster: str, no_forecasts: bool) -> None:
    """GPUs ranked by failure precursors in their newest sample (correctable ECC errors, XID 63)."""
    frame = live.telemetry_frame(store.latest_telemetry(cluster))
    if frame.empty:
        return
    st.header("Failure precursors in the live telemetry")
    st.caption(
        "Correctable (single-bit) ECC errors and pending row remaps (XID 63) precede double-bit errors "
        "(Llama 3 report, Table 5; sensors.sim_failures)"
        + (" — shown because no predictor forecast exists yet." if no_forecasts else ".")
    )
    sbe = frame["ecc_sbe_total"].fillna(0.0)
    flagged = frame[(sbe > 0) | (frame["xid_last"] == live.XID_ROW_REMAP)].copy()
    if flagged.empty:
        st.success(f"No GPU of the {len(frame):,} with telemetry shows a failure precursor.")
        return
    flagged["target"] = flagged["node"].astype(str) + "/" + flagged["gpu_index"].astype(int).astype(str)
    flagged = flagged.sort_values("ecc_sbe_total", ascending=False).head(RANKED_SHOWN)
    st.plotly_chart(
        figures.risk_bar_figure(
            list(flagged["target"]),
            list(flagged["ecc_sbe_total"].fillna(0.0)),
            "GPUs with failure precursors",
            "correctable ECC errors (count)",
        ),
        key="fc_precursors",
    )


def _simulation(settings: DashboardSettings, cluster: str, now_s: float) -> None:
    st.header("Simulation projection of the live jobs")
    projection = live_projection(settings, cluster, now_s)
    if not projection.available:
        st.info(f"projection unavailable: {projection.reason}", icon=":material/info:")
        return
    base = projection.now_s or now_s
    if projection.power_kw_hourly:
        st.plotly_chart(figures.projected_power_figure(base, projection.power_kw_hourly), key="fc_sim_power")
    rows = [
        {
            "job": job_id,
            "eta_p10_ts": p.get("eta_p10_ts"),
            "eta_p50_ts": p.get("eta_p50_ts"),
            "eta_p90_ts": p.get("eta_p90_ts"),
        }
        for job_id, p in sorted(projection.jobs.items())
        if p.get("eta_p50_ts") is not None
    ]
    if rows:
        table = pd.DataFrame(rows)
        st.plotly_chart(
            figures.interval_figure(table, base, "Projected completion (P10–P90)"), key="fc_sim_eta"
        )
        st.dataframe(
            pd.DataFrame(
                {
                    "job": table["job"],
                    "ETA P10": [fmt_duration(None if v is None else v - base) for v in table["eta_p10_ts"]],
                    "ETA P50": [fmt_duration(None if v is None else v - base) for v in table["eta_p50_ts"]],
                    "ETA P90": [fmt_duration(None if v is None else v - base) for v in table["eta_p90_ts"]],
                    "progress": [fmt_pct(projection.jobs[j].get("progress"), 3) for j in table["job"]],
                    "energy to completion": [
                        fmt_energy_kwh(projection.jobs[j].get("energy_kwh_to_completion"))
                        for j in table["job"]
                    ],
                }
            ),
            hide_index=True,
            key="fc_sim_table",
        )
    else:
        st.caption(f"No projected job completes within {projection.hours:g} h.")
