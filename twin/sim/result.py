"""What one replication returns: per-job results, cluster totals, the event log and the power trace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from twin.errors import TwinError
from twin.perf.reliability import SECONDS_PER_HOUR
from twin.sim.log import Event
from twin.sim.power import binned_mean_power_w


@dataclass(frozen=True, slots=True)
class JobResult:
    """One job at its finish or at the horizon. Times in s from the run's start; energy facility kWh."""

    job_id: str
    gpus: int
    submit_s: float | None
    start_s: float | None
    finish_s: float | None  # None: not finished by the horizon
    target_steps: int
    steps_done: int  # computed, including steps not yet checkpointed
    steps_checkpointed: int
    tokens_done: float  # checkpointed steps × tokens per step
    progress: float  # steps_checkpointed / target_steps
    interruptions: int
    interruptions_by_category: dict[str, int]
    interruptions_by_component: dict[str, int]
    lost_work_s: float  # wall time of work thrown away (since the last checkpoint, at each interruption)
    restart_s: float  # time spent launching and restarting
    waiting_s: float  # time queued or waiting for replacement nodes
    checkpoints: int
    gpu_hours: float  # GPU-hours of the nodes it held
    energy_kwh: float
    cost: float
    step_time_s: float


@dataclass(frozen=True, slots=True)
class ClusterResult:
    """Cluster totals over the horizon. used + idle + down == total (GPU-hours)."""

    nodes: int
    spare_nodes: int
    gpus: int  # spares included
    gpu_hours_total: float
    gpu_hours_used: float
    gpu_hours_idle: float
    gpu_hours_down: float
    it_energy_kwh: float
    energy_kwh: float  # facility (PUE applied)
    failures_by_category: dict[str, int]  # failures that took a node out or hit a running job
    backfilled_jobs: int


@dataclass(frozen=True, slots=True)
class SimResult:
    horizon_s: float
    events: tuple[Event, ...]
    jobs: tuple[JobResult, ...]
    cluster: ClusterResult
    power_times_s: tuple[float, ...]  # cluster IT power: value power_w[i] from power_times_s[i]
    power_w: tuple[float, ...]
    currency: str
    pue: float

    def job(self, job_id: str) -> JobResult:
        for job in self.jobs:
            if job.job_id == job_id:
                return job
        known = ", ".join(j.job_id for j in self.jobs[:10])
        raise TwinError(f"job(={job_id!r}) is not in this simulation; known: {known}.")

    def power_series(
        self, bin_s: float = SECONDS_PER_HOUR, *, facility: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(bin start s, mean cluster power kW) per bin; IT power, or facility power (× PUE)."""
        starts, watts = binned_mean_power_w(
            np.asarray(self.power_times_s), np.asarray(self.power_w), self.horizon_s, bin_s
        )
        return starts, watts / 1e3 * (self.pue if facility else 1.0)

    def to_json(self, *, events: bool = False) -> dict[str, Any]:
        """A JSON-ready summary (SI units); the event log only when asked."""
        out: dict[str, Any] = {
            "horizon_s": self.horizon_s,
            "currency": self.currency,
            "cluster": {k: getattr(self.cluster, k) for k in ClusterResult.__slots__},
            "jobs": [{k: getattr(j, k) for k in JobResult.__slots__} for j in self.jobs],
        }
        if events:
            out["events"] = [e._asdict() | {"nodes": list(e.nodes)} for e in self.events]
        return out
