"""Step time of one training iteration under TP/SP/CP/PP/DP, ZeRO, offload and recompute.

Compute: FLOPs per layer (Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU
Clusters Using Megatron-LM", §5.1, generalised to GQA and gated MLPs) at a size-dependent achieved
matmul efficiency, fused (flash) attention at its own efficiency (Dao 2023, FlashAttention-2), and
memory-bound element-wise work at HBM bandwidth. Communication: the α–β collectives of
`twin.perf.collectives` with Megatron's rank order (TP innermost, then CP, DP, PP).
Pipeline: 1F1B with bubble (p−1)/v micro-batch times (Narayanan et al. 2021, §2.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.perf import calibration as cal
from twin.perf.batch import FloatArray, LayoutBatch
from twin.perf.collectives import allgather_s, allreduce_s, alltoall_s, p2p_s, reduce_scatter_s
from twin.perf.memory import ACTIVATION_BYTES, GRAD_BYTES_PER_PARAM, WEIGHT_BYTES_PER_PARAM
from twin.perf.specs import ClusterSpec, ModelSpec, Offload, Precision, Recompute, TrainingSpec

# Backward of a GEMM costs two GEMMs of the same size (input and weight gradients).
BACKWARD_MATMUL_FACTOR = 2.0
# FlashAttention's backward re-computes the scores: 5 GEMM-sized passes vs 2 forward (Dao 2023, §3.1.2).
FLASH_BACKWARD_FACTOR = 2.5
# Causal masking lets fused kernels skip half of the score blocks (Dao 2023, §3.1.1).
CAUSAL_WORK_FRACTION = 0.5
# Adam's optimizer step streams, per parameter shard element: fp32 grad, master, m, v read (16 bytes),
# master, m, v written (12), 16-bit weight written (2) (Megatron-LM optimizer, `step()`).
OPTIMIZER_STEP_BYTES_PER_PARAM = 30.0
# DeepSpeed CPU-Adam reads/writes the same states in host memory; gradients arrive and weights return
# over PCIe in 16-bit (Ren et al. 2021, "ZeRO-Offload", §4.1).
CPU_OPTIMIZER_BYTES_PER_PARAM = 28.0
OFFLOAD_PCIE_BYTES_PER_PARAM = 4.0
# Host DRAM bandwidth available per GPU: a DGX H100 has 2 × Xeon 8480C, 8 channels DDR5-4800 each
# (2 × 307.2 GB/s) shared by 8 GPUs (NVIDIA DGX H100 user guide; Intel ARK 8480C).
HOST_MEMORY_BANDWIDTH_BYTES_PER_S_PER_GPU = 2 * 307.2e9 / 8


@dataclass(frozen=True, slots=True)
class StepArrays:
    """Per-layout step time and its parts, seconds; FLOP counts per step."""

    step_time_s: FloatArray
    compute_s: FloatArray
    tp_comm_s: FloatArray
    cp_comm_s: FloatArray
    pp_bubble_s: FloatArray
    pp_p2p_s: FloatArray
    dp_comm_s: FloatArray
    zero3_comm_s: FloatArray
    offload_s: FloatArray
    optimizer_s: FloatArray
    model_flops_per_step: float
    peak_flops_per_s: FloatArray

    def breakdown(self, i: int) -> dict[str, float]:
        """The i-th layout's step time split by cause (sums to `step_time_s`)."""
        return {
            name: float(getattr(self, name)[i])
            for name in (
                "compute_s",
                "tp_comm_s",
                "cp_comm_s",
                "pp_bubble_s",
                "pp_p2p_s",
                "dp_comm_s",
                "zero3_comm_s",
                "offload_s",
                "optimizer_s",
            )
        }


def matmul_params_per_layer(model: ModelSpec) -> int:
    """Weights that take part in GEMMs in one layer (Q, K, V, O and the MLP), norms and biases excluded."""
    h = model.hidden
    return 2 * h * h + 2 * h * model.kv_hidden + (3 if model.gated_mlp else 2) * h * model.ffn_hidden


def model_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """Training FLOPs per token, forward + backward, no recompute (Narayanan et al. 2021, eq. 3).

    Per layer: 6 × 2·(GEMM weights) plus attention scores and context 3 × 4·s·h (non-causal, as in
    Megatron-LM's and PaLM's MFU accounting); plus the output layer 6·h·V.
    """
    per_layer = 6.0 * matmul_params_per_layer(model) + 12.0 * seq_len * model.hidden
    return model.layers * per_layer + 6.0 * model.hidden * model.vocab


def matmul_efficiency(peak_efficiency: float, smallest_dim: FloatArray, half_dim: float) -> FloatArray:
    """Achieved GEMM efficiency: `peak_efficiency` · d / (d + half_dim), d the smallest GEMM dimension.

    Small GEMMs leave SMs idle and pay fixed tile costs; the saturating form and `half_dim` are fitted on
    measured runs (twin.perf.calibration.gemm_half_dim).
    """
    return np.asarray(peak_efficiency * smallest_dim / (smallest_dim + half_dim), dtype=np.float64)


def estimate_step_arrays(
    model: ModelSpec,
    cluster: ClusterSpec,
    training: TrainingSpec,
    batch: LayoutBatch,
    efficiency_scale: float = 1.0,
) -> StepArrays:
    """Step time for every layout in `batch`. `efficiency_scale` multiplies achieved compute rates
    (online calibration of a live job; 1.0 = the model as calibrated offline)."""
    gpu = cluster.gpu
    intra_bw, inter_bw = cluster.intra_bw_bytes_per_s, cluster.inter_bw_bytes_per_s
    gpn = cluster.gpus_per_node
    h, s = float(model.hidden), float(training.seq_len)
    tp = batch.tp.astype(np.float64)
    pp = batch.pp.astype(np.float64)
    cp = batch.cp.astype(np.float64)
    dp = batch.dp.astype(np.float64)
    v = batch.virtual_stages.astype(np.float64)
    mb = batch.micro_batch.astype(np.float64)
    m = training.global_batch / (dp * mb)  # micro-batches per step per pipeline
    tokens = mb * s / cp  # tokens per micro-batch on one GPU (before TP splits the width)
    act_b = batch.per_precision(ACTIVATION_BYTES)
    sp_div = np.where(batch.sequence_parallel, tp, 1.0)
    fused = batch.fused_attention
    selective = batch.is_recompute(Recompute.SELECTIVE)
    full_recompute = batch.is_recompute(Recompute.FULL)

    bf16_peak = gpu.peak_flops_per_s(Precision.BF16)
    peak = np.asarray([gpu.peak_flops_per_s(p) for p in Precision], dtype=np.float64)[batch.precision]
    gemm_peak = np.where(batch.is_precision(Precision.FP8), peak * cal.FP8_RELATIVE_EFFICIENCY, peak)
    eff_max = gpu.matmul_efficiency * efficiency_scale
    half_dim = cal.gemm_half_dim(gpu.bf16_tflops)

    # --- compute per layer, forward, one micro-batch, one GPU -------------------------------------
    linear_flops = 2.0 * tokens * matmul_params_per_layer(model) / tp
    linear_s = linear_flops / (gemm_peak * matmul_efficiency(eff_max, np.minimum(tokens, h / tp), half_dim))
    score_flops = 4.0 * tokens * s * h / tp  # QK^T and PV over the full sequence
    flash_s = (
        score_flops
        * CAUSAL_WORK_FRACTION
        / (bf16_peak * cal.FLASH_ATTENTION_EFFICIENCY * min(1.0, efficiency_scale))
    )
    unfused_s = score_flops / (
        bf16_peak * matmul_efficiency(eff_max, np.full_like(tokens, model.head_dim), half_dim)
    )
    attn_fwd_s = np.where(fused, flash_s, unfused_s)
    attn_bwd_s = np.where(fused, flash_s * FLASH_BACKWARD_FACTOR, unfused_s * BACKWARD_MATMUL_FACTOR)

    sbh = tokens * h
    dropout = 1.0 if model.has_dropout else 0.0
    rope = 2.0 * (h + model.kv_hidden) / h if model.gated_mlp else 0.0
    act_coeff = 3.0 if model.gated_mlp else 2.0
    scores_elems = model.heads * tokens * s / tp
    elementwise_elems = (
        (cal.ELEMENTWISE_SBH_PASSES + dropout + rope) * sbh / sp_div
        + act_coeff * tokens * model.ffn_hidden / tp
        + np.where(fused, 0.0, (2.0 + 2.5 * dropout) * scores_elems)
    )
    elementwise_s = elementwise_elems * act_b / (gpu.hbm_bandwidth_bytes_per_s * cal.HBM_EFFICIENCY)
    layer_fwd_s = linear_s + attn_fwd_s + elementwise_s
    layer_bwd_s = BACKWARD_MATMUL_FACTOR * (linear_s + elementwise_s) + attn_bwd_s
    # Full recompute repeats the layer's forward; selective repeats the (unfused) attention core, which
    # fused attention already recomputes inside its backward.
    recompute_s = np.where(full_recompute, layer_fwd_s, np.where(selective & ~fused, attn_fwd_s, 0.0))
    # Kernels are launched asynchronously: a layer takes the longer of its GPU time and the host's
    # time to dispatch its kernels (forward, backward and any recomputed forward).
    passes = 2.0 + np.where(full_recompute, 1.0, 0.0)
    layer_compute_s = np.maximum(
        layer_fwd_s + layer_bwd_s + recompute_s, passes * cal.HOST_DISPATCH_S_PER_LAYER_PASS
    )

    # --- tensor-parallel collectives: 2 in forward, 2 in backward, 2 more when recomputing --------
    tp_local = np.minimum(tp, gpn)
    tp_bytes = sbh * act_b
    one_tp = allreduce_s(tp_bytes, tp, tp_local, intra_bw, inter_bw)
    tp_per_layer = one_tp * (4.0 + np.where(full_recompute, 2.0, 0.0))

    # --- context parallel: all-to-all of Q, K, V and of the output, forward and backward ----------
    cp_local = np.clip(gpn // batch.tp, 1, batch.cp)
    qkv_bytes = tokens * (h + 2.0 * model.kv_hidden) / tp * act_b
    out_bytes = tokens * h / tp * act_b
    one_cp = alltoall_s(qkv_bytes, cp, cp_local, intra_bw, inter_bw) + alltoall_s(
        out_bytes, cp, cp_local, intra_bw, inter_bw
    )
    cp_per_layer = one_cp * (2.0 + np.where(full_recompute, 1.0, 0.0))

    # --- pipeline stages --------------------------------------------------------------------------
    layers_per_stage = np.ceil(model.layers / pp)
    logits_flops = 2.0 * tokens * h * model.vocab / tp
    logits_s = (
        (1.0 + BACKWARD_MATMUL_FACTOR)
        * logits_flops
        / (gemm_peak * matmul_efficiency(eff_max, np.minimum(tokens, h), half_dim))
    )
    # fp32 cross-entropy reads and writes the logits and their gradient.
    logits_s = logits_s + 4.0 * 4.0 * tokens * model.vocab / tp / (
        gpu.hbm_bandwidth_bytes_per_s * cal.HBM_EFFICIENCY
    )
    stage_compute_s = layers_per_stage * layer_compute_s
    stage_comm_s = layers_per_stage * (tp_per_layer + cp_per_layer)
    first_s = stage_compute_s + stage_comm_s
    # Megatron splits layers evenly, so the last stage (with the output layer) is the slowest.
    last_s = first_s + logits_s
    mean_stage_s = (first_s * (pp - 1.0) + last_s) / pp
    bubble_s = (pp - 1.0) / v * mean_stage_s
    # Megatron's scatter-gather optimisation sends 1/tp of the boundary activation from each TP rank.
    p2p_bytes = sbh * act_b / tp
    p2p_same_node = (batch.tp * batch.cp * batch.dp) < gpn
    p2p_sends = np.where(batch.pp > 1, 2.0 * (m * v + pp - 1.0), 0.0)
    pp_p2p_s = p2p_sends * p2p_s(p2p_bytes, p2p_same_node, intra_bw, inter_bw)

    # --- data parallel / ZeRO ---------------------------------------------------------------------
    zero = batch.zero_stage
    shard = dp * cp
    dp_local = np.clip(gpn // batch.tp, 1, batch.dp * batch.cp)
    stage_params = layers_per_stage * model.params_per_layer / tp + model.vocab * h / tp
    grad_bytes = stage_params * batch.per_precision(GRAD_BYTES_PER_PARAM)
    weight_bytes = stage_params * np.minimum(batch.per_precision(WEIGHT_BYTES_PER_PARAM), 2.0)
    ar_grads = allreduce_s(grad_bytes, shard, dp_local, intra_bw, inter_bw)
    rs_grads = reduce_scatter_s(grad_bytes, shard, dp_local, intra_bw, inter_bw)
    ag_weights = allgather_s(weight_bytes, shard, dp_local, intra_bw, inter_bw)
    backward_last_s = layers_per_stage * layer_bwd_s
    # ZeRO-2 (DeepSpeed) reduce-scatters every micro-batch's gradients, overlapped with its backward.
    rs_exposed = np.maximum(0.0, rs_grads - cal.DP_OVERLAP * backward_last_s)
    dp_comm_s = np.select(
        [zero == 0, zero == 1, zero == 2],
        [ar_grads, rs_grads + ag_weights, m * rs_exposed + ag_weights],
        default=0.0,
    )
    # ZeRO-3 gathers weights for forward and again for backward and reduce-scatters gradients, every
    # micro-batch, prefetching behind compute.
    zero3_per_mb = 2.0 * ag_weights + rs_grads
    zero3_exposed = np.maximum(
        zero3_per_mb * (1.0 - cal.ZERO3_PREFETCH_OVERLAP), zero3_per_mb - stage_compute_s
    )
    zero3_comm_s = np.where(zero == 3, m * zero3_exposed, 0.0)

    # --- optimizer step and offload ---------------------------------------------------------------
    shard_params = np.where(zero >= 1, stage_params / shard, stage_params)
    gpu_opt_s = (
        shard_params * OPTIMIZER_STEP_BYTES_PER_PARAM / (gpu.hbm_bandwidth_bytes_per_s * cal.HBM_EFFICIENCY)
    )
    cpu_opt_s = shard_params * CPU_OPTIMIZER_BYTES_PER_PARAM / HOST_MEMORY_BANDWIDTH_BYTES_PER_S_PER_GPU
    pcie_s = shard_params * OFFLOAD_PCIE_BYTES_PER_PARAM / gpu.pcie_bandwidth_bytes_per_s
    offloaded = ~batch.is_offload(Offload.NONE)
    optimizer_s = np.where(offloaded, cpu_opt_s, gpu_opt_s)
    params_fetch = 2.0 * shard_params * 2.0 / gpu.pcie_bandwidth_bytes_per_s
    params_exposed = np.maximum(
        params_fetch * (1.0 - cal.ZERO3_PREFETCH_OVERLAP), params_fetch - stage_compute_s
    )
    offload_s = np.where(offloaded, pcie_s, 0.0) + np.where(
        batch.is_offload(Offload.PARAMS), m * params_exposed, 0.0
    )

    compute_s = m * (stage_compute_s + logits_s)
    tp_comm_s = m * layers_per_stage * tp_per_layer
    cp_comm_s = m * layers_per_stage * cp_per_layer
    step = m * last_s + bubble_s + pp_p2p_s + dp_comm_s + zero3_comm_s + optimizer_s + offload_s
    model_flops = model_flops_per_token(model, training.seq_len) * training.tokens_per_step
    return StepArrays(
        step_time_s=step,
        compute_s=compute_s,
        tp_comm_s=tp_comm_s,
        cp_comm_s=cp_comm_s,
        pp_bubble_s=bubble_s,
        pp_p2p_s=pp_p2p_s,
        dp_comm_s=dp_comm_s,
        zero3_comm_s=zero3_comm_s,
        offload_s=offload_s,
        optimizer_s=optimizer_s,
        model_flops_per_step=model_flops,
        peak_flops_per_s=peak,
    )
