"""store_status and the `twin status` / `twin store compact` handlers (called directly, not via twin.cli)."""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import pytest

from tests.store import node_samples, sample
from twin import cli_store
from twin.records import IngestBatch, JobEventRecord, NodeStatusRecord, RejectRecord
from twin.store.forecasts import Forecast, write_forecasts
from twin.store.repository import Store
from twin.store.status import store_status
from twin.store.urls import DEFAULT_DB_URL, StoreError

T0 = 1_700_000_000.0


def fill(store: Store) -> None:
    batch = IngestBatch(
        telemetry=[sample("n01", 0, T0), sample("n01", 1, T0), sample("n02", 0, T0 - 100)],
        statuses=[NodeStatusRecord("c1", "n03", "offline", T0 - 5)],
        job_events=[JobEventRecord("c1", "j1", "start", T0), JobEventRecord("c1", "j1", "step", T0, step=1)],
        rejects=[
            RejectRecord(T0, "t", "not_json", "m", "x"),
            RejectRecord(T0, "t", "not_json", "m", "y"),
            RejectRecord(T0, "t", "ts_too_old", "m", "z", "ts"),
        ],
    )
    store.write_batch(batch)
    store.record_scenario_run({"model": {"preset": "llama3-8b"}}, {"fits": True}, "cli", T0)
    forecast = Forecast("power", "c1", "cluster", "c1", T0, 60.0, p50=1_100.0, p10=1_000.0, p90=1_200.0)
    write_forecasts(store, [forecast])


def test_status_counts_rows_rejects_and_quiet_nodes(store: Store) -> None:
    fill(store)
    status = store_status(store, now_s=T0 + 10, stale_after_s=30)
    assert status.counts == {
        "telemetry": 3,
        "rollups": 0,
        "nodes": 3,
        "gpus": 3,
        "jobs": 1,
        "job_events": 2,
        "rejects": 3,
        "scenario_runs": 1,
        "forecasts": 1,
        "commands": 0,
        "trace_records": 0,
    }
    assert status.rejects_by_reason == {"not_json": 2, "ts_too_old": 1}
    assert status.newest_telemetry_ts == T0
    assert [(n.node, n.status, n.silent_s) for n in status.stale_nodes] == [("n02", "online", 110.0)]
    assert [(n.node, n.status, n.last_seen_ts) for n in status.offline_nodes] == [("n03", "offline", None)]


def test_a_node_marked_stale_is_listed_even_when_recent(store: Store) -> None:
    store.write_batch(IngestBatch(telemetry=[sample("n01", 0, T0)]))
    store.mark_stale("c1", ["n01"], T0 + 1)
    assert [n.node for n in store_status(store, now_s=T0 + 2, stale_after_s=30).stale_nodes] == ["n01"]


def test_status_json_is_plain_json(store: Store) -> None:
    fill(store)
    data = store_status(store, now_s=T0 + 10, stale_after_s=30).to_json()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["stale_nodes"][0] == {
        "cluster": "c1",
        "node": "n02",
        "status": "online",
        "last_seen_ts": T0 - 100,
        "status_ts": None,
        "silent_s": 110.0,
    }


def test_empty_store_status(store: Store) -> None:
    status = store_status(store, now_s=T0, stale_after_s=30)
    assert set(status.counts.values()) == {0}
    assert (status.newest_telemetry_ts, status.rejects_by_reason, status.stale_nodes) == (None, {}, ())


def test_bad_stale_after_is_named(store: Store) -> None:
    with pytest.raises(StoreError, match=r"stale_after_s\(=0\)"):
        store_status(store, now_s=T0, stale_after_s=0)


# ---------------------------------------------------------------- CLI handlers


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="twin")
    cli_store.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run(argv: list[str]) -> tuple[int, str]:
    args = parse(argv)
    out = io.StringIO()
    code: int = args.func(args, out, io.StringIO())
    return code, out.getvalue()


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'twin.db'}"
    now = time.time()
    with Store.open(url) as store:
        store.write_batch(
            IngestBatch(telemetry=node_samples(2, now - 3 * 86_400) + node_samples(1, now - 60))
        )
        store.write_batch(IngestBatch(rejects=[RejectRecord(now, "t", "not_json", "m", "x")]))
    return url


def test_register_defaults_to_twin_db_then_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWIN_DB", raising=False)
    assert parse(["status"]).db == DEFAULT_DB_URL == cli_store.DEFAULT_DB_URL
    monkeypatch.setenv("TWIN_DB", "postgresql+psycopg://u@h/db")
    assert parse(["store", "compact"]).db == "postgresql+psycopg://u@h/db"
    assert parse(["store", "compact"]).retention_days == 7.0
    assert parse(["status"]).stale_after_s == 30.0


def test_status_command_json(db: str) -> None:
    code, out = run(["status", "--db", db, "--json"])
    data = json.loads(out)
    assert code == 0
    assert (data["counts"]["telemetry"], data["counts"]["nodes"], data["rejects_by_reason"]) == (
        24,
        2,
        {"not_json": 1},
    )
    assert [n["node"] for n in data["stale_nodes"]] == ["n0000", "n0001"]  # n0000 last spoke 60 s ago


def test_status_command_table(db: str) -> None:
    code, out = run(["status", "--db", db, "--stale-after-s", "120"])
    assert code == 0
    assert "telemetry" in out and "not_json" in out
    assert "stale nodes (silent > 120 s): 1" in out and "n0001" in out


def test_compact_command_keeps_the_retention(db: str) -> None:
    code, out = run(["store", "compact", "--db", db, "--retention-days", "1", "--json"])
    assert code == 0
    data = json.loads(out)
    assert (data["raw_deleted"], data["rollups_written"]) == (16, 16)  # 2 nodes × 8 GPUs, one minute
    code, out = run(["store", "compact", "--db", db, "--retention-days", "1"])
    assert code == 0 and "0 samples → 0 1-minute rollups" in out


def test_commands_refuse_a_missing_database_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.db"
    assert run(["status", "--db", f"sqlite:///{missing}"])[0] == 2
    assert f"no database at {missing}" in capsys.readouterr().err
    assert not missing.exists()
    assert run(["store", "compact", "--db", "mysql://u@h/db"])[0] == 2
    assert "must be sqlite:///PATH or postgresql" in capsys.readouterr().err
    assert run(["store", "compact", "--db", f"sqlite:///{missing}", "--retention-days", "-1"])[0] == 2


def test_twin_cli_main_runs_both_commands(db: str) -> None:
    from twin.cli import main

    out = io.StringIO()
    assert main(["store", "compact", "--db", db, "--retention-days", "1", "--json"], out=out) == 0
    assert json.loads(out.getvalue())["raw_deleted"] == 16
    out = io.StringIO()
    assert main(["status", "--db", db, "--json"], out=out) == 0
    assert json.loads(out.getvalue())["counts"]["rollups"] == 16
