"""Sweep throughput: `twin.layout_sweep.sweep(parse(EXAMPLE))`, enumerated and valid layouts per second.

Throughput = layouts / wall time of one whole sweep (enumerate, filter, estimate, rank, Pareto fronts),
from the median wall time over the repetitions. Target >= 100,000 enumerated layouts/s.
"""

from __future__ import annotations

import sys
import time

from _common import ensure_repo_on_path, figure, header, median, target

TARGET_LAYOUTS_PER_S = 100_000
REPS_FULL, WARMUP_FULL = 20, 2
REPS_SMOKE, WARMUP_SMOKE = 3, 1


def main(smoke: bool = False) -> None:
    ensure_repo_on_path()
    from twin.cli import EXAMPLE_SCENARIO
    from twin.layout_sweep import sweep
    from twin.scenario import parse

    reps, warmup = (REPS_SMOKE, WARMUP_SMOKE) if smoke else (REPS_FULL, WARMUP_FULL)
    header("sweep throughput: twin.layout_sweep.sweep(parse(EXAMPLE_SCENARIO))")
    scenario = parse(EXAMPLE_SCENARIO)
    for _ in range(warmup):
        sweep(scenario)
    walls: list[float] = []
    enumerated = valid = fits = 0
    for _ in range(reps):
        start = time.perf_counter()
        result = sweep(scenario)
        walls.append(time.perf_counter() - start)
        enumerated, valid = result.enumerated, len(result.arrays.batch)
        fits = int(result.arrays.fits.sum())
    wall = median(walls)
    per_s = enumerated / wall
    valid_per_s = valid / wall
    figure("repetitions (after warm-up)", f"{reps} (warm-up {warmup})")
    figure("layouts enumerated / valid / fit", f"{enumerated:,} / {valid:,} / {fits:,}")
    figure("wall time median (min)", f"{wall * 1e3:.1f} ms ({min(walls) * 1e3:.1f} ms)")
    figure("enumerated layouts/s", f"{per_s:,.0f}")
    figure("valid layouts/s", f"{valid_per_s:,.0f}")
    target(
        per_s >= TARGET_LAYOUTS_PER_S,
        f"sweep throughput {per_s:,.0f} layouts/s >= {TARGET_LAYOUTS_PER_S:,} layouts/s",
    )


if __name__ == "__main__":
    main(smoke="--smoke" in sys.argv[1:])
