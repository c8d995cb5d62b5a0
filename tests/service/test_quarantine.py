"""A record the store refuses is isolated and stored as a reject; the rest of its batch is stored."""

from __future__ import annotations

import pytest
import sqlalchemy.exc

from sensors.mqtt_url import parse_broker_url
from tests.store import sample
from twin.decode import RejectReason
from twin.quarantine import is_transient, write_isolating
from twin.records import IngestBatch, JobEventRecord
from twin.service import IngestService, ServiceSettings, _WriteJob
from twin.store.repository import Store, WriteResult
from twin.store.status import store_status
from twin.store.urls import StoreError, StoreUnavailable

T0 = 1_700_000_000.0
TOO_BIG_FOR_INT64 = 2**70  # what a broken exporter might send if the contract bound were missing


def good_rows(n_ts: int) -> list[tuple[object, ...]]:
    return [sample(node, gpu, T0 + t) for t in range(n_ts) for node in ("n01", "n02") for gpu in range(4)]


def test_one_unstorable_row_does_not_stop_the_other_rows_of_its_batch(store: Store) -> None:
    rows = good_rows(50)  # 400 good rows
    bad = sample("n03", 0, T0, ecc_sbe_total=TOO_BIG_FOR_INT64)
    batch = IngestBatch(telemetry=[*rows[:200], bad, *rows[200:]])
    with pytest.raises(Exception) as whole:
        store.write_batch(batch)
    assert not is_transient(whole.value)

    result = write_isolating(store, batch, T0 + 100)

    assert result.written.telemetry_inserted == 400
    assert len(result.refused) == 1 and result.lost == 0
    refused = result.refused[0]
    assert refused.reason == RejectReason.STORE_REFUSED
    assert refused.topic == "gpu-twin/v1/c1/n03/telemetry"
    assert "refused this telemetry record" in refused.message
    status = store_status(store, T0 + 100, 60.0)
    assert status.counts["telemetry"] == 400
    assert status.rejects_by_reason == {"store_refused": 1}


def test_a_refused_job_event_becomes_a_reject_and_telemetry_is_kept(store: Store) -> None:
    event = JobEventRecord("c1", "job-1", "exploded", T0)  # not an event the store knows
    batch = IngestBatch(telemetry=good_rows(2), job_events=[event])
    result = write_isolating(store, batch, T0)
    assert result.written.telemetry_inserted == 16
    assert [r.topic for r in result.refused] == ["gpu-twin/v1/c1/jobs/job-1/events"]
    assert "event(='exploded')" in result.refused[0].message


def test_transient_errors_propagate_so_the_whole_batch_is_retried() -> None:
    calls: list[int] = []

    def unreachable(batch: IngestBatch) -> WriteResult:
        calls.append(len(batch))
        raise StoreUnavailable("database connection(=None) was invalidated; retry the batch.")

    with pytest.raises(StoreUnavailable):
        write_isolating(None, IngestBatch(telemetry=good_rows(2)), T0, write=unreachable)  # type: ignore[arg-type]
    assert calls == [16]  # not split: the data is not to blame
    assert is_transient(sqlalchemy.exc.OperationalError("x", {}, Exception("down")))
    assert not is_transient(StoreError("bad value"))


def test_isolation_costs_about_two_writes_per_split_level() -> None:
    writes: list[int] = []

    def refuse_marked(batch: IngestBatch) -> WriteResult:
        writes.append(len(batch))
        if any(row[1] == "bad" for row in batch.telemetry):
            raise StoreError("refused")
        return WriteResult(telemetry_inserted=len(batch.telemetry))

    rows = good_rows(128)  # 1,024 rows
    rows[517] = sample("bad", 0, T0)
    result = write_isolating(None, IngestBatch(telemetry=rows), T0, write=refuse_marked)  # type: ignore[arg-type]
    assert result.written.telemetry_inserted == 1_023
    assert len(result.refused) == 1
    assert len(writes) <= 2 * 11 + 2  # log2(1,024) = 10 levels, plus the reject's own write


def test_the_service_writer_isolates_instead_of_retrying_forever(store: Store) -> None:
    settings = ServiceSettings(parse_broker_url("mqtt://127.0.0.1:1"))  # never connects in this test
    service = IngestService(settings, store)
    bad = sample("n03", 0, T0, ecc_sbe_total=TOO_BIG_FOR_INT64)
    job = _WriteJob(IngestBatch(telemetry=[*good_rows(3), bad]), acks=[], sample_ts=[], stale=[])
    result = service._commit(job)
    assert result.telemetry_inserted == 24
    assert service.stats.store_refused == 1
    assert service.stats.rejects["store_refused"] == 1
