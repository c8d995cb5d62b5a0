"""SQLAlchemy 2 typed tables of the store (rows are `*Row`). Portable between SQLite and PostgreSQL.

Conventions: every timestamp is a float of unix seconds (double precision), units are in the column names
(SI, like the MQTT contract), JSON documents use the portable `JSON` type (PostgreSQL `json`, not `jsonb`:
`jsonb` refuses the `\\u0000` escape that a hostile job payload may carry). Raw telemetry is keyed by
(ts, cluster, node, gpu_index), so a QoS 1 redelivery of the same sample is ignored, not duplicated.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Double,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Column sizes. Topic segments (cluster, node, job id) are ≤ 64 characters by the contract.
SEGMENT_CHARS: Final = 64
TOPIC_CHARS: Final = 512
REASON_CHARS: Final = 64
FIELD_CHARS: Final = 128
MESSAGE_CHARS: Final = 2_000
# The decoder truncates a rejected payload to 1,024 bytes; as text that is at most 1,024 characters.
EXCERPT_CHARS: Final = 1_024
JOB_REASON_CHARS: Final = 512
SOURCE_CHARS: Final = 32
# Nodes and GPUs are rewritten on every batch: on PostgreSQL, half-empty pages let those updates be HOT
# (heap-only: no index churn), measured ~2x faster for 16,000 GPU upserts per batch.
HOT_FILLFACTOR: Final = 50
# A job event without a step is stored with this step key, so NULL steps still deduplicate.
NO_STEP: Final = -1

NODE_STATUSES: Final = ("online", "offline", "stale", "unknown")
JOB_STATES: Final = ("running", "checkpointing", "ended", "failed")

# An auto-increment id: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
_Id = BigInteger().with_variant(Integer(), "sqlite")
# Names (cluster, node, job id) compare bytewise: PostgreSQL's "C" collation (SQLite's BINARY default)
# gives both backends the same order and makes the telemetry key's B-tree comparisons memcmp-cheap.
_Name = String(SEGMENT_CHARS).with_variant(String(SEGMENT_CHARS, collation="C"), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of every store table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        float: Double(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class NodeRow(Base):
    """A node: when it was first and last heard from, and its status.

    `status` is `online`/`offline` (from the node's retained status topic, or `online` when its telemetry
    is newer than the last status), `stale` (marked by the service when it went silent) or `unknown`
    (never reported). `last_seen_ts` is the newest telemetry sample (NULL until the first one);
    `status_ts` is when the status was received or marked stale (the twin's clock), NULL while the status
    is only inferred from telemetry.
    """

    __tablename__ = "nodes"

    cluster: Mapped[str] = mapped_column(_Name, primary_key=True)
    node: Mapped[str] = mapped_column(_Name, primary_key=True)
    first_seen_ts: Mapped[float]
    last_seen_ts: Mapped[float | None]
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    status_ts: Mapped[float | None]

    __table_args__ = (
        CheckConstraint(f"status IN {NODE_STATUSES!r}", name="ck_nodes_status"),
        {"sqlite_with_rowid": False, "postgresql_with": {"fillfactor": HOT_FILLFACTOR}},
    )


class GpuRow(Base):
    """A GPU of a node, with the values of its newest telemetry sample (`last_seen_ts`)."""

    __tablename__ = "gpus"

    cluster: Mapped[str] = mapped_column(_Name, primary_key=True)
    node: Mapped[str] = mapped_column(_Name, primary_key=True)
    gpu_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str | None] = mapped_column(Text)
    first_seen_ts: Mapped[float]
    last_seen_ts: Mapped[float]
    last_power_w: Mapped[float]
    last_energy_j: Mapped[float | None]
    last_gpu_util_pct: Mapped[float | None]
    last_temp_c: Mapped[float | None]
    last_mem_used_bytes: Mapped[int | None] = mapped_column(BigInteger)
    mem_total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    last_ecc_dbe_total: Mapped[int | None] = mapped_column(BigInteger)
    last_xid: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = ({"sqlite_with_rowid": False, "postgresql_with": {"fillfactor": HOT_FILLFACTOR}},)


# GpuRow column ← telemetry field, for the "last values" of a GPU.
GPU_LAST_FIELDS: Final = {
    "last_power_w": "power_w",
    "last_energy_j": "energy_j",
    "last_gpu_util_pct": "gpu_util_pct",
    "last_temp_c": "temp_c",
    "last_mem_used_bytes": "mem_used_bytes",
    "mem_total_bytes": "mem_total_bytes",
    "last_ecc_dbe_total": "ecc_dbe_total",
    "last_xid": "xid_last",
}


class TelemetryRow(Base):
    """One GPU sample: (cluster, node, gpu_index, ts) plus every contract value field, in contract order.

    The columns mirror `twin.records.TELEMETRY_COLUMNS` one to one (a test checks it). Units: W, J, %, B,
    °C, MHz, counts; `throttle_reasons` is NVML's bitmask. NULL means the device does not report the field.

    The primary key leads with `ts`: samples arrive in time order, so every insert lands at the right edge
    of one B-tree (measured: ~3x the sustained insert rate of a (cluster, node, gpu_index, ts) key once the
    index outgrows the page cache), and the same index serves time ranges and compaction. On SQLite the
    table is WITHOUT ROWID (clustered on that key: one B-tree instead of two, ~25% smaller).
    """

    __tablename__ = "telemetry"

    cluster: Mapped[str] = mapped_column(_Name)
    node: Mapped[str] = mapped_column(_Name)
    gpu_index: Mapped[int] = mapped_column(Integer)
    ts: Mapped[float]
    uuid: Mapped[str | None] = mapped_column(Text)
    power_w: Mapped[float]
    energy_j: Mapped[float | None]
    gpu_util_pct: Mapped[float | None]
    mem_util_pct: Mapped[float | None]
    mem_used_bytes: Mapped[int | None] = mapped_column(BigInteger)
    mem_total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    temp_c: Mapped[float | None]
    sm_clock_mhz: Mapped[float | None]
    ecc_sbe_total: Mapped[int | None] = mapped_column(BigInteger)
    ecc_dbe_total: Mapped[int | None] = mapped_column(BigInteger)
    xid_last: Mapped[int | None] = mapped_column(BigInteger)
    throttle_reasons: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        PrimaryKeyConstraint("ts", "cluster", "node", "gpu_index", name="pk_telemetry"),
        {"sqlite_with_rowid": False},
    )


class TelemetryRollupRow(Base):
    """One GPU over one minute [minute_ts, minute_ts + 60 s) of compacted raw telemetry.

    Means are over the samples that reported the field; `energy_first_j`/`energy_last_j` are the energy
    counter at the earliest/latest sample that reported it (their difference is the minute's energy, J);
    `xid_last` is the newest reported XID; `throttled_samples` counts samples with any throttle reason set
    (portable SQL has no bitwise-OR aggregate to keep the reasons themselves).
    """

    __tablename__ = "telemetry_rollups"

    cluster: Mapped[str] = mapped_column(_Name, primary_key=True)
    node: Mapped[str] = mapped_column(_Name, primary_key=True)
    gpu_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    minute_ts: Mapped[float] = mapped_column(primary_key=True)
    samples: Mapped[int] = mapped_column(Integer)
    first_ts: Mapped[float]
    last_ts: Mapped[float]
    power_mean_w: Mapped[float]
    power_min_w: Mapped[float]
    power_max_w: Mapped[float]
    energy_first_j: Mapped[float | None]
    energy_last_j: Mapped[float | None]
    temp_mean_c: Mapped[float | None]
    temp_max_c: Mapped[float | None]
    gpu_util_mean_pct: Mapped[float | None]
    mem_util_mean_pct: Mapped[float | None]
    mem_used_max_bytes: Mapped[int | None] = mapped_column(BigInteger)
    mem_total_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sm_clock_mean_mhz: Mapped[float | None]
    ecc_sbe_max: Mapped[int | None] = mapped_column(BigInteger)
    ecc_dbe_max: Mapped[int | None] = mapped_column(BigInteger)
    xid_last: Mapped[int | None] = mapped_column(BigInteger)
    throttled_samples: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_telemetry_rollups_minute_ts", "minute_ts"),)


class JobRow(Base):
    """A training job's current state, folded from its events (newest event by ts wins each field).

    `state`: running | checkpointing | ended | failed, set by the newest event (`state_ts`; at equal ts
    `state_rank` orders start < step < checkpoint < end < fail). `reason` and `ended_ts` belong to a
    terminal state. `last_step*` come from the newest event carrying a step, `tokens` (cumulative, as
    reported) from the newest carrying tokens, `model`/`layout`/`nodes` together from the newest event
    carrying any of them (`spec_ts`). `started_ts` is the earliest start event, `updated_ts` the newest
    event of any kind.
    """

    __tablename__ = "jobs"

    cluster: Mapped[str] = mapped_column(_Name, primary_key=True)
    job_id: Mapped[str] = mapped_column(_Name, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    state_ts: Mapped[float]
    state_rank: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(JOB_REASON_CHARS))
    started_ts: Mapped[float | None]
    ended_ts: Mapped[float | None]
    model: Mapped[dict[str, Any] | None]
    layout: Mapped[dict[str, Any] | None]
    nodes: Mapped[list[Any] | None]
    spec_ts: Mapped[float | None]
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    last_step_time_s: Mapped[float | None]
    last_step_ts: Mapped[float | None]
    tokens: Mapped[float | None]
    tokens_ts: Mapped[float | None]
    last_checkpoint_ts: Mapped[float | None]
    updated_ts: Mapped[float]

    __table_args__ = (
        CheckConstraint(f"state IN {JOB_STATES!r}", name="ck_jobs_state"),
        Index("ix_jobs_state", "state"),
    )


class JobEventRow(Base):
    """One job event as received. Unique on (cluster, job_id, event, ts, step_key): a redelivery is
    ignored; `step_key` is `step`, or NO_STEP (-1) when the event has none (NULLs never collide in SQL)."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    cluster: Mapped[str] = mapped_column(_Name)
    job_id: Mapped[str] = mapped_column(_Name)
    event: Mapped[str] = mapped_column(String(16))
    ts: Mapped[float]
    step_key: Mapped[int] = mapped_column(BigInteger)
    step: Mapped[int | None] = mapped_column(BigInteger)
    step_time_s: Mapped[float | None]
    tokens: Mapped[float | None]
    reason: Mapped[str | None] = mapped_column(String(JOB_REASON_CHARS))
    model: Mapped[dict[str, Any] | None]
    layout: Mapped[dict[str, Any] | None]
    nodes: Mapped[list[Any] | None]

    __table_args__ = (
        UniqueConstraint("cluster", "job_id", "event", "ts", "step_key", name="uq_job_events_identity"),
        Index("ix_job_events_job_ts", "job_id", "ts"),
    )


class RejectRow(Base):
    """A rejected payload: why (`reason`, a short stable code), which field, a message and an excerpt.

    `dedupe_key` (SHA-1 of the record) makes a retried batch whose commit did succeed insert nothing twice.
    """

    __tablename__ = "rejects"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    received_ts: Mapped[float]
    topic: Mapped[str] = mapped_column(String(TOPIC_CHARS))
    reason: Mapped[str] = mapped_column(String(REASON_CHARS))
    field: Mapped[str | None] = mapped_column(String(FIELD_CHARS))
    message: Mapped[str] = mapped_column(String(MESSAGE_CHARS))
    payload_excerpt: Mapped[str] = mapped_column(String(EXCERPT_CHARS))
    dedupe_key: Mapped[str] = mapped_column(String(40), unique=True)

    __table_args__ = (
        Index("ix_rejects_reason", "reason"),
        Index("ix_rejects_received_ts", "received_ts"),
    )


class ScenarioRunRow(Base):
    """A what-if evaluated for someone: the scenario (DESIGN §3), its result, and who asked (`source`)."""

    __tablename__ = "scenario_runs"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    created_ts: Mapped[float]
    source: Mapped[str] = mapped_column(String(SOURCE_CHARS))
    scenario: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any]]

    __table_args__ = (Index("ix_scenario_runs_created_ts", "created_ts"),)


# What a node did with a command (sensors.commands.OutcomeKind), plus `pending` before it reports.
COMMAND_OUTCOMES: Final = ("pending", "applied", "dry_run", "rejected", "not_permitted", "failed")
COMMAND_ID_CHARS: Final = 32  # sensors.commands.NONCE_HEX_CHARS
ACTION_CHARS: Final = 32
COMMAND_ADVICE_CHARS: Final = 256  # sensors.commands.MAX_REASON_CHARS
COMMAND_DETAIL_CHARS: Final = 512  # sensors.commands.MAX_DETAIL_CHARS


class CommandRow(Base):
    """A command the twin issued (`outcome` pending until the node reports) or an outcome a node reported.

    `command_id` is the command's nonce; `params` its parameters (JSON); `advice` the twin's reason for it;
    `issued_ts`/`expires_ts` its validity. The node's report sets `outcome`, `outcome_ts` (the node's
    clock), `reason` (a reject code or why not permitted) and `detail`. A report that matches no pending
    command — a replay of an old command, a forgery, an unreadable payload (`command_id` NULL) — gets a
    row of its own, so every command and every outcome is recorded.
    """

    __tablename__ = "commands"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    cluster: Mapped[str] = mapped_column(_Name)
    node: Mapped[str] = mapped_column(_Name)
    command_id: Mapped[str | None] = mapped_column(String(COMMAND_ID_CHARS))
    action: Mapped[str | None] = mapped_column(String(ACTION_CHARS))
    params: Mapped[dict[str, Any] | None]
    advice: Mapped[str | None] = mapped_column(String(COMMAND_ADVICE_CHARS))
    issued_ts: Mapped[float | None]
    expires_ts: Mapped[float | None]
    outcome: Mapped[str] = mapped_column(String(16))
    outcome_ts: Mapped[float | None]
    reason: Mapped[str | None] = mapped_column(String(REASON_CHARS))
    detail: Mapped[str | None] = mapped_column(String(COMMAND_DETAIL_CHARS))

    __table_args__ = (
        CheckConstraint(f"outcome IN {COMMAND_OUTCOMES!r}", name="ck_commands_outcome"),
        Index("ix_commands_target", "cluster", "node", "command_id"),
        Index("ix_commands_issued_ts", "issued_ts"),
    )


FORECAST_KINDS: Final = ("power", "duration", "failure")
# What a forecast is about: a cluster, a node, one GPU (`node/index`) or a job.
FORECAST_SCOPES: Final = ("cluster", "node", "gpu", "job")
FORECAST_TARGET_CHARS: Final = 2 * SEGMENT_CHARS + 8  # "node/index" of a GPU, with room
FORECAST_UNIT_CHARS: Final = 16
MODEL_VERSION_CHARS: Final = 64
TRACE_DATASET_CHARS: Final = 32
TRACE_KEY_CHARS: Final = 128
# A forecast's identity: writing one with the same values replaces it.
FORECAST_IDENTITY: Final = ("kind", "cluster", "scope", "target", "made_at_ts", "horizon_s", "model_version")


class ForecastRow(Base):
    """A predictor's forecast (`models`; written by `twin.store.forecasts`): what it is about (`kind`,
    `cluster`, `scope`, `target`), when it was made (`made_at_ts`) for how far ahead (`horizon_s`), its
    quantiles `p10`/`p50`/`p90` in `unit` (W for power, s for duration, probability for failure, where
    p50 is the probability and p10/p90 are NULL), and the `model_version` that made it (the registry's).

    Unique on (kind, cluster, scope, target, made_at_ts, horizon_s, model_version): writing the same
    forecast again replaces it.
    """

    __tablename__ = "forecasts"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    cluster: Mapped[str] = mapped_column(_Name)
    scope: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(FORECAST_TARGET_CHARS))
    made_at_ts: Mapped[float]
    horizon_s: Mapped[float]
    p10: Mapped[float | None]
    p50: Mapped[float]
    p90: Mapped[float | None]
    unit: Mapped[str] = mapped_column(String(FORECAST_UNIT_CHARS))
    model_version: Mapped[str] = mapped_column(String(MODEL_VERSION_CHARS))

    __table_args__ = (
        CheckConstraint(f"kind IN {FORECAST_KINDS!r}", name="ck_forecasts_kind"),
        CheckConstraint(f"scope IN {FORECAST_SCOPES!r}", name="ck_forecasts_scope"),
        UniqueConstraint(*FORECAST_IDENTITY, name="uq_forecasts_identity"),
        Index("ix_forecasts_kind_made_at", "kind", "made_at_ts"),
    )


class TraceRecordRow(Base):
    """One record of an imported public trace (`twin traces import`): its `dataset` (alibaba-2023,
    titan, philly), its key in that dataset (pod name, GPU serial, row number) and its columns as JSON.
    Importing the same file again replaces the records."""

    __tablename__ = "trace_records"

    dataset: Mapped[str] = mapped_column(String(TRACE_DATASET_CHARS), primary_key=True)
    record_key: Mapped[str] = mapped_column(String(TRACE_KEY_CHARS), primary_key=True)
    imported_ts: Mapped[float]
    data: Mapped[dict[str, Any]]
