"""Tables, connection settings, URLs and the read helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from tests.store import node_samples, sample
from tests.store.conftest import drop_schema, open_postgres
from twin.records import TELEMETRY_COLUMNS, IngestBatch
from twin.store.repository import Store
from twin.store.schema import Base, TelemetryRow
from twin.store.urls import StoreError, normalize_url, redact_url

T0 = 1_700_000_000.0


def test_telemetry_columns_mirror_the_records_contract() -> None:
    assert tuple(c.name for c in TelemetryRow.__table__.columns) == TELEMETRY_COLUMNS


def test_every_table_is_created(store: Store) -> None:
    assert set(inspect(store.engine).get_table_names()) == set(Base.metadata.tables)


def test_sqlite_connections_use_wal_normal_sync_and_a_busy_timeout(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'twin.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000


def test_postgres_stores_in_separate_schemas_do_not_see_each_other(postgres_url: str) -> None:
    (first, first_schema), (second, second_schema) = open_postgres(postgres_url), open_postgres(postgres_url)
    try:
        first.write_batch(IngestBatch(telemetry=[sample("n01", 0, T0)]))
        with first.engine.connect() as conn:
            assert conn.execute(text("SELECT current_schema()")).scalar() == first_schema
        assert len(first.telemetry_frame()) == 1 and second.telemetry_frame().empty
    finally:
        for store, schema in ((first, first_schema), (second, second_schema)):
            store.close()
            drop_schema(postgres_url, schema)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///twin.db", "sqlite:///twin.db"),
        ("postgresql://u:pw@h:5432/db", "postgresql+psycopg://u:pw@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_urls_are_normalised_to_supported_drivers(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "not a url"])
def test_unsupported_urls_are_refused_by_name(url: str) -> None:
    with pytest.raises(StoreError, match=r"db url\(="):
        normalize_url(url)


def test_passwords_are_redacted() -> None:
    assert redact_url("postgresql+psycopg://u:secret@h/db") == "postgresql+psycopg://u:***@h/db"


def test_sqlite_has_no_schema_option(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"schema\(='x'\)"):
        Store.open(f"sqlite:///{tmp_path / 't.db'}", schema="x")


def test_telemetry_frame_filters_and_limits(store: Store) -> None:
    rows = node_samples(2, T0) + node_samples(2, T0 + 1) + node_samples(1, T0 + 2, cluster="c2")
    store.write_batch(IngestBatch(telemetry=rows))
    assert len(store.telemetry_frame()) == 40
    assert list(store.telemetry_frame().columns) == list(TELEMETRY_COLUMNS)
    assert len(store.telemetry_frame(cluster="c1")) == 32
    assert set(store.telemetry_frame(since_ts=T0 + 1, until_ts=T0 + 2)["ts"]) == {T0 + 1}
    assert len(store.telemetry_frame(cluster="c1", node="n0001")) == 16
    newest = store.telemetry_frame(limit=3)
    assert newest["ts"].tolist() == [T0 + 2] * 3 and newest["gpu_index"].tolist() == [5, 6, 7]
    assert store.telemetry_frame(cluster="nowhere").empty
    with pytest.raises(StoreError, match=r"limit\(=-1\)"):
        store.telemetry_frame(limit=-1)


def test_scenario_runs_round_trip_with_non_finite_numbers_as_null(store: Store) -> None:
    scenario = {"model": {"preset": "llama3-70b"}, "cluster": {"gpus": 1024}}
    result = {"fits": True, "step_time_s": 12.5, "time_to_train_s": float("inf"), "breakdown_s": [1.0, 2.0]}
    first = store.record_scenario_run(scenario, result, "cli", T0)
    second = store.record_scenario_run(scenario, {"fits": False}, "dashboard", T0 + 1)
    runs = store.scenario_runs()
    assert [r["id"] for r in runs] == [second, first]
    assert runs[1]["scenario"] == scenario
    assert runs[1]["result"] == {**result, "time_to_train_s": None}
    assert [r["source"] for r in store.scenario_runs(limit=1)] == ["dashboard"]
    with pytest.raises(StoreError, match=r"source\(=''\)"):
        store.record_scenario_run(scenario, result, "", T0)


def test_nodes_gpus_and_jobs_read_back_sorted(store: Store) -> None:
    store.write_batch(IngestBatch(telemetry=[sample("b", 1, T0), sample("a", 0, T0), sample("a", 1, T0)]))
    assert [n["node"] for n in store.nodes()] == ["a", "b"]
    assert [(g["node"], g["gpu_index"]) for g in store.gpus()] == [("a", 0), ("a", 1), ("b", 1)]
    assert store.nodes(cluster="other") == []
