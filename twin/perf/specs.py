"""Frozen specifications the performance core computes over (DESIGN §1).

The split follows Calculon (Isaev et al., SC'23): model shape / parallel execution / system hardware.
All fields are SI units; the suffix says which (`_bytes`, `_bytes_per_s`, `_w`, `_s`).
Validation here is structural (types, ranges); cross-field checks (TP divides heads, ...) live in
`twin.perf.layout_rules` so they can be applied to a whole sweep at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from twin.errors import ScenarioError


class Precision(StrEnum):
    """Training number format of weights and activations (mixed precision keeps fp32 master weights)."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"


class Offload(StrEnum):
    """What ZeRO-Offload / ZeRO-Infinity moves to host memory (Ren et al. 2021; Rajbhandari et al. 2021)."""

    NONE = "none"
    OPTIMIZER = "optimizer"
    PARAMS = "params"


class Recompute(StrEnum):
    """Activation recomputation (Korthikanti et al. 2022, "Reducing Activation Recomputation")."""

    NONE = "none"
    SELECTIVE = "selective"
    FULL = "full"


# Stable integer codes, used by the vectorised kernels (index = code).
PRECISIONS: tuple[Precision, ...] = tuple(Precision)
OFFLOADS: tuple[Offload, ...] = tuple(Offload)
RECOMPUTES: tuple[Recompute, ...] = tuple(Recompute)


def require_positive(name: str, value: float) -> None:
    """Raise `ScenarioError` naming the field unless `value` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{name}(={value!r}) must be a number.")
    if not math.isfinite(value) or value <= 0:
        raise ScenarioError(f"{name}(={value!r}) must be > 0.")


def require_positive_int(name: str, value: int) -> None:
    """Raise `ScenarioError` naming the field unless `value` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{name}(={value!r}) must be an integer.")
    if value < 1:
        raise ScenarioError(f"{name}(={value!r}) must be >= 1.")


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One accelerator type. Peak rates are dense (no 2:4 sparsity).

    `matmul_efficiency` is the achieved fraction of peak on large training GEMMs; it is a calibrated
    constant (see `twin.perf.calibration`) and the preset names its source.
    """

    name: str
    fp32_tflops: float
    tf32_tflops: float
    bf16_tflops: float  # fp16 runs at the same dense rate on every preset GPU
    fp8_tflops: float | None  # None: no fp8 tensor cores (V100, A100)
    hbm_bytes: float
    hbm_bandwidth_bytes_per_s: float
    tdp_w: float
    idle_w: float
    intra_node_bandwidth_bytes_per_s: float  # NVLink/xGMI, per GPU, per direction
    inter_node_bandwidth_bytes_per_s: float  # scale-out NIC bandwidth per GPU, per direction
    pcie_bandwidth_bytes_per_s: float  # host link per GPU, per direction
    host_power_w: float  # node power that is not GPU power, per GPU, at training load
    matmul_efficiency: float
    source: str = ""

    def __post_init__(self) -> None:
        for name in (
            "fp32_tflops",
            "tf32_tflops",
            "bf16_tflops",
            "hbm_bytes",
            "hbm_bandwidth_bytes_per_s",
            "tdp_w",
            "intra_node_bandwidth_bytes_per_s",
            "inter_node_bandwidth_bytes_per_s",
            "pcie_bandwidth_bytes_per_s",
            "matmul_efficiency",
        ):
            require_positive(f"gpu.{name}", getattr(self, name))
        if self.fp8_tflops is not None:
            require_positive("gpu.fp8_tflops", self.fp8_tflops)
        if not 0 <= self.idle_w < self.tdp_w:
            raise ScenarioError(f"gpu.idle_w(={self.idle_w}) must be in [0, tdp_w={self.tdp_w}).")
        if self.matmul_efficiency > 1:
            raise ScenarioError(f"gpu.matmul_efficiency(={self.matmul_efficiency}) must be <= 1.")

    def peak_flops_per_s(self, precision: Precision) -> float:
        """Dense peak FLOP/s of the tensor cores for `precision` (fp8 falls back to bf16 where absent)."""
        if precision is Precision.FP32:
            return self.tf32_tflops * 1e12  # fp32 training runs its matmuls on TF32 tensor cores
        if precision is Precision.FP8 and self.fp8_tflops is not None:
            return self.fp8_tflops * 1e12
        return self.bf16_tflops * 1e12


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer's shape.

    Family conventions follow from `gated_mlp`: gated (Llama-style: SwiGLU, RMSNorm, RoPE, no biases,
    no dropout, untied output layer) or not (GPT-style: GeLU, LayerNorm with biases, learned positions,
    dropout, tied embeddings), unless `tied_embeddings` / `dropout` are given explicitly by a preset.
    """

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn_hidden: int
    vocab: int
    gated_mlp: bool
    tied_embeddings: bool | None = None
    dropout: bool | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab"):
            require_positive_int(f"model.{name}", getattr(self, name))
        if not isinstance(self.gated_mlp, bool):
            raise ScenarioError(f"model.gated_mlp(={self.gated_mlp!r}) must be true or false.")
        if self.hidden % self.heads:
            raise ScenarioError(f"model.hidden(={self.hidden}) must be divisible by heads(={self.heads}).")
        if self.heads % self.kv_heads:
            raise ScenarioError(
                f"model.heads(={self.heads}) must be divisible by kv_heads(={self.kv_heads})."
            )

    @property
    def is_tied(self) -> bool:
        """Whether input embedding and output layer share weights."""
        return (not self.gated_mlp) if self.tied_embeddings is None else self.tied_embeddings

    @property
    def has_dropout(self) -> bool:
        """Whether dropout masks are stored (Korthikanti et al. 2022 count them)."""
        return (not self.gated_mlp) if self.dropout is None else self.dropout

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_hidden(self) -> int:
        """Width of K (and of V) under grouped-query attention: kv_heads × head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def params_per_layer(self) -> int:
        """Weights of one transformer layer (attention + MLP + norms, with biases for GPT-style)."""
        h, f = self.hidden, self.ffn_hidden
        attn = 2 * h * h + 2 * h * self.kv_hidden  # Q and O; K and V
        mlp = (3 if self.gated_mlp else 2) * h * f
        if self.gated_mlp:
            norms = 2 * h  # two RMSNorm weights
            biases = 0
        else:
            norms = 4 * h  # two LayerNorms, weight + bias
            biases = h + 2 * self.kv_hidden + h + f + h  # QKV, O, MLP in, MLP out
        return attn + mlp + norms + biases

    @property
    def embedding_params(self) -> int:
        """Input embedding (and a separate output layer when untied), plus the final norm."""
        copies = 1 if self.is_tied else 2
        return copies * self.vocab * self.hidden + (1 if self.gated_mlp else 2) * self.hidden

    @property
    def params(self) -> int:
        """Total trainable parameters (position embeddings of GPT-style models are not counted)."""
        return self.layers * self.params_per_layer + self.embedding_params


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """The machines a job runs on. Bandwidths default to the GPU preset's."""

    gpu: GpuSpec
    gpus: int
    gpus_per_node: int = 8
    price_per_gpu_hour: float = 0.0
    currency: str = "EUR"
    pue: float = 1.2
    power_cap_w: float | None = None
    intra_node_bandwidth_bytes_per_s: float | None = None
    inter_node_bandwidth_bytes_per_s: float | None = None
    checkpoint_bandwidth_bytes_per_s: float | None = None
    failure_rate_scale: float = 1.0

    def __post_init__(self) -> None:
        require_positive_int("cluster.gpus", self.gpus)
        require_positive_int("cluster.gpus_per_node", self.gpus_per_node)
        if self.gpus > self.gpus_per_node and self.gpus % self.gpus_per_node:
            raise ScenarioError(
                f"cluster.gpus(={self.gpus}) must be a multiple of gpus_per_node(={self.gpus_per_node})."
            )
        if isinstance(self.price_per_gpu_hour, bool) or not isinstance(self.price_per_gpu_hour, int | float):
            raise ScenarioError(f"cluster.price_per_gpu_hour(={self.price_per_gpu_hour!r}) must be a number.")
        if not math.isfinite(self.price_per_gpu_hour) or self.price_per_gpu_hour < 0:
            raise ScenarioError(f"cluster.price_per_gpu_hour(={self.price_per_gpu_hour!r}) must be >= 0.")
        require_positive("cluster.pue", self.pue)
        if self.pue < 1:
            raise ScenarioError(f"cluster.pue(={self.pue}) must be >= 1.")
        for name in (
            "power_cap_w",
            "intra_node_bandwidth_bytes_per_s",
            "inter_node_bandwidth_bytes_per_s",
            "checkpoint_bandwidth_bytes_per_s",
        ):
            value = getattr(self, name)
            if value is not None:
                require_positive(f"cluster.{name}", value)
        if self.power_cap_w is not None and self.power_cap_w <= self.gpu.idle_w:
            raise ScenarioError(
                f"cluster.power_cap_w(={self.power_cap_w}) must be above the GPU's idle power "
                f"({self.gpu.idle_w} W)."
            )
        require_positive("cluster.failure_rate_scale", self.failure_rate_scale)

    @property
    def nodes(self) -> int:
        return max(1, self.gpus // self.gpus_per_node)

    @property
    def intra_bw_bytes_per_s(self) -> float:
        return self.intra_node_bandwidth_bytes_per_s or self.gpu.intra_node_bandwidth_bytes_per_s

    @property
    def inter_bw_bytes_per_s(self) -> float:
        return self.inter_node_bandwidth_bytes_per_s or self.gpu.inter_node_bandwidth_bytes_per_s


@dataclass(frozen=True, slots=True)
class ParallelLayout:
    """How a job is split: Megatron rank order TP (innermost) → CP → DP → PP (outermost)."""

    tp: int = 1
    pp: int = 1
    cp: int = 1
    dp: int = 1
    micro_batch: int = 1
    virtual_stages: int = 1
    zero_stage: int = 1
    offload: Offload = Offload.NONE
    recompute: Recompute = Recompute.SELECTIVE
    sequence_parallel: bool = True
    precision: Precision = Precision.BF16
    # FlashAttention-style fused attention (default in Megatron-Core/TE, DeepSpeed, PyTorch SDPA). Not part
    # of the scenario JSON; `twin validate` turns it off for the 2023 vTrain runs (unfused softmax).
    fused_attention: bool = True

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "cp", "dp", "micro_batch", "virtual_stages"):
            require_positive_int(f"layout.{name}", getattr(self, name))
        if isinstance(self.zero_stage, bool) or self.zero_stage not in (0, 1, 2, 3):
            raise ScenarioError(f"layout.zero_stage(={self.zero_stage!r}) must be 0, 1, 2 or 3.")
        if not isinstance(self.sequence_parallel, bool):
            raise ScenarioError(
                f"layout.sequence_parallel(={self.sequence_parallel!r}) must be true or false."
            )

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.cp * self.dp


@dataclass(frozen=True, slots=True)
class TrainingSpec:
    """What is trained: sequence length, global batch (sequences per step), optional token target."""

    seq_len: int
    global_batch: int
    tokens: float | None = None

    def __post_init__(self) -> None:
        require_positive_int("training.seq_len", self.seq_len)
        require_positive_int("training.global_batch", self.global_batch)
        if self.tokens is not None:
            require_positive("training.tokens", self.tokens)

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.global_batch
