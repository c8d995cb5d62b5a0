"""Validate an initial `SimState` against a `SimSpec`; errors name the field and the value."""

from __future__ import annotations

import math
from dataclasses import replace

from twin.errors import ScenarioError, TwinError
from twin.sim.spec import Health, JobProgress, JobSpec, NodeCondition, SimSpec, SimState


def _check_node(spec: SimSpec, where: str, node: object) -> int:
    total = spec.cluster.total_nodes
    if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node < total:
        raise ScenarioError(f"{where}(={node!r}) must be a node index in [0, {total}).")
    return node


def _check_condition(spec: SimSpec, i: int, cond: NodeCondition) -> None:
    where = f"state.nodes[{i}]"
    _check_node(spec, f"{where}.node", cond.node)
    if not isinstance(cond.health, Health) or cond.health is Health.HEALTHY:
        raise ScenarioError(f"{where}.health(={cond.health!r}) must be degraded, failed, repairing or stale.")
    if cond.remaining_s is not None and (math.isnan(cond.remaining_s) or cond.remaining_s < 0):
        raise ScenarioError(f"{where}.remaining_s(={cond.remaining_s!r}) must be >= 0.")
    if cond.health is Health.DEGRADED and (not math.isfinite(cond.slowdown) or cond.slowdown < 1.0):
        raise ScenarioError(f"{where}.slowdown(={cond.slowdown!r}) must be >= 1 (a step-time multiplier).")


def _check_progress(spec: SimSpec, job: JobSpec, p: JobProgress, where: str) -> JobProgress:
    steps = p.steps_done
    if p.tokens_done is not None:
        if p.steps_done:
            raise ScenarioError(f"{where}: give steps_done or tokens_done, not both.")
        if not math.isfinite(p.tokens_done) or p.tokens_done < 0:
            raise ScenarioError(f"{where}.tokens_done(={p.tokens_done!r}) must be >= 0.")
        steps = math.floor(p.tokens_done / job.tokens_per_step)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ScenarioError(f"{where}.steps_done(={steps!r}) must be an integer >= 0.")
    if steps > job.target_steps:
        raise ScenarioError(
            f"{where}.steps_done(={steps}) exceeds the job's target ({job.target_steps} steps)."
        )
    since = p.steps_since_checkpoint
    if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= steps:
        raise ScenarioError(f"{where}.steps_since_checkpoint(={since!r}) must be in [0, steps_done={steps}].")
    for name in ("efficiency_scale", "step_time_s"):
        value = getattr(p, name)
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ScenarioError(f"{where}.{name}(={value!r}) must be > 0.")
    if p.nodes and len(p.nodes) != job.nodes:
        raise ScenarioError(f"{where}.nodes has {len(p.nodes)} nodes; the job runs on {job.nodes}.")
    for node in p.nodes:
        _check_node(spec, f"{where}.nodes", node)
    return replace(p, steps_done=steps, tokens_done=None)


def check_state(spec: SimSpec, state: object) -> dict[str, JobProgress]:
    """Validated job progress by job id (tokens converted to steps). Raises `TwinError` subclasses."""
    if not isinstance(state, SimState):
        raise ScenarioError(f"state(={type(state).__name__}) must be a SimState.")
    seen: set[int] = set()
    for i, cond in enumerate(state.nodes):
        _check_condition(spec, i, cond)
        if cond.node in seen:
            raise ScenarioError(f"state.nodes[{i}].node(={cond.node}) appears twice.")
        seen.add(cond.node)
    known = {job.job_id: job for job in spec.jobs}
    out: dict[str, JobProgress] = {}
    held: dict[int, str] = {}
    for i, p in enumerate(state.jobs):
        where = f"state.jobs[{i}]"
        if p.job_id not in known:
            names = ", ".join(sorted(known)) or "none"
            raise TwinError(f"{where}.job_id(={p.job_id!r}) is not a job of the spec; known: {names}.")
        if p.job_id in out:
            raise ScenarioError(f"{where}.job_id(={p.job_id!r}) appears twice.")
        out[p.job_id] = _check_progress(spec, known[p.job_id], p, where)
        for node in p.nodes:
            if node in held:
                raise ScenarioError(f"{where}.nodes: node {node} is already held by job {held[node]!r}.")
            held[node] = p.job_id
    return out
