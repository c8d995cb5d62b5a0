"""What is in the store and which nodes have gone quiet: `twin status` and the dashboard's health panel."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final, cast

from sqlalchemy import Table, func, or_, select

from twin.store.repository import Store
from twin.store.schema import (
    CommandRow,
    ForecastRow,
    GpuRow,
    JobEventRow,
    JobRow,
    NodeRow,
    RejectRow,
    ScenarioRunRow,
    TelemetryRollupRow,
    TelemetryRow,
    TraceRecordRow,
)
from twin.store.urls import StoreError

# Row counts reported, by name → table.
COUNTED: Final[dict[str, Table]] = {
    "telemetry": cast(Table, TelemetryRow.__table__),
    "rollups": cast(Table, TelemetryRollupRow.__table__),
    "nodes": cast(Table, NodeRow.__table__),
    "gpus": cast(Table, GpuRow.__table__),
    "jobs": cast(Table, JobRow.__table__),
    "job_events": cast(Table, JobEventRow.__table__),
    "rejects": cast(Table, RejectRow.__table__),
    "scenario_runs": cast(Table, ScenarioRunRow.__table__),
    "forecasts": cast(Table, ForecastRow.__table__),
    "commands": cast(Table, CommandRow.__table__),
    "trace_records": cast(Table, TraceRecordRow.__table__),
}


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """One node that needs attention: its status, when it last sent telemetry and when its status was set
    (unix s; None when never), and how long it has been silent at `now_s` (s; None when never heard)."""

    cluster: str
    node: str
    status: str
    last_seen_ts: float | None
    status_ts: float | None
    silent_s: float | None


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """Row counts, rejects by reason, the newest sample and the stale / offline nodes at `now_s`.

    A node is stale when marked `stale`, or when it is not `offline` and has sent nothing (telemetry, or
    failing that a status) for more than `stale_after_s` seconds. Offline nodes said so themselves.
    """

    now_s: float
    stale_after_s: float
    counts: dict[str, int]
    rejects_by_reason: dict[str, int]
    newest_telemetry_ts: float | None
    newest_rollup_minute_ts: float | None
    stale_nodes: tuple[NodeHealth, ...]
    offline_nodes: tuple[NodeHealth, ...]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (the nodes as lists of objects)."""
        out = asdict(self)
        out["stale_nodes"] = [asdict(n) for n in self.stale_nodes]
        out["offline_nodes"] = [asdict(n) for n in self.offline_nodes]
        return out


def store_status(store: Store, now_s: float, stale_after_s: float) -> StoreStatus:
    """Read the store's status as of `now_s` (unix s); nodes silent longer than `stale_after_s` are stale."""
    for name, value in (("now_s", now_s), ("stale_after_s", stale_after_s)):
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise StoreError(f"{name}(={value!r}) must be a finite number of seconds.")
    if stale_after_s <= 0:
        raise StoreError(f"stale_after_s(={stale_after_s!r}) must be > 0.")
    horizon = now_s - stale_after_s
    nodes = cast(Table, NodeRow.__table__)
    rejects = cast(Table, RejectRow.__table__)
    heard = func.coalesce(nodes.c.last_seen_ts, nodes.c.status_ts, nodes.c.first_seen_ts)
    with store.engine.connect() as conn, conn.begin():
        counts = {
            name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for name, t in COUNTED.items()
        }
        by_reason = {
            str(reason): int(n)
            for reason, n in conn.execute(
                select(rejects.c.reason, func.count()).group_by(rejects.c.reason).order_by(rejects.c.reason)
            )
        }
        newest = conn.execute(select(func.max(TelemetryRow.ts))).scalar()
        newest_rollup = conn.execute(select(func.max(TelemetryRollupRow.minute_ts))).scalar()
        node_rows = conn.execute(
            select(
                nodes.c.cluster, nodes.c.node, nodes.c.status, nodes.c.last_seen_ts, nodes.c.status_ts, heard
            )
            .where(
                or_(
                    nodes.c.status.in_(("stale", "offline")),
                    heard < horizon,
                )
            )
            .order_by(nodes.c.cluster, nodes.c.node)
        ).all()
    stale: list[NodeHealth] = []
    offline: list[NodeHealth] = []
    for cluster, node, status, last_seen, status_ts, heard_ts in node_rows:
        silent = None if last_seen is None else max(0.0, now_s - last_seen)
        health = NodeHealth(cluster, node, status, last_seen, status_ts, silent)
        if status == "offline":
            offline.append(health)
        elif status == "stale" or heard_ts < horizon:
            stale.append(health)
    return StoreStatus(
        now_s=float(now_s),
        stale_after_s=float(stale_after_s),
        counts=counts,
        rejects_by_reason=by_reason,
        newest_telemetry_ts=None if newest is None else float(newest),
        newest_rollup_minute_ts=None if newest_rollup is None else float(newest_rollup),
        stale_nodes=tuple(stale),
        offline_nodes=tuple(offline),
    )
