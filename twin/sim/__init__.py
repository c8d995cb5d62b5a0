"""The SimPy cluster twin: jobs, scheduler, failures and checkpoints, from an explicit initial state.

    from twin.sim import load_spec, simulate, replicate
    spec = load_spec("examples/sim_llama3_405b.json")
    result = simulate(spec, days=54, seed=1)              # one replication: event log, jobs, cluster
    summary = replicate(spec, days=54, replications=16)   # Monte Carlo: mean and P10/P50/P90

SimPy only orchestrates time; durations and rates come from `twin.perf` (DESIGN §1).
"""

from __future__ import annotations

from twin.sim.cluster import Cluster
from twin.sim.log import Event, EventKind
from twin.sim.parse import load_spec, parse_spec
from twin.sim.replicate import replicate
from twin.sim.result import ClusterResult, JobResult, SimResult
from twin.sim.run import simulate
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
from twin.sim.summary import ReplicationSummary, Stat

__all__ = [
    "Cluster",
    "ClusterResult",
    "Event",
    "EventKind",
    "Health",
    "JobProgress",
    "JobResult",
    "JobSpec",
    "NodeCondition",
    "ReplicationSummary",
    "SimCluster",
    "SimResult",
    "SimSpec",
    "SimState",
    "Stat",
    "load_spec",
    "parse_spec",
    "replicate",
    "resolve_job",
    "simulate",
]
