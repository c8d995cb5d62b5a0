"""Arrivals: Poisson counts, and the Helios Venus submit series replayed bin by bin."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.sim.helpers import NO_FAILURES, job, raw_spec
from twin.sim import parse_spec, simulate
from twin.sim.arrivals import HELIOS_VENUS_FILE, arrival_times, load_submit_counts
from twin.sim.spec import PoissonArrivals, ReplayArrivals
from twin.sim.stragglers import default_traces_dir

HELIOS = default_traces_dir() / HELIOS_VENUS_FILE
needs_helios = pytest.mark.skipif(not HELIOS.is_file(), reason=f"Helios trace not found at {HELIOS}")


def test_poisson_arrivals_count_and_window() -> None:
    template = parse_spec(raw_spec(jobs=[job("t")])).jobs[0]
    arrivals = PoissonArrivals(template=template, rate_per_hour=2.0, start_s=3600.0, end_s=None)
    counts = []
    for seed in range(20):
        times = arrival_times(arrivals, 100 * 86_400.0, np.random.default_rng(seed))
        assert np.all(np.diff(times) >= 0) and times.min() >= 3600.0 and times.max() < 100 * 86_400.0
        counts.append(times.size)
    expected = 2.0 * (100 * 24 - 1)
    assert np.mean(counts) == pytest.approx(expected, abs=4 * np.sqrt(expected / 20))
    capped = PoissonArrivals(template=template, rate_per_hour=2.0, max_jobs=5)
    assert arrival_times(capped, 86_400.0, np.random.default_rng(0)).size == 5


@needs_helios
def test_helios_counts_and_replay_by_bin() -> None:
    with HELIOS.open(encoding="utf-8", newline="") as handle:
        column = [int(r["submit_gpu_job"]) for r in csv.DictReader(handle)]
    counts = load_submit_counts(HELIOS)
    assert counts == tuple(column) and len(counts) == 26_064
    assert load_submit_counts(HELIOS, start="2020-04-02 00:00:00") == tuple(column[144:])
    template = parse_spec(raw_spec(jobs=[job("t")])).jobs[0]
    replay = ReplayArrivals(template=template, counts=counts, bin_s=600.0, source="test")
    times = arrival_times(replay, 86_400.0, np.random.default_rng(0))
    per_bin = np.bincount((times // 600).astype(int), minlength=144)
    assert per_bin.tolist() == list(counts[:144])


@needs_helios
def test_simulate_with_replayed_helios_arrivals() -> None:
    raw = raw_spec(128, scale=NO_FAILURES, jobs=[])
    raw["arrivals"] = {"kind": "helios", "scale": 0.5, "template": job("venus", 8, 1e8)}
    spec = parse_spec(raw)
    assert isinstance(spec.arrivals, ReplayArrivals) and spec.arrivals.source.endswith("submit_gpu_job")
    result = simulate(spec, 1, seed=3)
    submitted = sum(spec.arrivals.counts[:144])
    arrived = len(result.jobs)
    assert arrived == pytest.approx(submitted / 2, abs=4 * np.sqrt(submitted / 4))
    assert all(j.job_id.startswith("venus-") for j in result.jobs)
    finished = [j for j in result.jobs if j.finish_s is not None]
    assert len(finished) > 0.8 * arrived
    c = result.cluster
    assert c.gpu_hours_used + c.gpu_hours_idle + c.gpu_hours_down == pytest.approx(c.gpu_hours_total)
