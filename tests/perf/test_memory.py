"""Memory per GPU against published numbers (ZeRO paper, Megatron, Korthikanti et al.) and invariants."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.perf.batch import LayoutBatch
from twin.perf.gpu_presets import gpu_preset
from twin.perf.memory import activation_bytes_per_layer, estimate_memory_arrays, model_state_bytes
from twin.perf.model_presets import model_preset
from twin.perf.specs import (
    ClusterSpec,
    ModelSpec,
    Offload,
    ParallelLayout,
    Precision,
    Recompute,
    TrainingSpec,
)

GB = 1e9


def states_per_gpu_gb(params: float, dp: int, zero: int, precision: Precision) -> float:
    batch = LayoutBatch.from_layouts([ParallelLayout(dp=dp, zero_stage=zero, precision=precision)])
    w, g, o = model_state_bytes(np.array([params]), np.array([float(dp)]), np.array([0.0]), batch)
    return float((w + g + o)[0]) / GB


@pytest.mark.parametrize(("zero", "expected_gb"), [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_7_5b_on_64_gpus(zero: int, expected_gb: float) -> None:
    # Rajbhandari et al. 2020, Figure 1: 7.5B parameters, DP 64, K = 12 → 120 / 31.4 / 16.6 / 1.9 GB.
    assert states_per_gpu_gb(7.5e9, 64, zero, Precision.FP16) == pytest.approx(expected_gb, abs=0.05)


def test_megatron_bf16_costs_18_bytes_per_parameter() -> None:
    # Megatron-LM dist_optimizer.md: bf16 weight 2 + fp32 main grad 4 + fp32 master/m/v 12 = 18 bytes.
    assert states_per_gpu_gb(1e9, 1, 0, Precision.BF16) == pytest.approx(18.0)


def test_distributed_optimizer_shards_only_the_optimizer_states() -> None:
    # Megatron: with DP = d the distributed optimizer costs 6 + 12/d bytes per parameter.
    assert states_per_gpu_gb(1e9, 8, 1, Precision.BF16) == pytest.approx(6.0 + 12.0 / 8)


def test_gpt3_activation_per_layer_matches_korthikanti_table() -> None:
    # Korthikanti et al. 2022, eq. 1 and §4.2.2: sbh(34 + 5as/h) bytes per layer without parallelism,
    # 34·sbh/t with TP + SP + selective recompute. GPT-3 175B, s = 2048, b = 1, t = 8.
    model = model_preset("gpt3-175b")
    training = TrainingSpec(seq_len=2048, global_batch=8)
    s, b, h, a = 2048, 1, model.hidden, model.heads
    plain = LayoutBatch.from_layouts(
        [ParallelLayout(recompute=Recompute.NONE, sequence_parallel=False, fused_attention=False)]
    )
    assert activation_bytes_per_layer(model, training, plain)[0] == pytest.approx(
        s * b * h * (34 + 5 * a * s / h)
    )
    selective_sp = LayoutBatch.from_layouts(
        [ParallelLayout(tp=8, recompute=Recompute.SELECTIVE, fused_attention=False)]
    )
    assert activation_bytes_per_layer(model, training, selective_sp)[0] == pytest.approx(34 * s * b * h / 8)
    full = LayoutBatch.from_layouts([ParallelLayout(tp=8, recompute=Recompute.FULL)])
    assert activation_bytes_per_layer(model, training, full)[0] == pytest.approx(2 * s * b * h / 8)


def test_tp_without_sequence_parallel_keeps_10_sbh_replicated() -> None:
    # Korthikanti §4.2.1: sbh(10 + 24/t + 5as/(ht)) with tensor parallelism alone.
    model = model_preset("gpt3-175b")
    training = TrainingSpec(seq_len=2048, global_batch=8)
    s, h, a, t = 2048, model.hidden, model.heads, 8
    batch = LayoutBatch.from_layouts(
        [ParallelLayout(tp=t, recompute=Recompute.NONE, sequence_parallel=False, fused_attention=False)]
    )
    expected = s * h * (10 + 24 / t + 5 * a * s / (h * t))
    assert activation_bytes_per_layer(model, training, batch)[0] == pytest.approx(expected)


def test_llama3_70b_memory_matches_simumax_b200_measurement() -> None:
    # SimuMax B200, llama3_70b_l12_tp4_pp1_dp2_mbc4_cef: measured peak allocation 39.07 GiB (Megatron-LM,
    # ../shared/calibration/simumax_b200_summary.json). Twin within 5 %.
    model = ModelSpec(
        name="llama3-70b-l12",
        layers=12,
        hidden=8192,
        heads=64,
        kv_heads=8,
        ffn_hidden=28672,
        vocab=128256,
        gated_mlp=True,
    )
    cluster = ClusterSpec(gpu=gpu_preset("b200"), gpus=8)
    training = TrainingSpec(seq_len=4096, global_batch=8)
    batch = LayoutBatch.from_layouts([ParallelLayout(tp=4, dp=2, zero_stage=1, recompute=Recompute.NONE)])
    total_gib = float(estimate_memory_arrays(model, cluster, training, batch).total_bytes[0]) / 2**30
    assert total_gib == pytest.approx(39.07, rel=0.05)


def _memory(layout: ParallelLayout, gpus: int = 64) -> float:
    model = model_preset("llama2-13b")
    cluster = ClusterSpec(gpu=gpu_preset("a100-sxm-80gb"), gpus=gpus)
    training = TrainingSpec(seq_len=4096, global_batch=512)
    return float(
        estimate_memory_arrays(model, cluster, training, LayoutBatch.from_layouts([layout])).total_bytes[0]
    )


layouts = st.builds(
    ParallelLayout,
    tp=st.sampled_from([1, 2, 4, 8]),
    pp=st.sampled_from([1, 2, 4, 8]),
    dp=st.sampled_from([1, 2, 4, 8, 16]),
    micro_batch=st.sampled_from([1, 2, 4]),
    zero_stage=st.integers(0, 3),
    recompute=st.sampled_from(list(Recompute)),
    precision=st.sampled_from([Precision.BF16, Precision.FP16, Precision.FP32]),
)


@settings(max_examples=200, deadline=None)
@given(layouts)
def test_memory_never_rises_with_zero_stage(layout: ParallelLayout) -> None:
    totals = [_memory(replace(layout, zero_stage=z)) for z in range(4)]
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(totals))


@settings(max_examples=200, deadline=None)
@given(layouts, st.sampled_from([2, 4]))
def test_more_data_parallel_gpus_never_raise_model_states(layout: ParallelLayout, factor: int) -> None:
    model = model_preset("llama2-13b")
    params = np.array([model.params / (layout.tp * layout.pp)])

    def states(dp: int) -> float:
        batch = LayoutBatch.from_layouts([replace(layout, dp=dp)])
        w, g, o = model_state_bytes(params, np.array([float(dp)]), np.array([0.0]), batch)
        return float((w + g + o)[0])

    assert states(layout.dp * factor) <= states(layout.dp) + 1e-6


def test_offloading_the_optimizer_frees_its_states() -> None:
    on_gpu = _memory(ParallelLayout(dp=64, zero_stage=2))
    offloaded = _memory(ParallelLayout(dp=64, zero_stage=2, offload=Offload.OPTIMIZER))
    assert offloaded < on_gpu
