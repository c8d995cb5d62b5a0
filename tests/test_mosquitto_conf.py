"""deploy/mosquitto: the production configuration, run as a private Mosquitto, keeps its promises.

Each test starts its own mosquitto on a free loopback port with a temporary data directory, from
deploy/mosquitto/mosquitto.conf with only the listener, data path and password/ACL paths swapped
(`production_conf_variant`). The same scenarios against Mosquitto's built-in defaults show that the
settings matter: the defaults drop queued QoS 1 messages beyond 1,000 and stall an acking-late
subscriber at 20 messages in flight. Skipped without /usr/sbin/mosquitto unless TWIN_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from tests.mqtt_fixtures import (
    DEFAULT_SETTINGS_CONF,
    MOSQUITTO_DIR,
    PRODUCTION_CONF,
    MessageCollector,
    MosquittoProcess,
    connect,
    make_client,
    numbered,
    production_conf_variant,
    publish_all,
    require_mosquitto,
    require_tool,
)

QUEUED = 5_000  # five times Mosquitto's default max_queued_messages (1000)
UNACKED = 3_000  # well over Mosquitto's default max_inflight_messages (20)
SWAPPED = {"listener", "persistence_location", "allow_anonymous", "password_file", "acl_file"}


def values(got: list[bytes]) -> list[int]:
    return [int(payload) for payload in got]


def queued_while_away(url: str, n: int) -> list[int]:
    """A durable QoS 1 subscriber leaves, n messages are published, it comes back: what it receives."""
    MessageCollector(url, "gpu-twin/v1/#", client_id="twin-service", clean_session=False).start().stop()
    publish_all(url, numbered("gpu-twin/v1/c1/n01/telemetry", n))
    with MessageCollector(url, "gpu-twin/v1/#", client_id="twin-service", clean_session=False) as back:
        got = back.wait_for(n, timeout_s=10, quiet_s=0.5)  # quiet_s: if the broker dropped some
    return values([m.payload for m in got])


def unacked_in_flight(url: str, protocol: MQTTProtocolVersion, n: int) -> int:
    """How many QoS 1 messages a subscriber that never acknowledges receives (the in-flight window)."""
    with MessageCollector(url, "gpu-twin/v1/#", client_id="svc", protocol=protocol, manual_ack=True) as svc:
        publish_all(url, numbered("gpu-twin/v1/c1/n01/telemetry", n))
        got = svc.wait_for(n, timeout_s=10, quiet_s=0.5)
    return len(got)


# --- the file itself --------------------------------------------------------------------------------


@pytest.mark.parametrize("with_files", [False, True])
def test_test_variant_differs_from_production_only_in_swapped_lines(with_files: bool) -> None:
    production = PRODUCTION_CONF.read_text(encoding="utf-8").splitlines()
    if with_files:
        variant = production_conf_variant(password_file=Path("/p"), acl_file=Path("/a")).splitlines()
    else:
        variant = production_conf_variant().splitlines()
    changed = {old.split()[0] for old, new in zip(production, variant, strict=True) if old != new}
    assert changed == (SWAPPED - {"allow_anonymous"} if with_files else SWAPPED)


def test_production_conf_starts_without_errors() -> None:
    with MosquittoProcess(production_conf_variant()) as broker:
        client = make_client()
        assert not connect(client, broker.url).is_failure
        client.disconnect()
        client.loop_stop()
        broker.stop()  # mosquitto's stdout is block-buffered into the log file: flush it
        log = broker.log()
    assert "Error" not in log, log
    assert "mosquitto version 2." in log and "running" in log, log


# --- queues, in flight, persistence, size ------------------------------------------------------------


def test_durable_subscriber_gets_all_5000_messages_queued_while_away() -> None:
    with MosquittoProcess(production_conf_variant()) as broker:
        assert queued_while_away(broker.url, QUEUED) == list(range(QUEUED))


def test_default_settings_silently_drop_messages_queued_beyond_1000() -> None:
    # The same scenario with Mosquitto's defaults: every PUBACK arrived, yet the newest messages are gone.
    with MosquittoProcess(DEFAULT_SETTINGS_CONF) as broker:
        got = queued_while_away(broker.url, QUEUED)
    assert len(got) < QUEUED
    assert got == list(range(len(got)))  # the oldest were kept, the newest dropped
    assert len(got) == 1_000  # mosquitto.conf(5): max_queued_messages "Defaults to 1000"


@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5])
def test_service_may_hold_thousands_of_messages_unacknowledged(protocol: MQTTProtocolVersion) -> None:
    with MosquittoProcess(production_conf_variant()) as broker:
        assert unacked_in_flight(broker.url, protocol, UNACKED) == UNACKED


@pytest.mark.parametrize("protocol", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5])
def test_default_settings_stall_an_acking_late_subscriber_at_20(protocol: MQTTProtocolVersion) -> None:
    with MosquittoProcess(DEFAULT_SETTINGS_CONF) as broker:
        assert unacked_in_flight(broker.url, protocol, UNACKED) == 20  # max_inflight_messages default


def test_queued_messages_and_retained_status_survive_a_restart() -> None:
    with MosquittoProcess(production_conf_variant()) as broker:
        MessageCollector(
            broker.url, "gpu-twin/v1/#", client_id="twin-service", clean_session=False
        ).start().stop()
        publish_all(broker.url, numbered("gpu-twin/v1/c1/n01/telemetry", 100))
        publish_all(broker.url, [("gpu-twin/v1/c1/n01/status", b"online")], retain=True)
        broker.restart()  # SIGTERM saves mosquitto.db; the new process loads it
        with MessageCollector(
            broker.url, "gpu-twin/v1/#", client_id="twin-service", clean_session=False
        ) as back:
            got = back.wait_for(102, timeout_s=3, quiet_s=0.3)
    telemetry = [m.payload for m in got if m.topic.endswith("/telemetry")]
    assert values(telemetry) == list(range(100))
    # The status arrives queued and again as retained on re-subscribing (both are MQTT 3.1.1 behaviour).
    status = [m for m in got if m.topic.endswith("/status")]
    assert {m.payload for m in status} == {b"online"}
    assert any(m.retain for m in status)


def test_payloads_over_256_kib_are_acknowledged_but_not_forwarded() -> None:
    kib = 1024
    with (
        MosquittoProcess(production_conf_variant()) as broker,
        MessageCollector(broker.url, "gpu-twin/v1/#") as twin,
    ):
        publish_all(
            broker.url,
            [
                ("gpu-twin/v1/c1/n01/telemetry", b"a" * (256 * kib)),  # at the limit: forwarded
                ("gpu-twin/v1/c1/n01/telemetry", b"b" * (256 * kib + 1)),  # over it: dropped
                ("gpu-twin/v1/c1/n01/telemetry", b"end"),
            ],
        )
        got = twin.wait_for(2, timeout_s=2)
    assert [(len(m.payload), m.payload[:1]) for m in got] == [(256 * kib, b"a"), (3, b"e")]


# --- authentication and ACL ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AclBroker:
    port: int
    passwords: dict[str, str]

    def url(self, user: str | None, password: str | None = None) -> str:
        if user is None:
            return f"mqtt://127.0.0.1:{self.port}"
        secret = self.passwords[user] if password is None else password
        return f"mqtt://{user}:{secret}@127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclBroker]:
    require_mosquitto()
    mosquitto_passwd = require_tool("/usr/bin/mosquitto_passwd", "mosquitto_passwd")
    directory = tmp_path_factory.mktemp("acl")
    os.chmod(directory, 0o755)  # readable by the broker whichever user it runs as
    passwd = directory / "passwd"
    made = subprocess.run(
        [str(MOSQUITTO_DIR / "make-passwd.sh"), str(passwd), "n01", "n02"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MOSQUITTO_PASSWD": mosquitto_passwd},
    )
    passwords = dict(line.split(" ", 1) for line in made.stdout.splitlines())
    assert set(passwords) == {"twin", "jobs", "n01", "n02"}
    assert all(password not in passwd.read_text() for password in passwords.values())  # hashed
    os.chmod(passwd, 0o644)
    acl = directory / "acl"
    shutil.copyfile(MOSQUITTO_DIR / "acl.example", acl)
    with MosquittoProcess(production_conf_variant(password_file=passwd, acl_file=acl)) as broker:
        yield AclBroker(broker.port, passwords)


def test_node_can_publish_its_own_topics_but_not_another_nodes(acl_broker: AclBroker) -> None:
    with MessageCollector(acl_broker.url("twin"), "gpu-twin/v1/#") as twin:
        publish_all(
            acl_broker.url("n01"),
            [
                ("gpu-twin/v1/c1/n02/telemetry", b"forged"),  # denied (MQTT 3.1.1: acked, then dropped)
                ("gpu-twin/v1/c1/n01/commands", b"forged"),  # denied: only the twin sends commands
                ("gpu-twin/v1/c1/n01/status", b"online"),
                ("gpu-twin/v1/c1/n01/telemetry", b"mine"),
            ],
        )
        # Messages from one client arrive in order, so once the last one is here, any allowed forgery
        # would have arrived before it.
        got = twin.wait_for(2, timeout_s=2)
    assert [(m.topic, m.payload) for m in got] == [
        ("gpu-twin/v1/c1/n01/status", b"online"),
        ("gpu-twin/v1/c1/n01/telemetry", b"mine"),
    ]


def test_node_reads_only_its_own_commands(acl_broker: AclBroker) -> None:
    with (
        MessageCollector(acl_broker.url("n01"), "gpu-twin/v1/+/+/commands") as node,
        MessageCollector(acl_broker.url("twin"), "gpu-twin/v1/+/+/commands") as control,
    ):
        publish_all(
            acl_broker.url("twin"),
            [("gpu-twin/v1/c1/n02/commands", b"for n02"), ("gpu-twin/v1/c1/n01/commands", b"for n01")],
        )
        assert len(control.wait_for(2, timeout_s=2)) == 2  # both commands were published
        got = node.wait_for(1, timeout_s=2)
    assert [(m.topic, m.payload) for m in got] == [("gpu-twin/v1/c1/n01/commands", b"for n01")]


def test_jobs_account_publishes_job_events_only(acl_broker: AclBroker) -> None:
    with MessageCollector(acl_broker.url("twin"), "gpu-twin/v1/#") as twin:
        publish_all(
            acl_broker.url("jobs"),
            [("gpu-twin/v1/c1/n01/telemetry", b"forged"), ("gpu-twin/v1/c1/jobs/j42/events", b"{}")],
        )
        got = twin.wait_for(1, timeout_s=2)
    assert [m.topic for m in got] == ["gpu-twin/v1/c1/jobs/j42/events"]


@pytest.mark.parametrize(("user", "password"), [(None, None), ("n01", "wrong"), ("nobody", "x")])
def test_anonymous_and_bad_credentials_are_refused(
    acl_broker: AclBroker, user: str | None, password: str | None
) -> None:
    client = make_client()
    reason = connect(client, acl_broker.url(user, password))
    client.loop_stop()
    assert reason.is_failure
    assert reason.getName() in {"Not authorized", "Bad user name or password"}


def test_missing_tool_skips_or_fails_when_services_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWIN_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_tool("/nonexistent/mosquitto")
    monkeypatch.setenv("TWIN_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="TWIN_REQUIRE_SERVICES=1"):
        require_tool("/nonexistent/mosquitto")


def test_make_passwd_refuses_to_overwrite(tmp_path: Path) -> None:
    existing = tmp_path / "passwd"
    existing.write_text("keep me\n")
    result = subprocess.run(
        [str(MOSQUITTO_DIR / "make-passwd.sh"), str(existing), "n01"], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "exists" in result.stderr
    assert existing.read_text() == "keep me\n"
