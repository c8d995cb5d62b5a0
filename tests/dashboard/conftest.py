"""Fixtures of the dashboard tests: a SQLite store filled with real data from the simulated 1,024-GPU
cluster (through the decoder and `Store.write_batch`, as `twin serve` writes it), its `twin sim` spec, an
empty store and a missing database."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dashboard.sample_data import FillResult, fill_store, live_sim_spec
from twin.store.repository import Store
from twin.store.urls import redact_url

# Three minutes of the 128 × 8 cluster at one sample per node every 10 s: 19 polls, ~19,000 GPU rows,
# about half a second to write — enough for a power history, step times and calibration.
DEMO_MINUTES = 3.0
DEMO_NODES = 128
DEMO_GPUS_PER_NODE = 8
# A seed whose three minutes include failures (two GPUs off the bus, a node gone offline, failed jobs) at
# the demo failure rate, so the alerts are exercised and show in the screenshots; chosen by trying seeds.
DEMO_SEED = 3


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """Streamlit's AppTest runs page scripts as `__main__` and leaves its temporary script there; a later
    test starting a process pool (twin.sim.replicate, forkserver) would then re-run that script in every
    worker and crash it. Put the real `__main__` back after each dashboard test."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@dataclass(frozen=True, slots=True)
class DemoStore:
    url: str
    spec_path: str
    fill: FillResult


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStore]:
    folder = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{folder / 'demo.db'}"
    with Store.open(url) as store:
        fill = fill_store(
            store,
            nodes=DEMO_NODES,
            gpus_per_node=DEMO_GPUS_PER_NODE,
            minutes=DEMO_MINUTES,
            end_ts=time.time(),
            seed=DEMO_SEED,
        )
    spec_path = folder / "demo-spec.json"
    spec_path.write_text(json.dumps(live_sim_spec(nodes=DEMO_NODES, gpus_per_node=DEMO_GPUS_PER_NODE)))
    yield DemoStore(url, str(spec_path), fill)


@pytest.fixture
def empty_store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store.open(url).close()  # the tables exist, no rows
    return url


@pytest.fixture
def missing_db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nowhere' / 'twin.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store on SQLite and on PostgreSQL (a schema of its own; skipped, with the reason, when
    PostgreSQL cannot be reached, unless TWIN_REQUIRE_SERVICES=1) — as the store tests do."""
    if request.param == "sqlite":
        with Store.open(f"sqlite:///{tmp_path / 'any.db'}") as store:
            yield store
        return
    from tests.store.conftest import DEFAULT_POSTGRES_URL, drop_schema, open_postgres

    url = os.environ.get("TWIN_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        store, schema = open_postgres(url)
    except Exception as exc:
        reason = f"PostgreSQL not reachable at {redact_url(url)} ({type(exc).__name__})"
        if os.environ.get("TWIN_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield store
    finally:
        store.close()
        drop_schema(url, schema)
