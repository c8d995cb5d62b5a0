"""Failure, checkpoint and goodput model (twin.perf.reliability), pinned to published numbers."""

from __future__ import annotations

import dataclasses
import math

import pytest

from twin.errors import ScenarioError
from twin.perf.reliability import (
    DEFAULT_CHECKPOINT_BANDWIDTH_BYTES_PER_S_PER_GPU,
    DEFAULT_RESTART_S,
    HARDWARE_INTERRUPTION_SHARE,
    LLAMA3_INTERRUPTION_CAUSES,
    LLAMA3_JOB_INTERRUPTIONS,
    LLAMA3_PLANNED_INTERRUPTIONS,
    LLAMA3_UNEXPECTED_INTERRUPTIONS,
    UNEXPECTED_INTERRUPTIONS_PER_GPU_HOUR,
    Component,
    ReliabilityEstimate,
    checkpoint_bytes,
    checkpoint_write_s,
    daly_interval_s,
    default_checkpoint_bandwidth_bytes_per_s,
    estimate_reliability,
    failure_mix,
    interruption_rate_per_gpu_hour,
    job_mtbf_s,
    young_interval_s,
)
from twin.perf.specs import Precision

LLAMA3_GPUS = 16_384
DAY_S = 86_400.0
HOUR_S = 3_600.0


def _estimate(**overrides: float | int | None) -> ReliabilityEstimate:
    """A 1,024-GPU, 8B-parameter bf16 job needing 10 days of compute, at the default bandwidth."""
    kwargs: dict[str, float | int | None] = {
        "compute_time_s": 10 * DAY_S,
        "gpus": 1024,
        "checkpoint_bytes": checkpoint_bytes(8_000_000_000),
        "checkpoint_bandwidth_bytes_per_s": default_checkpoint_bandwidth_bytes_per_s(1024),
    }
    kwargs.update(overrides)
    return estimate_reliability(**kwargs)  # type: ignore[arg-type]


# --- failure rates -----------------------------------------------------------------------------------


def test_table5_counts_sum_to_the_419_unexpected_interruptions() -> None:
    assert sum(c.count for c in LLAMA3_INTERRUPTION_CAUSES) == LLAMA3_UNEXPECTED_INTERRUPTIONS == 419
    assert LLAMA3_UNEXPECTED_INTERRUPTIONS + LLAMA3_PLANNED_INTERRUPTIONS == LLAMA3_JOB_INTERRUPTIONS == 466
    assert len(LLAMA3_INTERRUPTION_CAUSES) == 18
    assert len({c.name for c in LLAMA3_INTERRUPTION_CAUSES}) == 18


def test_table5_largest_causes_are_faulty_gpu_and_hbm3() -> None:
    counts = {c.name: c.count for c in LLAMA3_INTERRUPTION_CAUSES}
    assert counts["Faulty GPU"] == 148
    assert counts["GPU HBM3 Memory"] == 72
    assert counts["Software Bug"] == 54
    assert counts["Network Switch/Cable"] == 35
    assert counts["Host Maintenance"] == 32
    assert counts["CPU"] == 2


def test_per_gpu_hour_rate_reproduces_419_interruptions_on_16384_gpus_over_54_days() -> None:
    gpu_hours = LLAMA3_GPUS * 54 * 24
    assert UNEXPECTED_INTERRUPTIONS_PER_GPU_HOUR * gpu_hours == pytest.approx(419, rel=1e-12)
    assert math.isclose(UNEXPECTED_INTERRUPTIONS_PER_GPU_HOUR, 1.9733e-5, rel_tol=1e-4)


def test_job_mtbf_on_16384_gpus_is_about_three_hours() -> None:
    # 54 days / 419 interruptions ≈ 3.09 h ("one failure every three hours" in the press coverage).
    assert job_mtbf_s(LLAMA3_GPUS) == pytest.approx(54 * DAY_S / 419, rel=1e-12)
    assert job_mtbf_s(LLAMA3_GPUS) / HOUR_S == pytest.approx(3.09, abs=0.01)


def test_job_mtbf_scales_inversely_with_gpus_and_failure_rate_scale() -> None:
    assert job_mtbf_s(1024) == pytest.approx(2 * job_mtbf_s(2048))
    assert job_mtbf_s(1024, failure_rate_scale=4.0) == pytest.approx(job_mtbf_s(1024) / 4)


def test_hardware_share_matches_the_reported_78_percent_within_one_point() -> None:
    assert abs(HARDWARE_INTERRUPTION_SHARE - 0.78) < 0.01
    assert math.isclose(HARDWARE_INTERRUPTION_SHARE, 324 / 419)


def test_failure_mix_shares_sum_to_one_and_rates_to_the_scaled_total() -> None:
    mix = failure_mix(failure_rate_scale=2.5)
    assert math.fsum(s.share for s in mix) == pytest.approx(1.0)
    assert math.fsum(s.rate_per_gpu_hour for s in mix) == pytest.approx(
        2.5 * UNEXPECTED_INTERRUPTIONS_PER_GPU_HOUR
    )
    assert interruption_rate_per_gpu_hour(2.5) == pytest.approx(2.5 * UNEXPECTED_INTERRUPTIONS_PER_GPU_HOUR)
    assert [s.name for s in mix] == [c.name for c in LLAMA3_INTERRUPTION_CAUSES]


def test_failure_mix_tags_every_cause_with_one_of_four_components() -> None:
    mix = failure_mix()
    assert {s.component for s in mix} == set(Component)
    by_name = {s.name: s for s in mix}
    assert by_name["Faulty GPU"].component is Component.GPU
    assert by_name["Faulty GPU"].share == pytest.approx(148 / 419)
    assert by_name["Network Switch/Cable"].component is Component.NETWORK
    assert by_name["NIC"].component is Component.HOST
    assert by_name["Software Bug"].component is Component.SOFTWARE
    gpu_share = math.fsum(s.share for s in mix if s.component is Component.GPU)
    assert gpu_share == pytest.approx(268 / 419)


# --- checkpoints -------------------------------------------------------------------------------------


def test_checkpoint_holds_16bit_weights_plus_12_bytes_of_optimizer_state_per_param() -> None:
    assert checkpoint_bytes(1_000_000_000) == pytest.approx(14e9)
    assert checkpoint_bytes(1_000_000_000, Precision.FP16) == pytest.approx(14e9)
    assert checkpoint_bytes(1_000_000_000, Precision.FP8) == pytest.approx(14e9)
    assert checkpoint_bytes(1_000_000_000, optimizer=False) == pytest.approx(2e9)


def test_fp32_checkpoint_does_not_store_a_second_master_copy() -> None:
    assert checkpoint_bytes(1_000_000_000, Precision.FP32) == pytest.approx(12e9)
    assert checkpoint_bytes(1_000_000_000, Precision.FP32, optimizer=False) == pytest.approx(4e9)


def test_default_checkpoint_bandwidth_is_llama3_sustained_2_tb_per_s_over_16384_gpus() -> None:
    assert math.isclose(DEFAULT_CHECKPOINT_BANDWIDTH_BYTES_PER_S_PER_GPU, 2e12 / 16_384)
    assert default_checkpoint_bandwidth_bytes_per_s(LLAMA3_GPUS) == pytest.approx(2e12)


def test_checkpoint_write_time_is_bytes_over_bandwidth() -> None:
    # Llama 3 405B in bf16 with Adam: 405e9 × 14 B = 5.67 TB, at the sustained 2 TB/s → 2.835 s.
    assert checkpoint_write_s(checkpoint_bytes(405_000_000_000), 2e12) == pytest.approx(2.835)


def test_default_restart_is_ten_minutes() -> None:
    assert DEFAULT_RESTART_S == 600.0


# --- checkpoint interval -----------------------------------------------------------------------------


def test_young_interval_for_60s_write_and_3h_mtbf() -> None:
    assert young_interval_s(60.0, 3 * HOUR_S) == pytest.approx(math.sqrt(2 * 60 * 10_800))
    assert young_interval_s(60.0, 3 * HOUR_S) == pytest.approx(1138.42, abs=0.01)


def test_daly_interval_for_60s_write_and_3h_mtbf() -> None:
    x = 60 / (2 * 10_800)
    expected = math.sqrt(2 * 60 * 10_800) * (1 + math.sqrt(x) / 3 + x / 9) - 60
    assert daly_interval_s(60.0, 3 * HOUR_S) == pytest.approx(expected)
    assert daly_interval_s(60.0, 3 * HOUR_S) == pytest.approx(1098.7, abs=0.1)


def test_daly_reduces_to_young_when_write_time_is_much_smaller_than_mtbf() -> None:
    young = young_interval_s(1.0, 1e7)
    assert daly_interval_s(1.0, 1e7) == pytest.approx(young, rel=1e-3)


def test_daly_interval_is_mtbf_when_write_time_reaches_twice_mtbf() -> None:
    assert daly_interval_s(2000.0, 1000.0) == 1000.0
    assert daly_interval_s(5000.0, 1000.0) == 1000.0


def test_daly_interval_maximises_goodput_among_nearby_intervals() -> None:
    best = _estimate()
    for factor in (0.5, 0.8, 1.25, 2.0):
        other = _estimate(checkpoint_interval_s=best.checkpoint_interval_s * factor)
        assert other.goodput < best.goodput


# --- goodput -----------------------------------------------------------------------------------------


def test_expected_interruptions_over_54_days_on_16384_gpus_are_419() -> None:
    probe = estimate_reliability(
        compute_time_s=1.0,
        gpus=LLAMA3_GPUS,
        checkpoint_bytes=checkpoint_bytes(405_000_000_000),
        checkpoint_bandwidth_bytes_per_s=7e12,
    )
    tau, delta, m, r = probe.checkpoint_interval_s, probe.checkpoint_write_s, probe.mtbf_s, probe.restart_s
    compute_s = 54 * DAY_S * (1 - (r + (tau + delta) / 2) / m) / (1 + delta / tau)
    est = estimate_reliability(
        compute_time_s=compute_s,
        gpus=LLAMA3_GPUS,
        checkpoint_bytes=checkpoint_bytes(405_000_000_000),
        checkpoint_bandwidth_bytes_per_s=7e12,
    )
    assert est.time_to_train_s == pytest.approx(54 * DAY_S)
    assert est.expected_interruptions == pytest.approx(419)


def test_llama3_405b_goodput_with_defaults_is_above_the_reported_90_percent() -> None:
    # Dubey et al. 2024, §3.3.4: "higher than 90% effective training time" on 16K GPUs. Their figure also
    # absorbs planned interruptions, so the model (unexpected ones only) should land just above 90%.
    est = estimate_reliability(
        compute_time_s=40 * DAY_S,
        gpus=LLAMA3_GPUS,
        checkpoint_bytes=checkpoint_bytes(405_000_000_000),
        checkpoint_bandwidth_bytes_per_s=default_checkpoint_bandwidth_bytes_per_s(LLAMA3_GPUS),
    )
    assert 0.90 < est.goodput < 0.95
    assert est.goodput == pytest.approx(0.924, abs=0.001)


def test_wall_time_is_compute_plus_checkpoints_restarts_and_lost_work() -> None:
    est = _estimate()
    parts = 10 * DAY_S + est.checkpoint_overhead_s + est.expected_interruptions * est.restart_s
    assert est.time_to_train_s == pytest.approx(parts + est.lost_work_s)
    assert est.goodput == pytest.approx(10 * DAY_S / est.time_to_train_s)
    assert est.expected_interruptions == pytest.approx(est.time_to_train_s / est.mtbf_s)
    assert est.lost_work_s == pytest.approx(
        est.expected_interruptions * (est.checkpoint_interval_s + est.checkpoint_write_s) / 2
    )
    assert est.checkpoint_overhead_s == pytest.approx(
        10 * DAY_S * est.checkpoint_write_s / est.checkpoint_interval_s
    )
    assert 0 < est.goodput <= 1


def test_estimate_reports_its_inputs_and_derived_quantities() -> None:
    est = _estimate(restart_s=120.0)
    assert est.restart_s == 120.0
    assert est.mtbf_s == pytest.approx(job_mtbf_s(1024))
    assert est.checkpoint_bytes == pytest.approx(112e9)
    assert est.checkpoint_write_s == pytest.approx(112e9 / default_checkpoint_bandwidth_bytes_per_s(1024))
    assert est.checkpoint_interval_s == pytest.approx(daly_interval_s(est.checkpoint_write_s, est.mtbf_s))


def test_explicit_checkpoint_interval_is_used_as_given() -> None:
    assert _estimate(checkpoint_interval_s=1800.0).checkpoint_interval_s == 1800.0


def test_goodput_falls_as_failure_rate_scale_rises() -> None:
    goodputs = [_estimate(failure_rate_scale=s).goodput for s in (0.25, 1.0, 4.0, 16.0)]
    assert goodputs == sorted(goodputs, reverse=True)
    assert len(set(goodputs)) == len(goodputs)


def test_goodput_falls_as_checkpoint_bandwidth_falls() -> None:
    bandwidths = [1e12, 1e11, 1e10, 1e9]
    goodputs = [_estimate(checkpoint_bandwidth_bytes_per_s=b).goodput for b in bandwidths]
    assert goodputs == sorted(goodputs, reverse=True)
    assert len(set(goodputs)) == len(goodputs)


def test_goodput_falls_as_restart_time_rises() -> None:
    goodputs = [_estimate(restart_s=r).goodput for r in (0.0, 60.0, 600.0, 3600.0)]
    assert goodputs == sorted(goodputs, reverse=True)


def test_reliable_small_job_has_goodput_near_one() -> None:
    est = _estimate(gpus=8, checkpoint_bandwidth_bytes_per_s=1e10)
    assert est.goodput > 0.99
    assert est.goodput <= 1.0


def test_time_is_infinite_and_goodput_zero_when_failures_outpace_progress() -> None:
    # 16,384 GPUs at 100× the Llama 3 rate: MTBF ≈ 111 s, below the 600 s restart alone.
    est = estimate_reliability(
        compute_time_s=DAY_S,
        gpus=LLAMA3_GPUS,
        checkpoint_bytes=1e9,
        checkpoint_bandwidth_bytes_per_s=1e12,
        failure_rate_scale=100.0,
    )
    assert math.isinf(est.time_to_train_s)
    assert math.isinf(est.expected_interruptions)
    assert math.isinf(est.lost_work_s)
    assert est.goodput == 0.0


def test_estimate_is_immutable() -> None:
    est = _estimate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.goodput = 1.0  # type: ignore[misc]


# --- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("compute_time_s", 0.0),
        ("compute_time_s", -1.0),
        ("compute_time_s", math.inf),
        ("compute_time_s", math.nan),
        ("gpus", 0),
        ("gpus", 2.0),
        ("checkpoint_bytes", 0.0),
        ("checkpoint_bandwidth_bytes_per_s", -5.0),
        ("checkpoint_bandwidth_bytes_per_s", math.inf),
        ("failure_rate_scale", 0.0),
        ("restart_s", -1.0),
        ("restart_s", math.inf),
        ("checkpoint_interval_s", 0.0),
        ("checkpoint_interval_s", True),
    ],
)
def test_invalid_estimate_input_raises_scenario_error_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ScenarioError, match=rf"^{field}\(="):
        _estimate(**{field: value})


def test_restart_time_of_zero_is_allowed() -> None:
    assert _estimate(restart_s=0.0).restart_s == 0.0


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: checkpoint_bytes(0), "params"),
        (lambda: checkpoint_bytes(10, "bf16"), "precision"),  # type: ignore[arg-type]
        (lambda: checkpoint_write_s(1e9, 0.0), "checkpoint_bandwidth_bytes_per_s"),
        (lambda: young_interval_s(-1.0, 10.0), "checkpoint_write_s"),
        (lambda: daly_interval_s(1.0, 0.0), "mtbf_s"),
        (lambda: job_mtbf_s(0), "gpus"),
        (lambda: failure_mix(-1.0), "failure_rate_scale"),
        (lambda: default_checkpoint_bandwidth_bytes_per_s(-2), "gpus"),
    ],
)
def test_invalid_helper_input_raises_scenario_error_naming_the_field(call: object, field: str) -> None:
    assert callable(call)
    with pytest.raises(ScenarioError, match=rf"^{field}\(="):
        call()
