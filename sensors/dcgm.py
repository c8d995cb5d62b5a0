"""Bridge from an NVIDIA dcgm-exporter's Prometheus /metrics endpoint to the MQTT contract.

dcgm-exporter (github.com/NVIDIA/dcgm-exporter) serves one series per GPU and DCGM field, labelled `gpu`
(index), `UUID`, `pci_bus_id`, `device`, `modelName`, `Hostname`, `DCGM_FI_DRIVER_VERSION` and, under
Kubernetes, `container`/`namespace`/`pod`; MIG instances add `GPU_I_PROFILE`/`GPU_I_ID`. Samples are grouped
by `gpu` and mapped to contract fields through the `dcgm_field` each `FieldSpec` declares, with DCGM's units
converted once here (`DCGM_TO_CONTRACT`). Series without a `gpu` label and fields the contract does not carry
are ignored. Blank values (DCGM's "not supported / not found" sentinels), NaN and ±Inf become None.

The node name is the `node` given to the constructor or else the series' `Hostname` label. The sample
timestamp is the `now_s` of the poll (dcgm-exporter sends no timestamps).
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Final

from sensors.contract import GPU_FIELDS, FieldKind, GpuReading, NodeSample, check_segment
from sensors.errors import SensorError, SensorUnavailable
from sensors.prometheus_text import Sample, parse_exposition
from sensors.source import SourceReading

# dcgm-exporter listens on :9400 and serves /metrics (its README and default `--address`).
DEFAULT_URL: Final = "http://localhost:9400/metrics"
DEFAULT_TIMEOUT_S: Final = 5.0
HTTP_OK: Final = 200

MIB_BYTES: Final = 2**20
MJ_PER_J: Final = 1000.0
# Units DCGM reports that differ from the contract's (DCGM field identifiers reference): framebuffer in
# MiB → bytes, energy in mJ → J, as (multiply, divide): contract value = DCGM value × multiply / divide.
# Everything else is already W, %, °C, MHz, counts or a bitmask.
DCGM_TO_CONTRACT: Final[Mapping[str, tuple[float, float]]] = {
    "DCGM_FI_DEV_FB_USED": (MIB_BYTES, 1),
    "DCGM_FI_DEV_FB_FREE": (MIB_BYTES, 1),
    "DCGM_FI_DEV_FB_RESERVED": (MIB_BYTES, 1),
    "DCGM_FI_DEV_FB_TOTAL": (MIB_BYTES, 1),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": (1, MJ_PER_J),
}
# Newer names DCGM gives a field the contract declares under its older name (DCGM 3.3 renamed clock
# "throttle" reasons to clock "event" reasons; dcgm_fields.h keeps both identifiers).
DCGM_FIELD_ALIASES: Final[Mapping[str, str]] = {
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
}
FB_USED: Final = "DCGM_FI_DEV_FB_USED"
FB_FREE: Final = "DCGM_FI_DEV_FB_FREE"
FB_RESERVED: Final = "DCGM_FI_DEV_FB_RESERVED"
FB_TOTAL: Final = "DCGM_FI_DEV_FB_TOTAL"
# Per-MIG-instance framebuffer series add up to the GPU's; other fields repeat the GPU-wide value.
ADDITIVE_PER_INSTANCE: Final = frozenset({FB_USED, FB_FREE, FB_RESERVED, FB_TOTAL})
MIG_INSTANCE_LABEL: Final = "GPU_I_ID"

# DCGM's blank sentinels (dcgm_structs.h, DCGM_BLANK_VALUES): INT64 values from 0x7ffffffffffffff0 up and
# FP64 values 2**47 .. 2**47+15 mean "blank / not found / not supported / not permissioned".
DCGM_INT64_BLANK: Final = 0x7FFFFFFFFFFFFFF0
DCGM_FP64_BLANK: Final = 140737488355328.0
DCGM_BLANK_SPAN: Final = 16

_CONTRACT_DCGM: Final = frozenset(f.dcgm_field for f in GPU_FIELDS if f.dcgm_field)
_KNOWN_DCGM: Final = _CONTRACT_DCGM | frozenset(DCGM_TO_CONTRACT) | frozenset(DCGM_FIELD_ALIASES)
URL_SCHEMES: Final = ("http://", "https://")


def is_dcgm_blank(value: float) -> bool:
    """True for DCGM's 'no value' sentinels and for NaN/±Inf."""
    if not math.isfinite(value):
        return True
    return value >= float(DCGM_INT64_BLANK) or DCGM_FP64_BLANK <= value < DCGM_FP64_BLANK + DCGM_BLANK_SPAN


def to_contract_unit(dcgm_field: str, value: float) -> float:
    """A DCGM value in the contract's unit (MiB → bytes, mJ → J; others unchanged)."""
    multiply, divide = DCGM_TO_CONTRACT.get(dcgm_field, (1, 1))
    return value * multiply / divide


class DcgmExporterSource:
    """Telemetry scraped from a dcgm-exporter; `read` does the HTTP request (the constructor does no I/O)."""

    def __init__(
        self, url: str = DEFAULT_URL, node: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s(={timeout_s}) must be > 0.")
        if not url.lower().startswith(URL_SCHEMES):
            raise ValueError(f"url(={url!r}) must be an http:// or https:// URL.")
        self._url = url
        self._node = check_segment("node", node) if node is not None else None
        self._timeout_s = timeout_s

    @property
    def name(self) -> str:
        return "dcgm"

    def probe(self) -> None:
        """Scrape once and parse, raising `SensorUnavailable` / `SensorError` as `read` would."""
        samples_from_exposition(self._scrape(), ts=0.0, node=self._node, origin=self._url)

    def read(self, now_s: float) -> SourceReading:
        """One scrape: a `NodeSample` per node (normally one) stamped `now_s` (unix s)."""
        text = self._scrape()
        return SourceReading(
            samples=samples_from_exposition(text, ts=now_s, node=self._node, origin=self._url)
        )

    def close(self) -> None:
        """Nothing to release: every scrape opens and closes its own connection."""

    def _scrape(self) -> str:
        try:
            with urllib.request.urlopen(self._url, timeout=self._timeout_s) as response:
                status = response.status
                body: bytes = response.read()
        except urllib.error.HTTPError as exc:
            raise SensorUnavailable(
                f"dcgm-exporter at {self._url} answered HTTP {exc.code} {exc.reason}."
            ) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise SensorUnavailable(f"dcgm-exporter at {self._url} is unreachable: {reason}.") from exc
        if status != HTTP_OK:
            raise SensorUnavailable(f"dcgm-exporter at {self._url} answered HTTP {status}.")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SensorError(f"dcgm-exporter at {self._url}: body is not UTF-8 ({exc}).") from exc


def samples_from_exposition(
    text: str, *, ts: float, node: str | None = None, origin: str = "<text>"
) -> tuple[NodeSample, ...]:
    """Map a dcgm-exporter exposition to NodeSamples at `ts` (unix s), one per node, GPUs by index.

    `node` overrides the `Hostname` label; without either, raise `SensorError`. A GPU must report
    DCGM_FI_DEV_POWER_USAGE (the contract requires `power_w`), else `SensorError` names it.
    """
    by_gpu: dict[tuple[str, int], list[Sample]] = defaultdict(list)
    uuids: dict[tuple[str, int], str] = {}
    for sample in parse_exposition(text).samples:
        if sample.name not in _KNOWN_DCGM or "gpu" not in sample.labels:
            continue
        key = (_node_of(sample, node, origin), _gpu_index(sample, origin))
        by_gpu[key].append(sample)
        if sample.labels.get("UUID"):
            uuids.setdefault(key, sample.labels["UUID"])
    nodes: dict[str, list[GpuReading]] = defaultdict(list)
    for key in sorted(by_gpu):
        nodes[key[0]].append(_reading(key[1], uuids.get(key), _values(by_gpu[key]), origin))
    return tuple(NodeSample(node=name, ts=ts, gpus=tuple(gpus)) for name, gpus in nodes.items())


def _node_of(sample: Sample, node: str | None, origin: str) -> str:
    if node is not None:
        return node
    hostname = sample.labels.get("Hostname")
    if not hostname:
        raise SensorError(
            f"{origin} line {sample.line}: {sample.name} has no Hostname label and no node name was given."
        )
    return check_segment("node (Hostname label)", hostname)


def _gpu_index(sample: Sample, origin: str) -> int:
    raw = sample.labels["gpu"]
    if not raw.isdigit():
        raise SensorError(f"{origin} line {sample.line}: label gpu(={raw!r}) must be a GPU index.")
    return int(raw)


def _values(samples: Sequence[Sample]) -> dict[str, float | None]:
    """One value per DCGM field in contract units: whole-GPU series win over MIG-instance series."""
    whole: dict[str, float | None] = {}
    per_instance: dict[str, dict[str, float | None]] = defaultdict(dict)
    for sample in samples:
        field = DCGM_FIELD_ALIASES.get(sample.name, sample.name)
        value = None if is_dcgm_blank(sample.value) else to_contract_unit(field, sample.value)
        instance = sample.labels.get(MIG_INSTANCE_LABEL)
        if instance is None:
            whole.setdefault(field, value)  # duplicates differ only by pod labels: same value
        else:
            per_instance[field].setdefault(instance, value)
    for field, instances in per_instance.items():
        if field in whole:
            continue
        present = [v for v in instances.values() if v is not None]
        if field in ADDITIVE_PER_INSTANCE:
            whole[field] = math.fsum(present) if present else None
        else:
            whole[field] = present[0] if present else None
    return whole


def _reading(index: int, uuid: str | None, values: Mapping[str, float | None], origin: str) -> GpuReading:
    fields: dict[str, Any] = {"index": index, "uuid": uuid}
    for spec in GPU_FIELDS:
        if spec.dcgm_field is None:
            continue
        value = values.get(spec.dcgm_field)
        if spec.name == "mem_total_bytes" and value is None:
            value = _total_from_parts(values)
        fields[spec.name] = None if value is None else (round(value) if spec.kind is FieldKind.INT else value)
    if fields["power_w"] is None:
        raise SensorError(
            f"{origin}: GPU {index} has no DCGM_FI_DEV_POWER_USAGE value; the contract requires power_w."
        )
    return GpuReading(**fields)


def _total_from_parts(values: Mapping[str, float | None]) -> float | None:
    """FB total when DCGM_FI_DEV_FB_TOTAL is not exported: used + free (+ reserved), in bytes."""
    used, free = values.get(FB_USED), values.get(FB_FREE)
    if used is None or free is None:
        return None
    return used + free + (values.get(FB_RESERVED) or 0.0)
