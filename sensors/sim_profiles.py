"""Plain-data inputs of the simulated cluster: the GPU type, a job's workload profile, the jobs to run.

`sensors` imports nothing from `twin` (DESIGN §1): the twin computes a `WorkloadProfile` with its performance
model (`twin.workload_profile`) and passes it in. The defaults here are that computation's result for one
reference job, so the simulated cluster also runs stand-alone; `tests/test_workload_profile.py` checks that
they still agree with the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from sensors.errors import SensorError
from sensors.fleet_profile import BUSY_FLEET_FRACTION

GIB: Final = 2**30


class SimulationError(SensorError, ValueError):
    """A simulated-cluster parameter is invalid or the simulation is misused; the message says which."""


def require_finite(name: str, value: float, *, minimum: float | None = None, strict: bool = False) -> float:
    """`value` as a float, or raise `SimulationError` naming the field (`minimum`: lower bound)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SimulationError(f"{name}(={value!r}) must be a finite number.")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise SimulationError(f"{name}(={value!r}) must be {'>' if strict else '>='} {minimum}.")
    return float(value)


def require_int(name: str, value: int, minimum: int) -> int:
    """`value` if it is an int >= `minimum`, else raise `SimulationError` naming the field."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SimulationError(f"{name}(={value!r}) must be an integer.")
    if value < minimum:
        raise SimulationError(f"{name}(={value}) must be >= {minimum}.")
    return value


@dataclass(frozen=True, slots=True)
class GpuProfile:
    """One GPU type as the simulation needs it. Power in W, memory in bytes, clocks in MHz."""

    name: str
    tdp_w: float
    idle_w: float
    hbm_bytes: int
    max_sm_clock_mhz: float
    idle_sm_clock_mhz: float
    slowdown_temp_c: float  # above it the driver lowers the clocks (nvidia-smi "GPU Slowdown Temp")

    def __post_init__(self) -> None:
        require_finite("gpu.tdp_w", self.tdp_w, minimum=0.0, strict=True)
        require_finite("gpu.idle_w", self.idle_w, minimum=0.0)
        if self.idle_w >= self.tdp_w:
            raise SimulationError(f"gpu.idle_w(={self.idle_w}) must be < tdp_w(={self.tdp_w}).")
        require_int("gpu.hbm_bytes", self.hbm_bytes, 1)
        require_finite("gpu.max_sm_clock_mhz", self.max_sm_clock_mhz, minimum=0.0, strict=True)
        require_finite("gpu.idle_sm_clock_mhz", self.idle_sm_clock_mhz, minimum=0.0, strict=True)
        if self.idle_sm_clock_mhz > self.max_sm_clock_mhz:
            raise SimulationError(
                f"gpu.idle_sm_clock_mhz(={self.idle_sm_clock_mhz}) must be <= "
                f"max_sm_clock_mhz(={self.max_sm_clock_mhz})."
            )
        require_finite("gpu.slowdown_temp_c", self.slowdown_temp_c)


@dataclass(frozen=True, slots=True)
class PhaseProfile:
    """One phase of a training step: its share of the step and what the GPU does during it.

    `scales_with_clock`: the phase's duration stretches when the SM clock drops under a power cap (dense
    compute and the pipeline bubble, which waits on compute; twin.perf.estimate scales the same two).
    `clock_factor`: the SM clock as a share of the maximum in this phase, < 1 when the workload was
    computed under a power cap (its `power_w` and `fraction` then already include the cap).
    """

    name: str
    fraction: float  # of the step time, in [0, 1]
    power_w: float  # board power while in the phase, uncapped
    gpu_util_pct: float
    mem_util_pct: float
    scales_with_clock: bool = False
    clock_factor: float = 1.0

    def __post_init__(self) -> None:
        require_finite(f"phase {self.name!r} fraction", self.fraction, minimum=0.0)
        if self.fraction > 1.0:
            raise SimulationError(f"phase {self.name!r} fraction(={self.fraction}) must be <= 1.")
        require_finite(f"phase {self.name!r} power_w", self.power_w, minimum=0.0)
        for label, value in (("gpu_util_pct", self.gpu_util_pct), ("mem_util_pct", self.mem_util_pct)):
            require_finite(f"phase {self.name!r} {label}", value, minimum=0.0)
            if value > 100.0:
                raise SimulationError(f"phase {self.name!r} {label}(={value}) must be <= 100.")
        require_finite(f"phase {self.name!r} clock_factor", self.clock_factor, minimum=0.0, strict=True)
        if self.clock_factor > 1.0:
            raise SimulationError(f"phase {self.name!r} clock_factor(={self.clock_factor}) must be <= 1.")


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class WorkloadProfile:
    """What one GPU of a training job does each step, in order of the phases (SI units).

    `model` and `layout` are the JSON objects the job events carry (DESIGN §4); `gpus` is the job's size;
    `memory_used_bytes` the per-GPU framebuffer the job holds; `tokens_per_step` = seq_len × global batch.
    """

    name: str
    step_time_s: float
    phases: tuple[PhaseProfile, ...]
    memory_used_bytes: int
    tokens_per_step: float
    gpus: int
    checkpoint_interval_s: float
    model: Mapping[str, Any] = field(default_factory=dict)
    layout: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_finite("workload.step_time_s", self.step_time_s, minimum=0.0, strict=True)
        if not self.phases:
            raise SimulationError(f"workload {self.name!r} phases(={self.phases!r}) must not be empty.")
        total = sum(p.fraction for p in self.phases)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise SimulationError(f"workload {self.name!r} phase fractions sum(={total}) must be 1.")
        require_int("workload.memory_used_bytes", self.memory_used_bytes, 0)
        require_finite("workload.tokens_per_step", self.tokens_per_step, minimum=0.0)
        require_int("workload.gpus", self.gpus, 1)
        require_finite("workload.checkpoint_interval_s", self.checkpoint_interval_s, minimum=0.0, strict=True)
        object.__setattr__(self, "model", _frozen(self.model))
        object.__setattr__(self, "layout", _frozen(self.layout))

    @property
    def power_per_gpu_w(self) -> float:
        """Time-average power of one GPU over a step: Σ fraction × power, W."""
        return sum(p.fraction * p.power_w for p in self.phases)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A training job to run on the simulated cluster.

    `nodes`: the node names it runs on; empty means "take as many idle healthy nodes as the workload's
    GPUs fill" when it starts. `start_s`: when it starts (unix s; None: at the first read). `steps`: how
    many steps it trains before it ends (None: until it fails). `checkpoint_every_steps`: None means the
    workload's checkpoint interval rounded to whole steps.
    """

    job_id: str
    workload: WorkloadProfile
    nodes: tuple[str, ...] = ()
    start_s: float | None = None
    steps: int | None = None
    checkpoint_every_steps: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str) or not self.job_id:
            raise SimulationError(f"job_id(={self.job_id!r}) must be a non-empty string.")
        if len(set(self.nodes)) != len(self.nodes):
            raise SimulationError(f"job {self.job_id!r} nodes(={self.nodes!r}) must not repeat a node.")
        if self.start_s is not None:
            require_finite(f"job {self.job_id!r} start_s", self.start_s)
        if self.steps is not None:
            require_int(f"job {self.job_id!r} steps", self.steps, 1)
        if self.checkpoint_every_steps is not None:
            require_int(f"job {self.job_id!r} checkpoint_every_steps", self.checkpoint_every_steps, 1)


# --- defaults ----------------------------------------------------------------------------------------
# The A100-SXM4-80GB (the Acme fleet's GPU). TDP 400 W: A100 datasheet. Idle 60 W: Acme's power floor
# (sensors.fleet_profile; twin's a100-sxm-80gb preset). 80 GiB: nvidia-smi "FB Memory Usage Total 81920
# MiB". Clocks 1410 MHz max / 210 MHz idle and slowdown at 89 °C: nvidia-smi -q of A100-SXM4-80GB nodes
# (NVIDIA/nvidia-docker#1648: "Max Clocks SM 1410 MHz"; a public 8×A100-SXM4-80GB log, driver 555.42.02:
# idle "SM 210 MHz", "GPU Slowdown Temp 89 C").
A100_SXM_80GB: Final = GpuProfile(
    name="a100-sxm-80gb",
    tdp_w=400.0,
    idle_w=60.0,
    hbm_bytes=80 * GIB,
    max_sm_clock_mhz=1410.0,
    idle_sm_clock_mhz=210.0,
    slowdown_temp_c=89.0,
)

# Phase power levels of twin.perf.power (not importable here): compute at 98 % of TDP; communication and
# waiting at 40 % and 15 % of the idle→TDP range above idle.
COMPUTE_POWER_FRACTION_OF_TDP: Final = 0.98
COMMUNICATION_POWER_FRACTION: Final = 0.4
WAITING_POWER_FRACTION: Final = 0.15

# The reference job of the default fleet, as twin.workload_profile computes it with twin.perf: Llama 3 8B
# on 32 × A100-SXM4-80GB, TP 2 × PP 2 × DP 8, seq_len 8192, global batch 128, bf16, ZeRO-1, selective
# recompute. Kalos' mean GPU job size is 26.8 GPUs (Acme cluster_summary.csv), hence 4 nodes.
REFERENCE_JOB_GPUS: Final = 32
REFERENCE_STEP_TIME_S: Final = 9.775
REFERENCE_PHASE_FRACTIONS: Final[Mapping[str, float]] = MappingProxyType(
    {"compute": 0.891, "waiting": 0.055, "communication": 0.054}
)
REFERENCE_MEMORY_USED_BYTES: Final = int(32.5 * GIB)
REFERENCE_TOKENS_PER_STEP: Final = 8192 * 128
REFERENCE_CHECKPOINT_INTERVAL_S: Final = 18_096.0  # Daly's optimum for the job (twin.perf.reliability)
# Utilisation per phase (twin.workload_profile's constants): a kernel runs in every phase of a step (NCCL
# kernels while communicating, a blocked receive during the pipeline bubble), so DCGM reports 100 %.
# HBM busy: 35 % while computing (assumption), 2 × NVLink / HBM bandwidth = 29 % while communicating on an
# A100 (a ring reduction reads and writes each byte), 0 % while blocked.
REFERENCE_GPU_UTIL_PCT: Final[Mapping[str, float]] = MappingProxyType(
    {"compute": 100.0, "waiting": 100.0, "communication": 100.0}
)
REFERENCE_MEM_UTIL_PCT: Final[Mapping[str, float]] = MappingProxyType(
    {"compute": 35.0, "waiting": 0.0, "communication": 29.4}
)
REFERENCE_MODEL: Final[Mapping[str, Any]] = MappingProxyType({"name": "llama3-8b", "params": 8_030_261_248})
REFERENCE_LAYOUT: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "tp": 2, "pp": 2, "cp": 1, "dp": 8, "micro_batch": 1, "virtual_stages": 1, "zero_stage": 1,
        "offload": "none", "recompute": "selective", "sequence_parallel": True, "precision": "bf16",
    }
)  # fmt: skip


def phase_power_w(gpu: GpuProfile, phase: str) -> float:
    """Uncapped power of `gpu` in a phase named compute, communication or waiting (twin.perf.power), W."""
    dynamic = gpu.tdp_w - gpu.idle_w
    levels = {
        "compute": gpu.tdp_w * COMPUTE_POWER_FRACTION_OF_TDP,
        "communication": gpu.idle_w + COMMUNICATION_POWER_FRACTION * dynamic,
        "waiting": gpu.idle_w + WAITING_POWER_FRACTION * dynamic,
    }
    if phase not in levels:
        raise SimulationError(f"phase(={phase!r}) must be one of {', '.join(levels)}.")
    return levels[phase]


def default_workload(gpu: GpuProfile = A100_SXM_80GB) -> WorkloadProfile:
    """The reference job's workload on `gpu`: the A100 job's timing, `gpu`'s phase powers.

    Memory is the A100 job's, capped at the GPU's HBM.
    """
    phases = tuple(
        PhaseProfile(
            name=name,
            fraction=fraction,
            power_w=phase_power_w(gpu, name),
            gpu_util_pct=REFERENCE_GPU_UTIL_PCT[name],
            mem_util_pct=REFERENCE_MEM_UTIL_PCT[name],
            scales_with_clock=name in ("compute", "waiting"),
        )
        for name, fraction in REFERENCE_PHASE_FRACTIONS.items()
    )
    return WorkloadProfile(
        name=str(REFERENCE_MODEL["name"]),
        step_time_s=REFERENCE_STEP_TIME_S,
        phases=phases,
        memory_used_bytes=min(REFERENCE_MEMORY_USED_BYTES, gpu.hbm_bytes),
        tokens_per_step=float(REFERENCE_TOKENS_PER_STEP),
        gpus=REFERENCE_JOB_GPUS,
        checkpoint_interval_s=REFERENCE_CHECKPOINT_INTERVAL_S,
        model=REFERENCE_MODEL,
        layout=REFERENCE_LAYOUT,
    )


def default_jobs(node_names: Sequence[str], gpu: GpuProfile, gpus_per_node: int) -> tuple[JobSpec, ...]:
    """The default fleet's jobs: the first `BUSY_FLEET_FRACTION` of the nodes (rounded half up) in jobs of
    the reference job's size (the last one may be smaller), running the reference workload on `gpu`."""
    busy = int(len(node_names) * BUSY_FLEET_FRACTION + 0.5)
    per_job = max(1, REFERENCE_JOB_GPUS // gpus_per_node)
    workload = default_workload(gpu)
    return tuple(
        JobSpec(f"job-{k:03d}", workload, tuple(node_names[first : min(first + per_job, busy)]))
        for k, first in enumerate(range(0, busy, per_job))
    )
