"""Compaction: roll raw telemetry older than the retention horizon up into 1-minute rows, then delete it.

The horizon is rounded down to a whole minute, so a minute is rolled up all at once. Rollups are computed in
SQL (GROUP BY cluster, node, gpu_index, minute) and raw rows are deleted in the same transaction, window by
window (`chunk_s` of raw time each), so an interrupted run loses nothing and a rerun finds nothing left to
count twice. Samples arriving late for a minute already rolled up are merged into its row (sample-weighted
means, min/max, newest XID).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final, cast

from sqlalchemy import ColumnElement, Connection, Integer, Over, Table, case, delete, func, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite

from twin.store.repository import Store
from twin.store.schema import TelemetryRollupRow, TelemetryRow
from twin.store.urls import StoreError

MINUTE_S: Final = 60.0
# Raw time compacted per transaction: one hour (at 100,000 samples/s that is still 360 M rows; a busier
# store wants a smaller chunk, which `compact(chunk_s=…)` accepts).
DEFAULT_CHUNK_S: Final = 3_600.0

_RAW: Final = cast(Table, TelemetryRow.__table__)
_ROLLUPS: Final = cast(Table, TelemetryRollupRow.__table__)
_KEY: Final = ("cluster", "node", "gpu_index", "minute_ts")


@dataclass(frozen=True, slots=True)
class CompactResult:
    """What `compact` did: raw samples with ts < `cutoff_ts` (unix s, a whole minute) were rolled up."""

    cutoff_ts: float
    rollups_written: int
    raw_deleted: int
    windows: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compact(
    store: Store, now_s: float, retention_s: float, *, chunk_s: float = DEFAULT_CHUNK_S
) -> CompactResult:
    """Roll up and delete raw telemetry older than `now_s − retention_s` (seconds), rounded to a minute.

    Idempotent: running it again with the same arguments writes and deletes nothing more.
    """
    for name, value in (("now_s", now_s), ("retention_s", retention_s), ("chunk_s", chunk_s)):
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise StoreError(f"{name}(={value!r}) must be a finite number of seconds.")
    if retention_s < 0:
        raise StoreError(f"retention_s(={retention_s!r}) must be ≥ 0.")
    if chunk_s < MINUTE_S or chunk_s % MINUTE_S:
        raise StoreError(f"chunk_s(={chunk_s!r}) must be a positive multiple of {MINUTE_S:g} s.")
    cutoff = math.floor((now_s - retention_s) / MINUTE_S) * MINUTE_S
    written = deleted = windows = 0
    while True:
        with store.begin(snapshot=True) as conn:
            oldest = conn.execute(select(func.min(_RAW.c.ts)).where(_RAW.c.ts < cutoff)).scalar()
            if oldest is None:
                break
            lo = math.floor(oldest / MINUTE_S) * MINUTE_S
            hi = min(lo + chunk_s, cutoff)
            written += _roll_up(conn, store.dialect, lo, hi)
            deleted += conn.execute(delete(_RAW).where(_RAW.c.ts >= lo, _RAW.c.ts < hi)).rowcount
            windows += 1
    return CompactResult(
        cutoff_ts=float(cutoff), rollups_written=written, raw_deleted=deleted, windows=windows
    )


def _minute(ts: ColumnElement[float], dialect: str) -> ColumnElement[Any]:
    """floor(ts / 60) · 60, portably: SQLite's floor() needs a math-enabled build; CAST truncates (ts > 0)."""
    if dialect == "postgresql":
        return func.floor(ts / MINUTE_S) * MINUTE_S
    return sql_cast(ts / MINUTE_S, Integer) * MINUTE_S


def _nulls_last(column: ColumnElement[Any]) -> ColumnElement[int]:
    return case((column.is_(None), 1), else_=0)


def _roll_up(conn: Connection, dialect: str, lo: float, hi: float) -> int:
    """Upsert the rollups of raw samples with lo ≤ ts < hi (whole minutes); returns rollup rows written."""
    t = _RAW.c
    minute = _minute(t.ts, dialect)
    partition = [t.cluster, t.node, t.gpu_index, minute]

    def at(column: ColumnElement[Any], *order: ColumnElement[Any]) -> Over[Any]:
        """`column` at the first row of its GPU-minute in `order`, NULLs of `column` last."""
        return func.first_value(column).over(partition_by=partition, order_by=[_nulls_last(column), *order])

    per_sample = (
        select(
            t.cluster,
            t.node,
            t.gpu_index,
            minute.label("minute_ts"),
            t.ts,
            t.power_w,
            t.temp_c,
            t.gpu_util_pct,
            t.mem_util_pct,
            t.mem_used_bytes,
            t.mem_total_bytes,
            t.sm_clock_mhz,
            t.ecc_sbe_total,
            t.ecc_dbe_total,
            t.throttle_reasons,
            at(t.energy_j, t.ts).label("energy_first"),
            at(t.energy_j, t.ts.desc()).label("energy_last"),
            at(t.xid_last, t.ts.desc()).label("xid_newest"),
        )
        .where(t.ts >= lo, t.ts < hi)
        .subquery()
    )
    s = per_sample.c
    per_minute = select(
        s.cluster,
        s.node,
        s.gpu_index,
        s.minute_ts,
        func.count().label("samples"),
        func.min(s.ts),
        func.max(s.ts),
        func.avg(s.power_w),
        func.min(s.power_w),
        func.max(s.power_w),
        func.max(s.energy_first),
        func.max(s.energy_last),
        func.avg(s.temp_c),
        func.max(s.temp_c),
        func.avg(s.gpu_util_pct),
        func.avg(s.mem_util_pct),
        func.max(s.mem_used_bytes),
        func.max(s.mem_total_bytes),
        func.avg(s.sm_clock_mhz),
        func.max(s.ecc_sbe_total),
        func.max(s.ecc_dbe_total),
        func.max(s.xid_newest),
        func.sum(case((s.throttle_reasons > 0, 1), else_=0)),
    ).group_by(s.cluster, s.node, s.gpu_index, s.minute_ts)
    columns = [
        *_KEY,
        "samples",
        "first_ts",
        "last_ts",
        "power_mean_w",
        "power_min_w",
        "power_max_w",
        "energy_first_j",
        "energy_last_j",
        "temp_mean_c",
        "temp_max_c",
        "gpu_util_mean_pct",
        "mem_util_mean_pct",
        "mem_used_max_bytes",
        "mem_total_bytes",
        "sm_clock_mean_mhz",
        "ecc_sbe_max",
        "ecc_dbe_max",
        "xid_last",
        "throttled_samples",
    ]
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    stmt = insert(_ROLLUPS).from_select(columns, per_minute)
    stmt = stmt.on_conflict_do_update(index_elements=list(_KEY), set_=_merge(stmt.excluded))
    return int(conn.execute(stmt, execution_options={"preserve_rowcount": True}).rowcount)


def _merge(new: Any) -> dict[str, Any]:
    """SET clauses merging a late rollup (`new`, the excluded row) into the stored one (`old`)."""
    old = _ROLLUPS.c
    total = old.samples + new.samples

    def least(a: Any, b: Any) -> Any:  # NULL-aware: a NULL side never wins
        return case((b.is_(None), a), (a.is_(None), b), (b < a, b), else_=a)

    def greatest(a: Any, b: Any) -> Any:
        return case((b.is_(None), a), (a.is_(None), b), (b > a, b), else_=a)

    def mean(name: str) -> Any:  # weighted by sample counts (exact when no sample lacked the field)
        a, b = old[name], new[name]
        weighted = (a * old.samples + b * new.samples) / total
        return case((b.is_(None), a), (a.is_(None), b), else_=weighted)

    newer = new.last_ts >= old.last_ts
    earlier = new.first_ts < old.first_ts
    return {
        "samples": total,
        "first_ts": least(old.first_ts, new.first_ts),
        "last_ts": greatest(old.last_ts, new.last_ts),
        "power_mean_w": (old.power_mean_w * old.samples + new.power_mean_w * new.samples) / total,
        "power_min_w": least(old.power_min_w, new.power_min_w),
        "power_max_w": greatest(old.power_max_w, new.power_max_w),
        "energy_first_j": case(
            (old.energy_first_j.is_(None), new.energy_first_j),
            (new.energy_first_j.is_not(None) & earlier, new.energy_first_j),
            else_=old.energy_first_j,
        ),
        "energy_last_j": case(
            (old.energy_last_j.is_(None), new.energy_last_j),
            (new.energy_last_j.is_not(None) & newer, new.energy_last_j),
            else_=old.energy_last_j,
        ),
        "temp_mean_c": mean("temp_mean_c"),
        "temp_max_c": greatest(old.temp_max_c, new.temp_max_c),
        "gpu_util_mean_pct": mean("gpu_util_mean_pct"),
        "mem_util_mean_pct": mean("mem_util_mean_pct"),
        "mem_used_max_bytes": greatest(old.mem_used_max_bytes, new.mem_used_max_bytes),
        "mem_total_bytes": greatest(old.mem_total_bytes, new.mem_total_bytes),
        "sm_clock_mean_mhz": mean("sm_clock_mean_mhz"),
        "ecc_sbe_max": greatest(old.ecc_sbe_max, new.ecc_sbe_max),
        "ecc_dbe_max": greatest(old.ecc_dbe_max, new.ecc_dbe_max),
        "xid_last": case(
            (old.xid_last.is_(None), new.xid_last),
            (new.xid_last.is_not(None) & newer, new.xid_last),
            else_=old.xid_last,
        ),
        "throttled_samples": old.throttled_samples + new.throttled_samples,
    }
