"""The store: the one repository the twin persists through (SQLite with WAL by default, PostgreSQL via URL).

`Store.write_batch` writes one `IngestBatch` in one transaction and is idempotent, so the ingest service can
retry a batch whose commit failed (or whose commit succeeded but the acknowledgement was lost) without
duplicating anything: telemetry is keyed by (ts, cluster, node, gpu_index), job events by their identity,
rejects by a hash of the record; node, GPU and job rows are folded with "newest timestamp wins" rules that
give the same result whatever order (and however often) the records arrive.

Telemetry is the hot path (≥100,000 GPU samples/s on two cores): rows go to the driver as the decoder's
tuples, without ORM objects — `executemany` with `ON CONFLICT DO NOTHING` on SQLite; on PostgreSQL binary
`COPY` into a temporary table, then one `INSERT … SELECT` (retried with `ON CONFLICT DO NOTHING` when the
batch holds stored rows). Node and GPU "last seen" rows are written once per distinct node/GPU in the
batch: a plain UPDATE for rows this store has committed before, an upsert otherwise.

The store never reads the clock: callers pass every timestamp (unix seconds). Errors: `StoreError` (a
`TwinError`) for a bad URL or an argument or record that breaks the records contract — not retryable;
database failures propagate as SQLAlchemy's `DBAPIError` subclasses — retry the same batch later.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, cast

from sqlalchemy import (
    BigInteger,
    Connection,
    Double,
    Engine,
    Integer,
    String,
    Table,
    Text,
    and_,
    case,
    create_engine,
    event,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url

from twin.records import TELEMETRY_COLUMNS, IngestBatch, JobEventRecord, TelemetryTuple
from twin.store.schema import (
    EXCERPT_CHARS,
    FIELD_CHARS,
    GPU_LAST_FIELDS,
    JOB_REASON_CHARS,
    MESSAGE_CHARS,
    NO_STEP,
    REASON_CHARS,
    SOURCE_CHARS,
    TOPIC_CHARS,
    Base,
    GpuRow,
    JobEventRow,
    JobRow,
    NodeRow,
    RejectRow,
    ScenarioRunRow,
    TelemetryRollupRow,
    TelemetryRow,
)
from twin.store.urls import DEFAULT_DB_URL, StoreError, StoreUnavailable, normalize_url, redact_url

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_DB_URL",
    "EVENT_STATES",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "WriteResult",
    "normalize_url",
    "redact_url",
]

# SQLite waits this long for another writer's lock before failing with "database is locked" (ms).
SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
# PostgreSQL schema names we accept for `Store.open(schema=...)` (an unquoted identifier).
_SCHEMA_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Job event → (state it puts the job in, rank breaking a tie between events with the same ts).
EVENT_STATES: Final[Mapping[str, tuple[str, int]]] = {
    "start": ("running", 0),
    "step": ("running", 1),
    "checkpoint": ("checkpointing", 2),
    "end": ("ended", 3),
    "fail": ("failed", 4),
}
TERMINAL_STATES: Final = frozenset({"ended", "failed"})
NODE_STATUS_INPUTS: Final = frozenset({"online", "offline"})
# Node statuses that telemetry newer than the status overrides with `online` (inferred, not reported).
_REVIVABLE: Final = ("unknown", "stale")

# The tables, typed as Core `Table`s (the declarative `__table__` is typed as a plain FromClause).
_NODES: Final = cast(Table, NodeRow.__table__)
_GPUS: Final = cast(Table, GpuRow.__table__)
_TELEMETRY: Final = cast(Table, TelemetryRow.__table__)
_JOBS: Final = cast(Table, JobRow.__table__)
_EVENTS: Final = cast(Table, JobEventRow.__table__)
_REJECTS: Final = cast(Table, RejectRow.__table__)
_RUNS: Final = cast(Table, ScenarioRunRow.__table__)
_ROLLUPS: Final = cast(Table, TelemetryRollupRow.__table__)
_TELEMETRY_COLS: Final = ", ".join(TELEMETRY_COLUMNS)
_PG_TEMP_TABLE: Final = "twin_telemetry_in"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one `write_batch` did. Duplicates are records already stored (a redelivery or a retry)."""

    telemetry_inserted: int = 0
    telemetry_duplicates: int = 0
    statuses: int = 0
    events_inserted: int = 0
    events_duplicates: int = 0
    rejects_inserted: int = 0
    rejects_duplicates: int = 0


def _plain_json(value: Any, where: str) -> Any:
    """`value` as plain JSON data: non-finite floats → None, tuples → lists, NumPy values → Python.

    Raises `StoreError` naming `where` for anything JSON cannot hold.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    tolist = getattr(value, "tolist", None)  # NumPy scalars and arrays
    if callable(tolist):
        return _plain_json(tolist(), where)
    raise StoreError(f"{where}(={value!r:.80}) is a {type(value).__name__}, which JSON cannot hold.")


def _json_dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _clean_text(value: str | None, limit: int) -> str | None:
    """Text that fits its column on both backends: NUL (PostgreSQL refuses it) → U+FFFD, cut to `limit`."""
    if value is None:
        return None
    return value.replace("\x00", "\ufffd")[:limit]


def _finite(name: str, value: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise StoreError(f"{name}(={value!r}) must be a finite number of unix seconds.")
    return float(value)


def _pg_copy_type(column_type: object) -> str:
    """The PostgreSQL type name psycopg's binary COPY needs for a telemetry column."""
    if isinstance(column_type, BigInteger):
        return "int8"
    if isinstance(column_type, Integer):
        return "int4"
    if isinstance(column_type, Double):
        return "float8"
    if isinstance(column_type, String | Text):
        return "text"
    raise StoreError(f"telemetry column type(={column_type!r}) has no COPY mapping.")


@dataclass(slots=True)
class _Job:
    """A job's row while its events are folded in (mirrors `JobRow`)."""

    cluster: str
    job_id: str
    state: str
    state_ts: float
    state_rank: int
    reason: str | None
    started_ts: float | None
    ended_ts: float | None
    model: dict[str, Any] | None
    layout: dict[str, Any] | None
    nodes: list[Any] | None
    spec_ts: float | None
    last_step: int | None
    last_step_time_s: float | None
    last_step_ts: float | None
    tokens: float | None
    tokens_ts: float | None
    last_checkpoint_ts: float | None
    updated_ts: float

    def apply(self, e: JobEventRecord) -> None:
        """Fold one event in. Each field keeps the value of its newest event, so arrival order does not
        matter (except between two events with the same ts that carry different values)."""
        state, rank = EVENT_STATES[e.event]
        if (e.ts, rank) >= (self.state_ts, self.state_rank):
            self.state, self.state_ts, self.state_rank = state, e.ts, rank
            terminal = state in TERMINAL_STATES
            self.ended_ts = e.ts if terminal else None
            self.reason = _clean_text(e.reason, JOB_REASON_CHARS) if terminal else None
        if e.event == "start" and (self.started_ts is None or e.ts < self.started_ts):
            self.started_ts = e.ts
        if e.event == "checkpoint" and (self.last_checkpoint_ts is None or e.ts > self.last_checkpoint_ts):
            self.last_checkpoint_ts = e.ts
        if (e.model is not None or e.layout is not None or e.nodes) and (
            self.spec_ts is None or e.ts > self.spec_ts
        ):
            self.spec_ts = e.ts
            self.model = _plain_json(e.model, "model")
            self.layout = _plain_json(e.layout, "layout")
            self.nodes = list(e.nodes) or None
        if e.step is not None and (
            self.last_step_ts is None or (e.ts, e.step) > (self.last_step_ts, self.last_step or 0)
        ):
            self.last_step, self.last_step_ts = e.step, e.ts
            self.last_step_time_s = e.step_time_s
        if e.tokens is not None and (
            self.tokens_ts is None or (e.ts, e.tokens) > (self.tokens_ts, self.tokens or 0.0)
        ):
            self.tokens, self.tokens_ts = e.tokens, e.ts
        self.updated_ts = max(self.updated_ts, e.ts)


_JOB_FIELDS: Final = tuple(_Job.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class _Seen:
    """Node and GPU keys: (cluster, node) and (cluster, node, gpu_index)."""

    gpus: set[tuple[Any, ...]]
    nodes: set[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class _Covered:
    gpus: bool
    nodes: bool


class _Known:
    """Node and GPU rows this store has committed (they are never deleted): a hint that a plain UPDATE
    will do. Only a hint: writers check the UPDATE's row count and fall back to the upsert."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gpus: set[tuple[Any, ...]] = set()
        self._nodes: set[tuple[Any, ...]] = set()

    def covers(self, seen: _Seen) -> _Covered:
        with self._lock:
            return _Covered(self._gpus.issuperset(seen.gpus), self._nodes.issuperset(seen.nodes))

    def add(self, seen: _Seen) -> None:
        with self._lock:
            self._gpus |= seen.gpus
            self._nodes |= seen.nodes


class Store:
    """The repository: batch writes from the ingest service, reads for the dashboard, models and CLI.

    `Store(engine)` does no I/O; `Store.open(url)` connects and creates missing tables. Thread-safe (one
    engine, pooled connections). Use as a context manager or call `close()`.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.dialect: Final[str] = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreError(f"engine dialect(={self.dialect!r}) must be sqlite or postgresql.")
        self._insert = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
        self._copy_types = [_pg_copy_type(_TELEMETRY.c[name].type) for name in TELEMETRY_COLUMNS]
        self._known = _Known()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, url: str = DEFAULT_DB_URL, *, schema: str | None = None, create: bool = True) -> Store:
        """Connect to `url` (see `normalize_url`) and create missing tables unless `create` is False.

        SQLite connections get `journal_mode=WAL`, `synchronous=NORMAL` and a busy timeout of
        SQLITE_BUSY_TIMEOUT_MS; write transactions start with `BEGIN IMMEDIATE`. `schema` (PostgreSQL
        only) puts every table in that schema, created if missing, via the connections' `search_path`.
        """
        url = normalize_url(url)
        parsed: URL = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if schema is not None:
                raise StoreError(f"schema(={schema!r}) is for PostgreSQL; SQLite has one per file.")
            engine = create_engine(url, json_serializer=_json_dumps)
            _install_sqlite_listeners(engine)
        else:
            connect_args: dict[str, Any] = {}
            if schema is not None:
                if not _SCHEMA_NAME.fullmatch(schema):
                    raise StoreError(f"schema(={schema!r}) must match {_SCHEMA_NAME.pattern}.")
                connect_args["options"] = f"-csearch_path={schema}"
            engine = create_engine(
                url, json_serializer=_json_dumps, connect_args=connect_args, pool_pre_ping=True
            )
            if schema is not None and create:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        store = cls(engine)
        if create:
            Base.metadata.create_all(engine)
        return store

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def begin(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises.

        SQLite takes the write lock at once (`BEGIN IMMEDIATE`, so a read never has to be upgraded);
        `snapshot=True` runs PostgreSQL at REPEATABLE READ (every statement sees the same data).
        """
        with self._engine.connect() as conn:
            options: dict[str, Any] = {"twin_write": True}
            if snapshot and self.dialect == "postgresql":
                options["isolation_level"] = "REPEATABLE READ"
            conn.execution_options(**options)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    # ------------------------------------------------------------------ writes

    def write_batch(self, batch: IngestBatch) -> WriteResult:
        """Write everything in `batch` in one transaction; safe to call again with the same batch."""
        events = self._checked_events(batch.job_events)
        for status in batch.statuses:
            if status.status not in NODE_STATUS_INPUTS:
                raise StoreError(
                    f"status(={status.status!r}) of node {status.node!r} must be 'online' or 'offline'."
                )
        if not len(batch):
            return WriteResult()
        inserted, seen = 0, _Seen(set(), set())
        with self.begin() as conn:
            if batch.telemetry:
                inserted, seen = self._write_telemetry(conn, batch.telemetry)
            if batch.statuses:
                self._write_statuses(conn, batch)
            events_inserted = self._write_events(conn, events) if events else 0
            rejects_inserted = self._write_rejects(conn, batch) if batch.rejects else 0
        self._known.add(seen)  # committed: these rows exist now
        return WriteResult(
            telemetry_inserted=inserted,
            telemetry_duplicates=len(batch.telemetry) - inserted,
            statuses=len(batch.statuses),
            events_inserted=events_inserted,
            events_duplicates=len(events) - events_inserted,
            rejects_inserted=rejects_inserted,
            rejects_duplicates=len(batch.rejects) - rejects_inserted,
        )

    @staticmethod
    def _checked_events(events: Sequence[JobEventRecord]) -> list[JobEventRecord]:
        for e in events:
            if e.event not in EVENT_STATES:
                raise StoreError(
                    f"event(={e.event!r}) of job {e.job_id!r} must be one of {sorted(EVENT_STATES)}."
                )
            _finite(f"job {e.job_id!r} event ts", e.ts)
        return list(events)

    def _write_telemetry(self, conn: Connection, rows: list[TelemetryTuple]) -> tuple[int, _Seen]:
        """Insert the rows (duplicates ignored), fold them into node/GPU last-seen rows.

        Returns the rows inserted and the node/GPU keys written (known to exist once committed).
        """
        uuid_at = TELEMETRY_COLUMNS.index("uuid")
        if any("\x00" in u for u in {r[uuid_at] for r in rows} if u):  # PostgreSQL text cannot hold NUL
            rows = [
                (*r[:uuid_at], _clean_text(r[uuid_at], len(r[uuid_at] or "")), *r[uuid_at + 1 :])
                for r in rows
            ]
        if self.dialect == "postgresql":
            return self._write_telemetry_pg(conn, rows)
        cursor = _driver_connection(conn).cursor()
        try:
            marks = ", ".join("?" * len(TELEMETRY_COLUMNS))
            cursor.executemany(
                f"INSERT INTO telemetry ({_TELEMETRY_COLS}) VALUES ({marks}) ON CONFLICT DO NOTHING", rows
            )
            inserted = int(cursor.rowcount)
            gpus, nodes = _last_seen(rows)
            seen = _Seen({g[:3] for g in gpus}, {n[:2] for n in nodes})
            known = self._known.covers(seen)
            # Rows known to exist take a plain UPDATE (no insert attempt: ~30% cheaper than the upsert);
            # if one was missing after all (the database was replaced), the upsert fixes it.
            for keys, update_sql, upsert_sql, params in (
                (known.gpus, _GPU_UPDATE_SQLITE, _GPU_UPSERT_SQLITE, gpus),
                (known.nodes, _NODE_UPDATE_SQLITE, _NODE_UPSERT_SQLITE, nodes),
            ):
                if keys:
                    cursor.executemany(update_sql, params)
                    if cursor.rowcount == len(params):
                        continue
                cursor.executemany(upsert_sql, params)
        finally:
            cursor.close()
        return inserted, seen

    def _write_telemetry_pg(self, conn: Connection, rows: list[TelemetryTuple]) -> tuple[int, _Seen]:
        from psycopg.errors import UniqueViolation

        seen = _Seen({r[:3] for r in rows}, {r[:2] for r in rows})
        known = self._known.covers(seen)
        cursor = _driver_connection(conn).cursor()
        try:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_PG_TEMP_TABLE} "
                "(LIKE telemetry INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            with cursor.copy(f"COPY {_PG_TEMP_TABLE} ({_TELEMETRY_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(self._copy_types)
                for row in rows:
                    copy.write_row(row)
            # A plain INSERT costs half of INSERT … ON CONFLICT (no speculative insertion per row); a batch
            # holding a stored row (a redelivery, a retry) fails it and takes the ON CONFLICT path instead.
            cursor.execute("SAVEPOINT twin_telemetry")
            try:
                cursor.execute(_TELEMETRY_INSERT_PG)
                inserted = int(cursor.rowcount)
                cursor.execute("RELEASE SAVEPOINT twin_telemetry")
            except UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT twin_telemetry")
                cursor.execute(_TELEMETRY_INSERT_PG + " ON CONFLICT DO NOTHING")
                inserted = int(cursor.rowcount)
            for keys, expected, update_sql, upsert_sql in (
                (known.gpus, len(seen.gpus), _GPU_UPDATE_PG, _GPU_UPSERT_PG),
                (known.nodes, len(seen.nodes), _NODE_UPDATE_PG, _NODE_UPSERT_PG),
            ):
                if keys:
                    cursor.execute(update_sql)
                    if cursor.rowcount == expected:
                        continue
                cursor.execute(upsert_sql)
        finally:
            cursor.close()
        return inserted, seen

    def _write_statuses(self, conn: Connection, batch: IngestBatch) -> None:
        # The newest status per node (a tie between online and offline at one instant: offline).
        newest: dict[tuple[str, str], tuple[float, str]] = {}
        for s in batch.statuses:
            received = _finite(f"node {s.node!r} status received_ts", s.received_ts)
            key = (s.cluster, s.node)
            if key not in newest or (received, s.status) > newest[key]:
                newest[key] = (received, s.status)
        table = _NODES
        stmt = self._insert(table)
        old = table.c
        newer = (old.status_ts.is_(None)) | (stmt.excluded.status_ts >= old.status_ts)
        stmt = stmt.on_conflict_do_update(
            index_elements=[old.cluster, old.node],
            set_={
                "first_seen_ts": _least(stmt.excluded.first_seen_ts, old.first_seen_ts),
                "status": _case(newer, stmt.excluded.status, old.status),
                "status_ts": _case(newer, stmt.excluded.status_ts, old.status_ts),
            },
        )
        conn.execute(
            stmt,
            [
                {
                    "cluster": c,
                    "node": n,
                    "first_seen_ts": ts,
                    "last_seen_ts": None,
                    "status": status,
                    "status_ts": ts,
                }
                for (c, n), (ts, status) in sorted(newest.items())
            ],
        )

    def _write_events(self, conn: Connection, events: list[JobEventRecord]) -> int:
        """Insert the events (duplicates ignored), then fold all of them into their jobs' rows."""
        table = _EVENTS
        stmt = self._insert(table).on_conflict_do_nothing(
            index_elements=["cluster", "job_id", "event", "ts", "step_key"]
        )
        inserted = conn.execute(
            stmt.returning(table.c.id),
            [
                {
                    "cluster": e.cluster,
                    "job_id": e.job_id,
                    "event": e.event,
                    "ts": e.ts,
                    "step_key": NO_STEP if e.step is None else e.step,
                    "step": e.step,
                    "step_time_s": e.step_time_s,
                    "tokens": e.tokens,
                    "reason": _clean_text(e.reason, JOB_REASON_CHARS),
                    "model": _plain_json(e.model, "model"),
                    "layout": _plain_json(e.layout, "layout"),
                    "nodes": list(e.nodes) or None,
                }
                for e in events
            ],
        ).all()
        self._fold_jobs(conn, events)
        return len(inserted)

    def _fold_jobs(self, conn: Connection, events: list[JobEventRecord]) -> None:
        jobs_table = _JOBS
        keys = sorted({(e.cluster, e.job_id) for e in events})
        first_ts = {k: min(e.ts for e in events if (e.cluster, e.job_id) == k) for k in keys}
        # A placeholder row (rank -1: any event overrides it) so that the row exists and can be locked.
        placeholder = self._insert(jobs_table).on_conflict_do_nothing(index_elements=["cluster", "job_id"])
        conn.execute(
            placeholder,
            [
                {
                    "cluster": c,
                    "job_id": j,
                    "state": "running",
                    "state_ts": first_ts[(c, j)],
                    "state_rank": -1,
                    "updated_ts": first_ts[(c, j)],
                }
                for c, j in keys
            ],
        )
        query = (
            select(*(jobs_table.c[name] for name in _JOB_FIELDS))
            .where(tuple_(jobs_table.c.cluster, jobs_table.c.job_id).in_(keys))
            .order_by(jobs_table.c.cluster, jobs_table.c.job_id)
            .with_for_update()
        )
        jobs = {(r.cluster, r.job_id): _Job(*r) for r in conn.execute(query)}
        for e in sorted(events, key=lambda e: (e.ts, EVENT_STATES[e.event][1])):
            jobs[(e.cluster, e.job_id)].apply(e)
        for (cluster, job_id), job in jobs.items():
            values = {name: getattr(job, name) for name in _JOB_FIELDS[2:]}
            conn.execute(
                update(jobs_table)
                .where(and_(jobs_table.c.cluster == cluster, jobs_table.c.job_id == job_id))
                .values(**values)
            )

    def _write_rejects(self, conn: Connection, batch: IngestBatch) -> int:
        rows = []
        for r in batch.rejects:
            row = {
                "received_ts": _finite("reject received_ts", r.received_ts),
                "topic": _clean_text(r.topic, TOPIC_CHARS),
                "reason": _clean_text(r.reason, REASON_CHARS),
                "field": _clean_text(r.field, FIELD_CHARS),
                "message": _clean_text(r.message, MESSAGE_CHARS),
                "payload_excerpt": _clean_text(r.payload_excerpt, EXCERPT_CHARS),
            }
            identity = "\x1f".join(repr(row[k]) for k in sorted(row))
            row["dedupe_key"] = hashlib.sha1(identity.encode("utf-8", "replace")).hexdigest()
            rows.append(row)
        table = _REJECTS
        stmt = self._insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(table.c.id)
        return len(conn.execute(stmt, rows).all())

    def mark_stale(self, cluster: str, nodes: Iterable[str], ts: float) -> int:
        """Mark `nodes` of `cluster` stale as of `ts` (unix s); returns how many were marked.

        A node is left alone when it reported `offline` (more specific), when its status is newer than
        `ts`, or when it sent telemetry after `ts` (the caller's view was out of date). A node not yet
        known is created with status `stale`. Newer telemetry later revives a stale node to `online`.
        """
        ts = _finite("mark_stale ts", ts)
        names = sorted(set(nodes))
        if not names:
            return 0
        table = _NODES
        c = table.c
        with self.begin() as conn:
            conn.execute(
                self._insert(table).on_conflict_do_nothing(index_elements=["cluster", "node"]),
                [
                    {"cluster": cluster, "node": n, "first_seen_ts": ts, "status": "stale", "status_ts": ts}
                    for n in names
                ],
            )
            result = conn.execute(
                update(table)
                .where(
                    c.cluster == cluster,
                    c.node.in_(names),
                    c.status != "offline",
                    c.status_ts.is_(None) | (c.status_ts <= ts),
                    c.last_seen_ts.is_(None) | (c.last_seen_ts <= ts),
                )
                .values(status="stale", status_ts=ts)
            )
        return int(result.rowcount)

    def record_scenario_run(
        self, scenario: Mapping[str, Any], result: Mapping[str, Any], source: str, created_ts: float
    ) -> int:
        """Store a what-if (scenario and result, JSON; non-finite numbers become null); returns its id."""
        if not isinstance(source, str) or not source or len(source) > SOURCE_CHARS:
            raise StoreError(f"source(={source!r}) must be a name of 1–{SOURCE_CHARS} characters.")
        values = {
            "created_ts": _finite("created_ts", created_ts),
            "source": source,
            "scenario": _plain_json(scenario, "scenario"),
            "result": _plain_json(result, "result"),
        }
        table = _RUNS
        with self.begin() as conn:
            new_id = conn.execute(self._insert(table).values(**values).returning(table.c.id)).scalar_one()
        return int(new_id)

    # ------------------------------------------------------------------ reads

    def latest_telemetry(self, cluster: str | None = None, node: str | None = None) -> list[dict[str, Any]]:
        """The newest stored sample of every GPU (optionally of one cluster/node), by cluster, node, index.

        Keys are `TELEMETRY_COLUMNS`. A GPU whose raw samples were all compacted away is left out.
        """
        t, g = _TELEMETRY, _GPUS
        query = (
            select(*(t.c[name] for name in TELEMETRY_COLUMNS))
            .join(
                g,
                and_(
                    t.c.ts == g.c.last_seen_ts,
                    t.c.cluster == g.c.cluster,
                    t.c.node == g.c.node,
                    t.c.gpu_index == g.c.gpu_index,
                ),
            )
            .order_by(t.c.cluster, t.c.node, t.c.gpu_index)
        )
        if cluster is not None:
            query = query.where(g.c.cluster == cluster)
        if node is not None:
            query = query.where(g.c.node == node)
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def telemetry_frame(
        self,
        cluster: str | None = None,
        since_ts: float | None = None,
        until_ts: float | None = None,
        limit: int | None = None,
        *,
        node: str | None = None,
    ) -> pd.DataFrame:
        """Raw samples with `since_ts ≤ ts < until_ts` (unix s) as a DataFrame with `TELEMETRY_COLUMNS`,
        in time order. With `limit`, the newest `limit` samples of that range (still in time order)."""
        import pandas as pd

        if limit is not None and limit < 0:
            raise StoreError(f"limit(={limit}) must be ≥ 0.")
        t = _TELEMETRY
        query = select(*(t.c[name] for name in TELEMETRY_COLUMNS))
        if cluster is not None:
            query = query.where(t.c.cluster == cluster)
        if node is not None:
            query = query.where(t.c.node == node)
        if since_ts is not None:
            query = query.where(t.c.ts >= _finite("since_ts", since_ts))
        if until_ts is not None:
            query = query.where(t.c.ts < _finite("until_ts", until_ts))
        order = (t.c.ts, t.c.cluster, t.c.node, t.c.gpu_index)
        if limit is not None:
            query = query.order_by(*(col.desc() for col in order)).limit(limit)
        else:
            query = query.order_by(*order)
        with self._read() as conn:
            rows = [tuple(r) for r in conn.execute(query)]
        if limit is not None:
            rows.reverse()
        return pd.DataFrame.from_records(rows, columns=list(TELEMETRY_COLUMNS))

    def rollup_frame(
        self,
        cluster: str | None = None,
        since_ts: float | None = None,
        until_ts: float | None = None,
        *,
        node: str | None = None,
    ) -> pd.DataFrame:
        """1-minute rollups with `since_ts ≤ minute_ts < until_ts` as a DataFrame, in time order."""
        import pandas as pd

        r = _ROLLUPS
        query = select(r)
        if cluster is not None:
            query = query.where(r.c.cluster == cluster)
        if node is not None:
            query = query.where(r.c.node == node)
        if since_ts is not None:
            query = query.where(r.c.minute_ts >= _finite("since_ts", since_ts))
        if until_ts is not None:
            query = query.where(r.c.minute_ts < _finite("until_ts", until_ts))
        query = query.order_by(r.c.minute_ts, r.c.cluster, r.c.node, r.c.gpu_index)
        with self._read() as conn:
            rows = [tuple(row) for row in conn.execute(query)]
        return pd.DataFrame.from_records(rows, columns=[c.name for c in r.columns])

    def nodes(self, cluster: str | None = None) -> list[dict[str, Any]]:
        """Every node row (cluster, node, first/last seen, status, status_ts), by cluster and node."""
        return self._rows(_NODES, cluster, ("cluster", "node"))

    def gpus(self, cluster: str | None = None) -> list[dict[str, Any]]:
        """Every GPU row with its newest values, by cluster, node and index."""
        return self._rows(_GPUS, cluster, ("cluster", "node", "gpu_index"))

    def jobs(self, cluster: str | None = None) -> list[dict[str, Any]]:
        """Every job row (state, steps, tokens, model/layout JSON …), by cluster and job id."""
        return self._rows(_JOBS, cluster, ("cluster", "job_id"))

    def job_events(
        self, job_id: str, cluster: str | None = None, *, newest: int | None = None
    ) -> list[dict[str, Any]]:
        """A job's stored events in time order (ties: start, step, checkpoint, end, fail); with `newest`,
        only the last `newest` of them (a long job has one step event per reporting interval)."""
        e = _EVENTS
        query = select(e).where(e.c.job_id == job_id)
        if cluster is not None:
            query = query.where(e.c.cluster == cluster)
        if newest is not None:
            if isinstance(newest, bool) or not isinstance(newest, int) or newest < 0:
                raise StoreError(f"newest(={newest!r}) must be an integer ≥ 0.")
            query = query.order_by(e.c.ts.desc(), e.c.id.desc()).limit(newest)
        else:
            query = query.order_by(e.c.ts, e.c.id)
        with self._read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        rows.sort(key=lambda r: (r["ts"], EVENT_STATES[r["event"]][1], r["step_key"]))
        return rows

    def scenario_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Stored what-ifs, newest first (at most `limit`)."""
        s = _RUNS
        query = select(s).order_by(s.c.created_ts.desc(), s.c.id.desc()).limit(limit)
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def _rows(self, table: Any, cluster: str | None, order: tuple[str, ...]) -> list[dict[str, Any]]:
        query = select(table).order_by(*(table.c[name] for name in order))
        if cluster is not None:
            query = query.where(table.c.cluster == cluster)
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]


# ---------------------------------------------------------------------- SQL helpers


def _driver_connection(conn: Connection) -> Any:
    """The DBAPI driver's own connection under `conn` (sqlite3 or psycopg), inside its transaction."""
    driver = conn.connection.driver_connection
    if driver is None:  # only after the connection was invalidated
        raise StoreUnavailable("database connection(=None) was invalidated; retry the batch.")
    return driver


def _case(condition: Any, then: Any, otherwise: Any) -> Any:
    return case((condition, then), else_=otherwise)


def _least(new: Any, old: Any) -> Any:
    """Portable LEAST(new, old) where old may be NULL."""
    return _case(old.is_(None) | (new < old), new, old)


def _last_seen(rows: list[TelemetryTuple]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Per distinct GPU: its newest sample and earliest ts; per distinct node: earliest and newest ts.

    Returns parameter tuples in `_GPU_COLS` and `_NODE_COLS` order. Written with C-level sorting and
    comprehensions (≈1 µs a row in CPython, a third of an explicit loop).
    """
    ordered = sorted(rows, key=_TS)  # stable: equal timestamps keep their batch order
    latest = {row[:3]: row for row in ordered}  # the last assignment is the newest sample
    first = {row[:3]: row[3] for row in reversed(ordered)}  # … here the earliest
    gpus = [(*_GPU_PARAMS(row), first[key]) for key, row in latest.items()]
    node_last = {row[:2]: row[3] for row in ordered}
    node_first = {row[:2]: row[3] for row in reversed(ordered)}
    nodes = [(*key, node_first[key], ts) for key, ts in node_last.items()]
    return gpus, nodes


# --- node and GPU "last seen" SQL, generated for three sources of new values: a VALUES row (SQLite
# upsert, `excluded.col`), numbered parameters (SQLite UPDATE, `?N`) and the COPY temp table aggregated
# (PostgreSQL, `s.col`). Same rules everywhere; a SET expression always sees the row's old values.

_TS: Final = itemgetter(TELEMETRY_COLUMNS.index("ts"))
_GPU_COLS: Final = ("cluster", "node", "gpu_index", "last_seen_ts", "uuid", *GPU_LAST_FIELDS, "first_seen_ts")
_GPU_SAMPLE_FIELDS: Final = ("cluster", "node", "gpu_index", "ts", "uuid", *GPU_LAST_FIELDS.values())
# A GPU's parameters from its newest row: _GPU_COLS but the last (first_seen_ts), which is appended.
_GPU_PARAMS: Final = itemgetter(*(TELEMETRY_COLUMNS.index(c) for c in _GPU_SAMPLE_FIELDS))
_NODE_COLS: Final = ("cluster", "node", "first_seen_ts", "last_seen_ts")


def _gpu_sets(new: Mapping[str, str]) -> str:
    """SET clauses folding a GPU's newest sample (`new[col]`: SQL for the new value) into its row."""
    newer = f"{new['last_seen_ts']} >= gpus.last_seen_ts"
    sets = [
        f"uuid = CASE WHEN {new['uuid']} IS NOT NULL AND {newer} THEN {new['uuid']} "
        f"ELSE COALESCE(gpus.uuid, {new['uuid']}) END",
        f"first_seen_ts = CASE WHEN {new['first_seen_ts']} < gpus.first_seen_ts "
        f"THEN {new['first_seen_ts']} ELSE gpus.first_seen_ts END",
    ]
    sets += [
        f"{col} = CASE WHEN {newer} THEN {new[col]} ELSE gpus.{col} END"
        for col in ("last_seen_ts", *GPU_LAST_FIELDS)
    ]
    return ", ".join(sets)


def _node_sets(new: Mapping[str, str]) -> str:
    """SET clauses widening a node's first/last seen; telemetry newer than an `unknown`/`stale` status (or
    than no status) makes it `online` (status_ts keeps the time of the last report or stale mark)."""
    first, last = new["first_seen_ts"], new["last_seen_ts"]
    revive = f"nodes.status IN {_REVIVABLE!r} AND (nodes.status_ts IS NULL OR {last} > nodes.status_ts)"
    return (
        f"first_seen_ts = CASE WHEN {first} < nodes.first_seen_ts THEN {first} ELSE nodes.first_seen_ts END, "
        f"last_seen_ts = CASE WHEN nodes.last_seen_ts IS NULL OR {last} > nodes.last_seen_ts "
        f"THEN {last} ELSE nodes.last_seen_ts END, "
        f"status = CASE WHEN {revive} THEN 'online' ELSE nodes.status END"
    )


def _excluded(cols: Sequence[str]) -> dict[str, str]:
    return {c: f"excluded.{c}" for c in cols}


def _numbered(cols: Sequence[str]) -> dict[str, str]:
    return {c: f"?{i}" for i, c in enumerate(cols, start=1)}


def _source(cols: Sequence[str]) -> dict[str, str]:
    return {c: f"s.{c}" for c in cols}


_GPU_KEY: Final = "cluster, node, gpu_index"
_GPU_UPSERT_SQLITE: Final = (
    f"INSERT INTO gpus ({', '.join(_GPU_COLS)}) VALUES ({', '.join(_numbered(_GPU_COLS).values())}) "
    f"ON CONFLICT ({_GPU_KEY}) DO UPDATE SET {_gpu_sets(_excluded(_GPU_COLS))}"
)
_GPU_UPDATE_SQLITE: Final = (
    f"UPDATE gpus SET {_gpu_sets(_numbered(_GPU_COLS))} WHERE cluster = ?1 AND node = ?2 AND gpu_index = ?3"
)
_NODE_UPSERT_SQLITE: Final = (
    f"INSERT INTO nodes ({', '.join(_NODE_COLS)}, status) VALUES (?1, ?2, ?3, ?4, 'online') "
    f"ON CONFLICT (cluster, node) DO UPDATE SET {_node_sets(_excluded(_NODE_COLS))}"
)
_NODE_UPDATE_SQLITE: Final = (
    f"UPDATE nodes SET {_node_sets(_numbered(_NODE_COLS))} WHERE cluster = ?1 AND node = ?2"
)
# PostgreSQL: each GPU's newest row in the COPY temp table, with its earliest ts (one sort).
_GPU_SOURCE_PG: Final = (
    f"SELECT DISTINCT ON ({_GPU_KEY}) {_GPU_KEY}, ts AS last_seen_ts, uuid, "
    + ", ".join(f"{field} AS {col}" for col, field in GPU_LAST_FIELDS.items())
    + f", min(ts) OVER (PARTITION BY {_GPU_KEY} ORDER BY ts DESC "
    "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS first_seen_ts "
    f"FROM {_PG_TEMP_TABLE} ORDER BY {_GPU_KEY}, ts DESC"
)
_GPU_UPSERT_PG: Final = (
    f"INSERT INTO gpus ({', '.join(_GPU_COLS)}) SELECT {', '.join(_GPU_COLS)} FROM ({_GPU_SOURCE_PG}) s "
    f"ON CONFLICT ({_GPU_KEY}) DO UPDATE SET {_gpu_sets(_excluded(_GPU_COLS))}"
)
_GPU_UPDATE_PG: Final = (
    f"UPDATE gpus SET {_gpu_sets(_source(_GPU_COLS))} FROM ({_GPU_SOURCE_PG}) s "
    "WHERE gpus.cluster = s.cluster AND gpus.node = s.node AND gpus.gpu_index = s.gpu_index"
)
_NODE_SOURCE_PG: Final = (
    "SELECT cluster, node, min(ts) AS first_seen_ts, max(ts) AS last_seen_ts "
    f"FROM {_PG_TEMP_TABLE} GROUP BY cluster, node ORDER BY cluster, node"
)
_NODE_UPSERT_PG: Final = (
    f"INSERT INTO nodes ({', '.join(_NODE_COLS)}, status) SELECT {', '.join(_NODE_COLS)}, 'online' "
    f"FROM ({_NODE_SOURCE_PG}) s "
    f"ON CONFLICT (cluster, node) DO UPDATE SET {_node_sets(_excluded(_NODE_COLS))}"
)
_NODE_UPDATE_PG: Final = (
    f"UPDATE nodes SET {_node_sets(_source(_NODE_COLS))} FROM ({_NODE_SOURCE_PG}) s "
    "WHERE nodes.cluster = s.cluster AND nodes.node = s.node"
)
_TELEMETRY_INSERT_PG: Final = (
    f"INSERT INTO telemetry ({_TELEMETRY_COLS}) SELECT {_TELEMETRY_COLS} FROM {_PG_TEMP_TABLE}"
)


def _install_sqlite_listeners(engine: Engine) -> None:
    """WAL, synchronous=NORMAL and a busy timeout on every connection; explicit BEGIN [IMMEDIATE]."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN handling off: we emit BEGIN
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("twin_write") else "BEGIN")
