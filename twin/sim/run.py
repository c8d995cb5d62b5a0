"""`simulate`: one replication of a cluster from an explicit initial state, to a horizon.

Random streams: the seed's `SeedSequence` gives four independent child streams — failures, repair times,
job noise (stragglers), arrivals — so a what-if that changes one job keeps the same failure history
(common random numbers), and identical (spec, state, seed) give identical event logs.
"""

from __future__ import annotations

import math

import numpy as np
import simpy

from twin.errors import ScenarioError
from twin.perf.reliability import SECONDS_PER_HOUR, failure_mix
from twin.sim.arrivals import arrival_jobs
from twin.sim.cluster import Cluster
from twin.sim.failures import FailureDispatcher, FailureSampler, failure_process
from twin.sim.job import JobRun
from twin.sim.log import EventKind, EventLog
from twin.sim.power import JOULES_PER_KWH, PowerMeter
from twin.sim.result import ClusterResult, JobResult, SimResult
from twin.sim.scheduler import Scheduler
from twin.sim.spec import Health, JobProgress, JobSpec, SimSpec, SimState, resolve_job
from twin.sim.state_check import check_state
from twin.sim.stragglers import StragglerModel

SECONDS_PER_DAY = 86_400.0
STREAMS = ("failures", "repairs", "jobs", "arrivals")


def _streams(seed: int | np.random.SeedSequence) -> dict[str, np.random.Generator]:
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    # Children built from (entropy, spawn_key) like SeedSequence.spawn, without mutating `seq`.
    return {
        name: np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, i)))
        )
        for i, name in enumerate(STREAMS)
    }


def _with_progress(job: JobSpec, progress: JobProgress | None, spec: SimSpec) -> JobSpec:
    if progress is None or (progress.efficiency_scale is None and progress.step_time_s is None):
        return job
    return resolve_job(
        job.job_id,
        job.model,
        job.layout,
        job.training,
        spec.cluster,
        arrival_s=job.arrival_s,
        efficiency_scale=job.efficiency_scale
        if progress.efficiency_scale is None
        else progress.efficiency_scale,
        checkpoint_interval_s=job.checkpoint_interval_s,
        step_time_s=progress.step_time_s,
    )


def horizon_s_of(days: float) -> float:
    """The horizon in seconds; raises `ScenarioError` naming `days` unless it is a finite number > 0."""
    if isinstance(days, bool) or not isinstance(days, int | float) or not math.isfinite(days) or days <= 0:
        raise ScenarioError(f"days(={days!r}) must be > 0.")
    return float(days) * SECONDS_PER_DAY


def simulate(
    spec: SimSpec, days: float, seed: int | np.random.SeedSequence = 0, state: SimState | None = None
) -> SimResult:
    """Run `spec` from `state` (default: a healthy, empty cluster) for `days`; see the module doc."""
    horizon_s = horizon_s_of(days)
    state = state or SimState()
    progress = check_state(spec, state)
    rng = _streams(seed)
    env = simpy.Environment()
    log, meter = EventLog(), PowerMeter()
    cluster = Cluster(env, spec.cluster, rng["repairs"], meter, log)
    scheduler = Scheduler(env, cluster)

    specs = [_with_progress(job, progress.get(job.job_id), spec) for job in spec.jobs]
    if spec.arrivals is not None:
        specs += arrival_jobs(spec.arrivals, horizon_s, rng["arrivals"])
    models: dict[int, StragglerModel] = {}
    jobs: dict[str, JobRun] = {}
    for job_spec in specs:
        if job_spec.job_id in jobs:
            raise ScenarioError(f"job id {job_spec.job_id!r} is used twice (jobs and arrivals included).")
        straggle = None
        if spec.stragglers is not None:
            straggle = models.setdefault(job_spec.gpus, StragglerModel(spec.stragglers, job_spec.gpus))
        run = JobRun(
            env,
            job_spec,
            spec.cluster,
            rng=rng["jobs"],
            meter=meter,
            log=log,
            stragglers=straggle,
            progress=progress.get(job_spec.job_id),
        )
        run.cluster, run.scheduler = cluster, scheduler
        jobs[job_spec.job_id] = run

    mix = failure_mix(spec.cluster.failure_rate_scale)
    dispatcher = FailureDispatcher(env, mix, cluster, scheduler, jobs, log)
    for job_progress in state.jobs:
        if job_progress.nodes:
            scheduler.adopt(jobs[job_progress.job_id], job_progress.nodes)
    for cond in state.nodes:
        owner = cluster.owner[cond.node]
        if owner is not None and cond.health in (Health.FAILED, Health.REPAIRING):
            category = f"initial state: {cond.component.value}"
            cluster.apply(cond)
            dispatcher.effective[category] += 1
            log.record(0.0, EventKind.FAILURE, job=owner, node=cond.node, category=category)
            jobs[owner].hit(cond.node, category, cond.component)
        else:
            cluster.apply(cond)
    for run in jobs.values():
        run.process = env.process(run.run())
    sampler = FailureSampler(mix, spec.cluster.total_nodes, spec.cluster.gpus_per_node, rng["failures"])
    env.process(failure_process(env, sampler, dispatcher))
    scheduler.schedule()
    env.run(until=horizon_s)
    return _collect(spec, horizon_s, jobs, cluster, scheduler, dispatcher, meter, log)


def _collect(
    spec: SimSpec,
    horizon_s: float,
    jobs: dict[str, JobRun],
    cluster: Cluster,
    scheduler: Scheduler,
    dispatcher: FailureDispatcher,
    meter: PowerMeter,
    log: EventLog,
) -> SimResult:
    c = spec.cluster
    results = []
    for run in jobs.values():
        ckpt, computed = run.steps_now()
        gpu_hours = run.held_gpu_hours()
        results.append(
            JobResult(
                job_id=run.job_id,
                gpus=run.spec.gpus,
                submit_s=run.submit_s,
                start_s=run.start_s,
                finish_s=run.finish_s,
                target_steps=run.spec.target_steps,
                steps_done=computed,
                steps_checkpointed=ckpt,
                tokens_done=float(ckpt * run.spec.tokens_per_step),
                progress=ckpt / run.spec.target_steps,
                interruptions=sum(run.interruptions.values()),
                interruptions_by_category=dict(sorted(run.interruptions.items())),
                interruptions_by_component=dict(sorted(run.interruptions_by_component.items())),
                lost_work_s=run.lost_work_s,
                restart_s=run.restart_total_s,
                waiting_s=run.waiting_s,
                checkpoints=run.checkpoints,
                gpu_hours=gpu_hours,
                energy_kwh=meter.energy_j(f"job:{run.job_id}", horizon_s) * c.pue / JOULES_PER_KWH,
                cost=gpu_hours * c.price_per_gpu_hour,
                step_time_s=run.spec.step_time_s,
            )
        )
    hours = cluster.gpu_hours()
    it_kwh = meter.total_energy_j(horizon_s) / JOULES_PER_KWH
    cluster_result = ClusterResult(
        nodes=c.nodes,
        spare_nodes=c.spare_nodes,
        gpus=c.total_gpus,
        gpu_hours_total=c.total_gpus * horizon_s / SECONDS_PER_HOUR,
        gpu_hours_used=hours["used"],
        gpu_hours_idle=hours["idle"],
        gpu_hours_down=hours["down"],
        it_energy_kwh=it_kwh,
        energy_kwh=it_kwh * c.pue,
        failures_by_category=dict(sorted(dispatcher.effective.items())),
        backfilled_jobs=scheduler.backfilled,
    )
    return SimResult(
        horizon_s=horizon_s,
        events=tuple(log.events),
        jobs=tuple(results),
        cluster=cluster_result,
        power_times_s=tuple(meter.trace_t),
        power_w=tuple(meter.trace_w),
        currency=c.currency,
        pue=c.pue,
    )
