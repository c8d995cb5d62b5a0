"""Reproduce the fitted constants in twin/perf/calibration.py by grid search on the fit splits.

Run by hand (not part of run_all): `.venv/bin/python benchmarks/fit_calibration.py`. It prints, for each
data set, the grid points with the lowest step-time MAPE on the fit split and the held-out MAPE of the
best one. The values in calibration.py were chosen from these rows (a stable point near the optimum).
"""

from __future__ import annotations

import itertools
import statistics
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twin.perf import calibration as cal
from twin.perf.estimate import estimate
from twin.validate import Case, default_data_dir, load_simumax, load_vtrain

VTRAIN_GRID = {
    "matmul_efficiency": (0.75, 0.78, 0.80, 0.82, 0.85),
    "GEMM_HALF_DIM": (64.0, 96.0, 128.0),
    "HOST_DISPATCH_S_PER_LAYER_PASS": (1.0e-3, 1.1e-3, 1.2e-3, 1.3e-3),
}
SIMUMAX_GRID = {
    "matmul_efficiency": (0.42, 0.45, 0.48, 0.50, 0.55),
    "GEMM_HALF_DIM": (256.0, 512.0, 1024.0),  # B200's own half-size (no scaling: set directly)
    "FLASH_ATTENTION_EFFICIENCY": (0.4, 0.5, 0.6),
}


@contextmanager
def constants(**values: float) -> Iterator[None]:
    """Temporarily set calibration constants (GEMM_HALF_DIM is used unscaled while fitting one GPU)."""
    saved = {name: getattr(cal, name) for name in values}
    saved_exponent = cal.GEMM_HALF_DIM_EXPONENT
    try:
        for name, value in values.items():
            setattr(cal, name, value)
        cal.GEMM_HALF_DIM_EXPONENT = 0.0
        yield
    finally:
        for name, value in saved.items():
            setattr(cal, name, value)
        cal.GEMM_HALF_DIM_EXPONENT = saved_exponent


def mape(cases: Sequence[Case], efficiency: float) -> float:
    errors = []
    for case in cases:
        gpu = replace(case.cluster.gpu, matmul_efficiency=efficiency)
        est = estimate(case.model, replace(case.cluster, gpu=gpu), case.layout, case.training)
        errors.append(abs(est.step.step_time_s - case.measured_step_s) / case.measured_step_s * 100)
    return statistics.mean(errors)


def fit(name: str, cases: Sequence[Case], grid: dict[str, tuple[float, ...]]) -> None:
    fit_cases = [c for c in cases if c.split == "fit"]
    report_cases = [c for c in cases if c.split == "report"]
    rows = []
    for point in itertools.product(*grid.values()):
        values = dict(zip(grid, point, strict=True))
        efficiency = values.pop("matmul_efficiency")
        with constants(**values):
            rows.append((mape(fit_cases, efficiency), efficiency, values))
    rows.sort(key=lambda r: r[0])
    print(f"== {name}: best grid points by fit-split MAPE")
    for error, efficiency, values in rows[:5]:
        print(f"  fit MAPE {error:5.2f} %  matmul_efficiency={efficiency}  {values}")
    error, efficiency, values = rows[0]
    with constants(**values):
        print(f"  best point's held-out MAPE: {mape(report_cases, efficiency):.2f} %")


def main() -> None:
    data = default_data_dir()
    fit("vTrain A100", load_vtrain(data), VTRAIN_GRID)
    with constants(HOST_DISPATCH_S_PER_LAYER_PASS=cal.HOST_DISPATCH_S_PER_LAYER_PASS):
        fit("SimuMax B200", load_simumax(data), SIMUMAX_GRID)


if __name__ == "__main__":
    main()
