"""Memory per GPU: model states under ZeRO 0–3 / offload, and activations under TP/SP/PP/CP/recompute.

Model states follow Rajbhandari et al. 2020 ("ZeRO", §3.1, §5): with mixed-precision Adam a parameter
costs 2 bytes (fp16 weight) + 2 (fp16 gradient) + K=12 (fp32 master weight, momentum, variance);
stage 1 partitions the optimizer states over data-parallel ranks, stage 2 the gradients too, stage 3
the weights too. Megatron-LM keeps bf16 gradients in an fp32 main-grad buffer, hence its
"18 bytes per parameter" (Megatron-LM docs/source/api-guide/dist_optimizer.md).

Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models", §4): per layer and micro-batch s·b·h·(34 + 5·a·s/h) bytes, generalised here term by term to
grouped-query attention, gated MLPs, models without dropout, context parallelism and fused
(flash) attention, and multiplied by the micro-batches in flight on the first pipeline stage
(1F1B: p, interleaved: p·(1 + (p−1)/(p·v))).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from twin.perf.batch import RECOMPUTE_CODE, BoolArray, FloatArray, LayoutBatch
from twin.perf.specs import ClusterSpec, ModelSpec, Offload, Precision, Recompute, TrainingSpec

# Bytes per parameter held for weights, gradients and optimizer state, by training precision.
# fp16: ZeRO paper §3.1 (2 + 2 + 12). bf16: Megatron-LM main grads in fp32 (2 + 4 + 12 = 18 bytes,
# Megatron-LM dist_optimizer.md). fp32: weights and grads 4 each, Adam momentum + variance 8.
# fp8 (Transformer Engine, Micikevicius et al. 2022): bf16 weights plus a cached fp8 copy (+1 byte),
# fp32 main grads and optimizer as bf16.
WEIGHT_BYTES_PER_PARAM: dict[Precision, float] = {
    Precision.FP32: 4.0,
    Precision.FP16: 2.0,
    Precision.BF16: 2.0,
    Precision.FP8: 3.0,
}
GRAD_BYTES_PER_PARAM: dict[Precision, float] = {
    Precision.FP32: 4.0,
    Precision.FP16: 2.0,
    Precision.BF16: 4.0,
    Precision.FP8: 4.0,
}
OPTIMIZER_BYTES_PER_PARAM: dict[Precision, float] = {
    Precision.FP32: 8.0,
    Precision.FP16: 12.0,
    Precision.BF16: 12.0,
    Precision.FP8: 12.0,
}
# Bytes per stored activation element: 16-bit for fp16/bf16/fp8 training (TE keeps bf16 activations
# outside the GEMM inputs), 32-bit for fp32 training.
ACTIVATION_BYTES: dict[Precision, float] = {
    Precision.FP32: 4.0,
    Precision.FP16: 2.0,
    Precision.BF16: 2.0,
    Precision.FP8: 2.0,
}
# Softmax log-sum-exp kept by FlashAttention for the backward pass: fp32 per head and token
# (Dao et al. 2022, Algorithm 2).
FLASH_LSE_BYTES = 4.0
# ZeRO-3 prefetches the gathered weights of the next layers while computing the current one; DeepSpeed's
# `stage3_prefetch_bucket_size` and FSDP's forward/backward prefetch keep about two layers resident
# (Zhao et al. 2023, "PyTorch FSDP", §3.3).
ZERO3_RESIDENT_LAYERS = 2.0
# Working memory outside model states and activations: cuBLAS/cuDNN workspaces, NCCL buffers, the
# allocator's rounding. A round 1.5 GiB, checked against the SimuMax B200 measurements: with it the mean
# peak-memory error over the 31 Llama rows is −0.7 % (`twin validate`). Reported as `other_bytes`.
FRAMEWORK_OVERHEAD_BYTES = 1.5 * 2**30
# CUDA context and driver reservations outside the PyTorch allocator (~500-900 MiB measured on
# A100/H100 by `nvidia-smi` with an empty tensor; PyTorch docs "CUDA semantics: memory management").
CUDA_CONTEXT_BYTES = 0.75 * 2**30
# The caching allocator reserves more than it hands out: reserved/allocated on the 43 SimuMax B200
# runs is 1.01–1.08 (mean ~1.05, ../shared/calibration/simumax_b200_summary.json real_reserved_gib /
# real_alloc_gib). Allocated bytes must leave that headroom.
ALLOCATOR_FRAGMENTATION = 0.05


@dataclass(frozen=True, slots=True)
class MemoryArrays:
    """Per-GPU bytes on the pipeline stage with the highest total, one entry per layout."""

    params_bytes: FloatArray
    grads_bytes: FloatArray
    optimizer_bytes: FloatArray
    activations_bytes: FloatArray
    other_bytes: FloatArray
    total_bytes: FloatArray
    capacity_bytes: float
    peak_is_last_stage: BoolArray


def usable_capacity_bytes(hbm_bytes: float) -> float:
    """Bytes the allocator may hand out on a GPU with `hbm_bytes` of HBM (context + fragmentation)."""
    return (hbm_bytes - CUDA_CONTEXT_BYTES) / (1.0 + ALLOCATOR_FRAGMENTATION)


def activation_bytes_per_layer(model: ModelSpec, training: TrainingSpec, batch: LayoutBatch) -> FloatArray:
    """Activation bytes one transformer layer keeps for one micro-batch on one GPU (Korthikanti §4).

    Terms (in units of s·b·h for 16-bit activations, s = local sequence s/cp):
    replicated across TP unless sequence parallel: norm inputs 4, QKV input 2, MLP input 2,
    dropout masks 2 (if dropout). Split by TP: Q 2, K and V 2·(kv_hidden/h) each, attention output 2,
    MLP 4·f/h (GeLU in/out) or 6·f/h (SwiGLU in 2f, out f); attention scores 5·a·s/h with dropout,
    2·a·s/h without, unless attention is fused (keeps only the fp32 LSE) or recomputed (selective).
    Full recompute keeps just the layer input (2, split by TP under SP).
    """
    h = float(model.hidden)
    s_local = training.seq_len / batch.cp
    sbh = s_local * batch.micro_batch * h
    tp = batch.tp.astype(np.float64)
    act_bytes = batch.per_precision(ACTIVATION_BYTES)
    scale = act_bytes / 2.0  # the Korthikanti coefficients count 16-bit elements as 2 bytes

    dropout = 1.0 if model.has_dropout else 0.0
    replicated = 8.0 + 2.0 * dropout
    kv_ratio = model.kv_hidden / h
    mlp = (6.0 if model.gated_mlp else 4.0) * model.ffn_hidden / h
    split = 2.0 + 4.0 * kv_ratio + 2.0 + mlp
    score_coeff = 5.0 if model.has_dropout else 2.0
    # a·(s/cp)·s·b score elements per layer; expressed per s_local·b·h: a·s/h.
    scores = score_coeff * model.heads * training.seq_len / h
    lse: FloatArray | float = FLASH_LSE_BYTES / 2.0 * model.heads / h  # per s_local·b·h, 16-bit units
    # Score matrices are stored only by unfused attention without recompute (Korthikanti's 5as/h term);
    # fused attention keeps the fp32 log-sum-exp instead, selective recompute keeps nothing of them.
    stores_scores = ~batch.fused_attention & batch.is_recompute(Recompute.NONE)
    lse = np.where(batch.fused_attention, lse, 0.0)
    split_total = split + np.where(stores_scores, scores, lse)

    replicated_divisor = np.where(batch.sequence_parallel, tp, 1.0)
    stored = replicated / replicated_divisor + split_total / tp
    input_only = 2.0 / replicated_divisor
    per_layer = np.where(batch.is_recompute(Recompute.FULL), input_only, stored)
    return np.asarray(per_layer * sbh * scale, dtype=np.float64)


def model_state_bytes(
    params: FloatArray, shard: FloatArray, resident_params: FloatArray, batch: LayoutBatch
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(weights, gradients, optimizer) bytes per GPU for `params` weights held by its pipeline stage.

    ZeRO stage k partitions optimizer (k ≥ 1), gradients (k ≥ 2) and weights (k = 3) over `shard`
    data-parallel ranks; stage 3 keeps `resident_params` gathered weights besides its shard. Offloading
    the optimizer keeps its states on the host and streams gradients there, leaving `resident_params`
    worth of gradient buffer; offloading parameters (ZeRO-Infinity) keeps only the resident weights.
    """
    zero = batch.zero_stage
    w_b = batch.per_precision(WEIGHT_BYTES_PER_PARAM)
    g_b = batch.per_precision(GRAD_BYTES_PER_PARAM)
    o_b = batch.per_precision(OPTIMIZER_BYTES_PER_PARAM)
    offload_opt = ~batch.is_offload(Offload.NONE)
    # The gathered working set never exceeds the stage's own weights (DP = 1 gathers nothing).
    weights = np.where(zero >= 3, np.minimum(params, params / shard + resident_params), params) * w_b
    weights = np.where(batch.is_offload(Offload.PARAMS), np.minimum(params, resident_params) * w_b, weights)
    grads = np.where(zero >= 2, params / shard, params) * g_b
    grads = np.where(offload_opt, resident_params / ZERO3_RESIDENT_LAYERS * g_b, grads)
    optimizer = np.where(zero >= 1, params / shard, params) * o_b
    optimizer = np.where(offload_opt, 0.0, optimizer)
    return weights, grads, optimizer


def estimate_memory_arrays(
    model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, batch: LayoutBatch
) -> MemoryArrays:
    """Peak per-GPU memory for every layout in `batch` (max over first and last pipeline stage)."""
    tp = batch.tp.astype(np.float64)
    pp = batch.pp.astype(np.float64)
    cp = batch.cp.astype(np.float64)
    # Megatron shards optimizer state over the DP×CP group; DeepSpeed over DP (there cp = 1).
    shard = batch.dp * cp

    layers_per_stage = np.ceil(model.layers / pp)
    embed = model.vocab * model.hidden / tp
    single_stage = batch.pp == 1
    # First stage: input embedding; last stage: output layer (or, when tied, Megatron's copy of the
    # embedding); a single stage holds both, one copy if tied. So both ends hold the same count.
    embed_copies = np.where(single_stage & (not model.is_tied), 2.0, 1.0)
    stage_params = layers_per_stage * model.params_per_layer / tp + embed_copies * embed
    resident = ZERO3_RESIDENT_LAYERS * model.params_per_layer / tp
    weights, grads, optimizer = model_state_bytes(stage_params, shard, resident, batch)

    m = training.global_batch / (batch.dp * batch.micro_batch)
    v = batch.virtual_stages.astype(np.float64)
    # 1F1B keeps min(p, m) micro-batches in flight on the first stage; the interleaved schedule
    # (v > 1) adds a factor 1 + (p−1)/(p·v) (Korthikanti et al. 2022, §4.2.3).
    interleave = np.where(batch.virtual_stages > 1, 1.0 + (pp - 1.0) / (pp * v), 1.0)
    in_flight_first = np.minimum(pp, m) * interleave
    per_layer = activation_bytes_per_layer(model, training, batch)
    # Full recompute re-materialises one layer at a time during backward: that layer's activations.
    selective = replace(batch, recompute=np.full_like(batch.recompute, RECOMPUTE_CODE[Recompute.SELECTIVE]))
    recompute_workspace = np.where(
        batch.is_recompute(Recompute.FULL), activation_bytes_per_layer(model, training, selective), 0.0
    )
    act_b = batch.per_precision(ACTIVATION_BYTES)
    s_local = training.seq_len / cp
    sbh = s_local * batch.micro_batch * model.hidden
    sp_div = np.where(batch.sequence_parallel, tp, 1.0)
    # Output layer (Korthikanti §4.3): final norm + projection input 4·sbh/t (16-bit), the 16-bit
    # logits 2·s·b·V/t and the fp32 cross-entropy 4·s·b·V/t.
    logits = act_b * 2.0 * sbh / sp_div + 6.0 * s_local * batch.micro_batch * model.vocab / tp
    embed_dropout = act_b / 2.0 * sbh / sp_div * (1.0 if model.has_dropout else 0.0)

    first_act = layers_per_stage * per_layer * in_flight_first + embed_dropout * np.minimum(pp, m)
    first_act = np.where(single_stage, first_act + logits, first_act) + recompute_workspace
    last_act = layers_per_stage * per_layer + logits + recompute_workspace
    last_peak = (last_act > first_act) & ~single_stage
    activations = np.where(last_peak, last_act, first_act)
    other = np.full_like(weights, FRAMEWORK_OVERHEAD_BYTES)
    return MemoryArrays(
        params_bytes=weights,
        grads_bytes=grads,
        optimizer_bytes=optimizer,
        activations_bytes=activations,
        other_bytes=other,
        total_bytes=weights + grads + optimizer + activations + other,
        capacity_bytes=usable_capacity_bytes(cluster.gpu.hbm_bytes),
        peak_is_last_stage=last_peak,
    )
