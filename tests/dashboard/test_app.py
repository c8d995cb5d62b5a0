"""Every page through Streamlit's AppTest: no exception, key widgets, interactions, empty states."""

from __future__ import annotations

from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import DEMO_GPUS_PER_NODE, DEMO_NODES, DemoStore

TIMEOUT_S = 60.0
# A long stale limit: the demo store's newest sample must still count as live however slow the run.
STALE_AFTER_S = 3_600.0


def app_script(page: str, settings: dict[str, object]) -> None:
    from dashboard.app import run
    from dashboard.settings import DashboardSettings

    run(DashboardSettings(**settings), start_page=page)  # type: ignore[arg-type]


def start(page: str, **settings: Any) -> AppTest:
    at = AppTest.from_function(
        app_script, kwargs={"page": page, "settings": settings}, default_timeout=TIMEOUT_S
    )
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return str(next(m.value for m in at.metric if m.label == label))


def texts(at: AppTest) -> str:
    parts = [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.success]
    return "\n".join(str(p.value) for p in parts)


def test_live_page_on_the_simulated_cluster(demo_store: DemoStore) -> None:
    at = start("live", db_url=demo_store.url, sim_spec=demo_store.spec_path, stale_after_s=STALE_AFTER_S)
    assert at.title[0].value == "Live cluster"
    assert {s.key for s in at.selectbox} >= {"live_cluster", "live_metric", "live_window", "live_job"}
    reporting = int(metric(at, "GPUs reporting").replace(",", ""))
    assert DEMO_NODES * DEMO_GPUS_PER_NODE - 16 <= reporting <= DEMO_NODES * DEMO_GPUS_PER_NODE
    assert metric(at, "GPU power").endswith("kW")
    assert any(h.value.startswith("Alerts") for h in at.subheader)
    jobs = next(d.value for d in at.dataframe if "observed step" in d.value.columns)
    assert len(jobs) == 16 and (jobs["observed step"] == "9.78 s").any()
    assert not (jobs["ETA P50"] == "—").all(), "the projection gives ETAs"
    at.selectbox(key="live_metric").set_value("Temperature").run()
    assert not at.exception


def test_live_page_says_when_the_projection_is_unavailable(demo_store: DemoStore) -> None:
    at = start("live", db_url=demo_store.url, stale_after_s=STALE_AFTER_S)
    assert any(w.value.startswith("projection unavailable: no `twin sim` spec") for w in at.warning)


def test_empty_store_explains_how_to_start(empty_store_url: str, missing_db_url: str) -> None:
    at = start("live", db_url=empty_store_url)
    assert "No telemetry for cluster `demo`" in texts(at) and "twin sensors simulate" in texts(at)
    at = start("live", db_url=missing_db_url)
    assert "No database at" in texts(at) and "twin serve" in texts(at)
    at = start("forecasts", db_url=missing_db_url)
    assert "No database at" in texts(at)


def test_whatif_zero_stage_changes_the_memory_shown(empty_store_url: str) -> None:
    at = start("whatif", db_url=empty_store_url)
    assert {
        "a_model_preset",
        "a_gpu",
        "a_tp",
        "a_pp",
        "a_cp",
        "a_zero_stage",
        "a_offload",
        "a_recompute",
        "a_precision",
    } <= {s.key for s in at.selectbox}
    assert {"a_gpus", "a_dp", "a_micro_batch", "a_seq_len", "a_global_batch", "a_tokens"} <= {
        n.key for n in at.number_input
    }
    assert any("fits in HBM" in s.value for s in at.success)
    before = metric(at, "memory per GPU")
    for name in ("step time", "MFU", "time to train", "energy (facility)", "cost", "goodput"):
        assert metric(at, name) != "—"
    at.selectbox(key="a_zero_stage").set_value(3).run()
    assert not at.exception
    after = metric(at, "memory per GPU")
    assert after != before and float(after.split()[0]) < float(before.split()[0])


def test_whatif_infeasible_layout_shows_its_reason(empty_store_url: str) -> None:
    at = start("whatif", db_url=empty_store_url)
    at.selectbox(key="a_tp").set_value(1)
    at.selectbox(key="a_pp").set_value(1)
    at.selectbox(key="a_zero_stage").set_value(0)
    at.selectbox(key="a_recompute").set_value("none").run()
    assert any("does not fit — HBM needs" in e.value for e in at.error), [e.value for e in at.error]
    at.number_input(key="a_gpus").set_value(1000).run()
    assert any("invalid scenario" in e.value and "divisible" in e.value for e in at.error)


def test_whatif_worked_example_and_comparison(empty_store_url: str) -> None:
    at = start("whatif", db_url=empty_store_url)
    at.selectbox(key="a_start").set_value("Worked example: GPT-3.5 (175B) on V100").run()
    at.button(key="a_load").click().run()
    assert not at.exception
    assert at.selectbox(key="a_gpu").value == "v100-sxm2-32gb"
    table = next(d.value for d in at.dataframe if "published example" in d.value.columns)
    assert table.set_index("quantity").loc["GPUs (V100-32GB)", "published example"] == "164"
    at.toggle(key="whatif_compare").set_value(True).run()
    at.button(key="copy_a_b").click().run()
    at.selectbox(key="b_zero_stage").set_value(3).run()
    assert not at.exception
    comparison = next(d.value for d in at.dataframe if "B vs A" in d.value.columns)
    assert str(comparison.set_index("").loc["memory per GPU", "B vs A"]).startswith("-")


def test_whatif_starts_from_a_live_job(demo_store: DemoStore) -> None:
    at = start("whatif", db_url=demo_store.url, sim_spec=demo_store.spec_path)
    live_jobs = [o for o in at.selectbox(key="a_start").options if o.startswith("Live job: ")]
    assert live_jobs
    at.selectbox(key="a_start").set_value(live_jobs[0]).run()
    at.button(key="a_load").click().run()
    assert not at.exception
    assert (
        at.selectbox(key="a_model_preset").value == "llama3-8b" and at.number_input(key="a_gpus").value == 32
    )
    assert any(c.label.startswith("Calibrated to live job") for c in at.checkbox)


def test_sweep_page_filters_and_zero_chart(empty_store_url: str) -> None:
    at = start("sweep", db_url=empty_store_url)
    at.selectbox(key="sw_model").set_value("gpt3-1.3b")
    at.number_input(key="sw_gpus").set_value(64)
    at.number_input(key="sw_global_batch").set_value(512)
    at.number_input(key="sw_tokens").set_value(2.6e10).run()
    assert not at.exception
    summary = next(m.value for m in at.markdown if "layouts enumerated" in m.value)
    table = next(d.value for d in at.dataframe if "layout" in d.value.columns)
    assert len(table) == 20 and (table["fits"] == "yes").all()
    at.multiselect(key="sw_zero").set_value([3]).run()
    table = next(d.value for d in at.dataframe if "layout" in d.value.columns)
    assert table["layout"].str.contains("ZeRO-3").all()
    assert next(m.value for m in at.markdown if "layouts enumerated" in m.value) != summary
    assert any(h.value == "Memory per GPU across ZeRO stages" for h in at.subheader)


def test_forecasts_page_without_predictor_forecasts(demo_store: DemoStore) -> None:
    at = start("forecasts", db_url=demo_store.url, sim_spec=demo_store.spec_path)
    assert any("No forecasts in the store yet" in i.value for i in at.info)
    headers = [h.value for h in at.header]
    assert "Simulation projection of the live jobs" in headers
    assert any("ETA P50" in d.value.columns for d in at.dataframe)


@pytest.mark.parametrize("page", ["live", "whatif", "sweep", "forecasts"])
def test_bad_settings_are_shown_not_raised(page: str) -> None:
    def script(argv: list[str]) -> None:
        from dashboard.app import main

        main(argv)

    at = AppTest.from_function(
        script, kwargs={"argv": ["--refresh-s", "-1", page]}, default_timeout=TIMEOUT_S
    )
    at.run()
    assert not at.exception and "Invalid dashboard settings" in at.error[0].value
