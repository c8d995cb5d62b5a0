"""Job arrivals: a Poisson process, or the SenseTime Helios Venus submit series replayed.

Replay data: ../shared/traces/sensetime-helios/venus_cluster_throughput_10min.csv (Hu et al., SC'21,
"Characterization and Prediction of Deep Learning Workloads in Large-Scale GPU Datacenters"): jobs
submitted per 10-minute bin, Apr–Sep 2020, on Venus (1,022 GPUs). Bin i's jobs arrive uniformly within
[i·600 s, (i+1)·600 s); each is kept with probability `scale` (thinning scales the load down).
Every arriving job is a copy of the arrivals' template with its own id and arrival time.
"""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from twin.errors import ScenarioError
from twin.perf.reliability import SECONDS_PER_HOUR
from twin.sim.spec import JobSpec, PoissonArrivals, ReplayArrivals

HELIOS_VENUS_FILE = Path("sensetime-helios") / "venus_cluster_throughput_10min.csv"
HELIOS_BIN_S = 600.0  # the file's bins are 10 minutes (its `time` column steps by 00:10:00)
HELIOS_COLUMNS = ("submit_job_all", "submit_gpu_job")
HELIOS_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def load_submit_counts(
    path: Path, column: str = "submit_gpu_job", start: str | None = None
) -> tuple[int, ...]:
    """Submit counts per 10-minute bin from `start` (a timestamp in the file's format; default: first row)."""
    if column not in HELIOS_COLUMNS:
        raise ScenarioError(f"arrivals.column(={column!r}) must be one of {', '.join(HELIOS_COLUMNS)}.")
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise ScenarioError(f"arrivals.path: cannot read {path}: {exc.strerror}") from None
    with handle:
        rows = list(csv.DictReader(handle))
    if not rows or column not in rows[0]:
        raise ScenarioError(f"arrivals.path: {path} has no column {column!r}.")
    first = 0
    if start is not None:
        try:
            wanted = datetime.strptime(start, HELIOS_TIME_FORMAT)
        except ValueError:
            raise ScenarioError(f"arrivals.start(={start!r}) must look like 2020-04-01 00:00:00.") from None
        times = [datetime.strptime(r["time"], HELIOS_TIME_FORMAT) for r in rows]
        first = next((i for i, t in enumerate(times) if t >= wanted), len(rows))
        if first == len(rows):
            raise ScenarioError(
                f"arrivals.start(={start!r}) is after the trace's last bin ({rows[-1]['time']})."
            )
    return tuple(int(r[column]) for r in rows[first:])


def arrival_times(
    arrivals: PoissonArrivals | ReplayArrivals, horizon_s: float, rng: np.random.Generator
) -> np.ndarray:
    """Sorted arrival times (s) within [0, horizon_s), at most `max_jobs` of them."""
    if isinstance(arrivals, PoissonArrivals):
        end = horizon_s if arrivals.end_s is None else min(arrivals.end_s, horizon_s)
        span = max(0.0, end - arrivals.start_s)
        # A Poisson process on [a, b): N ~ Poisson(λ(b − a)) points, iid uniform given N.
        n = int(rng.poisson(arrivals.rate_per_hour * span / SECONDS_PER_HOUR))
        times = np.sort(arrivals.start_s + rng.random(n) * span)
    else:
        bins = min(len(arrivals.counts), math.ceil(horizon_s / arrivals.bin_s))
        counts = np.asarray(arrivals.counts[:bins], dtype=np.int64)
        if arrivals.scale < 1.0:
            counts = rng.binomial(counts, arrivals.scale)
        starts = np.repeat(np.arange(bins, dtype=np.float64) * arrivals.bin_s, counts)
        times = np.sort(starts + rng.random(starts.size) * arrivals.bin_s)
        times = times[times < horizon_s]
    if arrivals.max_jobs is not None:
        times = times[: arrivals.max_jobs]
    return np.asarray(times, dtype=np.float64)


def arrival_jobs(
    arrivals: PoissonArrivals | ReplayArrivals, horizon_s: float, rng: np.random.Generator
) -> list[JobSpec]:
    """The arriving jobs: copies of the template named `<template id>-<n>` (n from 0)."""
    template = arrivals.template
    return [
        replace(template, job_id=f"{template.job_id}-{n}", arrival_s=float(t))
        for n, t in enumerate(arrival_times(arrivals, horizon_s, rng))
    ]
