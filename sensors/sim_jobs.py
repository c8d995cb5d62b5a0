"""A simulated training job: its step clock, its phases (under a power cap) and the events it emits.

A job's progress is a continuous step count x(t) = x₀ + (t − t₀) / T with T the step period; step k
completes when x crosses k, and the fractional part of x says where in the step the job is, hence which
phase (compute, waiting, communication...) its GPUs are in. A change of period (a power cap) re-anchors
(t₀, x₀) at the change so progress stays continuous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from sensors.contract import JobEvent, JobEventKind
from sensors.sim_profiles import JobSpec, WorkloadProfile

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Exponent of dynamic power in clock frequency under DVFS: P ∝ f·V², V ∝ f, so P ∝ f³ (Mudge 2001,
# "Power: a first-class architectural design constraint"; the same law as twin.perf.power).
POWER_FREQUENCY_EXPONENT: Final = 3.0


class JobState(StrEnum):
    PENDING = "pending"  # not started yet
    RUNNING = "running"
    RESTARTING = "restarting"  # failed; waits for its restart delay and for healthy nodes
    ENDED = "ended"
    FAILED = "failed"  # failed for good (restarts disabled)


@dataclass(frozen=True, slots=True)
class PhaseTable:
    """A workload's phases as arrays, after a power cap: where each starts in the step and its levels.

    `knots` are the cumulative step fractions at the phase boundaries (0 … 1); `energy_knots` the
    integral of power over the step fraction up to each knot (W · step), so the energy of one GPU from
    step position x₀ to x₁ is T · (E(x₁) − E(x₀)) with E(x) = ⌊x⌋·energy_knots[-1] + interp(x mod 1).
    `capped_energy_knots` is the same integral over the phases held at the cap only.
    """

    period_s: float
    knots: FloatArray
    power_w: FloatArray
    gpu_util_pct: FloatArray
    mem_util_pct: FloatArray
    clock_factor: FloatArray  # SM clock / max clock in each phase
    power_capped: BoolArray  # the phase's power is held at the cap (NVML SwPowerCap)
    energy_knots: FloatArray
    capped_energy_knots: FloatArray

    @property
    def mean_power_w(self) -> float:
        return float(self.energy_knots[-1])

    def phase_index(self, x: FloatArray) -> IntArray:
        """The phase each step position in `x` is in."""
        frac = x - np.floor(x)
        idx = np.searchsorted(self.knots, frac, side="right") - 1
        return np.asarray(np.clip(idx, 0, self.power_w.size - 1), dtype=np.int64)

    @property
    def mean_capped_power_w(self) -> float:
        """The capped phases' share of `mean_power_w`, W."""
        return float(self.capped_energy_knots[-1])

    def energy_per_w(self, x: FloatArray, *, capped_only: bool = False) -> FloatArray:
        """E(x): integral of power over step position from 0 to x, W · step (see class docstring)."""
        knots = self.capped_energy_knots if capped_only else self.energy_knots
        whole = np.floor(x)
        return np.asarray(whole * knots[-1] + np.interp(x - whole, self.knots, knots), dtype=np.float64)


def phase_table(workload: WorkloadProfile, idle_w: float, power_cap_w: float | None) -> PhaseTable:
    """The workload's phases under `power_cap_w` (None: uncapped).

    Under a cap below a phase's power the phase runs at the cap and its clock drops by
    ((cap − idle) / (P − idle))^(1/3) (P ∝ f³). Phases marked `scales_with_clock` (compute, the pipeline
    bubble) stretch by the compute slowdown, the inverse of the clock factor of the most power-hungry
    such phase; the others keep their duration (as twin.perf.estimate does). The factors multiply the
    phases' own `clock_factor` (a cap already in the workload), as P ∝ f³ composes.
    """
    power = np.array([p.power_w for p in workload.phases], dtype=np.float64)
    base_clock = np.array([p.clock_factor for p in workload.phases], dtype=np.float64)
    duration = np.array([p.fraction for p in workload.phases], dtype=np.float64) * workload.step_time_s
    scales = np.array([p.scales_with_clock for p in workload.phases], dtype=np.bool_)
    clock = np.ones_like(power)
    capped = np.zeros_like(scales)
    if power_cap_w is not None:
        capped = power > power_cap_w
        ratio = (power_cap_w - idle_w) / np.maximum(power - idle_w, 1e-9)
        clock = np.where(capped, np.clip(ratio, 1e-6, 1.0) ** (1.0 / POWER_FREQUENCY_EXPONENT), 1.0)
        power = np.minimum(power, power_cap_w)
        if scales.any():
            slowdown = 1.0 / float(clock[scales].min())
            duration = np.where(scales, duration * slowdown, duration)
    period = float(duration.sum()) if power_cap_w is not None else workload.step_time_s
    fractions = duration / period
    knots = np.concatenate(([0.0], np.cumsum(fractions)))
    knots[-1] = 1.0
    energy = np.concatenate(([0.0], np.cumsum(fractions * power)))
    held = np.asarray(capped | (base_clock < 1.0), dtype=np.bool_)
    capped_energy = np.concatenate(([0.0], np.cumsum(fractions * power * held)))
    return PhaseTable(
        period_s=period,
        knots=knots,
        power_w=power,
        gpu_util_pct=np.array([p.gpu_util_pct for p in workload.phases], dtype=np.float64),
        mem_util_pct=np.array([p.mem_util_pct for p in workload.phases], dtype=np.float64),
        clock_factor=clock * base_clock,
        power_capped=held,
        energy_knots=energy,
        capped_energy_knots=capped_energy,
    )


class JobRun:
    """One job's mutable state on the simulated cluster. Nodes are indices into the cluster's node list."""

    def __init__(self, spec: JobSpec, table: PhaseTable, step_event_every: int) -> None:
        self.spec = spec
        self.table = table
        self.state = JobState.PENDING
        self.nodes: tuple[int, ...] = ()
        self.node_names: tuple[str, ...] = ()
        self.steps_done = 0
        self.checkpoint_step = 0
        self.restart_at_s = math.inf
        self.run_since_s = math.inf  # when the current run started
        self._anchor_s = 0.0
        self._anchor_steps = 0.0
        self._step_event_every = step_event_every
        w = spec.workload
        self.checkpoint_every = spec.checkpoint_every_steps or max(
            1, round(w.checkpoint_interval_s / w.step_time_s)
        )

    @property
    def workload(self) -> WorkloadProfile:
        return self.spec.workload

    def position(self, t_s: float) -> float:
        """Continuous step count x(t) (meaningful while running)."""
        return self._anchor_steps + (t_s - self._anchor_s) / self.table.period_s

    def _event(self, kind: JobEventKind, ts: float, step: int, reason: str | None = None) -> JobEvent:
        w = self.workload
        return JobEvent(
            job_id=self.spec.job_id,
            event=kind,
            ts=ts,
            step=step,
            step_time_s=self.table.period_s,
            tokens=step * w.tokens_per_step,
            model=w.model,
            layout=w.layout,
            nodes=self.node_names,
            reason=reason,
        )

    def start(self, t_s: float, nodes: tuple[int, ...], names: tuple[str, ...], offset: float) -> JobEvent:
        """Start (or restart from the last checkpoint) at `t_s` on `nodes`, `offset` steps into a step."""
        self.state = JobState.RUNNING
        self.nodes, self.node_names = nodes, names
        self.steps_done = self.checkpoint_step
        self._anchor_s, self._anchor_steps = t_s, self.checkpoint_step + offset
        self.restart_at_s = math.inf
        self.run_since_s = t_s
        return self._event(JobEventKind.START, t_s, self.steps_done)

    def retable(self, t_s: float, table: PhaseTable) -> None:
        """Switch to `table` (a new power cap) at `t_s`, keeping progress continuous."""
        if self.state is JobState.RUNNING:
            self._anchor_steps, self._anchor_s = self.position(t_s), t_s
        self.table = table

    def advance(self, now_s: float) -> list[JobEvent]:
        """Step, checkpoint and end events for the steps completed up to `now_s`, in time order."""
        if self.state is not JobState.RUNNING:
            return []
        total = self.spec.steps
        done = math.floor(self.position(now_s) + 1e-9)
        if total is not None:
            done = min(done, total)
        if done <= self.steps_done:
            return []
        period = self.table.period_s
        marks: list[tuple[int, int, JobEventKind]] = []
        for every, order, kind in (
            (self._step_event_every, 0, JobEventKind.STEP),
            (self.checkpoint_every, 1, JobEventKind.CHECKPOINT),
        ):
            first = (self.steps_done // every + 1) * every
            marks.extend((k, order, kind) for k in range(first, done + 1, every))
        marks.sort()
        events = [
            self._event(kind, self._anchor_s + (k - self._anchor_steps) * period, k) for k, _, kind in marks
        ]
        for k, _, kind in marks:
            if kind is JobEventKind.CHECKPOINT:
                self.checkpoint_step = k
        self.steps_done = done
        if total is not None and done >= total:
            end_s = self._anchor_s + (total - self._anchor_steps) * period
            events.append(self._event(JobEventKind.END, end_s, total))
            self.state = JobState.ENDED
        return events

    def fail(self, now_s: float, reason: str, restart_delay_s: float | None) -> JobEvent:
        """Fail at `now_s`; with a restart delay the job restarts later from its last checkpoint."""
        event = self._event(JobEventKind.FAIL, now_s, self.steps_done, reason)
        if restart_delay_s is None:
            self.state = JobState.FAILED
        else:
            self.state = JobState.RESTARTING
            self.restart_at_s = now_s + restart_delay_s
        return event
