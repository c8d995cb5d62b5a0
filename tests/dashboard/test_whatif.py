"""What-if logic: form ↔ scenario, evaluation, the worked example, starting from a live job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dashboard import whatif
from dashboard.whatif import AUTO_DP, WhatIfInputs
from tests.dashboard.conftest import DemoStore
from twin.cli import EXAMPLE_SCENARIO
from twin.scenario import evaluate
from twin.store.repository import Store


def test_the_form_round_trips_the_readme_example() -> None:
    inputs = whatif.readme_example()
    assert inputs.model_preset == "llama3-70b" and inputs.dp == AUTO_DP and inputs.gpus == 1024
    assert inputs.layers == 80  # the preset's shape, shown in the (disabled) shape fields
    assert evaluate(inputs.to_scenario()) == evaluate(EXAMPLE_SCENARIO)
    assert WhatIfInputs.from_scenario(inputs.to_scenario()) == inputs


def test_a_custom_shape_is_an_explicit_model() -> None:
    shape = whatif.readme_example().replace(model_preset=None)
    scenario = shape.to_scenario()
    assert scenario["model"]["layers"] == 80 and "preset" not in scenario["model"]
    assert whatif.evaluate_inputs(shape).result is not None


def test_zero_stage_changes_memory_and_no_token_target_drops_the_totals() -> None:
    base = whatif.readme_example().replace(tp=1, pp=1, offload="none")
    totals = []
    for stage in (0, 1, 2, 3):
        outcome = whatif.evaluate_inputs(base.replace(zero_stage=stage))
        assert outcome.result is not None
        totals.append(outcome.result["memory"]["total_bytes"])
    # ZeRO-1 shards the optimizer states over DP, ZeRO-2 the gradients too, ZeRO-3 the weights too.
    assert totals[0] > totals[1] > totals[2] > totals[3]
    no_target = whatif.evaluate_inputs(base.replace(tokens=0.0)).result
    assert no_target is not None and "time_to_train_s" not in no_target


def test_an_infeasible_layout_and_an_invalid_one_say_why() -> None:
    too_big = whatif.evaluate_inputs(
        whatif.readme_example().replace(tp=1, pp=1, zero_stage=0, recompute="none")
    )
    assert too_big.result is not None and not too_big.result["fits"]
    assert "HBM needs" in too_big.result["reason"]
    invalid = whatif.evaluate_inputs(whatif.readme_example().replace(gpus=1000))
    assert invalid.result is None and invalid.error is not None and "divisible" in invalid.error


def test_calibration_scales_the_step_time() -> None:
    inputs = whatif.readme_example()
    plain = whatif.evaluate_inputs(inputs).result
    slower = whatif.evaluate_inputs(inputs, efficiency_scale=0.8).result
    assert plain is not None and slower is not None
    assert slower["step_time_s"] > plain["step_time_s"]
    assert slower["memory"] == plain["memory"]


def test_worked_examples_reproduce_the_published_rows_beside_the_twin() -> None:
    examples = whatif.worked_examples()
    assert [e.label for e in examples] == [
        "Worked example: GPT-3.5 (175B) on V100",
        "Worked example: GPT-3.5 Turbo (20B) on V100",
        "Worked example: Llama 2 7B on V100",
    ]
    gpt = examples[0]
    assert gpt.published["gpus_practical"] == 164 and gpt.published["energy_kwh"] == 355_224.0
    outcome = whatif.evaluate_inputs(gpt.inputs)
    assert outcome.result is not None and outcome.result["fits"]
    assert outcome.result["time_to_train_s"] == pytest.approx(gpt.twin["duration_days"] * 86_400, rel=1e-6)
    table = {r["quantity"]: r for r in whatif.worked_example_table(gpt, outcome.result)}
    assert table["GPUs (V100-32GB)"]["published example"] == "164"
    assert table["energy"]["published example"] == "355.22 MWh"
    assert table["cost"]["published example"] == "€2,410,635"
    assert table["duration"]["twin (this form)"].endswith("days")


def test_comparison_rows_show_the_change() -> None:
    a = whatif.evaluate_inputs(whatif.readme_example()).result
    b = whatif.evaluate_inputs(whatif.readme_example().replace(zero_stage=3)).result
    assert a is not None and b is not None
    rows = {r[""]: r for r in whatif.comparison_rows(a, b)}
    assert rows["memory per GPU"]["B vs A"].startswith("-")
    assert rows["usable HBM per GPU"]["B vs A"] == "+0.0%"


def test_start_from_a_live_job_calibrates_it(demo_store: DemoStore) -> None:
    spec = json.loads(Path(demo_store.spec_path).read_text())
    with Store.open(demo_store.url, create=False) as store:
        job = next(j for j in store.jobs("demo") if j["state"] == "running")
        steps = [e["step_time_s"] for e in store.job_events(job["job_id"], "demo") if e["event"] == "step"]
    start = whatif.live_start(job, steps, whatif.readme_example(), spec, "demo")
    assert start.inputs.model_preset == "llama3-8b" and start.inputs.gpu == "a100-sxm-80gb"
    assert start.inputs.gpus == 32 and (start.inputs.tp, start.inputs.pp) == (2, 2)
    assert (start.inputs.seq_len, start.inputs.global_batch) == (8192, 128)
    assert start.observed_step_time_s == pytest.approx(steps[-1])
    # The calibrated twin reproduces the observed step time (the uncalibrated one need not).
    assert start.calibrated_step_time_s == pytest.approx(start.observed_step_time_s, rel=0.01)
    calibrated = whatif.evaluate_inputs(start.inputs, start.efficiency_scale).result
    assert calibrated is not None
    assert calibrated["step_time_s"] == pytest.approx(start.calibrated_step_time_s, rel=0.01)
    no_spec = whatif.live_start(job, [], whatif.readme_example(), None, "demo")
    assert no_spec.efficiency_scale == 1.0 and any("GPU model" in n for n in no_spec.notes)
