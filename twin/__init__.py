"""gpu-twin: a digital twin of GPU training clusters.

Python API (mirrors the CLI): `twin.evaluate(scenario_dict)` → the contract's result dict;
`twin.sweep(scenario_dict, rank_by="time")` → a `SweepResult` of every valid layout, ranked.
Both are imported lazily so `twin whatif` starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from twin.layout_sweep import RankBy, SweepResult

__all__ = ["evaluate", "sweep"]


def evaluate(scenario: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate one scenario (DESIGN §3) and return the result; raises `twin.errors.ScenarioError`."""
    from twin.scenario import evaluate as _evaluate

    return _evaluate(scenario)


def sweep(scenario: Mapping[str, Any], rank_by: RankBy = "time") -> SweepResult:
    """Every valid layout for the scenario's model, cluster and training, ranked by time, cost or energy."""
    from twin.layout_sweep import sweep as _sweep
    from twin.scenario import parse

    return _sweep(parse(scenario), rank_by=rank_by)
