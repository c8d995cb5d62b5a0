"""`twin store compact` and `twin status`: the store's maintenance and health commands.

`register(subparsers)` adds them to the `twin` parser. The database URL defaults to `$TWIN_DB`, else
`sqlite:///twin.db` (read here, at the edge). This is the one place that reads the clock for the store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    from twin.store.repository import Store
    from twin.store.status import NodeHealth, StoreStatus

DEFAULT_DB_URL: Final = "sqlite:///twin.db"  # twin.store.repository.DEFAULT_DB_URL, not imported: cold start
DEFAULT_RETENTION_DAYS: Final = 7.0
DEFAULT_STALE_AFTER_S: Final = 30.0
DAY_S: Final = 86_400.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `store compact` and `status` to `twin`; each handler is `args.func(args, out, stdin) -> int`."""
    default_db = os.environ.get("TWIN_DB") or DEFAULT_DB_URL
    db_help = f"database URL (default: $TWIN_DB or {DEFAULT_DB_URL}; now {default_db!r})"

    p = subparsers.add_parser("store", help="store maintenance (compaction)")
    store_sub = p.add_subparsers(dest="store_command", required=True)
    c = store_sub.add_parser(
        "compact", help="roll raw telemetry older than the retention up into 1-minute rows, delete the raw"
    )
    c.add_argument("--db", default=default_db, help=db_help)
    c.add_argument(
        "--retention-days",
        type=float,
        default=DEFAULT_RETENTION_DAYS,
        help=f"keep raw samples this many days (default {DEFAULT_RETENTION_DAYS:g})",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_store_compact)

    p = subparsers.add_parser("status", help="row counts, rejects by reason, newest sample, stale nodes")
    p.add_argument("--db", default=default_db, help=db_help)
    p.add_argument(
        "--stale-after-s",
        type=float,
        default=DEFAULT_STALE_AFTER_S,
        help=f"a node silent this long is stale (default {DEFAULT_STALE_AFTER_S:g} s)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


def _missing_sqlite_file(url: str) -> str | None:
    """The path when `url` names an SQLite file that does not exist (we do not create one to report on)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # normalize_url reports it
        return None
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return None if Path(parsed.database).exists() else parsed.database
    return None


def _open(url: str) -> Store | str:
    """The store at `url`, or an error message for the caller to print."""
    from sqlalchemy.exc import SQLAlchemyError

    from twin.store.repository import Store
    from twin.store.urls import StoreError, redact_url

    missing = _missing_sqlite_file(url)
    if missing is not None:
        return f"no database at {missing} (give --db or set TWIN_DB)"
    try:
        return Store.open(url)
    except StoreError as exc:
        return str(exc)
    except SQLAlchemyError as exc:
        return f"cannot open {redact_url(url)}: {type(exc).__name__}: {exc.__cause__ or exc}"


def cmd_store_compact(
    args: argparse.Namespace, out: TextIO | None = None, stdin: TextIO | None = None
) -> int:
    """`twin store compact`: 0 on success, 2 for bad arguments or no database, 1 for a database error."""
    from sqlalchemy.exc import SQLAlchemyError

    from twin.store.compact import compact
    from twin.store.urls import StoreError

    out = out or sys.stdout
    if not args.retention_days >= 0:
        print(f"error: --retention-days(={args.retention_days}) must be ≥ 0", file=sys.stderr)
        return 2
    store = _open(args.db)
    if isinstance(store, str):
        print(f"error: {store}", file=sys.stderr)
        return 2
    try:
        result = compact(store, now_s=time.time(), retention_s=args.retention_days * DAY_S)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"error: compaction failed (nothing half-done is kept): {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        out.write(json.dumps(result.to_json()) + "\n")
    else:
        out.write(
            f"compacted raw telemetry before {_iso(result.cutoff_ts)}: {result.raw_deleted:,} samples → "
            f"{result.rollups_written:,} 1-minute rollups ({result.windows} window(s))\n"
        )
    return 0


def cmd_status(args: argparse.Namespace, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """`twin status`: 0 on success, 2 for bad arguments or no database, 1 for a database error."""
    from sqlalchemy.exc import SQLAlchemyError

    from twin.store.status import store_status
    from twin.store.urls import StoreError, redact_url

    out = out or sys.stdout
    store = _open(args.db)
    if isinstance(store, str):
        print(f"error: {store}", file=sys.stderr)
        return 2
    try:
        status = store_status(store, now_s=time.time(), stale_after_s=args.stale_after_s)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"error: cannot read {redact_url(args.db)}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        out.write(json.dumps({"db": redact_url(args.db), **status.to_json()}) + "\n")
    else:
        out.write(format_status(status, redact_url(args.db)) + "\n")
    return 0


def _iso(ts: float | None) -> str:
    if ts is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} d ago"
    if seconds >= 3_600:
        return f"{seconds / 3_600:.1f} h ago"
    return f"{seconds:.0f} s ago"


def _node_line(n: NodeHealth) -> str:
    return f"  {n.cluster:<16} {n.node:<20} {n.status:<8} last telemetry {_ago(n.silent_s)}"


def format_status(status: StoreStatus, db: str) -> str:
    """The human table of `twin status`."""
    newest = status.newest_telemetry_ts
    lines = [f"database  {db}", "", f"{'table':<14} {'rows':>14}"]
    lines += [f"{name:<14} {count:>14,}" for name, count in status.counts.items()]
    age = None if newest is None else status.now_s - newest
    lines += ["", f"newest telemetry   {_iso(newest)} ({_ago(age)})"]
    if status.newest_rollup_minute_ts is not None:
        lines.append(f"newest rollup      {_iso(status.newest_rollup_minute_ts)}")
    if status.rejects_by_reason:
        lines += ["", f"{'reject reason':<20} {'count':>10}"]
        lines += [f"{reason:<20} {n:>10,}" for reason, n in status.rejects_by_reason.items()]
    lines += ["", f"stale nodes (silent > {status.stale_after_s:g} s): {len(status.stale_nodes)}"]
    lines += [_node_line(n) for n in status.stale_nodes]
    lines += [f"offline nodes: {len(status.offline_nodes)}"]
    lines += [_node_line(n) for n in status.offline_nodes]
    return "\n".join(lines)
