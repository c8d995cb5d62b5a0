"""Shared helpers for the benchmarks: repository paths, timing statistics and PASS/MISS target lines.

Targets are reported, never asserted: a slow machine prints MISS and the run still exits 0.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# Every target line printed in this process, in order: (passed, description); run_all summarises them.
RECORDED: list[tuple[bool, str]] = []


def ensure_repo_on_path() -> None:
    """Make `twin` importable when a benchmark file is run directly from a checkout."""
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)


def figure(label: str, value: str) -> None:
    print(f"  {label:<34} {value}", flush=True)


def target(passed: bool, description: str) -> bool:
    """Print one target line, PASS or MISS; returns `passed` so callers can count."""
    print(f"  {'PASS' if passed else 'MISS'}  {description}", flush=True)
    RECORDED.append((passed, description))
    return passed


def median(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    """95th percentile (inclusive linear interpolation); the single value for one sample."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[94]
