"""write_batch: idempotent telemetry, node/GPU last seen, statuses, rejects, atomicity, a 50,000-row batch."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text

from tests.store import node_samples, sample
from twin.records import IngestBatch, JobEventRecord, NodeStatusRecord, RejectRecord
from twin.store.repository import Store, WriteResult
from twin.store.schema import EXCERPT_CHARS, RejectRow
from twin.store.status import store_status
from twin.store.urls import StoreError

T0 = 1_700_000_000.0


def telemetry_count(store: Store) -> int:
    return len(store.telemetry_frame())


def test_same_batch_twice_stores_each_row_once(store: Store) -> None:
    batch = IngestBatch(telemetry=node_samples(3, T0))
    first = store.write_batch(batch)
    second = store.write_batch(batch)
    assert (first.telemetry_inserted, first.telemetry_duplicates) == (24, 0)
    assert (second.telemetry_inserted, second.telemetry_duplicates) == (0, 24)
    assert telemetry_count(store) == 24


def test_partial_overlap_inserts_only_the_new_rows(store: Store) -> None:
    store.write_batch(IngestBatch(telemetry=node_samples(2, T0)))
    overlap = node_samples(2, T0) + node_samples(2, T0 + 1.0)
    result = store.write_batch(IngestBatch(telemetry=overlap))
    assert (result.telemetry_inserted, result.telemetry_duplicates) == (16, 16)
    assert telemetry_count(store) == 32


def test_a_duplicate_inside_one_batch_counts_as_a_duplicate(store: Store) -> None:
    row = sample("n01", 0, T0)
    result = store.write_batch(IngestBatch(telemetry=[row, row]))
    assert (result.telemetry_inserted, result.telemetry_duplicates) == (1, 1)


def test_values_round_trip(store: Store) -> None:
    row = sample("n01", 3, T0 + 0.25, power_w=612.5, mem_used_bytes=2**40, xid_last=79, uuid=None)
    store.write_batch(IngestBatch(telemetry=[row]))
    frame = store.telemetry_frame()
    assert tuple(frame.astype(object).iloc[0].where(frame.notna().iloc[0], None)) == row


def test_empty_batch_writes_nothing(store: Store) -> None:
    assert store.write_batch(IngestBatch()) == WriteResult()
    assert store.nodes() == []


def test_gpu_and_node_last_seen_keep_the_newest_sample_whatever_the_batch_order(store: Store) -> None:
    store.write_batch(IngestBatch(telemetry=[sample("n01", 0, T0 + 10, power_w=700.0)]))
    late = [sample("n01", 0, T0 + 5, power_w=100.0), sample("n01", 0, T0 + 2, power_w=200.0)]
    store.write_batch(IngestBatch(telemetry=late))
    (gpu,) = store.gpus()
    assert (gpu["first_seen_ts"], gpu["last_seen_ts"], gpu["last_power_w"]) == (T0 + 2, T0 + 10, 700.0)
    (node,) = store.nodes()
    assert (node["first_seen_ts"], node["last_seen_ts"], node["status"]) == (T0 + 2, T0 + 10, "online")


def test_last_seen_within_one_unsorted_batch(store: Store) -> None:
    rows = [sample("n01", 0, T0 + 3, power_w=3.0), sample("n01", 0, T0 + 9, power_w=9.0)]
    rows += [sample("n01", 0, T0 + 1, power_w=1.0), sample("n01", 1, T0 + 4, power_w=4.0)]
    store.write_batch(IngestBatch(telemetry=rows))
    gpus = {g["gpu_index"]: g for g in store.gpus()}
    assert (gpus[0]["first_seen_ts"], gpus[0]["last_seen_ts"], gpus[0]["last_power_w"]) == (
        T0 + 1,
        T0 + 9,
        9.0,
    )
    assert (gpus[1]["last_seen_ts"], gpus[1]["last_power_w"]) == (T0 + 4, 4.0)
    (node,) = store.nodes()
    assert (node["first_seen_ts"], node["last_seen_ts"]) == (T0 + 1, T0 + 9)


def test_latest_telemetry_is_each_gpus_newest_sample(store: Store) -> None:
    store.write_batch(IngestBatch(telemetry=node_samples(2, T0) + node_samples(1, T0 + 1)))
    latest = store.latest_telemetry()
    assert len(latest) == 16
    assert {(r["node"], r["ts"]) for r in latest} == {("n0000", T0 + 1), ("n0001", T0)}
    assert [r["gpu_index"] for r in store.latest_telemetry(node="n0001")] == list(range(8))
    assert store.latest_telemetry(cluster="other") == []


def test_newest_status_wins_whatever_the_arrival_order(store: Store) -> None:
    store.write_batch(IngestBatch(statuses=[NodeStatusRecord("c1", "n01", "offline", T0 + 20)]))
    store.write_batch(IngestBatch(statuses=[NodeStatusRecord("c1", "n01", "online", T0 + 10)]))
    (node,) = store.nodes()
    assert (node["status"], node["status_ts"], node["last_seen_ts"]) == ("offline", T0 + 20, None)
    store.write_batch(IngestBatch(statuses=[NodeStatusRecord("c1", "n01", "online", T0 + 30)]))
    assert store.nodes()[0]["status"] == "online"


def test_telemetry_does_not_override_a_reported_offline(store: Store) -> None:
    store.write_batch(IngestBatch(statuses=[NodeStatusRecord("c1", "n01", "offline", T0)]))
    store.write_batch(IngestBatch(telemetry=[sample("n01", 0, T0 + 5)]))
    assert store.nodes()[0]["status"] == "offline"


def test_mark_stale_then_newer_telemetry_revives(store: Store) -> None:
    store.write_batch(IngestBatch(telemetry=[sample("n01", 0, T0), sample("n02", 0, T0)]))
    store.write_batch(IngestBatch(statuses=[NodeStatusRecord("c1", "n02", "offline", T0 + 1)]))
    assert store.mark_stale("c1", ["n01", "n02", "n03"], T0 + 60) == 2  # n02 said offline; n03 is new
    status = {n["node"]: (n["status"], n["status_ts"]) for n in store.nodes()}
    assert status == {"n01": ("stale", T0 + 60), "n02": ("offline", T0 + 1), "n03": ("stale", T0 + 60)}
    store.write_batch(IngestBatch(telemetry=[sample("n01", 0, T0 + 30)]))  # older than the mark
    assert store.nodes()[0]["status"] == "stale"
    store.write_batch(IngestBatch(telemetry=[sample("n01", 0, T0 + 61)]))
    assert store.nodes()[0]["status"] == "online"


def test_mark_stale_skips_a_node_heard_after_the_mark(store: Store) -> None:
    store.write_batch(IngestBatch(telemetry=[sample("n01", 0, T0 + 100)]))
    assert store.mark_stale("c1", ["n01"], T0 + 50) == 0
    assert store.nodes()[0]["status"] == "online"


def test_rejects_are_stored_capped_and_deduplicated(store: Store) -> None:
    rejects = [
        RejectRecord(T0, "gpu-twin/v1/c1/n01/telemetry", "not_json", "payload is not JSON", "{oops"),
        RejectRecord(
            T0, "gpu-twin/v1/c1/n01/telemetry", "out_of_range", "power_w(=7200.0) …", "{}", "power_w"
        ),
        RejectRecord(T0 + 1, "t", "not_json", "nul \x00 inside", "\x00" + "x" * 5000),
    ]
    first = store.write_batch(IngestBatch(rejects=rejects))
    again = store.write_batch(IngestBatch(rejects=rejects))
    assert (first.rejects_inserted, first.rejects_duplicates) == (3, 0)
    assert (again.rejects_inserted, again.rejects_duplicates) == (0, 3)
    assert store_status(store, T0, 30.0).rejects_by_reason == {"not_json": 2, "out_of_range": 1}
    with store.engine.connect() as conn:
        query = select(RejectRow.payload_excerpt, RejectRow.message).where(RejectRow.received_ts == T0 + 1)
        ((excerpt, message),) = conn.execute(query).all()
    assert len(excerpt) == EXCERPT_CHARS and excerpt.startswith("\ufffd")
    assert message == "nul \ufffd inside"


def test_a_nul_in_a_uuid_is_stored_replaced(store: Store) -> None:
    store.write_batch(IngestBatch(telemetry=[sample("n01", 0, T0, uuid="GPU-\x00-1")]))
    assert store.telemetry_frame()["uuid"].tolist() == ["GPU-\ufffd-1"]
    assert store.gpus()[0]["uuid"] == "GPU-\ufffd-1"


def test_a_failing_batch_leaves_nothing_behind(store: Store) -> None:
    bad_event = JobEventRecord("c1", "j1", "start", T0, model={"bad": object()})
    batch = IngestBatch(telemetry=node_samples(2, T0), job_events=[bad_event])
    with pytest.raises(StoreError, match=r"model\.bad"):
        store.write_batch(batch)
    assert telemetry_count(store) == 0
    assert store.nodes() == [] and store.jobs() == []


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (IngestBatch(statuses=[NodeStatusRecord("c1", "n01", "sleeping", T0)]), r"status\(='sleeping'\)"),
        (IngestBatch(job_events=[JobEventRecord("c1", "j1", "pause", T0)]), r"event\(='pause'\)"),
        (IngestBatch(job_events=[JobEventRecord("c1", "j1", "start", float("nan"))]), r"ts\(=nan\)"),
    ],
)
def test_records_that_break_the_contract_are_refused_by_name(
    store: Store, batch: IngestBatch, message: str
) -> None:
    with pytest.raises(StoreError, match=message):
        store.write_batch(batch)


def test_a_50000_row_batch_writes(store: Store) -> None:
    rows = node_samples(6_250, T0)  # 6,250 nodes × 8 GPUs, every row a distinct GPU
    assert len(rows) == 50_000
    result = store.write_batch(IngestBatch(telemetry=rows))
    assert (result.telemetry_inserted, result.telemetry_duplicates) == (50_000, 0)
    assert len(store.gpus()) == 50_000 and len(store.nodes()) == 6_250


def test_two_writers_on_one_sqlite_file_do_not_lock_each_other_out(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'twin.db'}"
    stores = [Store.open(url), Store.open(url)]
    errors: list[BaseException] = []

    def write(store: Store, first_node: int) -> None:
        try:
            for step in range(20):
                store.write_batch(IngestBatch(telemetry=node_samples(50, T0 + step, first_node=first_node)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, 25 * i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert telemetry_count(stores[0]) == 75 * 8 * 20  # nodes 0–74 (25 shared), 8 GPUs, 20 steps
    for s in stores:
        s.close()


def test_node_and_gpu_rows_removed_behind_the_stores_back_are_recreated(store: Store) -> None:
    store.write_batch(IngestBatch(telemetry=node_samples(2, T0)))
    with store.engine.begin() as conn:  # e.g. the database was restored from an older backup
        conn.execute(text("DELETE FROM gpus WHERE node = 'n0001'"))
        conn.execute(text("DELETE FROM nodes WHERE node = 'n0001'"))
    store.write_batch(IngestBatch(telemetry=node_samples(2, T0 + 1)))
    assert len(store.gpus()) == 16
    assert [(n["node"], n["first_seen_ts"], n["last_seen_ts"]) for n in store.nodes()] == [
        ("n0000", T0, T0 + 1),
        ("n0001", T0 + 1, T0 + 1),
    ]
