"""Layout sweep page (Streamlit calls only; the logic is in `dashboard.sweep_view`, `dashboard.figures`)."""

from __future__ import annotations

from typing import Any, Final

import pandas as pd
import streamlit as st

from dashboard import figures, sweep_view
from dashboard.formatting import fmt_count
from dashboard.settings import DashboardSettings
from twin.cli import EXAMPLE_SCENARIO
from twin.errors import TwinError
from twin.layout_sweep import RankBy
from twin.perf.gpu_presets import GPU_PRESETS
from twin.perf.model_presets import MODEL_PRESETS
from twin.perf.specs import PRECISIONS

TOP_CHOICES: Final = (10, 20, 50, 100)
MAX_GPUS: Final = 1_048_576
MAX_TOKENS: Final = 1e15


@st.cache_data(show_spinner="Sweeping every layout…", max_entries=8)
def _sweep(scenario_json: str, rank_by: RankBy) -> tuple[pd.DataFrame, int, int, str | None]:
    """(ranked frame, layouts enumerated, valid layouts, error) for a scenario (JSON, the cache key)."""
    import json

    scenario = json.loads(scenario_json)
    try:
        result = sweep_view.run_sweep(scenario, rank_by)
    except TwinError as exc:
        return pd.DataFrame(), 0, 0, str(exc)
    return sweep_view.sweep_frame(result), result.enumerated, len(result.arrays.batch), None


def _defaults() -> None:
    cluster = EXAMPLE_SCENARIO["cluster"]
    training = EXAMPLE_SCENARIO["training"]
    defaults: dict[str, Any] = {
        "sw_model": EXAMPLE_SCENARIO["model"]["preset"],
        "sw_gpu": cluster["gpu"],
        "sw_gpus": cluster["gpus"],
        "sw_gpus_per_node": cluster["gpus_per_node"],
        "sw_price": cluster["price_per_gpu_hour"],
        "sw_precision": EXAMPLE_SCENARIO["layout"]["precision"],
        "sw_seq_len": training["seq_len"],
        "sw_global_batch": training["global_batch"],
        "sw_tokens": training["tokens"],
    }
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)
        st.session_state[key] = st.session_state[key]  # keep across pages (widget clean-up)


def render(settings: DashboardSettings) -> None:
    st.title("Layout sweep")
    st.caption(
        "Every TP × PP × CP × micro-batch × virtual stages × ZeRO × offload × recompute layout that divides "
        "the GPUs, estimated in one vectorised pass (`twin sweep`), fitting layouts ranked first."
    )
    _defaults()
    c = st.columns(5)
    model = c[0].selectbox("Model", list(MODEL_PRESETS), key="sw_model")
    gpu = c[1].selectbox("GPU", list(GPU_PRESETS), key="sw_gpu")
    gpus = c[2].number_input("GPUs", min_value=1, max_value=MAX_GPUS, step=8, key="sw_gpus")
    per_node = c[3].number_input("GPUs per node", min_value=1, max_value=72, key="sw_gpus_per_node")
    price = c[4].number_input("price per GPU-hour (EUR)", min_value=0.0, step=0.1, key="sw_price")
    t = st.columns(5)
    precision = t[0].selectbox("precision", [p.value for p in PRECISIONS], key="sw_precision")
    seq_len = t[1].number_input("sequence length", min_value=1, step=1024, key="sw_seq_len")
    batch = t[2].number_input("global batch", min_value=1, key="sw_global_batch")
    tokens = t[3].number_input("tokens", min_value=1.0, max_value=MAX_TOKENS, format="%.3e", key="sw_tokens")
    rank_by: RankBy = t[4].selectbox("rank by", sweep_view.RANK_BY, key="sw_rank_by")
    scenario = {
        "model": {"preset": model},
        "cluster": {
            "gpu": gpu,
            "gpus": int(gpus),
            "gpus_per_node": int(per_node),
            "price_per_gpu_hour": price,
        },
        "layout": {"precision": precision},
        "training": {"seq_len": int(seq_len), "global_batch": int(batch), "tokens": float(tokens)},
    }
    import json

    frame, enumerated, valid, error = _sweep(json.dumps(scenario, sort_keys=True), rank_by)
    if error is not None:
        st.error(f"No sweep for this scenario: {error}", icon=":material/error:")
        return
    f = st.columns([1, 2, 1])
    fits_only = f[0].checkbox("fits only", value=True, key="sw_fits_only")
    stages = f[1].multiselect(
        "ZeRO stages", list(sweep_view.ZERO_STAGES), default=list(sweep_view.ZERO_STAGES), key="sw_zero"
    )
    top = f[2].selectbox("rows", TOP_CHOICES, index=1, key="sw_top")
    shown = sweep_view.filter_frame(frame, fits_only=fits_only, zero_stages=stages)
    fitting = int(frame["fits"].sum())
    st.markdown(
        f"**{fmt_count(enumerated)}** layouts enumerated, **{fmt_count(valid)}** valid, "
        f"**{fmt_count(fitting)}** fit; **{fmt_count(len(shown))}** match the filters. Ranked by {rank_by}."
    )
    if shown.empty:
        st.warning("No layout matches the filters: allow more ZeRO stages or untick “fits only”.")
        return
    st.dataframe(sweep_view.display_table(shown, int(top), "EUR"), hide_index=True, key="sw_table")
    if fitting and "time_to_train_s" in frame:
        left, right = st.columns(2)
        left.plotly_chart(
            figures.pareto_figure(shown, "cost", "cost (EUR)", "pareto_time_cost"), key="sw_pareto_cost"
        )
        right.plotly_chart(
            figures.pareto_figure(shown, "energy_kwh", "energy (kWh)", "pareto_time_energy"),
            key="sw_pareto_energy",
        )
    st.subheader("Memory per GPU across ZeRO stages")
    if not 1 <= st.session_state.get("sw_pick", 1) <= len(shown):
        st.session_state["sw_pick"] = 1  # the filters changed: the old rank may no longer exist
    st.session_state.setdefault("sw_pick", 1)
    pick = st.number_input(
        "layout (rank in the table above)", min_value=1, max_value=len(shown), key="sw_pick"
    )
    row = shown.iloc[int(pick) - 1]
    st.caption(f"{row['label']} — everything else fixed, ZeRO stage 0–3.")
    results, invalid = sweep_view.zero_stage_memory(scenario, sweep_view.layout_of(row.to_dict()))
    if results:
        st.plotly_chart(figures.zero_memory_figure(results), key="sw_zero_memory")
    for stage, reason in invalid:
        st.caption(f"ZeRO-{stage}: not valid for this layout — {reason}")
