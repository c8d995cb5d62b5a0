"""Shared fixtures of the predictor tests: the public traces (skipped when absent) and small simulated
histories (seeded, session-wide: simulated once)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from twin.predictors import SimulatedHistory, simulate_history
from twin.traces import default_traces_dir, load_trace, trace_path

# A small cluster for the power tests: 6 nodes × 4 GPUs polled every 60 s for 16 h (23,064 GPU samples):
# enough for a 70/30 backtest with 1 h of look-back, the 1-h horizon and an hour to learn from.
SMALL_NODES = 6
SMALL_GPUS_PER_NODE = 4
SMALL_HOURS = 16.0
SMALL_INTERVAL_S = 60.0


def traces_or_skip() -> Path:
    folder = default_traces_dir()
    if not folder.is_dir():
        pytest.skip(f"public traces not found at {folder} (CI clone without ../shared/traces)")
    return folder


@pytest.fixture(scope="session")
def traces_dir() -> Path:
    return traces_or_skip()


@pytest.fixture(scope="session")
def alibaba_pods(traces_dir: Path) -> pd.DataFrame:
    return load_trace("alibaba-2023", trace_path("alibaba-2023", traces_dir))


@pytest.fixture(scope="session")
def titan_gpus(traces_dir: Path) -> pd.DataFrame:
    return load_trace("titan", trace_path("titan", traces_dir))


@pytest.fixture(scope="session")
def small_history() -> SimulatedHistory:
    return simulate_history(
        nodes=SMALL_NODES,
        gpus_per_node=SMALL_GPUS_PER_NODE,
        hours=SMALL_HOURS,
        interval_s=SMALL_INTERVAL_S,
        seed=1,
    )
