"""Failures: the superposed process reproduces the per-cause rates, and what each failure takes out."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from tests.sim.helpers import MANY_FAILURES, job, small_spec
from twin.perf.gpu_presets import gpu_preset
from twin.perf.reliability import UNEXPECTED_INTERRUPTIONS_PER_GPU_HOUR, Component, failure_mix
from twin.sim import EventKind, simulate
from twin.sim.cluster import Cluster
from twin.sim.failures import FailureSampler
from twin.sim.log import EventLog
from twin.sim.power import PowerMeter
from twin.sim.spec import Health, SimCluster

DRAWS = 200_000


def test_sampler_matches_the_failure_mix_rate_and_uniform_victims() -> None:
    mix = failure_mix()
    sampler = FailureSampler(mix, nodes=64, gpus_per_node=8, rng=np.random.default_rng(1))
    draws = np.array([sampler.draw() for _ in range(DRAWS)])
    gaps, nodes, gpus, causes = (
        draws[:, 0],
        draws[:, 1].astype(int),
        draws[:, 2].astype(int),
        draws[:, 3].astype(int),
    )
    # Λ = 512 GPUs × 1.97e-5 per GPU-hour; the mean gap is 1/Λ (standard error 1/sqrt(N) relative).
    assert sampler.rate_per_s == pytest.approx(512 * UNEXPECTED_INTERRUPTIONS_PER_GPU_HOUR / 3600)
    assert gaps.mean() * sampler.rate_per_s == pytest.approx(1.0, abs=4 / np.sqrt(DRAWS))
    counts = np.bincount(causes, minlength=len(mix))
    for share, count in zip(mix, counts, strict=True):
        sd = np.sqrt(DRAWS * share.share * (1 - share.share))
        assert abs(count - DRAWS * share.share) < 4.5 * sd, share.name
    for values, bins in ((nodes, 64), (gpus, 8)):
        per_bin = np.bincount(values, minlength=bins)
        expected = DRAWS / bins
        assert np.all(np.abs(per_bin - expected) < 5 * np.sqrt(expected))


def _cluster() -> tuple[simpy.Environment, Cluster]:
    env = simpy.Environment()
    spec = SimCluster(gpu=gpu_preset("h100-sxm"), nodes=2, spare_nodes=1)
    return env, Cluster(env, spec, np.random.default_rng(0), PowerMeter(), EventLog())


def test_a_gpu_failure_drains_its_node_and_a_host_failure_takes_every_gpu() -> None:
    env, cluster = _cluster()
    cluster.take("job", 2, spares=False)
    assert cluster.fail(0, Component.GPU, gpu=3) == "job"
    assert cluster.fail(1, Component.HOST) == "job"
    table = cluster.gpu_health()
    assert list(table[0]) == ["healthy"] * 3 + ["repairing"] + ["healthy"] * 4
    assert list(table[1]) == ["repairing"] * 8
    assert cluster.owner[0] is None and not cluster.usable(0) and not cluster.usable(1)
    assert cluster.free_count(spares=True) == 1
    env.run(until=30 * 86_400)  # exponential repairs with means of 48 h and 24 h: both back by now
    assert cluster.health[:2] == [Health.HEALTHY, Health.HEALTHY] and cluster.free_count() == 2
    hours = cluster.gpu_hours()
    assert hours["used"] == 0.0 and sum(hours.values()) == pytest.approx(3 * 8 * 30 * 24)


def test_software_failures_restart_on_the_same_nodes_hardware_failures_replace() -> None:
    repair_s = {"gpu": 4 * 3600, "network": 3600, "host": 2 * 3600}
    spec = small_spec(2, spare_nodes=2, scale=MANY_FAILURES, repair_s=repair_s, jobs=[job("j", 16, 3e10)])
    result = simulate(spec, 6, seed=1)  # ~40 hits, ~6 of them software (15 % of Llama 3 Table 5)
    software = {s.name for s in failure_mix() if s.component is Component.SOFTWARE}
    events = result.events
    hits = [i for i, e in enumerate(events) if e.kind is EventKind.FAILURE and e.job == "j"]
    assert len(hits) >= 5
    saw_software = replaced_at_once = not_replaced = 0
    for i in hits:
        failure = events[i]
        later = [e for e in events[i + 1 :] if e.time_s == failure.time_s]
        replaced = any(e.kind is EventKind.REPLACE for e in later)
        if failure.category in software:
            saw_software += 1
            assert not replaced and failure.gpu is None
        elif replaced:
            replaced_at_once += 1
        else:
            not_replaced += 1  # both spares were out: the job waits for a repair
    (r,) = result.jobs
    assert saw_software and replaced_at_once
    assert (r.waiting_s > 0) == (not_replaced > 0)
    assert r.interruptions == sum(r.interruptions_by_category.values())
    assert set(r.interruptions_by_component) <= {c.value for c in Component}
