"""Failure, checkpoint and goodput model of a training job.

Failure rates are calibrated to the Llama 3 pre-training report (Dubey et al. 2024, "The Llama 3 Herd of
Models", arXiv:2407.21783, §3.3.4 and Table 5); checkpoint state follows ZeRO (Rajbhandari et al. 2020);
the checkpoint interval follows Young (1974) and Daly (2006); the wall-clock model is Daly's (2006)
first-order model of a restart-dump run under Poisson failures.

Every rate is per GPU-hour and scales with `failure_rate_scale` (the `ClusterSpec` knob of the same name).
All times are seconds, all sizes bytes. Pure functions, no I/O, no randomness: the SimPy cluster model
samples from `failure_mix()` with its own generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from twin.errors import ScenarioError
from twin.perf.specs import Precision, require_positive, require_positive_int

SECONDS_PER_HOUR = 3600.0
HOURS_PER_DAY = 24.0


class Component(StrEnum):
    """Which part of the machine an interruption takes out (what the cluster model repairs or replaces)."""

    GPU = "gpu"
    NETWORK = "network"
    HOST = "host"
    SOFTWARE = "software"  # nothing is replaced: the job restarts on the same machines


@dataclass(frozen=True, slots=True)
class FailureCategory:
    """One row of Llama 3 Table 5 (root causes of unexpected interruptions).

    `name` and `table_category` are the table's "Component" and "Category" columns verbatim; `component` is
    this model's tag; `hardware` marks rows whose Table 5 category is a hardware class (GPU, Network, Host).
    """

    name: str
    table_category: str
    component: Component
    count: int
    hardware: bool


@dataclass(frozen=True, slots=True)
class FailureShare:
    """One root cause as the cluster model samples it: share of interruptions and rate per GPU-hour."""

    name: str
    component: Component
    share: float
    rate_per_gpu_hour: float


# --- Llama 3 405B pre-training snapshot (Dubey et al. 2024, §3.3.4) -----------------------------------
# "During a 54-day snapshot period of pre-training, we experienced a total of 466 job interruptions. Of
# these, 47 were planned interruptions [...]. The remaining 419 were unexpected interruptions".
# The report does not give the GPU count during the snapshot; 16,384 is assumed, the 405B run's
# configuration for 8K-context and long-context pre-training (Table 4; §3.3.1 "up to 16K H100 GPUs").
LLAMA3_SNAPSHOT_GPUS = 16_384
LLAMA3_SNAPSHOT_DAYS = 54
LLAMA3_JOB_INTERRUPTIONS = 466
LLAMA3_PLANNED_INTERRUPTIONS = 47  # firmware upgrades, config/dataset updates: not modelled as failures
LLAMA3_UNEXPECTED_INTERRUPTIONS = 419
LLAMA3_SNAPSHOT_GPU_HOURS = LLAMA3_SNAPSHOT_GPUS * LLAMA3_SNAPSHOT_DAYS * HOURS_PER_DAY

# Table 5, "Root-cause categorization of unexpected interruptions during a 54-day period of Llama 3 405B
# pre-training", rows in the table's order. The counts sum to 419. Two printed figures of the report do
# not agree with these counts: Table 5 gives 30.1% for the 148 faulty-GPU interruptions (148/419 is
# 35.3%; every other row's percentage is count/419), and the text's "GPU issues [...] 58.7%" matches
# 126 faulty GPUs rather than 148 (the six GPU rows sum to 268 = 64.0%). The counts are used as printed.
# Component tags: the table's GPU / Network / Host categories map to gpu / network / host; its
# "Dependency" rows (software bug, dependency) to software; "Unplanned Maintenance" (host maintenance) to
# host; "Unknown" (NCCL watchdog timeouts) to software, since no part is identified to replace.
LLAMA3_INTERRUPTION_CAUSES: tuple[FailureCategory, ...] = (
    FailureCategory("Faulty GPU", "GPU", Component.GPU, 148, True),
    FailureCategory("GPU HBM3 Memory", "GPU", Component.GPU, 72, True),
    FailureCategory("Software Bug", "Dependency", Component.SOFTWARE, 54, False),
    FailureCategory("Network Switch/Cable", "Network", Component.NETWORK, 35, True),
    FailureCategory("Host Maintenance", "Unplanned Maintenance", Component.HOST, 32, False),
    FailureCategory("GPU SRAM Memory", "GPU", Component.GPU, 19, True),
    FailureCategory("GPU System Processor", "GPU", Component.GPU, 17, True),
    FailureCategory("NIC", "Host", Component.HOST, 7, True),
    FailureCategory("NCCL Watchdog Timeouts", "Unknown", Component.SOFTWARE, 7, False),
    FailureCategory("Silent Data Corruption", "GPU", Component.GPU, 6, True),
    FailureCategory("GPU Thermal Interface + Sensor", "GPU", Component.GPU, 6, True),
    FailureCategory("SSD", "Host", Component.HOST, 3, True),
    FailureCategory("Power Supply", "Host", Component.HOST, 3, True),
    FailureCategory("Server Chassis", "Host", Component.HOST, 2, True),
    FailureCategory("IO Expansion Board", "Host", Component.HOST, 2, True),
    FailureCategory("Dependency", "Dependency", Component.SOFTWARE, 2, False),
    FailureCategory("CPU", "Host", Component.HOST, 2, True),
    FailureCategory("System Memory", "Host", Component.HOST, 2, True),
)

# Unexpected interruptions of a synchronous job per GPU-hour it runs: 419 / (16,384 × 54 × 24)
# ≈ 1.97e-5, i.e. one interruption every ~3.1 h for the whole 16K-GPU job (Dubey et al. 2024, §3.3.4).
UNEXPECTED_INTERRUPTIONS_PER_GPU_HOUR = LLAMA3_UNEXPECTED_INTERRUPTIONS / LLAMA3_SNAPSHOT_GPU_HOURS

# Share of unexpected interruptions with a hardware root cause, from the Table 5 counts: GPU + Network +
# Host categories = 324/419 = 77.3%. The report says "approximately 78%", counting "confirmed hardware
# issues [...] or suspected hardware-related issues like silent data corruption and unplanned individual
# host maintenance events"; adding the 32 host-maintenance rows gives 85.0%, so the report's exact
# grouping cannot be recovered from the table. 77.3% is the closest grouping and is used here.
HARDWARE_INTERRUPTION_SHARE = (
    sum(c.count for c in LLAMA3_INTERRUPTION_CAUSES if c.hardware) / LLAMA3_UNEXPECTED_INTERRUPTIONS
)

# --- Checkpoint state --------------------------------------------------------------------------------
# Mixed-precision Adam keeps an fp32 master copy of the weights plus fp32 momentum and variance: K = 12
# bytes per parameter of optimizer state (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward
# Training Trillion Parameter Models", §3.1 and Figure 1).
MIXED_PRECISION_OPTIMIZER_BYTES_PER_PARAM = 12
# Of those 12, Adam's two moments (m, v) are 2 × 4 bytes; in fp32 training the weights are themselves the
# fp32 master copy, so only the moments are added (same source).
ADAM_MOMENT_BYTES_PER_PARAM = 8
# Weights as the model holds them: 4 bytes in fp32, 2 in fp16/bf16. FP8 training is assumed to keep its
# weights in bf16 and cast to fp8 per GEMM (as NVIDIA Transformer Engine does), so 2 bytes/param.
WEIGHT_BYTES_PER_PARAM: dict[Precision, int] = {
    Precision.FP32: 4,
    Precision.FP16: 2,
    Precision.BF16: 2,
    Precision.FP8: 2,
}

# Llama 3 checkpoint storage: Tectonic, "240 PB of storage out of 7,500 servers equipped with SSDs, and
# supports a sustainable throughput of 2 TB/s and a peak throughput of 7 TB/s" for Llama 3 pre-training
# on up to 16K GPUs (Dubey et al. 2024, §3.3.1 "Storage").
# The sustained figure per GPU: 2e12 / 16,384 ≈ 122 MB/s.
LLAMA3_STORAGE_SUSTAINED_BYTES_PER_S = 2e12
LLAMA3_STORAGE_PEAK_BYTES_PER_S = 7e12
DEFAULT_CHECKPOINT_BANDWIDTH_BYTES_PER_S_PER_GPU = LLAMA3_STORAGE_SUSTAINED_BYTES_PER_S / LLAMA3_SNAPSHOT_GPUS

# Time from an interruption to training resuming from the last checkpoint, excluding the lost work.
# ASSUMPTION: no published, measured restart time for a conventional checkpoint-restart at thousands of
# GPUs was found to cite. 10 minutes is assumed, covering failure detection, re-scheduling onto healthy
# nodes, process launch and process-group (NCCL) initialisation, and loading the checkpoint. The Llama 3
# report (§3.3.4) says only that job startup and checkpointing time were reduced, without figures.
# Plausibility check: with it, `estimate_reliability` gives ~92% goodput for Llama 3 405B on 16,384 GPUs
# at the default bandwidth, consistent with the report's "higher than 90% effective training time";
# restarts longer than about 15 minutes would put that job below 90%.
DEFAULT_RESTART_S = 600.0


# --- Failure rates -----------------------------------------------------------------------------------


def _require_scale(failure_rate_scale: float) -> None:
    require_positive("failure_rate_scale", failure_rate_scale)


def interruption_rate_per_gpu_hour(failure_rate_scale: float = 1.0) -> float:
    """Unexpected interruptions per GPU-hour, Llama 3 calibrated, times `failure_rate_scale`."""
    _require_scale(failure_rate_scale)
    return UNEXPECTED_INTERRUPTIONS_PER_GPU_HOUR * failure_rate_scale


def failure_mix(failure_rate_scale: float = 1.0) -> tuple[FailureShare, ...]:
    """Root-cause mix of unexpected interruptions (Llama 3 Table 5), in the table's order.

    Shares sum to 1; `rate_per_gpu_hour` is the share times `interruption_rate_per_gpu_hour(scale)`.
    """
    total = interruption_rate_per_gpu_hour(failure_rate_scale)
    return tuple(
        FailureShare(
            name=c.name,
            component=c.component,
            share=c.count / LLAMA3_UNEXPECTED_INTERRUPTIONS,
            rate_per_gpu_hour=total * c.count / LLAMA3_UNEXPECTED_INTERRUPTIONS,
        )
        for c in LLAMA3_INTERRUPTION_CAUSES
    )


def job_mtbf_s(gpus: int, failure_rate_scale: float = 1.0) -> float:
    """Mean time between interruptions of a synchronous job on `gpus` GPUs: 1 / (rate × gpus).

    Any GPU's interruption stops the whole job (Dubey et al. 2024, §3.3.4: "a single GPU failure may
    require a restart of the entire job"), so per-GPU rates add.
    """
    require_positive_int("gpus", gpus)
    return SECONDS_PER_HOUR / (interruption_rate_per_gpu_hour(failure_rate_scale) * gpus)


# --- Checkpoints -------------------------------------------------------------------------------------


def checkpoint_bytes(params: int, precision: Precision = Precision.BF16, *, optimizer: bool = True) -> float:
    """Bytes written per full checkpoint of a model with `params` parameters.

    Weights in the training precision (`WEIGHT_BYTES_PER_PARAM`) plus, with `optimizer`, fp32 optimizer
    state: 12 bytes/param (master weights + Adam m + v, ZeRO's K = 12) for 16-bit and fp8 training, 8
    bytes/param (m + v) for fp32 training, whose weights already are the fp32 master copy. Gradients
    and activations are not checkpointed. 1e9 bf16 parameters → 14e9 bytes.
    """
    require_positive_int("params", params)
    if not isinstance(precision, Precision):
        raise ScenarioError(f"precision(={precision!r}) must be one of {[p.value for p in Precision]}.")
    if not isinstance(optimizer, bool):
        raise ScenarioError(f"optimizer(={optimizer!r}) must be true or false.")
    per_param = WEIGHT_BYTES_PER_PARAM[precision]
    if optimizer:
        if precision is Precision.FP32:
            per_param += ADAM_MOMENT_BYTES_PER_PARAM
        else:
            per_param += MIXED_PRECISION_OPTIMIZER_BYTES_PER_PARAM
    return float(params) * per_param


def default_checkpoint_bandwidth_bytes_per_s(gpus: int) -> float:
    """Aggregate checkpoint bandwidth of a job on `gpus` GPUs at the Llama 3 per-GPU share of Tectonic.

    Assumes storage provisioned in proportion to the GPUs, as Meta's was for the 16K-GPU job.
    """
    require_positive_int("gpus", gpus)
    return DEFAULT_CHECKPOINT_BANDWIDTH_BYTES_PER_S_PER_GPU * gpus


def checkpoint_write_s(checkpoint_bytes: float, checkpoint_bandwidth_bytes_per_s: float) -> float:
    """Seconds training is blocked writing one checkpoint: bytes / aggregate storage bandwidth."""
    require_positive("checkpoint_bytes", checkpoint_bytes)
    require_positive("checkpoint_bandwidth_bytes_per_s", checkpoint_bandwidth_bytes_per_s)
    return checkpoint_bytes / checkpoint_bandwidth_bytes_per_s


def young_interval_s(checkpoint_write_s: float, mtbf_s: float) -> float:
    """First-order optimal compute time between checkpoints, sqrt(2·δ·M).

    Young, J. W. (1974). "A first order approximation to the optimum checkpoint interval."
    Communications of the ACM 17(9), 530-531.
    """
    require_positive("checkpoint_write_s", checkpoint_write_s)
    require_positive("mtbf_s", mtbf_s)
    return math.sqrt(2.0 * checkpoint_write_s * mtbf_s)


def daly_interval_s(checkpoint_write_s: float, mtbf_s: float) -> float:
    """Higher-order optimal compute time between checkpoints (Daly 2006).

    τ = sqrt(2δM)·[1 + (1/3)·sqrt(δ/(2M)) + (1/9)·(δ/(2M))] − δ for δ < 2M, else τ = M.
    Daly, J. T. (2006). "A higher order estimate of the optimum checkpoint interval for restart dumps."
    Future Generation Computer Systems 22(3), 303-312, doi:10.1016/j.future.2004.11.016.
    """
    delta, m = checkpoint_write_s, mtbf_s
    require_positive("checkpoint_write_s", delta)
    require_positive("mtbf_s", m)
    if delta >= 2.0 * m:
        return m
    x = delta / (2.0 * m)
    return math.sqrt(2.0 * delta * m) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - delta


# --- Goodput -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReliabilityEstimate:
    """Expected cost of failures and checkpoints for one training job (all times in seconds).

    time_to_train_s = compute + checkpoint_overhead_s + expected_interruptions × restart_s + lost_work_s.
    """

    mtbf_s: float  # job mean time between interruptions
    checkpoint_bytes: float  # bytes per checkpoint
    checkpoint_write_s: float  # δ: blocking time of one checkpoint write
    checkpoint_interval_s: float  # τ: compute time between checkpoints
    restart_s: float  # R: downtime per interruption, lost work excluded
    expected_interruptions: float  # time_to_train_s / mtbf_s
    time_to_train_s: float  # wall clock; inf when failures outpace progress
    goodput: float  # compute time / wall time, in (0, 1]; 0 when the job never finishes
    lost_work_s: float  # expected re-computed work (incl. interrupted checkpoint writes)
    checkpoint_overhead_s: float  # time spent writing checkpoints of useful work


def estimate_reliability(
    *,
    compute_time_s: float,
    gpus: int,
    checkpoint_bytes: float,
    checkpoint_bandwidth_bytes_per_s: float,
    failure_rate_scale: float = 1.0,
    restart_s: float = DEFAULT_RESTART_S,
    checkpoint_interval_s: float | None = None,
) -> ReliabilityEstimate:
    """Wall-clock time and goodput of a job needing `compute_time_s` of failure-free training.

    Daly's (2006) first-order model of a restart-dump run under Poisson interruptions: the job writes
    a checkpoint (δ = bytes / bandwidth) after every τ of compute; each interruption costs the restart
    time R plus on average half a segment of lost work, (τ + δ)/2. With M the job MTBF and T0 the compute
    time, the wall time T solves

        T = T0·(1 + δ/τ) + (T/M)·(R + (τ + δ)/2),   i.e.   T = T0·(1 + δ/τ) / (1 − (R + (τ + δ)/2)/M).

    When the denominator is ≤ 0 an interruption arrives, on average, before the work it costs is redone:
    the job never finishes (time_to_train_s = inf, goodput = 0; no exception). τ defaults to Daly's
    higher-order optimum (`daly_interval_s`). `checkpoint_bandwidth_bytes_per_s` is the aggregate bandwidth
    available to the job (see `default_checkpoint_bandwidth_bytes_per_s`). Only unexpected interruptions
    are modelled; planned maintenance is not. Raises `ScenarioError` naming the first invalid input.
    """
    require_positive("compute_time_s", compute_time_s)
    require_positive_int("gpus", gpus)
    require_positive("checkpoint_bytes", checkpoint_bytes)
    require_positive("checkpoint_bandwidth_bytes_per_s", checkpoint_bandwidth_bytes_per_s)
    _require_scale(failure_rate_scale)
    if isinstance(restart_s, bool) or not isinstance(restart_s, int | float):
        raise ScenarioError(f"restart_s(={restart_s!r}) must be a number.")
    if not math.isfinite(restart_s) or restart_s < 0:
        raise ScenarioError(f"restart_s(={restart_s!r}) must be >= 0.")
    if checkpoint_interval_s is not None:
        require_positive("checkpoint_interval_s", checkpoint_interval_s)

    m = job_mtbf_s(gpus, failure_rate_scale)
    delta = checkpoint_write_s(checkpoint_bytes, checkpoint_bandwidth_bytes_per_s)
    tau = daly_interval_s(delta, m) if checkpoint_interval_s is None else float(checkpoint_interval_s)

    overhead_s = compute_time_s * delta / tau
    loss_per_interruption_s = restart_s + (tau + delta) / 2.0
    denominator = 1.0 - loss_per_interruption_s / m
    if denominator <= 0.0:
        wall_s = math.inf
        interruptions = math.inf
        lost_work_s = math.inf
        goodput = 0.0
    else:
        wall_s = (compute_time_s + overhead_s) / denominator
        interruptions = wall_s / m
        lost_work_s = interruptions * (tau + delta) / 2.0
        goodput = min(1.0, compute_time_s / wall_s)

    return ReliabilityEstimate(
        mtbf_s=m,
        checkpoint_bytes=float(checkpoint_bytes),
        checkpoint_write_s=delta,
        checkpoint_interval_s=tau,
        restart_s=float(restart_s),
        expected_interruptions=interruptions,
        time_to_train_s=wall_s,
        goodput=goodput,
        lost_work_s=lost_work_s,
        checkpoint_overhead_s=overhead_s,
    )
