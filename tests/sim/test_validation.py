"""Validation against the Llama 3 report and against the analytic (Daly 2006) model of twin.perf."""

from __future__ import annotations

import pytest

from tests.sim.helpers import EXAMPLE
from twin.perf.estimate import estimate
from twin.perf.reliability import (
    LLAMA3_INTERRUPTION_CAUSES,
    LLAMA3_SNAPSHOT_DAYS,
    LLAMA3_UNEXPECTED_INTERRUPTIONS,
    Component,
)
from twin.sim import load_spec, replicate


def test_llama3_54_days_shows_about_419_interruptions_with_the_published_mix() -> None:
    spec = load_spec(EXAMPLE)
    summary = replicate(spec, LLAMA3_SNAPSHOT_DAYS, replications=4, seed=2024, workers=1)
    job = summary.job("llama3-405b")
    assert job.interruptions.mean == pytest.approx(LLAMA3_UNEXPECTED_INTERRUPTIONS, rel=0.10)
    total = sum(job.interruptions_by_category.values())
    for component in Component:
        published = sum(c.count for c in LLAMA3_INTERRUPTION_CAUSES if c.component is component) / 419
        simulated = (
            sum(
                n
                for name, n in job.interruptions_by_category.items()
                for c in LLAMA3_INTERRUPTION_CAUSES
                if c.name == name and c.component is component
            )
            / total
        )
        # ~1,700 interruptions in all: the standard error of a share is at most 1.2 points.
        assert simulated == pytest.approx(published, abs=0.04), component
    assert job.finished_fraction == 0.0  # 54 days is short of the ~78-day run
    assert 0.6 < job.progress.mean < 0.75


def test_completion_time_agrees_with_the_analytic_goodput_model() -> None:
    spec = load_spec(EXAMPLE)
    (llama,) = spec.jobs
    est = estimate(llama.model, spec.cluster.job_cluster(llama.gpus), llama.layout, llama.training)
    assert est.reliability is not None
    summary = replicate(spec, 100, replications=3, seed=7, workers=1)
    job = summary.job("llama3-405b")
    assert job.finished_fraction == 1.0
    # Daly's first-order model, T = T0(1 + δ/τ) / (1 − (R + (τ + δ)/2)/M), against the simulation's
    # mean (its launch cost of one restart and Poisson noise of ±0.1 % are inside the tolerance).
    assert job.completion_s.mean == pytest.approx(est.reliability.time_to_train_s, rel=0.01)
    assert job.interruptions.mean == pytest.approx(est.reliability.expected_interruptions, rel=0.05)
