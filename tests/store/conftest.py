"""The `store` fixture: every store test runs on SQLite (a file under tmp_path) and on PostgreSQL.

PostgreSQL comes from `TWIN_TEST_POSTGRES_URL` (default: the local test database). When it cannot be
reached those cases are skipped, with the reason, unless `TWIN_REQUIRE_SERVICES=1`, which makes them
fail instead. Each PostgreSQL test gets its own schema (unique per process and test), dropped afterwards,
so suites sharing the database can run at the same time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from twin.store.repository import Store
from twin.store.urls import redact_url

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL URL, or the test is skipped (failed under TWIN_REQUIRE_SERVICES=1)."""
    url = os.environ.get("TWIN_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        why = str(exc.__cause__ or exc).splitlines()[0]
        reason = (
            f"PostgreSQL not reachable at {redact_url(url)} ({type(exc).__name__}: {why}); "
            "set TWIN_TEST_POSTGRES_URL, or TWIN_REQUIRE_SERVICES=1 to fail instead of skipping"
        )
        if os.environ.get("TWIN_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        engine.dispose()
    return url


def open_postgres(url: str) -> tuple[Store, str]:
    """A store in a fresh schema of its own; returns it and the schema name."""
    schema = f"twin_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    return Store.open(url, schema=schema), schema


def drop_schema(url: str, schema: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        sqlite_store = Store.open(f"sqlite:///{tmp_path / 'twin.db'}")
        yield sqlite_store
        sqlite_store.close()
        return
    url: str = request.getfixturevalue("postgres_url")
    pg_store, schema = open_postgres(url)
    try:
        yield pg_store
    finally:
        pg_store.close()
        drop_schema(url, schema)
