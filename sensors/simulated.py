"""A seeded simulated GPU training cluster: the `Source` the demo and the benchmark run without hardware.

N nodes × G GPUs of one type (`GpuProfile`) run training jobs (`JobSpec`: whole nodes, a
`WorkloadProfile` from the twin's performance model); other nodes idle. Each poll, `read(now_s)` returns
one `NodeSample` per reporting node, the jobs' events in (previous poll, now_s] and the silent nodes.

- Power follows the step's phases: a busy GPU's power is its phase's level at the instant `now_s` within
  the step (times a fixed per-GPU gain, shifted by a per-GPU step skew, plus per-sample noise), so it
  oscillates with the step period and its time average is the workload's `power_per_gpu_w`. Idle GPUs
  draw a level from the idle band of the Acme A100 fleet (`sensors.fleet_profile`). A power cap (the
  workload's, or `set_power_cap`) holds power at the cap, lowers the SM clock and stretches the step.
- Energy integrates the noise-free power exactly between polls, whatever the poll rate.
- Temperature is a first-order lag, dT/dt = (T_ss(P) − T) / τ, toward a steady state linear in power.
- Failures and their precursors come from `sensors.sim_failures`; jobs on a failed node emit `fail`.

A node whose GPUs have all fallen off the bus sends no sample (it is not silent: its host still runs).
Deterministic: the same seed (or generator state) and the same sequence of `now_s` give the same output.
No wall clock and no global random state are used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np

from sensors.contract import MAX_GPUS_PER_NODE, JobEvent, check_segment
from sensors.fleet_profile import idle_power_w
from sensors.sim_failures import DEFAULT_PRECURSOR_LEAD_S, JOB_ONLY_PER_GPU_S, FailureModel
from sensors.sim_jobs import JobRun, JobState, phase_table
from sensors.sim_profiles import (
    A100_SXM_80GB,
    GpuProfile,
    JobSpec,
    PhaseProfile,
    SimulationError,
    WorkloadProfile,
    default_jobs,
    require_finite,
    require_int,
)
from sensors.sim_telemetry import Telemetry
from sensors.source import SourceReading

__all__ = [
    "A100_SXM_80GB",
    "DEFAULT_RESTART_DELAY_S",
    "GpuProfile",
    "JobSpec",
    "PhaseProfile",
    "SimulatedCluster",
    "SimulationError",
    "WorkloadProfile",
]

# Time from a failure to the job running again from its last checkpoint (detection, rescheduling, NCCL
# setup, checkpoint load). Assumption shared with twin.perf.reliability.DEFAULT_RESTART_S (10 min), which
# gives Llama 3 405B the ~90 % effective training time its report states.
DEFAULT_RESTART_DELAY_S: Final = 600.0


class SimulatedCluster:
    """A simulated cluster implementing `sensors.source.Source` (`name == "simulated"`).

    `jobs=None` runs the default fleet: half of the nodes (`fleet_profile.BUSY_FLEET_FRACTION`) in
    4-node jobs of the reference workload (`sim_profiles.default_workload`), already running at the first
    read; `jobs=()` leaves every node idle. `rng` (a seeded `numpy.random.Generator`) takes precedence
    over `seed`. `failure_rate_scale` multiplies every failure rate (0 disables failures);
    `precursor_lead_s` is the mean duration of a correctable-error burst; `restart_delay_s=None` leaves
    failed jobs failed. `step_event_every=K` emits a step event every K steps. `power_cap_w` caps every
    GPU (W); `set_power_cap` changes one node's cap.
    """

    def __init__(
        self,
        nodes: int = 8,
        gpus_per_node: int = 8,
        gpu: GpuProfile = A100_SXM_80GB,
        jobs: Sequence[JobSpec] | None = None,
        *,
        seed: int = 0,
        rng: np.random.Generator | None = None,
        node_prefix: str = "n",
        failure_rate_scale: float = 1.0,
        precursor_lead_s: float = DEFAULT_PRECURSOR_LEAD_S,
        restart_delay_s: float | None = DEFAULT_RESTART_DELAY_S,
        step_event_every: int = 1,
        power_cap_w: float | None = None,
    ) -> None:
        require_int("nodes", nodes, 1)
        require_int("gpus_per_node", gpus_per_node, 1)
        if gpus_per_node > MAX_GPUS_PER_NODE:
            raise SimulationError(f"gpus_per_node(={gpus_per_node}) must be <= {MAX_GPUS_PER_NODE}.")
        if not isinstance(gpu, GpuProfile):
            raise SimulationError(f"gpu(={gpu!r}) must be a GpuProfile.")
        require_int("step_event_every", step_event_every, 1)
        if restart_delay_s is not None:
            require_finite("restart_delay_s", restart_delay_s, minimum=0.0)
        self._rng = rng if rng is not None else np.random.default_rng(seed)
        width = max(2, len(str(nodes - 1)))
        self.node_names: tuple[str, ...] = tuple(
            check_segment("node", f"{node_prefix}{i:0{width}d}") for i in range(nodes)
        )
        self._node_index = {name: i for i, name in enumerate(self.node_names)}
        self.gpu = gpu
        self.gpus_per_node = gpus_per_node
        self._restart_delay_s = restart_delay_s
        self._node_cap = np.full(nodes, np.nan)
        if power_cap_w is not None:
            self._node_cap[:] = self._check_cap(power_cap_w)
        self._cap_changed: set[int] = set()
        self._owner = np.full(nodes, -1, dtype=np.int64)

        idle_w = idle_power_w(self._rng.random(nodes * gpus_per_node), gpu.idle_w, gpu.tdp_w)
        self._telemetry = Telemetry(gpu, nodes, gpus_per_node, idle_w, self._rng)
        self._failures = FailureModel(
            nodes,
            gpus_per_node,
            failure_rate_scale=failure_rate_scale,
            precursor_lead_s=precursor_lead_s,
            rng=self._rng,
        )
        specs = default_jobs(self.node_names, gpu, gpus_per_node) if jobs is None else tuple(jobs)
        self._jobs = [self._make_run(spec, step_event_every) for spec in specs]
        self._prev_s: float | None = None
        self._first_read = True
        self._closed = False

    # --- Source protocol ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return "simulated"

    def close(self) -> None:
        self._closed = True

    def read(self, now_s: float) -> SourceReading:
        """Advance the cluster to `now_s` (unix s, non-decreasing) and report it.

        `samples` carry ts = now_s; `events` are those in (previous now_s, now_s], in time order;
        `silent_nodes` lists every node silent so far, at every poll.
        """
        if self._closed:
            raise SimulationError("read() after close().")
        now_s = require_finite("now_s", now_s)
        if self._prev_s is None:
            self._prev_s = now_s
        elif now_s < self._prev_s:
            raise SimulationError(f"now_s(={now_s}) must be >= the previous read's now_s(={self._prev_s}).")
        prev_s = self._prev_s
        self._telemetry.begin_interval(prev_s, now_s)
        self._apply_cap_changes(prev_s)
        events: list[JobEvent] = []
        for index, job in enumerate(self._jobs):
            events.extend(self._run_job(index, job, prev_s, now_s))
        events.extend(self._apply_failures(prev_s, now_s))
        for job in self._jobs:
            if job.state is JobState.RUNNING:
                self._telemetry.set_busy(job, now_s)
        samples = self._telemetry.finish(now_s, self.node_names, self._failures, self._node_cap)
        self._prev_s = now_s
        self._first_read = False
        events.sort(key=lambda e: e.ts)
        silent = tuple(self.node_names[i] for i in np.flatnonzero(self._failures.node_silent))
        return SourceReading(samples=samples, events=tuple(events), silent_nodes=silent)

    def schedule_gpu_failure(self, node: str, gpu: int, at_s: float, xid: int = 79) -> None:
        """Make `node`'s GPU `gpu` fail at the first read at or after `at_s` (unix s): XID 79, it falls off
        the bus, or XID 48, a double-bit ECC error; the job on it fails as with a drawn failure."""
        if node not in self.node_names:
            raise SimulationError(f"node(={node!r}) is not a node of this cluster.")
        if not 0 <= gpu < self.gpus_per_node:
            raise SimulationError(f"gpu(={gpu}) must be in [0, {self.gpus_per_node}).")
        index = self.node_names.index(node) * self.gpus_per_node + gpu
        self._failures.schedule_gpu_failure(index, at_s, xid)

    # --- commands ----------------------------------------------------------------------------------

    def set_power_cap(self, node: str, power_cap_w: float | None) -> None:
        """Cap every GPU of `node` at `power_cap_w` W (None: remove the cap), from the last read's time.

        A job slows to its most capped node's pace (synchronous training) as `sim_jobs.phase_table` says.
        """
        if node not in self._node_index:
            raise SimulationError(
                f"node(={node!r}) is not one of {self.node_names[0]}…{self.node_names[-1]}."
            )
        i = self._node_index[node]
        self._node_cap[i] = np.nan if power_cap_w is None else self._check_cap(power_cap_w)
        self._cap_changed.add(i)

    # --- internals ---------------------------------------------------------------------------------

    def _check_cap(self, power_cap_w: float) -> float:
        cap = require_finite("power_cap_w", power_cap_w)
        if cap <= self.gpu.idle_w:
            raise SimulationError(
                f"power_cap_w(={power_cap_w}) must be above the GPU's idle power ({self.gpu.idle_w} W)."
            )
        return cap

    def _make_run(self, spec: JobSpec, step_event_every: int) -> JobRun:
        if not isinstance(spec, JobSpec):
            raise SimulationError(f"jobs entry(={spec!r}) must be a JobSpec.")
        check_segment("job_id", spec.job_id)
        unknown = [n for n in spec.nodes if n not in self._node_index]
        if unknown:
            raise SimulationError(f"job {spec.job_id!r} node(={unknown[0]!r}) is not in the cluster.")
        if self._nodes_needed(spec) > len(self.node_names):
            raise SimulationError(
                f"job {spec.job_id!r} needs {self._nodes_needed(spec)} nodes; "
                f"nodes(={len(self.node_names)}) is too few."
            )
        return JobRun(spec, phase_table(spec.workload, self.gpu.idle_w, None), step_event_every)

    def _nodes_needed(self, spec: JobSpec) -> int:
        return len(spec.nodes) or max(1, math.ceil(spec.workload.gpus / self.gpus_per_node))

    def _job_cap(self, nodes: Sequence[int]) -> float | None:
        caps = self._node_cap[list(nodes)]
        return None if np.isnan(caps).all() else float(np.nanmin(caps))

    def _apply_cap_changes(self, at_s: float) -> None:
        if not self._cap_changed:
            return
        for job in self._jobs:
            if job.state is JobState.RUNNING and self._cap_changed.intersection(job.nodes):
                job.retable(at_s, phase_table(job.workload, self.gpu.idle_w, self._job_cap(job.nodes)))
        self._cap_changed.clear()

    def _allocate(self, job: JobRun) -> tuple[int, ...] | None:
        """Nodes for `job`: its preferred nodes that are free and healthy, then the lowest free ones."""
        free = (self._owner < 0) & self._failures.node_healthy()
        preferred = job.nodes or tuple(self._node_index[n] for n in job.spec.nodes)
        chosen = [i for i in preferred if free[i]]
        chosen += [int(i) for i in np.flatnonzero(free) if int(i) not in chosen]
        needed = self._nodes_needed(job.spec)
        return tuple(chosen[:needed]) if len(chosen) >= needed else None

    def _start_time(self, job: JobRun, prev_s: float, now_s: float) -> tuple[float, bool] | None:
        """When `job` (re)starts in this poll and whether it was already running, or None."""
        if job.state is JobState.RESTARTING:
            return (max(job.restart_at_s, prev_s), False) if job.restart_at_s <= now_s else None
        if job.state is not JobState.PENDING:
            return None
        wanted = job.spec.start_s
        if self._first_read and (wanted is None or wanted < now_s):
            return now_s, True  # untimed, or timed before the first read: already running
        if wanted is None or wanted <= prev_s:
            return now_s, False  # it waited for free nodes
        return (wanted, False) if wanted <= now_s else None

    def _run_job(self, index: int, job: JobRun, prev_s: float, now_s: float) -> list[JobEvent]:
        events: list[JobEvent] = []
        start = self._start_time(job, prev_s, now_s)
        if start is not None:
            nodes = self._allocate(job)
            if nodes is not None:
                start_s, running = start
                # A job already running is somewhere in a step, and its GPUs are warm.
                offset = float(self._rng.random()) if running else 0.0
                job.table = phase_table(job.workload, self.gpu.idle_w, self._job_cap(nodes))
                self._owner[list(nodes)] = index
                events.append(job.start(start_s, nodes, tuple(self.node_names[i] for i in nodes), offset))
                if running:
                    self._telemetry.settle(job)
        if job.state is JobState.RUNNING:
            from_s = max(prev_s, job.run_since_s)
            events.extend(job.advance(now_s))
            ended = job.state is not JobState.RUNNING  # advance() may end the job
            self._telemetry.add_busy_energy(job, from_s, events[-1].ts if ended else now_s)
            if ended:
                self._owner[list(job.nodes)] = -1
        return events

    def _apply_failures(self, prev_s: float, now_s: float) -> list[JobEvent]:
        outcome = self._failures.advance(prev_s, now_s)
        reasons: dict[int, str] = {}
        g = self.gpus_per_node
        for gpu_index in outcome.dbe_gpus.tolist():
            node = gpu_index // g
            reasons.setdefault(
                node, f"XID 48: double-bit ECC error on {self.node_names[node]} GPU {gpu_index % g}"
            )
        for gpu_index in outcome.off_bus_gpus.tolist():
            node = gpu_index // g
            reasons.setdefault(node, f"XID 79: {self.node_names[node]} GPU {gpu_index % g} fell off the bus")
        for node in outcome.silent_nodes.tolist():
            reasons.setdefault(node, f"node {self.node_names[node]} stopped responding")
        events: list[JobEvent] = []
        running = [j for j in self._jobs if j.state is JobState.RUNNING]
        dt = now_s - prev_s
        draws = self._rng.random(len(running)) if running and dt > 0 else np.ones(len(running))
        for job, u in zip(running, draws.tolist(), strict=True):
            reason = next((reasons[n] for n in job.nodes if n in reasons), None)
            gpus = len(job.nodes) * g
            if reason is None and u < -math.expm1(-JOB_ONLY_PER_GPU_S * gpus * self._failures.scale * dt):
                reason = "interrupted without a hardware fault (software, NCCL timeout or network)"
            if reason is not None:
                self._owner[list(job.nodes)] = -1
                events.append(job.fail(now_s, reason, self._restart_delay_s))
        return events
