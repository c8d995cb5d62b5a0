"""twin.traces: the three public traces load with their documented shapes; a file in another format, a
value that is not its column's type, a missing file or a repeated key is refused naming the file and
what was expected; records round-trip through the store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from twin.store.repository import Store
from twin.traces import (
    TRACE_FORMATS,
    TraceFormatError,
    default_traces_dir,
    import_trace,
    load_trace,
    read_trace,
    trace_path,
)

# Row counts of the shared traces (../shared/traces/README.md).
EXPECTED_ROWS = {"alibaba-2023": 8_152, "titan": 30_207, "philly": 83_154}


@pytest.fixture(scope="module")
def traces() -> Path:
    folder = default_traces_dir()
    if not folder.is_dir():
        pytest.skip(f"public traces not found at {folder} (CI clone without ../shared/traces)")
    return folder


@pytest.mark.parametrize("kind", sorted(EXPECTED_ROWS))
def test_shared_traces_load_with_their_columns(traces: Path, kind: str) -> None:
    frame = load_trace(kind, trace_path(kind, traces))
    assert len(frame) == EXPECTED_ROWS[kind]
    assert list(frame.columns) == list(TRACE_FORMATS[kind].columns)


def test_types_are_parsed(traces: Path) -> None:
    titan = load_trace("titan", trace_path("titan", traces))
    assert titan["SN"].iloc[0].startswith("0")  # a serial keeps its leading zero
    assert titan["dead"].dtype == bool and int(titan["dead"].sum()) == 5_089
    pods = load_trace("alibaba-2023", trace_path("alibaba-2023", traces))
    assert pods["num_gpu"].dtype == "int64" and pods["scheduled_time"].isna().any()


def test_a_file_in_another_format_names_the_file_and_the_expected_columns(tmp_path: Path) -> None:
    path = tmp_path / "pods.csv"
    path.write_text("name,cpu,mem\na,1,2\n")
    with pytest.raises(TraceFormatError) as error:
        load_trace("alibaba-2023", path)
    message = str(error.value)
    assert str(path) in message
    assert "missing column(s) cpu_milli" in message
    assert "expected columns: name, cpu_milli, memory_mib, num_gpu" in message
    assert "found: name, cpu, mem" in message


def test_a_value_of_the_wrong_type_names_column_and_row(tmp_path: Path) -> None:
    path = tmp_path / "runtimes.csv"
    path.write_text("runtime\n10\nfast\n")
    with pytest.raises(TraceFormatError, match=r"column 'runtime' holds 'fast' on data row 2, not a float"):
        load_trace("philly", path)
    path.write_text("runtime\n10\n\n7\n")  # a blank line is skipped by CSV; an empty field is not
    assert len(load_trace("philly", path)) == 2


def test_missing_file_unknown_kind_and_repeated_keys(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="no such trace file"):
        load_trace("philly", tmp_path / "nope.csv")
    with pytest.raises(TraceFormatError, match="must be one of alibaba-2023, titan, philly"):
        load_trace("helios", tmp_path / "nope.csv")
    header = ",".join(TRACE_FORMATS["alibaba-2023"].columns)
    row = "p1,1000,100,1,1000,,LS,Running,0,10,0"
    path = tmp_path / "pods.csv"
    path.write_text(f"{header}\n{row}\n{row}\n")
    with pytest.raises(TraceFormatError, match="repeats the value 'p1'"):
        load_trace("alibaba-2023", path)


def test_records_round_trip_through_the_store(tmp_path: Path) -> None:
    header = ",".join(TRACE_FORMATS["alibaba-2023"].columns)
    path = tmp_path / "pods.csv"
    path.write_text(f"{header}\np1,1000,100,1,1000,,LS,Running,0,10,0\np2,2000,200,0,0,,BE,Pending,5,9,\n")
    with Store.open(f"sqlite:///{tmp_path / 'twin.db'}") as store:
        result = import_trace("alibaba-2023", path, store, imported_ts=1.0)
        assert (result.rows, result.written) == (2, 2)
        assert (
            import_trace("alibaba-2023", path, store, imported_ts=2.0).written == 2
        )  # replaced, not doubled
        back = read_trace(store, "alibaba-2023")
    pd.testing.assert_frame_equal(back, load_trace("alibaba-2023", path), check_dtype=False)


def test_the_traces_folder_comes_from_the_environment_first(tmp_path: Path) -> None:
    assert default_traces_dir({"TWIN_TRACES": str(tmp_path)}) == tmp_path
    assert default_traces_dir({}).parts[-2:] == ("shared", "traces")
