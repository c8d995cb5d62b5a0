"""Failures of the simulated cluster and their precursors, drawn from a seeded generator.

Rates come from the root causes of the 419 unexpected interruptions of Llama 3 405B pre-training over a
54-day snapshot on (assumed) 16,384 H100 GPUs (Dubey et al. 2024, "The Llama 3 Herd of Models",
arXiv:2407.21783, §3.3.4 and Table 5), grouped by what the telemetry shows:

- a GPU's memory fails (Table 5 "GPU HBM3 Memory" 72 + "GPU SRAM Memory" 19): correctable (single-bit)
  ECC errors rise for a while, rows are remapped (XID 63), then a double-bit error (XID 48) stops the job
  and the GPU is drained. A share of such error bursts stops on its own without a failure;
- a GPU falls off the bus (XID 79) without warning ("Faulty GPU" 148, "GPU System Processor" 17, "Silent
  Data Corruption" 6, "GPU Thermal Interface + Sensor" 6): it disappears from its node's readings;
- a node goes silent (host rows: NIC 7, SSD 3, Power Supply 3, Server Chassis 2, IO Expansion Board 2,
  CPU 2, System Memory 2, and "Host Maintenance" 32): it stops reporting;
- the job alone is interrupted (software bug 54, NCCL watchdog 7, dependency 2, network switch/cable 35):
  `sensors.sim_jobs` draws those.

DBE and falling off the bus are also the two GPU failure modes of OLCF Titan's 18,688 K20X GPUs (3,871
DBE and 1,486 off-the-bus deaths, 2013–2019; Ostrouchov et al., SC'20, "GPU Lifetimes on Titan
Supercomputer"), which supports the split. Every rate is per GPU-second and scales with
`failure_rate_scale`. Failures happen at poll times (the first poll at or after the drawn time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from sensors.sim_profiles import SimulationError, require_finite

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SECONDS_PER_HOUR: Final = 3600.0
# Llama 3 snapshot exposure: 16,384 GPUs × 54 days × 24 h (Dubey et al. 2024, §3.3.4; GPU count assumed).
LLAMA3_SNAPSHOT_GPU_HOURS: Final = 16_384 * 54 * 24
# Table 5 counts, grouped as in the module docstring (sum: 419, the report's unexpected interruptions).
GPU_MEMORY_INTERRUPTIONS: Final = 72 + 19
GPU_OFF_BUS_INTERRUPTIONS: Final = 148 + 17 + 6 + 6
NODE_SILENT_INTERRUPTIONS: Final = 7 + 3 + 3 + 2 + 2 + 2 + 2 + 32
JOB_ONLY_INTERRUPTIONS: Final = 54 + 7 + 2 + 35

GPU_MEMORY_FAILURES_PER_GPU_S: Final = GPU_MEMORY_INTERRUPTIONS / LLAMA3_SNAPSHOT_GPU_HOURS / SECONDS_PER_HOUR
GPU_OFF_BUS_PER_GPU_S: Final = GPU_OFF_BUS_INTERRUPTIONS / LLAMA3_SNAPSHOT_GPU_HOURS / SECONDS_PER_HOUR
NODE_SILENT_PER_GPU_S: Final = NODE_SILENT_INTERRUPTIONS / LLAMA3_SNAPSHOT_GPU_HOURS / SECONDS_PER_HOUR
JOB_ONLY_PER_GPU_S: Final = JOB_ONLY_INTERRUPTIONS / LLAMA3_SNAPSHOT_GPU_HOURS / SECONDS_PER_HOUR

# Share of correctable-error bursts that stop without a double-bit error. Assumption: on Titan most GPUs
# that logged single-bit errors never failed (Tiwari et al., HPCA'15, "Understanding GPU Errors on
# Large-scale HPC Systems"); half is taken, so a precursor is a warning, not a certainty.
PRECURSOR_FALSE_ALARM_SHARE: Final = 0.5
# Mean time from the first correctable error of a burst to its end (a DBE or, for a false alarm, silence).
# Assumption: hours. A pending row remap only takes effect at the next GPU reset (NVML
# nvmlDeviceGetRemappedRows: "A reset will be required to actually remap the row"), so operators see the
# warning before the failure; how long before is not published. Tests shorten it.
DEFAULT_PRECURSOR_LEAD_S: Final = 6 * SECONDS_PER_HOUR
# Expected correctable errors over a whole burst: hundreds, as on an A100-SXM4-80GB with a pending row
# remap in a public nvidia-smi -q log ("DRAM Correctable: 353", "Remapped Rows ... Pending: Yes").
PRECURSOR_SBE_EXPECTED_TOTAL: Final = 300.0
# Correctable errors after which a row is marked for remapping (XID 63, "Row Remapper: New row marked for
# remapping, reset gpu to activate", as quoted in stas00/ml-engineering, compute/accelerator/nvidia/debug.md).
# Assumption: the second one. NVIDIA remaps rows on repeated correctable errors at one address; the
# burst's errors are taken to hit the same row.
ROW_REMAP_SBE_THRESHOLD: Final = 2

# XID codes (NVIDIA "Xid Errors" catalogue).
XID_NONE: Final = 0
XID_DBE: Final = 48  # double-bit ECC error
XID_ROW_REMAP: Final = 63  # ECC page retirement or row remapping recording event
XID_FALLEN_OFF_BUS: Final = 79  # GPU has fallen off the bus


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    """What happened at one poll: GPU indices (flat, node-major) and node indices."""

    dbe_gpus: IntArray
    off_bus_gpus: IntArray
    silent_nodes: IntArray


class FailureModel:
    """Per-GPU error counters and failure state of a cluster, advanced once per poll (vectorised)."""

    def __init__(
        self,
        nodes: int,
        gpus_per_node: int,
        *,
        failure_rate_scale: float,
        precursor_lead_s: float,
        rng: np.random.Generator,
    ) -> None:
        self._scale = require_finite("failure_rate_scale", failure_rate_scale, minimum=0.0)
        self._lead_s = require_finite("precursor_lead_s", precursor_lead_s, minimum=0.0, strict=True)
        self._rng = rng
        self._gpus_per_node = gpus_per_node
        n = nodes * gpus_per_node
        self.sbe = np.zeros(n, dtype=np.int64)
        self.dbe = np.zeros(n, dtype=np.int64)
        self.xid = np.zeros(n, dtype=np.int64)
        self.drained = np.zeros(n, dtype=np.bool_)  # failed with a DBE: visible, never scheduled again
        self.off_bus = np.zeros(n, dtype=np.bool_)
        self.node_silent = np.zeros(nodes, dtype=np.bool_)
        self._degrading = np.zeros(n, dtype=np.bool_)
        self._onset_s = np.zeros(n, dtype=np.float64)
        self._end_s = np.full(n, np.inf, dtype=np.float64)
        self._fails = np.zeros(n, dtype=np.bool_)
        self._scheduled: list[tuple[float, int, int]] = []  # (at_s, flat GPU index, XID)

    def schedule_gpu_failure(self, gpu_index: int, at_s: float, xid: int = XID_FALLEN_OFF_BUS) -> None:
        """Make GPU `gpu_index` (flat, node-major) fail at the first poll at or after `at_s`: XID 79 (falls
        off the bus) or XID 48 (double-bit ECC error), whatever the random draws say (demos, tests)."""
        if not 0 <= gpu_index < self.sbe.size:
            raise SimulationError(f"gpu_index(={gpu_index}) must be in [0, {self.sbe.size}).")
        if xid not in (XID_FALLEN_OFF_BUS, XID_DBE):
            raise SimulationError(f"xid(={xid}) must be {XID_FALLEN_OFF_BUS} or {XID_DBE}.")
        self._scheduled.append((require_finite("at_s", at_s), gpu_index, xid))

    def _scheduled_due(self, now_s: float) -> tuple[IntArray, IntArray]:
        """(DBE GPUs, off-bus GPUs) of the scheduled failures due by `now_s`, applied."""
        due = [(g, xid) for at_s, g, xid in self._scheduled if at_s <= now_s]
        self._scheduled = [item for item in self._scheduled if item[0] > now_s]
        alive = ~self.drained & ~self.off_bus
        dbe = np.array(sorted({g for g, x in due if x == XID_DBE and alive[g]}), dtype=np.int64)
        off = np.array(sorted({g for g, x in due if x == XID_FALLEN_OFF_BUS and alive[g]}), dtype=np.int64)
        self.dbe[dbe] += 1
        self.xid[dbe] = XID_DBE
        self.drained[dbe] = True
        self.off_bus[off] = True
        self.xid[off] = XID_FALLEN_OFF_BUS
        self._degrading[np.concatenate([dbe, off])] = False
        return dbe, off

    @property
    def scale(self) -> float:
        """The failure-rate multiplier."""
        return self._scale

    def node_healthy(self) -> BoolArray:
        """Nodes a job may be placed on: reporting, and no GPU drained or off the bus."""
        bad = (self.drained | self.off_bus).reshape(-1, self._gpus_per_node).any(axis=1)
        return np.asarray(~bad & ~self.node_silent, dtype=np.bool_)

    def advance(self, prev_s: float, now_s: float) -> FailureOutcome:
        """Draw what happens in (prev_s, now_s] and apply it; failures are stamped `now_s`."""
        forced_dbe, forced_off = self._scheduled_due(now_s)
        outcome = self._advance_random(prev_s, now_s)
        return FailureOutcome(
            np.union1d(outcome.dbe_gpus, forced_dbe).astype(np.int64),
            np.union1d(outcome.off_bus_gpus, forced_off).astype(np.int64),
            outcome.silent_nodes,
        )

    def _advance_random(self, prev_s: float, now_s: float) -> FailureOutcome:
        empty = np.zeros(0, dtype=np.int64)
        dt = now_s - prev_s
        if dt <= 0.0 or self._scale == 0.0:
            return FailureOutcome(empty, empty, empty)
        gpu_silent = np.repeat(self.node_silent, self._gpus_per_node)
        alive = ~self.drained & ~self.off_bus & ~gpu_silent

        # Onsets: one uniform per GPU splits into "memory burst starts", "falls off the bus", nothing.
        onset_rate = GPU_MEMORY_FAILURES_PER_GPU_S / (1.0 - PRECURSOR_FALSE_ALARM_SHARE)
        p_burst = -np.expm1(-onset_rate * self._scale * dt)
        p_off = -np.expm1(-GPU_OFF_BUS_PER_GPU_S * self._scale * dt)
        u = self._rng.random(self.sbe.size)
        starts = alive & ~self._degrading & (u < p_burst)
        falls = alive & (u >= p_burst) & (u < p_burst + p_off)

        # Correctable errors of ongoing bursts: a Poisson count whose rate ramps linearly from 0 at the
        # onset to its peak at the end, so the expected total over a burst is PRECURSOR_SBE_EXPECTED_TOTAL.
        burst = np.flatnonzero(self._degrading & alive)
        if burst.size:
            length = self._end_s[burst] - self._onset_s[burst]
            x0 = np.clip((prev_s - self._onset_s[burst]) / length, 0.0, 1.0)
            x1 = np.clip((now_s - self._onset_s[burst]) / length, 0.0, 1.0)
            new = self._rng.poisson(PRECURSOR_SBE_EXPECTED_TOTAL * (x1**2 - x0**2))
            before = self.sbe[burst]
            self.sbe[burst] = before + new
            remapped = (before < ROW_REMAP_SBE_THRESHOLD) & (before + new >= ROW_REMAP_SBE_THRESHOLD)
            self.xid[burst[remapped]] = XID_ROW_REMAP

        # Bursts that end now: a DBE, or silence for a false alarm.
        ending = np.flatnonzero(self._degrading & alive & (self._end_s <= now_s))
        dbe = ending[self._fails[ending]]
        self._degrading[ending] = False
        falls[dbe] = False
        self.dbe[dbe] += 1
        self.xid[dbe] = XID_DBE
        self.drained[dbe] = True

        started = np.flatnonzero(starts)
        if started.size:
            self._degrading[started] = True
            self._onset_s[started] = now_s
            self._end_s[started] = now_s + self._rng.exponential(self._lead_s, started.size)
            self._fails[started] = self._rng.random(started.size) >= PRECURSOR_FALSE_ALARM_SHARE

        off = np.flatnonzero(falls)
        self.off_bus[off] = True
        self.xid[off] = XID_FALLEN_OFF_BUS
        self._degrading[off] = False

        p_node = -np.expm1(-NODE_SILENT_PER_GPU_S * self._gpus_per_node * self._scale * dt)
        silent = np.flatnonzero(~self.node_silent & (self._rng.random(self.node_silent.size) < p_node))
        self.node_silent[silent] = True
        return FailureOutcome(dbe.astype(np.int64), off.astype(np.int64), silent.astype(np.int64))
