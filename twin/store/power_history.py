"""Cluster power history for the dashboard's live page: a read-only aggregate of the store.

Like `twin.store.status`, this runs SQLAlchemy Core over the store's typed tables through `store.engine`
and never writes. `cluster_power_series` is bounded whatever the store's size: SQL reduces the window to
one mean per GPU and time bucket — from raw telemetry (a range scan of the telemetry key, which leads with
`ts`) and, before the oldest raw sample, from the 1-minute rollups of compacted history — and pandas sums
the GPUs per bucket, holding each GPU's last value across buckets it did not report in (sensors are not
synchronised and may sample more slowly than the bucket), for at most `hold_s`.
"""

from __future__ import annotations

import math
from typing import Any, Final, cast

import numpy as np
import pandas as pd
from sqlalchemy import Integer, Table, func, select
from sqlalchemy import cast as sql_cast

from twin.store.repository import Store
from twin.store.schema import TelemetryRollupRow, TelemetryRow

_TELEMETRY: Final = cast(Table, TelemetryRow.__table__)
_ROLLUPS: Final = cast(Table, TelemetryRollupRow.__table__)
SECONDS_PER_MINUTE: Final = 60.0
POWER_SERIES_COLUMNS: Final = ("ts", "power_w", "gpus")


def _bucket(column: Any, bucket_s: float, dialect: str) -> Any:
    """floor(column / bucket_s) as an integer bucket number (SQLite's CAST truncates: ts > 0)."""
    if dialect == "sqlite":
        return sql_cast(column / bucket_s, Integer)
    return sql_cast(func.floor(column / bucket_s), Integer)


def hold_buckets(bucket_s: float, hold_s: float) -> int:
    """How many buckets a GPU's last value is carried into: `hold_s` worth, and at least the next one (a
    sensor sampling at the bucket period lands in every other bucket when its phase drifts)."""
    return max(1, math.ceil(hold_s / bucket_s))


def cluster_power_series(
    store: Store, cluster: str, since_ts: float, until_ts: float, bucket_s: float, hold_s: float
) -> pd.DataFrame:
    """Cluster GPU power per `bucket_s` bucket in [since_ts, until_ts): columns ts (bucket start, unix s),
    power_w (Σ over GPUs of the GPU's mean power in the bucket, or its last value within `hold_s`, W) and
    gpus (GPUs counted)."""
    if not (math.isfinite(since_ts) and math.isfinite(until_ts) and until_ts > since_ts):
        raise ValueError(
            f"window [since_ts(={since_ts}), until_ts(={until_ts})) must be finite and non-empty."
        )
    for name, value in (("bucket_s", bucket_s), ("hold_s", hold_s)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}(={value}) must be a finite number > 0.")
    t, r = _TELEMETRY, _ROLLUPS
    raw_bucket = _bucket(t.c.ts, bucket_s, store.dialect).label("bucket")
    raw_query = (
        select(raw_bucket, t.c.node, t.c.gpu_index, func.avg(t.c.power_w))
        .where(t.c.cluster == cluster, t.c.ts >= since_ts, t.c.ts < until_ts)
        .group_by(raw_bucket, t.c.node, t.c.gpu_index)
    )
    oldest_raw = select(func.min(t.c.ts)).where(t.c.cluster == cluster, t.c.ts >= since_ts, t.c.ts < until_ts)
    with store.engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(raw_query)]
        first_raw = conn.execute(oldest_raw).scalar()
        # Rollups only for the minutes that end before the oldest raw sample (no minute counted twice).
        rollup_until = (until_ts if first_raw is None else float(first_raw)) - SECONDS_PER_MINUTE
        if rollup_until > since_ts:
            roll_bucket = _bucket(r.c.minute_ts, bucket_s, store.dialect).label("bucket")
            rows += [
                tuple(row)
                for row in conn.execute(
                    select(roll_bucket, r.c.node, r.c.gpu_index, func.avg(r.c.power_mean_w))
                    .where(r.c.cluster == cluster, r.c.minute_ts >= since_ts, r.c.minute_ts <= rollup_until)
                    .group_by(roll_bucket, r.c.node, r.c.gpu_index)
                )
            ]
    if not rows:
        return pd.DataFrame(columns=list(POWER_SERIES_COLUMNS))
    per_gpu = pd.DataFrame.from_records(rows, columns=["bucket", "node", "gpu_index", "power_w"])
    grid = per_gpu.pivot_table(
        index="bucket", columns=["node", "gpu_index"], values="power_w", aggfunc="mean"
    )
    grid = grid.reindex(np.arange(int(grid.index.min()), int(grid.index.max()) + 1))
    held = grid.ffill(limit=hold_buckets(bucket_s, hold_s))
    return pd.DataFrame(
        {
            "ts": held.index.to_numpy(dtype=np.float64) * bucket_s,
            "power_w": held.sum(axis=1, min_count=1).to_numpy(dtype=np.float64),
            "gpus": held.notna().sum(axis=1).to_numpy(dtype=np.int64),
        }
    ).dropna(ignore_index=True)
