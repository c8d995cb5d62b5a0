"""Decode and validate MQTT payloads against the contract (../shared/DESIGN.md §4) — the ingest hot path.

Every way a payload can be wrong maps to a short, stable reason code (`RejectReason`) plus a message that
names the field and the value, e.g. ``gpus[3].power_w(=7200.0) must be ≤ 5000.0``. Bad input never raises:
it becomes a `RejectRecord` appended to the batch, so the service counts it, stores a truncated copy and
goes on. A message-level fault (not JSON, wrong schema, bad timestamp, topic/payload node mismatch) rejects
the whole message; a fault inside one GPU's entry rejects that GPU's entry only, so good readings from the
other GPUs of the node are kept ("bad input never loses good data").

The per-GPU loop is written for speed (≈1 µs per GPU sample on this machine, see benchmarks/RESULTS.md):
values are pulled with C-level `map`, and the slow, precise diagnosis only runs once a fast check failed.
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson

from sensors.contract import (
    DEFAULT_TOPIC_ROOT,
    GPU_FIELD_NAMES,
    GPU_FIELDS,
    SCHEMA_VERSION,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    JobEventKind,
    ParsedTopic,
    TopicKind,
    check_segment,
    parse_topic,
)
from sensors.errors import ContractError
from twin.records import IngestBatch, JobEventRecord, NodeStatusRecord, RejectRecord

# Largest payload accepted: 256 KiB (the telemetry issue's limit; also `message_size_limit` in our
# mosquitto.conf). An 8-GPU telemetry message is ≈2.3 KiB, a 72-GPU one ≈21 KiB.
MAX_PAYLOAD_BYTES: Final = 256 * 1024
# How much of a rejected payload is kept in the rejects table.
REJECT_EXCERPT_BYTES: Final = 1024
# Clock skew tolerated for timestamps in the future: 5 minutes (NTP-synchronised hosts stay within
# milliseconds; a node with a broken clock must not write telemetry from the future).
MAX_FUTURE_SKEW_S: Final = 300.0
# Oldest timestamp accepted: 7 days, the default raw-telemetry retention (`twin store compact`); older
# samples would be compacted away at once. Replays of old traces keep their timestamps only if asked.
MAX_AGE_S: Final = 7 * 86_400.0
# Longest plausible step time: one day (a step longer than that is a hung job, not a measurement).
MAX_STEP_TIME_S: Final = 86_400.0


class RejectReason(StrEnum):
    NOT_JSON = "not_json"
    TOO_LARGE = "too_large"
    BAD_TOPIC = "bad_topic"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_SCHEMA = "unknown_schema"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    NODE_MISMATCH = "node_mismatch"
    TS_IN_FUTURE = "ts_in_future"
    TS_TOO_OLD = "ts_too_old"
    DUPLICATE = "duplicate"
    BAD_STATUS = "bad_status"
    BAD_EVENT = "bad_event"
    UNEXPECTED_TOPIC = "unexpected_topic"
    STORE_REFUSED = "store_refused"  # decoded fine, but the database refused the record (twin.quarantine)


class _Reject(Exception):  # noqa: N818 (internal control flow, never escapes this module)
    def __init__(self, reason: RejectReason, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


_GPU_KEYS: Final = frozenset(f.name for f in GPU_FIELDS)
# Every field in contract order in one C call: extracting an entry that sends all fields (as our sources
# and dcgm-exporter do) costs 0.21 µs instead of 0.78 µs per GPU (timeit, benchmarks/RESULTS.md).
_ALL_FIELDS: Final = operator.itemgetter(*GPU_FIELD_NAMES)
# Distinct topics whose parse is memoised (one per node and job; a cluster of 8,192 nodes fits).
_TOPIC_CACHE_SIZE: Final = 16_384
# Longest string field accepted (NVML UUIDs are 40 characters, MIG UUIDs 44).
_MAX_UUID_CHARS: Final = 128


def excerpt(payload: bytes) -> str:
    """The first REJECT_EXCERPT_BYTES of a payload, as text (undecodable bytes replaced)."""
    return payload[:REJECT_EXCERPT_BYTES].decode("utf-8", errors="replace")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(name: str, value: Any, kind: str, lo: float | None, hi: float | None) -> None:
    """Precise check of one field (slow path): raises `_Reject` naming the field and value."""
    if value is None:
        return
    if kind == "str":
        if not isinstance(value, str) or len(value) > _MAX_UUID_CHARS:
            raise _Reject(
                RejectReason.WRONG_TYPE,
                f"{name}(={value!r:.80}) must be a string of ≤{_MAX_UUID_CHARS} chars.",
                name,
            )
        return
    if not _is_number(value):
        raise _Reject(RejectReason.WRONG_TYPE, f"{name}(={value!r}) must be a number.", name)
    if kind == "int" and isinstance(value, float) and not value.is_integer():
        raise _Reject(RejectReason.WRONG_TYPE, f"{name}(={value!r}) must be an integer.", name)
    if isinstance(value, float) and not math.isfinite(value):
        raise _Reject(RejectReason.NOT_FINITE, f"{name}(={value!r}) must be finite.", name)
    if lo is not None and value < lo:
        raise _Reject(RejectReason.OUT_OF_RANGE, f"{name}(={value!r}) must be ≥ {lo}.", name)
    if hi is not None and value > hi:
        raise _Reject(RejectReason.OUT_OF_RANGE, f"{name}(={value!r}) must be ≤ {hi}.", name)


@dataclass(frozen=True, slots=True)
class DecoderSettings:
    """Limits the decoder applies; defaults are the named constants above."""

    topic_root: str = DEFAULT_TOPIC_ROOT
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_future_skew_s: float = MAX_FUTURE_SKEW_S
    max_age_s: float = MAX_AGE_S


@dataclass(slots=True)
class DecodeOutcome:
    """What one message added: GPU rows kept and rejects (message or GPU level)."""

    kind: TopicKind | None
    rows: int = 0
    rejects: int = 0
    node: str | None = None
    cluster: str | None = None
    ts: float | None = None


class Decoder:
    """Validates payloads and appends the decoded records (or rejects) to an `IngestBatch`."""

    def __init__(self, settings: DecoderSettings | None = None) -> None:
        self.settings = settings or DecoderSettings()
        root = self.settings.topic_root
        # Topics repeat (one per node), so their parse is memoised per decoder, bounded in size.
        self._parse_topic = functools.lru_cache(maxsize=_TOPIC_CACHE_SIZE)(lambda t: parse_topic(t, root))

    def decode(self, topic: str, payload: bytes, received_ts: float, out: IngestBatch) -> DecodeOutcome:
        """Decode one MQTT message into `out`. Never raises on bad input."""
        try:
            parsed = self._parse_topic(topic)
        except ContractError as exc:
            return self._reject(out, topic, payload, received_ts, _Reject(RejectReason.BAD_TOPIC, str(exc)))
        if len(payload) > self.settings.max_payload_bytes:
            reject = _Reject(
                RejectReason.TOO_LARGE,
                f"payload(={len(payload)} bytes) must be ≤ {self.settings.max_payload_bytes} bytes.",
            )
            return self._reject(out, topic, payload, received_ts, reject, parsed)
        try:
            if parsed.kind is TopicKind.TELEMETRY:
                return self._telemetry(parsed, payload, received_ts, out, topic)
            if parsed.kind is TopicKind.STATUS:
                out.statuses.append(_status(parsed, payload, received_ts))
                return DecodeOutcome(parsed.kind, node=parsed.node, cluster=parsed.cluster)
            if parsed.kind is TopicKind.JOB_EVENTS:
                out.job_events.append(self._job_event(parsed, payload, received_ts))
                return DecodeOutcome(parsed.kind, cluster=parsed.cluster)
            raise _Reject(RejectReason.UNEXPECTED_TOPIC, f"topic(={topic!r}) is twin → node; not ingested.")
        except _Reject as reject:
            return self._reject(out, topic, payload, received_ts, reject, parsed)

    @staticmethod
    def _reject(
        out: IngestBatch,
        topic: str,
        payload: bytes,
        received_ts: float,
        reject: _Reject,
        parsed: ParsedTopic | None = None,
    ) -> DecodeOutcome:
        out.rejects.append(
            RejectRecord(received_ts, topic, str(reject.reason), str(reject), excerpt(payload), reject.field)
        )
        return DecodeOutcome(parsed.kind if parsed else None, rejects=1)

    def _load_object(self, payload: bytes) -> dict[str, Any]:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise _not_json_reason(payload, exc) from None
        if not isinstance(obj, dict):
            raise _Reject(
                RejectReason.NOT_AN_OBJECT, f"payload(={excerpt(payload)[:60]!r}) must be a JSON object."
            )
        schema = obj.get("schema")
        if schema != SCHEMA_VERSION or isinstance(schema, bool):
            raise _Reject(
                RejectReason.UNKNOWN_SCHEMA, f"schema(={schema!r}) must be {SCHEMA_VERSION}.", "schema"
            )
        return obj

    def _timestamp(self, obj: dict[str, Any], received_ts: float) -> float:
        ts = obj.get("ts")
        if ts is None:
            raise _Reject(RejectReason.MISSING_FIELD, "ts is required.", "ts")
        if not _is_number(ts):
            raise _Reject(RejectReason.WRONG_TYPE, f"ts(={ts!r}) must be a number (unix seconds).", "ts")
        if not math.isfinite(ts):
            raise _Reject(RejectReason.NOT_FINITE, f"ts(={ts!r}) must be finite.", "ts")
        if ts > received_ts + self.settings.max_future_skew_s:
            raise _Reject(
                RejectReason.TS_IN_FUTURE,
                f"ts(={ts}) is {ts - received_ts:.0f} s ahead of the service clock "
                f"(≤ {self.settings.max_future_skew_s:.0f} s allowed).",
                "ts",
            )
        if ts < received_ts - self.settings.max_age_s:
            raise _Reject(
                RejectReason.TS_TOO_OLD,
                f"ts(={ts}) is {received_ts - ts:.0f} s old (≤ {self.settings.max_age_s:.0f} s allowed).",
                "ts",
            )
        return float(ts)

    def _telemetry(
        self, parsed: ParsedTopic, payload: bytes, received_ts: float, out: IngestBatch, topic: str
    ) -> DecodeOutcome:
        obj = self._load_object(payload)
        ts = self._timestamp(obj, received_ts)
        node = parsed.node
        payload_node = obj.get("node")
        if payload_node is not None and payload_node != node:
            raise _Reject(
                RejectReason.NODE_MISMATCH,
                f"node(={payload_node!r}) in the payload differs from the topic's node {node!r}.",
                "node",
            )
        unknown = set(obj) - {"schema", "ts", "node", "gpus"}
        if unknown:
            raise _Reject(
                RejectReason.UNKNOWN_FIELD, f"unknown field(s) {sorted(unknown)}.", sorted(unknown)[0]
            )
        gpus = obj.get("gpus")
        if not isinstance(gpus, list):
            raise _Reject(RejectReason.MISSING_FIELD, f"gpus(={gpus!r:.60}) must be a list.", "gpus")
        cluster = parsed.cluster
        telemetry = out.telemetry
        rejects = 0
        seen: set[int] = set()
        for position, gpu in enumerate(gpus):
            fast = _fast_row(gpu)
            if fast is not None and (index := fast[0]) not in seen:
                seen.add(index)
                telemetry.append((cluster, node, index, ts, *fast[1:]))
                continue
            row = _slow_row(position, gpu)
            if isinstance(row, _Reject):
                reject = row
            elif row[0] in seen:
                reject = _Reject(
                    RejectReason.DUPLICATE, f"gpus[{position}].index(={row[0]}) appears twice.", "index"
                )
            else:
                seen.add(row[0])
                telemetry.append((cluster, node, row[0], ts, *row[1:]))
                continue
            rejects += 1
            gpu_excerpt = excerpt(orjson.dumps(gpu, default=repr))
            out.rejects.append(
                RejectRecord(received_ts, topic, str(reject.reason), str(reject), gpu_excerpt, reject.field)
            )
        return DecodeOutcome(
            TopicKind.TELEMETRY, rows=len(seen), rejects=rejects, node=node, cluster=cluster, ts=ts
        )

    def _job_event(self, parsed: ParsedTopic, payload: bytes, received_ts: float) -> JobEventRecord:
        obj = self._load_object(payload)
        ts = self._timestamp(obj, received_ts)
        allowed = {
            "schema",
            "ts",
            "event",
            "step",
            "step_time_s",
            "tokens",
            "model",
            "layout",
            "nodes",
            "reason",
        }
        unknown = set(obj) - allowed
        if unknown:
            raise _Reject(
                RejectReason.UNKNOWN_FIELD, f"unknown field(s) {sorted(unknown)}.", sorted(unknown)[0]
            )
        event = obj.get("event")
        if event not in set(JobEventKind):
            raise _Reject(
                RejectReason.BAD_EVENT,
                f"event(={event!r}) must be one of {[str(k) for k in JobEventKind]}.",
                "event",
            )
        step = obj.get("step")
        _check_value("step", step, "int", 0, None)
        step_time_s = obj.get("step_time_s")
        _check_value("step_time_s", step_time_s, "float", 0.0, MAX_STEP_TIME_S)
        tokens = obj.get("tokens")
        _check_value("tokens", tokens, "float", 0.0, None)
        model, layout = obj.get("model"), obj.get("layout")
        for name, value in (("model", model), ("layout", layout)):
            if value is not None and not isinstance(value, dict):
                raise _Reject(RejectReason.WRONG_TYPE, f"{name}(={value!r:.60}) must be an object.", name)
        nodes = obj.get("nodes") or []
        if not isinstance(nodes, list):
            raise _Reject(
                RejectReason.WRONG_TYPE, f"nodes(={nodes!r:.60}) must be a list of node names.", "nodes"
            )
        try:
            node_names = tuple(check_segment("nodes[]", n) for n in nodes)
        except ContractError as exc:
            raise _Reject(RejectReason.WRONG_TYPE, str(exc), "nodes") from None
        reason = obj.get("reason")
        _check_value("reason", reason if reason is None else str(reason)[:129], "str", None, None)
        assert parsed.job_id is not None
        return JobEventRecord(
            cluster=parsed.cluster,
            job_id=parsed.job_id,
            event=str(event),
            ts=ts,
            step=None if step is None else int(step),
            step_time_s=None if step_time_s is None else float(step_time_s),
            tokens=None if tokens is None else float(tokens),
            model=model,
            layout=layout,
            nodes=node_names,
            reason=reason,
        )


def _compile_row_check() -> Callable[[tuple[Any, ...]], bool]:
    """Build `check(values) -> bool` over `_ROW_NAMES` (index first) with one inlined test per field.

    Generated from the field table (like `collections.namedtuple` generates its class) so the contract
    stays the single source of truth while the hot path runs straight-line comparisons (≈0.5 µs a row
    instead of ≈2 µs for a loop over the table). NaN fails every comparison, so it is rejected too.
    """
    names = [f"x{position}" for position in range(len(GPU_FIELDS))]
    lines = ["def check(v):", f"    {', '.join(names)}, = v"]  # one unpack instead of a subscript per field
    for x, spec in zip(names, GPU_FIELDS, strict=True):
        if spec.required:
            lines.append(f"    if {x} is None: return False")
            body = "    "
        else:
            lines.append(f"    if {x} is not None:")
            body = "        "
        if spec.kind == "str":
            lines.append(f"{body}if type({x}) is not str or len({x}) > {_MAX_UUID_CHARS}: return False")
            continue
        if spec.kind == "int":
            lines.append(f"{body}if type({x}) is not int: return False")
        else:
            lines.append(f"{body}if type({x}) is not float and type({x}) is not int: return False")
        low = f"{spec.min_value!r} <= " if spec.min_value is not None else ""
        high = f" <= {spec.max_value!r}" if spec.max_value is not None else ""
        condition = f"{low}{x}{high}" if low or high else f"{x} == {x}"  # chained; NaN fails it
        lines.append(f"{body}if not ({condition}): return False")
    lines.append("    return True")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<twin.decode row check>", "exec"), namespace)
    check: Callable[[tuple[Any, ...]], bool] = namespace["check"]
    return check


_row_ok: Final = _compile_row_check()


def _fast_row(gpu: Any) -> tuple[Any, ...] | None:
    """The entry's values in contract order (index first) when valid as sent, else None.

    None sends the entry to `_slow_row`, which either normalises it (an integral float in an integer
    field, e.g. `0.0` ECC errors) or says precisely what is wrong.
    """
    if type(gpu) is not dict:
        return None
    if len(gpu) == len(GPU_FIELD_NAMES):
        try:
            row: tuple[Any, ...] = _ALL_FIELDS(gpu)  # as many keys as fields, all found: exactly the fields
        except KeyError:  # an unknown key in place of a known one
            return None
    elif gpu.keys() <= _GPU_KEYS:
        row = tuple(map(gpu.get, GPU_FIELD_NAMES))
    else:
        return None
    return row if _row_ok(row) else None


def _slow_row(position: int, gpu: Any) -> tuple[Any, ...] | _Reject:
    """A normalised row for an entry the fast path refused, or the reject saying which field is wrong."""
    prefix = f"gpus[{position}]"
    if not isinstance(gpu, dict):
        return _Reject(RejectReason.WRONG_TYPE, f"{prefix}(={gpu!r:.80}) must be an object.", prefix)
    unknown = sorted(set(gpu) - _GPU_KEYS)
    if unknown:
        return _Reject(RejectReason.UNKNOWN_FIELD, f"{prefix} has unknown field(s) {unknown}.", unknown[0])
    for required in ("index", "power_w"):
        if gpu.get(required) is None:
            return _Reject(RejectReason.MISSING_FIELD, f"{prefix}.{required} is required.", required)
    values: list[Any] = []
    for spec in GPU_FIELDS:
        value = gpu.get(spec.name)
        try:
            _check_value(f"{prefix}.{spec.name}", value, spec.kind, spec.min_value, spec.max_value)
        except _Reject as reject:
            reject.field = spec.name
            return reject
        values.append(int(value) if spec.kind == "int" and value is not None else value)
    return tuple(values)


def _status(parsed: ParsedTopic, payload: bytes, received_ts: float) -> NodeStatusRecord:
    text = payload.strip().decode("utf-8", errors="replace")
    if text not in (STATUS_ONLINE, STATUS_OFFLINE):
        raise _Reject(
            RejectReason.BAD_STATUS,
            f"status(={text[:40]!r}) must be {STATUS_ONLINE!r} or {STATUS_OFFLINE!r}.",
        )
    assert parsed.node is not None
    return NodeStatusRecord(parsed.cluster, parsed.node, text, received_ts)


def _not_json_reason(payload: bytes, exc: Exception) -> _Reject:
    """orjson is strict (RFC 8259): tell NaN/Infinity apart from plain garbage with the lenient parser."""
    found: list[str] = []

    def constant(name: str) -> float:
        found.append(name)
        return math.nan

    try:
        json.loads(payload, parse_constant=constant)
    except (ValueError, RecursionError):
        return _Reject(RejectReason.NOT_JSON, f"payload is not JSON: {exc}.")
    if found:
        return _Reject(RejectReason.NOT_FINITE, f"payload contains a non-finite number ({found[0]}).")
    return _Reject(RejectReason.NOT_JSON, f"payload is not strict JSON: {exc}.")
