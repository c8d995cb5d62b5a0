"""The job step reporter: event sequence and payloads, validation, the HF adapter, and MQTT delivery."""

from __future__ import annotations

import contextlib
import math
import socket
import sys
import time
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest

from sensors.contract import JobEvent, JobEventKind
from sensors.errors import ContractError, PublishError, SensorUnavailable
from sensors.event_publisher import EventSink, MqttEventPublisher
from sensors.hf_callback import TrainerEventsAdapter, make_trainer_callback
from sensors.job_reporter import MAX_REASON_CHARS, JobLifecycleError, JobReporter
from sensors.mqtt_url import parse_broker_url
from tests.mqtt_fixtures import MessageCollector, MosquittoProcess, free_port, services_required

MODEL = {"preset": "llama3-8b"}
LAYOUT = {"tp": 2, "pp": 1, "dp": 4, "micro_batch": 1}
NODES = ("n01", "n02")
SHARED_BROKER = ("127.0.0.1", 1883)
# A private broker that keeps persistent sessions across a restart (SIGTERM saves the database).
PERSISTENT_CONF = (
    "listener @PORT@ 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location @DIR@/data/\n"
)
FAST_RECONNECT_MIN_S = 0.05
FAST_RECONNECT_MAX_S = 0.2
DELIVERY_TIMEOUT_S = 4.0


class RecordingSink:
    """An in-memory EventSink; `accept=False` behaves like a full buffer."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.events: list[JobEvent] = []
        self.closed_with: float | None = None

    def publish_event(self, event: JobEvent) -> bool:
        self.events.append(event)
        return self.accept

    def close(self, timeout_s: float = 5.0) -> None:
        self.closed_with = timeout_s

    def payloads(self) -> list[dict[str, Any]]:
        """What would go on the wire, decoded again."""
        return [orjson.loads(orjson.dumps(e.to_payload())) for e in self.events]

    def kinds(self) -> list[str]:
        return [str(e.event) for e in self.events]


class TickClock:
    """A clock that advances by `tick` seconds on every call."""

    def __init__(self, start: float = 1_700_000_000.0, tick: float = 1.0) -> None:
        self.now = start
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def make_reporter(sink: RecordingSink, every_n_steps: int = 1) -> JobReporter:
    return JobReporter(sink, "job-7", MODEL, LAYOUT, NODES, every_n_steps=every_n_steps, clock=TickClock())


# --- events and payloads ------------------------------------------------------------------------------


def test_recording_sink_and_publisher_satisfy_the_sink_protocol() -> None:
    assert isinstance(RecordingSink(), EventSink)
    assert isinstance(MqttEventPublisher(parse_broker_url("mqtt://127.0.0.1"), "c1"), EventSink)


def test_start_carries_model_layout_and_nodes() -> None:
    sink = RecordingSink()
    make_reporter(sink).start()
    assert sink.payloads() == [
        {
            "schema": 1,
            "ts": 1_700_000_001.0,
            "event": "start",
            "model": MODEL,
            "layout": LAYOUT,
            "nodes": list(NODES),
        }
    ]


def test_every_n_steps_publishes_mean_step_time_and_cumulative_tokens() -> None:
    sink = RecordingSink()
    reporter = make_reporter(sink, every_n_steps=3)
    reporter.start()
    for step in range(7):  # step times 1..7 s, 100 tokens each
        reporter.step(step, float(step + 1), tokens=100)
    reporter.end()
    steps = [p for p in sink.payloads() if p["event"] == "step"]
    assert [(p["step"], p["step_time_s"], p["tokens"]) for p in steps] == [
        (2, 2.0, 300.0),  # mean of 1, 2, 3
        (5, 5.0, 600.0),  # mean of 4, 5, 6
        (6, 7.0, 700.0),  # the leftover step, flushed by end()
    ]
    assert sink.kinds() == ["start", "step", "step", "step", "end"]
    assert sink.payloads()[-1] == {
        "schema": 1,
        "ts": sink.events[-1].ts,
        "event": "end",
        "step": 6,
        "tokens": 700.0,
    }


def test_steps_without_tokens_send_no_tokens_field_and_events_have_rising_timestamps() -> None:
    sink = RecordingSink()
    reporter = make_reporter(sink)
    reporter.start()
    reporter.step(0, 0.25)
    reporter.step(1, 0.75)
    reporter.checkpoint(1)
    payloads = sink.payloads()
    assert payloads[1] == {
        "schema": 1,
        "ts": payloads[1]["ts"],
        "event": "step",
        "step": 0,
        "step_time_s": 0.25,
    }
    assert payloads[3] == {"schema": 1, "ts": payloads[3]["ts"], "event": "checkpoint", "step": 1}
    timestamps = [p["ts"] for p in payloads]
    assert timestamps == sorted(timestamps) and len(set(timestamps)) == len(timestamps)


def test_resumed_start_sends_its_step_and_later_steps_must_follow_it() -> None:
    sink = RecordingSink()
    reporter = make_reporter(sink)
    reporter.start(step=500)
    assert sink.payloads()[0]["step"] == 500
    with pytest.raises(ContractError, match=r"step\(=500\) must be > the last reported step \(500\)"):
        reporter.step(500, 1.0)
    reporter.step(501, 1.0)
    assert reporter.last_step == 501


def test_context_manager_sends_start_then_end_and_leaves_a_given_sink_open() -> None:
    sink = RecordingSink()
    with make_reporter(sink) as reporter:
        reporter.step(0, 1.5)
    assert sink.kinds() == ["start", "step", "end"]
    assert sink.events[-1].step == 0
    assert sink.closed_with is None  # the caller owns a sink it passed in


def test_context_manager_sends_fail_with_the_exception_and_reraises() -> None:
    sink = RecordingSink()
    with (
        pytest.raises(RuntimeError, match="CUDA out of memory"),
        make_reporter(sink, every_n_steps=10) as reporter,
    ):
        reporter.step(0, 2.0)
        reporter.step(1, 4.0)
        raise RuntimeError("CUDA out of memory")
    assert sink.kinds() == ["start", "step", "fail"]
    assert sink.events[1].step_time_s == 3.0  # pending steps flushed before the failure
    fail = sink.payloads()[-1]
    assert fail["reason"] == "RuntimeError: CUDA out of memory"
    assert fail["step"] == 1


def test_context_manager_closes_a_sink_it_owns() -> None:
    sink = RecordingSink()
    reporter = make_reporter(sink)
    reporter.owns_sink = True
    with pytest.raises(KeyboardInterrupt), reporter:
        raise KeyboardInterrupt
    assert sink.kinds() == ["start", "fail"]
    assert sink.events[-1].reason == "KeyboardInterrupt"
    assert sink.closed_with == 5.0


def test_explicit_end_inside_the_block_is_not_repeated() -> None:
    sink = RecordingSink()
    with make_reporter(sink) as reporter:
        reporter.step(0, 1.0)
        reporter.end(step=3)
    assert sink.kinds() == ["start", "step", "end"]
    assert sink.events[-1].step == 3


def test_long_failure_reasons_are_cut_to_what_the_twin_accepts() -> None:
    sink = RecordingSink()
    reporter = make_reporter(sink)
    reporter.start()
    reporter.fail("x" * 1000)
    reason = sink.events[-1].reason
    assert reason is not None and len(reason) == MAX_REASON_CHARS and reason.endswith("…")


def test_refused_events_are_counted_not_raised() -> None:
    sink = RecordingSink(accept=False)
    reporter = make_reporter(sink)
    reporter.start()
    reporter.step(0, 1.0)
    assert (reporter.events_sent, reporter.events_dropped) == (0, 2)


# --- lifecycle and validation -----------------------------------------------------------------------


@pytest.mark.parametrize("finish", ["end", "fail"])
def test_events_after_end_or_fail_are_refused(finish: str) -> None:
    sink = RecordingSink()
    reporter = make_reporter(sink)
    reporter.start()
    if finish == "end":
        reporter.end()
    else:
        reporter.fail("boom")
    refused = r"after the job_id\(='job-7'\) ended or failed"
    with pytest.raises(JobLifecycleError, match=refused):
        reporter.step(1, 1.0)
    with pytest.raises(JobLifecycleError, match=refused):
        reporter.checkpoint(1)
    with pytest.raises(JobLifecycleError, match=refused):
        reporter.end()
    with pytest.raises(JobLifecycleError, match=refused):
        reporter.fail("again")
    assert sink.kinds() == ["start", finish]
    assert reporter.finished


def test_events_before_start_and_a_second_start_are_refused() -> None:
    reporter = make_reporter(RecordingSink())
    with pytest.raises(JobLifecycleError, match=r"step\(\) before start\(\)"):
        reporter.step(0, 1.0)
    reporter.start()
    with pytest.raises(JobLifecycleError, match="already started"):
        reporter.start()


@pytest.mark.parametrize(
    ("step", "step_time_s", "tokens", "message"),
    [
        (-1, 1.0, None, r"step(=-1) must be ≥ 0."),
        (1.5, 1.0, None, r"step(=1.5) must be an integer ≥ 0."),
        (True, 1.0, None, r"step(=True) must be an integer ≥ 0."),
        (0, math.nan, None, r"step_time_s(=nan) must be finite and > 0."),
        (0, math.inf, None, r"step_time_s(=inf) must be finite and > 0."),
        (0, 0.0, None, r"step_time_s(=0.0) must be finite and > 0."),
        (0, -2.0, None, r"step_time_s(=-2.0) must be finite and > 0."),
        (0, 90_000.0, None, r"step_time_s(=90000.0) must be ≤ 86400 (one day)."),
        (0, 1.0, -5, r"tokens(=-5) must be finite and ≥ 0, or None."),
        (0, 1.0, math.nan, r"tokens(=nan) must be finite and ≥ 0, or None."),
    ],
)
def test_step_validation_names_field_and_value(
    step: Any, step_time_s: Any, tokens: Any, message: str
) -> None:
    sink = RecordingSink()
    reporter = make_reporter(sink)
    reporter.start()
    with pytest.raises(ContractError) as excinfo:
        reporter.step(step, step_time_s, tokens)
    assert str(excinfo.value) == message
    assert sink.kinds() == ["start"]  # nothing half-recorded
    reporter.step(0, 1.0)  # a bad call leaves the reporter usable


def test_numpy_numbers_are_accepted_and_sent_as_plain_json_numbers() -> None:
    sink = RecordingSink()
    reporter = make_reporter(sink)
    # Typed as Any: the signatures say int/float, NumPy scalars are tolerated at run time.
    zero: Any = np.int64(0)
    one: Any = np.int64(1)
    half: Any = np.float32(0.5)
    tokens: Any = np.int64(2048)
    reporter.start(step=zero)
    reporter.step(one, half, tokens=tokens)
    reporter.checkpoint(one)
    assert all(type(p.get("step")) is int for p in (e.to_payload() for e in sink.events))
    assert [(p.get("step"), p.get("step_time_s"), p.get("tokens")) for p in sink.payloads()] == [
        (0, None, None),
        (1, 0.5, 2048.0),
        (1, None, 2048.0),
    ]


def test_steps_must_increase_and_end_cannot_go_back() -> None:
    reporter = make_reporter(RecordingSink())
    reporter.start()
    reporter.step(4, 1.0)
    with pytest.raises(ContractError, match=r"step\(=4\) must be > the last reported step \(4\)"):
        reporter.step(4, 1.0)
    with pytest.raises(ContractError, match=r"step\(=3\) must be ≥ the last reported step \(4\)"):
        reporter.end(step=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"job_id": "a/b"}, r"job_id(='a/b') must match"),
        ({"nodes": "n01"}, r"nodes(='n01') must be a sequence of node names, not one string."),
        ({"nodes": ("n01", "n#2")}, r"nodes[](='n#2') must match"),
        ({"every_n_steps": 0}, r"every_n_steps(=0) must be an integer ≥ 1."),
        ({"model": {"when": object()}}, r"model(={'when': <object object at"),
        ({"layout": ["tp", 8]}, r"layout(=['tp', 8]) must be a mapping"),
    ],
)
def test_constructor_validation_names_field_and_value(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"sink": RecordingSink(), "job_id": "job-7", "model": MODEL, "layout": LAYOUT}
    arguments.update(kwargs)
    with pytest.raises(ContractError) as excinfo:
        JobReporter(**arguments)
    assert str(excinfo.value).startswith(message)


def test_fail_needs_a_reason() -> None:
    reporter = make_reporter(RecordingSink())
    reporter.start()
    with pytest.raises(ContractError, match=r"reason\(=' '\) must be a non-empty string"):
        reporter.fail(" ")
    assert not reporter.finished


# --- Hugging Face adapter -----------------------------------------------------------------------------


@dataclass
class FakeState:
    global_step: int = 0
    is_world_process_zero: bool = True


@dataclass(frozen=True)
class FakeArgs:
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 4
    world_size: int = 8


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_adapter_turns_trainer_callbacks_into_events() -> None:
    sink, clock, state = RecordingSink(), ManualClock(), FakeState()
    adapter = TrainerEventsAdapter(make_reporter(sink), seq_len=1024, clock=clock)
    adapter.on_train_begin(state, FakeArgs())
    for step_time_s in (1.5, 0.5):
        clock.now += step_time_s
        state.global_step += 1
        adapter.on_step_end(state)
    clock.now += 30.0  # the save takes 30 s: not step time
    adapter.on_save(state)
    clock.now += 0.25
    state.global_step += 1
    adapter.on_step_end(state)
    adapter.on_train_end(state)
    tokens_per_step = 2 * 4 * 8 * 1024
    assert [(p["event"], p.get("step"), p.get("step_time_s"), p.get("tokens")) for p in sink.payloads()] == [
        ("start", None, None, None),
        ("step", 1, 1.5, tokens_per_step),
        ("step", 2, 0.5, 2 * tokens_per_step),
        ("checkpoint", 2, None, 2 * tokens_per_step),
        ("step", 3, 0.25, 3 * tokens_per_step),
        ("end", 3, None, 3 * tokens_per_step),
    ]


def test_adapter_without_seq_len_reports_no_tokens_and_resumes_from_global_step() -> None:
    sink, clock = RecordingSink(), ManualClock()
    adapter = TrainerEventsAdapter(make_reporter(sink), clock=clock)
    state = FakeState(global_step=40)
    adapter.on_train_begin(state, FakeArgs())
    clock.now += 2.0
    state.global_step = 41
    adapter.on_step_end(state)
    assert sink.payloads()[0]["step"] == 40
    assert "tokens" not in sink.payloads()[1] and sink.payloads()[1]["step_time_s"] == 2.0


def test_adapter_reports_only_from_the_main_process() -> None:
    sink, clock = RecordingSink(), ManualClock()
    adapter = TrainerEventsAdapter(make_reporter(sink), clock=clock)
    state = FakeState(is_world_process_zero=False)
    adapter.on_train_begin(state)
    clock.now += 1.0
    state.global_step = 1
    adapter.on_step_end(state)
    adapter.on_save(state)
    adapter.on_train_end(state)
    assert sink.events == []


def test_adapter_inside_a_reporter_block_does_not_start_or_end_twice() -> None:
    sink, clock = RecordingSink(), ManualClock()
    with pytest.raises(ValueError, match="diverged"), make_reporter(sink) as reporter:
        adapter = TrainerEventsAdapter(reporter, clock=clock)
        adapter.on_train_begin(FakeState())
        clock.now += 1.0
        adapter.on_step_end(FakeState(global_step=1))
        raise ValueError("loss diverged")  # on_train_end never runs, as in a crashed Trainer.train()
    assert sink.kinds() == ["start", "step", "fail"]


def test_make_trainer_callback_without_transformers_raises_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(SensorUnavailable, match=r"pip install transformers"):
        make_trainer_callback(make_reporter(RecordingSink()))


def test_make_trainer_callback_subclasses_trainer_callback_and_delegates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = types.ModuleType("transformers")

    class TrainerCallback:
        pass

    fake.TrainerCallback = TrainerCallback  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "transformers", fake)
    sink = RecordingSink()
    callback = make_trainer_callback(make_reporter(sink), seq_len=16)
    assert issubclass(type(callback), TrainerCallback)
    state, control = FakeState(), object()
    callback.on_train_begin(FakeArgs(), state, control, model=None)
    time.sleep(0.002)  # the real monotonic clock must advance between the two calls
    state.global_step = 1
    callback.on_step_end(FakeArgs(), state, control)
    callback.on_save(FakeArgs(), state, control)
    callback.on_train_end(FakeArgs(), state, control)
    assert sink.kinds() == ["start", "step", "checkpoint", "end"]
    assert sink.events[1].tokens == 2 * 4 * 8 * 16


# --- MQTT publisher -----------------------------------------------------------------------------------


def _step_event(job_id: str, step: int) -> JobEvent:
    return JobEvent(job_id=job_id, event=JobEventKind.STEP, ts=1.0 + step, step=step, step_time_s=0.5)


def test_full_buffer_refuses_and_counts_without_raising() -> None:
    # Nothing listens on this port: every event stays in paho's buffer.
    publisher = MqttEventPublisher(
        parse_broker_url(f"mqtt://127.0.0.1:{free_port()}"),
        "c1",
        buffer_limit=3,
        reconnect_min_s=FAST_RECONNECT_MIN_S,
        reconnect_max_s=FAST_RECONNECT_MAX_S,
    )
    try:
        results = [publisher.publish_event(_step_event("j1", step)) for step in range(5)]
        assert results == [True, True, True, False, False]
        stats = publisher.stats
        assert (stats.published, stats.acked, stats.dropped, stats.unacked) == (3, 0, 2, 3)
        assert not publisher.flush(0.05)
    finally:
        publisher.close(timeout_s=0.05)
    with pytest.raises(PublishError, match="closed"):
        publisher.publish_event(_step_event("j1", 9))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buffer_limit": 0}, r"buffer_limit\(=0\) must be an integer ≥ 1"),
        ({"reconnect_min_s": 0.0}, r"reconnect_min_s\(=0.0\) must be > 0"),
        ({"reconnect_min_s": 5.0, "reconnect_max_s": 1.0}, r"≤ reconnect_max_s\(=1.0\)"),
        ({"cluster": "a+b"}, r"cluster\(='a\+b'\) must match"),
    ],
)
def test_publisher_settings_are_validated(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"url": parse_broker_url("mqtt://127.0.0.1"), "cluster": "c1"}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MqttEventPublisher(**arguments)


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


@pytest.fixture
def shared_broker_url() -> str:
    host, port = SHARED_BROKER
    if not _reachable(host, port):
        reason = f"no MQTT broker at {host}:{port} (start Mosquitto to run this test)"
        if services_required():
            pytest.fail(f"TWIN_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    return f"mqtt://{host}:{port}"


def test_reporter_events_arrive_on_the_contract_topic(shared_broker_url: str) -> None:
    cluster = f"test-{uuid.uuid4().hex[:10]}"
    topic_filter = f"gpu-twin/v1/{cluster}/jobs/+/events"
    clock = TickClock(tick=0.5)
    with MessageCollector(shared_broker_url, topic_filter) as subscriber:
        with JobReporter.from_url(
            shared_broker_url,
            cluster,
            "run-1",
            model=MODEL,
            layout=LAYOUT,
            nodes=NODES,
            every_n_steps=2,
            clock=clock,
        ) as reporter:
            for step in range(4):
                reporter.step(step, 0.5 + step, tokens=4096)
            reporter.checkpoint(3)
        assert isinstance(reporter.sink, MqttEventPublisher)
        assert reporter.sink.stats.unacked == 0 and reporter.sink.stats.acked == 5  # close() waited for acks
        received = subscriber.wait_for(5, DELIVERY_TIMEOUT_S)
    assert {m.topic for m in received} == {f"gpu-twin/v1/{cluster}/jobs/run-1/events"}
    assert all(m.qos == 1 for m in received)
    payloads = [orjson.loads(m.payload) for m in received]
    ts0 = clock.now - 2.0  # five events, 0.5 s apart
    assert payloads == [
        {"schema": 1, "ts": ts0, "event": "start", "model": MODEL, "layout": LAYOUT, "nodes": list(NODES)},
        {"schema": 1, "ts": ts0 + 0.5, "event": "step", "step": 1, "step_time_s": 1.0, "tokens": 8192.0},
        {"schema": 1, "ts": ts0 + 1.0, "event": "step", "step": 3, "step_time_s": 3.0, "tokens": 16384.0},
        {"schema": 1, "ts": ts0 + 1.5, "event": "checkpoint", "step": 3, "tokens": 16384.0},
        {"schema": 1, "ts": ts0 + 2.0, "event": "end", "step": 3, "tokens": 16384.0},
    ]


@pytest.fixture
def persistent_broker() -> Iterator[MosquittoProcess]:
    with MosquittoProcess(PERSISTENT_CONF) as broker:
        yield broker


def _wait_until(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_events_published_during_a_broker_outage_are_delivered_after_it(
    persistent_broker: MosquittoProcess,
) -> None:
    cluster, job_id = "outage", "run-2"
    topic_filter = f"gpu-twin/v1/{cluster}/jobs/+/events"
    subscriber_id = f"twin-test-sub-{uuid.uuid4().hex[:8]}"
    url = persistent_broker.url
    # A persistent QoS 1 subscription: the broker keeps it, and queues for it, across its restart.
    first = MessageCollector(url, topic_filter, client_id=subscriber_id, clean_session=False).start()
    publisher = MqttEventPublisher(
        parse_broker_url(url),
        cluster,
        reconnect_min_s=FAST_RECONNECT_MIN_S,
        reconnect_max_s=FAST_RECONNECT_MAX_S,
    )
    reporter = JobReporter(publisher, job_id, MODEL, LAYOUT, NODES)
    try:
        reporter.start()
        assert publisher.flush(DELIVERY_TIMEOUT_S), "start was not acknowledged while the broker was up"
        assert [orjson.loads(m.payload)["event"] for m in first.wait_for(1, DELIVERY_TIMEOUT_S)] == ["start"]
        first.stop()

        persistent_broker.stop()
        assert _wait_until(lambda: not publisher.is_connected, DELIVERY_TIMEOUT_S)
        for step in range(50):
            reporter.step(step, 0.1)
        assert reporter.events_dropped == 0
        assert publisher.stats.unacked == 50

        persistent_broker.restart()
        second = MessageCollector(url, topic_filter, client_id=subscriber_id, clean_session=False).start()
        try:
            received = second.wait_for(50, DELIVERY_TIMEOUT_S)
        finally:
            second.stop()
        assert publisher.flush(DELIVERY_TIMEOUT_S)
        stats = publisher.stats
        assert (stats.published, stats.acked, stats.dropped, stats.reconnects) == (51, 51, 0, 1)
        steps = [orjson.loads(m.payload)["step"] for m in received]
        assert sorted(set(steps)) == list(range(50)), f"missing steps: {set(range(50)) - set(steps)}"
    finally:
        publisher.close(timeout_s=0.5)
