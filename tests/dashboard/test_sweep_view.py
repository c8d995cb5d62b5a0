"""Layout sweep logic: the vectorised frame agrees with `SweepResult.rows`, filters, ZeRO 0–3 memory."""

from __future__ import annotations

import pytest

from dashboard import sweep_view
from twin.cli import EXAMPLE_SCENARIO
from twin.scenario import evaluate

# A small scenario so the sweep stays well under a second: GPT-3 1.3B on 64 A100s.
SMALL = {
    "model": {"preset": "gpt3-1.3b"},
    "cluster": {"gpu": "a100-sxm-80gb", "gpus": 64, "price_per_gpu_hour": 1.5},
    "layout": {"precision": "bf16"},
    "training": {"seq_len": 2048, "global_batch": 512, "tokens": 2.6e10},
}


@pytest.fixture(scope="module")
def frame() -> tuple[object, object]:
    result = sweep_view.run_sweep(SMALL, "cost")
    return result, sweep_view.sweep_frame(result)


def test_frame_matches_the_sweep_rows(frame: tuple[object, object]) -> None:
    result, table = frame
    rows = result.rows(top=25)  # type: ignore[attr-defined]
    assert len(table) == len(result.arrays.batch)  # type: ignore[attr-defined, arg-type]
    for row, (_, got) in zip(rows, table.head(25).iterrows(), strict=True):  # type: ignore[attr-defined]
        assert sweep_view.layout_of(got.to_dict()) == {
            k: v for k, v in row["layout"].items() if k not in ("precision",)
        }
        assert got["fits"] == row["fits"]
        assert got["cost"] == pytest.approx(row["cost"])
        assert got["memory_total_bytes"] == pytest.approx(row["memory_total_bytes"])
        assert got["pareto_time_cost"] == row["pareto_time_cost"]


def test_filters_rerank(frame: tuple[object, object]) -> None:
    _, table = frame
    only = sweep_view.filter_frame(table, fits_only=True, zero_stages=[3])  # type: ignore[arg-type]
    assert len(only) and set(only["zero_stage"]) == {3} and only["fits"].all()
    assert list(only["rank"]) == list(range(1, len(only) + 1))
    everything = sweep_view.filter_frame(table, fits_only=False, zero_stages=[0, 1, 2, 3])  # type: ignore[arg-type]
    assert len(everything) == len(table)  # type: ignore[arg-type]
    shown = sweep_view.display_table(only, 5, "EUR")
    assert list(shown.columns[:4]) == ["#", "layout", "fits", "memory/GPU"]
    assert shown["memory/GPU"].str.endswith("GiB").all() and shown["cost"].str.startswith("€").all()


def test_zero_stage_memory_shrinks_and_names_invalid_stages() -> None:
    layout = {
        "tp": 1,
        "pp": 1,
        "cp": 1,
        "dp": 64,
        "micro_batch": 1,
        "virtual_stages": 1,
        "zero_stage": 0,
        "offload": "none",
        "recompute": "selective",
        "sequence_parallel": False,
    }
    results, invalid = sweep_view.zero_stage_memory(SMALL, layout)
    assert [s for s, _ in results] == [0, 1, 2, 3] and invalid == []
    totals = [r["memory"]["total_bytes"] for _, r in results]
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[3]
    assert results[2][1] == evaluate({**SMALL, "layout": {**layout, "zero_stage": 2, "precision": "bf16"}})
    offloaded, bad = sweep_view.zero_stage_memory(
        EXAMPLE_SCENARIO, {**layout, "tp": 8, "dp": 128, "offload": "optimizer"}
    )
    assert [s for s, _ in offloaded] == [1, 2, 3]
    assert bad[0][0] == 0 and "zero_stage" in bad[0][1]
