"""Power per node over simulated time, cluster IT power as a step function, and energy.

Node power (IT, W), per GPU of the node, by what the node is doing:
- a job computing on it: the job's average GPU power from `twin.perf` plus the GPU preset's host share
  (`node_power_w`, as `twin.perf.estimate` computes cluster power); checkpoint writes are inside the
  computing segments and drawn at that power (they are ~1 % of the time at Daly's interval);
- allocated but not computing (restarting, waiting for a replacement), idle, or stale: the GPU's idle
  power plus an idle host share (`IDLE_HOST_POWER_FRACTION` of the preset's host power);
- failed or repairing: 0 W. ASSUMPTION: a node out for repair is drained and powered off.
Facility energy multiplies IT energy by the cluster's PUE (`twin.perf.power.energy_kwh`).
"""

from __future__ import annotations

import math

import numpy as np

from twin.perf.gpu_presets import A100_SXM_80GB_IDLE_W, A100_SXM_TDP_W, DGX_A100_MAX_POWER_W, GPUS_PER_DGX
from twin.perf.specs import GpuSpec

# Idle host power as a fraction of the host power at training load. Shanghai AI Lab's Seren GPU servers
# (8 × A100-SXM4-80GB) draw 1,386–1,392 W at the lowest percentiles of IPMI system power
# (../shared/traces/shanghai-ai-lab-acme/server_power_w_cdf_ipmi_seren.csv; Hu et al., NSDI'24); minus
# 8 GPUs at their 60 W idle floor that leaves ~910 W of host, against the 3,300 W host share of a DGX A100
# at its 6.5 kW rating (the `host_power_w` convention of twin.perf.gpu_presets): 0.276.
SEREN_GPU_SERVER_FLOOR_W = 1_390.0
IDLE_HOST_POWER_FRACTION = (SEREN_GPU_SERVER_FLOOR_W - GPUS_PER_DGX * A100_SXM_80GB_IDLE_W) / (
    DGX_A100_MAX_POWER_W - GPUS_PER_DGX * A100_SXM_TDP_W
)
JOULES_PER_KWH = 3.6e6


def busy_node_power_w(gpu: GpuSpec, gpus_per_node: int, gpu_power_w: float) -> float:
    """A node computing for a job whose GPUs average `gpu_power_w`."""
    return gpus_per_node * (gpu_power_w + gpu.host_power_w)


def idle_node_power_w(gpu: GpuSpec, gpus_per_node: int) -> float:
    """A powered, healthy node with no kernel running."""
    return gpus_per_node * (gpu.idle_w + IDLE_HOST_POWER_FRACTION * gpu.host_power_w)


class PowerMeter:
    """Sums the power of named consumers (a job, the idle pool) and integrates energy.

    `set(key, watts, now)` changes one consumer's power at time `now`; energy per key and in total is
    integrated lazily, so a change is O(1). Every change of the total is kept as a step-function point.
    """

    __slots__ = ("_energy_j", "_since", "_total_j", "_total_since", "_watts", "total_w", "trace_t", "trace_w")

    def __init__(self) -> None:
        self._watts: dict[str, float] = {}
        self._since: dict[str, float] = {}
        self._energy_j: dict[str, float] = {}
        self.total_w = 0.0
        self._total_since = 0.0
        self._total_j = 0.0
        self.trace_t: list[float] = [0.0]
        self.trace_w: list[float] = [0.0]

    def set(self, key: str, watts: float, now: float) -> None:
        old = self._watts.get(key, 0.0)
        if old == watts:
            return
        self._energy_j[key] = self._energy_j.get(key, 0.0) + old * (now - self._since.get(key, now))
        self._since[key] = now
        self._watts[key] = watts
        self._total_j += self.total_w * (now - self._total_since)
        self._total_since = now
        self.total_w += watts - old
        if self.trace_t[-1] == now:
            self.trace_w[-1] = self.total_w
        else:
            self.trace_t.append(now)
            self.trace_w.append(self.total_w)

    def energy_j(self, key: str, now: float) -> float:
        """Energy of one consumer from time 0 to `now`."""
        return self._energy_j.get(key, 0.0) + self._watts.get(key, 0.0) * (now - self._since.get(key, now))

    def total_energy_j(self, now: float) -> float:
        return self._total_j + self.total_w * (now - self._total_since)


def binned_mean_power_w(
    times_s: np.ndarray, watts: np.ndarray, horizon_s: float, bin_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean power per bin of a step function (value `watts[i]` from `times_s[i]` until the next point).

    Returns (bin start times, mean W). Exact: energy is linear between change points, so interpolating
    the cumulative energy at the bin edges integrates the step function without error.
    """
    if bin_s <= 0 or not math.isfinite(bin_s):
        raise ValueError(f"bin_s(={bin_s}) must be > 0.")
    t = np.append(np.asarray(times_s, dtype=np.float64), horizon_s)
    w = np.asarray(watts, dtype=np.float64)
    energy = np.concatenate(([0.0], np.cumsum(w * np.diff(t))))
    edges = np.arange(0.0, horizon_s, bin_s)
    edges = np.append(edges, horizon_s)
    at_edges = np.interp(edges, t, energy)
    return edges[:-1], np.diff(at_edges) / np.diff(edges)
