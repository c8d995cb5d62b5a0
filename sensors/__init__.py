"""Telemetry sources and MQTT publishing (built under the telemetry issue)."""
