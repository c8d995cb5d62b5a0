"""The simulated cluster's inputs, computed with the performance model (DESIGN §1: `sensors` gets plain data).

`workload_profile(scenario)` turns a scenario (DESIGN §3) into the `sensors.simulated.WorkloadProfile` a
simulated job runs: the step time and its phases from `twin.perf.estimate`'s breakdown, the phase power
levels of `twin.perf.power`, the per-GPU memory estimate and the checkpoint interval of
`twin.perf.reliability`. `gpu_profile(name)` turns a GPU preset into a `GpuProfile`.

Phases, in step order (the view of the first pipeline stage):
- compute: `compute_s` at min(COMPUTE_POWER_FRACTION_OF_TDP · TDP, cap), at a lower SM clock when capped;
- waiting: the pipeline bubble `pp_bubble_s`, at idle + WAITING_POWER_FRACTION · (TDP − idle);
- communication: every other part of the breakdown (exposed TP/CP/DP/ZeRO-3 collectives, pipeline
  sends, offload transfers, optimizer step), at idle + COMMUNICATION_POWER_FRACTION · (TDP − idle).
These are `twin.perf.estimate`'s groups and levels, so Σ fraction · power equals `power_per_gpu_w`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from sensors.simulated import GpuProfile, PhaseProfile, WorkloadProfile
from twin.errors import ScenarioError
from twin.perf.estimate import estimate
from twin.perf.gpu_presets import gpu_preset
from twin.perf.power import (
    COMMUNICATION_POWER_FRACTION,
    COMPUTE_POWER_FRACTION_OF_TDP,
    POWER_FREQUENCY_EXPONENT,
    WAITING_POWER_FRACTION,
)
from twin.perf.reliability import (
    DEFAULT_CHECKPOINT_BANDWIDTH_BYTES_PER_S_PER_GPU,
    checkpoint_bytes,
    checkpoint_write_s,
    daly_interval_s,
    job_mtbf_s,
)
from twin.perf.specs import GpuSpec
from twin.scenario import Scenario, layout_json, parse

# DCGM_FI_DEV_GPU_UTIL is the share of time at least one kernel runs. A training step has one in every
# phase: GEMMs while computing, NCCL kernels while communicating, a blocked receive during the pipeline
# bubble; the Acme fleet's allocated GPUs report 97–100 % (sensors.fleet_profile, p40–p100).
PHASE_GPU_UTIL_PCT: Final[Mapping[str, float]] = MappingProxyType(
    {"compute": 100.0, "waiting": 100.0, "communication": 100.0}
)
# DCGM_FI_DEV_MEM_COPY_UTIL (HBM busy) while computing. Assumption: large GEMMs are compute-bound and
# keep HBM about a third busy; no public per-phase measurement was found.
COMPUTE_MEM_UTIL_PCT: Final = 35.0
# A GPU blocked in a receive moves no data.
WAITING_MEM_UTIL_PCT: Final = 0.0
# While communicating, a ring reduction reads and writes every byte it sends: HBM is busy
# 2 × link bandwidth / HBM bandwidth of the time (29 % on an A100: 2 × 300 / 2,039 GB/s).
RING_HBM_ACCESSES_PER_BYTE_SENT: Final = 2.0

# SM clocks and slowdown temperature per preset (nvidia-smi -q "Max Clocks SM", idle "Clocks SM",
# "GPU Slowdown Temp"). A100: NVIDIA/nvidia-docker#1648 (max 1,410 MHz) and a public 8×A100-SXM4-80GB log
# (idle 210 MHz, slowdown 89 °C). H100/H200: public nvidia-smi -q logs of "NVIDIA H100 80GB HBM3" and an
# HBM3e (3,201 MHz memory) H200 node: max 1,980 MHz, idle 345 MHz. V100: Volta white paper, GPU Boost
# 1,530 MHz (SXM2) and V100 PCIe datasheet, 1,380 MHz. MI300X: AMD data sheet, peak engine clock
# 2,100 MHz. Assumptions where no reading was found: idle clocks of V100 (Ampere's 210 MHz), of PCIe
# H100, Blackwell and MI300X (Hopper's 345 MHz); Blackwell max clocks (Hopper's 1,980 MHz); every
# slowdown temperature but the A100's (the A100's 89 °C).
A100_SLOWDOWN_TEMP_C: Final = 89.0


@dataclass(frozen=True, slots=True)
class GpuClocks:
    """Clocks (MHz) and slowdown temperature (°C) of one GPU preset."""

    max_sm_clock_mhz: float
    idle_sm_clock_mhz: float
    slowdown_temp_c: float = A100_SLOWDOWN_TEMP_C


GPU_CLOCKS: Final[Mapping[str, GpuClocks]] = MappingProxyType(
    {
        "v100-sxm2-32gb": GpuClocks(1530.0, 210.0),
        "v100-pcie-32gb": GpuClocks(1380.0, 210.0),
        "a100-sxm-40gb": GpuClocks(1410.0, 210.0),
        "a100-sxm-80gb": GpuClocks(1410.0, 210.0),
        "h100-sxm": GpuClocks(1980.0, 345.0),
        "h100-pcie": GpuClocks(1755.0, 345.0),  # H100 PCIe datasheet: max boost 1,755 MHz
        "h200": GpuClocks(1980.0, 345.0),
        "b200": GpuClocks(1980.0, 345.0),
        "gb200": GpuClocks(1980.0, 345.0),
        "mi300x": GpuClocks(2100.0, 345.0),
    }
)


def gpu_profile(gpu: str | GpuSpec) -> GpuProfile:
    """The simulated cluster's `GpuProfile` for a GPU preset name or spec (TDP, idle power, HBM, clocks)."""
    spec = gpu_preset(gpu) if isinstance(gpu, str) else gpu
    clocks = GPU_CLOCKS.get(spec.name)
    if clocks is None:
        raise ScenarioError(f"gpu(={spec.name!r}) has no clock data; known: {', '.join(GPU_CLOCKS)}.")
    return GpuProfile(
        name=spec.name,
        tdp_w=spec.tdp_w,
        idle_w=spec.idle_w,
        hbm_bytes=int(spec.hbm_bytes),
        max_sm_clock_mhz=clocks.max_sm_clock_mhz,
        idle_sm_clock_mhz=clocks.idle_sm_clock_mhz,
        slowdown_temp_c=clocks.slowdown_temp_c,
    )


def uncapped_phase_power_w(gpu: GpuSpec) -> dict[str, float]:
    """Power per phase without a cap: twin.perf.power.average_power_w's three levels, W."""
    dynamic = gpu.tdp_w - gpu.idle_w
    return {
        "compute": gpu.tdp_w * COMPUTE_POWER_FRACTION_OF_TDP,
        "waiting": gpu.idle_w + WAITING_POWER_FRACTION * dynamic,
        "communication": gpu.idle_w + COMMUNICATION_POWER_FRACTION * dynamic,
    }


def capped_clock_factor(gpu: GpuSpec, uncapped_w: float, power_cap_w: float | None) -> float:
    """SM clock share in a phase drawing `uncapped_w` under `power_cap_w`: ((cap − idle)/(P − idle))^(1/3).

    The inverse of twin.perf.power.cap_slowdown (P_dyn ∝ f³, Mudge 2001); 1 when the cap does not bind.
    """
    if power_cap_w is None or power_cap_w >= uncapped_w:
        return 1.0
    ratio = (power_cap_w - gpu.idle_w) / (uncapped_w - gpu.idle_w)
    return float(ratio ** (1.0 / POWER_FREQUENCY_EXPONENT))


def communication_mem_util_pct(gpu: GpuSpec) -> float:
    """HBM busy share while communicating: 2 × intra-node link bandwidth / HBM bandwidth, %."""
    ratio = (
        RING_HBM_ACCESSES_PER_BYTE_SENT * gpu.intra_node_bandwidth_bytes_per_s / gpu.hbm_bandwidth_bytes_per_s
    )
    return min(100.0, 100.0 * ratio)


def workload_profile(
    scenario: Mapping[str, Any] | Scenario, *, efficiency_scale: float = 1.0
) -> WorkloadProfile:
    """The `WorkloadProfile` of a scenario's job on its cluster (raises `ScenarioError`).

    A layout that does not fit in HBM cannot run: `ScenarioError` with the estimate's reason.
    """
    parsed = scenario if isinstance(scenario, Scenario) else parse(scenario)
    est = estimate(parsed.model, parsed.cluster, parsed.layout, parsed.training, efficiency_scale)
    if not est.fits:
        raise ScenarioError(f"the job cannot run: {est.reason}.")
    breakdown = est.step.breakdown_s
    step_s = est.step.step_time_s
    durations = {
        "compute": breakdown["compute_s"],
        "waiting": breakdown["pp_bubble_s"],
        "communication": sum(v for k, v in breakdown.items() if k not in ("compute_s", "pp_bubble_s")),
    }
    gpu = parsed.cluster.gpu
    cap = parsed.cluster.power_cap_w
    uncapped = uncapped_phase_power_w(gpu)
    mem_util = {
        "compute": COMPUTE_MEM_UTIL_PCT,
        "waiting": WAITING_MEM_UTIL_PCT,
        "communication": communication_mem_util_pct(gpu),
    }
    phases = tuple(
        PhaseProfile(
            name=name,
            fraction=seconds / step_s,
            power_w=min(uncapped[name], cap if cap is not None else float("inf")),
            gpu_util_pct=PHASE_GPU_UTIL_PCT[name],
            mem_util_pct=mem_util[name],
            scales_with_clock=name in ("compute", "waiting"),
            clock_factor=capped_clock_factor(gpu, uncapped[name], cap),
        )
        for name, seconds in durations.items()
    )
    return WorkloadProfile(
        name=parsed.model.name,
        step_time_s=step_s,
        phases=phases,
        memory_used_bytes=round(est.memory.total_bytes),
        tokens_per_step=float(parsed.training.tokens_per_step),
        gpus=parsed.cluster.gpus,
        checkpoint_interval_s=_checkpoint_interval_s(parsed),
        model={"name": parsed.model.name, "params": parsed.model.params},
        layout=layout_json(est.layout),
    )


def _checkpoint_interval_s(parsed: Scenario) -> float:
    """Daly's optimal compute time between checkpoints for the job (twin.perf.reliability), s."""
    cluster = parsed.cluster
    bandwidth = cluster.checkpoint_bandwidth_bytes_per_s or (
        DEFAULT_CHECKPOINT_BANDWIDTH_BYTES_PER_S_PER_GPU * cluster.gpus
    )
    write_s = checkpoint_write_s(checkpoint_bytes(parsed.model.params, parsed.layout.precision), bandwidth)
    return daly_interval_s(write_s, job_mtbf_s(cluster.gpus, cluster.failure_rate_scale))
