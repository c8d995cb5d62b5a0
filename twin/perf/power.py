"""GPU power from the step's phases, the power cap's slowdown, node overhead and PUE.

A GPU's average power over a step is the time-weighted mean of its phases: dense compute, exposed
communication (NCCL kernels keep a few SMs, HBM and links busy), and waiting (pipeline bubble, host
work). Under a power cap the compute phase runs at a lower clock: dynamic power scales about as f·V²
with V roughly proportional to f in the DVFS range, so P_dyn ∝ f³ (Mudge 2001, "Power: a first-class
architectural design constraint"); compute time scales with 1/f, communication does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.perf.batch import FloatArray
from twin.perf.specs import GpuSpec

# Power while running dense training kernels, as a fraction of TDP: loaded A100s in the Shanghai AI Lab
# Acme clusters sit at 395–404 W at the 90th percentile of DCGM power on 400 W parts
# (../shared/traces/shanghai-ai-lab-acme/gpu_power_w_cdf.csv; Hu et al., NSDI'24).
COMPUTE_POWER_FRACTION_OF_TDP = 0.98
# Power during exposed communication and while waiting, as a fraction of the idle→TDP range.
# Assumption (no public per-phase measurement): NCCL kernels use few SMs but full HBM/NVLink; waiting
# GPUs keep their clocks up. Corrected per cluster from live telemetry (online calibration).
COMMUNICATION_POWER_FRACTION = 0.4
WAITING_POWER_FRACTION = 0.15
# Exponent of dynamic power in clock frequency (P ∝ f·V², V ∝ f; Mudge 2001).
POWER_FREQUENCY_EXPONENT = 3.0


@dataclass(frozen=True, slots=True)
class PowerArrays:
    """Per-layout average GPU power and the compute slowdown the power cap causes."""

    power_per_gpu_w: FloatArray
    compute_slowdown: FloatArray  # ≥ 1: compute time multiplier under the cap


def compute_phase_power_w(gpu: GpuSpec) -> float:
    """Uncapped power of one GPU while computing."""
    return gpu.tdp_w * COMPUTE_POWER_FRACTION_OF_TDP


def cap_slowdown(gpu: GpuSpec, power_cap_w: float | None) -> float:
    """Compute-time multiplier when the GPU is capped at `power_cap_w` (1.0 when the cap does not bind)."""
    uncapped = compute_phase_power_w(gpu)
    if power_cap_w is None or power_cap_w >= uncapped:
        return 1.0
    ratio = (power_cap_w - gpu.idle_w) / (uncapped - gpu.idle_w)
    return float(ratio ** (-1.0 / POWER_FREQUENCY_EXPONENT))


def average_power_w(
    gpu: GpuSpec,
    power_cap_w: float | None,
    compute_s: FloatArray,
    communication_s: FloatArray,
    waiting_s: FloatArray,
) -> FloatArray:
    """Time-weighted average GPU power over a step whose phases last the given (capped) seconds."""
    compute_w = min(compute_phase_power_w(gpu), power_cap_w or np.inf)
    dynamic = gpu.tdp_w - gpu.idle_w
    comm_w = gpu.idle_w + COMMUNICATION_POWER_FRACTION * dynamic
    wait_w = gpu.idle_w + WAITING_POWER_FRACTION * dynamic
    if power_cap_w is not None:
        comm_w = min(comm_w, power_cap_w)
        wait_w = min(wait_w, power_cap_w)
    total = compute_s + communication_s + waiting_s
    energy = compute_w * compute_s + comm_w * communication_s + wait_w * waiting_s
    return np.asarray(np.where(total > 0, energy / np.maximum(total, 1e-30), gpu.idle_w), dtype=np.float64)


def node_power_w(gpu_power_w: FloatArray | float, gpu: GpuSpec) -> FloatArray:
    """IT power per GPU including its share of the host (CPUs, NICs, switches, fans)."""
    return np.asarray(gpu_power_w, dtype=np.float64) + gpu.host_power_w


def energy_kwh(it_power_w: FloatArray | float, duration_s: FloatArray | float, pue: float) -> FloatArray:
    """Facility energy: IT power × time × PUE (The Green Grid, "PUE: a comprehensive examination", 2012)."""
    return np.asarray(np.asarray(it_power_w) * np.asarray(duration_s) * pue / 3.6e6, dtype=np.float64)
