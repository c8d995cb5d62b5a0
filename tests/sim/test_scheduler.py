"""FIFO with EASY backfill, gang allocation on whole nodes, spares only for replacements."""

from __future__ import annotations

import pytest

from tests.sim.helpers import NO_FAILURES, job, small_spec
from twin.sim import EventKind, simulate


def test_fifo_with_easy_backfill() -> None:
    spec = small_spec(
        4,
        scale=NO_FAILURES,
        jobs=[
            job("A", 16, 8e9),  # 2 nodes, ~28 h
            job("B", 32, 1e9, arrival_s=60.0),  # the whole cluster: waits for A (head of the queue)
            job("C", 8, 1e8, arrival_s=120.0),  # 1 node, 40 min: ends before A, backfilled at once
            job("D", 16, 16e9, arrival_s=180.0),  # fits now but would delay B: waits
            job("E", 8, 8e9, arrival_s=240.0),  # fits now, ends after A, no spare capacity at B's start
        ],
    )
    result = simulate(spec, 10, seed=0)
    r = {j.job_id: j for j in result.jobs}
    assert r["C"].start_s == pytest.approx(120.0)
    assert r["B"].start_s == pytest.approx(r["A"].finish_s)  # the backfill did not delay the head
    assert r["D"].start_s == pytest.approx(r["B"].finish_s)
    assert r["E"].start_s == pytest.approx(r["B"].finish_s)
    assert result.cluster.backfilled_jobs == 1
    starts = [e.job for e in result.events if e.kind is EventKind.START]
    assert starts == ["A", "C", "B", "D", "E"]
    # Gang allocation on whole nodes, lowest ids first.
    start_nodes = {e.job: e.nodes for e in result.events if e.kind is EventKind.START}
    assert start_nodes["A"] == (0, 1) and start_nodes["C"] == (2,) and start_nodes["B"] == (0, 1, 2, 3)


def test_backfill_uses_nodes_the_head_will_not_need() -> None:
    big_batch = {"seq_len": 4096, "global_batch": 96, "tokens": 1e9}  # dp 6 must divide the batch
    spec = small_spec(
        7,
        scale=NO_FAILURES,
        jobs=[
            job("A", 32, 8e9),  # 4 nodes; 3 stay free
            {**job("B", 48, arrival_s=60.0), "training": big_batch},  # head: 6 nodes; 7 free at A's end
            job("C", 8, 16e9, arrival_s=120.0),  # long, 1 node: takes the one node B will not need
            job("D", 8, 16e9, arrival_s=180.0),  # long, fits now, but no spare capacity left: waits
            job("E", 8, 1e8, arrival_s=240.0),  # short: ends before A, backfilled
        ],
    )
    result = simulate(spec, 12, seed=0)
    r = {j.job_id: j for j in result.jobs}
    assert r["C"].start_s == pytest.approx(120.0)
    assert r["E"].start_s == pytest.approx(240.0)
    assert r["B"].start_s == pytest.approx(r["A"].finish_s)
    assert r["D"].start_s == pytest.approx(r["B"].finish_s)
    assert result.cluster.backfilled_jobs == 2


def test_spare_nodes_do_not_start_jobs() -> None:
    spec = small_spec(1, spare_nodes=1, scale=NO_FAILURES, jobs=[job("first", 8), job("second", 8)])
    result = simulate(spec, 3, seed=0)
    first, second = result.job("first"), result.job("second")
    assert second.start_s == pytest.approx(first.finish_s)
    assert all(1 not in e.nodes for e in result.events)  # node 1 is the spare
