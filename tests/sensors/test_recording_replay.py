"""Recording NodeSamples and job events to CSV/Parquet, and replaying them at pace."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sensors.contract import GpuReading, JobEvent, JobEventKind, NodeSample
from sensors.errors import SensorError
from sensors.recording import TELEMETRY_COLUMNS, RecordSummary, TelemetryRecorder, events_path, record
from sensors.replay import ReplaySource
from sensors.source import Source, SourceReading

GIB = 2**30
T0 = 1_700_000_000.25


def full_gpu(index: int, power_w: float) -> GpuReading:
    return GpuReading(
        index=index,
        power_w=power_w,
        uuid=f"GPU-{index:04d}",
        energy_j=1.0e6 + 0.1 * index,
        gpu_util_pct=97.5,
        mem_util_pct=41.0,
        mem_used_bytes=70 * GIB + index,
        mem_total_bytes=80 * GIB,
        temp_c=66.25,
        sm_clock_mhz=1980.0,
        ecc_sbe_total=3,
        ecc_dbe_total=0,
        xid_last=79,
        throttle_reasons=0x4,
    )


def recorded_samples(count: int = 10, period_s: float = 1.0) -> list[NodeSample]:
    """Two nodes at 1 Hz; n2's GPU reports only the required fields (every other cell is None)."""
    samples: list[NodeSample] = []
    for k in range(count):
        ts = T0 + k * period_s
        samples.append(NodeSample("n1", ts, (full_gpu(0, 612.5 + k), full_gpu(1, 0.1 + k / 3))))
        samples.append(NodeSample("n2", ts, (GpuReading(index=0, power_w=80.0 + k),)))
    return samples


JOB_EVENTS = (
    JobEvent("job-1", JobEventKind.START, T0 + 0.5, model={"preset": "llama3-70b"}, nodes=("n1", "n2")),
    JobEvent("job-1", JobEventKind.STEP, T0 + 2.0, step=10, step_time_s=1.25, tokens=4.0e6),
    JobEvent("job-1", JobEventKind.FAIL, T0 + 9.0, step=70, reason="XID 79"),
)


def write_recording(path: Path, samples: list[NodeSample], events: tuple[JobEvent, ...] = ()) -> None:
    with TelemetryRecorder(path, chunk_rows=4) as recorder:
        for sample in samples:
            recorder.write_sample(sample)
        for event in events:
            recorder.write_event(event)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_keeps_values_and_nones(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"run{suffix}"
    samples = recorded_samples()
    write_recording(path, samples, JOB_EVENTS)
    replay = ReplaySource(path)
    assert isinstance(replay, Source) and replay.name == "replay"
    assert replay.samples == tuple(samples)
    assert replay.events == JOB_EVENTS
    assert isinstance(replay.samples[0].gpus[0].mem_used_bytes, int)
    assert isinstance(replay.samples[0].gpus[0].temp_c, float)


def test_csv_layout_is_one_row_per_gpu_with_empty_cells_for_none(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    write_recording(path, recorded_samples(count=1))
    with path.open(newline="") as file:
        rows = list(csv.reader(file))
    assert tuple(rows[0]) == TELEMETRY_COLUMNS
    assert len(rows) == 1 + 3
    n2 = dict(zip(rows[0], rows[3], strict=True))
    assert (n2["node"], n2["index"], n2["power_w"], n2["uuid"], n2["ecc_sbe_total"]) == (
        "n2",
        "0",
        "80.0",
        "",
        "",
    )


def test_parquet_schema_is_typed(tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    write_recording(path, recorded_samples(count=2))
    schema = pq.read_schema(path)
    assert schema.field("node").type == pa.string()
    assert schema.field("index").type == pa.int64() and schema.field("mem_used_bytes").type == pa.int64()
    assert schema.field("power_w").type == pa.float64()
    assert pq.read_metadata(path).num_rows == 6


def test_full_chunks_reach_the_disk_before_close(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    recorder = TelemetryRecorder(path, chunk_rows=4)
    two_gpu_samples = [s for s in recorded_samples(count=3) if s.node == "n1"]
    recorder.write_sample(two_gpu_samples[0])
    assert len(path.read_text().splitlines()) == 1  # header only: 2 rows buffered
    recorder.write_sample(two_gpu_samples[1])
    assert len(path.read_text().splitlines()) == 1 + 4  # a full chunk is written and flushed
    recorder.write_sample(two_gpu_samples[2])
    assert len(path.read_text().splitlines()) == 1 + 4  # 2 rows buffered: what a hard kill would lose
    recorder.close()
    assert len(path.read_text().splitlines()) == 1 + 6
    assert recorder.rows_written == 6


def test_interrupt_inside_with_block_still_writes_the_buffer(tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    with pytest.raises(KeyboardInterrupt), TelemetryRecorder(path, chunk_rows=1000) as recorder:
        recorder.write_sample(recorded_samples(count=1)[0])
        raise KeyboardInterrupt
    assert pq.read_metadata(path).num_rows == 2


def test_existing_files_are_not_overwritten_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    write_recording(path, recorded_samples(count=1), JOB_EVENTS[:1])
    with pytest.raises(SensorError, match=r"run\.csv exists"):
        TelemetryRecorder(path)
    path.unlink()
    with pytest.raises(SensorError, match=r"run\.events\.jsonl exists"):
        TelemetryRecorder(path)
    with TelemetryRecorder(path, overwrite=True) as recorder:
        recorder.write_sample(recorded_samples(count=1)[1])
    assert not events_path(path).exists()  # the stale events file went with the overwrite
    assert ReplaySource(path).events == ()


def test_recording_rejects_values_that_do_not_fit_their_column(tmp_path: Path) -> None:
    bad = NodeSample("n1", T0, (GpuReading(index=0, power_w=1.0, mem_used_bytes=1.5),))  # type: ignore[arg-type]
    with (
        TelemetryRecorder(tmp_path / "run.csv") as recorder,
        pytest.raises(SensorError, match="mem_used_bytes"),
    ):
        recorder.write_sample(bad)


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match=r"run\.json.*suffix"):
        TelemetryRecorder(tmp_path / "run.json")


class CountingSource:
    """A source whose every read is one single-GPU sample stamped with the read's now_s."""

    name = "counting"

    def __init__(self, read_cost_s: float, clock: list[float]) -> None:
        self.read_cost_s = read_cost_s
        self.clock = clock
        self.reads: list[float] = []

    def read(self, now_s: float) -> SourceReading:
        self.reads.append(now_s)
        self.clock[0] += self.read_cost_s
        sample = NodeSample("n1", now_s, (GpuReading(index=0, power_w=100.0),))
        event = JobEvent("job-1", JobEventKind.STEP, now_s, step=len(self.reads))
        return SourceReading(samples=(sample,), events=(event,) if len(self.reads) == 1 else ())

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("read_cost_s", "expected_reads"),
    [
        (0.0, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]),
        (0.7, [0.0, 1.0, 2.0]),  # each read overruns its slot: the missed slots are skipped
    ],
)
def test_record_polls_on_schedule(tmp_path: Path, read_cost_s: float, expected_reads: list[float]) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        assert seconds > 0
        now[0] += seconds

    source = CountingSource(read_cost_s, now)
    with TelemetryRecorder(tmp_path / "run.csv") as recorder:
        summary = record(source, recorder, duration_s=3.0, interval_s=0.5, clock=lambda: now[0], sleep=sleep)
    assert source.reads == pytest.approx(expected_reads)
    assert summary == RecordSummary(polls=len(expected_reads), gpu_rows=len(expected_reads), events=1)
    replay = ReplaySource(tmp_path / "run.csv", keep_timestamps=True)
    assert [s.ts for s in replay.samples] == pytest.approx(expected_reads)
    assert len(replay.events) == 1


def test_record_validates_its_arguments(tmp_path: Path) -> None:
    with TelemetryRecorder(tmp_path / "run.csv") as recorder:
        with pytest.raises(ValueError, match="interval_s"):
            record(CountingSource(0.0, [0.0]), recorder, duration_s=1.0, interval_s=0.0)
        with pytest.raises(ValueError, match="duration_s"):
            record(CountingSource(0.0, [0.0]), recorder, duration_s=-1.0, interval_s=1.0)


def test_replay_at_1x_releases_each_sample_at_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    write_recording(path, recorded_samples(), JOB_EVENTS)
    replay = ReplaySource(path)
    start = 5_000.0

    def released(now_s: float) -> list[tuple[str, float]]:
        return [(s.node, s.ts) for s in replay.read(now_s).samples]

    assert released(start) == [("n1", start), ("n2", start)]  # the first sample maps to start_s
    assert released(start + 0.999) == []
    assert released(start + 1.0) == [("n1", start + 1.0), ("n2", start + 1.0)]
    assert released(start + 3.5) == [(n, start + k) for k in (2.0, 3.0) for n in ("n1", "n2")]
    assert not replay.exhausted
    assert released(start + 9.0)[-1] == ("n2", start + 9.0)
    assert replay.exhausted
    assert released(start + 100.0) == []


def test_replay_at_10x_paces_and_compresses_timestamps_to_the_wall_clock(tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    write_recording(path, recorded_samples(), JOB_EVENTS)
    replay = ReplaySource(path, speed=10.0)
    start = 5_000.0
    first = replay.read(start)
    assert [s.ts for s in first.samples] == [start, start] and first.events == ()
    at_50ms = replay.read(start + 0.05)  # 0.5 recorded seconds: the start event
    assert at_50ms.samples == () and [(e.event, e.ts) for e in at_50ms.events] == [("start", start + 0.05)]
    at_350ms = replay.read(start + 0.35)  # 3.5 recorded seconds
    assert sorted({s.ts for s in at_350ms.samples}) == pytest.approx([start + 0.1, start + 0.2, start + 0.3])
    assert [e.step for e in at_350ms.events] == [10]
    rest = replay.read(start + 0.9)
    assert len(rest.samples) == 12 and [e.event for e in rest.events] == ["fail"]
    assert replay.exhausted


def test_keep_timestamps_releases_recorded_times(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    write_recording(path, recorded_samples(count=2))
    replay = ReplaySource(path, keep_timestamps=True)
    assert [s.ts for s in replay.read(10.0).samples] == [T0, T0]
    assert [s.ts for s in replay.read(11.0).samples] == [T0 + 1.0, T0 + 1.0]


def test_speed_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    write_recording(path, recorded_samples(count=1))
    with pytest.raises(ValueError, match="speed"):
        ReplaySource(path, speed=0.0)


def write_csv(path: Path, header: list[str], *rows: list[str]) -> Path:
    with path.open("w", newline="") as file:
        csv.writer(file).writerows([header, *rows])
    return path


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        (["node", "ts", "index"], ["n1", "1.0", "0"], "required column 'power_w' is missing"),
        (["node", "ts", "index", "power_w"], ["n1", "1.0", "zero", "5"], "line 2: column 'index' .*'zero'"),
        (["node", "ts", "index", "power_w"], ["n1", "1.0", "0", "hot"], "line 2: column 'power_w' .*'hot'"),
        (["node", "ts", "index", "power_w"], ["n1", "", "0", "5"], "line 2: required column 'ts' is empty"),
        (["node", "ts", "index", "power_w"], ["n1", "1.0", "0"], "line 2: 3 cells"),
        (
            ["node", "ts", "ts", "index", "power_w"],
            ["n1", "1", "1", "0", "5"],
            "\\['ts'\\] appear more than once",
        ),
    ],
)
def test_bad_csv_names_file_and_column(
    tmp_path: Path, header: list[str], row: list[str], message: str
) -> None:
    path = write_csv(tmp_path / "bad.csv", header, row)
    with pytest.raises(SensorError, match=rf"bad\.csv.*{message}"):
        ReplaySource(path)


def test_extra_columns_are_ignored_and_missing_optional_ones_are_none(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "lean.csv", ["node", "ts", "index", "power_w", "fan_pct"], ["n1", "1.5", "0", "5", "30"]
    )
    (sample,) = ReplaySource(path).samples
    assert sample == NodeSample("n1", 1.5, (GpuReading(index=0, power_w=5.0),))


def test_bad_parquet_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    table = pa.table({"node": ["n1"], "ts": [1.0], "index": [0], "power_w": ["612.5"]})
    pq.write_table(table, path)
    with pytest.raises(SensorError, match=r"bad\.parquet: column 'power_w' has type string"):
        ReplaySource(path)
    pq.write_table(pa.table({"node": ["n1"], "ts": [1.0], "power_w": [1.0]}), path)
    with pytest.raises(SensorError, match=r"bad\.parquet: required column 'index' is missing"):
        ReplaySource(path)
    pq.write_table(pa.table({"node": ["n1"], "ts": [1.0], "index": [None], "power_w": [1.0]}), path)
    with pytest.raises(SensorError, match=r"bad\.parquet row 1: required column 'index' is empty"):
        ReplaySource(path)


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(SensorError, match=r"garbage\.parquet: not a readable Parquet file"):
        ReplaySource(garbage)
    with pytest.raises(SensorError, match=r"missing\.csv: no such telemetry file"):
        ReplaySource(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SensorError, match=r"empty\.csv: empty file"):
        ReplaySource(empty)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not JSON"),
        ('{"job_id": "j", "event": "explode", "ts": 1}', "line 2: key 'event' .*'explode'"),
        ('{"job_id": "j", "event": "step", "ts": "soon"}', "line 2: key 'ts' .*'soon'"),
        ('{"event": "step", "ts": 1}', "line 2: key 'job_id'"),
        ('{"job_id": "j", "event": "step", "ts": 1, "nodes": [1]}', "line 2: key 'nodes'"),
    ],
)
def test_bad_event_lines_name_file_line_and_key(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "run.csv"
    write_recording(path, recorded_samples(count=1))
    events_path(path).write_text('{"job_id": "j", "event": "start", "ts": 1}\n' + line + "\n")
    with pytest.raises(SensorError, match=rf"run\.events\.jsonl {message}"):
        ReplaySource(path)
