"""One estimate of a training job per layout: memory, step time, power, and (with a token target)
time to train, energy, cost and interruptions. Vectorised over a `LayoutBatch`; `estimate` wraps one."""

from __future__ import annotations

from dataclasses import dataclass

from twin.perf.batch import BoolArray, FloatArray, LayoutBatch
from twin.perf.layout_rules import check_layouts
from twin.perf.memory import MemoryArrays, estimate_memory_arrays
from twin.perf.power import average_power_w, cap_slowdown, energy_kwh, node_power_w
from twin.perf.reliability import (
    ReliabilityEstimate,
    checkpoint_bytes,
    default_checkpoint_bandwidth_bytes_per_s,
    estimate_reliability,
)
from twin.perf.specs import ClusterSpec, ModelSpec, ParallelLayout, TrainingSpec
from twin.perf.step import StepArrays, estimate_step_arrays

GIB = 2**30


@dataclass(frozen=True, slots=True)
class EstimateArrays:
    """Everything a sweep ranks on, one entry per layout (SI units)."""

    batch: LayoutBatch
    memory: MemoryArrays
    step: StepArrays
    step_time_s: FloatArray  # after the power cap's slowdown
    compute_slowdown: float
    fits: BoolArray
    tokens_per_s: FloatArray
    model_tflops_per_gpu: FloatArray
    mfu: FloatArray
    power_per_gpu_w: FloatArray
    cluster_power_w: FloatArray  # IT power: GPUs and their hosts (PUE not applied)
    time_to_train_s: FloatArray | None
    energy_kwh: FloatArray | None  # facility energy (PUE applied)
    cost: FloatArray | None
    reliability_per_compute_s: ReliabilityEstimate | None  # for 1 s of compute; scales linearly


@dataclass(frozen=True, slots=True)
class MemoryBreakdown:
    """Per-GPU memory at the peak stage, bytes."""

    params_bytes: float
    grads_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    other_bytes: float
    total_bytes: float
    capacity_bytes: float


@dataclass(frozen=True, slots=True)
class StepEstimate:
    step_time_s: float
    breakdown_s: dict[str, float]
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    model_tflops_per_gpu: float
    mfu: float


@dataclass(frozen=True, slots=True)
class PowerEstimate:
    power_per_gpu_w: float
    cluster_power_w: float
    energy_kwh: float | None
    cost: float | None


@dataclass(frozen=True, slots=True)
class Estimate:
    """The estimate for one scenario."""

    layout: ParallelLayout
    fits: bool
    reason: str | None
    memory: MemoryBreakdown
    step: StepEstimate
    power: PowerEstimate
    reliability: ReliabilityEstimate | None


def memory_reason(total_bytes: float, capacity_bytes: float, hbm_bytes: float) -> str | None:
    """Why a layout does not fit (None when it does), naming the numbers."""
    if total_bytes <= capacity_bytes:
        return None
    return (
        f"HBM needs {total_bytes / GIB:.1f} GiB per GPU, has {capacity_bytes / GIB:.1f} GiB usable "
        f"({hbm_bytes / GIB:.1f} GiB total)"
    )


def _reliability(
    model: ModelSpec, cluster: ClusterSpec, layout: ParallelLayout, compute_time_s: float
) -> ReliabilityEstimate:
    return estimate_reliability(
        compute_time_s=compute_time_s,
        gpus=cluster.gpus,
        checkpoint_bytes=checkpoint_bytes(model.params, layout.precision),
        checkpoint_bandwidth_bytes_per_s=cluster.checkpoint_bandwidth_bytes_per_s
        or default_checkpoint_bandwidth_bytes_per_s(cluster.gpus),
        failure_rate_scale=cluster.failure_rate_scale,
    )


def estimate_arrays(
    model: ModelSpec,
    cluster: ClusterSpec,
    training: TrainingSpec,
    batch: LayoutBatch,
    efficiency_scale: float = 1.0,
) -> EstimateArrays:
    """Estimate every (already valid) layout in `batch`."""
    gpu = cluster.gpu
    memory = estimate_memory_arrays(model, cluster, training, batch)
    step = estimate_step_arrays(model, cluster, training, batch, efficiency_scale)
    slowdown = cap_slowdown(gpu, cluster.power_cap_w)
    compute_s = step.compute_s * slowdown
    waiting_s = step.pp_bubble_s * slowdown
    communication_s = (
        step.tp_comm_s + step.cp_comm_s + step.pp_p2p_s + step.dp_comm_s + step.zero3_comm_s + step.offload_s
    ) + step.optimizer_s
    step_time_s = compute_s + waiting_s + communication_s
    power = average_power_w(gpu, cluster.power_cap_w, compute_s, communication_s, waiting_s)
    gpus = float(cluster.gpus)
    cluster_power = node_power_w(power, gpu) * gpus

    time_to_train = energy = cost = None
    reliability = None
    if training.tokens is not None:
        # Wall time is linear in compute time (Daly's model): one estimate for 1 s scales to all.
        reliability = _reliability(model, cluster, batch.layout(0), 1.0)
        compute_time_s = training.tokens / training.tokens_per_step * step_time_s
        time_to_train = compute_time_s * reliability.time_to_train_s
        energy = energy_kwh(cluster_power, time_to_train, cluster.pue)
        cost = cluster.price_per_gpu_hour * gpus * time_to_train / 3600.0

    return EstimateArrays(
        batch=batch,
        memory=memory,
        step=step,
        step_time_s=step_time_s,
        compute_slowdown=slowdown,
        fits=memory.total_bytes <= memory.capacity_bytes,
        tokens_per_s=training.tokens_per_step / step_time_s,
        model_tflops_per_gpu=step.model_flops_per_step / step_time_s / gpus / 1e12,
        mfu=step.model_flops_per_step / step_time_s / gpus / step.peak_flops_per_s,
        power_per_gpu_w=power,
        cluster_power_w=cluster_power,
        time_to_train_s=time_to_train,
        energy_kwh=energy,
        cost=cost,
        reliability_per_compute_s=reliability,
    )


def estimate(
    model: ModelSpec,
    cluster: ClusterSpec,
    layout: ParallelLayout,
    training: TrainingSpec,
    efficiency_scale: float = 1.0,
) -> Estimate:
    """Estimate one job; raises `ScenarioError` if the layout is invalid for this model and cluster."""
    batch = LayoutBatch.from_layouts([layout])
    check_layouts(model, cluster, training, batch)
    arrays = estimate_arrays(model, cluster, training, batch, efficiency_scale)
    mem = arrays.memory
    memory = MemoryBreakdown(
        params_bytes=float(mem.params_bytes[0]),
        grads_bytes=float(mem.grads_bytes[0]),
        optimizer_bytes=float(mem.optimizer_bytes[0]),
        activations_bytes=float(mem.activations_bytes[0]),
        other_bytes=float(mem.other_bytes[0]),
        total_bytes=float(mem.total_bytes[0]),
        capacity_bytes=float(mem.capacity_bytes),
    )
    breakdown = arrays.step.breakdown(0)
    breakdown["compute_s"] *= arrays.compute_slowdown
    breakdown["pp_bubble_s"] *= arrays.compute_slowdown
    tokens_per_s = float(arrays.tokens_per_s[0])
    step = StepEstimate(
        step_time_s=float(arrays.step_time_s[0]),
        breakdown_s=breakdown,
        tokens_per_s=tokens_per_s,
        tokens_per_s_per_gpu=tokens_per_s / cluster.gpus,
        model_tflops_per_gpu=float(arrays.model_tflops_per_gpu[0]),
        mfu=float(arrays.mfu[0]),
    )
    reliability = None
    if arrays.reliability_per_compute_s is not None:
        assert training.tokens is not None  # reliability is only estimated with a token target
        reliability = _reliability(
            model, cluster, layout, training.tokens / training.tokens_per_step * step.step_time_s
        )
    power = PowerEstimate(
        power_per_gpu_w=float(arrays.power_per_gpu_w[0]),
        cluster_power_w=float(arrays.cluster_power_w[0]),
        energy_kwh=None if arrays.energy_kwh is None else float(arrays.energy_kwh[0]),
        cost=None if arrays.cost is None else float(arrays.cost[0]),
    )
    total = memory.total_bytes
    return Estimate(
        layout=layout,
        fits=bool(arrays.fits[0]),
        reason=memory_reason(total, memory.capacity_bytes, cluster.gpu.hbm_bytes),
        memory=memory,
        step=step,
        power=power,
        reliability=reliability,
    )
