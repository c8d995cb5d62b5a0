"""One replication: determinism, conservation of GPU-hours and energy, progress and lost-work rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.sim.helpers import MANY_FAILURES, NO_FAILURES, job, small_spec
from twin.perf.reliability import Component, failure_mix
from twin.sim import EventKind, SimResult, SimSpec, simulate
from twin.sim.spec import Health

DAY_S = 86_400.0
HARDWARE = {share.name for share in failure_mix() if share.component is not Component.SOFTWARE}


def BUSY_SPEC() -> SimSpec:  # noqa: N802
    """Four jobs on 4 + 1 spare nodes at 1,000× the Llama 3 failure rate (d needs the whole cluster)."""
    return small_spec(
        4,
        spare_nodes=1,
        scale=MANY_FAILURES,
        repair_s={"gpu": 4 * 3600, "network": 3600, "host": 2 * 3600},
        jobs=[job("a", 16, 4e9), job("b", 8, 4e9), job("c", 8, 3e9), job("d", 32, arrival_s=3600.0)],
    )


def _busy() -> SimResult:
    return simulate(BUSY_SPEC(), 3, seed=7)


def test_identical_seeds_give_identical_event_logs() -> None:
    spec = small_spec(4, spare_nodes=1, scale=MANY_FAILURES)
    first, second = simulate(spec, 3, seed=11), simulate(spec, 3, seed=11)
    assert len(first.events) > 20
    assert first.events == second.events
    assert first.jobs == second.jobs
    assert simulate(spec, 3, seed=12).events != first.events
    seq = np.random.SeedSequence(5)
    assert simulate(spec, 3, seed=seq).events == simulate(spec, 3, seed=seq).events


def test_gpu_hours_are_conserved_and_match_the_jobs() -> None:
    result = _busy()
    c = result.cluster
    assert c.gpu_hours_total == pytest.approx(5 * 8 * 72)
    assert c.gpu_hours_used + c.gpu_hours_idle + c.gpu_hours_down == pytest.approx(c.gpu_hours_total)
    assert min(c.gpu_hours_used, c.gpu_hours_idle, c.gpu_hours_down) > 0
    # Independent bookkeeping: the jobs' held GPU-hours add up to the cluster's used GPU-hours.
    assert sum(j.gpu_hours for j in result.jobs) == pytest.approx(c.gpu_hours_used)


def test_down_hours_match_the_repair_intervals_in_the_log() -> None:
    result = _busy()
    down_since: dict[int, float] = {}
    down_s = 0.0
    for e in result.events:
        if e.kind is EventKind.FAILURE and e.category in HARDWARE:
            assert e.node is not None and e.node not in down_since
            down_since[e.node] = e.time_s
        elif e.kind is EventKind.REPAIRED:
            assert e.node is not None
            down_s += e.time_s - down_since.pop(e.node)
    down_s += sum(result.horizon_s - t for t in down_since.values())
    assert down_s * 8 / 3600 == pytest.approx(result.cluster.gpu_hours_down)


def test_energy_equals_the_power_trace_and_the_hourly_series() -> None:
    result = _busy()
    t = np.append(result.power_times_s, result.horizon_s)
    trace_kwh = float(np.sum(np.asarray(result.power_w) * np.diff(t))) / 3.6e6
    assert result.cluster.it_energy_kwh == pytest.approx(trace_kwh)
    starts, kw = result.power_series(3600.0)
    assert starts.size == 72 and float(kw.sum()) == pytest.approx(result.cluster.it_energy_kwh)
    assert result.cluster.energy_kwh == pytest.approx(1.2 * result.cluster.it_energy_kwh)
    assert sum(j.energy_kwh for j in result.jobs) < result.cluster.energy_kwh


def test_no_job_runs_on_a_failed_node() -> None:
    """Rebuild each job's node set from the log; at every RESUME it is complete and all in service."""
    result = _busy()
    owned: dict[str, set[int]] = {}
    down: set[int] = set()
    checked = 0
    for e in result.events:
        if e.kind in (EventKind.START, EventKind.REPLACE):
            assert e.job is not None and not down & set(e.nodes)
            owned.setdefault(e.job, set()).update(e.nodes)
        elif e.kind is EventKind.FAILURE and e.category in HARDWARE:
            assert e.node is not None
            down.add(e.node)
            for nodes in owned.values():
                nodes.discard(e.node)
        elif e.kind is EventKind.REPAIRED:
            assert e.node in down
            down.discard(e.node)
        elif e.kind is EventKind.FINISH:
            owned.pop(e.job or "", None)
        elif e.kind is EventKind.RESUME:
            nodes = owned[e.job or ""]
            assert not nodes & down
            assert len(nodes) == next(j for j in result.jobs if j.job_id == e.job).gpus // 8
            checked += 1
    assert checked > 10


def test_jobs_never_pass_their_target() -> None:
    result = _busy()
    for j in result.jobs:
        assert 0 <= j.steps_checkpointed <= j.steps_done <= j.target_steps
        if j.finish_s is not None:
            assert j.steps_done == j.steps_checkpointed == j.target_steps and j.progress == 1.0
    assert sum(j.finish_s is not None for j in result.jobs) >= 2
    assert sum(j.interruptions for j in result.jobs) >= 8


def test_failure_free_job_finishes_exactly_on_the_model_time() -> None:
    spec = small_spec(1, scale=NO_FAILURES, jobs=[job("solo", 8, checkpoint_interval_s=600.0)])
    (solo,) = spec.jobs
    result = simulate(spec, 2, seed=0)
    (r,) = result.jobs
    k = solo.steps_per_checkpoint
    chunks = math.ceil(solo.target_steps / k)
    expected = (
        spec.cluster.restart_s + solo.target_steps * solo.step_time_s + chunks * solo.checkpoint_write_s
    )
    assert r.finish_s is not None and r.finish_s == pytest.approx(expected)
    assert r.checkpoints == chunks and r.interruptions == 0 and r.lost_work_s == 0.0
    assert r.steps_done == solo.target_steps
    assert r.cost == pytest.approx(r.gpu_hours * 2.0) and r.gpu_hours == pytest.approx(8 * r.finish_s / 3600)


def test_lost_work_is_at_most_one_chunk_per_interruption() -> None:
    result = _busy()
    spec_chunk = {j.job_id: j for j in BUSY_SPEC().jobs}
    for e in result.events:
        if e.kind is EventKind.INTERRUPT:
            js = spec_chunk[e.job or ""]
            chunk_s = js.steps_per_checkpoint * js.step_time_s + js.checkpoint_write_s
            assert e.value is not None and 0.0 <= e.value <= chunk_s + 1e-6


def test_fork_from_a_running_state_with_a_failed_node() -> None:
    from twin.sim import JobProgress, NodeCondition, SimState

    spec = small_spec(4, spare_nodes=1, scale=NO_FAILURES, jobs=[job("a", 16), job("b", 8)])
    a = spec.jobs[0]
    state = SimState(
        nodes=(NodeCondition(1, Health.FAILED, remaining_s=7200.0), NodeCondition(3, Health.STALE, 3600.0)),
        jobs=(JobProgress("a", steps_done=1000, steps_since_checkpoint=100, nodes=(0, 1)),),
    )
    result = simulate(spec, 2, seed=0, state=state)
    events = result.events
    interrupt = next(e for e in events if e.kind is EventKind.INTERRUPT)
    assert interrupt.time_s == 0.0 and interrupt.value == pytest.approx(100 * a.step_time_s)
    replace = next(e for e in events if e.kind is EventKind.REPLACE)
    assert replace.job == "a" and replace.node == 2 and replace.time_s == 0.0  # lowest free regular node
    # b queued at 0 must wait: nodes 0, 2 held by a, 1 failed, 3 stale for an hour, spare 4 not for new jobs.
    b_start = next(e for e in events if e.kind is EventKind.START and e.job == "b")
    assert b_start.time_s == pytest.approx(3600.0) and b_start.nodes == (3,)
    repaired = next(e for e in events if e.kind is EventKind.REPAIRED)
    assert repaired.node == 1 and repaired.time_s == pytest.approx(7200.0)
    ra = result.job("a")
    assert ra.interruptions == 1 and ra.finish_s is not None
    # a resumes from its checkpoint (900 steps) after one restart: remaining 2,915 steps.
    remaining = a.target_steps - 900
    chunks = math.ceil(remaining / a.steps_per_checkpoint)
    expected = spec.cluster.restart_s + remaining * a.step_time_s + chunks * a.checkpoint_write_s
    assert ra.finish_s == pytest.approx(expected)


def test_calibration_override_changes_the_step_time() -> None:
    from twin.sim import JobProgress, SimState

    spec = small_spec(1, scale=NO_FAILURES, jobs=[job("solo", 8)])
    base = simulate(spec, 2, seed=0).job("solo")
    slower = simulate(spec, 2, seed=0, state=SimState(jobs=(JobProgress("solo", efficiency_scale=0.5),))).job(
        "solo"
    )
    observed = simulate(spec, 2, seed=0, state=SimState(jobs=(JobProgress("solo", step_time_s=20.0),))).job(
        "solo"
    )
    assert slower.step_time_s > 1.3 * base.step_time_s
    assert observed.step_time_s == 20.0
    assert base.finish_s is not None and slower.finish_s is not None and slower.finish_s > base.finish_s
    with pytest.raises(Exception, match="not in this simulation"):
        base_result = simulate(spec, 1, seed=0)
        base_result.job("ghost")


def test_degraded_node_slows_its_job() -> None:
    from twin.sim import NodeCondition, SimState

    spec = small_spec(1, scale=NO_FAILURES, jobs=[job("solo", 8)])
    base = simulate(spec, 2, seed=0).job("solo")
    slow = simulate(
        spec, 2, seed=0, state=SimState(nodes=(NodeCondition(0, Health.DEGRADED, slowdown=1.5),))
    ).job("solo")
    assert base.finish_s is not None and slow.finish_s is not None
    compute = base.finish_s - 600.0 - base.checkpoints * spec.jobs[0].checkpoint_write_s
    assert slow.finish_s - base.finish_s == pytest.approx(0.5 * compute, rel=1e-6)
