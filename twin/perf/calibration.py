"""Calibrated constants of the performance model, each with where its value comes from.

Fitted constants come from the grid search in `benchmarks/fit_calibration.py`, which minimises step-time
MAPE on the fit split of `twin.validate`: A100 efficiency, GEMM half-size and host dispatch on the vTrain
A100 single-node runs; B200 efficiency, its half-size and fused-attention efficiency on the SimuMax rows
with 4 micro-batches. `twin validate` reports the errors on the other rows (README, "Accuracy").
"""

from __future__ import annotations

# --- GEMMs -------------------------------------------------------------------------------------------
# Achieved fraction of dense peak on large training GEMMs, per GPU preset (fitted: see module doc).
# GPUs without measured runs use the A100 figure (an assumption, stated in README).
MATMUL_EFFICIENCY: dict[str, float] = {
    "a100-sxm-40gb": 0.80,
    "a100-sxm-80gb": 0.80,
    "b200": 0.45,  # SimuMax's own fitted B200 default matmul efficiency is 0.488 (b200_bf16_ceperm.json)
}
DEFAULT_MATMUL_EFFICIENCY = 0.70
# Smallest GEMM dimension at which efficiency is half its peak: 96 on A100 (fitted on vTrain
# single-node), 512 on B200 (fitted on SimuMax 4-micro-batch rows). Faster GPUs need more parallel work
# per GEMM to fill their SMs; between and beyond the two we scale with a power law in peak throughput,
# half_dim = 96 · (peak / 312 TFLOP/s)^k, k = ln(512/96) / ln(2250/312) = 0.85.
GEMM_HALF_DIM = 96.0
GEMM_HALF_DIM_REFERENCE_TFLOPS = 312.0
GEMM_HALF_DIM_EXPONENT = 0.85
# FP8 GEMMs reach a smaller fraction of their (2×) peak than bf16: casting and scaling overheads of
# Transformer Engine; NVIDIA NeMo reports ~1.3–1.5× end-to-end FP8 speed-ups over BF16 (NeMo
# performance summary, H100, Llama 2/3 pre-training), i.e. ~0.7 of the peak ratio.
FP8_RELATIVE_EFFICIENCY = 0.7

# --- attention and element-wise ---------------------------------------------------------------------
# FlashAttention forward+backward reaches 0.50–0.73 of A100 peak (Dao 2023, FlashAttention-2, Fig. 5)
# and 0.69–0.71 on B200 (SimuMax b200_bf16_ceperm.json sdp_fwd/sdp_bwd efficiency).
# Fitted on the SimuMax B200 4-micro-batch rows (the only measured runs with fused attention). The MAPE
# optimum (fit 3.9 %) has 0.4 with B200 GEMM efficiency 0.48; we keep 0.5 with 0.45 (fit 5.0 %, mean
# error +0.2 % instead of −1.3 %), nearer FlashAttention's published 0.5–0.7 (benchmarks/fit_calibration.py).
FLASH_ATTENTION_EFFICIENCY = 0.5
# Achieved fraction of HBM bandwidth for element-wise kernels (SimuMax B200 fitted 0.666 default).
HBM_EFFICIENCY = 0.67
# Passes over s·b·h 16-bit elements per layer forward: 2 norms (read+write: 4) and 2 residual adds
# (2 reads + 1 write: 6) (Megatron-LM fused kernels).
ELEMENTWISE_SBH_PASSES = 10.0
# Host time to dispatch one layer's kernels for one pass (forward, or backward) of a micro-batch:
# the floor under small layers, where Python and kernel-launch overhead outlast the GPU work (vTrain
# single-node rows with micro-batch 1 take ~3.5 ms per layer at any TP degree). Fitted on vTrain
# single-node; modern stacks with CUDA graphs pay less, so this is an upper bound for them.
HOST_DISPATCH_S_PER_LAYER_PASS = 1.1e-3

# --- overlap -----------------------------------------------------------------------------------------
# Fraction of data-parallel gradient communication hidden behind backward compute. Both measured data
# sets ran without overlap (SimuMax "non-overlap contract"; vTrain configs use_gradient_bucket=false).
DP_OVERLAP = 0.0
# Fraction of ZeRO-3 / parameter-offload traffic hidden by prefetching behind compute (FSDP and
# DeepSpeed prefetch the next layer's gather; Zhao et al. 2023 §3.3). Assumption: no measured run here.
ZERO3_PREFETCH_OVERLAP = 0.8


def gemm_half_dim(bf16_tflops: float) -> float:
    """GEMM dimension at which a GPU of `bf16_tflops` dense peak reaches half its peak GEMM efficiency."""
    return float(GEMM_HALF_DIM * (bf16_tflops / GEMM_HALF_DIM_REFERENCE_TFLOPS) ** GEMM_HALF_DIM_EXPONENT)


def matmul_efficiency_for(gpu_name: str) -> float:
    """Achieved fraction of peak tensor throughput on large GEMMs for the named GPU preset."""
    return MATMUL_EFFICIENCY.get(gpu_name, DEFAULT_MATMUL_EFFICIENCY)
