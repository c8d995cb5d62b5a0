"""Tests of the store (twin.store): both backends, through the `store` fixture (conftest.py)."""

from __future__ import annotations

from typing import Any

from twin.records import TELEMETRY_COLUMNS, TelemetryTuple


def sample(
    node: str = "n01",
    gpu: int = 0,
    ts: float = 1_700_000_000.0,
    *,
    cluster: str = "c1",
    **values: Any,
) -> TelemetryTuple:
    """One telemetry tuple in TELEMETRY_COLUMNS order; unspecified value fields are plausible H100 numbers."""
    defaults: dict[str, Any] = {
        "uuid": f"GPU-{node}-{gpu}",
        "power_w": 600.0,
        "energy_j": 1.0e6,
        "gpu_util_pct": 95.0,
        "mem_util_pct": 40.0,
        "mem_used_bytes": 70 * 2**30,
        "mem_total_bytes": 80 * 2**30,
        "temp_c": 65.0,
        "sm_clock_mhz": 1980.0,
        "ecc_sbe_total": 0,
        "ecc_dbe_total": 0,
        "xid_last": None,
        "throttle_reasons": 0,
    }
    unknown = set(values) - set(defaults)
    if unknown:
        raise ValueError(f"unknown telemetry field(s) {sorted(unknown)}")
    defaults.update(values)
    row = {"cluster": cluster, "node": node, "gpu_index": gpu, "ts": ts, **defaults}
    return tuple(row[name] for name in TELEMETRY_COLUMNS)


def node_samples(
    nodes: int, ts: float, *, gpus: int = 8, cluster: str = "c1", first_node: int = 0
) -> list[TelemetryTuple]:
    """One sample of every GPU of `nodes` nodes (named n0000, n0001, …) at `ts`."""
    return [
        sample(f"n{n:04d}", g, ts, cluster=cluster, power_w=500.0 + g)
        for n in range(first_node, first_node + nodes)
        for g in range(gpus)
    ]
