"""Forecasts in the store: the predictors' output (`ForecastRow`, table `forecasts`) written and read back.

    from twin.store.forecasts import Forecast, read_forecasts, write_forecasts
    write_forecasts(store, [Forecast("power", "demo", "node", "n01", made_at_ts, 900.0, 2_410.0,
                                     p10=2_250.0, p90=2_530.0, unit="W", model_version="power-0003")])
    rows = read_forecasts(store, kind="power", newest_only=True)

Writing is idempotent: a forecast with the same identity (kind, cluster, scope, target, made_at_ts,
horizon_s, model_version) replaces the stored one. Like the rest of the store, nothing here reads the
clock: callers pass every timestamp (unix s). Bad arguments raise `StoreError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from sqlalchemy import Table, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from twin.store.repository import Store
from twin.store.schema import (
    FORECAST_IDENTITY,
    FORECAST_KINDS,
    FORECAST_SCOPES,
    FORECAST_TARGET_CHARS,
    FORECAST_UNIT_CHARS,
    MODEL_VERSION_CHARS,
    SEGMENT_CHARS,
    ForecastRow,
)
from twin.store.urls import StoreError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FORECAST_COLUMNS",
    "Forecast",
    "ForecastRow",
    "delete_forecasts_before",
    "forecast_frame",
    "read_forecasts",
    "write_forecasts",
]

_FORECASTS: Final = cast(Table, ForecastRow.__table__)
FORECAST_COLUMNS: Final = tuple(c.name for c in _FORECASTS.columns if c.name != "id")
# Rows per INSERT statement: SQLite binds at most 32,766 parameters (SQLITE_MAX_VARIABLE_NUMBER since
# 3.32); 12 columns × 2,000 rows stays well below it.
WRITE_CHUNK_ROWS: Final = 2_000


@dataclass(frozen=True, slots=True)
class Forecast:
    """One forecast (see `ForecastRow`). For `failure`, `p50` is the probability and p10/p90 are None."""

    kind: str
    cluster: str
    scope: str
    target: str
    made_at_ts: float
    horizon_s: float
    p50: float
    p10: float | None = None
    p90: float | None = None
    unit: str = "W"
    model_version: str = "unversioned"

    def checked(self) -> dict[str, Any]:
        """The row's values, or `StoreError` naming the first bad field."""
        if self.kind not in FORECAST_KINDS:
            raise StoreError(f"forecast kind(={self.kind!r}) must be one of {FORECAST_KINDS}.")
        if self.scope not in FORECAST_SCOPES:
            raise StoreError(f"forecast scope(={self.scope!r}) must be one of {FORECAST_SCOPES}.")
        for name, value, limit in (
            ("cluster", self.cluster, SEGMENT_CHARS),
            ("target", self.target, FORECAST_TARGET_CHARS),
            ("unit", self.unit, FORECAST_UNIT_CHARS),
            ("model_version", self.model_version, MODEL_VERSION_CHARS),
        ):
            if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
                raise StoreError(f"forecast {name}(={value!r}) must be text of 1–{limit} characters.")
        values: dict[str, Any] = {
            "kind": self.kind,
            "cluster": self.cluster,
            "scope": self.scope,
            "target": self.target,
            "unit": self.unit,
            "model_version": self.model_version,
        }
        for name in ("made_at_ts", "horizon_s", "p50"):
            values[name] = _number(name, getattr(self, name))
        if values["horizon_s"] < 0:
            raise StoreError(f"forecast horizon_s(={self.horizon_s!r}) must be >= 0.")
        for name in ("p10", "p90"):
            value = getattr(self, name)
            values[name] = None if value is None else _number(name, value)
        if (values["p10"] is not None and values["p10"] > values["p50"]) or (
            values["p90"] is not None and values["p90"] < values["p50"]
        ):
            raise StoreError(
                f"forecast quantiles p10(={self.p10!r}) ≤ p50(={self.p50!r}) ≤ p90(={self.p90!r}) must hold."
            )
        return values


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        tolist = getattr(value, "item", None)  # NumPy scalars
        if callable(tolist) and not isinstance(value, bool):
            return _number(name, tolist())
        raise StoreError(f"forecast {name}(={value!r}) must be a finite number.")
    return float(value)


def write_forecasts(store: Store, forecasts: Iterable[Forecast]) -> int:
    """Insert (or replace, by identity) `forecasts` in one transaction; returns how many were written."""
    rows = [f.checked() for f in forecasts]
    if not rows:
        return 0
    insert = sqlite.insert if store.dialect == "sqlite" else postgresql.insert
    # The last of several forecasts with one identity in the same call wins (one upsert per identity).
    unique = list({tuple(r[k] for k in FORECAST_IDENTITY): r for r in rows}.values())
    with store.begin() as conn:
        for start in range(0, len(unique), WRITE_CHUNK_ROWS):
            stmt = insert(_FORECASTS)
            stmt = stmt.on_conflict_do_update(
                index_elements=list(FORECAST_IDENTITY),
                set_={name: stmt.excluded[name] for name in ("p10", "p50", "p90", "unit")},
            )
            conn.execute(stmt, unique[start : start + WRITE_CHUNK_ROWS])
    return len(unique)


def read_forecasts(
    store: Store,
    *,
    kind: str | None = None,
    cluster: str | None = None,
    scope: str | None = None,
    target: str | None = None,
    since_ts: float | None = None,
    newest_only: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Stored forecasts (keys `FORECAST_COLUMNS`), newest `made_at_ts` first, then target and horizon.

    `newest_only`: only the rows of the newest `made_at_ts` of each kind (after the other filters).
    """
    if limit is not None and limit < 0:
        raise StoreError(f"limit(={limit}) must be ≥ 0.")
    since = None if since_ts is None else _number("since_ts", since_ts)
    filters = {"kind": kind, "cluster": cluster, "scope": scope, "target": target}

    def where(table: Any) -> list[Any]:
        out = [table.c[column] == value for column, value in filters.items() if value is not None]
        return out + ([table.c.made_at_ts >= since] if since is not None else [])

    t = _FORECASTS
    query = select(*(t.c[name] for name in FORECAST_COLUMNS)).where(*where(t))
    if newest_only:
        inner = t.alias("newest")
        newest = select(func.max(inner.c.made_at_ts)).where(inner.c.kind == t.c.kind, *where(inner))
        query = query.where(t.c.made_at_ts == newest.scalar_subquery())
    query = query.order_by(t.c.made_at_ts.desc(), t.c.kind, t.c.cluster, t.c.scope, t.c.target, t.c.horizon_s)
    if limit is not None:
        query = query.limit(limit)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def forecast_frame(store: Store, **filters: Any) -> pd.DataFrame:
    """`read_forecasts` as a DataFrame with `FORECAST_COLUMNS`."""
    import pandas as pd

    return pd.DataFrame.from_records(read_forecasts(store, **filters), columns=list(FORECAST_COLUMNS))


def delete_forecasts_before(store: Store, made_before_ts: float) -> int:
    """Delete forecasts made before `made_before_ts` (retention); returns how many were deleted."""
    cutoff = _number("made_before_ts", made_before_ts)
    with store.begin() as conn:
        result = conn.execute(delete(_FORECASTS).where(_FORECASTS.c.made_at_ts < cutoff))
    return int(result.rowcount)
