"""Fork the SimPy cluster twin from the live state, calibrated; project forward; answer what-ifs.

    state = load_live_state(store, "prod", now_s)              # or the service's own TwinState
    plan = fork_live(spec, state, "prod", now_s=now_s)          # nodes down/stale, job progress, calibration
    projection = project(plan, hours=48, replications=32)       # ETA P10/P50/P90, interruptions, kWh, cost
    compare(plan, [WhatIf.power_cap(500)], hours=48)            # against the baseline, same random numbers

`spec` is a `twin sim` spec (`twin.sim.parse`): the cluster's hardware and, per job id the live jobs report
under, the plan the events do not carry (training target, seq_len, global batch, checkpoint interval).
The live state says which nodes are out (offline: their will fired; a GPU with XID 48 or 79; stale: no
telemetry), how far each job has come (steps, last checkpoint), where it runs, and how fast it really goes:
`twin.calibration_online` turns the observed step times and power into per-job correction factors that
the forked jobs keep, in what-ifs too. Every projection reports the calibration's error before and after.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from twin.calibration_online import (
    CalibrationReport,
    Calibrator,
    PerfCurve,
    SkippedJob,
    job_observed_power_w,
)
from twin.errors import ScenarioError, TwinError
from twin.perf.reliability import Component
from twin.records import COL, TELEMETRY_COLUMNS, JobEventRecord, NodeStatusRecord
from twin.scenario import layout_json, parse_layout
from twin.sim.replicate import replicate
from twin.sim.spec import (
    Health,
    JobProgress,
    JobSpec,
    NodeCondition,
    SimCluster,
    SimSpec,
    SimState,
    resolve_job,
)
from twin.sim.summary import JobSummary, ReplicationSummary
from twin.state import TwinState
from twin.store.repository import Store

# NVIDIA XID errors after which a GPU must be reset or replaced before it can train again (NVIDIA, "XID
# Errors", r555 docs, https://docs.nvidia.com/deploy/xid-errors/): 48 "DBE (Double Bit Error) ECC
# Error", 79 "GPU has fallen off the bus". The node is out until repaired (component GPU).
FATAL_XIDS: Final = frozenset({48, 79})
# ASSUMPTION: a node that stopped sending telemetry (stale, no last will) is kept out of new work for
# 10 minutes, the restart time the reliability model assumes for detecting and handling a fault
# (twin.perf.reliability.DEFAULT_RESTART_S); a job already on it keeps it. After that it is presumed back.
STALE_OUT_OF_SERVICE_S: Final = 600.0
# Step events read per job when the state is rebuilt from the store (twin.state keeps 512 step times).
EVENTS_PER_JOB: Final = 2_048
NEW_NODE_PREFIX: Final = "whatif-new-"
UNSEEN_NODE_PREFIX: Final = "unseen-"


class ProjectionError(TwinError, ValueError):
    """A projection or what-if that cannot be made; the message names the job, node or field."""


# --- the live state from the store ------------------------------------------------------------------


def load_live_state(store: Store, cluster: str, *, default_interval_s: float = 1.0) -> TwinState:
    """Rebuild a `TwinState` of one cluster from the store (what the dashboard and CLI fork from).

    Nodes with their stored status, every GPU's newest sample, and each job's newest `EVENTS_PER_JOB`
    events folded in order, exactly as the ingest service folds them.
    """
    state = TwinState(default_interval_s)
    for node in store.nodes(cluster):
        if node["last_seen_ts"] is not None:
            state.fold_message(cluster, node["node"], node["last_seen_ts"], node["last_seen_ts"])
        if node["status"] in ("online", "offline"):
            ts = node["status_ts"] or node["last_seen_ts"] or 0.0
            state.fold_status(NodeStatusRecord(cluster, node["node"], node["status"], ts))
        elif node["status"] == "stale":
            state.mark_stale(cluster, node["node"])
    rows = store.latest_telemetry(cluster)
    state.fold_telemetry(tuple(row[name] for name in TELEMETRY_COLUMNS) for row in rows)
    for job in store.jobs(cluster):
        # An ended job only needs its end event (it is left out of projections); others need their
        # recent step times and last checkpoint.
        newest = 1 if job["state"] == "ended" else EVENTS_PER_JOB
        for e in store.job_events(job["job_id"], cluster, newest=newest):
            state.fold_job_event(
                JobEventRecord(
                    cluster,
                    e["job_id"],
                    e["event"],
                    e["ts"],
                    e["step"],
                    e["step_time_s"],
                    e["tokens"],
                    e["model"],
                    e["layout"],
                    tuple(e["nodes"] or ()),
                    e["reason"],
                )
            )
    return state


# --- the fork -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeOut:
    """A node that is not healthy at the fork, by name."""

    health: Health
    remaining_s: float | None
    component: Component
    why: str


@dataclass(frozen=True, slots=True)
class LiveJob:
    """A job of the plan at the fork: its progress and where it runs, by node name."""

    steps_done: int = 0
    steps_since_checkpoint: int = 0
    nodes: tuple[str, ...] = ()  # running there now; () = queued (or restarting from its checkpoint)
    power_scale: float = 1.0  # observed / predicted GPU power (calibration)
    observed_step_time_s: float | None = None


@dataclass(frozen=True, slots=True)
class LivePlan:
    """A fork of the live twin, by node name, ready to compile into a `SimSpec` and `SimState`.

    `spec.jobs` are the plan's unfinished jobs, resolved with their calibrated efficiency scale and power
    scale; `regular`/`spares` are node names in index order (schedulable first, then hot spares).
    """

    spec: SimSpec
    cluster_name: str
    now_s: float
    regular: tuple[str, ...]
    spares: tuple[str, ...]
    out: Mapping[str, NodeOut]
    jobs: Mapping[str, LiveJob]
    calibration: CalibrationReport | None = None
    finished: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    what_ifs: tuple[str, ...] = ()

    def compile(self) -> tuple[SimSpec, SimState]:
        index = {name: i for i, name in enumerate((*self.regular, *self.spares))}
        cluster = dataclasses.replace(
            self.spec.cluster, nodes=len(self.regular), spare_nodes=len(self.spares)
        )
        conditions = tuple(
            NodeCondition(index[name], o.health, o.remaining_s, component=o.component)
            for name, o in sorted(self.out.items(), key=lambda kv: index[kv[0]])
        )
        progress = tuple(
            JobProgress(
                job_id,
                steps_done=j.steps_done,
                steps_since_checkpoint=j.steps_since_checkpoint,
                nodes=tuple(index[n] for n in j.nodes),
            )
            for job_id, j in self.jobs.items()
        )
        return dataclasses.replace(self.spec, cluster=cluster), SimState(conditions, progress)


def _node_out(state: TwinState, cluster: str, names: Sequence[str]) -> dict[str, NodeOut]:
    out: dict[str, NodeOut] = {}
    c_xid, c_index = COL["xid_last"], COL["gpu_index"]
    fatal: dict[str, list[str]] = {}
    for (c, node, _), row in state.gpus.items():
        if c == cluster and row[c_xid] in FATAL_XIDS:
            fatal.setdefault(node, []).append(f"GPU {row[c_index]} XID {row[c_xid]}")
    for name in names:
        live = state.nodes.get((cluster, name))
        if name in fatal:
            out[name] = NodeOut(Health.FAILED, None, Component.GPU, ", ".join(sorted(fatal[name])))
        elif live is not None and live.status == "offline":
            out[name] = NodeOut(Health.FAILED, None, Component.HOST, "offline (its last will fired)")
        elif live is not None and live.status == "stale":
            out[name] = NodeOut(Health.STALE, STALE_OUT_OF_SERVICE_S, Component.HOST, "stale (no telemetry)")
    return out


def _calibrate(
    spec: SimSpec, state: TwinState, cluster: str, live_jobs: Mapping[str, Any]
) -> tuple[Calibrator, CalibrationReport]:
    """Per-job efficiency and power scales from the observed step times and power (prequential)."""
    calibrator = Calibrator()
    skipped: list[SkippedJob] = []
    by_id = {job.job_id: job for job in spec.jobs}
    for job_id, live in sorted(live_jobs.items(), key=lambda kv: (kv[1].started_ts or 0.0, kv[0])):
        if live.state != "running" or not live.step_times_s:
            continue
        job = by_id[job_id]
        curve = PerfCurve.from_specs(job.model, spec.cluster.job_cluster(job.gpus), job.layout, job.training)
        calibrator.register_job(cluster, job_id, curve)
        for step_time_s in live.step_times_s:
            calibrator.observe_step(cluster, job_id, step_time_s)
        power_w = job_observed_power_w(live, state.gpus, state.nodes)
        if power_w is not None:
            calibrator.observe_power(cluster, job_id, power_w)
        else:
            skipped.append(
                SkippedJob(cluster, job_id, "no power readings from its nodes (power not calibrated)")
            )
    return calibrator, calibrator.report(skipped)


def _resolve(job: JobSpec, cluster: SimCluster, *, layout: Any = None, efficiency_scale: float) -> JobSpec:
    return resolve_job(
        job.job_id,
        job.model,
        job.layout if layout is None else layout,
        job.training,
        cluster,
        arrival_s=job.arrival_s,
        efficiency_scale=efficiency_scale,
        checkpoint_interval_s=job.checkpoint_interval_s,
    )


def fork_live(
    spec: SimSpec, state: TwinState, cluster: str, *, now_s: float, calibrate: bool = True
) -> LivePlan:
    """The live twin as a `LivePlan`: which nodes are out, each planned job's progress, calibration.

    Live nodes map to node indices in name order; nodes the spec has beyond them (never seen) are
    presumed healthy. A job the spec plans but the twin has not heard of has not started; one that
    ended is finished (left out); a failed one restarts from its newest checkpoint; a running one keeps
    its nodes. A live job the spec does not plan is reported in `notes` (no target to project).
    """
    if not math.isfinite(now_s):
        raise ProjectionError(f"now_s(={now_s!r}) must be a finite unix time.")
    snap = state.copy()
    live_names = sorted(node for c, node in snap.nodes if c == cluster)
    total = spec.cluster.total_nodes
    if len(live_names) > total:
        raise ProjectionError(
            f"cluster {cluster!r} has {len(live_names)} live nodes; the spec has {total} "
            f"(cluster.nodes={spec.cluster.nodes} + spare_nodes={spec.cluster.spare_nodes})."
        )
    names = live_names + [f"{UNSEEN_NODE_PREFIX}{i}" for i in range(total - len(live_names))]
    notes: list[str] = []
    if len(live_names) < total:
        notes.append(
            f"{total - len(live_names)} of the spec's {total} nodes have not reported; presumed healthy"
        )
    planned = {job.job_id for job in spec.jobs}
    live_jobs = {job_id: job for (c, job_id), job in snap.jobs.items() if c == cluster}
    for job_id in sorted(set(live_jobs) - planned):
        notes.append(f"live job {job_id!r} is not in the spec: no training target, not projected")
    calibrator: Calibrator | None = None
    report: CalibrationReport | None = None
    planned_live = {k: v for k, v in live_jobs.items() if k in planned}
    if calibrate:
        calibrator, report = _calibrate(spec, snap, cluster, planned_live)
    jobs: dict[str, LiveJob] = {}
    resolved: list[JobSpec] = []
    finished: list[str] = []
    known_nodes = set(names)
    for job in spec.jobs:
        live = planned_live.get(job.job_id)
        if live is not None and live.state == "ended":
            finished.append(job.job_id)
            continue
        # The calibrated scales are absolute (the curve is tabulated over estimate()'s efficiency_scale).
        # A job with no observations of its own takes the cluster's pooled factors, when there are any.
        scale, power_scale = job.efficiency_scale, 1.0
        if calibrator is not None and calibrator.jobs():
            scale = calibrator.job_efficiency_scale(cluster, job.job_id)
            power_scale = calibrator.job_power_scale(cluster, job.job_id)
            if (cluster, job.job_id) not in calibrator.jobs():
                notes.append(f"job {job.job_id!r} has no step times yet: the cluster's calibration is used")
        spec_job = _resolve(job, spec.cluster, efficiency_scale=scale)
        spec_job = dataclasses.replace(spec_job, power_per_gpu_w=spec_job.power_per_gpu_w * power_scale)
        resolved.append(spec_job)
        if live is None:
            jobs[job.job_id] = LiveJob()
            continue
        steps = min(live.last_step or 0, spec_job.target_steps)
        checkpoint = min(live.last_checkpoint_step or 0, steps)
        nodes: tuple[str, ...] = ()
        if live.state == "running":
            nodes = tuple(sorted(live.nodes))
            unknown = [n for n in nodes if n not in known_nodes]
            if unknown:
                raise ProjectionError(f"job {job.job_id!r} runs on node(s) {unknown} the twin has not seen.")
            if len(nodes) != spec_job.nodes:
                notes.append(
                    f"job {job.job_id!r} reports {len(nodes)} nodes; the spec's layout needs "
                    f"{spec_job.nodes}: it is projected as queued"
                )
                nodes = ()
        elif live.state == "failed":
            notes.append(
                f"job {job.job_id!r} failed ({live.reason}); projected to restart from step {checkpoint}"
            )
        jobs[job.job_id] = LiveJob(
            steps_done=steps,
            steps_since_checkpoint=steps - checkpoint,
            nodes=nodes,
            power_scale=power_scale,
            observed_step_time_s=live.observed_step_time_s,
        )
    out = _node_out(snap, cluster, names)
    regular, spares = tuple(names[: spec.cluster.nodes]), tuple(names[spec.cluster.nodes :])
    return LivePlan(
        spec=dataclasses.replace(spec, jobs=tuple(resolved), arrivals=None),
        cluster_name=cluster,
        now_s=now_s,
        regular=regular,
        spares=spares,
        out=out,
        jobs=jobs,
        calibration=report,
        finished=tuple(finished),
        notes=tuple(notes),
    )


# --- what-ifs -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WhatIf:
    """One change to the live plan. Build with the class methods or `WhatIf.from_json`."""

    kind: str  # layout | nodes | fail_node | power_cap
    job: str | None = None
    layout: Mapping[str, Any] = field(default_factory=dict)
    delta_nodes: int = 0
    node: str | None = None
    power_cap_w: float | None = None

    @classmethod
    def change_layout(cls, job: str, **layout: Any) -> WhatIf:
        return cls("layout", job=job, layout=layout)

    @classmethod
    def add_nodes(cls, count: int) -> WhatIf:
        return cls("nodes", delta_nodes=count)

    @classmethod
    def remove_nodes(cls, count: int) -> WhatIf:
        return cls("nodes", delta_nodes=-count)

    @classmethod
    def fail_node(cls, node: str) -> WhatIf:
        return cls("fail_node", node=node)

    @classmethod
    def power_cap(cls, power_cap_w: float | None) -> WhatIf:
        return cls("power_cap", power_cap_w=power_cap_w)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> WhatIf:
        """`{"layout": {"job": id, ...layout keys}}`, `{"add_nodes": n}`, `{"remove_nodes": n}`,
        `{"fail_node": name}` or `{"power_cap_w": watts|null}` (one key)."""
        if not isinstance(raw, Mapping) or len(raw) != 1:
            raise ProjectionError(f"what-if(={raw!r}) must be an object with exactly one key.")
        ((key, value),) = raw.items()
        if key == "layout":
            if not isinstance(value, Mapping) or not isinstance(value.get("job"), str):
                raise ProjectionError(f"what-if layout(={value!r}) must be an object with a 'job' id.")
            return cls.change_layout(value["job"], **{k: v for k, v in value.items() if k != "job"})
        if key in ("add_nodes", "remove_nodes"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProjectionError(f"what-if {key}(={value!r}) must be an integer >= 1.")
            return cls.add_nodes(value) if key == "add_nodes" else cls.remove_nodes(value)
        if key == "fail_node":
            if not isinstance(value, str):
                raise ProjectionError(f"what-if fail_node(={value!r}) must be a node name.")
            return cls.fail_node(value)
        if key == "power_cap_w":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ProjectionError(f"what-if power_cap_w(={value!r}) must be watts or null.")
            return cls.power_cap(None if value is None else float(value))
        raise ProjectionError(
            f"unknown what-if {key!r}; one of layout, add_nodes, remove_nodes, fail_node, power_cap_w."
        )

    def describe(self) -> str:
        if self.kind == "layout":
            return f"job {self.job}: layout {dict(self.layout)}"
        if self.kind == "nodes":
            return f"{'add' if self.delta_nodes > 0 else 'remove'} {abs(self.delta_nodes)} node(s)"
        if self.kind == "fail_node":
            return f"fail node {self.node} now"
        return f"power cap {self.power_cap_w:g} W per GPU" if self.power_cap_w else "no power cap"


def _with_jobs_resolved(
    plan: LivePlan, cluster: SimCluster, layouts: Mapping[str, Any]
) -> tuple[JobSpec, ...]:
    out = []
    for job in plan.spec.jobs:
        try:
            spec_job = _resolve(
                job, cluster, layout=layouts.get(job.job_id), efficiency_scale=job.efficiency_scale
            )
        except ScenarioError as exc:
            raise ProjectionError(f"what-if makes job {job.job_id!r} impossible: {exc}") from None
        out.append(
            dataclasses.replace(
                spec_job, power_per_gpu_w=spec_job.power_per_gpu_w * plan.jobs[job.job_id].power_scale
            )
        )
    return tuple(out)


def apply_what_if(plan: LivePlan, what_if: WhatIf) -> LivePlan:
    """The plan with one change applied (the plan itself is unchanged)."""
    cluster = plan.spec.cluster
    jobs = dict(plan.jobs)
    regular, out = list(plan.regular), dict(plan.out)
    layouts: dict[str, Any] = {}
    if what_if.kind == "layout":
        target = next((j for j in plan.spec.jobs if j.job_id == what_if.job), None)
        if target is None:
            raise ProjectionError(
                f"what-if job(={what_if.job!r}) is not a job of the plan; known: {sorted(jobs)}."
            )
        merged = {**layout_json(target.layout), **dict(what_if.layout), "dp": None}
        try:
            layouts[target.job_id] = parse_layout(merged, target.gpus)
        except ScenarioError as exc:
            raise ProjectionError(f"what-if layout for job {target.job_id!r}: {exc}") from None
        # A new layout means a checkpoint-restart: uncheckpointed work is lost and the job is re-launched.
        jobs[target.job_id] = dataclasses.replace(jobs[target.job_id], nodes=())
    elif what_if.kind == "nodes":
        if what_if.delta_nodes > 0:
            regular += [f"{NEW_NODE_PREFIX}{len(regular) + i}" for i in range(what_if.delta_nodes)]
        else:
            held = {n for j in jobs.values() for n in j.nodes}
            idle = [n for n in reversed(regular) if n not in held and n not in out]
            count = -what_if.delta_nodes
            if len(idle) < count:
                raise ProjectionError(
                    f"what-if remove_nodes(={count}): only {len(idle)} node(s) are idle and healthy."
                )
            removed = set(idle[:count])
            regular = [n for n in regular if n not in removed]
        cluster = dataclasses.replace(cluster, nodes=len(regular))
    elif what_if.kind == "fail_node":
        if what_if.node not in (*plan.regular, *plan.spares):
            raise ProjectionError(
                f"what-if fail_node(={what_if.node!r}) is not a node of cluster {plan.cluster_name!r}."
            )
        out[what_if.node] = NodeOut(Health.FAILED, None, Component.GPU, "failed by what-if")
    elif what_if.kind == "power_cap":
        cluster = dataclasses.replace(cluster, power_cap_w=what_if.power_cap_w)
    else:
        raise ProjectionError(f"what-if kind(={what_if.kind!r}) is unknown.")
    resolved = _with_jobs_resolved(plan, cluster, layouts)
    return dataclasses.replace(
        plan,
        spec=dataclasses.replace(plan.spec, cluster=cluster, jobs=resolved),
        regular=tuple(regular),
        out=out,
        jobs=jobs,
        what_ifs=(*plan.what_ifs, what_if.describe()),
    )


# --- projections --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Projection:
    """Monte Carlo projection of a `LivePlan` over `hours`; times are unix seconds (ETA) or seconds."""

    plan: LivePlan
    hours: float
    summary: ReplicationSummary

    def job(self, job_id: str) -> JobSummary:
        try:
            return self.summary.job(job_id)
        except TwinError:
            raise ProjectionError(
                f"job(={job_id!r}) is not projected; projected jobs: {[j.job_id for j in self.summary.jobs]}."
            ) from None

    def _job_json(self, job: JobSummary) -> dict[str, Any]:
        spec_job = next(j for j in self.plan.spec.jobs if j.job_id == job.job_id)
        live = self.plan.jobs[job.job_id]
        now, eta = self.plan.now_s, job.completion_s
        cal = None
        if self.plan.calibration is not None:
            cal = next(
                (
                    c
                    for c in self.plan.calibration.jobs
                    if (c.cluster, c.job_id) == (self.plan.cluster_name, job.job_id)
                ),
                None,
            )
        return {
            "job_id": job.job_id,
            "running": bool(live.nodes),
            "progress": live.steps_done / spec_job.target_steps,
            "steps_done": live.steps_done,
            "target_steps": spec_job.target_steps,
            "finished_fraction": job.finished_fraction,  # of replications finishing within the horizon
            "eta_p10_ts": now + eta.p10 if eta.n else None,
            "eta_p50_ts": now + eta.p50 if eta.n else None,
            "eta_p90_ts": now + eta.p90 if eta.n and job.finished_fraction >= 0.9 else None,
            "observed_step_time_s": live.observed_step_time_s,
            "predicted_step_time_s": None if cal is None else cal.predicted_step_time_s,
            "calibrated_step_time_s": spec_job.step_time_s,
            "expected_interruptions": job.interruptions.mean,
            "lost_work_s": job.lost_work_s.mean,
            "energy_kwh_to_completion": job.energy_kwh.mean,
            "cost_to_completion": job.cost.mean,
        }

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {
            "cluster": self.plan.cluster_name,
            "now_s": self.plan.now_s,
            "hours": self.hours,
            "replications": s.replications,
            "seed": s.seed,
            "what_ifs": list(self.plan.what_ifs),
            "currency": s.currency,
            "jobs": [self._job_json(j) for j in s.jobs],
            "finished_jobs": list(self.plan.finished),
            "nodes_out": {
                n: {"health": str(o.health), "why": o.why} for n, o in sorted(self.plan.out.items())
            },
            "interruptions": s.interruptions.mean,
            "energy_kwh": s.energy_kwh.mean,
            "power_kw_hourly": {
                "mean": list(s.power_kw_hourly_mean),
                "p10": list(s.power_kw_hourly_p10),
                "p90": list(s.power_kw_hourly_p90),
            },
            "calibration": None if self.plan.calibration is None else self.plan.calibration.to_json(),
            "notes": list(self.plan.notes),
        }


def project(
    plan: LivePlan,
    *,
    hours: float,
    replications: int = 32,
    seed: int = 0,
    engine: str = "local",
    workers: int | None = None,
) -> Projection:
    """Run the plan forward `hours` (Monte Carlo over `replications`) from its fork."""
    if not math.isfinite(hours) or hours <= 0:
        raise ProjectionError(f"hours(={hours!r}) must be > 0.")
    spec, state = plan.compile()
    summary = replicate(spec, hours / 24.0, replications, seed, engine=engine, workers=workers, state=state)
    return Projection(plan, hours, summary)


@dataclass(frozen=True, slots=True)
class Comparison:
    baseline: Projection
    variant: Projection

    def to_json(self) -> dict[str, Any]:
        base, var = self.baseline.to_json(), self.variant.to_json()
        deltas = []
        for b, v in zip(base["jobs"], var["jobs"], strict=True):
            row: dict[str, Any] = {"job_id": b["job_id"]}
            for key in (
                "eta_p50_ts",
                "eta_p90_ts",
                "expected_interruptions",
                "energy_kwh_to_completion",
                "cost_to_completion",
            ):
                row[f"delta_{key}"] = None if b[key] is None or v[key] is None else v[key] - b[key]
            deltas.append(row)
        return {"baseline": base, "variant": var, "deltas": deltas}


def compare(
    plan: LivePlan,
    what_ifs: Sequence[WhatIf],
    *,
    hours: float,
    replications: int = 32,
    seed: int = 0,
    workers: int | None = None,
) -> Comparison:
    """Baseline vs the plan with `what_ifs` applied, on the same seeds (common random numbers)."""
    if not what_ifs:
        raise ProjectionError("what_ifs(=[]) must name at least one change.")
    variant = plan
    for what_if in what_ifs:
        variant = apply_what_if(variant, what_if)
    base = project(plan, hours=hours, replications=replications, seed=seed, workers=workers)
    alt = project(variant, hours=hours, replications=replications, seed=seed, workers=workers)
    return Comparison(base, alt)
