"""`twin demo`: the live twin end to end on one machine (twin.demo), until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TextIO

DEFAULT_DEMO_DIR = ".twin-demo"


def cmd_demo(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    """0 after a clean stop (Ctrl-C, SIGTERM or --duration-s); 1 if a part of the demo failed."""
    from twin.cli_telemetry import stop_on_signals
    from twin.demo import DemoRun, DemoSettings, summary

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = DemoSettings(
        workdir=Path(args.dir),
        dashboard=not args.no_dashboard,
        dashboard_port=args.port,
        dashboard_host=args.host,
        duration_s=args.duration_s,
        seed=args.seed,
        forecasts=not args.no_forecasts,
    )
    run = DemoRun(settings)
    with stop_on_signals() as stop:
        run.stop_event = stop
        try:
            run.start(out)
            run.wait()
        finally:
            out.write(
                "stopping: flushing telemetry, stopping the service, the dashboard and the broker ...\n"
            )
            out.flush()
            run.stop()
    result = summary(run)
    out.write(json.dumps(result) + "\n")
    return 1 if run.errors else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from twin.demo import DEFAULT_DASHBOARD_PORT, DEMO_SEED

    p = subparsers.add_parser(
        "demo",
        help="the live twin on one machine: embedded broker, simulated cluster, ingest, forecasts, dashboard",
    )
    p.add_argument(
        "--dir", default=DEFAULT_DEMO_DIR, help=f"where the demo keeps its files ({DEFAULT_DEMO_DIR})"
    )
    p.add_argument("--port", type=int, default=DEFAULT_DASHBOARD_PORT, help="dashboard port")
    p.add_argument("--host", default="127.0.0.1", help="dashboard address (default: this machine only)")
    p.add_argument("--no-dashboard", action="store_true", help="run without the dashboard")
    p.add_argument("--no-forecasts", action="store_true", help="skip training predictors and forecasts")
    p.add_argument("--duration-s", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(func=cmd_demo)
