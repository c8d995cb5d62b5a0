"""The worked example (twin.seed_report), pinned to its printed numbers to the printed digits."""

from __future__ import annotations

import json
import math

import pytest

from twin.seed_report import (
    PRICE_PER_V100_HOUR_EUR,
    PRICE_PER_V100_HOUR_PRINTED_EUR,
    TRAINING_TO_STORAGE_MEMORY_RATIO,
    DayRounding,
    WorkedExampleRow,
    compute_optimal_tokens,
    gpt35_row,
    gpus_to_fit,
    gpus_with_practical_margin,
    llama2_7b_row,
    memory_rules_of_thumb,
    render_text,
    to_json,
    worked_example,
)

# Printed numbers of the worked example (inputs and outputs as published).


@pytest.fixture(scope="module")
def rows() -> tuple[WorkedExampleRow, ...]:
    return worked_example()


@pytest.fixture(scope="module")
def gpt35(rows: tuple[WorkedExampleRow, ...]) -> WorkedExampleRow:
    return rows[0]


@pytest.fixture(scope="module")
def turbo(rows: tuple[WorkedExampleRow, ...]) -> WorkedExampleRow:
    return rows[1]


@pytest.fixture(scope="module")
def llama(rows: tuple[WorkedExampleRow, ...]) -> WorkedExampleRow:
    return rows[2]


def test_worked_example_has_the_three_models_in_order(rows: tuple[WorkedExampleRow, ...]) -> None:
    assert [r.model for r in rows] == ["GPT-3.5 (175B)", "GPT-3.5 Turbo (20B)", "Llama 2 7B"]
    assert [r.params for r in rows] == [175_000_000_000, 20_000_000_000, 7_000_000_000]
    assert all(r.currency == "EUR" for r in rows)


# --- GPT-3.5 (175B) ----------------------------------------------------------------------------------


def test_gpt35_training_memory_is_24_bytes_per_param_4200_gb(gpt35: WorkedExampleRow) -> None:
    assert gpt35.bytes_per_param == 24
    assert gpt35.training_memory_gb == pytest.approx(4200.0)


def test_gpt35_needs_140_v100s_to_fit_and_164_with_practical_efficiency(gpt35: WorkedExampleRow) -> None:
    assert gpt35.usable_gb_per_gpu == 30
    assert gpt35.gpus_min == 140
    assert gpt35.gpus_practical == 164


def test_gpt35_compute_3700_pf_s_days_is_29600_gpu_days(gpt35: WorkedExampleRow) -> None:
    assert round(gpt35.compute_pf_s_days, 6) == 3700
    assert round(gpt35.gpu_days, 6) == 29_600


def test_gpt35_trains_in_180_5_days_on_164_gpus(gpt35: WorkedExampleRow) -> None:
    assert round(gpt35.duration_days, 1) == 180.5


def test_gpt35_cluster_draws_82_kw_and_355224_kwh_over_180_5_days(gpt35: WorkedExampleRow) -> None:
    assert gpt35.power_per_gpu_w == 500
    assert gpt35.cluster_power_kw == pytest.approx(82.0)
    assert gpt35.energy_duration_days == 180.5
    assert round(gpt35.energy_kwh) == 355_224


def test_gpt35_cluster_costs_556_47_eur_per_hour(gpt35: WorkedExampleRow) -> None:
    assert round(gpt35.cost_per_hour, 2) == 556.47


def test_gpt35_total_cost_follows_the_examples_chain(gpt35: WorkedExampleRow) -> None:
    # €/h × 180.5 d × 24 h, the same rounded duration as the energy line.
    assert round(gpt35.cost_total, 2) == round(gpt35.cost_per_hour * 180.5 * 24, 2) == 2_410_635.32


def test_gpt35_notes_record_the_unreachable_printed_total(gpt35: WorkedExampleRow) -> None:
    assert any("2,403,738.88" in n and "NOT reachable" in n for n in gpt35.notes)
    assert any("4,319.6 h" in n for n in gpt35.notes)


# --- GPT-3.5 Turbo (20B) -----------------------------------------------------------------------------


def test_gpt35_turbo_needs_480_gb_on_16_gpus_without_a_margin(turbo: WorkedExampleRow) -> None:
    assert turbo.training_memory_gb == pytest.approx(480.0)
    assert turbo.gpus_min == turbo.gpus_practical == 16


def test_gpt35_turbo_trains_in_about_20_6_days(turbo: WorkedExampleRow) -> None:
    assert round(turbo.duration_days, 1) == 20.6


def test_gpt35_turbo_energy_is_4032_kwh_over_21_whole_days(turbo: WorkedExampleRow) -> None:
    assert turbo.cluster_power_kw == pytest.approx(8.0)
    assert turbo.energy_duration_days == 21
    assert round(turbo.energy_kwh) == 4_032


def test_gpt35_turbo_total_cost_follows_the_examples_chain(turbo: WorkedExampleRow) -> None:
    assert turbo.cost_duration_days == 20.6
    assert round(turbo.cost_total, 2) == round(16 * PRICE_PER_V100_HOUR_EUR * 24 * 20.6, 2) == 26_840.94


def test_gpt35_turbo_notes_record_the_unreachable_printed_total(turbo: WorkedExampleRow) -> None:
    assert any("26,894.43" in n and "NOT reachable" in n for n in turbo.notes)


# --- Llama 2 7B -------------------------------------------------------------------------------------


def test_llama2_7b_needs_168_gb_on_6_gpus(llama: WorkedExampleRow) -> None:
    assert llama.training_memory_gb == pytest.approx(168.0)
    assert llama.gpus_min == llama.gpus_practical == 6


def test_llama2_7b_trains_in_about_7_2_days(llama: WorkedExampleRow) -> None:
    assert round(llama.duration_days, 1) == 7.2


def test_llama2_7b_energy_is_576_kwh_over_8_whole_days(llama: WorkedExampleRow) -> None:
    assert llama.cluster_power_kw == pytest.approx(3.0)
    assert llama.energy_duration_days == 8
    assert round(llama.energy_kwh) == 576


def test_llama2_7b_costs_3517_99_eur(llama: WorkedExampleRow) -> None:
    assert llama.cost_duration_days == 7.2
    assert round(llama.cost_total, 2) == 3_517.99


# --- Chains, roundings and the rate ------------------------------------------------------------------


def test_smaller_models_duration_scales_linearly_with_params_from_gpt35(
    rows: tuple[WorkedExampleRow, ...],
) -> None:
    ref = rows[0]
    for row in rows[1:]:
        assert row.duration_days == pytest.approx(ref.duration_days * row.params / ref.params)
        # ... which is the params-scaled compute spread over GPT-3.5's 164 GPUs.
        scaled_gpu_days = ref.gpu_days * row.params / ref.params
        assert row.duration_days == pytest.approx(scaled_gpu_days / ref.gpus_practical)


def test_gpu_days_and_compute_are_consistent_within_each_row(rows: tuple[WorkedExampleRow, ...]) -> None:
    for row in rows:
        assert row.gpu_days == pytest.approx(row.duration_days * row.gpus_practical)
        assert row.compute_pf_s_days == pytest.approx(row.gpu_days / 8)
        assert row.energy_kwh == pytest.approx(row.cluster_power_kw * row.energy_duration_days * 24)
        assert row.cost_total == pytest.approx(row.cost_per_hour * row.cost_duration_days * 24)


def test_printed_rate_reproduces_neither_hourly_cost_nor_llama_cost() -> None:
    assert PRICE_PER_V100_HOUR_PRINTED_EUR == 3.3926
    assert round(164 * PRICE_PER_V100_HOUR_PRINTED_EUR, 2) != 556.47
    assert round(6 * PRICE_PER_V100_HOUR_PRINTED_EUR * 24 * 7.2, 2) != 3_517.99
    assert round(164 * PRICE_PER_V100_HOUR_EUR, 2) == 556.47
    assert round(6 * PRICE_PER_V100_HOUR_EUR * 24 * 7.2, 2) == 3_517.99


def test_working_rate_is_the_shortest_decimal_consistent_with_both_printed_costs() -> None:
    def consistent(rate: float) -> bool:
        return round(164 * rate, 2) == 556.47 and round(6 * rate * 24 * 7.2, 2) == 3_517.99

    assert consistent(PRICE_PER_V100_HOUR_EUR)
    assert not any(consistent(k / 10_000) for k in range(33_900, 34_000))  # no 4-decimal rate works


def test_day_roundings_are_the_printed_ones() -> None:
    assert DayRounding.TENTH.apply(180.48780) == 180.5
    assert DayRounding.TENTH.apply(20.6272) == 20.6
    assert DayRounding.WHOLE_UP.apply(20.6272) == 21
    assert DayRounding.WHOLE_UP.apply(7.2195) == 8


def test_gpu_count_rounds_memory_up_and_the_practical_margin_down() -> None:
    assert gpus_to_fit(168.0) == 6
    assert gpus_to_fit(480.0) == 16
    assert gpus_with_practical_margin(140) == 164  # 140 / 0.85 = 164.7


def test_rows_are_frozen() -> None:
    row = gpt35_row()
    with pytest.raises((AttributeError, TypeError)):
        row.cost_total = 0.0  # type: ignore[misc]


def test_rows_can_be_built_from_a_given_reference() -> None:
    ref = gpt35_row()
    assert llama2_7b_row(ref) == llama2_7b_row()


def test_every_row_states_its_inconsistencies_in_notes(rows: tuple[WorkedExampleRow, ...]) -> None:
    for row in rows:
        assert row.notes
        assert all(isinstance(n, str) and n for n in row.notes)
        assert any("3.3926" in n for n in row.notes)


# --- Rules of thumb ----------------------------------------------------------------------------------


def test_memory_rules_of_thumb_per_billion_params() -> None:
    table = {m.precision: m for m in memory_rules_of_thumb()}
    assert set(table) == {"FP32", "FP16/BF16", "INT8"}
    assert (table["FP32"].store_gb_per_billion_params, table["FP32"].train_gb_per_billion_params) == (4, 80)
    assert (
        table["FP16/BF16"].store_gb_per_billion_params,
        table["FP16/BF16"].train_gb_per_billion_params,
    ) == (2, 40)
    assert (table["INT8"].store_gb_per_billion_params, table["INT8"].train_gb_per_billion_params) == (1, 20)


def test_training_memory_rule_is_20x_the_stored_weights_not_24_bytes_per_param() -> None:
    assert TRAINING_TO_STORAGE_MEMORY_RATIO == 20
    fp32 = memory_rules_of_thumb()[0]
    assert fp32.train_gb_per_billion_params / fp32.store_gb_per_billion_params == 20
    # The cluster sizing uses 24 B/param = 24 GB per 1B params, not the rule's 80 GB (or 40 GB at fp16).
    assert gpt35_row().training_memory_gb / 175 == pytest.approx(24.0)


def test_compute_optimal_tokens_are_20_per_param() -> None:
    table = {o.model: o for o in compute_optimal_tokens()}
    assert table["Chinchilla 70B"].optimal_tokens == pytest.approx(1.4e12)
    assert table["LLaMA-65B"].optimal_tokens == pytest.approx(1.3e12)
    assert table["GPT-3 175B"].optimal_tokens == pytest.approx(3.5e12)
    assert table["Chinchilla 70B"].trained_tokens == pytest.approx(1.4e12)
    assert table["LLaMA-65B"].trained_tokens == pytest.approx(1.4e12)
    assert table["GPT-3 175B"].trained_tokens == pytest.approx(300e9)
    assert table["GPT-3 175B"].trained_to_optimal == pytest.approx(300 / 3500)


# --- Presentation ------------------------------------------------------------------------------------


def test_render_text_shows_every_model_and_the_key_printed_numbers() -> None:
    text = render_text()
    for expected in (
        "GPT-3.5 (175B)",
        "GPT-3.5 Turbo (20B)",
        "Llama 2 7B",
        "4,200",
        "164",
        "180.5",
        "355,224",
        "556.47",
        "4,032",
        "576",
        "3,517.99",
        "FP16/BF16",
        "Chinchilla 70B",
    ):
        assert expected in text
    assert text.endswith("\n")


def test_render_text_accepts_a_subset_of_rows() -> None:
    text = render_text(rows=worked_example()[2:])
    assert "Llama 2 7B" in text
    assert "Notes — GPT-3.5 Turbo" not in text
    assert "Notes — Llama 2 7B" in text


def test_to_json_is_json_ready_and_keyed_for_extension() -> None:
    doc = to_json()
    assert {"published", "rules_of_thumb", "compute_optimal"} <= set(doc)
    assert json.loads(json.dumps(doc)) == doc
    published = doc["published"]
    assert [p["model"] for p in published] == [r.model for r in worked_example()]
    assert published[0]["gpus_practical"] == 164
    assert isinstance(published[0]["notes"], list)
    assert math.isclose(published[2]["cost_total"], worked_example()[2].cost_total)
    assert [r["train_gb_per_billion_params"] for r in doc["rules_of_thumb"]["rows"]] == [80, 40, 20]
    assert doc["compute_optimal"]["tokens_per_param"] == 20
