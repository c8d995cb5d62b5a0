"""Forking the SimPy twin from the live state: nodes out, job progress, calibration, projections, what-ifs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from twin.live_sim import (
    FATAL_XIDS,
    ProjectionError,
    WhatIf,
    apply_what_if,
    compare,
    fork_live,
    load_live_state,
    project,
)
from twin.records import COL, TELEMETRY_COLUMNS, IngestBatch, JobEventRecord, NodeStatusRecord
from twin.sim import Health, SimSpec, parse_spec
from twin.state import TwinState
from twin.store.repository import Store

CLUSTER = "c1"
NOW = 1_800_000_000.0
NODES = 8
TRUE_SCALE = 0.8  # the job really runs at 80 % of the efficiency the model assumes
SEQ, BATCH = 4096, 256  # tokens per step: 1,048,576
TARGET_STEPS = 2_000
JOB_NODES = ("n00", "n01", "n02", "n03")


LAYOUT = {"tp": 2, "pp": 1, "cp": 1, "micro_batch": 1, "zero_stage": 1, "recompute": "selective",
          "sequence_parallel": True, "precision": "bf16"}  # fmt: skip


def raw_spec(**cluster: Any) -> dict[str, Any]:
    return {
        "cluster": {"gpu": "h100-sxm", "nodes": NODES, "gpus_per_node": 8, "price_per_gpu_hour": 2.0,
                    "currency": "EUR", "pue": 1.2, "failure_rate_scale": 50.0, **cluster},
        "jobs": [
            {"id": "pretrain", "model": {"preset": "llama3-8b"}, "gpus": 32,
             "layout": LAYOUT,
             "training": {"seq_len": SEQ, "global_batch": BATCH, "tokens": float(SEQ * BATCH * TARGET_STEPS)},
             "checkpoint_interval_s": 1800},
            {"id": "finetune", "model": {"preset": "llama3-8b"}, "gpus": 16,
             "layout": LAYOUT,
             "training": {"seq_len": SEQ, "global_batch": 64, "tokens": float(SEQ * 64 * 500)}},
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def spec() -> SimSpec:
    return parse_spec(raw_spec())


def true_step_time_s(spec: SimSpec) -> float:
    from twin.perf.estimate import estimate

    job = spec.jobs[0]
    est = estimate(job.model, spec.cluster.job_cluster(job.gpus), job.layout, job.training, TRUE_SCALE)
    return est.step.step_time_s


def telemetry_row(node: str, gpu: int, power_w: float, xid: int | None = None) -> tuple[Any, ...]:
    values: dict[str, Any] = dict.fromkeys(TELEMETRY_COLUMNS)
    values.update(cluster=CLUSTER, node=node, gpu_index=gpu, ts=NOW - 1, power_w=power_w, xid_last=xid)
    return tuple(values[c] for c in TELEMETRY_COLUMNS)


def live_records(spec: SimSpec, *, steps: int = 600, checkpoint: int = 500) -> IngestBatch:
    rng = np.random.default_rng(7)
    step_s = true_step_time_s(spec)
    batch = IngestBatch()
    start = NOW - steps * step_s
    model, layout = {"preset": "llama3-8b"}, {"tp": 2, "pp": 1, "dp": 16}
    batch.job_events.append(
        JobEventRecord(CLUSTER, "pretrain", "start", start, 0, model=model, layout=layout, nodes=JOB_NODES)
    )
    for k in range(1, steps + 1, 10):  # a step event every 10 steps, ±3 % noise
        t = float(step_s * rng.normal(1.0, 0.03))
        batch.job_events.append(JobEventRecord(CLUSTER, "pretrain", "step", start + k * step_s, k, t))
    checkpoint_ts = start + checkpoint * step_s
    batch.job_events.append(JobEventRecord(CLUSTER, "pretrain", "checkpoint", checkpoint_ts, checkpoint))
    batch.job_events.append(JobEventRecord(CLUSTER, "pretrain", "step", NOW - 1, steps, step_s))
    predicted_w = spec.jobs[0].power_per_gpu_w
    for i in range(NODES):
        node = f"n{i:02d}"
        batch.statuses.append(NodeStatusRecord(CLUSTER, node, "online", NOW - 100))
        busy = node in JOB_NODES
        for g in range(8):
            xid = 79 if (node == "n06" and g == 3) else None
            batch.telemetry.append(telemetry_row(node, g, 1.05 * predicted_w if busy else 70.0, xid))
    return batch


def live_state(spec: SimSpec, **kw: Any) -> TwinState:
    state = TwinState()
    batch = live_records(spec, **kw)
    for status in batch.statuses:
        state.fold_message(CLUSTER, status.node, NOW - 1, NOW - 1)
    state.fold_telemetry(batch.telemetry)
    for event in batch.job_events:
        state.fold_job_event(event)
    return state


def test_the_fork_takes_nodes_out_keeps_progress_and_learns_the_real_speed(spec: SimSpec) -> None:
    plan = fork_live(spec, live_state(spec), CLUSTER, now_s=NOW)
    assert 79 in FATAL_XIDS
    assert plan.out["n06"].health is Health.FAILED and "XID 79" in plan.out["n06"].why
    job = plan.jobs["pretrain"]
    assert (job.steps_done, job.steps_since_checkpoint, job.nodes) == (600, 100, JOB_NODES)
    assert plan.jobs["finetune"].nodes == () and plan.jobs["finetune"].steps_done == 0
    calibrated = next(j for j in plan.spec.jobs if j.job_id == "pretrain")
    assert calibrated.step_time_s == pytest.approx(true_step_time_s(spec), rel=0.03)
    assert calibrated.step_time_s > spec.jobs[0].step_time_s * 1.1  # slower than the model's prediction
    assert calibrated.power_per_gpu_w == pytest.approx(1.05 * spec.jobs[0].power_per_gpu_w, rel=0.05)
    assert plan.calibration is not None
    report = plan.calibration.job(CLUSTER, "pretrain")
    assert report.error_before_pct is not None and report.error_after_pct is not None
    assert report.error_after_pct < report.error_before_pct / 3


def test_the_projection_eta_follows_the_calibrated_step_time(spec: SimSpec) -> None:
    state = live_state(spec)
    calibrated = project(fork_live(spec, state, CLUSTER, now_s=NOW), hours=24, replications=8, seed=1)
    uncalibrated = fork_live(spec, state, CLUSTER, now_s=NOW, calibrate=False)
    naive = project(uncalibrated, hours=24, replications=8, seed=1)
    job = calibrated.to_json()["jobs"][0]
    assert job["job_id"] == "pretrain" and job["running"]
    remaining_s = (TARGET_STEPS - 600) * true_step_time_s(spec)
    eta_s = job["eta_p50_ts"] - NOW
    assert remaining_s < eta_s < remaining_s * 1.5  # plus checkpoints, failures, restarts
    naive_eta_s = naive.to_json()["jobs"][0]["eta_p50_ts"] - NOW
    assert naive_eta_s < eta_s * 0.95  # the uncalibrated model is too optimistic
    assert job["eta_p10_ts"] <= job["eta_p50_ts"]
    assert job["energy_kwh_to_completion"] > 0 and job["cost_to_completion"] > 0
    assert len(calibrated.to_json()["power_kw_hourly"]["mean"]) == 24


def test_failing_the_jobs_node_now_interrupts_it_and_delays_it(spec: SimSpec) -> None:
    plan = fork_live(spec, live_state(spec), CLUSTER, now_s=NOW)
    result = compare(plan, [WhatIf.fail_node("n01")], hours=24, replications=8, seed=3).to_json()
    base, variant = result["baseline"]["jobs"][0], result["variant"]["jobs"][0]
    assert variant["expected_interruptions"] >= base["expected_interruptions"] + 0.99
    assert result["deltas"][0]["delta_eta_p50_ts"] > 0
    assert result["variant"]["what_ifs"] == ["fail node n01 now"]


def test_a_power_cap_slows_the_job_and_lowers_its_power(spec: SimSpec) -> None:
    plan = fork_live(spec, live_state(spec), CLUSTER, now_s=NOW)
    capped = apply_what_if(plan, WhatIf.power_cap(350.0))
    before = next(j for j in plan.spec.jobs if j.job_id == "pretrain")
    after = next(j for j in capped.spec.jobs if j.job_id == "pretrain")
    assert after.step_time_s > before.step_time_s
    assert after.power_per_gpu_w < before.power_per_gpu_w
    assert after.efficiency_scale == before.efficiency_scale  # the calibration carries over


def test_changing_the_layout_restarts_the_job_with_its_new_step_time(spec: SimSpec) -> None:
    plan = fork_live(spec, live_state(spec), CLUSTER, now_s=NOW)
    changed = apply_what_if(plan, WhatIf.from_json({"layout": {"job": "pretrain", "zero_stage": 3}}))
    job = next(j for j in changed.spec.jobs if j.job_id == "pretrain")
    assert job.layout.zero_stage == 3
    assert changed.jobs["pretrain"].nodes == ()  # checkpoint-restart: re-launched
    assert changed.jobs["pretrain"].steps_since_checkpoint == 100  # lost at the restart


def test_nodes_can_be_added_and_only_idle_healthy_ones_removed(spec: SimSpec) -> None:
    plan = fork_live(spec, live_state(spec), CLUSTER, now_s=NOW)
    assert apply_what_if(plan, WhatIf.add_nodes(4)).spec.cluster.nodes == NODES + 4
    smaller = apply_what_if(plan, WhatIf.remove_nodes(3))  # idle & healthy: n04, n05, n07
    assert smaller.spec.cluster.nodes == NODES - 3 and "n06" in smaller.regular
    with pytest.raises(ProjectionError, match="only 3 node"):
        apply_what_if(plan, WhatIf.remove_nodes(4))


def test_bad_what_ifs_and_unknown_jobs_get_clear_errors(spec: SimSpec) -> None:
    plan = fork_live(spec, live_state(spec), CLUSTER, now_s=NOW)
    with pytest.raises(ProjectionError, match=r"job\(='nope'\) is not a job"):
        apply_what_if(plan, WhatIf.change_layout("nope", zero_stage=3))
    with pytest.raises(ProjectionError, match="n99"):
        apply_what_if(plan, WhatIf.fail_node("n99"))
    with pytest.raises(ProjectionError, match="unknown what-if 'explode'"):
        WhatIf.from_json({"explode": 1})
    with pytest.raises(ProjectionError, match="must be divisible"):
        apply_what_if(plan, WhatIf.change_layout("pretrain", tp=64))
    with pytest.raises(ProjectionError, match=r"impossible.*does not fit"):
        apply_what_if(plan, WhatIf.change_layout("pretrain", tp=1, zero_stage=0))
    projection = project(plan, hours=1, replications=1)
    with pytest.raises(ProjectionError, match=r"job\(='ghost'\) is not projected"):
        projection.job("ghost")
    with pytest.raises(ProjectionError, match="hours"):
        project(plan, hours=math.nan)


def test_an_ended_job_is_left_out_and_an_unplanned_live_job_is_noted(spec: SimSpec) -> None:
    state = live_state(spec)
    state.fold_job_event(JobEventRecord(CLUSTER, "pretrain", "end", NOW, 2000))
    state.fold_job_event(JobEventRecord(CLUSTER, "adhoc", "start", NOW, 0))
    plan = fork_live(spec, state, CLUSTER, now_s=NOW)
    assert plan.finished == ("pretrain",)
    assert [j.job_id for j in plan.spec.jobs] == ["finetune"]
    assert any("'adhoc' is not in the spec" in note for note in plan.notes)


def test_more_live_nodes_than_the_spec_has_is_an_error() -> None:
    small = parse_spec({**raw_spec(), "cluster": {**raw_spec()["cluster"], "nodes": 6}})
    with pytest.raises(ProjectionError, match="8 live nodes; the spec has 6"):
        fork_live(small, live_state(parse_spec(raw_spec())), CLUSTER, now_s=NOW)


def test_the_state_rebuilt_from_the_store_forks_like_the_live_one(spec: SimSpec, tmp_path: Any) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'twin.db'}")
    store.write_batch(live_records(spec))
    rebuilt = load_live_state(store, CLUSTER)
    job = rebuilt.jobs[(CLUSTER, "pretrain")]
    assert (job.last_step, job.last_checkpoint_step, job.nodes) == (600, 500, JOB_NODES)
    assert rebuilt.gpus[(CLUSTER, "n06", 3)][COL["xid_last"]] == 79
    from_store = fork_live(spec, rebuilt, CLUSTER, now_s=NOW)
    live = fork_live(spec, live_state(spec), CLUSTER, now_s=NOW)
    assert from_store.jobs == live.jobs
    assert set(from_store.out) == set(live.out) == {"n06"}
    assert from_store.spec.jobs[0].step_time_s == pytest.approx(live.spec.jobs[0].step_time_s, rel=1e-9)


def test_twin_project_forks_from_the_store_and_compares_a_what_if(
    spec: SimSpec, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import json

    from twin.cli import main

    db = f"sqlite:///{tmp_path / 'twin.db'}"
    with Store.open(db) as store:
        store.write_batch(live_records(spec))
    spec_path = tmp_path / "cluster.json"
    spec_path.write_text(json.dumps(raw_spec()))
    common = ["project", str(spec_path), "--db", db, "--cluster", CLUSTER, "--now", str(NOW)]
    out = io.StringIO()
    assert main([*common, "--hours", "12", "--replications", "4", "--workers", "1"], out=out) == 0
    assert "job pretrain: 30.0% done (running)" in out.getvalue()
    assert "node n06: failed (GPU 3 XID 79)" in out.getvalue()
    out = io.StringIO()
    argv = [*common, "--hours", "12", "--replications", "4", "--workers", "1", "--json"]
    assert main([*argv, "--what-if", '{"power_cap_w": 350}'], out=out) == 0
    data = json.loads(out.getvalue())
    assert data["variant"]["what_ifs"] == ["power cap 350 W per GPU"]
    assert data["deltas"][0]["delta_energy_kwh_to_completion"] is not None
    assert main([*common, "--what-if", '{"bogus": 1}'], out=io.StringIO()) == 2
    assert "unknown what-if 'bogus'" in capsys.readouterr().err
    assert main(["project", str(spec_path), "--db", db, "--cluster", "nope"], out=io.StringIO()) == 2
    assert "cluster(='nope') has no nodes" in capsys.readouterr().err
