"""Stragglers: the max-over-workers model against the Alibaba PAI per-worker mini-batch times."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.sim.helpers import NO_FAILURES, job, raw_spec
from twin.sim import parse_spec, simulate
from twin.sim.spec import StragglerSpec
from twin.sim.stragglers import (
    PAI_SUBDIR,
    StragglerModel,
    default_traces_dir,
    expected_max_standard_normal,
    step_multiplier_moments,
    straggler_spec,
)

PAI = default_traces_dir() / PAI_SUBDIR
needs_pai = pytest.mark.skipif(not PAI.is_dir(), reason=f"PAI mini-batch traces not found at {PAI}")


def test_expected_max_of_standard_normals() -> None:
    # Tables of normal order statistics (Harter 1961): E[max of 10] = 1.53875, of 100 = 2.50759.
    assert expected_max_standard_normal(1) == pytest.approx(0.0, abs=1e-9)
    assert expected_max_standard_normal(10) == pytest.approx(1.53875, abs=1e-4)
    assert expected_max_standard_normal(100) == pytest.approx(2.50759, abs=1e-4)
    assert step_multiplier_moments(0.0, 1000) == (1.0, 0.0)
    mean_one, _ = step_multiplier_moments(0.05, 1)
    assert mean_one == pytest.approx(1.0, abs=1e-9)  # one worker: no waiting on anyone


def _worker_rows(path: Path) -> list[np.ndarray]:
    by_iteration: dict[str, list[float]] = defaultdict(list)
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            by_iteration[row["time"]].append(float(row["batch_time_norm"]))
    return [np.asarray(v) for v in by_iteration.values() if len(v) == 10]


@needs_pai
@pytest.mark.parametrize("job_file", ["job_1_norm.csv", "job_2_norm.csv", "job_3_norm.csv"])
def test_model_reproduces_the_slowest_of_ten_pai_workers(job_file: str) -> None:
    """Measured mean of (slowest worker / mean worker) per iteration vs the lognormal model at that CoV."""
    rows = _worker_rows(PAI / job_file)
    measured = float(np.mean([v.max() / v.mean() for v in rows]))
    cov = math.sqrt(float(np.mean([(v.std() / v.mean()) ** 2 for v in rows])))
    predicted, _ = step_multiplier_moments(cov, 10)
    assert 1.05 < measured < 1.2
    assert predicted == pytest.approx(measured, rel=0.02)


@needs_pai
def test_default_cov_is_the_quiet_decile_of_pai_jobs() -> None:
    spec = straggler_spec()
    assert spec.cov == pytest.approx(0.0352, abs=5e-4)
    assert "coefficient_variation.csv" in spec.source


def test_missing_trace_falls_back_to_the_built_in_value(tmp_path: Path) -> None:
    spec = straggler_spec(traces_dir=tmp_path)
    assert spec.cov == 0.0352 and "not found" in spec.source


def test_chunk_multipliers_have_the_model_moments() -> None:
    model = StragglerModel(StragglerSpec(cov=0.05, source="test"), workers=1024)
    steps = np.full(200_000, 4)
    draws = model.chunk_multipliers(np.random.default_rng(0), steps)
    assert draws.mean() == pytest.approx(model.mean, rel=1e-3)
    assert draws.var() == pytest.approx(model.variance / 4, rel=0.02)
    assert np.all(draws > 0)


def test_stragglers_slow_a_job_by_the_expected_max() -> None:
    raw = raw_spec(2, scale=NO_FAILURES, jobs=[job("j", 16, 4e9)])
    plain = simulate(parse_spec(raw), 10, seed=0).job("j")
    slow_spec = parse_spec({**raw, "stragglers": {"cov": 0.05}})
    slow = simulate(slow_spec, 10, seed=0).job("j")
    (j,) = slow_spec.jobs
    assert plain.finish_s is not None and slow.finish_s is not None
    factor, _ = step_multiplier_moments(0.05, 16)
    compute = j.target_steps * j.step_time_s
    assert slow.finish_s - plain.finish_s == pytest.approx((factor - 1.0) * compute, rel=0.02)
