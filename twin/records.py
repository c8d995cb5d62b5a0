"""Decoded, validated ingest records: what the decoder hands the live state and the store.

Telemetry is the hot path (≥100k GPU-samples/s), so a GPU sample is a plain tuple in `TELEMETRY_COLUMNS`
order rather than an object; everything rarer is a frozen dataclass. Units are SI and in the names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from sensors.contract import GPU_FIELD_NAMES

# One telemetry row: (cluster, node, gpu_index, ts, <every contract GPU field but index, in contract order>).
TELEMETRY_VALUE_FIELDS: Final = tuple(name for name in GPU_FIELD_NAMES if name != "index")
TELEMETRY_COLUMNS: Final = ("cluster", "node", "gpu_index", "ts", *TELEMETRY_VALUE_FIELDS)
TelemetryTuple = tuple[Any, ...]
COL = {name: i for i, name in enumerate(TELEMETRY_COLUMNS)}


@dataclass(frozen=True, slots=True)
class NodeStatusRecord:
    """A node's retained `online` / `offline` status, as received at `received_ts` (unix s)."""

    cluster: str
    node: str
    status: str
    received_ts: float


@dataclass(frozen=True, slots=True)
class JobEventRecord:
    """One job event. `(cluster, job_id, event, ts, step)` identifies it (a redelivery is the same event)."""

    cluster: str
    job_id: str
    event: str
    ts: float
    step: int | None = None
    step_time_s: float | None = None
    tokens: float | None = None
    model: dict[str, Any] | None = None
    layout: dict[str, Any] | None = None
    nodes: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RejectRecord:
    """A payload that failed validation: why (`reason` is a short stable code), the field and a message."""

    received_ts: float
    topic: str
    reason: str
    message: str
    payload_excerpt: str  # truncated to REJECT_EXCERPT_BYTES by the decoder
    field: str | None = None


@dataclass(slots=True)
class IngestBatch:
    """Everything decoded since the last commit; the store writes it in one transaction."""

    telemetry: list[TelemetryTuple] = field(default_factory=list)
    statuses: list[NodeStatusRecord] = field(default_factory=list)
    job_events: list[JobEventRecord] = field(default_factory=list)
    rejects: list[RejectRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.telemetry) + len(self.statuses) + len(self.job_events) + len(self.rejects)

    def clear(self) -> None:
        self.telemetry.clear()
        self.statuses.clear()
        self.job_events.clear()
        self.rejects.clear()
