"""The feedback loop end to end on the real Mosquitto and both stores: the twin signs and publishes a power
cap, the agent of a simulated node verifies and applies it, the node's published power drops below the
cap, and the outcome is recorded; a replayed and a forged command are rejected and recorded too. Also the
ACL example: a node reports outcomes for itself only. No secret reaches the logs."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from sensors.command_agent import (
    AgentSettings,
    CommandAgent,
    CommandProcessor,
    checkpoint_handler,
    simulated_power_cap_handler,
)
from sensors.commands import (
    Action,
    Command,
    CommandOutcome,
    CommandSecret,
    CommandVerifier,
    OutcomeKind,
    sign_command,
)
from sensors.contract import Topics
from sensors.errors import ContractError
from sensors.mqtt_url import parse_broker_url
from sensors.publisher import PublisherHub, PublisherSettings
from sensors.runner import run_source
from sensors.sim_profiles import default_workload
from sensors.simulated import JobSpec, SimulatedCluster
from tests.mqtt_fixtures import MessageCollector, publish_all
from tests.test_mosquitto_conf import AclBroker, acl_broker
from twin.cli import main
from twin.cli_telemetry import COMMAND_SECRET_ENV, read_command_secret
from twin.command_publisher import CommandPublisher, CommandPublisherSettings
from twin.store.commands import command_rows, record_command, record_outcome
from twin.store.repository import Store
from twin.store.urls import StoreError

__all__ = ["acl_broker"]

SECRET_TEXT = "loop-test-secret-0123456789abcdef-0123456789"
CAP_W = 250.0  # an A100-SXM4 computes at ~392 W (sensors.sim_profiles): the cap binds
INTERVAL_S = 0.1
STEP_S = 0.4
WAIT_S = 10.0


@dataclass
class Loop:
    cluster: str
    topics: Topics
    sim: SimulatedCluster
    agent: CommandAgent
    publisher: CommandPublisher
    telemetry: MessageCollector
    commands: MessageCollector


@pytest.fixture
def loop(mosquitto_url: str, store: Store) -> Iterator[Loop]:
    cluster = f"loop-{uuid.uuid4().hex[:10]}"  # the broker is shared: no cross-talk between runs
    topics = Topics(cluster)
    url = parse_broker_url(mosquitto_url)
    secret = CommandSecret.from_text(SECRET_TEXT)
    # A short step (0.4 s) so that a second of telemetry always spans the compute phase.
    job = JobSpec("job-0", dataclasses.replace(default_workload(), step_time_s=STEP_S), ("n00", "n01"))
    sim = SimulatedCluster(nodes=4, gpus_per_node=2, jobs=[job], seed=3, failure_rate_scale=0.0)
    verifier = CommandVerifier(secret, cluster=cluster, nodes=sim.node_names)
    handlers = {
        Action.POWER_CAP: simulated_power_cap_handler(sim),
        Action.CHECKPOINT_NOW: checkpoint_handler(),
    }
    agent = CommandAgent(
        AgentSettings(url, topics, sim.node_names, client_id=f"agent-{cluster}"),
        CommandProcessor(verifier, handlers, apply=True),
    )
    hub = PublisherHub(PublisherSettings(url, topics, client_id_prefix=f"sensor-{cluster}"))
    publisher = CommandPublisher(
        CommandPublisherSettings(url, topics, secret, client_id=f"twin-{cluster}", persistent_session=False),
        store,
    )
    telemetry = MessageCollector(mosquitto_url, topics.telemetry("n00")).start()
    commands = MessageCollector(mosquitto_url, topics.commands("n00")).start()
    agent.start()
    assert agent.wait_subscribed(WAIT_S) and publisher.start(WAIT_S)
    stop = threading.Event()
    runner = threading.Thread(
        target=run_source,
        args=(sim, hub, INTERVAL_S),
        kwargs={"stop": stop, "on_tick": lambda _stats: agent.process_pending()},
        daemon=True,
    )
    runner.start()
    try:
        yield Loop(cluster, topics, sim, agent, publisher, telemetry, commands)
    finally:
        stop.set()
        runner.join(WAIT_S)
        agent.close()
        hub.close(timeout_s=2.0)
        publisher.close()
        telemetry.stop()
        commands.stop()


def power_readings(loop: Loop, after_ts: float) -> list[float]:
    return [
        gpu["power_w"]
        for message in loop.telemetry.messages
        if (sample := orjson.loads(message.payload))["ts"] > after_ts
        for gpu in sample["gpus"]
    ]


def wait_for_rows(store: Store, cluster: str, n: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + WAIT_S
    rows = command_rows(store, cluster)
    while len(rows) < n and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = command_rows(store, cluster)
    return rows


def test_power_cap_round_trip_with_replay_and_forgery(
    loop: Loop, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    loop.telemetry.wait_for(12, timeout_s=WAIT_S)
    assert max(power_readings(loop, 0.0)) > CAP_W  # busy and uncapped before the command

    cmd = loop.publisher.issue("n00", Action.POWER_CAP, {"power_cap_w": CAP_W}, "test: cap n00")
    outcomes = loop.publisher.wait_for_outcomes([cmd.id], WAIT_S)
    assert outcomes[cmd.id].outcome == "applied", outcomes
    applied_ts = outcomes[cmd.id].ts

    # The node's telemetry after the cap stays at or below it, and the node is still busy.
    count = len(loop.telemetry.messages)
    loop.telemetry.wait_for(count + 10, timeout_s=WAIT_S)
    after = power_readings(loop, applied_ts + INTERVAL_S)
    assert len(after) >= 10 and max(after) <= CAP_W and max(after) > 0.8 * CAP_W

    # Replay the exact signed payload the twin sent, and forge one with another secret.
    (sent,) = loop.commands.wait_for(1, timeout_s=WAIT_S)
    now = time.time()
    forged = Command(
        uuid.uuid4().hex, loop.cluster, "n00", Action.POWER_CAP, {"power_cap_w": 150.0}, now, now + 60
    )
    other = CommandSecret.from_text("attacker-secret-0123456789abcdef-0123456789")
    publish_all(
        str(loop.agent.settings.url),
        [
            (loop.topics.commands("n00"), sent.payload),
            (loop.topics.commands("n00"), sign_command(forged, other)),
        ],
    )
    rows = wait_for_rows(store, loop.cluster, 3)
    by_reason = {(r["command_id"], r["outcome"], r["reason"]) for r in rows}
    assert (cmd.id, "applied", None) in by_reason
    assert (cmd.id, "rejected", "replayed") in by_reason
    assert (forged.id, "rejected", "bad_signature") in by_reason
    (issued,) = [r for r in rows if r["outcome"] == "applied"]
    assert issued["params"] == {"power_cap_w": CAP_W} and issued["action"] == "power_cap"
    assert issued["issued_ts"] == cmd.issued_ts and issued["advice"] == "test: cap n00"
    # The forged 150 W cap was never applied: the node still runs at the 250 W cap.
    rejected_ts = max(float(r["outcome_ts"]) for r in rows)  # type: ignore[arg-type]
    count = len(loop.telemetry.messages)
    loop.telemetry.wait_for(count + 10, timeout_s=WAIT_S)
    assert max(power_readings(loop, rejected_ts + INTERVAL_S)) > 0.8 * CAP_W

    assert loop.agent.stats.rejected == {"replayed": 1, "bad_signature": 1}
    assert SECRET_TEXT not in caplog.text


def test_unsigned_junk_gets_an_outcome_and_the_loop_goes_on(loop: Loop, store: Store) -> None:
    publish_all(
        str(loop.agent.settings.url),
        [(loop.topics.commands("n01"), b"{not json"), (loop.topics.commands("n01"), b'{"action": "reboot"}')],
    )
    rows = wait_for_rows(store, loop.cluster, 2)
    assert sorted((r["node"], r["outcome"], r["reason"]) for r in rows) == [
        ("n01", "rejected", "malformed"),
        ("n01", "rejected", "unsigned"),
    ]
    cmd = loop.publisher.issue("n01", Action.CHECKPOINT_NOW, {"job_id": "job-1", "risk": 0.7})
    assert loop.publisher.wait_for_outcomes([cmd.id], WAIT_S)[cmd.id].outcome == "applied"


def test_acl_lets_a_node_report_outcomes_for_itself_only(acl_broker: AclBroker) -> None:
    with MessageCollector(acl_broker.url("twin"), "gpu-twin/v1/+/+/commands/outcome") as twin:
        publish_all(
            acl_broker.url("n01"),
            [
                ("gpu-twin/v1/c1/n02/commands/outcome", b"forged"),
                ("gpu-twin/v1/c1/n01/commands/outcome", b"n01"),
            ],
        )
        publish_all(acl_broker.url("twin"), [("gpu-twin/v1/c1/n01/commands/outcome", b"forged by twin")])
        publish_all(acl_broker.url("n01"), [("gpu-twin/v1/c1/n01/commands/outcome", b"last")])
        got = twin.wait_for(2, timeout_s=2)
    assert [(m.topic, m.payload) for m in got] == [
        ("gpu-twin/v1/c1/n01/commands/outcome", b"n01"),
        ("gpu-twin/v1/c1/n01/commands/outcome", b"last"),
    ]


# --- the CLI edge ---------------------------------------------------------------------------------------


def test_cli_sensors_simulate_applies_commands(
    mosquitto_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`twin sensors simulate --apply-commands` reads the secret file, applies a cap, reports it."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv(COMMAND_SECRET_ENV, raising=False)
    cluster = f"cli-{uuid.uuid4().hex[:10]}"
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET_TEXT + "\n")
    out = io.StringIO()
    argv = [
        "sensors", "simulate", "--broker", mosquitto_url, "--cluster", cluster, "--nodes", "2",
        "--gpus-per-node", "2", "--interval-s", "0.2", "--duration-s", "6", "--failure-rate-scale", "0",
        "--client-id-prefix", f"s-{cluster}", "--command-secret-file", str(secret_file), "--apply-commands",
    ]  # fmt: skip
    runner = threading.Thread(target=main, args=(argv, out, io.StringIO()), daemon=True)
    runner.start()
    url, topics = parse_broker_url(mosquitto_url), Topics(cluster)
    settings = CommandPublisherSettings(
        url,
        topics,
        CommandSecret.from_text(SECRET_TEXT),
        client_id=f"twin-{cluster}",
        persistent_session=False,
    )
    with Store.open(f"sqlite:///{tmp_path / 'twin.db'}") as store:
        publisher = CommandPublisher(settings, store)
        assert publisher.start(WAIT_S)
        outcome = None
        for _ in range(8):  # the CLI subscribes once it has started: retry until it answers
            cmd = publisher.issue("n00", Action.POWER_CAP, {"power_cap_w": CAP_W})
            outcome = publisher.wait_for_outcomes([cmd.id], 0.5).get(cmd.id)
            if outcome is not None:
                break
        publisher.close()
        assert outcome is not None and outcome.outcome == "applied", outcome
        assert command_rows(store, cluster, command_id=cmd.id)[0]["outcome"] == "applied"
    runner.join(WAIT_S + 6)
    assert not runner.is_alive()
    text = out.getvalue()
    assert "command agent: applying, listening on 2 command topic(s)" in text
    summary = json.loads(text.strip().splitlines()[-1])
    assert summary["commands"]["outcomes"]["applied"] >= 1
    assert SECRET_TEXT not in text and SECRET_TEXT not in caplog.text


def test_cli_apply_commands_needs_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(COMMAND_SECRET_ENV, raising=False)
    argv = [
        "sensors",
        "simulate",
        "--broker",
        "mqtt://127.0.0.1:1",
        "--duration-s",
        "0.1",
        "--apply-commands",
    ]
    assert main(argv, io.StringIO(), io.StringIO()) == 2
    assert "--apply-commands needs a command secret" in capsys.readouterr().err


def test_read_command_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(f"  {SECRET_TEXT}\n")
    from_file = read_command_secret(str(path), {})
    assert from_file.mac(b"x") == CommandSecret.from_text(SECRET_TEXT).mac(b"x")
    assert read_command_secret(None, {COMMAND_SECRET_ENV: SECRET_TEXT}).mac(b"x") == from_file.mac(b"x")
    assert read_command_secret(None, {}) is None
    path.write_text("too-short")
    with pytest.raises(ContractError, match="at least 32") as info:
        read_command_secret(str(path), {})
    assert "too-short" not in str(info.value)
    with pytest.raises(ContractError, match="cannot read"):
        read_command_secret(str(tmp_path / "missing"), {})


# --- the commands table -----------------------------------------------------------------------------------


def test_commands_table_records_every_command_and_outcome(store: Store) -> None:
    t0 = 1_767_225_600.0
    cap = Command("a" * 32, "c1", "n01", Action.POWER_CAP, {"power_cap_w": 500.0}, t0, t0 + 60, "why\x00")
    ckpt = Command(
        "b" * 32, "c1", "n02", Action.CHECKPOINT_NOW, {"job_id": "j", "risk": 0.5}, t0 + 1, t0 + 61
    )
    cap_row, ckpt_row = record_command(store, cap), record_command(store, ckpt)
    applied = CommandOutcome("n01", t0 + 2, OutcomeKind.APPLIED, cap.id, "power_cap", detail="cap 500 W")
    assert record_outcome(store, "c1", applied) == cap_row
    assert record_outcome(store, "c1", applied) == cap_row  # a QoS 1 redelivery: stored once
    replayed = CommandOutcome("n01", t0 + 3, OutcomeKind.REJECTED, cap.id, "power_cap", "replayed", "id")
    replay_row = record_outcome(store, "c1", replayed)
    assert record_outcome(store, "c1", replayed) == replay_row != cap_row
    junk = CommandOutcome("n02", t0 + 4, OutcomeKind.REJECTED, None, None, "malformed", None, "not JSON")
    junk_row = record_outcome(store, "c1", junk)
    assert record_outcome(store, "c1", junk) == junk_row

    rows = command_rows(store, "c1")
    assert [r["id"] for r in rows] == [junk_row, replay_row, ckpt_row, cap_row]  # newest first
    by_id = {r["id"]: r for r in rows}
    assert by_id[cap_row]["outcome"] == "applied" and by_id[cap_row]["outcome_ts"] == t0 + 2
    assert by_id[cap_row]["advice"] == "why\ufffd" and by_id[cap_row]["params"] == {"power_cap_w": 500.0}
    assert by_id[ckpt_row]["outcome"] == "pending" and by_id[ckpt_row]["params"]["job_id"] == "j"
    assert (by_id[replay_row]["command_id"], by_id[replay_row]["reason"]) == (cap.id, "replayed")
    assert by_id[replay_row]["issued_ts"] is None and by_id[junk_row]["command_id"] is None
    assert [r["id"] for r in command_rows(store, "c1", node="n02")] == [junk_row, ckpt_row]
    assert [r["id"] for r in command_rows(store, "c1", action="checkpoint_now")] == [ckpt_row]
    assert [r["id"] for r in command_rows(store, "c1", since_ts=t0 + 3)] == [junk_row, replay_row]
    assert len(command_rows(store, "c1", limit=2)) == 2 and command_rows(store, "c2") == []
    with pytest.raises(StoreError, match="limit"):
        command_rows(store, limit=-1)
