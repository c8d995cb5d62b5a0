"""Write a batch the store refuses for its content without losing the good records in it.

The ingest service retries a failed write while the database is unreachable (nothing is acknowledged,
the broker keeps the messages). A write can also fail because of one record (a value the database type
cannot hold, a constraint): retrying that forever would stall ingestion. `write_isolating` splits such a
batch in halves until the refused records are alone, writes every other record, and stores each refused
record as a reject with reason `store_refused` and the store's message. Writes are idempotent, so halves
already committed cost nothing when the batch is written again after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

import sqlalchemy.exc

from sensors.contract import DEFAULT_TOPIC_ROOT, Topics
from twin.decode import RejectReason, excerpt
from twin.records import COL, IngestBatch, JobEventRecord, NodeStatusRecord, RejectRecord, TelemetryTuple
from twin.store.repository import Store, WriteResult
from twin.store.urls import StoreUnavailable

log = logging.getLogger(__name__)

# Errors that say the database is unreachable or busy, not that a record is bad: retry the same batch.
TRANSIENT_ERRORS: Final = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
    StoreUnavailable,
    OSError,
)
# Longest store message kept in a reject (the rest is driver noise such as the SQL text).
REFUSAL_MESSAGE_CHARS: Final = 300


def is_transient(exc: BaseException) -> bool:
    """True when `exc` means "try again later" rather than "this data cannot be stored"."""
    return isinstance(exc, TRANSIENT_ERRORS)


@dataclass(frozen=True, slots=True)
class _Item:
    kind: str  # telemetry | status | event | reject
    record: Any


def _items(batch: IngestBatch) -> list[_Item]:
    return [
        *(_Item("telemetry", r) for r in batch.telemetry),
        *(_Item("status", r) for r in batch.statuses),
        *(_Item("event", r) for r in batch.job_events),
        *(_Item("reject", r) for r in batch.rejects),
    ]


def _batch(items: Sequence[_Item]) -> IngestBatch:
    batch = IngestBatch()
    for item in items:
        if item.kind == "telemetry":
            batch.telemetry.append(item.record)
        elif item.kind == "status":
            batch.statuses.append(item.record)
        elif item.kind == "event":
            batch.job_events.append(item.record)
        else:
            batch.rejects.append(item.record)
    return batch


def _add(total: WriteResult, part: WriteResult) -> WriteResult:
    return WriteResult(**{f.name: getattr(total, f.name) + getattr(part, f.name) for f in fields(total)})


def _topic_of(item: _Item, topic_root: str) -> str:
    record = item.record
    if item.kind == "telemetry":
        row: TelemetryTuple = record
        return Topics(str(row[COL["cluster"]]), topic_root).telemetry(str(row[COL["node"]]))
    if isinstance(record, NodeStatusRecord):
        return Topics(record.cluster, topic_root).status(record.node)
    if isinstance(record, JobEventRecord):
        return Topics(record.cluster, topic_root).job_events(record.job_id)
    assert isinstance(record, RejectRecord)
    return record.topic


def _refusal(item: _Item, exc: BaseException, received_ts: float, topic_root: str) -> RejectRecord:
    message = f"the store refused this {item.kind} record: {type(exc).__name__}: {exc}"
    return RejectRecord(
        received_ts,
        _topic_of(item, topic_root),
        str(RejectReason.STORE_REFUSED),
        message[:REFUSAL_MESSAGE_CHARS],
        excerpt(repr(item.record).encode("utf-8", errors="replace")),
    )


@dataclass(slots=True)
class IsolationResult:
    written: WriteResult
    refused: list[RejectRecord]  # one per record the store refused (stored as rejects when it could)
    lost: int  # refused records whose reject could not be stored either (logged)


def write_isolating(
    store: Store,
    batch: IngestBatch,
    received_ts: float,
    *,
    topic_root: str = DEFAULT_TOPIC_ROOT,
    write: Callable[[IngestBatch], WriteResult] | None = None,
) -> IsolationResult:
    """Write `batch`, splitting it around the records the store refuses; raise only transient errors.

    A transient error (`is_transient`) propagates at once so that the caller retries the whole batch
    later (idempotent). Every other error is blamed on the records: the half that fails is split again,
    down to single records, each of which becomes a `store_refused` reject.
    """
    do_write = write or store.write_batch
    written = WriteResult()
    refused: list[RejectRecord] = []
    stack: list[list[_Item]] = [_items(batch)]
    while stack:
        items = stack.pop()
        if not items:
            continue
        try:
            written = _add(written, do_write(_batch(items)))
            continue
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(items) > 1:
                middle = len(items) // 2
                stack.append(items[middle:])
                stack.append(items[:middle])
                continue
            refused.append(_refusal(items[0], exc, received_ts, topic_root))
            log.warning("store refused a %s record: %s", items[0].kind, exc)
    lost = 0
    for reject in refused:
        try:
            written = _add(written, do_write(IngestBatch(rejects=[reject])))
        except Exception as exc:
            if is_transient(exc):
                raise
            lost += 1
            log.error("could not store the reject for a refused record either (%s): %s", exc, reject.message)
    return IsolationResult(written, refused, lost)
