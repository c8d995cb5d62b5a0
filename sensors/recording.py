"""Record telemetry and job events to files that `sensors.replay.ReplaySource` plays back.

Telemetry goes to one table, CSV or Parquet chosen by the path's suffix (`.csv`, `.parquet`): one row per
GPU sample, columns `TELEMETRY_COLUMNS` = node, ts (unix s), then every contract GPU field in contract order
and unit (W, J, %, bytes, °C, MHz, counts, bitmask). None is an empty CSV cell or a Parquet null (so an
empty-string uuid reads back as None). Job events go to a sibling JSON Lines file, `<stem>.events.jsonl`
(`events_path`), one event per line: its contract payload plus `job_id`; it is created on the first event.
Silent-node notices are not recorded.

Rows are buffered and written `chunk_rows` at a time (a Parquet row group each), and the file is flushed
after every chunk. `close()` (or leaving the `with` block, which a Ctrl-C's KeyboardInterrupt does) writes
the rest, so an interrupted recording loses nothing; a process killed outright loses the unwritten buffer
of a CSV file, and a Parquet file without its footer is unreadable (record to CSV if that matters).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

from sensors.contract import GPU_FIELD_NAMES, GPU_FIELDS_BY_NAME, FieldKind, JobEvent, NodeSample
from sensors.errors import SensorError
from sensors.source import Source, SourceReading

TELEMETRY_COLUMNS: Final = ("node", "ts", *GPU_FIELD_NAMES)
# Columns a replayable file must have (the contract's required fields plus the row's identity).
REQUIRED_COLUMNS: Final = ("node", "ts", "index", "power_w")
CSV_SUFFIX: Final = ".csv"
PARQUET_SUFFIX: Final = ".parquet"
EVENTS_SUFFIX: Final = ".events.jsonl"
# Rows per written chunk: ~30 s of a 64-node × 8-GPU cluster at 1 Hz would be 15k rows; 1,024 keeps the
# at-risk buffer small for a single node while still giving Parquet reasonably sized row groups.
DEFAULT_CHUNK_ROWS: Final = 1024

Row = tuple[Any, ...]


def column_kind(column: str) -> FieldKind:
    """The value type of a telemetry column."""
    if column == "node":
        return FieldKind.STR
    if column == "ts":
        return FieldKind.FLOAT
    return GPU_FIELDS_BY_NAME[column].kind


def table_format(path: Path) -> str:
    """'csv' or 'parquet' from the suffix, else `SensorError` naming the file."""
    suffix = path.suffix.lower()
    if suffix == CSV_SUFFIX:
        return "csv"
    if suffix == PARQUET_SUFFIX:
        return "parquet"
    raise SensorError(
        f"{path}: telemetry file suffix(={path.suffix!r}) must be {CSV_SUFFIX} or {PARQUET_SUFFIX}."
    )


def events_path(path: str | os.PathLike[str]) -> Path:
    """The job-event file recorded beside a telemetry file: `run.csv` → `run.events.jsonl`."""
    return Path(path).with_suffix(EVENTS_SUFFIX)


def parquet_schema() -> Any:
    """The Arrow schema of a telemetry Parquet file (pyarrow imported on first use)."""
    import pyarrow as pa

    arrow_type = {FieldKind.STR: pa.string(), FieldKind.FLOAT: pa.float64(), FieldKind.INT: pa.int64()}
    return pa.schema([(name, arrow_type[column_kind(name)]) for name in TELEMETRY_COLUMNS])


def _cell(column: str, value: Any) -> Any:
    """A value checked against its column's type (an integral float is accepted for an int column)."""
    if value is None:
        return None
    kind = column_kind(column)
    if kind is FieldKind.STR and isinstance(value, str):
        return value
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is FieldKind.INT and is_number and float(value).is_integer():
        return int(value)
    if kind is FieldKind.FLOAT and is_number:
        return float(value)
    raise SensorError(f"cannot record {column}(={value!r}): expected a {kind} value.")


def sample_rows(sample: NodeSample) -> list[Row]:
    """One row per GPU, in `TELEMETRY_COLUMNS` order."""
    rows: list[Row] = []
    for gpu in sample.gpus:
        values = (sample.node, sample.ts, *(getattr(gpu, name) for name in GPU_FIELD_NAMES))
        rows.append(tuple(_cell(c, v) for c, v in zip(TELEMETRY_COLUMNS, values, strict=True)))
    return rows


class _CsvTable:
    def __init__(self, path: Path) -> None:
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(TELEMETRY_COLUMNS)
        self._file.flush()

    def write(self, rows: Sequence[Row]) -> None:
        self._writer.writerows(["" if v is None else v for v in row] for row in rows)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _ParquetTable:
    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self._schema = parquet_schema()
        self._writer = pq.ParquetWriter(str(path), self._schema)

    def write(self, rows: Sequence[Row]) -> None:
        import pyarrow as pa

        columns = {name: [row[i] for row in rows] for i, name in enumerate(TELEMETRY_COLUMNS)}
        self._writer.write_table(pa.Table.from_pydict(columns, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


class TelemetryRecorder:
    """Writes NodeSamples (one row per GPU) and JobEvents to `path` and its events sibling.

    The constructor opens the telemetry file; an existing file (or events sibling) is an error unless
    `overwrite`. Use as a context manager, or call `close()`.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, chunk_rows: int = DEFAULT_CHUNK_ROWS, overwrite: bool = False
    ) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows(={chunk_rows}) must be >= 1.")
        self._path = Path(path)
        self._events_path = events_path(self._path)
        fmt = table_format(self._path)
        for existing in (self._path, self._events_path):
            if existing.exists() and not overwrite:
                raise SensorError(f"{existing} exists; pass overwrite=True to replace it.")
        self._events_path.unlink(missing_ok=True)
        self._chunk_rows = chunk_rows
        self._buffer: list[Row] = []
        self._rows_written = 0
        self._events_written = 0
        self._events_file: IO[str] | None = None
        self._closed = False
        opener: type[_CsvTable] | type[_ParquetTable] = _CsvTable if fmt == "csv" else _ParquetTable
        try:
            self._table = opener(self._path)
        except OSError as exc:
            raise SensorError(f"{self._path}: cannot open for writing ({exc}).") from exc

    @property
    def path(self) -> Path:
        return self._path

    @property
    def events_path(self) -> Path:
        return self._events_path

    @property
    def rows_written(self) -> int:
        """GPU rows accepted so far (written or buffered)."""
        return self._rows_written

    @property
    def events_written(self) -> int:
        return self._events_written

    def write(self, reading: SourceReading) -> None:
        """Record a source poll's samples and events."""
        for sample in reading.samples:
            self.write_sample(sample)
        for event in reading.events:
            self.write_event(event)

    def write_sample(self, sample: NodeSample) -> None:
        self._check_open()
        rows = sample_rows(sample)
        self._buffer.extend(rows)
        self._rows_written += len(rows)
        if len(self._buffer) >= self._chunk_rows:
            self.flush()

    def write_event(self, event: JobEvent) -> None:
        """Append one event line and flush it (events are rare and precious)."""
        self._check_open()
        try:
            line = json.dumps({"job_id": event.job_id, **event.to_payload()}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SensorError(f"cannot record job {event.job_id!r} {event.event} event: {exc}.") from exc
        if self._events_file is None:
            self._events_file = self._events_path.open("w", encoding="utf-8")
        self._events_file.write(line + "\n")
        self._events_file.flush()
        self._events_written += 1

    def flush(self) -> None:
        """Write the buffered rows as one chunk and flush the file."""
        self._check_open()
        if self._buffer:
            self._table.write(self._buffer)
            self._buffer = []

    def close(self) -> None:
        """Write what is buffered and close the files; idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._table.close()
            if self._events_file is not None:
                self._events_file.close()

    def __enter__(self) -> TelemetryRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SensorError(f"{self._path}: recorder is closed.")


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """What `record` did: polls made, GPU rows and job events recorded."""

    polls: int
    gpu_rows: int
    events: int


def record(
    source: Source,
    recorder: TelemetryRecorder,
    duration_s: float,
    interval_s: float,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> RecordSummary:
    """Poll `source` every `interval_s` seconds for `duration_s` seconds and record what it reads.

    Polls are due at start + k·interval_s for every k with k·interval_s < duration_s; a poll that overruns
    skips the slots it missed rather than bursting to catch up. `clock` gives unix seconds (the `now_s`
    passed to `source.read`); `sleep` waits. The recorder is left open (the caller owns it).
    """
    if not interval_s > 0 or not math.isfinite(interval_s):
        raise ValueError(f"interval_s(={interval_s}) must be a finite number > 0.")
    if not duration_s >= 0 or not math.isfinite(duration_s):
        raise ValueError(f"duration_s(={duration_s}) must be a finite number >= 0.")
    rows_before, events_before = recorder.rows_written, recorder.events_written
    start = clock()
    polls = 0
    slot = 0
    while slot * interval_s < duration_s:
        delay = start + slot * interval_s - clock()
        if delay > 0:
            sleep(delay)
        recorder.write(source.read(clock()))
        polls += 1
        slot = max(slot + 1, math.floor((clock() - start) / interval_s) + 1)
    return RecordSummary(polls, recorder.rows_written - rows_before, recorder.events_written - events_before)
