"""Accuracy against measured runs: `twin.validate` on the shared calibration data, MAPE table and targets.

Targets: step-time MAPE <= 10 % on vTrain multi-node (vtrain-a100, report split) and on SimuMax B200
(all rows and the report split); peak-memory MAPE <= 5 % on SimuMax B200 (all rows and the report split).
Without the calibration data (../shared/calibration) it prints SKIP and returns.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from _common import ensure_repo_on_path, figure, header, target

DATA_FILES = ("vtrain_a100_single_node.csv", "vtrain_a100_multi_node.csv", "simumax_b200_summary.json")
# (dataset, split, metric, max MAPE %)
TARGETS = (
    ("vtrain-a100", "report", "step_time", 10.0),
    ("simumax-b200", "all", "step_time", 10.0),
    ("simumax-b200", "report", "step_time", 10.0),
    ("simumax-b200", "all", "peak_memory", 5.0),
    ("simumax-b200", "report", "peak_memory", 5.0),
)


def main(smoke: bool = False, data_dir: Path | None = None) -> None:
    """`smoke` changes nothing here: one pass over the data is deterministic and takes about a second."""
    ensure_repo_on_path()
    from twin import validate

    directory = data_dir or validate.default_data_dir()
    header(f"validation: twin.validate against measured runs ({directory})")
    missing = [name for name in DATA_FILES if not (directory / name).is_file()]
    if not directory.is_dir() or missing:
        what = "" if not directory.is_dir() else f" (missing {', '.join(missing)})"
        print(f"  SKIP: no calibration data at {directory}{what}", flush=True)
        return

    start = time.perf_counter()
    results = validate.run(validate.load_all(directory))
    wall = time.perf_counter() - start
    every_row = [replace(r, case=replace(r.case, split="all")) for r in results]
    summaries = sorted(
        validate.summarise(results) + validate.summarise(every_row),
        key=lambda s: (s.dataset, s.metric, {"fit": 0, "report": 1, "all": 2}.get(s.split, 3)),
    )
    figure("cases / load + predict time", f"{len(results):,} / {wall:.2f} s")
    print(f"  {'dataset':<14}{'split':<8}{'metric':<13}{'n':>6}{'MAPE %':>9}{'mean %':>9}{'max|e| %':>10}")
    for s in summaries:
        print(
            f"  {s.dataset:<14}{s.split:<8}{s.metric:<13}{s.n:>6}"
            f"{s.mape_pct:>9.2f}{s.mean_error_pct:>+9.2f}{s.max_abs_error_pct:>10.2f}"
        )
    by_key = {(s.dataset, s.split, s.metric): s for s in summaries}
    for dataset, split, metric, limit in TARGETS:
        found = by_key.get((dataset, split, metric))
        label = f"{metric.replace('_', '-')} MAPE {dataset} ({split})"
        if found is None:
            target(False, f"{label}: no rows (target <= {limit:g} %)")
        else:
            target(found.mape_pct <= limit, f"{label} {found.mape_pct:.2f} % <= {limit:g} % (n={found.n})")


if __name__ == "__main__":
    main(smoke="--smoke" in sys.argv[1:])
