"""Live page logic: heatmap placement, alert rules, job rows, and one read of the 1,024-GPU demo store."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dashboard import live
from tests.dashboard.conftest import DEMO_GPUS_PER_NODE, DEMO_NODES, DemoStore
from twin.records import TELEMETRY_COLUMNS
from twin.store.power_history import cluster_power_series, hold_buckets
from twin.store.repository import Store

NOW = 1_700_000_000.0


def gpu_row(node: str, index: int, ts: float = NOW, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in TELEMETRY_COLUMNS}
    row.update(cluster="c", node=node, gpu_index=index, ts=ts, power_w=300.0, temp_c=60.0, gpu_util_pct=100.0)
    row.update(xid_last=0, ecc_sbe_total=0, throttle_reasons=0)
    row.update(values)
    return row


def node_row(
    node: str, last_seen_ts: float | None = NOW, status: str = "online", **values: Any
) -> dict[str, Any]:
    return {
        "cluster": "c",
        "node": node,
        "first_seen_ts": NOW - 600,
        "last_seen_ts": last_seen_ts,
        "status": status,
        "status_ts": values.get("status_ts"),
    }


def test_heatmap_puts_each_gpu_in_its_cell_and_leaves_gaps_empty() -> None:
    frame = live.telemetry_frame(
        [gpu_row("n01", 0, power_w=100.0), gpu_row("n01", 1, power_w=110.0), gpu_row("n00", 1, temp_c=71.0)]
    )
    power = live.heatmap(frame, "Power", nodes=["n02"])
    assert power.nodes == ("n00", "n01", "n02")
    assert power.gpu_indices == (0, 1)
    assert power.unit == "W"
    assert power.z[0, 1] == 100.0 and power.z[1, 1] == 110.0
    assert math.isnan(power.z[0, 0]) and np.isnan(power.z[:, 2]).all()  # no reading, no silent node
    assert live.heatmap(frame, "Temperature").z[1, 0] == 71.0
    with pytest.raises(ValueError, match="metric"):
        live.heatmap(frame, "Voltage")


def test_alerts_cover_every_rule() -> None:
    frame = live.telemetry_frame(
        [
            gpu_row("n00", 0),  # healthy
            gpu_row("n00", 1, xid_last=79),  # fell off the bus
            gpu_row("n00", 2, ts=NOW - 50),  # stopped reporting while its node goes on
            gpu_row("n01", 0, xid_last=48),  # double-bit ECC
            gpu_row("n01", 1, temp_c=live.THERMAL_WARNING_C + 1),  # hot
            gpu_row("n01", 2, throttle_reasons=live.THROTTLE_HW_THERMAL, temp_c=70.0),  # throttled
            gpu_row("n01", 3, ecc_sbe_total=12, xid_last=63),  # precursor
        ]
    )
    nodes = [
        node_row("n00"),
        node_row("n01"),
        node_row("n02", last_seen_ts=NOW - 120),  # silent 120 s > 30 s
        node_row("n03", status="offline", status_ts=NOW - 5),
    ]
    jobs = [
        {"job_id": "j1", "state": "failed", "reason": "XID 79: n00 GPU 1 fell off the bus", "ended_ts": NOW}
    ]
    alerts = live.alerts(nodes, frame, jobs, NOW, 30.0, failure_risks=[("n00/3", 0.5), ("n00/4", 0.01)])
    found = {(a.kind, a.where) for a in alerts}
    assert found == {
        ("failure", "n00/GPU 1"),
        ("failure", "n00/GPU 2"),
        ("failure", "n01/GPU 0"),
        ("failure", "job j1"),
        ("thermal", "n01/GPU 1"),
        ("thermal", "n01/GPU 2"),
        ("risk", "n01/GPU 3"),
        ("risk", "n00/3"),
        ("stale", "n02"),
        ("offline", "n03"),
    }
    assert [a.severity for a in alerts] == sorted(
        (a.severity for a in alerts), key=lambda s: live.SEVERITY_ORDER[s]
    )
    by_where = {a.where: a.message for a in alerts}
    assert "XID 79" in by_where["n00/GPU 1"] and "XID 48" in by_where["n01/GPU 0"]
    assert "12 correctable ECC errors" in by_where["n01/GPU 3"] and "XID 63" in by_where["n01/GPU 3"]
    assert "120 s" in by_where["n02"]


def test_no_alerts_for_a_healthy_cluster() -> None:
    frame = live.telemetry_frame([gpu_row("n00", i) for i in range(8)])
    assert live.alerts([node_row("n00")], frame, [{"job_id": "j", "state": "running"}], NOW, 30.0) == []


def test_job_rows_take_the_median_step_and_the_projection() -> None:
    jobs = [
        {
            "job_id": "j1",
            "state": "running",
            "model": {"name": "llama3-8b"},
            "nodes": ["a", "b"],
            "last_step": 40,
            "tokens": 4e7,
            "last_step_time_s": 30.0,
            "reason": None,
        }
    ]
    steps = {"j1": [(NOW + k, k, s) for k, s in enumerate([10.0, 10.2, 30.0, 9.9, 10.1])]}
    projection = {
        "j1": {
            "progress": 0.25,
            "predicted_step_time_s": 9.5,
            "calibrated_step_time_s": 10.05,
            "eta_p50_ts": NOW + 86_400,
            "eta_p90_ts": NOW + 90_000,
        }
    }
    (row,) = live.job_rows(jobs, steps, projection)
    assert row["observed step"] == 10.1  # median: the 30 s straggler does not move it
    assert row["model"] == "llama3-8b" and row["nodes"] == 2
    assert row["progress"] == 0.25 and row["ETA P50"] == NOW + 86_400
    (bare,) = live.job_rows(jobs, {}, None)
    assert bare["observed step"] == 30.0 and bare["ETA P50"] is None  # the job row's newest step time


def _held_sums(raw: pd.DataFrame, bucket_s: float, hold: int) -> dict[float, float]:
    """Expected power per bucket, computed directly: each GPU's mean in the bucket, or its mean in the
    latest of the `hold` buckets before it."""
    samples: dict[tuple[str, int], dict[int, list[float]]] = {}
    for node, gpu, ts, power in zip(raw["node"], raw["gpu_index"], raw["ts"], raw["power_w"], strict=True):
        samples.setdefault((str(node), int(gpu)), {}).setdefault(int(ts // bucket_s), []).append(float(power))
    buckets = range(min(min(b) for b in samples.values()), max(max(b) for b in samples.values()) + 1)
    sums = dict.fromkeys((b * bucket_s for b in buckets), 0.0)
    for by_bucket in samples.values():
        for b in buckets:
            seen = [sum(by_bucket[k]) / len(by_bucket[k]) for k in range(b - hold, b + 1) if k in by_bucket]
            sums[b * bucket_s] += seen[-1] if seen else 0.0
    return sums


def test_read_live_on_the_simulated_cluster(demo_store: DemoStore) -> None:
    with Store.open(demo_store.url, create=False) as store:
        start = time.perf_counter()
        data = live.read_live(store, demo_store.fill.cluster, time.time(), 1_800.0, 30.0)
        elapsed = time.perf_counter() - start
        raw = store.telemetry_frame(demo_store.fill.cluster)
    gpus = DEMO_NODES * DEMO_GPUS_PER_NODE
    assert len(data.frame) == gpus  # every GPU ever seen, with its newest sample
    assert len(data.nodes) == DEMO_NODES
    assert data.jobs and all(data.step_times[j["job_id"]] or j["state"] == "failed" for j in data.jobs)
    heat = live.heatmap(data.frame, "Power")
    assert heat.z.shape == (DEMO_GPUS_PER_NODE, DEMO_NODES)
    # The power history equals a direct computation from the raw rows (GPUs that died drop out after 30 s).
    bucket = live.power_bucket_s(1_800.0)
    expected = _held_sums(raw, bucket, hold_buckets(bucket, 30.0))
    assert list(data.power["ts"]) == sorted(expected)
    for ts, power_w in zip(data.power["ts"], data.power["power_w"], strict=True):
        assert power_w == pytest.approx(expected[ts], rel=1e-9)
    assert elapsed < 5.0  # generous: the benchmark holds the < 1 s target


def test_unsynchronised_slow_sensors_do_not_dip_the_sum(any_store: Store) -> None:
    from twin.records import IngestBatch

    start = 60.0 * (time.time() // 60) - 900.0
    batch = IngestBatch()
    for k in range(10):  # two GPUs reporting every 60 s, 30 s apart, 100 W and 300 W; buckets of 30 s
        for index, (offset, power) in enumerate(((0.0, 100.0), (30.0, 300.0))):
            row = gpu_row("n00", index, ts=start + 60 * k + offset, power_w=power)
            batch.telemetry.append(tuple(row[name] for name in TELEMETRY_COLUMNS))
    for k in range(10):  # cluster d: GPU 1 dies after its 4th report (t = 210 s), GPU 0 goes on
        for index, (offset, power) in enumerate(((0.0, 100.0), (30.0, 300.0))):
            if index == 0 or k < 4:
                row = gpu_row("n00", index, ts=start + 60 * k + offset, power_w=power, cluster="d")
                batch.telemetry.append(tuple(row[name] for name in TELEMETRY_COLUMNS))
    any_store.write_batch(batch)
    series = cluster_power_series(any_store, "c", start, start + 600, 30.0, hold_s=30.0)
    assert series["power_w"].iloc[0] == 100.0  # before the second GPU's first report
    assert list(series["power_w"])[1:] == pytest.approx([400.0] * (len(series) - 1))
    assert list(series["gpus"])[1:] == [2] * (len(series) - 1)
    dying = cluster_power_series(any_store, "d", start, start + 600, 30.0, hold_s=30.0)
    # GPU 1 reported in buckets 1, 3, 5, 7; held into 8; gone from bucket 9 on.
    assert list(dying["power_w"]) == pytest.approx([100.0] + [400.0] * 8 + [100.0] * 10)


def test_power_series_uses_rollups_before_the_raw_data(any_store: Store) -> None:
    from twin.records import IngestBatch
    from twin.store.compact import compact

    store = any_store
    minute = 60.0 * (time.time() // 60) - 600.0  # recent: the decoder-free write path keeps any ts
    batch = IngestBatch()
    for k in range(12):  # two GPUs, every 10 s for 2 minutes, 100 W and 300 W
        for index, power in ((0, 100.0), (1, 300.0)):
            row = gpu_row("n00", index, ts=minute + 10 * k, power_w=power)
            batch.telemetry.append(tuple(row[name] for name in TELEMETRY_COLUMNS))
    store.write_batch(batch)
    compact(store, minute + 60, 0.0)  # the first minute becomes rollups, its raw rows go
    assert len(store.rollup_frame("c")) == 2 and len(store.telemetry_frame("c")) == 12
    series = cluster_power_series(store, "c", minute - 60, minute + 600, 60.0, hold_s=30.0)
    odd = cluster_power_series(store, "c", minute + 60, minute + 600, 25.0, hold_s=30.0)  # off the minute
    assert list(series["ts"]) == [minute, minute + 60]
    assert list(series["power_w"]) == pytest.approx([400.0, 400.0])
    assert list(series["gpus"]) == [2, 2]
    # floor(ts / 25 s) buckets over the raw minute: the same sums on both backends
    assert list(odd["ts"]) == [25.0 * ((minute + 60) // 25) + 25.0 * k for k in range(len(odd))]
    assert list(odd["power_w"]) == pytest.approx([400.0] * len(odd))
    assert isinstance(series, pd.DataFrame)


def test_summary_counts_only_gpus_that_still_report() -> None:
    frame = live.telemetry_frame(
        [
            gpu_row("n00", 0, power_w=300.0),
            gpu_row("n00", 1, ts=NOW - 20, power_w=999.0),  # off the bus: behind its node
            gpu_row("n01", 0, power_w=200.0, temp_c=80.0),
            gpu_row("n02", 0, power_w=999.0),  # its node said offline
            gpu_row("n03", 0, ts=NOW - 100, power_w=999.0),  # stale node
        ]
    )
    nodes = [
        node_row("n00"),
        node_row("n01"),
        node_row("n02", status="offline"),
        node_row("n03", last_seen_ts=NOW - 100),
    ]
    jobs = [{"job_id": "a", "state": "running"}, {"job_id": "b", "state": "failed"}]
    s = live.summary(frame, nodes, jobs, NOW, 30.0)
    assert (s.gpus_reporting, s.nodes_reporting, s.nodes) == (2, 2, 4)
    assert s.power_w == 500.0 and s.max_temp_c == 80.0 and s.jobs_running == 1 and s.newest_ts == NOW
