"""The store the pages read, opened once per URL (Streamlit's resource cache), or why it cannot be.

A missing SQLite file is an empty state ("no database yet: start `twin serve`"), never created here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import streamlit as st
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dashboard.projection import ProjectionView, project_cluster
from dashboard.settings import DashboardSettings
from twin.store.repository import Store
from twin.store.urls import redact_url

HOW_TO_START: Final = (
    "Start the twin and a sensor, e.g. `twin serve --db {url} &` then "
    "`twin sensors simulate --nodes 16 --interval-s 1` (a simulated A100 cluster) — or fill a demo store: "
    "`python -m dashboard.sample_data {url} --spec demo-spec.json`."
)


def missing_sqlite_file(url: str) -> str | None:
    """The path when `url` names an SQLite file that does not exist."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        return None if path.exists() else str(path)
    return None


@st.cache_resource(show_spinner=False)
def _open(url: str) -> Store:
    return Store.open(url)


def open_store(url: str) -> Store | str:
    """The store at `url`, or a sentence saying why there is none and what to do."""
    missing = missing_sqlite_file(url)
    if missing is not None:
        return f"No database at `{missing}` yet. " + HOW_TO_START.format(url=url)
    try:
        return _open(url)
    except Exception as exc:  # a bad URL or an unreachable server: say so on the page
        return f"Cannot open the store at `{redact_url(url)}`: {type(exc).__name__}: {exc}"


@st.cache_data(show_spinner="Projecting the live jobs…", max_entries=4)
def cached_projection(
    db_url: str,
    cluster: str,
    spec: str | None,
    hours: float,
    replications: int,
    now_bucket: int,
    every_s: float,
) -> ProjectionView:
    """The live projection at `now_bucket × every_s`, recomputed at most once per `every_s` (the bucket is
    part of the cache key), shared by the live and forecasts pages."""
    store = open_store(db_url)
    if isinstance(store, str):
        return ProjectionView(reason=store)
    return project_cluster(
        store, cluster, spec, now_s=now_bucket * every_s, hours=hours, replications=replications
    )


def live_projection(settings: DashboardSettings, cluster: str, now_s: float) -> ProjectionView:
    """`cached_projection` with the dashboard's projection settings (the live and forecasts pages)."""
    every = settings.projection_every_s
    return cached_projection(
        settings.db_url,
        cluster,
        settings.sim_spec,
        settings.projection_hours,
        settings.projection_replications,
        int(now_s // every),
        every,
    )
