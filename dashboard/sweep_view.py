"""Layout sweep page logic: `twin.layout_sweep.sweep` → a ranked DataFrame (vectorised, no per-row dicts),
filters, and the memory of one layout across ZeRO stages 0–3. No Streamlit here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from dashboard.formatting import fmt_duration, fmt_energy_kwh, fmt_gib, fmt_money, fmt_pct, fmt_step_time
from twin.errors import TwinError
from twin.layout_sweep import RankBy, SweepResult, sweep
from twin.perf.specs import OFFLOADS, RECOMPUTES
from twin.scenario import evaluate, parse

ZERO_STAGES: Final = (0, 1, 2, 3)
RANK_BY: Final[tuple[RankBy, ...]] = ("time", "cost", "energy")
LAYOUT_COLUMNS: Final = ("tp", "pp", "cp", "dp", "micro_batch", "virtual_stages", "zero_stage")


def run_sweep(scenario: Mapping[str, Any], rank_by: RankBy) -> SweepResult:
    """Every valid layout of the scenario's model, cluster and training, ranked (raises `TwinError`)."""
    return sweep(parse(scenario), rank_by=rank_by)


def sweep_frame(result: SweepResult) -> pd.DataFrame:
    """All valid layouts in ranked order (fitting first), one row each, SI units."""
    a = result.arrays
    b = a.batch
    order = result.order
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, len(order) + 1),
            **{name: np.asarray(getattr(b, name))[order] for name in LAYOUT_COLUMNS},
            "offload": np.asarray([o.value for o in OFFLOADS])[np.asarray(b.offload)[order]],
            "recompute": np.asarray([r.value for r in RECOMPUTES])[np.asarray(b.recompute)[order]],
            "fits": np.asarray(a.fits)[order],
            "memory_total_bytes": np.asarray(a.memory.total_bytes)[order],
            "step_time_s": np.asarray(a.step_time_s)[order],
            "mfu": np.asarray(a.mfu)[order],
            "power_per_gpu_w": np.asarray(a.power_per_gpu_w)[order],
            "pareto_time_cost": np.asarray(result.pareto_time_cost)[order],
            "pareto_time_energy": np.asarray(result.pareto_time_energy)[order],
        }
    )
    if a.time_to_train_s is not None and a.energy_kwh is not None and a.cost is not None:
        frame["time_to_train_s"] = np.asarray(a.time_to_train_s)[order]
        frame["energy_kwh"] = np.asarray(a.energy_kwh)[order]
        frame["cost"] = np.asarray(a.cost)[order]
    frame["label"] = [
        f"TP{t} PP{p} CP{c} DP{d} mb{m} v{v} ZeRO-{z} {o}/{r}"
        for t, p, c, d, m, v, z, o, r in zip(
            frame["tp"],
            frame["pp"],
            frame["cp"],
            frame["dp"],
            frame["micro_batch"],
            frame["virtual_stages"],
            frame["zero_stage"],
            frame["offload"],
            frame["recompute"],
            strict=True,
        )
    ]
    frame.attrs["capacity_bytes"] = float(a.memory.capacity_bytes)
    return frame


def filter_frame(frame: pd.DataFrame, *, fits_only: bool, zero_stages: Sequence[int]) -> pd.DataFrame:
    """Rows that fit (when asked) and use one of `zero_stages`, re-ranked 1…n in the same order."""
    mask = frame["zero_stage"].isin(list(zero_stages))
    if fits_only:
        mask &= frame["fits"]
    out = frame[mask].reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    return out


def display_table(frame: pd.DataFrame, top: int, currency: str | None) -> pd.DataFrame:
    """The first `top` rows with human formats (GiB, s, days, kWh, €)."""
    head = frame.head(top)
    out = pd.DataFrame(
        {
            "#": head["rank"],
            "layout": head["label"],
            "fits": np.where(head["fits"], "yes", "no"),
            "memory/GPU": [fmt_gib(v) for v in head["memory_total_bytes"]],
            "step": [fmt_step_time(v) for v in head["step_time_s"]],
            "MFU": [fmt_pct(v) for v in head["mfu"]],
        }
    )
    if "time_to_train_s" in head:
        out["time to train"] = [fmt_duration(v) for v in head["time_to_train_s"]]
        out["energy"] = [fmt_energy_kwh(v) for v in head["energy_kwh"]]
        out["cost"] = [fmt_money(v, currency) for v in head["cost"]]
    out["Pareto (time/cost)"] = np.where(head["pareto_time_cost"], "★", "")
    return out


def layout_of(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A sweep row's layout as the scenario contract's layout section."""
    return {
        "tp": int(row["tp"]),
        "pp": int(row["pp"]),
        "cp": int(row["cp"]),
        "dp": int(row["dp"]),
        "micro_batch": int(row["micro_batch"]),
        "virtual_stages": int(row["virtual_stages"]),
        "zero_stage": int(row["zero_stage"]),
        "offload": str(row["offload"]),
        "recompute": str(row["recompute"]),
        "sequence_parallel": int(row["tp"]) > 1,
    }


def zero_stage_memory(
    scenario: Mapping[str, Any], layout: Mapping[str, Any]
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """The scenario with `layout` evaluated at each ZeRO stage 0–3 (same everything else): the results,
    and the stages that are not valid for it with the reason (e.g. optimizer offload needs ZeRO ≥ 1)."""
    precision = (scenario.get("layout") or {}).get("precision", "bf16")
    results: list[tuple[int, dict[str, Any]]] = []
    invalid: list[tuple[int, str]] = []
    for stage in ZERO_STAGES:
        variant = {**scenario, "layout": {**layout, "zero_stage": stage, "precision": precision}}
        try:
            results.append((stage, evaluate(variant)))
        except TwinError as exc:
            invalid.append((stage, str(exc)))
    return results, invalid
