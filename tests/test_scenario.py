"""The scenario contract (DESIGN §3, twin.scenario): parsing, validation messages and result invariants."""

from __future__ import annotations

import copy
import itertools
import math
import re
import tomllib
from typing import Any

import pytest

from twin.errors import ScenarioError, UnknownPresetError
from twin.perf.gpu_presets import gpu_preset
from twin.perf.model_presets import model_preset
from twin.scenario import evaluate, parse

GIB = 2**30

# DESIGN §3's example, verbatim (JSON null → None).
DESIGN_EXAMPLE: dict[str, Any] = {
    "model": {"preset": "llama3-70b"},
    "cluster": {
        "gpu": "h100-sxm",
        "gpus": 1024,
        "gpus_per_node": 8,
        "price_per_gpu_hour": 2.5,
        "currency": "EUR",
        "pue": 1.2,
    },
    "layout": {
        "tp": 8,
        "pp": 4,
        "cp": 1,
        "dp": None,
        "micro_batch": 1,
        "virtual_stages": 1,
        "zero_stage": 1,
        "offload": "none",
        "recompute": "selective",
        "sequence_parallel": True,
        "precision": "bf16",
    },
    "training": {"seq_len": 8192, "global_batch": 1024, "tokens": 1.5e13},
}

MEMORY_PARTS = ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "other_bytes")
MEMORY_KEYS = (*MEMORY_PARTS, "total_bytes", "capacity_bytes")
STEP_KEYS = (
    "fits",
    "reason",
    "memory",
    "step_time_s",
    "breakdown_s",
    "tokens_per_s",
    "tokens_per_s_per_gpu",
    "model_tflops_per_gpu",
    "mfu",
    "power_per_gpu_w",
    "cluster_power_w",
)
TRAINING_KEYS = ("time_to_train_s", "energy_kwh", "cost", "expected_interruptions", "goodput")


def example() -> dict[str, Any]:
    return copy.deepcopy(DESIGN_EXAMPLE)


def with_fields(**fields: Any) -> dict[str, Any]:
    """The DESIGN example with `section__key=value` fields replaced."""
    scenario = example()
    for dotted, value in fields.items():
        section, key = dotted.split("__")
        scenario[section][key] = value
    return scenario


def small(
    model: str = "llama3-8b",
    gpu: str = "h100-sxm",
    gpus: int = 8,
    seq_len: int = 4096,
    global_batch: int = 64,
    **layout: Any,
) -> dict[str, Any]:
    """A small scenario without a token target."""
    return {
        "model": {"preset": model},
        "cluster": {"gpu": gpu, "gpus": gpus},
        "layout": layout,
        "training": {"seq_len": seq_len, "global_batch": global_batch},
    }


@pytest.fixture(scope="module")
def example_result() -> dict[str, Any]:
    return evaluate(example())


# --- the contract's result ---------------------------------------------------------------------------


def test_design_example_result_has_every_contract_key(example_result: dict[str, Any]) -> None:
    for key in (*STEP_KEYS, *TRAINING_KEYS):
        assert key in example_result, key
    assert set(example_result["memory"]) == set(MEMORY_KEYS)
    assert example_result["fits"] is True
    assert example_result["reason"] is None
    for key in (*STEP_KEYS[3:], *TRAINING_KEYS):
        value = example_result[key]
        assert isinstance(value, float | dict), key
        if isinstance(value, float):
            assert math.isfinite(value) and value > 0, (key, value)


def test_breakdown_sums_to_step_time(example_result: dict[str, Any]) -> None:
    breakdown = example_result["breakdown_s"]
    assert all(v >= 0 for v in breakdown.values())
    assert breakdown["compute_s"] > 0
    assert math.fsum(breakdown.values()) == pytest.approx(example_result["step_time_s"], rel=1e-9)


def test_memory_parts_sum_to_total(example_result: dict[str, Any]) -> None:
    memory = example_result["memory"]
    assert math.fsum(memory[k] for k in MEMORY_PARTS) == pytest.approx(memory["total_bytes"], rel=1e-12)
    assert memory["total_bytes"] <= memory["capacity_bytes"] < gpu_preset("h100-sxm").hbm_bytes


def test_throughput_per_gpu_times_gpus_is_cluster_throughput(example_result: dict[str, Any]) -> None:
    assert example_result["tokens_per_s_per_gpu"] * 1024 == pytest.approx(
        example_result["tokens_per_s"], rel=1e-12
    )
    assert example_result["tokens_per_s"] == pytest.approx(8192 * 1024 / example_result["step_time_s"])


def test_mfu_is_model_tflops_over_h100_bf16_peak(example_result: dict[str, Any]) -> None:
    assert example_result["mfu"] == pytest.approx(example_result["model_tflops_per_gpu"] / 989.4, rel=1e-9)
    assert 0 < example_result["mfu"] < 1


def test_example_model_states_follow_megatron_formulas(example_result: dict[str, Any]) -> None:
    """Llama 3 70B, TP8 PP4 ZeRO-1 over DP 32: one stage holds 20 layers/8 plus the embedding/8;
    bf16 weights 2 B, fp32 main grads 4 B, Adam 12 B sharded over DP (Megatron dist_optimizer.md)."""
    h, kv, f, vocab = 8192, 1024, 28672, 128256
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h
    stage_params = 20 * per_layer // 8 + vocab * h // 8
    assert stage_params == 2_270_470_144
    memory = example_result["memory"]
    assert memory["params_bytes"] == 2 * stage_params
    assert memory["grads_bytes"] == 4 * stage_params
    assert memory["optimizer_bytes"] == pytest.approx(12 * stage_params / 32, rel=1e-12)


def test_energy_and_cost_follow_time_power_pue_and_price(example_result: dict[str, Any]) -> None:
    r = example_result
    host_w = gpu_preset("h100-sxm").host_power_w
    assert r["cluster_power_w"] == pytest.approx((r["power_per_gpu_w"] + host_w) * 1024, rel=1e-12)
    assert r["energy_kwh"] == pytest.approx(r["cluster_power_w"] * r["time_to_train_s"] * 1.2 / 3.6e6)
    assert r["cost"] == pytest.approx(2.5 * 1024 * r["time_to_train_s"] / 3600)
    assert r["currency"] == "EUR"
    compute_s = 1.5e13 / (8192 * 1024) * r["step_time_s"]
    assert r["time_to_train_s"] > compute_s  # checkpoints and failures only add time
    assert 0 < r["goodput"] <= 1
    assert r["expected_interruptions"] > 0


def test_without_token_target_there_are_no_whole_run_figures() -> None:
    scenario = example()
    del scenario["training"]["tokens"]
    result = evaluate(scenario)
    for key in TRAINING_KEYS:
        assert key not in result
    assert result["step_time_s"] == pytest.approx(evaluate(example())["step_time_s"], rel=1e-12)


def test_dp_null_resolves_to_gpus_over_tp_pp_cp(example_result: dict[str, Any]) -> None:
    assert example_result["resolved"]["layout"]["dp"] == 1024 // (8 * 4 * 1)
    assert parse(example()).layout.dp == 32
    explicit = evaluate(with_fields(layout__dp=32))
    assert explicit["step_time_s"] == example_result["step_time_s"]
    assert explicit["memory"] == example_result["memory"]


def test_dp_null_with_context_parallelism_divides_by_cp() -> None:
    parsed = parse(with_fields(layout__tp=4, layout__pp=2, layout__cp=2, layout__dp=None))
    assert parsed.layout.dp == 1024 // (4 * 2 * 2) == 64


# --- model shapes and TOML -------------------------------------------------------------------------


LLAMA2_7B_SHAPE: dict[str, Any] = {
    "layers": 32,
    "hidden": 4096,
    "heads": 32,
    "ffn_hidden": 11008,
    "vocab": 32000,
    "gated_mlp": True,
}


def test_explicit_model_shape_matches_the_same_preset() -> None:
    preset = evaluate(small("llama2-7b"))
    explicit_scenario = small()
    explicit_scenario["model"] = {**LLAMA2_7B_SHAPE, "kv_heads": 32, "name": "my-7b"}
    explicit = evaluate(explicit_scenario)
    assert explicit["resolved"]["model"] == {"name": "my-7b", "params": model_preset("llama2-7b").params}
    assert explicit["memory"] == preset["memory"]
    assert explicit["step_time_s"] == preset["step_time_s"]


def test_explicit_model_shape_kv_heads_defaults_to_heads() -> None:
    scenario = small()
    scenario["model"] = dict(LLAMA2_7B_SHAPE)
    parsed = parse(scenario)
    assert parsed.model.kv_heads == parsed.model.heads == 32
    assert parsed.model.name == "custom"
    assert parsed.model.params == model_preset("llama2-7b").params == 6_738_415_616


def test_explicit_model_shape_with_grouped_query_attention_has_fewer_params() -> None:
    scenario = small()
    scenario["model"] = {**LLAMA2_7B_SHAPE, "kv_heads": 8}
    parsed = parse(scenario)
    # K and V shrink from h×h to h×(8·128) each, in all 32 layers.
    assert model_preset("llama2-7b").params - parsed.model.params == 32 * 2 * 4096 * (4096 - 1024)


def test_explicit_model_shape_missing_a_field_names_it() -> None:
    scenario = small()
    scenario["model"] = {k: v for k, v in LLAMA2_7B_SHAPE.items() if k != "vocab"}
    with pytest.raises(ScenarioError, match=r"model\.vocab"):
        parse(scenario)


def test_preset_with_override_changes_only_that_field() -> None:
    scenario = small()
    scenario["model"] = {"preset": "llama3-8b", "layers": 16}
    parsed = parse(scenario)
    base = model_preset("llama3-8b")
    assert (parsed.model.layers, parsed.model.hidden, parsed.model.kv_heads) == (16, base.hidden, 8)


def test_model_given_as_bare_preset_name() -> None:
    scenario = small()
    scenario["model"] = "llama3-8b"
    assert parse(scenario).model == model_preset("llama3-8b")


def test_toml_scenario_is_equivalent_to_json() -> None:
    text = """
[model]
preset = "llama3-70b"

[cluster]
gpu = "h100-sxm"
gpus = 1024
gpus_per_node = 8
price_per_gpu_hour = 2.5
currency = "EUR"
pue = 1.2

[layout]
tp = 8
pp = 4
cp = 1
micro_batch = 1
virtual_stages = 1
zero_stage = 1
offload = "none"
recompute = "selective"
sequence_parallel = true
precision = "bf16"

[training]
seq_len = 8192
global_batch = 1024
tokens = 1.5e13
"""
    assert evaluate(tomllib.loads(text)) == evaluate(example())


# --- invalid input: ScenarioError naming the field and value ---------------------------------------


def test_unknown_model_preset_lists_close_names() -> None:
    scenario = example()
    scenario["model"] = {"preset": "llama3-7b"}
    with pytest.raises(UnknownPresetError) as info:
        evaluate(scenario)
    assert isinstance(info.value, ScenarioError)
    message = str(info.value)
    assert "'llama3-7b'" in message
    assert "llama3-8b" in message and "llama3-70b" in message


def test_unknown_gpu_preset_lists_close_names() -> None:
    with pytest.raises(ScenarioError, match=r"'h100-sxn'.*closest: h100-sxm"):
        evaluate(with_fields(cluster__gpu="h100-sxn"))


@pytest.mark.parametrize(
    ("section", "key"),
    [("model", "depth"), ("cluster", "nodes"), ("layout", "pipeline"), ("training", "epochs")],
)
def test_unknown_key_in_a_section_names_the_key(section: str, key: str) -> None:
    scenario = example()
    scenario[section][key] = 4
    with pytest.raises(ScenarioError, match=rf"unknown key {section}\.'{key}'"):
        evaluate(scenario)


def test_unknown_top_level_key_names_the_key() -> None:
    scenario = example()
    scenario["optimizer"] = {"name": "adam"}
    with pytest.raises(ScenarioError, match=r"unknown key 'optimizer'"):
        evaluate(scenario)


def test_missing_section_is_named() -> None:
    scenario = example()
    del scenario["training"]
    with pytest.raises(ScenarioError, match=r"'training'"):
        evaluate(scenario)


def test_tp_not_dividing_heads_is_rejected() -> None:
    with pytest.raises(ScenarioError, match=re.escape("layout.tp(=3) must divide model.heads(=32)")):
        evaluate(small(gpus=24, tp=3))


def test_gpus_not_divisible_by_tp_pp_cp_is_rejected() -> None:
    with pytest.raises(
        ScenarioError, match=re.escape("cluster.gpus(=24) must be divisible by tp·pp·cp(=8·2·1=16)")
    ):
        evaluate(small(gpus=24, tp=8, pp=2))


def test_explicit_dp_not_matching_gpus_is_rejected() -> None:
    with pytest.raises(ScenarioError, match=re.escape("must equal cluster.gpus(=1024)")):
        evaluate(with_fields(layout__dp=3))


@pytest.mark.parametrize(("global_batch", "micro_batch"), [(60, 1), (64, 3)])
def test_global_batch_not_divisible_by_dp_times_micro_batch_is_rejected(
    global_batch: int, micro_batch: int
) -> None:
    expected = f"training.global_batch(={global_batch}) must be divisible by dp·micro_batch(=8·{micro_batch})"
    with pytest.raises(ScenarioError, match=re.escape(expected)):
        evaluate(small(global_batch=global_batch, micro_batch=micro_batch))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("cluster__gpus", 0, "cluster.gpus(=0)"),
        ("cluster__gpus", -8, "cluster.gpus(=-8)"),
        ("cluster__gpus", "8", "cluster.gpus(='8')"),
        ("cluster__gpus", True, "cluster.gpus(=True)"),
        ("cluster__pue", "high", "cluster.pue(='high')"),
        ("cluster__pue", 0.5, "cluster.pue(=0.5)"),
        ("cluster__price_per_gpu_hour", -1, "cluster.price_per_gpu_hour(=-1.0)"),
        ("cluster__power_cap_w", 0, "cluster.power_cap_w(=0.0)"),
        ("training__tokens", -1, "training.tokens(=-1.0)"),
        ("training__tokens", 0, "training.tokens(=0.0)"),
        ("training__tokens", "lots", "training.tokens(='lots')"),
        ("training__tokens", math.nan, "training.tokens(=nan)"),
        ("training__seq_len", 0, "training.seq_len(=0)"),
        ("training__global_batch", -1, "training.global_batch(=-1)"),
        ("layout__tp", 2.5, "layout.tp(=2.5)"),
        ("layout__tp", 0, "layout.tp(=0)"),
        ("layout__micro_batch", 0, "layout.micro_batch(=0)"),
        ("layout__zero_stage", 5, "layout.zero_stage(=5)"),
        ("layout__recompute", "some", "layout.recompute(='some')"),
        ("layout__precision", "int4", "layout.precision(='int4')"),
        ("layout__sequence_parallel", "yes", "layout.sequence_parallel(='yes')"),
    ],
)
def test_bad_value_is_rejected_naming_field_and_value(field: str, value: Any, expected: str) -> None:
    with pytest.raises(ScenarioError) as info:
        evaluate(with_fields(**{field: value}))
    assert expected in str(info.value)


def test_offload_params_without_zero_3_is_rejected() -> None:
    with pytest.raises(ScenarioError, match=r'offload="params" needs zero_stage 3.*got 1'):
        evaluate(with_fields(layout__offload="params"))
    assert evaluate(with_fields(layout__offload="params", layout__zero_stage=3))["fits"] is True


def test_offload_optimizer_without_zero_is_rejected() -> None:
    with pytest.raises(ScenarioError, match=r'offload="optimizer" needs zero_stage >= 1.*got 0'):
        evaluate(with_fields(layout__offload="optimizer", layout__zero_stage=0))


def test_fp8_on_a100_is_rejected() -> None:
    with pytest.raises(
        ScenarioError, match=r'precision="fp8" needs FP8 tensor cores; a100-sxm-80gb has none'
    ):
        evaluate(small(gpu="a100-sxm-80gb", precision="fp8"))
    assert evaluate(small(gpu="h100-sxm", precision="fp8"))["resolved"]["layout"]["precision"] == "fp8"


# --- memory ----------------------------------------------------------------------------------------


def test_infeasible_layout_is_a_result_not_an_error() -> None:
    result = evaluate(small("llama3-70b", "a100-sxm-40gb", gpus=8, tp=1, pp=1, zero_stage=0))
    assert result["fits"] is False
    memory = result["memory"]
    assert memory["total_bytes"] > memory["capacity_bytes"]
    match = re.search(
        r"needs (\d+\.\d) GiB per GPU, has (\d+\.\d) GiB usable \((\d+\.\d) GiB total\)", result["reason"]
    )
    assert match is not None, result["reason"]
    assert float(match.group(1)) == round(memory["total_bytes"] / GIB, 1)
    assert float(match.group(2)) == round(memory["capacity_bytes"] / GIB, 1)
    assert float(match.group(3)) == 40.0
    # 70.6B parameters × 18 bytes alone are > 1,180 GiB per GPU without sharding.
    assert memory["total_bytes"] / GIB > 1180


# ZeRO should only ever shrink memory, including at dp = 1 (nothing to shard) and with few layers per stage.
ZERO_GRID = [
    (model, gpus, tp, pp, offload, recompute)
    for model in ("llama2-7b", "llama3-70b", "gpt3-1.3b")
    for gpus, tp, pp in ((64, 1, 1), (64, 2, 2), (64, 8, 1), (64, 2, 4), (64, 1, 8), (8, 8, 1), (8, 2, 4))
    for offload in ("none", "optimizer")
    for recompute in ("none", "full")
]


@pytest.mark.parametrize(("model", "gpus", "tp", "pp", "offload", "recompute"), ZERO_GRID)
def test_raising_zero_stage_never_raises_memory(
    model: str, gpus: int, tp: int, pp: int, offload: str, recompute: str
) -> None:
    first_stage = 1 if offload == "optimizer" else 0
    totals = [
        evaluate(
            small(
                model,
                gpus=gpus,
                seq_len=2048,
                global_batch=512,
                tp=tp,
                pp=pp,
                zero_stage=z,
                offload=offload,
                recompute=recompute,
            )
        )["memory"]["total_bytes"]
        for z in range(first_stage, 4)
    ]
    assert all(later <= earlier for earlier, later in itertools.pairwise(totals)), totals
    if offload == "none" and gpus // (tp * pp) > 1:
        assert totals[-1] < totals[0]


def test_zero_3_with_two_layers_per_stage_and_dp_4_uses_no_more_memory_than_zero_2() -> None:
    # llama2-7b PP16: a stage holds 2 layers, so ZeRO-3's 2 prefetched layers are most of the stage.
    z2, z3 = (
        evaluate(small("llama2-7b", gpus=64, seq_len=2048, global_batch=512, pp=16, zero_stage=z))["memory"]
        for z in (2, 3)
    )
    assert z3["params_bytes"] <= z2["params_bytes"]
    assert z3["total_bytes"] <= z2["total_bytes"]


def model_state_bytes_per_param(precision: str, zero_stage: int, gpus: int) -> float:
    """(weights + grads + optimizer) per GPU / parameters held on that GPU, llama2-7b, tp1 pp1."""
    result = evaluate(
        small(
            "llama2-7b",
            gpus=gpus,
            seq_len=2048,
            global_batch=gpus,
            zero_stage=zero_stage,
            precision=precision,
        )
    )
    memory = result["memory"]
    weight_bytes = 4.0 if precision == "fp32" else 2.0
    params_on_gpu = memory["params_bytes"] / weight_bytes
    # tp1 pp1 holds every parameter but the final norm's (a one-stage model keeps both embeddings).
    assert params_on_gpu == pytest.approx(model_preset("llama2-7b").params, rel=1e-6)
    return float((memory["params_bytes"] + memory["grads_bytes"] + memory["optimizer_bytes"]) / params_on_gpu)


def test_megatron_bf16_without_zero_costs_18_bytes_per_param() -> None:
    # Megatron-LM dist_optimizer.md: bf16 param 2 + fp32 main grad 4 + fp32 param, m, v 12.
    assert model_state_bytes_per_param("bf16", zero_stage=0, gpus=1) == pytest.approx(18.0, rel=1e-12)


def test_zero_paper_fp16_without_zero_costs_16_bytes_per_param() -> None:
    # Rajbhandari et al. 2020 §3.1: 2Ψ + 2Ψ + KΨ with K = 12.
    assert model_state_bytes_per_param("fp16", zero_stage=0, gpus=1) == pytest.approx(16.0, rel=1e-12)


@pytest.mark.parametrize(
    ("zero_stage", "expected"),
    # ZeRO paper Figure 1, Nd = 64: Pos 2 + 2 + 12/Nd, Pos+g 2 + 14/Nd (stage 3 adds gathered layers).
    [(1, 2 + 2 + 12 / 64), (2, 2 + 14 / 64)],
)
def test_zero_paper_fp16_sharded_bytes_per_param(zero_stage: int, expected: float) -> None:
    assert model_state_bytes_per_param("fp16", zero_stage, gpus=64) == pytest.approx(expected, rel=1e-12)


def test_package_api_mirrors_the_cli() -> None:
    import twin
    from twin.cli import EXAMPLE_SCENARIO

    result = twin.evaluate(EXAMPLE_SCENARIO)
    ranked = twin.sweep(EXAMPLE_SCENARIO, rank_by="cost").rows(top=3, fits_only=True)
    assert result["fits"] is True
    assert [row["rank"] for row in ranked] == [1, 2, 3]
    assert ranked[0]["cost"] <= ranked[1]["cost"] <= ranked[2]["cost"]
