"""A training job as a SimPy process: queue, launch, compute in checkpointed chunks, fail, restart, finish.

Time advances a window of up to `WINDOW_CHUNKS` chunks per SimPy event, not one event per step: chunk i
holds k_i steps (k = checkpoint interval / step time, Young/Daly by default) and lasts
k_i · step_time_s · m_i + checkpoint_write_s, m_i the straggler and degraded-node multiplier. A failure
(a SimPy interrupt) at elapsed time e into the window keeps every chunk whose checkpoint completed by e
and loses the rest (the work since the last checkpoint, including an unfinished checkpoint write); the job
then pays `restart_s` (detection, relaunch, NCCL init, checkpoint load; `twin.perf.reliability`), after
waiting for replacement nodes if it lost one. Progress never exceeds the target: the last chunk is cut.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Generator
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from twin.perf.reliability import Component
from twin.sim.log import EventKind, EventLog
from twin.sim.power import PowerMeter, busy_node_power_w, idle_node_power_w
from twin.sim.spec import JobProgress, JobSpec, SimCluster
from twin.sim.stragglers import StragglerModel

if TYPE_CHECKING:
    from twin.sim.cluster import Cluster
    from twin.sim.scheduler import Scheduler

# Chunks planned per SimPy timeout. Performance only: a failure ends the window early, and the straggler
# draws of unreached chunks are discarded, so results do not depend on it in distribution.
WINDOW_CHUNKS = 512


class JobPhase(StrEnum):
    PENDING = "pending"  # not arrived yet
    QUEUED = "queued"  # waiting for its first allocation
    WAITING = "waiting"  # lost a node, waiting for a replacement (keeps the rest)
    RESTARTING = "restarting"  # launching / restarting from the last checkpoint
    RUNNING = "running"  # computing
    DONE = "done"


class JobRun:
    """One job's state and process. `hit` is how a failure reaches it; the scheduler calls `receive`."""

    def __init__(
        self,
        env: simpy.Environment,
        spec: JobSpec,
        cluster_spec: SimCluster,
        *,
        rng: np.random.Generator,
        meter: PowerMeter,
        log: EventLog,
        stragglers: StragglerModel | None,
        progress: JobProgress | None = None,
    ) -> None:
        self.env, self.spec, self.rng, self.meter, self.log = env, spec, rng, meter, log
        self.stragglers = stragglers
        self.restart_s = cluster_spec.restart_s
        self._gpn = cluster_spec.gpus_per_node
        self._busy_node_w = busy_node_power_w(cluster_spec.gpu, self._gpn, spec.power_per_gpu_w)
        self._idle_node_w = idle_node_power_w(cluster_spec.gpu, self._gpn)
        self.cluster: Cluster | None = None
        self.scheduler: Scheduler | None = None
        self.nodes: set[int] = set()
        done = progress.steps_done if progress else 0
        since = progress.steps_since_checkpoint if progress else 0
        running = bool(progress and progress.nodes)
        self.phase = JobPhase.RUNNING if running else JobPhase.PENDING
        self.ckpt_steps = done - since  # durable progress (a queued job resumes from its checkpoint)
        self.uncheckpointed = since if running else 0  # computed, not yet checkpointed
        self.submit_s: float | None = 0.0 if running else None
        self.start_s: float | None = 0.0 if running else None
        self.finish_s: float | None = None
        self.interruptions: Counter[str] = Counter()
        self.interruptions_by_component: Counter[str] = Counter()
        self.lost_work_s = 0.0
        self.restart_total_s = 0.0
        self.waiting_s = 0.0
        self.checkpoints = 0
        self.need_launch = not running
        self._interrupt_pending = False
        self._started = False
        self._wake: simpy.Event | None = None
        self._held_node_s = 0.0
        self._held_since = 0.0
        # The open window while computing: start time, steps, cumulative end times, compute times.
        self._window: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.process: simpy.Process | None = None

    # --- queries -------------------------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def missing(self) -> int:
        return self.spec.nodes - len(self.nodes)

    def steps_now(self) -> tuple[int, int]:
        """(checkpointed steps, computed steps) at the current time, counting the open window."""
        ckpt, computed = self.ckpt_steps, self.ckpt_steps + self.uncheckpointed
        if self._window is not None and self.phase is JobPhase.RUNNING:
            start, steps, ends, compute = self._window
            elapsed = self.env.now - start
            n = int(np.searchsorted(ends, elapsed, side="right"))
            if n:
                ckpt += int(steps[:n].sum()) + self.uncheckpointed
                computed = ckpt
            if n < steps.size:
                begin = ends[n - 1] if n else 0.0
                fraction = min(1.0, max(0.0, (elapsed - begin) / compute[n]))
                computed += math.floor(fraction * steps[n])
        return ckpt, computed

    def estimated_remaining_s(self) -> float:
        """Failure-free time to finish (for backfill): launch if pending, then compute and checkpoints."""
        ckpt, _ = self.steps_now()
        left = self.spec.target_steps - ckpt
        per_step = self.spec.step_time_s * (self.stragglers.mean if self.stragglers else 1.0)
        chunks = math.ceil(left / self.spec.steps_per_checkpoint)
        return (
            (self.restart_s if self.need_launch else 0.0)
            + left * per_step
            + chunks * self.spec.checkpoint_write_s
        )

    def held_gpu_hours(self) -> float:
        return (self._held_node_s + len(self.nodes) * (self.env.now - self._held_since)) * self._gpn / 3600.0

    # --- called by the scheduler and the failure dispatcher -------------------------------------------

    def receive(self, nodes: list[int]) -> None:
        """New nodes: the first allocation (START) or replacements (REPLACE)."""
        first = self.start_s is None
        self._hold(lambda: self.nodes.update(nodes))
        if first:
            self.start_s = self.env.now
            self.log.record(self.env.now, EventKind.START, job=self.job_id, nodes=tuple(nodes))
        else:
            for node in nodes:
                self.log.record(self.env.now, EventKind.REPLACE, job=self.job_id, node=node, nodes=(node,))
        if self._wake is not None and not self._wake.triggered and self.missing <= 0:
            self._wake.succeed()

    def adopt(self, nodes: tuple[int, ...]) -> None:
        """Nodes a job of the initial state is already running on (logged as its START at time 0)."""
        self._hold(lambda: self.nodes.update(nodes))
        self.log.record(self.env.now, EventKind.START, job=self.job_id, nodes=tuple(nodes))

    def hit(self, node: int, category: str, component: Component) -> bool:
        """A failure on one of this job's nodes. Hardware: the node is gone. Interrupts a running job."""
        if component is not Component.SOFTWARE:
            self._hold(lambda: self.nodes.discard(node))
        if self.phase not in (JobPhase.RUNNING, JobPhase.RESTARTING) or self._interrupt_pending:
            return False
        self.interruptions[category] += 1
        self.interruptions_by_component[component.value] += 1
        if not self._started or self.process is None:  # a fork's job hit at time 0, before its first resume
            self.need_launch = True
            self._lose_uncheckpointed(category)
            return True
        self._interrupt_pending = True
        self.process.interrupt(category)
        return True

    # --- the process ---------------------------------------------------------------------------------

    def run(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        self._started = True
        assert self.scheduler is not None  # wired by the simulation
        if self.start_s is None:
            if self.spec.arrival_s > env.now:
                yield env.timeout(self.spec.arrival_s - env.now)
            self.submit_s = env.now
            self.log.record(env.now, EventKind.SUBMIT, job=self.job_id)
            if self._progress() < self.spec.target_steps:
                self._set_phase(JobPhase.QUEUED)
                self.scheduler.submit(self)
                yield from self._wait_for_nodes()
        while self._progress() < self.spec.target_steps:
            if self.missing > 0:
                self._set_phase(JobPhase.WAITING)
                yield from self._wait_for_nodes()
            if self.need_launch:
                self._set_phase(JobPhase.RESTARTING)
                began = env.now
                try:
                    yield env.timeout(self.restart_s)
                    self.need_launch = False
                except simpy.Interrupt as interrupt:
                    self._interrupt_pending = False
                    self.log.record(
                        env.now,
                        EventKind.INTERRUPT,
                        job=self.job_id,
                        category=str(interrupt.cause),
                        value=0.0,
                    )
                self.restart_total_s += env.now - began
                continue
            yield from self._compute()
        self._finish()

    def _progress(self) -> int:
        return self.ckpt_steps + self.uncheckpointed

    def _finish(self) -> None:
        assert self.scheduler is not None and self.cluster is not None
        self.ckpt_steps, self.uncheckpointed = self._progress(), 0
        self.finish_s = self.env.now
        self._set_phase(JobPhase.DONE)
        self.log.record(self.env.now, EventKind.FINISH, job=self.job_id, value=float(self.ckpt_steps))
        nodes = sorted(self.nodes)
        self._hold(self.nodes.clear)
        self.scheduler.finished(self)
        if nodes:
            self.cluster.release(nodes)

    def _wait_for_nodes(self) -> Generator[simpy.Event, Any, None]:
        began = self.env.now
        while self.missing > 0:
            self._wake = self.env.event()
            try:
                yield self._wake
            except simpy.Interrupt:  # not running: nothing to lose
                self._interrupt_pending = False
        self._wake = None
        self.waiting_s += self.env.now - began

    def _compute(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        self._set_phase(JobPhase.RUNNING)
        self.log.record(env.now, EventKind.RESUME, job=self.job_id, value=float(self._progress()))
        steps, ends, compute = self._plan()
        start = env.now
        self._window = (start, steps, ends, compute)
        try:
            yield env.timeout(float(ends[-1]))
            done = steps.size
        except simpy.Interrupt as interrupt:
            self._interrupt_pending = False
            elapsed = env.now - start
            done = int(np.searchsorted(ends, elapsed, side="right"))
            lost = elapsed - (float(ends[done - 1]) if done else 0.0)
            if not done:
                lost += self.uncheckpointed * self.spec.step_time_s
            self.lost_work_s += lost
            self.need_launch = True
            self.log.record(
                env.now, EventKind.INTERRUPT, job=self.job_id, category=str(interrupt.cause), value=lost
            )
        self._window = None
        if done:
            self.ckpt_steps += int(steps[:done].sum()) + self.uncheckpointed
            self.checkpoints += done
        self.uncheckpointed = 0  # checkpointed with the first chunk, or lost with it

    def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steps, cumulative end times and compute times of the next window's chunks."""
        spec = self.spec
        k = spec.steps_per_checkpoint
        remaining = spec.target_steps - self.ckpt_steps - self.uncheckpointed
        first = min(remaining, max(1, k - self.uncheckpointed))
        n = min(WINDOW_CHUNKS, 1 + max(0, math.ceil((remaining - first) / k)))
        steps = np.full(n, k, dtype=np.int64)
        steps[0] = first
        overshoot = int(steps.sum()) - remaining
        if overshoot > 0:
            steps[-1] -= overshoot
        multiplier = np.full(n, 1.0)
        if self.stragglers is not None:
            multiplier = self.stragglers.chunk_multipliers(self.rng, steps)
        assert self.cluster is not None
        slow = max((self.cluster.slowdown[node] for node in self.nodes), default=1.0)
        compute = steps * spec.step_time_s * multiplier * slow
        return steps, np.cumsum(compute + spec.checkpoint_write_s), compute

    def _lose_uncheckpointed(self, category: str) -> None:
        lost = self.uncheckpointed * self.spec.step_time_s
        self.lost_work_s += lost
        self.uncheckpointed = 0
        self.log.record(self.env.now, EventKind.INTERRUPT, job=self.job_id, category=category, value=lost)

    # --- bookkeeping ---------------------------------------------------------------------------------

    def _set_phase(self, phase: JobPhase) -> None:
        self.phase = phase
        self._update_power()

    def _hold(self, change: Any) -> None:
        """Apply a change to the node set, integrating held node-seconds first."""
        now = self.env.now
        self._held_node_s += len(self.nodes) * (now - self._held_since)
        self._held_since = now
        change()
        self._update_power()

    def _update_power(self) -> None:
        per_node = self._busy_node_w if self.phase is JobPhase.RUNNING else self._idle_node_w
        self.meter.set(f"job:{self.job_id}", len(self.nodes) * per_node, self.env.now)
