"""The demo's predictors: trained on generated history at start, forecasting every minute from the store.

At start the demo's cluster gets `HISTORY_HOURS` of simulated telemetry before the live run (written to
the store, so the dashboard shows the past and the power forecaster has the lookback it needs), the
power forecaster is fitted on it, and the GPU failure-risk model on a simulated fleet with failures and
their precursors (`twin.predictors`). Both are saved in the model registry next to the demo database
(`twin models forecast --registry DIR` works on them too). Then, every `every_s`, power and failure-risk
forecasts are made from the store's newest telemetry and written to the forecasts table, which the
dashboard reads.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Final

from twin.forecasting import Predictors

log = logging.getLogger(__name__)

# ASSUMPTION (demo pacing): 3 h of generated history at a 30 s interval: enough lookback for the power
# forecaster's lags and windows and a training set of ~46k rows that fits in seconds on 2 cores.
HISTORY_HOURS: Final = 3.0
HISTORY_INTERVAL_S: Final = 30.0
# The failure-risk training fleet: smaller and shorter than `twin models train`'s (64 nodes, 72 h) so the
# demo is ready within a minute; failures still run at twin.predictors' accelerated rate.
RISK_HISTORY_NODES: Final = 32
RISK_HISTORY_HOURS: Final = 24.0
POWER_MODEL_NAME: Final = "power"
RISK_MODEL_NAME: Final = "gpu-risk"


def train_demo_predictors(
    db_url: str, cluster: str, registry_dir: Path, *, live_start_ts: float, seed: int, gpu: str
) -> Predictors:
    """Generate the history, write it to the store, fit and save both predictors."""
    from models.failure import RISK_BUCKET_S, RISK_HORIZON_S, RISK_WINDOW_S, telemetry_risk_dataset
    from models.power import PowerForecaster
    from twin.cli_models import POWER_MODEL, fit_gpu_risk
    from twin.model_registry import ModelRegistry
    from twin.predictors import simulate_history, simulate_risk_history, write_telemetry
    from twin.store.repository import Store

    started = time.monotonic()
    history = simulate_history(
        nodes=16,
        gpus_per_node=8,
        hours=HISTORY_HOURS,
        interval_s=HISTORY_INTERVAL_S,
        seed=seed,
        gpu=gpu,
        cluster=cluster,
        failure_rate_scale=1.0,
        start_ts=live_start_ts - HISTORY_HOURS * 3600.0 - HISTORY_INTERVAL_S,
    )
    with Store.open(db_url) as store:
        write_telemetry(store, history.telemetry)
    registry = ModelRegistry(registry_dir)
    telemetry = history.telemetry
    power = PowerForecaster(random_state=seed).fit(telemetry)
    power_card = registry.save(
        POWER_MODEL,
        power,
        trained_at_ts=time.time(),
        features=power.feature_names_,
        data_range={
            "source": f"demo history (simulated, seed {seed})",
            "since_ts": float(telemetry["ts"].min()),
            "until_ts": float(telemetry["ts"].max()),
            "rows": len(telemetry),
        },
        metrics={},
    )
    rows = telemetry_risk_dataset(
        simulate_risk_history(nodes=RISK_HISTORY_NODES, hours=RISK_HISTORY_HOURS, seed=seed, gpu=gpu)
    )
    risk: Any | None = None
    risk_version: str | None = None
    if rows["label"].nunique() == 2:  # both classes seen: a model can be fitted
        risk, risk_card = fit_gpu_risk(rows, registry, seed=seed)
        risk_version = risk_card.version
    else:
        log.warning("the generated failure history has one class only; no GPU failure-risk forecasts")
    log.info("demo predictors trained in %.1f s", time.monotonic() - started)
    return Predictors(
        power, power_card.version, risk, risk_version, RISK_HORIZON_S, RISK_WINDOW_S, RISK_BUCKET_S
    )


def forecast_loop(
    db_url: str,
    cluster: str,
    stop: threading.Event,
    *,
    every_s: float,
    registry_dir: Path,
    live_start_ts: float,
    seed: int,
    gpu: str,
) -> None:
    """Train, then forecast every `every_s` until `stop` is set (`twin.forecasting.forecast_loop`)."""
    from twin.forecasting import forecast_loop as run_forecasts

    predictors = train_demo_predictors(
        db_url, cluster, registry_dir, live_start_ts=live_start_ts, seed=seed, gpu=gpu
    )
    run_forecasts(db_url, cluster, predictors, stop, every_s=every_s)
