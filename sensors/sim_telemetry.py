"""Per-GPU physical state of the simulated cluster and the readings it produces each poll (vectorised).

Each poll: `begin_interval` starts the energy sums at idle, `add_busy_energy` replaces a job's share of the
interval by the exact integral of its phase power, `set_busy` fills the busy GPUs' instantaneous levels,
and `finish` adds noise, integrates energy and temperature and builds the `NodeSample`s.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from sensors.contract import GpuReading, NodeSample
from sensors.fleet_profile import (
    ACME_GPU_IDLE_W,
    ACME_GPU_TDP_W,
    GPU_TEMP_OFFSET_SD_C,
    IDLE_GPU_UTIL_PCT,
    TEMP_AT_ZERO_POWER_C,
    THERMAL_RESISTANCE_C_PER_W,
)
from sensors.sim_failures import FailureModel
from sensors.sim_jobs import JobRun
from sensors.sim_profiles import GpuProfile

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Thermal time constant of a GPU die on its heatsink, τ in dT/dt = (T_ss − T)/τ. Observation: loaded
# V100s' temperatures "plateaued within ~60 s" (bradrlaw/ai-server PR #15, nvidia-smi dmon), i.e. about
# 3τ. A lumped heatsink (~1 kg of Al/Cu, C ≈ 1 kJ/K, R ≈ 0.09 K/W from `fleet_profile`) would give
# τ = R·C ≈ 90 s, an upper bound, since the die and vapour chamber respond faster than the fins.
THERMAL_TIME_CONSTANT_S: Final = 20.0
# Power noise, fitted to the width of the Acme fleet's loaded peak (p90 → p95: 399 → 410 W, so ≈ 15 W
# around the 392 W compute level, `fleet_profile`): a fixed per-GPU gain (silicon and cooling differ,
# σ = 2 %) times per-sample noise (σ = 3 %), both relative to the phase's power; together
# √(2² + 3²) = 3.6 % = 14 W at 392 W.
POWER_GAIN_SD: Final = 0.02
BUSY_POWER_NOISE_SD: Final = 0.03
# A GPU held at its power cap is regulated to it whatever its silicon: no per-GPU gain, and readings
# within ~0.5 % of the cap (an H100 at a 700 W cap reads 699.81 W in a public nvidia-smi -q log).
CAPPED_POWER_NOISE_SD: Final = 0.005
# Idle readings of one A100-SXM4 vary by about ±1 % between samples (52.5–54.3 W in the PLUS Lab
# nvidia-smi log cited by twin.perf.gpu_presets), relative to the GPU's idle level.
IDLE_POWER_NOISE_SD: Final = 0.01
# Ranks of a synchronous job start each step within ~1 % of a step of each other (every collective is a
# barrier). Assumption; it only blurs the phase edges across a job's GPUs.
STEP_SKEW_FRACTION: Final = 0.01
# Framebuffer an idle GPU reports: nvidia-smi "FB Memory Usage ... Used: 1 MiB" on idle A100-SXM4-80GB
# (public nvidia-smi -q log, driver 555.42.02).
IDLE_MEM_USED_BYTES: Final = 2**20
# NVML nvmlClocksEventReasons bits (NVML API reference, "NvmlClocksThrottleReasons").
THROTTLE_GPU_IDLE: Final = 0x1
THROTTLE_SW_POWER_CAP: Final = 0x4
THROTTLE_HW_SLOWDOWN: Final = 0x8
THROTTLE_HW_THERMAL_SLOWDOWN: Final = 0x40
# HW slowdown "reduc[es] the core clocks by a factor of 2 or more" (NVML nvmlClocksThrottleReasonHwSlowdown).
THERMAL_SLOWDOWN_CLOCK_FACTOR: Final = 0.5


def gpu_uuid(rng: np.random.Generator) -> str:
    """A UUID in NVIDIA's "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" form, from 16 random bytes."""
    h = rng.bytes(16).hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Telemetry:
    """The GPUs' state: energy counters, temperatures, per-GPU constants, and this poll's levels."""

    def __init__(
        self, gpu: GpuProfile, nodes: int, gpus_per_node: int, idle_w: FloatArray, rng: np.random.Generator
    ) -> None:
        n = nodes * gpus_per_node
        self._gpu = gpu
        self._g = gpus_per_node
        self._rng = rng
        self.uuids = [gpu_uuid(rng) for _ in range(n)]
        self.idle_w = idle_w
        self._gain = 1.0 + rng.normal(0.0, POWER_GAIN_SD, n)
        self._temp_offset_c = rng.normal(0.0, GPU_TEMP_OFFSET_SD_C, n)
        self._skew = rng.random(n) * STEP_SKEW_FRACTION
        # Temperature per W above idle on this GPU: the A100 fit rescaled so that equal shares of the
        # idle→TDP range give equal temperatures (as `fleet_profile.rescale_a100_power_w` maps power).
        self._c_per_w = (
            THERMAL_RESISTANCE_C_PER_W * (ACME_GPU_TDP_W - ACME_GPU_IDLE_W) / (gpu.tdp_w - gpu.idle_w)
        )
        self._temp_at_idle_c = TEMP_AT_ZERO_POWER_C + THERMAL_RESISTANCE_C_PER_W * ACME_GPU_IDLE_W
        self.energy_j = np.zeros(n)
        self.temp_c = self.steady_temp_c(idle_w)
        self._gone = np.zeros(n, dtype=np.bool_)  # fell off the bus at an earlier poll
        self._dt = 0.0
        self._delta_e = np.zeros(n)
        self._base_w = np.zeros(n)
        self._util = np.zeros(n)
        self._mem_util = np.zeros(n)
        self._clock = np.zeros(n)
        self._capped = np.zeros(n, dtype=np.bool_)
        self._limit_w = np.full(n, np.inf)  # a capped phase's power: readings stay at or below it
        self._mem_used = np.zeros(n, dtype=np.int64)
        self._busy = np.zeros(n, dtype=np.bool_)

    def steady_temp_c(self, power_w: FloatArray, gpus: IntArray | None = None) -> FloatArray:
        """T_ss = T(idle) + R'·(P − idle) + per-GPU offset, °C (R' = `fleet_profile` R rescaled).

        `power_w` is per GPU: of every GPU, or of the GPUs at indices `gpus`.
        """
        offset = self._temp_offset_c if gpus is None else self._temp_offset_c[gpus]
        rise = self._c_per_w * (power_w - self._gpu.idle_w)
        return np.asarray(self._temp_at_idle_c + rise + offset, dtype=np.float64)

    def gpu_index(self, job: JobRun) -> IntArray:
        """Flat (node-major) indices of the GPUs of `job`'s nodes."""
        nodes = np.asarray(job.nodes, dtype=np.int64)
        return np.asarray((nodes[:, None] * self._g + np.arange(self._g)).ravel(), dtype=np.int64)

    def settle(self, job: JobRun) -> None:
        """Put `job`'s GPUs at the steady temperature of its mean power (a job already running)."""
        g = self.gpu_index(job)
        table = job.table
        free_w = table.mean_power_w - table.mean_capped_power_w
        self.temp_c[g] = self.steady_temp_c(free_w * self._gain[g] + table.mean_capped_power_w, g)

    def begin_interval(self, prev_s: float, now_s: float) -> None:
        """Start a poll over (prev_s, now_s]: every GPU idle until a job says otherwise."""
        self._dt = now_s - prev_s
        np.multiply(self.idle_w, self._dt, out=self._delta_e)
        self._base_w[:] = self.idle_w
        self._util[:] = IDLE_GPU_UTIL_PCT
        self._mem_util[:] = 0.0
        self._clock[:] = self._gpu.idle_sm_clock_mhz
        self._capped[:] = False
        self._limit_w[:] = np.inf
        self._mem_used[:] = IDLE_MEM_USED_BYTES
        self._busy[:] = False

    def add_busy_energy(self, job: JobRun, from_s: float, until_s: float) -> None:
        """Replace idle energy by `job`'s phase energy on its GPUs over [from_s, until_s], J.

        E = T·(gain·ΔE_free + ΔE_capped), with ΔE = E(x₁) − E(x₀) of the phases free of and held at the cap
        and x the GPU's step position (`PhaseTable.energy_per_w`).
        """
        span = until_s - from_s
        if span <= 0.0:
            return
        g = self.gpu_index(job)
        table = job.table
        x0 = job.position(from_s) + self._skew[g]
        x1 = job.position(until_s) + self._skew[g]
        total = table.energy_per_w(x1) - table.energy_per_w(x0)
        capped = table.energy_per_w(x1, capped_only=True) - table.energy_per_w(x0, capped_only=True)
        busy = table.period_s * (self._gain[g] * (total - capped) + capped)
        self._delta_e[g] += busy - self.idle_w[g] * span

    def set_busy(self, job: JobRun, now_s: float) -> None:
        """Set the instantaneous levels of `job`'s GPUs from the phase each is in at `now_s`."""
        g = self.gpu_index(job)
        table = job.table
        phase = table.phase_index(job.position(now_s) + self._skew[g])
        held = table.power_capped[phase]
        self._base_w[g] = table.power_w[phase] * np.where(held, 1.0, self._gain[g])
        self._limit_w[g] = np.where(held, table.power_w[phase], np.inf)
        self._util[g] = table.gpu_util_pct[phase]
        self._mem_util[g] = table.mem_util_pct[phase]
        self._clock[g] = self._gpu.max_sm_clock_mhz * table.clock_factor[phase]
        self._capped[g] = table.power_capped[phase]
        self._mem_used[g] = job.workload.memory_used_bytes
        self._busy[g] = True

    def finish(
        self, now_s: float, node_names: tuple[str, ...], failures: FailureModel, node_cap_w: FloatArray
    ) -> tuple[NodeSample, ...]:
        """Noise, energy and temperature for the poll; one `NodeSample` per reporting node."""
        gpu, n = self._gpu, self.idle_w.size
        relative_sd = np.where(
            self._busy,
            np.where(self._capped, CAPPED_POWER_NOISE_SD, BUSY_POWER_NOISE_SD),
            IDLE_POWER_NOISE_SD,
        )
        cap = np.repeat(np.where(np.isnan(node_cap_w), np.inf, node_cap_w), self._g)
        upper = np.minimum(cap, self._limit_w)
        power = np.clip(self._base_w * (1.0 + self._rng.standard_normal(n) * relative_sd), 0.0, upper)

        silent = np.repeat(failures.node_silent, self._g)
        live = ~silent & ~failures.off_bus
        delta_e = np.maximum(self._delta_e, 0.0)
        self.energy_j += np.where(live, delta_e, 0.0)
        mean_w = delta_e / self._dt if self._dt > 0.0 else self._base_w
        steady = self.steady_temp_c(mean_w)
        decay = math.exp(-self._dt / THERMAL_TIME_CONSTANT_S)
        self.temp_c = np.where(live, steady + (self.temp_c - steady) * decay, self.temp_c)

        hot = self.temp_c > gpu.slowdown_temp_c
        clock = np.where(hot, self._clock * THERMAL_SLOWDOWN_CLOCK_FACTOR, self._clock)
        throttle: IntArray = (
            np.where(self._busy, 0, THROTTLE_GPU_IDLE)
            | np.where(self._capped, THROTTLE_SW_POWER_CAP, 0)
            | np.where(hot, THROTTLE_HW_SLOWDOWN | THROTTLE_HW_THERMAL_SLOWDOWN, 0)
        ).astype(np.int64)

        readings = self._readings(power, clock, throttle, failures)
        fell = failures.off_bus & ~self._gone
        self._gone |= failures.off_bus
        visible = ~silent & (~self._gone | fell)
        per_node = np.bincount(np.flatnonzero(visible) // self._g, minlength=len(node_names)).tolist()
        samples: list[NodeSample] = []
        start = 0
        for node, count in enumerate(per_node):
            if count:
                samples.append(NodeSample(node_names[node], now_s, tuple(readings[start : start + count])))
            start += count
        return tuple(samples)

    def _readings(
        self,
        power: FloatArray,
        clock: FloatArray,
        throttle: IntArray,
        failures: FailureModel,
    ) -> list[GpuReading]:
        """GpuReadings of the GPUs still visible (a GPU that fell off the bus this poll: its last one)."""
        silent = np.repeat(failures.node_silent, self._g)
        fell = failures.off_bus & ~self._gone
        idx = np.flatnonzero(~silent & (~failures.off_bus | fell))
        g, total = self._g, self._gpu.hbm_bytes
        cols = zip(
            idx.tolist(),
            power[idx].tolist(),
            self.energy_j[idx].tolist(),
            self._util[idx].tolist(),
            self._mem_util[idx].tolist(),
            self._mem_used[idx].tolist(),
            np.round(self.temp_c[idx]).tolist(),
            clock[idx].tolist(),
            failures.sbe[idx].tolist(),
            failures.dbe[idx].tolist(),
            failures.xid[idx].tolist(),
            throttle[idx].tolist(),
            fell[idx].tolist(),
            strict=True,
        )
        uuids = self.uuids
        return [
            GpuReading(i % g, p, uuids[i], e, u, mu, mem, total, t, c, sbe, dbe, xid, thr)
            if not lost
            # The device no longer answers: the XID is all its last reading carries.
            else GpuReading(i % g, 0.0, uuids[i], ecc_sbe_total=sbe, ecc_dbe_total=dbe, xid_last=xid)
            for i, p, e, u, mu, mem, t, c, sbe, dbe, xid, thr, lost in cols
        ]
