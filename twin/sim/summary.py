"""Summaries over replications: each worker's compact `ReplicaOutcome`, then mean and P10/P50/P90."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from twin.errors import TwinError
from twin.perf.reliability import SECONDS_PER_HOUR
from twin.sim.result import SimResult
from twin.sim.run import simulate
from twin.sim.spec import SimSpec, SimState


@dataclass(frozen=True, slots=True)
class Stat:
    """Mean and percentiles (linear interpolation) of one figure over replications."""

    mean: float
    p10: float
    p50: float
    p90: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        a = np.asarray(values, dtype=np.float64)
        if a.size == 0:
            return cls(math.nan, math.nan, math.nan, math.nan, 0)
        p10, p50, p90 = np.percentile(a, [10, 50, 90])
        return cls(float(a.mean()), float(p10), float(p50), float(p90), int(a.size))


@dataclass(frozen=True, slots=True)
class JobOutcome:
    job_id: str
    finish_s: float | None
    progress: float
    interruptions: int
    interruptions_by_category: dict[str, int]
    lost_work_s: float
    energy_kwh: float
    cost: float


@dataclass(frozen=True, slots=True)
class ReplicaOutcome:
    """What one replication sends back: the spec's named jobs, arrival totals and cluster totals."""

    jobs: tuple[JobOutcome, ...]
    arrived_jobs: int
    arrived_finished: int
    arrived_mean_completion_s: float  # finish − submit, over finished arrivals (nan when none)
    interruptions: int  # over all jobs
    interruptions_by_category: dict[str, int]
    energy_kwh: float
    gpu_hours_used: float
    gpu_hours_idle: float
    gpu_hours_down: float
    power_kw_hourly: tuple[float, ...]  # cluster IT power, mean per hour


def outcome(spec: SimSpec, result: SimResult) -> ReplicaOutcome:
    named = {job.job_id for job in spec.jobs}
    jobs, arrived, by_category = [], [], dict[str, int]()
    for job in result.jobs:
        for name, count in job.interruptions_by_category.items():
            by_category[name] = by_category.get(name, 0) + count
        if job.job_id in named:
            jobs.append(
                JobOutcome(
                    job.job_id,
                    job.finish_s,
                    job.progress,
                    job.interruptions,
                    job.interruptions_by_category,
                    job.lost_work_s,
                    job.energy_kwh,
                    job.cost,
                )
            )
        else:
            arrived.append(job)
    done = [j.finish_s - (j.submit_s or 0.0) for j in arrived if j.finish_s is not None]
    c = result.cluster
    return ReplicaOutcome(
        jobs=tuple(jobs),
        arrived_jobs=len(arrived),
        arrived_finished=len(done),
        arrived_mean_completion_s=float(np.mean(done)) if done else math.nan,
        interruptions=sum(j.interruptions for j in result.jobs),
        interruptions_by_category=dict(sorted(by_category.items())),
        energy_kwh=c.energy_kwh,
        gpu_hours_used=c.gpu_hours_used,
        gpu_hours_idle=c.gpu_hours_idle,
        gpu_hours_down=c.gpu_hours_down,
        power_kw_hourly=tuple(float(x) for x in result.power_series(SECONDS_PER_HOUR)[1]),
    )


def run_one(
    spec: SimSpec, days: float, seed: np.random.SeedSequence, state: SimState | None
) -> ReplicaOutcome:
    """One replication (module level: pickled by process pools and Ray)."""
    return outcome(spec, simulate(spec, days, seed, state))


@dataclass(frozen=True, slots=True)
class JobSummary:
    job_id: str
    finished_fraction: float  # of replications in which the job finished by the horizon
    completion_s: Stat  # finish time (s from the start), over replications where it finished
    progress: Stat  # checkpointed fraction of the target at finish or horizon
    interruptions: Stat
    interruptions_by_category: dict[str, float]  # mean per replication
    lost_work_s: Stat
    energy_kwh: Stat
    cost: Stat


@dataclass(frozen=True, slots=True)
class ReplicationSummary:
    replications: int
    days: float
    seed: int
    engine: str
    workers: int
    wall_s: float
    currency: str
    jobs: tuple[JobSummary, ...]
    interruptions: Stat
    interruptions_by_category: dict[str, float]
    energy_kwh: Stat
    gpu_hours_used: Stat
    gpu_hours_idle: Stat
    gpu_hours_down: Stat
    arrived_jobs: Stat
    arrived_finished: Stat
    arrived_mean_completion_s: Stat
    power_kw_hourly_mean: tuple[float, ...]
    power_kw_hourly_p10: tuple[float, ...]
    power_kw_hourly_p90: tuple[float, ...]

    def job(self, job_id: str) -> JobSummary:
        for job in self.jobs:
            if job.job_id == job_id:
                return job
        raise TwinError(f"job(={job_id!r}) is not a job of the spec; known: {[j.job_id for j in self.jobs]}.")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _mean_counts(counts: Sequence[dict[str, int]], n: int) -> dict[str, float]:
    total: dict[str, float] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0.0) + v
    return {k: v / n for k, v in sorted(total.items())}


def summarise(outcomes: Sequence[ReplicaOutcome], spec: SimSpec) -> dict[str, Any]:
    n = len(outcomes)
    jobs = []
    for i, job in enumerate(spec.jobs):
        rows = [o.jobs[i] for o in outcomes]
        finished = [r.finish_s for r in rows if r.finish_s is not None]
        jobs.append(
            JobSummary(
                job_id=job.job_id,
                finished_fraction=len(finished) / n,
                completion_s=Stat.of(finished),
                progress=Stat.of([r.progress for r in rows]),
                interruptions=Stat.of([r.interruptions for r in rows]),
                interruptions_by_category=_mean_counts([r.interruptions_by_category for r in rows], n),
                lost_work_s=Stat.of([r.lost_work_s for r in rows]),
                energy_kwh=Stat.of([r.energy_kwh for r in rows]),
                cost=Stat.of([r.cost for r in rows]),
            )
        )
    power = np.asarray([o.power_kw_hourly for o in outcomes], dtype=np.float64)
    p10, p90 = np.percentile(power, [10, 90], axis=0) if power.size else (np.zeros(0), np.zeros(0))
    return {
        "jobs": tuple(jobs),
        "interruptions": Stat.of([o.interruptions for o in outcomes]),
        "interruptions_by_category": _mean_counts([o.interruptions_by_category for o in outcomes], n),
        "energy_kwh": Stat.of([o.energy_kwh for o in outcomes]),
        "gpu_hours_used": Stat.of([o.gpu_hours_used for o in outcomes]),
        "gpu_hours_idle": Stat.of([o.gpu_hours_idle for o in outcomes]),
        "gpu_hours_down": Stat.of([o.gpu_hours_down for o in outcomes]),
        "arrived_jobs": Stat.of([o.arrived_jobs for o in outcomes]),
        "arrived_finished": Stat.of([o.arrived_finished for o in outcomes]),
        "arrived_mean_completion_s": Stat.of(
            [o.arrived_mean_completion_s for o in outcomes if not math.isnan(o.arrived_mean_completion_s)]
        ),
        "power_kw_hourly_mean": tuple(float(x) for x in power.mean(axis=0)),
        "power_kw_hourly_p10": tuple(float(x) for x in p10),
        "power_kw_hourly_p90": tuple(float(x) for x in p90),
    }
