"""Periodic forecasts from the store: load the predictors from the registry, forecast every `every_s`.

`twin serve --forecast-registry DIR` runs `forecast_loop` beside ingestion (and `twin demo` after
training its predictors): power (P10/P50/P90 per node and cluster, 1 min / 15 min / 1 h ahead) and, when a
`gpu-risk` model is saved, each GPU's failure probability, from the store's newest telemetry, written to
the `forecasts` table that the dashboard reads (`twin.store.forecasts`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from twin.store.repository import Store

log = logging.getLogger(__name__)

# The failure-risk model's windows when its card does not say (models.failure's defaults).
DEFAULT_RISK_HORIZON_S: Final = 3600.0
DEFAULT_RISK_WINDOW_S: Final = 1800.0
DEFAULT_RISK_BUCKET_S: Final = 120.0


@dataclass(frozen=True, slots=True)
class Predictors:
    """Fitted predictors with their registry versions (a `models.power.PowerForecaster`, and optionally a
    `models.failure.FailureRiskModel` over telemetry features)."""

    power: Any
    power_version: str
    risk: Any | None = None
    risk_version: str | None = None
    risk_horizon_s: float = DEFAULT_RISK_HORIZON_S
    risk_window_s: float = DEFAULT_RISK_WINDOW_S
    risk_bucket_s: float = DEFAULT_RISK_BUCKET_S


def load_predictors(registry_dir: Path) -> Predictors:
    """The newest `power` model (required) and `gpu-risk` model (optional) of a registry.

    Raises `twin.model_registry.RegistryError` (what is missing or incompatible) when there is no usable
    power model, or when it was fitted with a physics column the store cannot supply.
    """
    from models.failure import FailureRiskModel
    from models.power import PowerForecaster
    from twin.cli_models import GPU_RISK_MODEL, POWER_MODEL
    from twin.model_registry import ModelRegistry, RegistryError

    registry = ModelRegistry(registry_dir)
    power, card = registry.load(POWER_MODEL, expected_type=PowerForecaster)
    if power.uses_physics_:
        raise RegistryError(
            f"model {card.version} was fitted with a physics estimate, which the store cannot supply; "
            "train the power model on the store (`twin models train --db URL`)."
        )
    try:
        risk, risk_card = registry.load(GPU_RISK_MODEL, expected_type=FailureRiskModel)
    except RegistryError as exc:
        log.info("no GPU failure-risk forecasts: %s", exc)
        return Predictors(power, card.version)
    window = risk_card.data_range
    return Predictors(
        power,
        card.version,
        risk,
        risk_card.version,
        float(window.get("horizon_s", DEFAULT_RISK_HORIZON_S)),
        float(window.get("window_s", DEFAULT_RISK_WINDOW_S)),
        float(window.get("bucket_s", DEFAULT_RISK_BUCKET_S)),
    )


@dataclass(frozen=True, slots=True)
class ForecastRound:
    made_at_ts: float | None  # the newest telemetry's time; None when the store has none
    written: dict[str, int]  # forecasts written, by kind (power, failure)


def forecast_from_store(store: Store, cluster: str | None, predictors: Predictors) -> ForecastRound:
    """One round of forecasts from `store`'s newest telemetry, written back to `store`."""
    from twin.predictors import forecast_failure_risk, forecast_power

    newest = store.telemetry_frame(cluster, limit=1)
    if newest.empty:
        return ForecastRound(None, {"power": 0, "failure": 0})
    now_ts = float(newest["ts"].iloc[0])
    power, version = predictors.power, predictors.power_version
    written = {"power": forecast_power(store, power, version, now_ts=now_ts, cluster=cluster)}
    written["failure"] = 0
    if predictors.risk is not None and predictors.risk_version is not None:
        written["failure"] = forecast_failure_risk(
            store,
            predictors.risk,
            predictors.risk_version,
            now_ts=now_ts,
            cluster=cluster,
            horizon_s=predictors.risk_horizon_s,
            window_s=predictors.risk_window_s,
            bucket_s=predictors.risk_bucket_s,
        )
    return ForecastRound(now_ts, written)


def forecast_once(db_url: str, cluster: str | None, predictors: Predictors) -> dict[str, int]:
    """`forecast_from_store` on the store at `db_url`; how many of each kind were written."""
    from twin.store.repository import Store

    with Store.open(db_url) as store:
        return forecast_from_store(store, cluster, predictors).written


def forecast_loop(
    db_url: str, cluster: str | None, predictors: Predictors, stop: threading.Event, *, every_s: float
) -> None:
    """Forecast every `every_s` until `stop` is set. A failed round (e.g. too little telemetry yet) is
    logged and retried at the next period; it never stops the caller."""
    if not every_s > 0:
        raise ValueError(f"every_s(={every_s}) must be > 0.")
    while not stop.is_set():
        try:
            written = forecast_once(db_url, cluster, predictors)
            log.info("forecasts written: %s", written)
        except Exception as exc:
            log.warning(
                "forecast round failed (%s: %s); retrying in %.0f s", type(exc).__name__, exc, every_s
            )
        stop.wait(every_s)
