"""The decoder: every kind of bad input becomes a reject naming the field; good data is never lost."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.contract import GPU_FIELD_NAMES, GpuReading, NodeSample
from twin.decode import MAX_PAYLOAD_BYTES, Decoder, RejectReason
from twin.records import COL, IngestBatch

NOW = 1_790_000_000.0
TOPIC = "gpu-twin/v1/c1/n01/telemetry"


def gpu(index: int = 0, **overrides: Any) -> dict[str, Any]:
    reading = GpuReading(
        index=index,
        power_w=612.5,
        uuid=f"GPU-{index:08d}-0000-0000-0000-000000000000",
        energy_j=1.5e9,
        gpu_util_pct=97.0,
        mem_util_pct=41.0,
        mem_used_bytes=70_000_000_000,
        mem_total_bytes=85_899_345_920,
        temp_c=67.5,
        sm_clock_mhz=1980.0,
        ecc_sbe_total=0,
        ecc_dbe_total=0,
        xid_last=None,
        throttle_reasons=0,
    ).to_json()
    reading.update(overrides)
    return reading


def payload(gpus: list[Any] | None = None, **overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "schema": 1,
        "ts": NOW - 1.0,
        "node": "n01",
        "gpus": [gpu(0), gpu(1)] if gpus is None else gpus,
    }
    body.update(overrides)
    return orjson.dumps(body)


def decode(data: bytes, topic: str = TOPIC) -> IngestBatch:
    batch = IngestBatch()
    Decoder().decode(topic, data, NOW, batch)
    return batch


def only_reject(batch: IngestBatch) -> tuple[str, str, str | None]:
    assert len(batch.rejects) == 1, batch.rejects
    reject = batch.rejects[0]
    return reject.reason, reject.message, reject.field


def test_a_valid_message_yields_one_row_per_gpu_with_contract_values() -> None:
    batch = decode(payload())
    assert not batch.rejects
    assert len(batch.telemetry) == 2
    row = batch.telemetry[1]
    assert row[COL["cluster"]] == "c1" and row[COL["node"]] == "n01" and row[COL["gpu_index"]] == 1
    assert row[COL["power_w"]] == 612.5 and row[COL["mem_total_bytes"]] == 85_899_345_920
    assert row[COL["xid_last"]] is None


def test_the_node_sample_publishers_build_decodes_losslessly() -> None:
    sample = NodeSample("n01", NOW - 2.0, (GpuReading(index=3, power_w=88.0, temp_c=31.0),))
    batch = decode(orjson.dumps(sample.to_payload()))
    assert [r[COL["gpu_index"]] for r in batch.telemetry] == [3]
    assert batch.telemetry[0][COL["temp_c"]] == 31.0 and batch.telemetry[0][COL["energy_j"]] is None


def test_non_json_is_rejected_as_not_json() -> None:
    reason, message, _ = only_reject(decode(b"{not json"))
    assert reason == RejectReason.NOT_JSON and "not JSON" in message


def test_nan_and_infinity_are_rejected_as_not_finite() -> None:
    text = json.dumps({"schema": 1, "ts": NOW, "node": "n01", "gpus": [{"index": 0, "power_w": math.nan}]})
    assert only_reject(decode(text.encode()))[0] == RejectReason.NOT_FINITE
    text = text.replace("NaN", "Infinity")
    assert only_reject(decode(text.encode()))[0] == RejectReason.NOT_FINITE


def test_unknown_schema_version_is_rejected_naming_the_value() -> None:
    reason, message, field = only_reject(decode(payload(schema=2)))
    assert reason == RejectReason.UNKNOWN_SCHEMA and "schema(=2)" in message and field == "schema"


def test_missing_power_rejects_that_gpu_but_keeps_the_others() -> None:
    entry = gpu(1)
    del entry["power_w"]
    batch = decode(payload([gpu(0), entry, gpu(2)]))
    assert [r[COL["gpu_index"]] for r in batch.telemetry] == [0, 2]
    reason, message, field = only_reject(batch)
    assert reason == RejectReason.MISSING_FIELD and "gpus[1].power_w" in message and field == "power_w"


def test_absurd_power_is_out_of_range() -> None:
    reason, message, field = only_reject(decode(payload([gpu(0, power_w=7200.0)])))
    assert reason == RejectReason.OUT_OF_RANGE and "power_w(=7200.0) must be ≤ 5000.0" in message
    assert field == "power_w"


def test_negative_values_are_out_of_range() -> None:
    assert only_reject(decode(payload([gpu(0, mem_used_bytes=-1)])))[0] == RejectReason.OUT_OF_RANGE


def test_wrong_types_are_rejected_including_booleans_for_numbers() -> None:
    for bad in ({"power_w": "612"}, {"temp_c": True}, {"index": 1.5}, {"uuid": 7}):
        reason, _, field = only_reject(decode(payload([{**gpu(0), **bad}])))
        assert reason == RejectReason.WRONG_TYPE, bad
        assert field == next(iter(bad))


def test_an_integral_float_in_an_integer_field_is_normalised_not_rejected() -> None:
    batch = decode(payload([gpu(0, ecc_sbe_total=3.0)]))
    assert not batch.rejects
    value = batch.telemetry[0][COL["ecc_sbe_total"]]
    assert value == 3 and type(value) is int


def test_payload_over_the_size_limit_is_rejected_before_parsing() -> None:
    big = payload([gpu(0, uuid="x" * 10)]) + b" " * MAX_PAYLOAD_BYTES
    reason, message, _ = only_reject(decode(big))
    assert reason == RejectReason.TOO_LARGE and str(MAX_PAYLOAD_BYTES) in message


def test_topics_of_the_wrong_shape_are_rejected() -> None:
    for topic in ("gpu-twin/v1/c1/telemetry", "other/v1/c1/n01/telemetry", "gpu-twin/v1/c1/n+1/telemetry"):
        assert only_reject(decode(payload(), topic))[0] == RejectReason.BAD_TOPIC, topic


def test_node_in_payload_must_match_node_in_topic() -> None:
    reason, message, _ = only_reject(decode(payload(node="n02")))
    assert reason == RejectReason.NODE_MISMATCH and "'n02'" in message and "'n01'" in message


def test_timestamps_far_in_the_future_or_past_are_rejected() -> None:
    assert only_reject(decode(payload(ts=NOW + 3600)))[0] == RejectReason.TS_IN_FUTURE
    assert only_reject(decode(payload(ts=NOW - 30 * 86_400)))[0] == RejectReason.TS_TOO_OLD


def test_a_gpu_index_twice_in_one_message_is_a_duplicate() -> None:
    batch = decode(payload([gpu(0), gpu(0, power_w=1.0)]))
    assert len(batch.telemetry) == 1 and batch.telemetry[0][COL["power_w"]] == 612.5
    assert only_reject(batch)[0] == RejectReason.DUPLICATE


def test_unknown_fields_are_rejected_by_name() -> None:
    reason, _, field = only_reject(decode(payload([gpu(0, power_W=1.0)])))
    assert reason == RejectReason.UNKNOWN_FIELD and field == "power_W"


def test_status_and_job_events_decode() -> None:
    batch = IngestBatch()
    decoder = Decoder()
    decoder.decode("gpu-twin/v1/c1/n01/status", b"offline", NOW, batch)
    event = {"schema": 1, "ts": NOW, "event": "step", "step": 10, "step_time_s": 2.5, "tokens": 4e6}
    decoder.decode("gpu-twin/v1/c1/jobs/job-7/events", orjson.dumps(event), NOW, batch)
    decoder.decode("gpu-twin/v1/c1/n01/status", b"maybe", NOW, batch)
    decoder.decode(
        "gpu-twin/v1/c1/jobs/job-7/events", orjson.dumps({**event, "event": "explode"}), NOW, batch
    )
    assert [(s.node, s.status) for s in batch.statuses] == [("n01", "offline")]
    assert [(e.job_id, e.step, e.step_time_s) for e in batch.job_events] == [("job-7", 10, 2.5)]
    assert [r.reason for r in batch.rejects] == [RejectReason.BAD_STATUS, RejectReason.BAD_EVENT]


def test_reject_excerpts_are_truncated() -> None:
    batch = decode(b"x" * 5000)
    assert len(batch.rejects[0].payload_excerpt) == 1024


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_and_are_accounted_for(data: bytes) -> None:
    batch = decode(data)
    assert len(batch.rejects) + len(batch.telemetry) >= 1


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from([*GPU_FIELD_NAMES, "junk"]), json_values, max_size=16), max_size=6
    )
)
def test_arbitrary_gpu_entries_either_pass_all_bounds_or_are_rejected(entries: list[dict[str, Any]]) -> None:
    batch = decode(payload(entries))
    accepted = {row[COL["gpu_index"]] for row in batch.telemetry}
    assert len(accepted) + len(batch.rejects) == len(entries)
    for row in batch.telemetry:
        power = row[COL["power_w"]]
        assert isinstance(power, int | float) and not isinstance(power, bool) and 0 <= power <= 5000
        for name in ("mem_used_bytes", "ecc_sbe_total", "ecc_dbe_total", "xid_last", "throttle_reasons"):
            value = row[COL[name]]
            assert value is None or (type(value) is int and value >= 0)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=0, max_value=5000),
    st.floats(min_value=-40, max_value=150),
    st.integers(min_value=0, max_value=2**40),
)
def test_any_in_range_reading_is_accepted_unchanged(power_w: float, temp_c: float, mem: int) -> None:
    batch = decode(payload([gpu(0, power_w=power_w, temp_c=temp_c, mem_used_bytes=mem)]))
    assert not batch.rejects
    row = batch.telemetry[0]
    assert (row[COL["power_w"]], row[COL["temp_c"]], row[COL["mem_used_bytes"]]) == (power_w, temp_c, mem)


def test_counters_beyond_a_64_bit_column_are_out_of_range_not_a_poison_batch() -> None:
    for name in ("ecc_sbe_total", "ecc_dbe_total", "xid_last", "throttle_reasons"):
        assert only_reject(decode(payload([gpu(0, **{name: 2**63})])))[0] == RejectReason.OUT_OF_RANGE, name
