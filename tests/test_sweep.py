"""`twin sweep` (twin.sweep): enumeration, validity, ranking and Pareto fronts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from twin.errors import ScenarioError
from twin.layout_sweep import RankBy, SweepResult, enumerate_layouts, pareto_front, sweep
from twin.perf.layout_rules import check_layouts, valid_mask
from twin.scenario import Scenario, evaluate, parse


def raw_scenario(
    model: str = "llama2-7b",
    gpus: int = 16,
    global_batch: int = 256,
    tokens: float | None = 1e11,
    gpu: str = "h100-sxm",
) -> dict[str, Any]:
    training: dict[str, Any] = {"seq_len": 4096, "global_batch": global_batch}
    if tokens is not None:
        training["tokens"] = tokens
    return {
        "model": {"preset": model},
        "cluster": {"gpu": gpu, "gpus": gpus, "price_per_gpu_hour": 2.0},
        "training": training,
    }


def make(**kwargs: Any) -> Scenario:
    return parse(raw_scenario(**kwargs))


@pytest.fixture(scope="module")
def small_sweep() -> SweepResult:
    """llama2-7b on 16 H100s: a few thousand valid layouts, small enough to check exhaustively."""
    return sweep(make())


# --- enumeration and validity ----------------------------------------------------------------------


@pytest.mark.parametrize(("model", "gpus"), [("llama2-7b", 16), ("llama3-70b", 1024), ("gpt3-1.3b", 24)])
def test_enumerated_layouts_use_exactly_the_cluster(model: str, gpus: int) -> None:
    batch = enumerate_layouts(make(model=model, gpus=gpus, global_batch=gpus * 8))
    assert len(batch) > 0
    assert np.all(batch.tp * batch.pp * batch.cp * batch.dp == gpus)
    assert np.all(batch.dp >= 1)


def test_enumeration_covers_every_zero_stage_offload_and_recompute() -> None:
    batch = enumerate_layouts(make())
    assert set(batch.zero_stage.tolist()) == {0, 1, 2, 3}
    assert set(batch.offload.tolist()) == {0, 1, 2}
    assert set(batch.recompute.tolist()) == {0, 1, 2}
    assert set(batch.tp.tolist()) == {1, 2, 4, 8, 16}


def test_enumeration_keeps_the_scenarios_precision() -> None:
    raw = raw_scenario()
    raw["layout"] = {"precision": "fp8"}
    batch = enumerate_layouts(parse(raw))
    assert {batch.layout(i).precision.value for i in range(0, len(batch), 97)} == {"fp8"}


def test_every_swept_layout_satisfies_the_rules(small_sweep: SweepResult) -> None:
    scenario = small_sweep.scenario
    batch = small_sweep.arrays.batch
    assert bool(valid_mask(scenario.model, scenario.cluster, scenario.training, batch).all())
    check_layouts(scenario.model, scenario.cluster, scenario.training, batch)  # raises if any is invalid
    for row in small_sweep.rows():
        lay = row["layout"]
        assert lay["tp"] * lay["pp"] * lay["cp"] * lay["dp"] == 16
        assert 256 % (lay["dp"] * lay["micro_batch"]) == 0
        assert lay["offload"] != "params" or lay["zero_stage"] == 3


def test_sweep_keeps_every_valid_enumerated_layout(small_sweep: SweepResult) -> None:
    scenario = small_sweep.scenario
    enumerated = enumerate_layouts(scenario)
    assert small_sweep.enumerated == len(enumerated)
    valid = int(valid_mask(scenario.model, scenario.cluster, scenario.training, enumerated).sum())
    assert len(small_sweep.arrays.batch) == valid < len(enumerated)


def test_swept_rows_match_the_single_scenario_estimate(small_sweep: SweepResult) -> None:
    for row in small_sweep.rows(top=5):
        raw = raw_scenario()
        raw["layout"] = row["layout"]
        single = evaluate(raw)
        assert single["step_time_s"] == pytest.approx(row["step_time_s"], rel=1e-12)
        assert single["memory"]["total_bytes"] == pytest.approx(row["memory_total_bytes"], rel=1e-12)
        assert single["fits"] == row["fits"]
        assert single["time_to_train_s"] == pytest.approx(row["time_to_train_s"], rel=1e-9)


def test_no_valid_layout_is_a_scenario_error() -> None:
    # One layer and one head: TP, PP and CP are all 1, so DP is 8 and cannot divide a batch of 4.
    raw = raw_scenario(gpus=8, global_batch=4)
    raw["model"] = {
        "layers": 1,
        "hidden": 64,
        "heads": 1,
        "ffn_hidden": 256,
        "vocab": 100,
        "gated_mlp": False,
    }
    with pytest.raises(ScenarioError, match=r"no valid layout .* global_batch=4"):
        sweep(parse(raw))


# --- ranking ---------------------------------------------------------------------------------------


def test_rows_put_fitting_layouts_first_then_fastest(small_sweep: SweepResult) -> None:
    rows = small_sweep.rows()
    assert len(rows) == len(small_sweep.arrays.batch)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    fits = [r["fits"] for r in rows]
    assert fits == sorted(fits, reverse=True)
    assert 0 < fits.count(True) < len(rows)
    for group in (True, False):
        times = [r["time_to_train_s"] for r in rows if r["fits"] is group]
        assert times == sorted(times)


def test_rows_top_and_fits_only(small_sweep: SweepResult) -> None:
    assert [r["rank"] for r in small_sweep.rows(top=3)] == [1, 2, 3]
    fitting = small_sweep.rows(fits_only=True)
    assert len(fitting) == int(small_sweep.arrays.fits.sum())
    assert all(r["fits"] for r in fitting)
    assert all(r["reason"] is None for r in fitting)
    not_fitting = [r for r in small_sweep.rows() if not r["fits"]]
    assert all("GiB" in r["reason"] for r in not_fitting)


@pytest.mark.parametrize("rank_by", ["cost", "energy"])
def test_rank_by_orders_fitting_layouts_by_that_figure(rank_by: RankBy) -> None:
    result = sweep(make(), rank_by=rank_by)
    rows = result.rows(fits_only=True)
    values = [r["cost" if rank_by == "cost" else "energy_kwh"] for r in rows]
    assert values == sorted(values)
    assert [r["fits"] for r in result.rows()][: len(rows)] == [True] * len(rows)


def test_cost_is_price_times_gpu_hours(small_sweep: SweepResult) -> None:
    for row in small_sweep.rows(top=20):
        assert row["cost"] == pytest.approx(2.0 * 16 * row["time_to_train_s"] / 3600, rel=1e-12)


def test_without_token_target_rows_rank_by_step_time() -> None:
    result = sweep(make(tokens=None))
    rows = result.rows(fits_only=True)
    assert "time_to_train_s" not in rows[0] and "cost" not in rows[0]
    times = [r["step_time_s"] for r in rows]
    assert times == sorted(times)


# --- Pareto fronts ---------------------------------------------------------------------------------


def dominated(x: np.ndarray, y: np.ndarray, eligible: np.ndarray, i: int) -> bool:
    """Whether an eligible point is at least as good in both and better in one."""
    better_or_equal = (x <= x[i]) & (y <= y[i])
    strictly = (x < x[i]) | (y < y[i])
    return bool(np.any(eligible & better_or_equal & strictly))


@pytest.mark.parametrize(
    ("front_name", "other"), [("pareto_time_cost", "cost"), ("pareto_time_energy", "energy_kwh")]
)
def test_pareto_front_is_exactly_the_undominated_fitting_layouts(
    small_sweep: SweepResult, front_name: str, other: str
) -> None:
    a = small_sweep.arrays
    assert a.time_to_train_s is not None and a.cost is not None and a.energy_kwh is not None
    x = a.time_to_train_s
    y = a.cost if other == "cost" else a.energy_kwh
    front: np.ndarray = getattr(small_sweep, front_name)
    assert front.any()
    assert not np.any(front & ~a.fits)
    for i in np.flatnonzero(a.fits):  # exhaustive over every fitting layout
        if front[i]:
            assert not dominated(x, y, a.fits, int(i))
        else:
            # off the front: dominated, or a duplicate of a front point
            duplicate = np.any(front & (x == x[i]) & (y == y[i]))
            assert dominated(x, y, a.fits, int(i)) or duplicate
    # the fastest fitting layout is always on the front
    fastest = int(np.flatnonzero(a.fits)[np.argmin(x[a.fits])])
    assert front[fastest] or np.any(front & (x == x[fastest]) & (y == y[fastest]))


def test_pareto_front_flags_shown_in_rows(small_sweep: SweepResult) -> None:
    flagged = sum(r["pareto_time_cost"] for r in small_sweep.rows())
    assert flagged == int(small_sweep.pareto_time_cost.sum())


def test_pareto_front_of_a_known_point_set() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 2.0, 5.0, 0.5])
    y = np.array([5.0, 3.0, 4.0, 1.0, 3.0, 0.5, 9.0])
    eligible = np.array([True, True, True, True, True, True, False])
    front = pareto_front(x, y, eligible)
    # (3, 4) is dominated by (2, 3); the second (2, 3) duplicates the first; (0.5, 9) is not eligible.
    assert front.tolist() == [True, True, False, True, False, True, False]


def test_pareto_front_with_nothing_eligible_is_empty() -> None:
    x = np.array([1.0, 2.0])
    assert not pareto_front(x, x, np.zeros(2, dtype=np.bool_)).any()
