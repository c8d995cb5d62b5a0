"""`twin demo` end to end (without the dashboard): broker, simulated cluster, ingest, store, projection."""

from __future__ import annotations

import io
import time
from pathlib import Path

from twin.demo import DEMO_CLUSTER, FAILURE_GPU, DemoRun, DemoSettings, demo_jobs
from twin.live_sim import fork_live, load_live_state, project
from twin.records import COL
from twin.sim import load_spec
from twin.store.commands import command_rows
from twin.store.forecasts import forecast_frame
from twin.store.repository import Store
from twin.store.status import store_status

RUN_S = 25.0  # the predictors train for ~10 s in the background first
FORECAST_EVERY_S = 5.0
FAILURE_AFTER_S = 4.0
ADVISE_EVERY_S = 5.0


def test_the_demo_ingests_the_simulated_cluster_its_jobs_and_the_gpu_failure(tmp_path: Path) -> None:
    settings = DemoSettings(
        workdir=tmp_path,
        dashboard=False,
        forecasts=True,
        forecast_every_s=FORECAST_EVERY_S,
        duration_s=RUN_S,
        failure_after_s=FAILURE_AFTER_S,
        advise_every_s=ADVISE_EVERY_S,
    )
    run = DemoRun(settings)
    out = io.StringIO()
    try:
        run.start(out)
        run.wait()
    finally:
        run.stop()
    assert run.errors == []
    assert "16 nodes × 8 h100-sxm, 3 training jobs" in out.getvalue()
    failed_node = demo_jobs()[0].nodes[0]
    with Store.open(run.db_url, create=False) as store:
        status = store_status(store, time.time(), 60.0)
        assert status.counts["nodes"] == 16 and status.counts["gpus"] == 128
        assert status.counts["telemetry"] >= 128 * (RUN_S - 3)  # ~1 sample per GPU per second
        assert status.rejects_by_reason == {}
        jobs = {j["job_id"]: j for j in store.jobs(DEMO_CLUSTER)}
        assert set(jobs) == {j.job_id for j in demo_jobs()}
        assert jobs["pretrain-70b"]["state"] == "failed"
        assert "XID 79" in (jobs["pretrain-70b"]["reason"] or "")
        assert jobs["finetune-8b"]["state"] == "running"
        state = load_live_state(store, DEMO_CLUSTER)
        commands = command_rows(store, DEMO_CLUSTER)
        forecasts = forecast_frame(store, cluster=DEMO_CLUSTER)
    assert set(forecasts["kind"]) == {"power", "failure"}
    cluster_power = forecasts[(forecasts["kind"] == "power") & (forecasts["scope"] == "cluster")]
    assert set(cluster_power["horizon_s"]) == {60.0, 900.0, 3600.0}
    assert (cluster_power["p10"] <= cluster_power["p50"]).all() and (
        cluster_power["p50"] <= cluster_power["p90"]
    ).all()
    assert (tmp_path / "models" / "power").is_dir()
    caps = [c for c in commands if c["action"] == "power_cap"]
    assert caps, "the advisor sent no power cap"
    assert {c["outcome"] for c in caps} == {"applied"}  # verified and applied by the simulated nodes
    assert state.gpus[(DEMO_CLUSTER, failed_node, FAILURE_GPU)][COL["xid_last"]] == 79
    assert state.jobs[(DEMO_CLUSTER, "sft-8b")].observed_step_time_s is not None
    plan = fork_live(load_spec(run.spec_path), state, DEMO_CLUSTER, now_s=time.time())
    assert failed_node in plan.out
    data = project(plan, hours=6, replications=4, workers=1).to_json()
    sft = next(j for j in data["jobs"] if j["job_id"] == "sft-8b")
    assert sft["running"] and sft["eta_p50_ts"] is not None
    pretrain = next(j for j in data["jobs"] if j["job_id"] == "pretrain-70b")
    assert not pretrain["running"]  # failed: restarts from its checkpoint in the projection
