"""Replay a recording (`sensors.recording`) as a live source, at any speed.

The constructor reads the whole telemetry file (CSV or Parquet, by suffix) and its `<stem>.events.jsonl`
sibling if present, groups GPU rows back into one `NodeSample` per (node, ts) and orders everything by
recorded time. The first `read(now_s)` fixes `start_s = now_s`; each read then releases every sample and
event not yet released whose recorded offset from the first sample's ts is ≤ (now_s − start_s)·speed.
Released timestamps are mapped to the wall clock of their release, start_s + offset/speed, unless
`keep_timestamps`: at speed 10 a recorded hour is published, with timestamps, over six minutes. They must
not run ahead of the wall clock, because the twin rejects telemetry from the future (twin.decode); the
price is that energy counters and step times advance `speed` times faster than the timestamps.

A malformed file raises `SensorError` naming the file, the row or line, and the column.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from sensors.contract import GPU_FIELD_NAMES, FieldKind, GpuReading, JobEvent, JobEventKind, NodeSample
from sensors.errors import SensorError
from sensors.recording import REQUIRED_COLUMNS, TELEMETRY_COLUMNS, column_kind, events_path, table_format
from sensors.source import SourceReading

# Release tolerance: unix-second floats near 1.7e9 carry ~2.4e-7 s of rounding (float64 spacing), so an
# offset equal to the elapsed time on paper may exceed it by that much after subtraction.
RELEASE_TOLERANCE_S: Final = 1e-6
_EVENT_NUMBERS: Final = ("step_time_s", "tokens")


class ReplaySource:
    """A recorded telemetry file played back against the caller's clock (`name == "replay"`)."""

    def __init__(
        self, path: str | os.PathLike[str], speed: float = 1.0, keep_timestamps: bool = False
    ) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ValueError(f"speed(={speed}) must be a finite number > 0.")
        self._path = Path(path)
        self._speed = speed
        self._keep_timestamps = keep_timestamps
        self._samples = load_samples(self._path)
        sibling = events_path(self._path)
        self._events = load_events(sibling) if sibling.exists() else ()
        first = self._samples[0].ts if self._samples else (self._events[0].ts if self._events else 0.0)
        self._first_ts = first
        self._start_s: float | None = None
        self._next_sample = 0
        self._next_event = 0

    @property
    def name(self) -> str:
        return "replay"

    @property
    def exhausted(self) -> bool:
        """True once every recorded sample and event has been released."""
        return self._next_sample >= len(self._samples) and self._next_event >= len(self._events)

    @property
    def samples(self) -> tuple[NodeSample, ...]:
        """Every recorded sample with its recorded timestamp, in time order."""
        return self._samples

    @property
    def events(self) -> tuple[JobEvent, ...]:
        return self._events

    def read(self, now_s: float) -> SourceReading:
        """What is due by `now_s` (unix s) and not yet released."""
        if self._start_s is None:
            self._start_s = now_s
        horizon = (now_s - self._start_s) * self._speed + RELEASE_TOLERANCE_S
        keep = self._keep_timestamps
        start, first, speed = self._start_s, self._first_ts, self._speed
        samples: list[NodeSample] = []
        while self._next_sample < len(self._samples):
            sample = self._samples[self._next_sample]
            if sample.ts - self._first_ts > horizon:
                break
            samples.append(sample if keep else replace(sample, ts=start + (sample.ts - first) / speed))
            self._next_sample += 1
        events: list[JobEvent] = []
        while self._next_event < len(self._events):
            event = self._events[self._next_event]
            if event.ts - self._first_ts > horizon:
                break
            events.append(event if keep else replace(event, ts=start + (event.ts - first) / speed))
            self._next_event += 1
        return SourceReading(samples=tuple(samples), events=tuple(events))

    def close(self) -> None:
        """Nothing to release: the file was read whole by the constructor."""


def load_samples(path: Path) -> tuple[NodeSample, ...]:
    """A telemetry file's NodeSamples, one per (node, ts), ordered by ts (file order among equals)."""
    if not path.is_file():
        raise SensorError(f"{path}: no such telemetry file.")
    rows = _read_csv(path) if table_format(path) == "csv" else _read_parquet(path)
    grouped: dict[tuple[str, float], list[GpuReading]] = {}
    for values in rows:
        fields: dict[str, Any] = {name: values.get(name) for name in GPU_FIELD_NAMES}
        reading = GpuReading(**fields)
        grouped.setdefault((values["node"], values["ts"]), []).append(reading)
    samples = [NodeSample(node=node, ts=ts, gpus=tuple(gpus)) for (node, ts), gpus in grouped.items()]
    return tuple(sorted(samples, key=lambda s: s.ts))


def _check_header(path: Path, columns: Sequence[str]) -> None:
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            raise SensorError(f"{path}: required column {column!r} is missing (columns: {list(columns)}).")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise SensorError(f"{path}: column(s) {duplicates} appear more than once.")


def _check_required(path: Path, where: str, values: Mapping[str, Any]) -> None:
    for column in REQUIRED_COLUMNS:
        if values.get(column) is None:
            raise SensorError(f"{path} {where}: required column {column!r} is empty.")


def _parse_cell(path: Path, where: str, column: str, text: str) -> Any:
    if text == "":
        return None
    kind = column_kind(column)
    try:
        if kind is FieldKind.STR:
            return text
        if kind is FieldKind.INT:
            return int(text)
        return float(text)
    except ValueError:
        raise SensorError(f"{path} {where}: column {column!r} value(={text!r}) is not a {kind}.") from None


def _read_csv(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8") as file:
            table = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SensorError(f"{path}: not a readable CSV file ({exc}).") from exc
    if not table:
        raise SensorError(f"{path}: empty file, expected a header row {list(TELEMETRY_COLUMNS)}.")
    header = table[0]
    _check_header(path, header)
    known = [(i, c) for i, c in enumerate(header) if c in TELEMETRY_COLUMNS]
    rows: list[dict[str, Any]] = []
    for number, cells in enumerate(table[1:], start=2):
        where = f"line {number}"
        if len(cells) != len(header):
            raise SensorError(f"{path} {where}: {len(cells)} cells, the header has {len(header)} columns.")
        values = {c: _parse_cell(path, where, c, cells[i]) for i, c in known}
        _check_required(path, where, values)
        rows.append(values)
    return rows


def _arrow_type_fits(kind: FieldKind, arrow_type: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_null(arrow_type):
        return True
    if kind is FieldKind.STR:
        return bool(pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))
    if kind is FieldKind.INT:
        return bool(pa.types.is_integer(arrow_type))
    return bool(pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type))


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise SensorError(f"{path}: not a readable Parquet file ({exc}).") from exc
    _check_header(path, table.column_names)
    columns: dict[str, list[Any]] = {}
    for name in table.column_names:
        if name not in TELEMETRY_COLUMNS:
            continue
        kind = column_kind(name)
        arrow_type = table.schema.field(name).type
        if not _arrow_type_fits(kind, arrow_type):
            raise SensorError(f"{path}: column {name!r} has type {arrow_type}, expected {kind} values.")
        values = table.column(name).to_pylist()
        columns[name] = [float(v) if kind is FieldKind.FLOAT and v is not None else v for v in values]
    rows: list[dict[str, Any]] = []
    for i in range(table.num_rows):
        values = {name: column[i] for name, column in columns.items()}
        _check_required(path, f"row {i + 1}", values)
        rows.append(values)
    return rows


def load_events(path: Path) -> tuple[JobEvent, ...]:
    """A JSON Lines event file's JobEvents ordered by ts (file order among equals)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SensorError(f"{path}: not a readable events file ({exc}).") from exc
    events = [_event(path, number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    return tuple(sorted(events, key=lambda e: e.ts))


def _event(path: Path, number: int, line: str) -> JobEvent:
    where = f"{path} line {number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SensorError(f"{where}: not JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise SensorError(f"{where}: expected a JSON object, got {type(data).__name__}.")

    def typed(key: str, types: type | tuple[type, ...], required: bool = False) -> Any:
        value = data.get(key)
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, types):
            raise SensorError(f"{where}: key {key!r} value(={value!r}) has the wrong type.")
        return value

    try:
        kind = JobEventKind(typed("event", str, required=True))
    except ValueError:
        raise SensorError(f"{where}: key 'event' value(={data.get('event')!r}) is not a job event.") from None
    nodes = typed("nodes", list) or []
    if not all(isinstance(n, str) for n in nodes):
        raise SensorError(f"{where}: key 'nodes' value(={nodes!r}) must be a list of node names.")
    numbers = {k: None if (v := typed(k, (int, float))) is None else float(v) for k in _EVENT_NUMBERS}
    return JobEvent(
        job_id=typed("job_id", str, required=True),
        event=kind,
        ts=float(typed("ts", (int, float), required=True)),
        step=typed("step", int),
        model=typed("model", dict),
        layout=typed("layout", dict),
        nodes=tuple(nodes),
        reason=typed("reason", str),
        **numbers,
    )
