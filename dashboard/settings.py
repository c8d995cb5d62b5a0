"""The dashboard's settings: one frozen value parsed from the Streamlit script's arguments (what
`twin dashboard` passes after `--`: `streamlit run dashboard/app.py -- --db … --cluster …`).

Nothing here reads the environment: `twin.cli_dashboard` does, once, at the edge, and passes plain values;
the defaults of the options it does not pass live here.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from twin.cli_store import DEFAULT_STALE_AFTER_S  # `twin status`: a node silent 30 s is stale
from twin.cli_telemetry import DEFAULT_CLUSTER  # what `twin serve` and `twin sensors` use by default
from twin.store.urls import DEFAULT_DB_URL

# Live page refresh period. ASSUMPTION: 5 s — the simulated sensors publish every 1–10 s and the
# page's target is to refresh in < 1 s with 1,024 GPUs, so 5 s leaves the browser idle 80 % of the time.
DEFAULT_REFRESH_S: Final = 5.0
# Cluster power history shown by default: the last 30 minutes (raw telemetry; older comes from rollups).
DEFAULT_WINDOW_S: Final = 1_800.0
# Live projection (twin.live_sim): ASSUMPTION 30 days ahead (a typical pre-training job runs weeks),
# 8 Monte Carlo replications (P10/P90 need a handful), recomputed at most once a minute.
DEFAULT_PROJECTION_HOURS: Final = 720.0
DEFAULT_PROJECTION_REPLICATIONS: Final = 8
DEFAULT_PROJECTION_EVERY_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """Everything the dashboard needs; built once at the edge."""

    db_url: str = DEFAULT_DB_URL
    cluster: str = DEFAULT_CLUSTER
    refresh_s: float = DEFAULT_REFRESH_S
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    window_s: float = DEFAULT_WINDOW_S
    sim_spec: str | None = None  # `twin sim` spec of the live cluster, for projections
    projection_hours: float = DEFAULT_PROJECTION_HOURS
    projection_replications: int = DEFAULT_PROJECTION_REPLICATIONS
    projection_every_s: float = DEFAULT_PROJECTION_EVERY_S

    def __post_init__(self) -> None:
        for name in ("refresh_s", "stale_after_s", "window_s", "projection_hours", "projection_every_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}(={value!r}) must be a finite number > 0.")
        if self.projection_replications < 1:
            raise ValueError(f"projection_replications(={self.projection_replications}) must be >= 1.")


def parse_args(argv: Sequence[str]) -> DashboardSettings:
    """Settings from the Streamlit script's arguments (what `twin.cli_dashboard` passes after `--`).

    Raises `ValueError` (argparse's `ArgumentError` is one) for a malformed or out-of-range value.
    """
    parser = argparse.ArgumentParser(prog="dashboard", add_help=False, exit_on_error=False)
    parser.add_argument("--db", default=DEFAULT_DB_URL)
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER)
    parser.add_argument("--refresh-s", type=float, default=DEFAULT_REFRESH_S)
    parser.add_argument("--stale-after-s", type=float, default=DEFAULT_STALE_AFTER_S)
    parser.add_argument("--window-s", type=float, default=DEFAULT_WINDOW_S)
    parser.add_argument("--sim-spec", default=None)
    parser.add_argument("--projection-hours", type=float, default=DEFAULT_PROJECTION_HOURS)
    parser.add_argument("--projection-replications", type=int, default=DEFAULT_PROJECTION_REPLICATIONS)
    parser.add_argument("--projection-every-s", type=float, default=DEFAULT_PROJECTION_EVERY_S)
    try:
        args, _unknown = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as exc:
        raise ValueError(str(exc)) from None
    return DashboardSettings(
        db_url=args.db,
        cluster=args.cluster,
        refresh_s=args.refresh_s,
        stale_after_s=args.stale_after_s,
        window_s=args.window_s,
        sim_spec=args.sim_spec,
        projection_hours=args.projection_hours,
        projection_replications=args.projection_replications,
        projection_every_s=args.projection_every_s,
    )
