"""Failures: one superposed Poisson process for the whole cluster, then a victim and a root cause.

Each root cause c of Llama 3 Table 5 (`twin.perf.reliability.failure_mix`) strikes every GPU as an
independent Poisson process of rate λ_c per GPU-hour. The superposition over G GPUs and all causes is a
Poisson process of rate Λ = G · Σ_c λ_c, and given an event the GPU is uniform and the cause is c with
probability λ_c / Σλ (Poisson splitting) — so one exponential clock replaces G × 18 processes. Draws come
in batches from the generator passed in (fast, and deterministic for a seed).

What a failure does (`FailureDispatcher`):
- gpu / network / host: the whole node goes out for repair (`Cluster.fail`); a job on it is interrupted
  and loses the node (correlated: all 8 GPUs of the node leave the job);
- software: nothing is replaced; a job running on the node is interrupted and restarts on the same nodes;
  on a node without a running job it has no effect (software faults are faults of a job).
A node already out of service does not fail again (its events are dropped: thinning, still Poisson).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Mapping
from typing import Any

import numpy as np
import simpy

from twin.perf.reliability import SECONDS_PER_HOUR, Component, FailureShare
from twin.sim.cluster import Cluster
from twin.sim.job import JobPhase, JobRun
from twin.sim.log import EventKind, EventLog
from twin.sim.scheduler import Scheduler

DRAW_BATCH = 1024  # events drawn per refill (performance only)


class FailureSampler:
    """Next (gap s, node, GPU in node, cause index) of the superposed failure process."""

    def __init__(
        self, mix: tuple[FailureShare, ...], nodes: int, gpus_per_node: int, rng: np.random.Generator
    ) -> None:
        self.mix = mix
        self.nodes, self.gpus_per_node, self.rng = nodes, gpus_per_node, rng
        per_gpu_s = sum(share.rate_per_gpu_hour for share in mix) / SECONDS_PER_HOUR
        self.rate_per_s = per_gpu_s * nodes * gpus_per_node
        rates = np.array([share.rate_per_gpu_hour for share in mix])
        self._cdf = np.cumsum(rates / rates.sum())
        self._cdf[-1] = 1.0
        self._batch: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._i = DRAW_BATCH

    def draw(self) -> tuple[float, int, int, int]:
        if self._i >= DRAW_BATCH:
            rng = self.rng
            self._batch = (
                rng.exponential(1.0 / self.rate_per_s, DRAW_BATCH),
                rng.integers(0, self.nodes, DRAW_BATCH),
                rng.integers(0, self.gpus_per_node, DRAW_BATCH),
                np.searchsorted(self._cdf, rng.random(DRAW_BATCH), side="right"),
            )
            self._i = 0
        assert self._batch is not None
        gaps, nodes, gpus, causes = self._batch
        i = self._i
        self._i += 1
        return float(gaps[i]), int(nodes[i]), int(gpus[i]), int(causes[i])


def failure_process(
    env: simpy.Environment, sampler: FailureSampler, handle: Callable[[int, int, int], None]
) -> Generator[simpy.Event, Any, None]:
    """Run the superposed process forever, calling `handle(node, gpu, cause index)` at each event."""
    while True:
        gap, node, gpu, cause = sampler.draw()
        yield env.timeout(gap)
        handle(node, gpu, cause)


class FailureDispatcher:
    """Applies one failure to the cluster and the job it hits; counts what took effect, by cause."""

    def __init__(
        self,
        env: simpy.Environment,
        mix: tuple[FailureShare, ...],
        cluster: Cluster,
        scheduler: Scheduler,
        jobs: Mapping[str, JobRun],
        log: EventLog,
    ) -> None:
        self.env, self.mix, self.cluster, self.scheduler, self.jobs, self.log = (
            env,
            mix,
            cluster,
            scheduler,
            jobs,
            log,
        )
        self.effective: Counter[str] = Counter()  # failures that took a node out or hit a running job
        self.dropped = 0  # events on nodes already out of service, or software faults with no job

    def __call__(self, node: int, gpu: int, cause: int) -> None:
        share = self.mix[cause]
        self.fail(node, share.name, share.component, gpu)

    def fail(self, node: int, category: str, component: Component, gpu: int | None = None) -> None:
        """Apply a failure of `component` (root cause `category`) on `node` now."""
        cluster = self.cluster
        owner = cluster.owner[node]
        if not (cluster.usable(node) or owner is not None):
            self.dropped += 1
            return
        job = self.jobs[owner] if owner is not None else None
        if component is Component.SOFTWARE:
            if job is None or job.phase not in (JobPhase.RUNNING, JobPhase.RESTARTING):
                self.dropped += 1
                return
            self.effective[category] += 1
            self.log.record(self.env.now, EventKind.FAILURE, job=owner, node=node, category=category)
            job.hit(node, category, component)
            return
        self.effective[category] += 1
        gpu_index = gpu if component is Component.GPU else None
        cluster.fail(node, component, gpu_index)
        self.log.record(
            self.env.now, EventKind.FAILURE, job=owner, node=node, category=category, gpu=gpu_index
        )
        if job is not None:
            job.hit(node, category, component)
            self.scheduler.schedule()
