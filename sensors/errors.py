"""The sensors' error root (DESIGN §2: two shallow roots; `TwinError` lives in `twin`).

Vendor errors (NVML's `NVMLError_*`, HTTP errors from a dcgm-exporter, paho return codes) are translated
into these few types in one place each, so callers never catch a vendor exception.
"""

from __future__ import annotations


class SensorError(Exception):
    """Root of every error the sensors raise on purpose."""


class SensorUnavailable(SensorError):  # noqa: N818 (the name the telemetry issue gives it)
    """The requested source cannot run here (no NVML library or driver, no GPU, endpoint unreachable)."""


class ContractError(SensorError, ValueError):
    """A value does not fit the MQTT contract (topic segment, field name, unit); the message names it."""


class PublishError(SensorError):
    """The publisher cannot reach or authenticate with the broker (after its reconnect policy gave up)."""
