"""The commands the twin sent to nodes and what the nodes did with them (`CommandRow`), through a `Store`.

    record_command(store, command)            # before publishing: outcome "pending"
    record_outcome(store, "demo", outcome)    # when the node reports (sensors.commands.CommandOutcome)
    command_rows(store, "demo", node="n03")   # newest first

An outcome fills in its pending command's row. One that matches no pending command (a replayed command's
second outcome, a forged or unreadable command) is inserted as a row of its own; the same outcome received
twice (a QoS 1 redelivery) is stored once. Timestamps are unix seconds; the store never reads the clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, cast

from sqlalchemy import Table, and_, func, insert, select, update

from sensors.commands import Command, CommandOutcome
from twin.store.repository import Store
from twin.store.schema import (
    ACTION_CHARS,
    COMMAND_ADVICE_CHARS,
    COMMAND_DETAIL_CHARS,
    COMMAND_OUTCOMES,
    REASON_CHARS,
    CommandRow,
)
from twin.store.urls import StoreError

__all__ = ["PENDING", "command_rows", "record_command", "record_outcome"]

PENDING: Final = COMMAND_OUTCOMES[0]
_COMMANDS: Final = cast(Table, CommandRow.__table__)


def _text(value: str | None, limit: int) -> str | None:
    """Text that fits its column on both backends (PostgreSQL refuses NUL)."""
    return None if value is None else value.replace("\x00", "\ufffd")[:limit]


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StoreError(f"{name}(={value!r}) must be a finite number of unix seconds.")
    return float(value)


def record_command(store: Store, command: Command) -> int:
    """Store an issued command with outcome `pending`; returns its row id."""
    values = {
        "cluster": command.cluster,
        "node": command.node,
        "command_id": command.id,
        "action": str(command.action),
        "params": dict(command.params),
        "advice": _text(command.reason, COMMAND_ADVICE_CHARS),
        "issued_ts": _finite("issued_ts", command.issued_ts),
        "expires_ts": _finite("expires_ts", command.expires_ts),
        "outcome": PENDING,
    }
    with store.begin() as conn:
        new_id = conn.execute(insert(_COMMANDS).values(**values).returning(_COMMANDS.c.id)).scalar_one()
    return int(new_id)


def record_outcome(store: Store, cluster: str, outcome: CommandOutcome) -> int:
    """Store what `outcome.node` did; returns the row id it went to (see the module docstring)."""
    c = _COMMANDS
    found = {
        "outcome": str(outcome.outcome),
        "outcome_ts": _finite("outcome_ts", outcome.ts),
        "reason": _text(outcome.reason, REASON_CHARS),
        "detail": _text(outcome.detail, COMMAND_DETAIL_CHARS),
    }
    if found["outcome"] not in COMMAND_OUTCOMES[1:]:
        raise StoreError(f"outcome(={found['outcome']!r}) must be one of {COMMAND_OUTCOMES[1:]}.")
    same_target = and_(
        c.c.cluster == cluster,
        c.c.node == outcome.node,
        c.c.command_id.is_(None) if outcome.command_id is None else c.c.command_id == outcome.command_id,
    )
    with store.begin() as conn:
        if outcome.command_id is not None:
            pending = conn.execute(
                select(c.c.id).where(same_target, c.c.outcome == PENDING).order_by(c.c.id).limit(1)
            ).scalar()
            if pending is not None:
                conn.execute(update(c).where(c.c.id == pending).values(**found))
                return int(pending)
        duplicate = conn.execute(
            select(c.c.id)
            .where(
                same_target,
                c.c.outcome == found["outcome"],
                c.c.outcome_ts == found["outcome_ts"],
                c.c.reason.is_(None) if found["reason"] is None else c.c.reason == found["reason"],
            )
            .limit(1)
        ).scalar()
        if duplicate is not None:
            return int(duplicate)
        new_id = conn.execute(
            insert(c)
            .values(
                cluster=cluster,
                node=outcome.node,
                command_id=outcome.command_id,
                action=_text(outcome.action, ACTION_CHARS),
                **found,
            )
            .returning(c.c.id)
        ).scalar_one()
    return int(new_id)


def command_rows(
    store: Store,
    cluster: str | None = None,
    *,
    node: str | None = None,
    action: str | None = None,
    command_id: str | None = None,
    since_ts: float | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Stored commands and outcomes, newest first (by issued time, then row id; outcome-only rows, which
    have no issued time, by their outcome time). `since_ts` keeps rows issued or reported since then."""
    c = _COMMANDS
    query = select(c)
    filters: Mapping[str, str | None] = {
        "cluster": cluster,
        "node": node,
        "action": action,
        "command_id": command_id,
    }
    for name, value in filters.items():
        if value is not None:
            query = query.where(c.c[name] == value)
    if since_ts is not None:
        since = _finite("since_ts", since_ts)
        query = query.where((c.c.issued_ts >= since) | (c.c.outcome_ts >= since))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise StoreError(f"limit(={limit!r}) must be an integer ≥ 0.")
    when = func.coalesce(c.c.issued_ts, c.c.outcome_ts)
    query = query.order_by(when.desc(), c.c.id.desc()).limit(limit)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
