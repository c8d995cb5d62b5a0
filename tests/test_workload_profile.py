"""twin.workload_profile: the simulated cluster's workload from the performance model, and its agreement
with the model (time-average power, step time, memory) and with the sensors' built-in defaults."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from sensors import sim_profiles
from sensors.simulated import A100_SXM_80GB, JobSpec, SimulatedCluster
from twin.errors import ScenarioError
from twin.perf import power
from twin.perf.estimate import estimate
from twin.perf.gpu_presets import GPU_PRESETS, gpu_preset
from twin.perf.power import cap_slowdown
from twin.scenario import parse
from twin.workload_profile import gpu_profile, workload_profile

T0 = 1_700_000_000.0

# The sensors' reference job (sensors.sim_profiles): Llama 3 8B on 32 A100-80GB, TP 2 × PP 2 × DP 8.
REFERENCE: dict[str, Any] = {
    "model": {"preset": "llama3-8b"},
    "cluster": {"gpu": "a100-sxm-80gb", "gpus": 32},
    "layout": {"tp": 2, "pp": 2},
    "training": {"seq_len": 8192, "global_batch": 128},
}
# Llama 3 70B on 64 H100s capped at 500 W: the cap stretches compute and lowers its power.
CAPPED_H100: dict[str, Any] = {
    "model": {"preset": "llama3-70b"},
    "cluster": {"gpu": "h100-sxm", "gpus": 64, "power_cap_w": 500},
    "layout": {"tp": 8, "pp": 4},
    "training": {"seq_len": 8192, "global_batch": 64},
}
# No pipeline: the waiting phase is empty.
NO_PIPELINE: dict[str, Any] = {
    "model": {"preset": "llama3-8b"},
    "cluster": {"gpu": "a100-sxm-80gb", "gpus": 32},
    "layout": {"tp": 2, "pp": 1},
    "training": {"seq_len": 8192, "global_batch": 128},
}


def _estimate(scenario: dict[str, Any]) -> Any:
    parsed = parse(scenario)
    return estimate(parsed.model, parsed.cluster, parsed.layout, parsed.training)


@pytest.mark.parametrize(
    "scenario", [REFERENCE, CAPPED_H100, NO_PIPELINE], ids=["a100", "h100-capped", "pp1"]
)
def test_profile_carries_the_models_step_time_power_and_memory(scenario: dict[str, Any]) -> None:
    est = _estimate(scenario)
    profile = workload_profile(scenario)
    assert profile.step_time_s == est.step.step_time_s
    assert profile.power_per_gpu_w == pytest.approx(est.power.power_per_gpu_w, rel=1e-12)
    assert profile.memory_used_bytes == round(est.memory.total_bytes)
    assert sum(p.fraction for p in profile.phases) == pytest.approx(1.0)
    assert [p.name for p in profile.phases] == ["compute", "waiting", "communication"]
    assert profile.gpus == scenario["cluster"]["gpus"]
    assert profile.tokens_per_step == 8192 * scenario["training"]["global_batch"]


def test_a_cap_in_the_scenario_caps_the_phase_powers() -> None:
    profile = workload_profile(CAPPED_H100)
    powers = {p.name: p.power_w for p in profile.phases}
    assert powers["compute"] == 500.0  # 0.98 × 700 W = 686 W, capped
    assert powers["communication"] == 70.0 + 0.4 * 630.0  # 322 W, under the cap
    clocks = {p.name: p.clock_factor for p in profile.phases}
    assert clocks == {
        "compute": pytest.approx(1 / cap_slowdown(gpu_preset("h100-sxm"), 500.0)),
        "waiting": 1.0,
        "communication": 1.0,
    }
    assert clocks["compute"] == pytest.approx(((500 - 70) / (686 - 70)) ** (1 / 3))  # 0.887
    uncapped = copy.deepcopy(CAPPED_H100)
    del uncapped["cluster"]["power_cap_w"]
    assert profile.step_time_s > workload_profile(uncapped).step_time_s


def test_no_pipeline_means_no_waiting() -> None:
    waiting = next(p for p in workload_profile(NO_PIPELINE).phases if p.name == "waiting")
    assert waiting.fraction == 0.0


def test_a_layout_that_does_not_fit_cannot_run() -> None:
    too_big = copy.deepcopy(NO_PIPELINE)
    too_big["layout"] = {"tp": 1, "pp": 1}
    too_big["training"]["global_batch"] = 256
    with pytest.raises(ScenarioError, match=r"cannot run: HBM needs 89\.\d GiB"):
        workload_profile(too_big)


@pytest.mark.parametrize("scenario", [REFERENCE, CAPPED_H100], ids=["a100", "h100-capped"])
def test_simulated_power_averages_to_the_models_power_per_gpu(scenario: dict[str, Any]) -> None:
    profile = workload_profile(scenario)
    gpu = gpu_profile(scenario["cluster"]["gpu"])
    nodes = scenario["cluster"]["gpus"] // 8
    job = JobSpec("job", profile, start_s=T0)
    cluster = SimulatedCluster(nodes=nodes, gpu=gpu, jobs=(job,), failure_rate_scale=0.0, seed=1)
    # Poll at an irrational-ish interval so the samples cover the step uniformly: 40 steps.
    period = profile.step_time_s
    times = T0 + np.arange(0.0, 40 * period, period / 37.3)
    samples = np.array([[g.power_w for s in cluster.read(t).samples for g in s.gpus] for t in times])
    model_w = _estimate(scenario).power.power_per_gpu_w  # 366.0 W (A100), 438.5 W (capped H100)
    assert samples.mean() == pytest.approx(model_w, rel=0.01)
    # Energy integrates the phases exactly: its rate matches more tightly (the GPUs' ±2 % gains).
    last = cluster.read(times[-1] + 1e-6)
    energy = np.array([g.energy_j or 0.0 for s in last.samples for g in s.gpus])
    assert energy.mean() / (times[-1] + 1e-6 - T0) == pytest.approx(model_w, rel=0.006)


def test_sensors_defaults_are_the_reference_jobs_profile() -> None:
    computed = workload_profile(REFERENCE)
    default = sim_profiles.default_workload(gpu_profile("a100-sxm-80gb"))
    assert default.step_time_s == pytest.approx(computed.step_time_s, rel=1e-3)
    assert default.memory_used_bytes == pytest.approx(computed.memory_used_bytes, rel=0.01)
    assert default.checkpoint_interval_s == pytest.approx(computed.checkpoint_interval_s, rel=1e-3)
    assert default.gpus == computed.gpus and default.tokens_per_step == computed.tokens_per_step
    assert dict(default.model) == dict(computed.model) and dict(default.layout) == dict(computed.layout)
    for ours, theirs in zip(default.phases, computed.phases, strict=True):
        assert ours.name == theirs.name and ours.scales_with_clock == theirs.scales_with_clock
        assert ours.fraction == pytest.approx(theirs.fraction, abs=1e-3)
        assert ours.power_w == pytest.approx(theirs.power_w)
        assert (ours.gpu_util_pct, ours.mem_util_pct) == pytest.approx(
            (theirs.gpu_util_pct, theirs.mem_util_pct), abs=0.05
        )
    assert default.power_per_gpu_w == pytest.approx(computed.power_per_gpu_w, rel=1e-3)


def test_sensors_copies_of_the_power_constants_match_twin_perf() -> None:
    assert sim_profiles.COMPUTE_POWER_FRACTION_OF_TDP == power.COMPUTE_POWER_FRACTION_OF_TDP
    assert sim_profiles.COMMUNICATION_POWER_FRACTION == power.COMMUNICATION_POWER_FRACTION
    assert sim_profiles.WAITING_POWER_FRACTION == power.WAITING_POWER_FRACTION


def test_every_gpu_preset_has_a_profile() -> None:
    for name, spec in GPU_PRESETS.items():
        profile = gpu_profile(name)
        assert (profile.tdp_w, profile.idle_w, profile.hbm_bytes) == (
            spec.tdp_w,
            spec.idle_w,
            int(spec.hbm_bytes),
        )
        assert profile.idle_sm_clock_mhz < profile.max_sm_clock_mhz
    assert gpu_profile("a100-sxm-80gb") == A100_SXM_80GB


def test_a_capped_scenario_computes_at_the_capped_clock_in_the_simulation() -> None:
    profile = workload_profile(CAPPED_H100)
    job = JobSpec("job", profile, nodes=("n00",), start_s=T0)
    cluster = SimulatedCluster(nodes=1, gpu=gpu_profile("h100-sxm"), jobs=(job,), failure_rate_scale=0.0)
    # A third of the way into a step the job computes: at the cap, at ((500 − 70)/(686 − 70))^(1/3) of
    # the 1,980 MHz maximum, flagged as NVML's SW power cap (0x4).
    reading = cluster.read(T0 + 5 * profile.step_time_s + profile.step_time_s / 3)
    gpus = reading.samples[0].gpus
    factor = next(p.clock_factor for p in profile.phases if p.name == "compute")
    assert [g.sm_clock_mhz for g in gpus] == pytest.approx([1980.0 * factor] * 8)
    assert all((g.throttle_reasons or 0) & 0x4 for g in gpus)
    assert all(495.0 <= g.power_w <= 500.0 for g in gpus)  # held at the cap
