"""compact(): 1-minute rollups with the right numbers, raw rows deleted, reruns and late samples."""

from __future__ import annotations

import pytest

from tests.store import sample
from twin.records import IngestBatch
from twin.store.compact import compact
from twin.store.repository import Store
from twin.store.urls import StoreError

M0 = 1_700_000_040.0  # a whole minute (1,700,000,040 = 28,333,334 × 60)
DAY = 86_400.0


def two_minutes(store: Store) -> None:
    """120 samples of GPU 0, one per second from M0: power 100 + i W, energy 1000 + 10·i J, temp 60 + i%60."""
    rows = [
        sample(
            "n01",
            0,
            M0 + i,
            power_w=100.0 + i,
            energy_j=1000.0 + 10 * i,
            temp_c=60.0 + i % 60,
            mem_used_bytes=10 + i,
            xid_last=79 if i == 30 else None,
            throttle_reasons=4 if i % 2 else 0,
            gpu_util_pct=None,
        )
        for i in range(120)
    ]
    store.write_batch(IngestBatch(telemetry=rows))


def test_two_minutes_of_samples_make_two_rollups(store: Store) -> None:
    two_minutes(store)
    result = compact(store, now_s=M0 + 200, retention_s=0)
    assert (result.cutoff_ts, result.rollups_written, result.raw_deleted) == (M0 + 180, 2, 120)
    frame = store.rollup_frame()
    assert frame["minute_ts"].tolist() == [M0, M0 + 60]
    assert frame["samples"].tolist() == [60, 60]
    assert frame["power_mean_w"].tolist() == [129.5, 189.5]  # mean of 100..159, of 160..219
    assert frame["power_min_w"].tolist() == [100.0, 160.0]
    assert frame["power_max_w"].tolist() == [159.0, 219.0]
    assert frame["energy_first_j"].tolist() == [1000.0, 1600.0]
    assert frame["energy_last_j"].tolist() == [1590.0, 2190.0]
    assert frame["temp_mean_c"].tolist() == [89.5, 89.5]
    assert frame["temp_max_c"].tolist() == [119.0, 119.0]
    assert frame["mem_used_max_bytes"].tolist() == [69, 129]
    assert frame["throttled_samples"].tolist() == [30, 30]
    assert frame["first_ts"].tolist() == [M0, M0 + 60] and frame["last_ts"].tolist() == [M0 + 59, M0 + 119]
    assert frame["xid_last"].tolist()[0] == 79 and frame["xid_last"].isna().tolist()[1]
    assert frame["gpu_util_mean_pct"].isna().all()  # never reported → NULL, not 0
    assert store.telemetry_frame().empty


def test_rerunning_counts_nothing_twice(store: Store) -> None:
    two_minutes(store)
    compact(store, now_s=M0 + 200, retention_s=0)
    before = store.rollup_frame()
    again = compact(store, now_s=M0 + 200, retention_s=0)
    assert (again.rollups_written, again.raw_deleted) == (0, 0)
    assert store.rollup_frame().equals(before)


def test_only_whole_minutes_older_than_the_retention_are_compacted(store: Store) -> None:
    two_minutes(store)
    result = compact(store, now_s=M0 + 90 + DAY, retention_s=DAY)  # horizon M0 + 90 → minute M0 + 60
    assert (result.cutoff_ts, result.rollups_written, result.raw_deleted) == (M0 + 60, 1, 60)
    raw = store.telemetry_frame()
    assert (len(raw), raw["ts"].min()) == (60, M0 + 60)
    assert store.rollup_frame()["minute_ts"].tolist() == [M0]


def test_a_late_sample_is_merged_into_its_minute(store: Store) -> None:
    two_minutes(store)
    compact(store, now_s=M0 + 200, retention_s=0)
    late = sample("n01", 0, M0 + 0.5, power_w=1000.0, energy_j=999.0, temp_c=None, xid_last=13)
    store.write_batch(IngestBatch(telemetry=[late]))
    result = compact(store, now_s=M0 + 200, retention_s=0)
    assert (result.rollups_written, result.raw_deleted) == (1, 1)
    first = store.rollup_frame().iloc[0]
    assert first["samples"] == 61
    assert first["power_mean_w"] == pytest.approx((129.5 * 60 + 1000.0) / 61)
    assert (first["power_max_w"], first["temp_mean_c"]) == (1000.0, 89.5)  # the late sample has no temp
    assert (first["energy_first_j"], first["xid_last"]) == (1000.0, 79)  # not earlier, not newer


def test_small_chunks_give_the_same_rollups(store: Store) -> None:
    two_minutes(store)
    store.write_batch(IngestBatch(telemetry=[sample("n02", 1, M0 + 600)]))  # a gap of minutes
    result = compact(store, now_s=M0 + 700, retention_s=0, chunk_s=60)
    assert (result.windows, result.rollups_written, result.raw_deleted) == (3, 3, 121)
    frame = store.rollup_frame()
    assert frame[["node", "minute_ts", "samples"]].values.tolist() == [
        ["n01", M0, 60],
        ["n01", M0 + 60, 60],
        ["n02", M0 + 600, 1],
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"now_s": float("nan"), "retention_s": 0}, r"now_s\(=nan\)"),
        ({"now_s": M0, "retention_s": -1}, r"retention_s\(=-1\)"),
        ({"now_s": M0, "retention_s": 0, "chunk_s": 90}, r"chunk_s\(=90\)"),
    ],
)
def test_bad_arguments_are_named(store: Store, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(StoreError, match=message):
        compact(store, **kwargs)
