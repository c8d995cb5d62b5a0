"""models.duration: the job-duration model (beats the median; as a hybrid, beats the analytic estimate
alone), its interval, the Alibaba 2023 evaluation, job failure, and the input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.duration import (
    MIN_FIT_JOBS,
    JobDurationModel,
    alibaba_jobs,
    evaluate_jobs,
    score_duration,
    temporal_split,
)
from models.errors import InsufficientHistoryError, MissingColumnsError, ModelInputError

QOS = ("LS", "BE", "Burstable")


def synthetic_jobs(n: int, seed: int, *, analytic_bias: float = 0.0) -> pd.DataFrame:
    """Jobs whose log-duration depends on GPUs and QoS, with an analytic estimate that is off by a factor
    depending on memory (what a hybrid can learn) and noisy."""
    rng = np.random.default_rng(seed)
    jobs = pd.DataFrame(
        {
            "num_gpu": rng.choice([0, 1, 2, 8], n),
            "gpu_milli": rng.choice([0, 500, 1000], n),
            "cpu_milli": rng.integers(1_000, 32_000, n),
            "memory_mib": rng.integers(1_000, 100_000, n),
            "qos": rng.choice(QOS, n),
        }
    )
    log_d = 5.0 + 0.5 * jobs["num_gpu"] + np.where(jobs["qos"] == "BE", 1.5, 0.0) + rng.normal(0.0, 0.3, n)
    jobs["duration_s"] = np.exp(log_d)
    skew = analytic_bias * (jobs["memory_mib"] > 50_000)
    jobs["analytic_duration_s"] = np.exp(log_d + skew + rng.normal(0.0, 0.4, n))
    jobs["failed"] = (rng.random(n) < np.where(jobs["qos"] == "BE", 0.6, 0.05)).astype(int)
    return jobs


def test_learns_what_the_median_cannot() -> None:
    jobs = synthetic_jobs(2_000, 0).drop(columns="analytic_duration_s")
    train, test = temporal_split(jobs)
    score = score_duration("synthetic", JobDurationModel(random_state=0), train, test)
    assert score.analytic_mae_log_s is None and score.baseline_mae_log_s == score.median_mae_log_s
    assert score.mae_log_s < 0.5 * score.median_mae_log_s
    assert 0.7 < score.interval_coverage < 0.9


def test_hybrid_uses_the_analytic_estimate_and_beats_it_alone() -> None:
    jobs = synthetic_jobs(2_000, 1, analytic_bias=1.0)
    train, test = temporal_split(jobs)
    model = JobDurationModel(random_state=0)
    score = score_duration("synthetic", model, train, test)
    assert model.uses_analytic_ and "analytic_duration_s" in model.feature_names_in_
    assert score.analytic_mae_log_s is not None
    assert score.mae_log_s < score.analytic_mae_log_s < score.median_mae_log_s
    with pytest.raises(MissingColumnsError, match="analytic_duration_s"):
        model.predict(test.drop(columns="analytic_duration_s"))


def test_quantiles_in_seconds_and_an_unseen_qos_class() -> None:
    jobs = synthetic_jobs(500, 2)
    model = JobDurationModel(analytic_column=None, random_state=0).fit(jobs, jobs["duration_s"])
    new = jobs.head(3).assign(qos=pd.Series(["LS", "never-seen", None], index=jobs.index[:3], dtype=object))
    q = model.predict_quantiles(new)
    assert list(q.columns) == ["p10_s", "p50_s", "p90_s"]
    assert (q["p10_s"] <= q["p50_s"]).all() and (q["p50_s"] <= q["p90_s"]).all()
    np.testing.assert_allclose(model.predict(new), q["p50_s"])


def test_alibaba_2023_beats_the_median_and_the_base_rate(alibaba_pods: pd.DataFrame) -> None:
    jobs = alibaba_jobs(alibaba_pods)
    assert len(jobs) == len(alibaba_pods) - int((alibaba_pods["pod_phase"] == "Pending").sum())
    assert jobs["creation_time"].is_monotonic_increasing
    duration, failure = evaluate_jobs(jobs, random_state=0)
    assert duration.n_test == len(jobs) - int(len(jobs) * 0.7)
    assert duration.analytic_mae_log_s is None  # the trace has no analytic estimate
    assert duration.mae_log_s < 0.9 * duration.median_mae_log_s
    assert failure.roc_auc > 0.9 and failure.pr_auc > 2 * failure.baseline_pr_auc
    assert failure.brier < failure.baseline_brier


def test_too_few_jobs_says_how_many_are_needed() -> None:
    jobs = synthetic_jobs(MIN_FIT_JOBS - 1, 3)
    with pytest.raises(InsufficientHistoryError, match=f"at least {MIN_FIT_JOBS} finished jobs; got 49"):
        JobDurationModel().fit(jobs, jobs["duration_s"])


def test_renamed_and_bad_columns_are_named() -> None:
    jobs = synthetic_jobs(100, 4)
    with pytest.raises(MissingColumnsError, match=r"'qos' \(found 'QoS': renamed\?\)"):
        JobDurationModel().fit(jobs.rename(columns={"qos": "QoS"}), jobs["duration_s"])
    with pytest.raises(ModelInputError, match="duration_s"):
        JobDurationModel().fit(jobs, -jobs["duration_s"])
    with pytest.raises(ModelInputError, match="'cpu_milli' holds a non-number"):
        JobDurationModel().fit(jobs.assign(cpu_milli="lots"), jobs["duration_s"])
    with pytest.raises(MissingColumnsError, match="pod_phase"):
        alibaba_jobs(jobs)
