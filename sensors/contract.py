"""The MQTT message contract (../shared/DESIGN.md §4): topics, telemetry fields with their units, job events.

Every telemetry field is declared once, as data, with its unit, its bounds and the DCGM field it mirrors
(Home Assistant's "each sensor's unit declared as data beside it"). Sources build `NodeSample`s and
`JobEvent`s; `to_payload()` gives the contract's JSON object. The twin's decoder validates incoming
payloads against the same table, so publisher and subscriber cannot drift apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from sensors.errors import ContractError

SCHEMA_VERSION: Final = 1
DEFAULT_TOPIC_ROOT: Final = "gpu-twin/v1"
# Topic segments (cluster, node, job id): letters, digits, '_', '-', '.'; no MQTT wildcards or '/'.
SEGMENT_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
STATUS_ONLINE: Final = "online"
STATUS_OFFLINE: Final = "offline"

# Upper bound on a plausible board power: the highest-TDP accelerator we know (GB200 superchip module,
# 2,700 W, NVIDIA GB200 NVL72 datasheet) with margin. The telemetry issue names 5,000 W as "absurd".
MAX_POWER_W: Final = 5_000.0
# Largest plausible device memory: 1 TiB (B300/MI355X carry 288 GiB; margin for the next generations).
MAX_MEM_BYTES: Final = 2**40
# GPUs per node: 72 covers an NVL72 rack exposed as one node; indices above are rejected as absurd.
MAX_GPUS_PER_NODE: Final = 72
# Junction temperature bounds: NVIDIA parts throttle near 85–95 °C and shut down around 100–110 °C;
# 150 °C leaves room for sensor glitches we still want to store, below it is physical.
MIN_TEMP_C: Final = -40.0
MAX_TEMP_C: Final = 150.0
# Counters and bitmasks must fit a signed 64-bit database column (SQLite INTEGER, PostgreSQL BIGINT).
MAX_INT64: Final = 2**63 - 1
# Clock bound: no shipping GPU exceeds ~3 GHz SM clock (GPU datasheets); 10 GHz is absurd.
MAX_CLOCK_MHZ: Final = 10_000.0


class FieldKind(StrEnum):
    INT = "int"
    FLOAT = "float"
    STR = "str"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One per-GPU telemetry field: its JSON name, unit, type, bounds and the DCGM field it mirrors."""

    name: str
    unit: str
    kind: FieldKind
    required: bool = False
    min_value: float | None = None
    max_value: float | None = None
    dcgm_field: str | None = None
    description: str = ""


# The per-GPU fields of a telemetry payload, in contract order. DCGM field names from the DCGM field
# identifiers reference (docs.nvidia.com/datacenter/dcgm/latest/dcgm-api/dcgm-api-field-ids.html).
GPU_FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec("index", "", FieldKind.INT, True, 0, MAX_GPUS_PER_NODE - 1, None, "GPU index on the node"),
    FieldSpec("uuid", "", FieldKind.STR, False, None, None, None, "GPU UUID (GPU-…)"),
    FieldSpec(
        "power_w", "W", FieldKind.FLOAT, True, 0.0, MAX_POWER_W, "DCGM_FI_DEV_POWER_USAGE", "board power"
    ),
    FieldSpec(
        "energy_j",
        "J",
        FieldKind.FLOAT,
        False,
        0.0,
        None,
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "energy since driver load (DCGM reports mJ)",
    ),
    FieldSpec("gpu_util_pct", "%", FieldKind.FLOAT, False, 0.0, 100.0, "DCGM_FI_DEV_GPU_UTIL", "GPU busy"),
    FieldSpec(
        "mem_util_pct", "%", FieldKind.FLOAT, False, 0.0, 100.0, "DCGM_FI_DEV_MEM_COPY_UTIL", "memory busy"
    ),
    FieldSpec(
        "mem_used_bytes",
        "B",
        FieldKind.INT,
        False,
        0,
        MAX_MEM_BYTES,
        "DCGM_FI_DEV_FB_USED",
        "framebuffer used (DCGM reports MiB)",
    ),
    FieldSpec(
        "mem_total_bytes",
        "B",
        FieldKind.INT,
        False,
        0,
        MAX_MEM_BYTES,
        "DCGM_FI_DEV_FB_TOTAL",
        "framebuffer total (DCGM reports MiB)",
    ),
    FieldSpec(
        "temp_c", "°C", FieldKind.FLOAT, False, MIN_TEMP_C, MAX_TEMP_C, "DCGM_FI_DEV_GPU_TEMP", "GPU temp"
    ),
    FieldSpec(
        "sm_clock_mhz", "MHz", FieldKind.FLOAT, False, 0.0, MAX_CLOCK_MHZ, "DCGM_FI_DEV_SM_CLOCK", "SM clock"
    ),
    FieldSpec(
        "ecc_sbe_total",
        "count",
        FieldKind.INT,
        False,
        0,
        MAX_INT64,
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "correctable (single-bit) ECC errors since driver load",
    ),
    FieldSpec(
        "ecc_dbe_total",
        "count",
        FieldKind.INT,
        False,
        0,
        MAX_INT64,
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "uncorrectable (double-bit) ECC errors since driver load",
    ),
    FieldSpec(
        "xid_last", "", FieldKind.INT, False, 0, MAX_INT64, "DCGM_FI_DEV_XID_ERRORS", "last XID error code"
    ),
    FieldSpec(
        "throttle_reasons",
        "bitmask",
        FieldKind.INT,
        False,
        0,
        MAX_INT64,
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        "clock throttle reasons (NVML nvmlClocksEventReasons bitmask)",
    ),
)
GPU_FIELD_NAMES: Final = tuple(f.name for f in GPU_FIELDS)
GPU_FIELDS_BY_NAME: Final[Mapping[str, FieldSpec]] = {f.name: f for f in GPU_FIELDS}


def check_segment(what: str, value: str) -> str:
    """A topic segment (cluster, node, job id) or raise `ContractError` naming it."""
    if not isinstance(value, str) or not SEGMENT_PATTERN.fullmatch(value):
        raise ContractError(f"{what}(={value!r}) must match {SEGMENT_PATTERN.pattern}.")
    return value


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU at one instant. `None` means the device does not report the metric (sent as JSON null)."""

    index: int
    power_w: float
    uuid: str | None = None
    energy_j: float | None = None
    gpu_util_pct: float | None = None
    mem_util_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    temp_c: float | None = None
    sm_clock_mhz: float | None = None
    ecc_sbe_total: int | None = None
    ecc_dbe_total: int | None = None
    xid_last: int | None = None
    throttle_reasons: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in GPU_FIELD_NAMES}


@dataclass(frozen=True, slots=True)
class NodeSample:
    """One telemetry message: every GPU of one node at time `ts` (unix seconds)."""

    node: str
    ts: float
    gpus: tuple[GpuReading, ...]

    def to_payload(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "ts": self.ts,
            "node": self.node,
            "gpus": [g.to_json() for g in self.gpus],
        }


class JobEventKind(StrEnum):
    START = "start"
    STEP = "step"
    CHECKPOINT = "checkpoint"
    END = "end"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One job event (start, step, checkpoint, end, fail) with the job's model and layout."""

    job_id: str
    event: JobEventKind
    ts: float
    step: int | None = None
    step_time_s: float | None = None
    tokens: float | None = None
    model: Mapping[str, Any] | None = None
    layout: Mapping[str, Any] | None = None
    nodes: tuple[str, ...] = ()
    reason: str | None = None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"schema": SCHEMA_VERSION, "ts": self.ts, "event": str(self.event)}
        for name in ("step", "step_time_s", "tokens", "reason"):
            value = getattr(self, name)
            if value is not None:
                payload[name] = value
        if self.model is not None:
            payload["model"] = dict(self.model)
        if self.layout is not None:
            payload["layout"] = dict(self.layout)
        if self.nodes:
            payload["nodes"] = list(self.nodes)
        return payload


class TopicKind(StrEnum):
    TELEMETRY = "telemetry"
    STATUS = "status"
    JOB_EVENTS = "events"
    COMMANDS = "commands"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic taken apart: its kind, cluster and either a node or a job id."""

    kind: TopicKind
    cluster: str
    node: str | None = None
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names of one cluster under one root (a validated value type)."""

    cluster: str
    root: str = DEFAULT_TOPIC_ROOT
    _root_parts: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_segment("cluster", self.cluster)
        parts = tuple(self.root.split("/"))
        if not self.root or any(not p or p in ("+", "#") for p in parts):
            raise ContractError(f"topic root(={self.root!r}) must be non-empty segments without wildcards.")
        object.__setattr__(self, "_root_parts", parts)

    def telemetry(self, node: str) -> str:
        return f"{self.root}/{self.cluster}/{check_segment('node', node)}/telemetry"

    def status(self, node: str) -> str:
        return f"{self.root}/{self.cluster}/{check_segment('node', node)}/status"

    def commands(self, node: str) -> str:
        return f"{self.root}/{self.cluster}/{check_segment('node', node)}/commands"

    def command_outcome(self, node: str | None = None) -> str:
        """Where `node` reports what it did with a command (`sensors.commands`); None: all nodes' filter."""
        segment = "+" if node is None else check_segment("node", node)
        return f"{self.root}/{self.cluster}/{segment}/commands/outcome"

    def job_events(self, job_id: str) -> str:
        return f"{self.root}/{self.cluster}/jobs/{check_segment('job_id', job_id)}/events"

    def subscriptions(self, *, all_clusters: bool = False) -> tuple[str, ...]:
        """Filters for everything a twin ingests (telemetry, status, job events)."""
        cluster = "+" if all_clusters else self.cluster
        base = f"{self.root}/{cluster}"
        return (f"{base}/+/telemetry", f"{base}/+/status", f"{base}/jobs/+/events")


def parse_topic(topic: str, root: str = DEFAULT_TOPIC_ROOT) -> ParsedTopic:
    """Take a concrete topic apart, or raise `ContractError` saying what is wrong with its shape."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        raise ContractError(f"topic(={topic!r}) is not under the root {root!r}.")
    parts = topic[len(prefix) :].split("/")
    if len(parts) == 3 and parts[2] in (TopicKind.TELEMETRY, TopicKind.STATUS, TopicKind.COMMANDS):
        cluster, node, kind = parts
        if node == "jobs":
            raise ContractError(f"topic(={topic!r}): 'jobs' is not a node name.")
        check_segment("cluster", cluster)
        check_segment("node", node)
        return ParsedTopic(TopicKind(kind), cluster, node=node)
    if len(parts) == 4 and parts[1] == "jobs" and parts[3] == TopicKind.JOB_EVENTS:
        check_segment("cluster", parts[0])
        check_segment("job_id", parts[2])
        return ParsedTopic(TopicKind.JOB_EVENTS, parts[0], job_id=parts[2])
    raise ContractError(
        f"topic(={topic!r}) must be {root}/<cluster>/<node>/telemetry|status|commands "
        f"or {root}/<cluster>/jobs/<job_id>/events."
    )


def is_finite_number(value: object) -> bool:
    """True for int/float (not bool) values that are finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def gpu_readings_from_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[GpuReading, ...]:
    """GpuReadings from dicts keyed by contract field names (missing keys → None)."""
    return tuple(GpuReading(**{k: row.get(k) for k in GPU_FIELD_NAMES}) for row in rows)  # type: ignore[arg-type]
