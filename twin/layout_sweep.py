"""`twin sweep`: every valid layout for a scenario's model, cluster and training, ranked, with Pareto fronts.

Layouts are enumerated as NumPy arrays, filtered by `layout_rules.valid_mask` and estimated in one
vectorised pass (`estimate_arrays`), so hundreds of thousands of layouts take about a second.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from twin.errors import ScenarioError
from twin.perf.batch import OFFLOAD_CODE, PRECISION_CODE, RECOMPUTE_CODE, BoolArray, FloatArray, LayoutBatch
from twin.perf.estimate import EstimateArrays, estimate_arrays, memory_reason
from twin.perf.layout_rules import valid_mask
from twin.perf.specs import Offload, Precision, Recompute
from twin.scenario import Scenario, layout_json

RankBy = Literal["time", "cost", "energy"]
POWERS_OF_TWO = (1, 2, 4, 8, 16, 32, 64, 128)
MICRO_BATCHES = (1, 2, 4, 8)
VIRTUAL_STAGES = (1, 2, 4)


@dataclass(frozen=True, slots=True)
class SweepResult:
    """All valid layouts (estimated) and the order to show them in."""

    scenario: Scenario
    arrays: EstimateArrays
    order: np.ndarray  # indices into arrays, fitting layouts first, best first
    pareto_time_cost: BoolArray
    pareto_time_energy: BoolArray
    enumerated: int  # layouts before validity filtering

    def rows(self, top: int | None = None, fits_only: bool = False) -> list[dict[str, Any]]:
        """Ranked rows as JSON-ready dicts."""
        indices = [int(i) for i in self.order if not fits_only or self.arrays.fits[i]]
        return [self.row(i, rank) for rank, i in enumerate(indices[:top], start=1)]

    def row(self, i: int, rank: int) -> dict[str, Any]:
        a = self.arrays
        layout = a.batch.layout(i)
        total = float(a.memory.total_bytes[i])
        row: dict[str, Any] = {
            "rank": rank,
            "layout": layout_json(layout),
            "fits": bool(a.fits[i]),
            "reason": memory_reason(total, a.memory.capacity_bytes, self.scenario.cluster.gpu.hbm_bytes),
            "memory_total_bytes": total,
            "step_time_s": float(a.step_time_s[i]),
            "tokens_per_s": float(a.tokens_per_s[i]),
            "mfu": float(a.mfu[i]),
            "power_per_gpu_w": float(a.power_per_gpu_w[i]),
            "pareto_time_cost": bool(self.pareto_time_cost[i]),
            "pareto_time_energy": bool(self.pareto_time_energy[i]),
        }
        if a.time_to_train_s is not None and a.energy_kwh is not None and a.cost is not None:
            row.update(
                time_to_train_s=float(a.time_to_train_s[i]),
                energy_kwh=float(a.energy_kwh[i]),
                cost=float(a.cost[i]),
            )
        return row


def enumerate_layouts(scenario: Scenario, zero_stages: Sequence[int] = (0, 1, 2, 3)) -> LayoutBatch:
    """Every combination of TP, PP, CP, micro-batch, virtual stages, ZeRO stage, offload and recompute
    whose TP·PP·CP divides the GPU count (DP fills the rest); precision stays the scenario's."""
    gpus = scenario.cluster.gpus
    model = scenario.model
    tps = [t for t in POWERS_OF_TWO if t <= model.heads and gpus % t == 0]
    # Even splits, plus powers of two (uneven: the last stage takes ceil(layers / pp)).
    pps = [
        p
        for p in range(1, min(model.layers, gpus) + 1)
        if gpus % p == 0 and (model.layers % p == 0 or p in POWERS_OF_TWO)
    ]
    cps = [c for c in POWERS_OF_TWO[:5] if gpus % c == 0]
    combos = [(t, p, c) for t, p, c in itertools.product(tps, pps, cps) if gpus % (t * p * c) == 0]
    if not combos:
        raise ScenarioError(f"no tp·pp·cp divides cluster.gpus(={gpus}).")
    tpc = np.asarray(combos, dtype=np.int64)
    rest = np.asarray(
        list(
            itertools.product(
                MICRO_BATCHES,
                VIRTUAL_STAGES,
                zero_stages,
                (OFFLOAD_CODE[o] for o in Offload),
                (RECOMPUTE_CODE[r] for r in Recompute),
            )
        ),
        dtype=np.int64,
    )
    grid_a = np.repeat(tpc, len(rest), axis=0)
    grid_b = np.tile(rest, (len(tpc), 1))
    tp, pp, cp = grid_a[:, 0], grid_a[:, 1], grid_a[:, 2]
    n = len(tp)
    return LayoutBatch(
        tp=tp,
        pp=pp,
        cp=cp,
        dp=gpus // (tp * pp * cp),
        micro_batch=grid_b[:, 0],
        virtual_stages=grid_b[:, 1],
        zero_stage=grid_b[:, 2],
        offload=grid_b[:, 3],
        recompute=grid_b[:, 4],
        sequence_parallel=tp > 1,
        precision=np.full(n, PRECISION_CODE[Precision(scenario.layout.precision)], dtype=np.int64),
        fused_attention=np.full(n, scenario.layout.fused_attention, dtype=np.bool_),
    )


def pareto_front(x: FloatArray, y: FloatArray, eligible: BoolArray) -> BoolArray:
    """Points not dominated in (x, y), both minimised, among `eligible` ones."""
    front = np.zeros(len(x), dtype=np.bool_)
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        return front
    order = idx[np.lexsort((y[idx], x[idx]))]
    best_y = np.inf
    for i in order:
        if y[i] < best_y:
            front[i] = True
            best_y = y[i]
    return front


def sweep(scenario: Scenario, rank_by: RankBy = "time") -> SweepResult:
    """Estimate every valid layout and rank fitting layouts by time, cost or energy."""
    batch = enumerate_layouts(scenario)
    enumerated = len(batch)
    batch = batch.select(valid_mask(scenario.model, scenario.cluster, scenario.training, batch))
    if len(batch) == 0:
        raise ScenarioError(
            f"no valid layout for {scenario.model.name} on {scenario.cluster.gpus} GPUs with "
            f"global_batch={scenario.training.global_batch}."
        )
    arrays = estimate_arrays(scenario.model, scenario.cluster, scenario.training, batch)
    time = arrays.time_to_train_s if arrays.time_to_train_s is not None else arrays.step_time_s
    # Without a token target, per-step figures rank the same way as whole-run ones.
    energy = (
        arrays.energy_kwh if arrays.energy_kwh is not None else arrays.cluster_power_w * arrays.step_time_s
    )
    cost = arrays.cost if arrays.cost is not None else arrays.step_time_s * scenario.cluster.gpus
    key = {"time": time, "cost": cost, "energy": energy}[rank_by]
    order = np.lexsort((time, key, ~arrays.fits))
    return SweepResult(
        scenario=scenario,
        arrays=arrays,
        order=order,
        pareto_time_cost=pareto_front(time, cost, arrays.fits),
        pareto_time_energy=pareto_front(time, energy, arrays.fits),
        enumerated=enumerated,
    )
