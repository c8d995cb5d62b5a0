"""FIFO scheduling with EASY backfill, gang allocation on whole nodes, and replacement of failed nodes.

Order of business whenever capacity or the queue changes (`schedule`):
1. Running jobs that lost nodes get replacements first: free schedulable nodes, then hot spares (a job
   keeps its healthy nodes while it waits, as a large training job does).
2. The queue head starts as soon as enough free schedulable nodes exist (FIFO; spares never start jobs).
3. EASY backfill (Lifka 1995, "The ANL/IBM SP scheduling system"; Mu'alem & Feitelson 2001, IEEE TPDS
   12(6)): when the head cannot start, its shadow time is the earliest time enough nodes free up,
   assuming running jobs end at their failure-free estimates and nodes under repair return on time. A
   later job starts now if it fits in the free nodes and either ends (by its own estimate) before the
   shadow time or uses only nodes the head will not need then. The head is never delayed by a backfill
   under those estimates.
"""

from __future__ import annotations

import math

import simpy

from twin.sim.cluster import Cluster
from twin.sim.job import JobRun


class Scheduler:
    """The queue and the set of jobs holding nodes (in start order)."""

    def __init__(self, env: simpy.Environment, cluster: Cluster) -> None:
        self.env = env
        self.cluster = cluster
        self.queue: list[JobRun] = []
        self.active: dict[str, JobRun] = {}
        self.backfilled = 0
        cluster.on_capacity = self.schedule

    def submit(self, job: JobRun) -> None:
        self.queue.append(job)
        self.schedule()

    def adopt(self, job: JobRun, nodes: tuple[int, ...]) -> None:
        """A job already running at time 0 on `nodes` (initial state)."""
        for node in nodes:
            self.cluster.assign(job.job_id, node)
        job.adopt(nodes)
        self.active[job.job_id] = job

    def finished(self, job: JobRun) -> None:
        self.active.pop(job.job_id, None)

    def schedule(self) -> None:
        for job in self.active.values():
            if job.missing > 0 and self.cluster.free_count(spares=True):
                got = self.cluster.take(job.job_id, job.missing, spares=True)
                if got:
                    job.receive(got)
        while self.queue and self.queue[0].spec.nodes <= self.cluster.free_count():
            self._start(self.queue.pop(0))
        if len(self.queue) > 1 and self.cluster.free_count():
            self._backfill()

    def _start(self, job: JobRun) -> None:
        self.active[job.job_id] = job
        job.receive(self.cluster.take(job.job_id, job.spec.nodes, spares=False))

    def shadow(self, needed: int) -> tuple[float, int]:
        """(shadow time, extra nodes then): when `needed` free schedulable nodes are expected, and how many
        nodes beyond `needed` will be free at that time. (inf, 0) when never."""
        now = self.env.now
        releases = [
            (now + job.estimated_remaining_s(), sum(1 for n in job.nodes if not self.cluster.is_spare(n)))
            for job in self.active.values()
        ]
        releases += [(t, 1) for t, _ in self.cluster.repairs_pending()]
        available = self.cluster.free_count()
        for t, count in sorted(releases):
            available += count
            if available >= needed:
                return t, available - needed
        return math.inf, 0

    def _backfill(self) -> None:
        shadow_s, extra = self.shadow(self.queue[0].spec.nodes)
        for job in list(self.queue[1:]):
            need = job.spec.nodes
            if need > self.cluster.free_count():
                continue
            ends_in_time = self.env.now + job.estimated_remaining_s() <= shadow_s
            if ends_in_time or need <= extra:
                if not ends_in_time:
                    extra -= need
                self.queue.remove(job)
                self.backfilled += 1
                self._start(job)
