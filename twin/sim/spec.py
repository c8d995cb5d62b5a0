"""What a simulation runs: the cluster, its jobs (resolved through `twin.perf`), arrivals, stragglers, and
the explicit initial state a run starts from (empty, or forked from the live twin).

Everything here is a frozen dataclass of plain values (picklable: replications ship it to other processes
or Ray workers). Parsing from JSON/TOML lives in `twin.sim.parse`; durations and rates come from
`twin.perf` (`resolve_job`), never from SimPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from twin.errors import ScenarioError
from twin.perf.estimate import estimate
from twin.perf.reliability import (
    DEFAULT_RESTART_S,
    SECONDS_PER_HOUR,
    Component,
    checkpoint_bytes,
    checkpoint_write_s,
    daly_interval_s,
    default_checkpoint_bandwidth_bytes_per_s,
    job_mtbf_s,
)
from twin.perf.specs import ClusterSpec, GpuSpec, ModelSpec, ParallelLayout, TrainingSpec

# --- repair times (mean seconds a node is out of service after a hardware failure) --------------------
# ASSUMPTION: no published per-component repair times for GPU training clusters were found to cite (the
# Llama 3 report gives none; OLCF Titan's slot-level replacement gaps, ../shared/traces/olcf-titan-gpu-
# life/gc_full.csv, have a median of 29 days because Titan swapped GPUs in batches, not on failure). The
# defaults assume a hyperscale site with on-site technicians and spare parts:
# - a faulty GPU (or its HBM/SRAM): drain, swap the GPU or the HGX baseboard, burn-in test: 48 h;
# - network (switch port, cable, transceiver): reseat or replace the cable/optic: 8 h;
# - host (NIC, SSD, PSU, CPU, DIMM, chassis, unplanned host maintenance): swap the part, re-image: 24 h.
# They only matter when spares run short; override them per cluster (`cluster.repair_s`).
DEFAULT_REPAIR_GPU_S = 48 * SECONDS_PER_HOUR
DEFAULT_REPAIR_NETWORK_S = 8 * SECONDS_PER_HOUR
DEFAULT_REPAIR_HOST_S = 24 * SECONDS_PER_HOUR


class Health(StrEnum):
    """A node's state. Usable: healthy, degraded (runs, slower). Out of service: failed, repairing, stale."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"  # usable; a job on it runs at the pace of its slowest node (`slowdown`)
    FAILED = "failed"  # broken, repair not started (only in an initial state)
    REPAIRING = "repairing"  # being repaired or replaced; back after the repair time
    STALE = "stale"  # no telemetry: not scheduled until it reports again (after `remaining_s`)


@dataclass(frozen=True, slots=True)
class SimCluster:
    """The machines: `nodes` schedulable nodes plus `spare_nodes` hot spares that only replace failed nodes
    of running jobs. Bandwidth overrides and the power cap feed `twin.perf` exactly as in a scenario."""

    gpu: GpuSpec
    nodes: int
    gpus_per_node: int = 8
    spare_nodes: int = 0
    price_per_gpu_hour: float = 0.0
    currency: str = "EUR"
    pue: float = 1.2
    power_cap_w: float | None = None
    intra_node_bandwidth_bytes_per_s: float | None = None
    inter_node_bandwidth_bytes_per_s: float | None = None
    checkpoint_bandwidth_bytes_per_s: float | None = None  # per job; default: Llama 3 share per GPU
    failure_rate_scale: float = 1.0
    restart_s: float = DEFAULT_RESTART_S
    repair_gpu_s: float = DEFAULT_REPAIR_GPU_S
    repair_network_s: float = DEFAULT_REPAIR_NETWORK_S
    repair_host_s: float = DEFAULT_REPAIR_HOST_S

    @property
    def total_nodes(self) -> int:
        return self.nodes + self.spare_nodes

    @property
    def gpus(self) -> int:
        """Schedulable GPUs (spares excluded)."""
        return self.nodes * self.gpus_per_node

    @property
    def total_gpus(self) -> int:
        return self.total_nodes * self.gpus_per_node

    def repair_s(self, component: Component) -> float:
        """Mean time out of service after a failure of `component` (0 for software: nothing is replaced)."""
        return {
            Component.GPU: self.repair_gpu_s,
            Component.NETWORK: self.repair_network_s,
            Component.HOST: self.repair_host_s,
        }.get(component, 0.0)

    def job_cluster(self, gpus: int) -> ClusterSpec:
        """The `ClusterSpec` the performance core sees for a job on `gpus` of these GPUs."""
        return ClusterSpec(
            gpu=self.gpu,
            gpus=gpus,
            gpus_per_node=self.gpus_per_node,
            price_per_gpu_hour=self.price_per_gpu_hour,
            currency=self.currency,
            pue=self.pue,
            power_cap_w=self.power_cap_w,
            intra_node_bandwidth_bytes_per_s=self.intra_node_bandwidth_bytes_per_s,
            inter_node_bandwidth_bytes_per_s=self.inter_node_bandwidth_bytes_per_s,
            checkpoint_bandwidth_bytes_per_s=self.checkpoint_bandwidth_bytes_per_s,
            failure_rate_scale=self.failure_rate_scale,
        )


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A training job with its performance resolved (`resolve_job`). Times in seconds, power in watts."""

    job_id: str
    model: ModelSpec
    layout: ParallelLayout
    training: TrainingSpec
    gpus: int
    nodes: int  # whole nodes it is gang-allocated
    arrival_s: float
    efficiency_scale: float
    step_time_s: float  # failure-free, straggler-free step (power cap applied)
    power_per_gpu_w: float  # average GPU power while training
    target_steps: int  # ceil(training.tokens / tokens per step)
    checkpoint_write_s: float  # δ = checkpoint bytes / aggregate checkpoint bandwidth
    checkpoint_interval_s: float  # τ: compute time between checkpoints

    @property
    def tokens_per_step(self) -> int:
        return self.training.tokens_per_step

    @property
    def steps_per_checkpoint(self) -> int:
        return max(1, round(self.checkpoint_interval_s / self.step_time_s))


def resolve_job(
    job_id: str,
    model: ModelSpec,
    layout: ParallelLayout,
    training: TrainingSpec,
    cluster: SimCluster,
    *,
    arrival_s: float = 0.0,
    efficiency_scale: float = 1.0,
    checkpoint_interval_s: float | None = None,
    step_time_s: float | None = None,
) -> JobSpec:
    """Resolve a job through `twin.perf.estimate` on `layout.gpus` GPUs of `cluster`.

    `step_time_s` overrides the prediction (an observed step time); the checkpoint interval defaults to
    Daly's (2006) optimum for the job's MTBF (`twin.perf.reliability`). Raises `ScenarioError` naming
    `jobs[<id>]` when the job cannot run (too many GPUs, does not fit in HBM, no token target).
    """
    where = f"jobs[{job_id!r}]"
    gpus = layout.gpus
    if gpus > cluster.gpus:
        raise ScenarioError(
            f"{where}.gpus(={gpus}) exceeds the cluster's {cluster.gpus} schedulable GPUs "
            f"(cluster.nodes={cluster.nodes} × gpus_per_node={cluster.gpus_per_node})."
        )
    if gpus > cluster.gpus_per_node and gpus % cluster.gpus_per_node:
        raise ScenarioError(
            f"{where}.gpus(={gpus}) must be a multiple of cluster.gpus_per_node(={cluster.gpus_per_node})."
        )
    if training.tokens is None:
        raise ScenarioError(f"{where}.training.tokens is required (the job's target).")
    if not math.isfinite(arrival_s) or arrival_s < 0:
        raise ScenarioError(f"{where}.arrival_s(={arrival_s!r}) must be >= 0.")
    spec = cluster.job_cluster(gpus)
    try:
        est = estimate(model, spec, layout, training, efficiency_scale)
    except ScenarioError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    if not est.fits:
        raise ScenarioError(f"{where} does not fit: {est.reason}.")
    step_s = est.step.step_time_s if step_time_s is None else step_time_s
    if not math.isfinite(step_s) or step_s <= 0:
        raise ScenarioError(f"{where}.step_time_s(={step_s!r}) must be > 0.")
    bandwidth = spec.checkpoint_bandwidth_bytes_per_s or default_checkpoint_bandwidth_bytes_per_s(gpus)
    write_s = checkpoint_write_s(checkpoint_bytes(model.params, layout.precision), bandwidth)
    if checkpoint_interval_s is None:
        checkpoint_interval_s = daly_interval_s(write_s, job_mtbf_s(gpus, cluster.failure_rate_scale))
    elif not math.isfinite(checkpoint_interval_s) or checkpoint_interval_s <= 0:
        raise ScenarioError(f"{where}.checkpoint_interval_s(={checkpoint_interval_s!r}) must be > 0.")
    return JobSpec(
        job_id=job_id,
        model=model,
        layout=layout,
        training=training,
        gpus=gpus,
        nodes=max(1, math.ceil(gpus / cluster.gpus_per_node)),
        arrival_s=float(arrival_s),
        efficiency_scale=float(efficiency_scale),
        step_time_s=float(step_s),
        power_per_gpu_w=est.power.power_per_gpu_w,
        target_steps=math.ceil(training.tokens / training.tokens_per_step),
        checkpoint_write_s=write_s,
        checkpoint_interval_s=float(checkpoint_interval_s),
    )


@dataclass(frozen=True, slots=True)
class PoissonArrivals:
    """Jobs like `template` arriving as a Poisson process of `rate_per_hour` in [start_s, end_s)."""

    template: JobSpec
    rate_per_hour: float
    start_s: float = 0.0
    end_s: float | None = None  # None: until the horizon
    max_jobs: int | None = None


@dataclass(frozen=True, slots=True)
class ReplayArrivals:
    """Jobs like `template` replayed from a binned submit series (Helios Venus: 10-minute bins)."""

    template: JobSpec
    counts: tuple[int, ...]  # jobs submitted per bin, from time 0
    bin_s: float
    source: str  # file and column the counts came from
    scale: float = 1.0  # each submitted job is kept with this probability (thinning)
    max_jobs: int | None = None


@dataclass(frozen=True, slots=True)
class StragglerSpec:
    """Iteration-time noise: per-worker relative step time with coefficient of variation `cov`."""

    cov: float
    source: str


@dataclass(frozen=True, slots=True)
class SimSpec:
    """A parsed offline simulation (`twin.sim.parse.parse_spec`)."""

    cluster: SimCluster
    jobs: tuple[JobSpec, ...] = ()
    arrivals: PoissonArrivals | ReplayArrivals | None = None
    stragglers: StragglerSpec | None = None
    description: str = ""


# --- the initial state (a fork of the live twin, or a what-if) ---------------------------------------


@dataclass(frozen=True, slots=True)
class NodeCondition:
    """A node that is not healthy at time 0: out of service for `remaining_s`, or degraded.

    FAILED/REPAIRING: back after `remaining_s` (default: the component's repair time). A FAILED node a
    running job holds interrupts that job at time 0 ("fail node X now"). STALE: not scheduled for
    `remaining_s` (a job already on it keeps it). DEGRADED: usable, `slowdown` × step time for `remaining_s`.
    """

    node: int
    health: Health
    remaining_s: float | None = None
    slowdown: float = 1.0
    component: Component = Component.GPU  # what failed (FAILED/REPAIRING): sets the default repair time


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A job's progress at time 0. `nodes` non-empty: it is running there now (no launch cost).

    `tokens_done` (when given) is converted to steps. `steps_since_checkpoint` of `steps_done` are not yet
    checkpointed: lost at the next failure (at once for a job that is not running: it resumes from its
    checkpoint). `efficiency_scale` re-resolves the job's step time with
    that calibration factor; `step_time_s` (an observed step time) replaces the prediction outright.
    """

    job_id: str
    steps_done: int = 0
    tokens_done: float | None = None
    steps_since_checkpoint: int = 0
    efficiency_scale: float | None = None
    step_time_s: float | None = None
    nodes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SimState:
    """Where a run starts: non-healthy nodes and job progress (an empty state is a fresh cluster)."""

    nodes: tuple[NodeCondition, ...] = ()
    jobs: tuple[JobProgress, ...] = field(default=())
