"""TwinState: newest reading wins, stale after 3 intervals, jobs never move backwards."""

from __future__ import annotations

from twin.records import COL, TELEMETRY_COLUMNS, JobEventRecord, NodeStatusRecord
from twin.state import STALE_AFTER_INTERVALS, TwinState


def row(node: str, index: int, ts: float, power_w: float) -> tuple[object, ...]:
    values: list[object] = [None] * len(TELEMETRY_COLUMNS)
    values[COL["cluster"]], values[COL["node"]], values[COL["gpu_index"]] = "c1", node, index
    values[COL["ts"]], values[COL["power_w"]] = ts, power_w
    return tuple(values)


def test_the_newest_reading_per_gpu_wins_even_when_an_older_one_arrives_later() -> None:
    state = TwinState()
    state.fold_telemetry([row("n01", 0, 10.0, 500.0)])
    state.fold_telemetry([row("n01", 0, 9.0, 100.0)])
    assert state.gpus[("c1", "n01", 0)][COL["power_w"]] == 500.0


def test_a_node_goes_stale_after_three_of_its_intervals_without_telemetry() -> None:
    state = TwinState(default_interval_s=1.0)
    for k in range(20):  # 2 s spacing: the learnt interval approaches 2 s
        state.fold_message("c1", "n01", 100.0 + 2 * k, received_s=100.0 + 2 * k)
    live = state.nodes[("c1", "n01")]
    assert 1.9 < live.interval_s <= 2.0
    last = live.last_received_s
    assert last is not None
    assert state.check_stale(last + 0.9 * STALE_AFTER_INTERVALS * live.interval_s) == []
    assert state.check_stale(last + 1.1 * STALE_AFTER_INTERVALS * live.interval_s) == [("c1", "n01")]
    assert live.status == "stale"
    assert state.check_stale(last + 100) == []  # reported once
    state.fold_message("c1", "n01", 200.0, received_s=200.0)
    assert live.status == "online"


def test_a_fast_node_folded_in_batches_is_not_called_stale_between_batches() -> None:
    # 140 samples/s (the ingest benchmark's rate per node), folded every 0.25 s by the service.
    state = TwinState(default_interval_s=1.0, min_interval_s=0.25)
    for k in range(140):
        state.fold_message("c1", "n01", 100.0 + k / 140, received_s=100.25)
    live = state.nodes[("c1", "n01")]
    assert live.interval_s < 0.02  # learnt from the samples' spacing
    assert state.check_stale(100.25 + 0.5) == []  # one batch late is normal, not stale
    assert state.check_stale(100.25 + 0.8) == [("c1", "n01")]  # 3 × the 0.25 s floor


def test_a_newer_sample_is_never_a_duplicate_and_an_old_one_is_found() -> None:
    state = TwinState()
    for ts in (1.0, 2.0, 3.0):
        state.fold_message("c1", "n01", ts, received_s=ts)
    assert not state.is_duplicate("c1", "n01", 4.0)
    assert state.is_duplicate("c1", "n01", 2.0)
    assert not state.is_duplicate("c1", "n01", 2.5)
    assert not state.is_duplicate("c1", "n02", 1.0)


def test_redelivered_samples_are_recognised() -> None:
    state = TwinState()
    state.fold_message("c1", "n01", 5.0, received_s=5.0)
    assert state.is_duplicate("c1", "n01", 5.0)
    assert not state.is_duplicate("c1", "n01", 6.0)
    assert not state.is_duplicate("c1", "n02", 5.0)


def test_status_messages_set_node_status() -> None:
    state = TwinState()
    state.fold_status(NodeStatusRecord("c1", "n07", "offline", 1.0))
    assert state.snapshot()["nodes"][0]["status"] == "offline"


def test_job_progress_and_a_late_step_does_not_revive_an_ended_job() -> None:
    state = TwinState()
    state.fold_job_event(
        JobEventRecord("c1", "j1", "start", 0.0, model={"preset": "llama3-8b"}, nodes=("n01",))
    )
    for step, step_time in ((1, 9.0), (2, 2.0), (3, 2.2), (4, 2.1)):
        state.fold_job_event(
            JobEventRecord("c1", "j1", "step", float(step * 2), step=step, step_time_s=step_time)
        )
    state.fold_job_event(JobEventRecord("c1", "j1", "end", 20.0, step=4))
    state.fold_job_event(JobEventRecord("c1", "j1", "step", 8.5, step=4, step_time_s=2.1))  # redelivered late
    job = state.snapshot()["jobs"][0]
    assert job["state"] == "ended" and job["last_step"] == 4
    assert job["observed_step_time_s"] == 2.1  # the median resists the slow first step
    assert job["model"] == {"preset": "llama3-8b"} and job["nodes"] == ["n01"]


def test_a_failure_keeps_its_reason() -> None:
    state = TwinState()
    state.fold_job_event(JobEventRecord("c1", "j2", "start", 0.0))
    state.fold_job_event(JobEventRecord("c1", "j2", "fail", 5.0, reason="XID 79 on n03"))
    job = state.jobs[("c1", "j2")]
    assert (job.state, job.reason) == ("failed", "XID 79 on n03")
