"""What the twin advises a cluster to do: power caps that save energy, and "checkpoint now" before a failure.

Pure functions over specs and plain data, returning frozen advice; `twin.command_publisher` turns advice
into signed commands (`sensors.commands`).

Power cap (`advise_power_cap`). For a job's model, cluster and layout the performance core gives the step
time and the average GPU power under a cap (`twin.perf.estimate.estimate` with `ClusterSpec.power_cap_w`:
compute slows by `twin.perf.power.cap_slowdown`, P_dyn ∝ f³; communication does not slow). Caps on a
`CAP_RESOLUTION_W` grid from `MIN_CAP_FRACTION_OF_TDP`·TDP up to the uncapped compute power are tried;
among those whose slowdown (capped step time / uncapped − 1) is at most `max_slowdown`, the one with the
least facility energy per step (GPUs and their hosts, × PUE) is advised — the lowest such cap, unless the
hosts' power makes a longer step cost more. No advice when no cap saves energy within the bound.

Checkpoint now (`node_risk`, `job_risk`, `advise_checkpoint`). A node's risk is a score in [0, 1] that
its job is interrupted soon, from telemetry precursors of GPU memory failures (DESIGN's sources:
`sensors.sim_failures`, Llama 3 §3.3.4, Tiwari et al. HPCA'15), or any predictor's probability:

- an XID that means the GPU has already failed (48 double-bit ECC, 79 fallen off the bus) → 1;
- an XID that precedes memory failures (63/64 row-remapping events, 92 high single-bit error rate, 94
  contained ECC error) → `PRECURSOR_XID_RISK`;
- correctable (single-bit) ECC errors rising in the window, n new errors →
  `SBE_BURST_FAILURE_SHARE` · (1 − exp(−n / `SBE_EVIDENCE_SCALE`));
- independent pieces combine as 1 − Π(1 − rᵢ) (over signals, GPUs of a node, nodes of a job).

A job is advised to checkpoint when its risk is at least `MIN_CHECKPOINT_RISK` and the work it would
expect to lose exceeds what a checkpoint costs: risk × seconds since its last checkpoint ≥ checkpoint
write time (`twin.perf.reliability.checkpoint_write_s`), the expected-loss comparison behind Young's and
Daly's intervals.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from twin.errors import ScenarioError
from twin.perf.estimate import estimate
from twin.perf.power import compute_phase_power_w
from twin.perf.reliability import (
    SECONDS_PER_HOUR,
    checkpoint_bytes,
    checkpoint_write_s,
    default_checkpoint_bandwidth_bytes_per_s,
)
from twin.perf.specs import ClusterSpec, ModelSpec, ParallelLayout, TrainingSpec
from twin.scenario import Scenario, parse_cluster, parse_layout, parse_training

# ASSUMPTION (the example): advise caps that slow a job by at most 5 %.
DEFAULT_MAX_SLOWDOWN: Final = 0.05
# Caps are searched on this grid. ASSUMPTION: NVML takes milliwatts, but 5 W is below the ±0.5 % reading
# accuracy at the cap of a 700 W part and keeps the search at ~100 estimates.
CAP_RESOLUTION_W: Final = 5.0
# Lowest cap tried, as a share of TDP: NVML's minimum limit is ~25–29 % of TDP (nvidia-smi -q "Min Power
# Limit": A100-SXM4 100 of 400 W, H100-SXM 200 of 700 W). ASSUMPTION for other parts.
MIN_CAP_FRACTION_OF_TDP: Final = 0.29
# A cap must save at least this share of the energy per step to be worth a command. ASSUMPTION: 1 %,
# the order of the model's own power error after calibration.
MIN_ENERGY_SAVING_FRACTION: Final = 0.01

# XID codes (NVIDIA "Xid Errors" catalogue, docs.nvidia.com/deploy/xid-errors).
XID_DBE: Final = 48  # double-bit ECC error: the job stops
XID_FALLEN_OFF_BUS: Final = 79  # GPU has fallen off the bus: the job stops
FAILED_XIDS: Final = frozenset({XID_DBE, XID_FALLEN_OFF_BUS})
# Row-remapping recording event / failure (63, 64), high single-bit ECC rate (92), contained ECC error (94).
PRECURSOR_XIDS: Final = frozenset({63, 64, 92, 94})
# Share of correctable-error bursts that end in a failure: 1 − sensors.sim_failures'
# PRECURSOR_FALSE_ALARM_SHARE (0.5, an ASSUMPTION from Tiwari et al., HPCA'15: most Titan GPUs that logged
# single-bit errors never failed).
SBE_BURST_FAILURE_SHARE: Final = 0.5
# A precursor XID is at least as strong a warning as a burst. ASSUMPTION: the same 0.5.
PRECURSOR_XID_RISK: Final = 0.5
# New correctable errors for the burst evidence to reach 1 − 1/e of its weight. ASSUMPTION: 2, the errors
# after which sensors.sim_failures marks a row for remapping (ROW_REMAP_SBE_THRESHOLD).
SBE_EVIDENCE_SCALE: Final = 2.0
# ASSUMPTION: below a 25 % chance of interruption, an unscheduled checkpoint is not worth a command.
MIN_CHECKPOINT_RISK: Final = 0.25


# --- power caps -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PowerCapAdvice:
    """A per-GPU power cap for a job's nodes, with what it costs and saves (SI units; energy × PUE)."""

    job_id: str | None
    nodes: tuple[str, ...]
    gpu: str
    power_cap_w: float
    max_slowdown: float
    slowdown: float  # capped step time / uncapped − 1
    step_time_s: float
    capped_step_time_s: float
    power_per_gpu_w: float
    capped_power_per_gpu_w: float
    energy_per_step_j: float
    capped_energy_per_step_j: float

    @property
    def energy_saved_per_step_j(self) -> float:
        return self.energy_per_step_j - self.capped_energy_per_step_j

    @property
    def energy_saved_fraction(self) -> float:
        return self.energy_saved_per_step_j / self.energy_per_step_j

    @property
    def energy_saved_per_hour_j(self) -> float:
        """Energy saved per hour of training at the capped pace (the steps done in that hour)."""
        return self.energy_saved_per_step_j * SECONDS_PER_HOUR / self.capped_step_time_s

    def reason(self) -> str:
        return (
            f"cap {self.power_cap_w:g} W: saves {100 * self.energy_saved_fraction:.1f} % energy "
            f"({self.energy_saved_per_hour_j / 3.6e6:.2f} kWh/h) for {100 * self.slowdown:.1f} % slowdown"
        )

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["nodes"] = list(self.nodes)
        out.update(
            energy_saved_per_step_j=self.energy_saved_per_step_j,
            energy_saved_fraction=self.energy_saved_fraction,
            energy_saved_per_hour_j=self.energy_saved_per_hour_j,
        )
        return out


def _step_energy(
    model: ModelSpec, cluster: ClusterSpec, layout: ParallelLayout, training: TrainingSpec, cap: float | None
) -> tuple[float, float, float]:
    """(step time s, average GPU power W, facility energy per step J) under `cap`."""
    est = estimate(model, dataclasses.replace(cluster, power_cap_w=cap), layout, training)
    step_s = est.step.step_time_s
    return step_s, est.power.power_per_gpu_w, est.power.cluster_power_w * step_s * cluster.pue


def cap_grid_w(cluster: ClusterSpec) -> list[float]:
    """The caps tried: multiples of CAP_RESOLUTION_W from the lowest allowed to the uncapped compute power."""
    gpu = cluster.gpu
    low = max(MIN_CAP_FRACTION_OF_TDP * gpu.tdp_w, gpu.idle_w + CAP_RESOLUTION_W)
    high = compute_phase_power_w(gpu)
    first = math.ceil(low / CAP_RESOLUTION_W)
    last = math.floor(high / CAP_RESOLUTION_W)
    return [k * CAP_RESOLUTION_W for k in range(first, last + 1) if k * CAP_RESOLUTION_W < high]


def advise_power_cap(
    model: ModelSpec,
    cluster: ClusterSpec,
    layout: ParallelLayout,
    training: TrainingSpec,
    *,
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
    job_id: str | None = None,
    nodes: Sequence[str] = (),
) -> PowerCapAdvice | None:
    """The cap within `max_slowdown` that saves the most energy per step, or None when none saves
    `MIN_ENERGY_SAVING_FRACTION`. The baseline is the job uncapped (any `cluster.power_cap_w` is ignored).
    Raises `ScenarioError` for an invalid layout."""
    if (
        isinstance(max_slowdown, bool)
        or not isinstance(max_slowdown, int | float)
        or not 0 <= max_slowdown < 1
    ):
        raise ScenarioError(f"max_slowdown(={max_slowdown!r}) must be in [0, 1).")
    base_s, base_w, base_j = _step_energy(model, cluster, layout, training, None)
    best: tuple[float, float, float, float] | None = None  # (energy J, cap W, step s, power W)
    for cap in cap_grid_w(cluster):
        step_s, power_w, energy_j = _step_energy(model, cluster, layout, training, cap)
        if step_s / base_s - 1.0 > max_slowdown:
            continue
        if best is None or energy_j < best[0]:
            best = (energy_j, cap, step_s, power_w)
    if best is None or (base_j - best[0]) < MIN_ENERGY_SAVING_FRACTION * base_j:
        return None
    energy_j, cap, step_s, power_w = best
    return PowerCapAdvice(
        job_id=job_id,
        nodes=tuple(nodes),
        gpu=cluster.gpu.name,
        power_cap_w=cap,
        max_slowdown=float(max_slowdown),
        slowdown=step_s / base_s - 1.0,
        step_time_s=base_s,
        capped_step_time_s=step_s,
        power_per_gpu_w=base_w,
        capped_power_per_gpu_w=power_w,
        energy_per_step_j=base_j,
        capped_energy_per_step_j=energy_j,
    )


def job_scenario(
    model: ModelSpec,
    layout: Mapping[str, Any],
    nodes: Sequence[str],
    cluster_section: Mapping[str, Any],
    training_section: Mapping[str, Any],
) -> Scenario:
    """A live job's specs: its model and layout (from its events), the cluster's hardware (a scenario
    cluster section; `gpus` becomes the job's), its training shape. `ScenarioError` names what is wrong."""
    hardware = parse_cluster({**cluster_section, "gpus": 1})
    node_gpus = len(nodes) * hardware.gpus_per_node
    if layout.get("dp") is None and not nodes:
        raise ScenarioError("layout.dp is null and the job reported no nodes.")
    parsed_layout = parse_layout(layout, node_gpus)
    cluster = dataclasses.replace(hardware, gpus=parsed_layout.gpus)
    return Scenario(model, cluster, parsed_layout, parse_training(training_section))


# --- failure risk and checkpoints --------------------------------------------------------------------


def combine_risks(risks: Iterable[float]) -> float:
    """1 − Π(1 − rᵢ): the chance at least one of independent events happens."""
    survive = 1.0
    for r in risks:
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0.0 <= r <= 1.0:
            raise ValueError(f"risk(={r!r}) must be a number in [0, 1].")
        survive *= 1.0 - r
    return 1.0 - survive


def gpu_risk(sbe_increase: int, xids: Iterable[int]) -> float:
    """One GPU's risk from its new correctable ECC errors in the window and the XIDs it reported."""
    if isinstance(sbe_increase, bool) or not isinstance(sbe_increase, int) or sbe_increase < 0:
        raise ValueError(f"sbe_increase(={sbe_increase!r}) must be an integer ≥ 0.")
    seen = set(xids)
    if seen & FAILED_XIDS:
        return 1.0
    parts = [SBE_BURST_FAILURE_SHARE * -math.expm1(-sbe_increase / SBE_EVIDENCE_SCALE)]
    if seen & PRECURSOR_XIDS:
        parts.append(PRECURSOR_XID_RISK)
    return combine_risks(parts)


def node_risks_from_telemetry(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each node's risk from telemetry rows of a recent window (keys: node, gpu_index, ts, ecc_sbe_total,
    xid_last; None where not reported). New correctable errors are the sum of a GPU's counter increases in
    time order (a counter that goes down was reset with the driver: the increase restarts from there)."""
    by_gpu: dict[tuple[str, int], list[tuple[float, int | None, int | None]]] = {}
    for row in rows:
        by_gpu.setdefault((str(row["node"]), int(row["gpu_index"])), []).append(
            (float(row["ts"]), _count(row.get("ecc_sbe_total")), _count(row.get("xid_last")))
        )
    per_node: dict[str, list[float]] = {}
    for (node, _), samples in by_gpu.items():
        samples.sort(key=lambda s: s[0])
        increase, previous, xids = 0, None, set()
        for _, sbe, xid in samples:
            if sbe is not None:
                if previous is not None and sbe >= previous:
                    increase += sbe - previous
                previous = sbe
            if xid:
                xids.add(xid)
        per_node.setdefault(node, []).append(gpu_risk(increase, xids))
    return {node: combine_risks(risks) for node, risks in per_node.items()}


def _count(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    return int(value) if isinstance(value, int) else None


def job_risk(nodes: Iterable[str], node_risk: Mapping[str, float]) -> float:
    """The job's risk: any of its nodes failing (nodes without a score count as 0)."""
    return combine_risks(node_risk.get(n, 0.0) for n in nodes)


def job_checkpoint_write_s(model: ModelSpec, cluster: ClusterSpec, layout: ParallelLayout) -> float:
    """Seconds one checkpoint of the job blocks training (`twin.perf.reliability`)."""
    bandwidth = cluster.checkpoint_bandwidth_bytes_per_s or default_checkpoint_bandwidth_bytes_per_s(
        cluster.gpus
    )
    return checkpoint_write_s(checkpoint_bytes(model.params, layout.precision), bandwidth)


@dataclass(frozen=True, slots=True)
class CheckpointAdvice:
    """Advise job `job_id` to checkpoint now: its risk, the nodes driving it, the work at stake (s)."""

    job_id: str
    nodes: tuple[str, ...]
    risk: float
    risky_nodes: tuple[tuple[str, float], ...]  # (node, risk), riskiest first
    work_at_risk_s: float
    checkpoint_write_s: float | None

    def reason(self) -> str:
        worst = ", ".join(f"{n} {r:.2f}" for n, r in self.risky_nodes[:3])
        at_stake = f"{self.work_at_risk_s:.0f} s of work since the last checkpoint"
        return f"failure risk {self.risk:.2f} ({worst}); {at_stake}"

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "nodes": list(self.nodes),
            "risk": self.risk,
            "risky_nodes": [list(pair) for pair in self.risky_nodes],
            "work_at_risk_s": self.work_at_risk_s,
            "checkpoint_write_s": self.checkpoint_write_s,
        }


def advise_checkpoint(
    job_id: str,
    nodes: Sequence[str],
    node_risk: Mapping[str, float],
    *,
    seconds_since_checkpoint: float,
    checkpoint_write_s: float | None = None,
    min_risk: float = MIN_CHECKPOINT_RISK,
) -> CheckpointAdvice | None:
    """Checkpoint advice for a job, or None (see the module docstring for the rule).

    `checkpoint_write_s` None decides on the risk alone."""
    if not math.isfinite(seconds_since_checkpoint) or seconds_since_checkpoint < 0:
        raise ValueError(f"seconds_since_checkpoint(={seconds_since_checkpoint!r}) must be ≥ 0.")
    risk = job_risk(nodes, node_risk)
    if risk < min_risk:
        return None
    if checkpoint_write_s is not None and risk * seconds_since_checkpoint < checkpoint_write_s:
        return None
    risky = sorted(
        ((n, node_risk[n]) for n in nodes if node_risk.get(n, 0.0) > 0.0), key=lambda p: (-p[1], p[0])
    )
    return CheckpointAdvice(
        job_id=job_id,
        nodes=tuple(nodes),
        risk=risk,
        risky_nodes=tuple(risky),
        work_at_risk_s=float(seconds_since_checkpoint),
        checkpoint_write_s=checkpoint_write_s,
    )
