"""Job events: idempotent inserts (NULL steps included) and the job state machine, in and out of order."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from twin.records import IngestBatch, JobEventRecord
from twin.store.repository import Store

T0 = 1_700_000_000.0
MODEL = {"preset": "llama3-8b"}
LAYOUT = {"tp": 2, "pp": 1}


def event(kind: str, dt: float, **fields: Any) -> JobEventRecord:
    return JobEventRecord("c1", "j1", kind, T0 + dt, **fields)


def job(store: Store) -> dict[str, Any]:
    (row,) = store.jobs()
    return row


def write(store: Store, *events: JobEventRecord) -> None:
    store.write_batch(IngestBatch(job_events=list(events)))


def test_start_step_checkpoint_end(store: Store) -> None:
    write(store, event("start", 0, model=MODEL, layout=LAYOUT, nodes=("n01", "n02")))
    row = job(store)
    assert (row["state"], row["started_ts"], row["model"], row["layout"]) == ("running", T0, MODEL, LAYOUT)
    assert row["nodes"] == ["n01", "n02"]
    write(store, event("step", 10, step=5, step_time_s=2.0, tokens=1e6))
    row = job(store)
    assert (row["state"], row["last_step"], row["last_step_time_s"], row["tokens"]) == (
        "running",
        5,
        2.0,
        1e6,
    )
    write(store, event("checkpoint", 12, step=5))
    assert (job(store)["state"], job(store)["last_checkpoint_ts"]) == ("checkpointing", T0 + 12)
    write(store, event("step", 20, step=6, step_time_s=2.5))
    assert (job(store)["state"], job(store)["last_step"]) == ("running", 6)
    write(store, event("end", 30, step=6))
    row = job(store)
    assert (row["state"], row["ended_ts"], row["updated_ts"]) == ("ended", T0 + 30, T0 + 30)
    assert row["model"] == MODEL  # later events without a model keep it


def test_fail_keeps_its_reason_and_a_restart_runs_again(store: Store) -> None:
    write(store, event("start", 0), event("fail", 50, reason="XID 79 on n02"))
    assert (job(store)["state"], job(store)["reason"], job(store)["ended_ts"]) == (
        "failed",
        "XID 79 on n02",
        T0 + 50,
    )
    write(store, event("start", 100))
    row = job(store)
    assert (row["state"], row["reason"], row["ended_ts"], row["started_ts"]) == ("running", None, None, T0)


def test_an_older_event_arriving_late_does_not_move_the_job_backwards(store: Store) -> None:
    write(store, event("start", 0), event("end", 100, step=40))
    write(store, event("step", 50, step=20, step_time_s=1.5))
    row = job(store)
    assert (row["state"], row["state_ts"], row["last_step"]) == ("ended", T0 + 100, 40)
    write(store, event("checkpoint", 60))
    assert job(store)["state"] == "ended"
    assert job(store)["last_checkpoint_ts"] == T0 + 60


def test_redelivered_events_are_ignored_including_ones_without_a_step(store: Store) -> None:
    events = [event("start", 0), event("step", 1, step=1), event("checkpoint", 2)]
    first = store.write_batch(IngestBatch(job_events=events))
    again = store.write_batch(IngestBatch(job_events=events))
    assert (first.events_inserted, first.events_duplicates) == (3, 0)
    assert (again.events_inserted, again.events_duplicates) == (0, 3)
    assert [e["event"] for e in store.job_events("j1")] == ["start", "step", "checkpoint"]
    assert [e["step"] for e in store.job_events("j1")] == [None, 1, None]


def test_same_ts_different_steps_are_different_events(store: Store) -> None:
    result = store.write_batch(IngestBatch(job_events=[event("step", 5, step=1), event("step", 5, step=2)]))
    assert result.events_inserted == 2
    assert job(store)["last_step"] == 2


EVENTS = [
    event("start", 0, model=MODEL, layout=LAYOUT, nodes=("n01",)),
    event("step", 10, step=10, step_time_s=1.0, tokens=4e6),
    event("checkpoint", 15, step=10),
    event("step", 20, step=20, step_time_s=1.1, tokens=8e6),
    event("fail", 25, reason="NCCL timeout"),
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(EVENTS))))[::7])
def test_every_arrival_order_gives_the_same_job(store: Store, order: tuple[int, ...]) -> None:
    for i in order:  # one event per batch: the fold across transactions is what is tested
        write(store, EVENTS[i])
    row = job(store)
    assert (row["state"], row["reason"], row["ended_ts"]) == ("failed", "NCCL timeout", T0 + 25)
    assert (row["last_step"], row["last_step_time_s"], row["tokens"]) == (20, 1.1, 8e6)
    assert (row["started_ts"], row["last_checkpoint_ts"], row["updated_ts"]) == (T0, T0 + 15, T0 + 25)
    assert (row["model"], row["layout"], row["nodes"]) == (MODEL, LAYOUT, ["n01"])


def test_jobs_of_two_clusters_are_kept_apart(store: Store) -> None:
    write(store, JobEventRecord("a", "j1", "start", T0), JobEventRecord("b", "j1", "fail", T0))
    assert [(r["cluster"], r["state"]) for r in store.jobs()] == [("a", "running"), ("b", "failed")]
    assert [r["state"] for r in store.jobs(cluster="b")] == ["failed"]
    assert len(store.job_events("j1")) == 2 and len(store.job_events("j1", cluster="a")) == 1
