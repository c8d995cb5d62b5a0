"""Nodes and their GPUs: health, ownership, free pools, repairs, GPU-hour accounting and idle power.

Every hardware failure takes its whole node out of service (jobs are gang-allocated on whole nodes; a GPU
is swapped with its node drained), for an exponential repair time with the component's mean
(`SimCluster.repair_s`; the exponential is the usual memoryless repair model of availability analysis).
A node is in exactly one accounting bucket at any time, so used + idle + down = total GPU-hours:
- used: held by a job (whatever the job is doing; a stale node a job holds stays with it);
- idle: usable (healthy or degraded) and free, spares included;
- down: failed, repairing or stale, and free.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import simpy

from twin.errors import TwinError
from twin.perf.reliability import SECONDS_PER_HOUR, Component
from twin.sim.log import EventKind, EventLog
from twin.sim.power import PowerMeter, idle_node_power_w
from twin.sim.spec import Health, NodeCondition, SimCluster

USABLE = frozenset({Health.HEALTHY, Health.DEGRADED})
IDLE_POOL_KEY = "cluster:idle"


class Cluster:
    """The node table. Nodes `0..spec.nodes-1` are schedulable; the rest are hot spares."""

    def __init__(
        self,
        env: simpy.Environment,
        spec: SimCluster,
        rng: np.random.Generator,
        meter: PowerMeter,
        log: EventLog,
    ) -> None:
        self.env, self.spec, self.rng, self.meter, self.log = env, spec, rng, meter, log
        n = spec.total_nodes
        self.health: list[Health] = [Health.HEALTHY] * n
        self.slowdown: list[float] = [1.0] * n
        self.owner: list[str | None] = [None] * n
        self.back_at_s: list[float] = [0.0] * n  # when an out-of-service node returns
        self.failed_gpu: dict[int, int] = {}  # node → GPU index, for GPU-component repairs
        self._version: list[int] = [0] * n  # invalidates superseded return-to-service callbacks
        self.free_regular: set[int] = set(range(spec.nodes))
        self.free_spare: set[int] = set(range(spec.nodes, n))
        self.on_capacity: Callable[[], None] = lambda: None  # the scheduler hooks in here
        self._count = {"used": 0, "idle": n, "down": 0}
        self._node_s = {"used": 0.0, "idle": 0.0, "down": 0.0}
        self._since = 0.0
        self._stale_free = 0
        self._idle_node_w = idle_node_power_w(spec.gpu, spec.gpus_per_node)
        self._update_idle_power()

    # --- queries -------------------------------------------------------------------------------------

    def usable(self, node: int) -> bool:
        return self.health[node] in USABLE

    def is_spare(self, node: int) -> bool:
        return node >= self.spec.nodes

    def free_count(self, *, spares: bool = False) -> int:
        return len(self.free_regular) + (len(self.free_spare) if spares else 0)

    def repairs_pending(self) -> list[tuple[float, int]]:
        """(return time, node) of schedulable nodes out of service and free (for backfill shadow times)."""
        return sorted(
            (self.back_at_s[n], n)
            for n in range(self.spec.nodes)
            if not self.usable(n) and self.owner[n] is None
        )

    def gpu_health(self) -> np.ndarray:
        """Per-GPU health, shape (nodes, gpus_per_node): a node's health, except that for a GPU repair only
        the faulty GPU shows `repairing` (its siblings are fine, though drained with their node)."""
        table = np.array([[h.value] * self.spec.gpus_per_node for h in self.health], dtype=object)
        for node, gpu in self.failed_gpu.items():
            table[node, :] = Health.HEALTHY.value
            table[node, gpu] = self.health[node].value
        return table

    def gpu_hours(self) -> dict[str, float]:
        """GPU-hours per bucket (used, idle, down) from time 0 to now."""
        self._advance()
        scale = self.spec.gpus_per_node / SECONDS_PER_HOUR
        return {k: v * scale for k, v in self._node_s.items()}

    # --- allocation ----------------------------------------------------------------------------------

    def take(self, job_id: str, count: int, *, spares: bool) -> list[int]:
        """Give `job_id` up to `count` free usable nodes, lowest ids first (spares after regular nodes)."""
        chosen = sorted(self.free_regular)[:count]
        if spares and len(chosen) < count:
            chosen += sorted(self.free_spare)[: count - len(chosen)]
        for node in chosen:
            self._assign(job_id, node)
        return chosen

    def assign(self, job_id: str, node: int) -> None:
        """Give a specific free usable node to `job_id` (initial state: jobs already running there)."""
        if self.owner[node] is not None or not self.usable(node):
            raise TwinError(
                f"node {node} is not free and usable (owner {self.owner[node]}, {self.health[node]})."
            )
        self._assign(job_id, node)

    def _assign(self, job_id: str, node: int) -> None:
        (self.free_spare if self.is_spare(node) else self.free_regular).discard(node)
        self.owner[node] = job_id
        self._move("idle", "used")

    def release(self, nodes: list[int]) -> None:
        """A job hands its nodes back."""
        for node in nodes:
            self.owner[node] = None
            if self.usable(node):
                (self.free_spare if self.is_spare(node) else self.free_regular).add(node)
                self._move("used", "idle")
            else:  # a stale node its job kept
                self._stale_free += 1
                self._move("used", "down")
        self.on_capacity()

    # --- health --------------------------------------------------------------------------------------

    def fail(self, node: int, component: Component, gpu: int | None = None) -> str | None:
        """Take `node` out of service for a repair of `component`; returns the job that held it, if any."""
        owner = self.owner[node]
        self._out_of_service(node, Health.REPAIRING, self.rng.exponential(self.spec.repair_s(component)))
        if component is Component.GPU and gpu is not None:
            self.failed_gpu[node] = gpu
        return owner

    def apply(self, cond: NodeCondition) -> None:
        """Apply an initial-state condition at time 0 (FAILED nodes held by a job go through `fail`)."""
        node = cond.node
        if cond.health is Health.DEGRADED:
            self.health[node] = Health.DEGRADED
            self.slowdown[node] = cond.slowdown
            if cond.remaining_s is not None and math.isfinite(cond.remaining_s):
                self._call_back(node, cond.remaining_s)
        elif cond.health in (Health.FAILED, Health.REPAIRING, Health.STALE):
            default = self.spec.repair_s(cond.component) if cond.health is not Health.STALE else 0.0
            remaining = default if cond.remaining_s is None else cond.remaining_s
            self._out_of_service(node, cond.health, remaining)

    def _out_of_service(self, node: int, health: Health, duration_s: float) -> None:
        owner = self.owner[node]
        was_usable = self.usable(node)
        if health is Health.STALE and owner is not None:
            self.health[node] = health  # a job keeps a stale node it holds (telemetry gap, not a failure)
        else:
            if owner is not None:
                self.owner[node] = None
                self._move("used", "down")
            elif was_usable:
                (self.free_spare if self.is_spare(node) else self.free_regular).discard(node)
                self._move("idle", "down")
            elif self.health[node] is Health.STALE:
                self._stale_free -= 1
            if health is Health.STALE:
                self._stale_free += 1
            self.health[node] = health
        self.slowdown[node] = 1.0
        self.back_at_s[node] = self.env.now + duration_s
        self._call_back(node, duration_s)
        self._update_idle_power()

    def _call_back(self, node: int, delay_s: float) -> None:
        self._version[node] += 1
        version = self._version[node]
        event = self.env.timeout(delay_s)
        event.callbacks.append(lambda _e: self._back_in_service(node, version))

    def _back_in_service(self, node: int, version: int) -> None:
        if version != self._version[node]:
            return
        previous = self.health[node]
        self.health[node] = Health.HEALTHY
        self.slowdown[node] = 1.0
        self.failed_gpu.pop(node, None)
        kind = EventKind.REPAIRED if previous in (Health.FAILED, Health.REPAIRING) else EventKind.RECOVERED
        self.log.record(self.env.now, kind, node=node, job=self.owner[node])
        if self.owner[node] is None and previous not in USABLE:
            if previous is Health.STALE:
                self._stale_free -= 1
            (self.free_spare if self.is_spare(node) else self.free_regular).add(node)
            self._move("down", "idle")
            self._update_idle_power()
            self.on_capacity()

    # --- accounting ----------------------------------------------------------------------------------

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._since
        if dt > 0:
            for bucket, count in self._count.items():
                self._node_s[bucket] += count * dt
            self._since = now

    def _move(self, source: str, target: str) -> None:
        self._advance()
        self._count[source] -= 1
        self._count[target] += 1
        if "idle" in (source, target):
            self._update_idle_power()

    def _update_idle_power(self) -> None:
        nodes = self._count["idle"] + self._stale_free
        self.meter.set(IDLE_POOL_KEY, nodes * self._idle_node_w, self.env.now)
