"""Live projection: a reason instead of a crash when it cannot be made; per-job ETAs when it can."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from dashboard import projection
from tests.dashboard.conftest import DemoStore
from twin.store.repository import Store


def test_without_a_spec_the_reason_says_how_to_get_one(demo_store: DemoStore) -> None:
    with Store.open(demo_store.url, create=False) as store:
        view = projection.project_cluster(store, "demo", None, now_s=time.time(), hours=24, replications=2)
    assert not view.available and view.reason is not None and "--sim-spec" in view.reason


def test_a_bad_spec_is_a_reason_not_a_crash(demo_store: DemoStore, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"cluster": {"gpu": "no-such-gpu", "nodes": 1}, "jobs": []}')
    with Store.open(demo_store.url, create=False) as store:
        view = projection.project_cluster(
            store, "demo", str(bad), now_s=time.time(), hours=24, replications=2
        )
    assert not view.available and view.reason


def test_missing_live_sim_module_is_reported(monkeypatch: pytest.MonkeyPatch, demo_store: DemoStore) -> None:
    monkeypatch.setitem(sys.modules, "twin.live_sim", None)  # `import twin.live_sim` now raises ImportError
    with Store.open(demo_store.url, create=False) as store:
        view = projection.project_cluster(
            store, "demo", demo_store.spec_path, now_s=time.time(), hours=24, replications=2
        )
    assert view.reason is not None and view.reason.startswith("twin.live_sim cannot be imported")


def test_projection_of_the_simulated_jobs(demo_store: DemoStore) -> None:
    pytest.importorskip("twin.live_sim")
    now = time.time()
    with Store.open(demo_store.url, create=False) as store:
        jobs = store.jobs("demo")
        view = projection.project_cluster(
            store, "demo", demo_store.spec_path, now_s=now, hours=24, replications=2
        )
    assert view.available, view.reason
    running = [j["job_id"] for j in jobs if j["state"] == "running"]
    assert set(running) <= set(view.jobs)
    first = view.jobs[running[0]]
    assert 0 < first["progress"] < 1
    assert first["observed_step_time_s"] == pytest.approx(9.775, rel=0.01)  # the simulated workload's period
    assert view.power_kw_hourly is not None and len(view.power_kw_hourly["mean"]) == 24
