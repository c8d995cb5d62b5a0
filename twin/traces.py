"""Importers for the public GPU-cluster traces the predictors are evaluated on (../shared/traces).

`load_trace(kind, path)` reads one trace file into a DataFrame whose columns are checked against the
trace's format (names, and that every value parses as its type); a file in another format raises
`TraceFormatError` naming the file and the expected columns. `import_trace` also writes the records to
the store (table `trace_records`, one JSON document per record, keyed by the trace's own key), and
`read_trace` reads them back as the same DataFrame.

Formats (../shared/traces/README.md):
- `alibaba-2023`: alibaba-gpu-v2023-openb/openb_pod_list_default.csv — one row per pod: request (CPU
  milli-cores, memory MiB, GPUs, milli-GPU), QoS, phase, creation/scheduled/deletion times (s from the
  trace start). Weng et al., USENIX ATC'23.
- `titan`: olcf-titan-gpu-life/gc_summary_loc.csv — one row per GPU of OLCF Titan: serial, position,
  batch, lifetime (`years`, right-censored) and whether and how it died. Ostrouchov et al., SC'20.
- `philly`: philly-derived/philly_runtime_from_alibaba_repo.csv — job runtimes (s) of Microsoft's
  Philly cluster (Jeon et al., USENIX ATC'19), one column.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from twin.errors import TwinError

if TYPE_CHECKING:
    import pandas as pd

    from twin.store.repository import Store

# Where the traces live unless --traces or TWIN_TRACES says otherwise: ../shared/traces beside the checkout.
TRACES_ENV: Final = "TWIN_TRACES"
# Records per INSERT (4 columns each: far below SQLite's 32,766 bound parameters).
WRITE_CHUNK_ROWS: Final = 2_000


class TraceFormatError(TwinError, ValueError):
    """A trace file cannot be read as the expected format; the message names the file and the columns."""


@dataclass(frozen=True, slots=True)
class TraceFormat:
    """A trace's file (relative to the traces folder), its columns → type, and the record key column.

    Types: `int` and `float` (a number on every row), `float?` and `str?` (may be empty), `str`, `bool`
    (TRUE/FALSE). `key=None` keys records by row number.
    """

    name: str
    relative_path: str
    columns: Mapping[str, str]
    key: str | None

    def expected(self) -> str:
        return ", ".join(self.columns)


TRACE_FORMATS: Final[Mapping[str, TraceFormat]] = {
    "alibaba-2023": TraceFormat(
        "alibaba-2023",
        "alibaba-gpu-v2023-openb/openb_pod_list_default.csv",
        {
            "name": "str",
            "cpu_milli": "int",
            "memory_mib": "int",
            "num_gpu": "int",
            "gpu_milli": "int",
            "gpu_spec": "str?",
            "qos": "str",
            "pod_phase": "str",
            "creation_time": "float",
            "deletion_time": "float",
            "scheduled_time": "float?",
        },
        key="name",
    ),
    "titan": TraceFormat(
        "titan",
        "olcf-titan-gpu-life/gc_summary_loc.csv",
        {
            "SN": "str",
            "time": "float",
            "nlife": "int",
            "nloc": "int",
            "last": "str",
            "col": "int",
            "row": "int",
            "cage": "int",
            "slot": "int",
            "node": "int",
            "max_loc_events": "int",
            "time_max_loc": "float?",
            "dbe": "int",
            "dbe_loc": "str?",
            "otb": "int",
            "otb_loc": "str?",
            "out": "bool",
            "batch": "str",
            "days": "float",
            "years": "float",
            "dead": "bool",
            "dead_otb": "bool",
            "dead_dbe": "bool",
        },
        key="SN",
    ),
    "philly": TraceFormat(
        "philly", "philly-derived/philly_runtime_from_alibaba_repo.csv", {"runtime": "float"}, key=None
    ),
}
TRACE_KINDS: Final = tuple(TRACE_FORMATS)
_BOOLS: Final = {"true": True, "false": False}


def default_traces_dir(environ: Mapping[str, str] | None = None) -> Path:
    """$TWIN_TRACES, else ../shared/traces beside the checkout (where CI puts shared/)."""
    env = os.environ if environ is None else environ
    if env.get(TRACES_ENV):
        return Path(env[TRACES_ENV])
    return Path(__file__).resolve().parents[2] / "shared" / "traces"


def trace_format(kind: str) -> TraceFormat:
    """The format of `kind`, or `TraceFormatError` listing the known kinds."""
    if kind not in TRACE_FORMATS:
        raise TraceFormatError(f"trace kind(={kind!r}) must be one of {', '.join(TRACE_KINDS)}.")
    return TRACE_FORMATS[kind]


def trace_path(kind: str, traces_dir: Path) -> Path:
    """The file of trace `kind` inside `traces_dir`."""
    return traces_dir / trace_format(kind).relative_path


def load_trace(kind: str, path: str | Path) -> pd.DataFrame:
    """Read trace `kind` from `path` and check every column (see `TraceFormat`).

    Raises `TraceFormatError` for a missing/unreadable file, a missing column (naming the file and the
    expected columns) or a value that does not parse as its column's type (naming file, column and row).
    """
    import pandas as pd

    fmt = trace_format(kind)
    path = Path(path)
    if not path.is_file():
        raise TraceFormatError(
            f"{path}: no such trace file (expected the {kind} trace, {fmt.relative_path})."
        )
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        raise TraceFormatError(
            f"{path}: cannot be read as CSV ({type(exc).__name__}: {exc}); expected the {kind} trace with "
            f"columns {fmt.expected()}."
        ) from None
    found = [str(c).strip() for c in frame.columns]
    frame.columns = found
    missing = [c for c in fmt.columns if c not in found]
    if missing:
        raise TraceFormatError(
            f"{path}: not the {kind} trace format — missing column(s) {', '.join(missing)}; "
            f"expected columns: {fmt.expected()}; found: {', '.join(found) or '(none)'}."
        )
    out = pd.DataFrame(index=frame.index)
    for name, kind_of in fmt.columns.items():
        out[name] = _parse_column(path, name, kind_of, frame[name])
    if fmt.key is not None and out[fmt.key].duplicated().any():
        dup = out[fmt.key][out[fmt.key].duplicated()].iloc[0]
        raise TraceFormatError(
            f"{path}: key column {fmt.key!r} repeats the value {dup!r}; keys must be unique."
        )
    return out


def _parse_column(path: Path, name: str, kind_of: str, values: pd.Series) -> pd.Series:
    import numpy as np
    import pandas as pd

    optional = kind_of.endswith("?")
    base = kind_of.rstrip("?")
    text = values.str.strip()
    empty = text.isna() | (text == "")
    if not optional and empty.any():
        row = int(empty.to_numpy().nonzero()[0][0])
        raise TraceFormatError(
            f"{path}: column {name!r} is empty on data row {row + 1}; it must be a {base}."
        )
    if base == "str":
        return text.where(~empty, None)
    if base == "bool":
        parsed = text.str.lower().map(_BOOLS)
        bad = parsed.isna() & ~empty
    else:
        parsed = pd.to_numeric(text, errors="coerce")
        finite = np.isfinite(parsed.fillna(0.0).to_numpy(dtype=np.float64))
        bad = (parsed.isna() & ~empty) | ~finite
        if base == "int":
            bad |= parsed.notna() & (parsed != parsed.round())
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise TraceFormatError(
            f"{path}: column {name!r} holds {values.iloc[row]!r} on data row {row + 1}, not a {base}."
        )
    if base == "int" and not optional:
        return parsed.astype("int64")
    if base == "bool":
        return parsed.astype(bool) if not optional else parsed
    return parsed.astype("float64")


# ---------------------------------------------------------------------------------------------- store


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What `import_trace` did: the rows read, and how many records were written to the store."""

    kind: str
    path: str
    rows: int
    written: int


def _records(kind: str, frame: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
    fmt = trace_format(kind)
    columns = list(fmt.columns)
    values = [frame[c].tolist() for c in columns]
    records = []
    for i, row in enumerate(zip(*values, strict=True)):
        data = {c: _plain(v) for c, v in zip(columns, row, strict=True)}
        key = str(data[fmt.key]) if fmt.key is not None else f"{i:09d}"
        records.append((key, data))
    return records


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)
    return _plain(item()) if callable(item) else value


def write_trace(store: Store, kind: str, frame: pd.DataFrame, imported_ts: float) -> int:
    """Write `frame` (from `load_trace`) as the records of dataset `kind`, replacing stored ones."""
    from sqlalchemy import Table
    from sqlalchemy.dialects import postgresql, sqlite

    from twin.store.schema import TRACE_KEY_CHARS, TraceRecordRow

    table = cast(Table, TraceRecordRow.__table__)
    insert = sqlite.insert if store.dialect == "sqlite" else postgresql.insert
    rows = [
        {
            "dataset": kind,
            "record_key": key[:TRACE_KEY_CHARS],
            "imported_ts": float(imported_ts),
            "data": data,
        }
        for key, data in _records(kind, frame)
    ]
    with store.begin() as conn:
        for start in range(0, len(rows), WRITE_CHUNK_ROWS):
            stmt = insert(table)
            stmt = stmt.on_conflict_do_update(
                index_elements=["dataset", "record_key"],
                set_={"imported_ts": stmt.excluded.imported_ts, "data": stmt.excluded.data},
            )
            conn.execute(stmt, rows[start : start + WRITE_CHUNK_ROWS])
    return len(rows)


def read_trace(store: Store, kind: str) -> pd.DataFrame:
    """The stored records of dataset `kind` as `load_trace` returns them (in record-key order)."""
    import pandas as pd
    from sqlalchemy import Table, select

    from twin.store.schema import TraceRecordRow

    fmt = trace_format(kind)
    table = cast(Table, TraceRecordRow.__table__)
    query = select(table.c.data).where(table.c.dataset == kind).order_by(table.c.record_key)
    with store.engine.connect() as conn:
        records = [row[0] for row in conn.execute(query)]
    frame = pd.DataFrame.from_records(records, columns=list(fmt.columns))
    for name, kind_of in fmt.columns.items():
        if kind_of == "int":
            frame[name] = frame[name].astype("int64")
        elif kind_of.startswith("float"):
            frame[name] = pd.to_numeric(frame[name]).astype("float64")
        elif kind_of == "bool":
            frame[name] = frame[name].astype(bool)
        else:  # text, missing values kept missing (as `load_trace` gives them)
            frame[name] = frame[name].astype(pd.StringDtype(na_value=float("nan")))
    return frame


def import_trace(
    kind: str, path: str | Path, store: Store | None = None, *, imported_ts: float = 0.0
) -> ImportResult:
    """Load trace `kind` from `path` (see `load_trace`) and, with a store, write its records there."""
    frame = load_trace(kind, path)
    written = write_trace(store, kind, frame, imported_ts) if store is not None else 0
    return ImportResult(kind, str(path), len(frame), written)
