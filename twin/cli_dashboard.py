"""`twin dashboard`: start the Streamlit dashboard.

    twin dashboard [--db URL] [--host 127.0.0.1] [--port 8501] [--cluster C] [--sim-spec FILE]
                   [--refresh-s S] [--stale-after-s S] [--window-s S] [--projection-hours H] …

Settings come from flags with `TWIN_DB` / `TWIN_CLUSTER` as defaults, read here at the edge, and reach the
Streamlit script (`dashboard/app.py`) as arguments after `--`; `dashboard.settings` parses them there and
owns the other defaults (documented in docs/dashboard.md). This module does not import `dashboard` (the
layering is dashboard → twin).
Streamlit runs through its own CLI (`python -m streamlit run`) with every server option given
explicitly: bound to localhost unless `--host` says otherwise, headless, no usage statistics, no file
watcher. The process is replaced by Streamlit's (`exec`), so signals reach the server directly and
`twin dashboard` exits with its status.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Final, TextIO

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8501  # Streamlit's default port
# The Streamlit script, beside the `twin` package (a checkout, or both installed side by side).
APP_PATH: Final = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
# Optional flags passed through to the script when given (flag, dest).
PASSTHROUGH: Final = (
    ("--sim-spec", "sim_spec"),
    ("--refresh-s", "refresh_s"),
    ("--stale-after-s", "stale_after_s"),
    ("--window-s", "window_s"),
    ("--projection-hours", "projection_hours"),
    ("--projection-replications", "projection_replications"),
    ("--projection-every-s", "projection_every_s"),
)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def streamlit_command(args: argparse.Namespace, python: str = sys.executable) -> list[str]:
    """The command line that runs the dashboard with these arguments."""
    script_args = ["--db", args.db, "--cluster", args.cluster]
    for flag, dest in PASSTHROUGH:
        value = getattr(args, dest)
        if value is not None:
            script_args += [flag, str(value)]
    return [
        python,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--",
        *script_args,
    ]


def cmd_dashboard(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    """Replace this process with the Streamlit server (2 for a bad port or a missing app file)."""
    if not 0 < args.port < 65536:
        print(f"error: port(={args.port}) must be 1–65535", file=sys.stderr)
        return 2
    if not APP_PATH.is_file():
        print(f"error: the dashboard app is not installed ({APP_PATH} is missing)", file=sys.stderr)
        return 2
    command = streamlit_command(args)
    if args.print_command:
        out.write(" ".join(command) + "\n")
        return 0
    out.write(f"gpu-twin dashboard on http://{args.host}:{args.port} (store {args.db})\n")
    out.flush()
    os.execv(command[0], command)
    return 0  # not reached: execv replaced this process


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dashboard` to `twin`; the handler is `args.func(args, out, stdin) -> int`."""
    from twin.cli_telemetry import DEFAULT_CLUSTER
    from twin.store.urls import DEFAULT_DB_URL

    default_db = os.environ.get("TWIN_DB") or DEFAULT_DB_URL
    default_cluster = os.environ.get("TWIN_CLUSTER") or DEFAULT_CLUSTER
    p = subparsers.add_parser(
        "dashboard", help="start the Streamlit dashboard (live, what-if, sweep, forecasts)"
    )
    p.add_argument("--db", default=default_db, help=f"database URL (default: $TWIN_DB or {DEFAULT_DB_URL})")
    p.add_argument(
        "--cluster",
        default=default_cluster,
        help=f"cluster name (default: $TWIN_CLUSTER or {DEFAULT_CLUSTER})",
    )
    p.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this host only)"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument(
        "--sim-spec", default=None, help="`twin sim` spec of the live cluster: enables projections"
    )
    p.add_argument("--refresh-s", type=_positive, default=None, help="live page refresh period, s")
    p.add_argument(
        "--stale-after-s", type=_positive, default=None, help="a node silent this long is stale, s"
    )
    p.add_argument("--window-s", type=_positive, default=None, help="cluster power history shown, s")
    p.add_argument("--projection-hours", type=_positive, default=None, help="live projection horizon, h")
    p.add_argument(
        "--projection-replications",
        type=_count,
        default=None,
        help="live projection: Monte Carlo replications",
    )
    p.add_argument(
        "--projection-every-s",
        type=_positive,
        default=None,
        help="live projection: recomputed at most this often, s",
    )
    p.add_argument("--print-command", action="store_true", help="print the Streamlit command, do not run it")
    p.set_defaults(func=cmd_dashboard)
