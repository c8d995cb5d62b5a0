"""What-if page (Streamlit calls only; the logic is in `dashboard.whatif`, `dashboard.figures`).

The form of each scenario (A, and B for comparisons) lives in session state under `{a,b}_{field}` keys,
one per `WhatIfInputs` field; every widget is always rendered (shape fields are disabled while a preset is
chosen) so Streamlit never drops a field's state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import streamlit as st

from dashboard import figures, whatif
from dashboard.formatting import fmt_step_time
from dashboard.live import STEP_EVENTS_PER_JOB
from dashboard.resources import open_store
from dashboard.settings import DashboardSettings
from dashboard.whatif import FIELDS, Outcome, WhatIfInputs, WorkedExample
from twin.perf.gpu_presets import GPU_PRESETS
from twin.perf.model_presets import MODEL_PRESETS
from twin.perf.specs import OFFLOADS, PRECISIONS, RECOMPUTES

PREFIXES: Final = ("a_", "b_")
PARALLEL_DEGREES: Final = (1, 2, 4, 8, 16, 32, 64)
ZERO_STAGES: Final = (0, 1, 2, 3)
CURRENCIES: Final = ("EUR", "USD", "GBP")
PRESET_MODE, SHAPE_MODE = "preset", "custom shape"
# Widest range a number input accepts (1 to 1M GPUs; tokens up to 1e15).
MAX_GPUS: Final = 1_048_576
MAX_TOKENS: Final = 1e15
# Metrics per row: four keep "219.9 days" and "35.9 GiB" whole in a 1,400 px wide page.
HEADLINE_COLUMNS: Final = 4
SHAPE_FIELDS: Final = ("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab", "gated_mlp")


@st.cache_resource(show_spinner=False)
def _worked_examples() -> list[WorkedExample]:
    return whatif.worked_examples()


def _set_inputs(prefix: str, inputs: WhatIfInputs) -> None:
    for name in FIELDS:
        st.session_state[prefix + name] = getattr(inputs, name)
    st.session_state[prefix + "model_mode"] = PRESET_MODE if inputs.model_preset is not None else SHAPE_MODE
    if inputs.model_preset is None:
        st.session_state[prefix + "model_preset"] = next(iter(MODEL_PRESETS))


def _inputs(prefix: str) -> WhatIfInputs:
    state = st.session_state
    values: dict[str, Any] = {name: state[prefix + name] for name in FIELDS}
    if state[prefix + "model_mode"] == SHAPE_MODE:
        values["model_preset"] = None
    return WhatIfInputs(**values)


def _keep_state() -> None:
    """Re-assign the form's keys so that Streamlit keeps them across pages (its widget clean-up drops the
    state of widgets that are not rendered in a run)."""
    for prefix in PREFIXES:
        for name in (*FIELDS, "model_mode"):
            key = prefix + name
            if key in st.session_state:
                st.session_state[key] = st.session_state[key]


def _on_preset(prefix: str) -> None:
    """A new model preset: show its shape in the (disabled) shape fields."""
    spec = MODEL_PRESETS[st.session_state[prefix + "model_preset"]]
    for name in SHAPE_FIELDS:
        st.session_state[prefix + name] = getattr(spec, name)


def _load(prefix: str, choice: str, settings: DashboardSettings) -> None:
    """The "Load" button: fill the form from the chosen starting point."""
    st.session_state.pop(prefix + "calibration", None)
    st.session_state.pop(prefix + "worked", None)
    if choice == whatif.README_EXAMPLE:
        _set_inputs(prefix, whatif.readme_example())
        return
    for example in _worked_examples():
        if example.label == choice:
            _set_inputs(prefix, example.inputs)
            st.session_state[prefix + "worked"] = example.label
            return
    if choice.startswith(whatif.LIVE_JOB_PREFIX):
        _load_live(prefix, choice.removeprefix(whatif.LIVE_JOB_PREFIX), settings)


def _spec(settings: DashboardSettings) -> dict[str, Any] | None:
    if settings.sim_spec is None:
        return None
    try:
        raw = json.loads(Path(settings.sim_spec).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _load_live(prefix: str, job_id: str, settings: DashboardSettings) -> None:
    from twin.errors import TwinError

    store = open_store(settings.db_url)
    if isinstance(store, str):
        st.session_state[prefix + "load_error"] = store
        return
    cluster = st.session_state.get("live_cluster", settings.cluster)
    job = next((j for j in store.jobs(cluster) if j["job_id"] == job_id), None)
    if job is None:
        st.session_state[prefix + "load_error"] = f"job {job_id!r} is no longer in the store"
        return
    steps = [
        float(e["step_time_s"])
        for e in store.job_events(job_id, cluster, newest=STEP_EVENTS_PER_JOB)
        if e["event"] == "step" and e["step_time_s"] is not None
    ]
    try:
        start = whatif.live_start(job, steps, _inputs(prefix), _spec(settings), cluster)
    except TwinError as exc:
        st.session_state[prefix + "load_error"] = f"cannot start from job {job_id!r}: {exc}"
        return
    _set_inputs(prefix, start.inputs)
    st.session_state[prefix + "calibration"] = start


def _live_jobs(settings: DashboardSettings) -> list[str]:
    store = open_store(settings.db_url)
    if isinstance(store, str):
        return []
    cluster = st.session_state.get("live_cluster", settings.cluster)
    try:
        return [str(j["job_id"]) for j in store.jobs(cluster) if j["state"] in ("running", "checkpointing")]
    except Exception:  # an unreadable store only removes the live jobs from the list
        return []


def _degrees(key: str) -> list[int]:
    """Powers of two, plus the current value (a loaded layout may use e.g. PP 12)."""
    current = st.session_state.get(key)
    return sorted({*PARALLEL_DEGREES, *([int(current)] if isinstance(current, int) else [])})


def _form(prefix: str, settings: DashboardSettings) -> None:
    """The inputs of one scenario."""
    p = prefix
    starts = [whatif.README_EXAMPLE, *(e.label for e in _worked_examples())]
    starts += [whatif.LIVE_JOB_PREFIX + j for j in _live_jobs(settings)]
    c1, c2 = st.columns([4, 1])
    choice = c1.selectbox("Start from", starts, key=p + "start")
    c2.button("Load", key=p + "load", on_click=_load, args=(p, choice, settings))
    error = st.session_state.pop(p + "load_error", None)
    if error:
        st.error(error)

    st.markdown("**Model**")
    m1, m2 = st.columns([1, 3])
    mode = m1.radio("Model", (PRESET_MODE, SHAPE_MODE), key=p + "model_mode", label_visibility="collapsed")
    m2.selectbox(
        "Preset",
        list(MODEL_PRESETS),
        key=p + "model_preset",
        disabled=mode == SHAPE_MODE,
        on_change=_on_preset,
        args=(p,),
    )
    shape = st.columns(7)
    disabled = mode == PRESET_MODE
    for col, name, label in zip(
        shape[:6],
        ("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab"),
        ("layers", "hidden", "heads", "KV heads", "FFN hidden", "vocab"),
        strict=True,
    ):
        col.number_input(label, min_value=1, step=1, key=p + name, disabled=disabled)
    shape[6].checkbox("gated MLP", key=p + "gated_mlp", disabled=disabled)

    st.markdown("**Cluster**")
    c = st.columns(6)
    c[0].selectbox("GPU", list(GPU_PRESETS), key=p + "gpu")
    c[1].number_input("GPUs", min_value=1, max_value=MAX_GPUS, step=8, key=p + "gpus")
    c[2].number_input("GPUs per node", min_value=1, max_value=72, step=1, key=p + "gpus_per_node")
    c[3].number_input(
        "price per GPU-hour", min_value=0.0, step=0.1, format="%.2f", key=p + "price_per_gpu_hour"
    )
    c[4].selectbox("currency", CURRENCIES, key=p + "currency")
    c[5].number_input("PUE", min_value=1.0, max_value=3.0, step=0.05, key=p + "pue")

    st.markdown("**Parallelism and memory**")
    lay = st.columns(6)
    for col, name in zip(lay[:3], ("tp", "pp", "cp"), strict=True):
        col.selectbox(name.upper(), _degrees(p + name), key=p + name)
    lay[3].number_input("DP (0 = fill the GPUs)", min_value=0, max_value=MAX_GPUS, step=1, key=p + "dp")
    lay[4].number_input("micro-batch", min_value=1, max_value=64, step=1, key=p + "micro_batch")
    lay[5].number_input("virtual stages", min_value=1, max_value=16, step=1, key=p + "virtual_stages")
    mem = st.columns(5)
    mem[0].selectbox("ZeRO stage", ZERO_STAGES, key=p + "zero_stage")
    mem[1].selectbox("offload", [o.value for o in OFFLOADS], key=p + "offload")
    mem[2].selectbox("recompute", [r.value for r in RECOMPUTES], key=p + "recompute")
    mem[3].selectbox("precision", [x.value for x in PRECISIONS], key=p + "precision")
    mem[4].checkbox("sequence parallel", key=p + "sequence_parallel")

    st.markdown("**Training**")
    t = st.columns(3)
    t[0].number_input("sequence length", min_value=1, step=1024, key=p + "seq_len")
    t[1].number_input("global batch (sequences)", min_value=1, step=1, key=p + "global_batch")
    t[2].number_input(
        "tokens (0 = per step only)", min_value=0.0, max_value=MAX_TOKENS, format="%.3e", key=p + "tokens"
    )


def _outcome(prefix: str) -> Outcome:
    calibration = st.session_state.get(prefix + "calibration")
    scale = 1.0
    if calibration is not None and st.session_state.get(prefix + "apply_calibration", True):
        scale = calibration.efficiency_scale
    return whatif.evaluate_inputs(_inputs(prefix), scale)


def _fit_message(label: str, outcome: Outcome) -> None:
    if outcome.result is None:
        st.error(f"{label}: invalid scenario — {outcome.error}", icon=":material/error:")
        return
    if outcome.result["fits"]:
        st.success(f"{label}: fits in HBM.", icon=":material/check_circle:")
    else:
        st.error(f"{label}: does not fit — {outcome.result['reason']}", icon=":material/error:")


def _calibration_note(prefix: str) -> None:
    calibration = st.session_state.get(prefix + "calibration")
    if calibration is None:
        return
    st.checkbox(
        f"Calibrated to live job {calibration.job_id}: efficiency ×{calibration.efficiency_scale:.3f} "
        f"(observed {fmt_step_time(calibration.observed_step_time_s)}, twin "
        f"{fmt_step_time(calibration.predicted_step_time_s)} → calibrated "
        f"{fmt_step_time(calibration.calibrated_step_time_s)})",
        value=True,
        key=prefix + "apply_calibration",
    )
    for note in calibration.notes:
        st.caption(f"note: {note}")


def _headline(result: Mapping[str, Any], columns: int = HEADLINE_COLUMNS) -> None:
    items = whatif.headline(result)
    for start in range(0, len(items), columns):
        cols = st.columns(columns)
        for col, (label, value) in zip(cols, items[start : start + columns], strict=False):
            col.metric(label, value)


def _worked_example(prefix: str, outcome: Outcome) -> None:
    label = st.session_state.get(prefix + "worked")
    example = next((e for e in _worked_examples() if e.label == label), None)
    if example is None:
        return
    st.subheader("Published worked example vs the twin")
    st.caption(
        "The example assumes every V100 runs at its 125 TFLOP/s fp16 peak, sizes the cluster by 24 bytes "
        "per parameter and charges 500 W per GPU (`twin seed-report`); the twin's figures come from this "
        "form's layout, achieved efficiency, power per phase with PUE, and interruptions."
    )
    st.dataframe(
        whatif.worked_example_table(example, outcome.result), hide_index=True, key=prefix + "worked_table"
    )
    for note in example.published.get("notes", []):
        st.caption(f"note: {note}")


def render(settings: DashboardSettings) -> None:
    st.title("What-if")
    _keep_state()
    for prefix in PREFIXES:
        if prefix + "gpu" not in st.session_state:
            _set_inputs(prefix, whatif.readme_example())
    compare = st.toggle("Compare two scenarios side by side", key="whatif_compare")
    tab_a, tab_b = st.tabs(["Scenario A", "Scenario B"])
    with tab_a:
        _form("a_", settings)
    with tab_b:
        st.button("Copy A → B", key="copy_a_b", on_click=lambda: _set_inputs("b_", _inputs("a_")))
        _form("b_", settings)

    a = _outcome("a_")
    if not compare:
        _calibration_note("a_")
        _fit_message("A", a)
        if a.result is None:
            return
        _headline(a.result)
        left, right = st.columns(2)
        left.plotly_chart(figures.memory_figure([("A", a.result)]), key="whatif_memory")
        right.plotly_chart(figures.breakdown_figure([("A", a.result)]), key="whatif_breakdown")
        _worked_example("a_", a)
        return

    b = _outcome("b_")
    cols = st.columns(2)
    for col, (label, prefix, outcome) in zip(cols, (("A", "a_", a), ("B", "b_", b)), strict=True):
        with col:
            _calibration_note(prefix)
            _fit_message(label, outcome)
    if a.result is None or b.result is None:
        return
    st.dataframe(whatif.comparison_rows(a.result, b.result), hide_index=True, key="whatif_comparison")
    both = [("A", a.result), ("B", b.result)]
    left, right = st.columns(2)
    left.plotly_chart(figures.memory_figure(both), key="whatif_memory")
    right.plotly_chart(figures.breakdown_figure(both), key="whatif_breakdown")
    _worked_example("a_", a)
