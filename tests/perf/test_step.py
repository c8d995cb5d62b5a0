"""Step time, power and their invariants; published FLOP counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.perf.batch import LayoutBatch
from twin.perf.estimate import estimate
from twin.perf.gpu_presets import gpu_preset
from twin.perf.model_presets import model_preset
from twin.perf.power import cap_slowdown, compute_phase_power_w
from twin.perf.specs import ClusterSpec, ParallelLayout, Recompute, TrainingSpec
from twin.perf.step import estimate_step_arrays, model_flops_per_token


def test_gpt3_175b_training_flops_match_narayanan_eq3() -> None:
    # Narayanan et al. 2021, eq. 3: 96·B·s·l·h²·(1 + s/6h + V/16lh) with full recompute (4 passes);
    # without recompute (3 passes) that is 72·l·h²·(1 + s/6h + V/16lh) per token.
    model = model_preset("gpt3-175b")
    s, h, layers, vocab = 2048, model.hidden, model.layers, model.vocab
    expected = 72 * layers * h * h * (1 + s / (6 * h) + vocab / (16 * layers * h))
    assert model_flops_per_token(model, s) == pytest.approx(expected, rel=0.001)


def test_model_flops_are_about_six_per_parameter_per_token() -> None:
    # Kaplan et al. 2020: C ≈ 6·N per token when the sequence is short relative to the width.
    model = model_preset("llama3.1-405b")
    assert model_flops_per_token(model, 128) == pytest.approx(6 * model.params, rel=0.02)


def _cluster(gpus: int = 64, cap: float | None = None) -> ClusterSpec:
    return ClusterSpec(gpu=gpu_preset("h100-sxm"), gpus=gpus, power_cap_w=cap)


def test_breakdown_sums_to_step_time() -> None:
    est = estimate(
        model_preset("llama2-70b"),
        _cluster(),
        ParallelLayout(tp=8, pp=2, dp=4),
        TrainingSpec(seq_len=4096, global_batch=256),
    )
    assert sum(est.step.breakdown_s.values()) == pytest.approx(est.step.step_time_s, rel=1e-9)
    assert 0.2 < est.step.mfu < 0.7  # a healthy H100 Megatron run is 35-55 % MFU (Llama 3 report: 38-43 %)


def test_power_cap_slows_compute_and_lowers_power() -> None:
    model, training = model_preset("llama3-8b"), TrainingSpec(seq_len=8192, global_batch=64)
    layout = ParallelLayout(tp=1, dp=8)
    free = estimate(model, _cluster(8), layout, training)
    capped = estimate(model, _cluster(8, cap=500.0), layout, training)
    assert capped.step.step_time_s > free.step.step_time_s
    assert capped.power.power_per_gpu_w < free.power.power_per_gpu_w <= 700.0


def test_power_cap_above_compute_power_changes_nothing() -> None:
    gpu = gpu_preset("h100-sxm")
    assert cap_slowdown(gpu, compute_phase_power_w(gpu) + 1) == 1.0
    # Cube law: halving dynamic power lowers the clock by 2^(1/3).
    half = gpu.idle_w + (compute_phase_power_w(gpu) - gpu.idle_w) / 2
    assert cap_slowdown(gpu, half) == pytest.approx(2 ** (1 / 3))


def test_full_recompute_costs_about_a_third_more_compute_when_compute_bound() -> None:
    # Large micro-batches keep layers above the host-dispatch floor, so only GPU work differs.
    model, training = model_preset("gpt3-13b"), TrainingSpec(seq_len=2048, global_batch=512)
    base_layout = ParallelLayout(tp=4, dp=16, micro_batch=8, recompute=Recompute.SELECTIVE)
    full_layout = ParallelLayout(tp=4, dp=16, micro_batch=8, recompute=Recompute.FULL)
    base = estimate(model, _cluster(), base_layout, training)
    full = estimate(model, _cluster(), full_layout, training)
    ratio = full.step.breakdown_s["compute_s"] / base.step.breakdown_s["compute_s"]
    assert 1.2 < ratio < 1.4  # forward is ~1/3 of forward+backward


layouts = st.builds(
    ParallelLayout,
    tp=st.sampled_from([1, 2, 4, 8]),
    pp=st.sampled_from([1, 2, 4]),
    dp=st.sampled_from([1, 2, 4, 8]),
    micro_batch=st.sampled_from([1, 2]),
    zero_stage=st.integers(0, 3),
    recompute=st.sampled_from(list(Recompute)),
)


@settings(max_examples=150, deadline=None)
@given(layouts)
def test_step_time_is_positive_and_finite(layout: ParallelLayout) -> None:
    model = model_preset("llama2-13b")
    cluster = ClusterSpec(
        gpu=gpu_preset("a100-sxm-80gb"), gpus=layout.gpus, gpus_per_node=min(8, layout.gpus)
    )
    training = TrainingSpec(seq_len=4096, global_batch=64)
    step = estimate_step_arrays(model, cluster, training, LayoutBatch.from_layouts([layout]))
    assert np.all(np.isfinite(step.step_time_s)) and np.all(step.step_time_s > 0)
    assert math.isfinite(step.model_flops_per_step)
