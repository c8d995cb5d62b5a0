"""The node agent without a broker: dry-run, applying to a simulated cluster and to (fake) NVML, device
ranges, NVML's NoPermission, checkpoint markers, junk input, queueing, and no secret in the logs."""

# The fake mirrors pynvml's function names.
# ruff: noqa: N802

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pynvml
import pytest

from sensors.command_agent import (
    ActionHandler,
    ActionNotPermitted,
    AgentSettings,
    CommandAgent,
    CommandProcessor,
    checkpoint_handler,
    nvml_power_cap_handler,
    simulated_power_cap_handler,
)
from sensors.commands import Action, Command, CommandSecret, CommandVerifier, OutcomeKind, sign_command
from sensors.contract import Topics
from sensors.mqtt_url import parse_broker_url
from sensors.nvml import NvmlPowerLimits, PowerLimitNotPermitted
from sensors.simulated import SimulatedCluster

SECRET_TEXT = "agent-test-secret-0123456789abcdef-0123456789"
SECRET = CommandSecret.from_text(SECRET_TEXT)
T0 = 1_767_225_600.0
_ids = iter(range(1, 1_000_000))


def make(action: Action = Action.POWER_CAP, node: str = "n00", **params: Any) -> bytes:
    if not params:
        params = {"power_cap_w": 250.0}
    cmd = Command(
        id=f"{next(_ids):032x}",
        cluster="demo",
        node=node,
        action=action,
        params=params,
        issued_ts=T0,
        expires_ts=T0 + 60.0,
        reason="test",
    )
    return sign_command(cmd, SECRET)


def processor(
    handlers: dict[Action, ActionHandler], *, apply: bool, nodes: tuple[str, ...] = ("n00",)
) -> CommandProcessor:
    return CommandProcessor(CommandVerifier(SECRET, cluster="demo", nodes=nodes), handlers, apply=apply)


def busy_power_w(cluster: SimulatedCluster, node: str, now_s: float) -> list[float]:
    reading = cluster.read(now_s)
    (sample,) = [s for s in reading.samples if s.node == node]
    return [g.power_w for g in sample.gpus]


# --- simulated cluster ----------------------------------------------------------------------------------


def test_dry_run_verifies_and_describes_but_changes_nothing() -> None:
    cluster = SimulatedCluster(nodes=8, gpus_per_node=2, seed=1, failure_rate_scale=0.0)
    cluster.read(T0)
    p = processor({Action.POWER_CAP: simulated_power_cap_handler(cluster)}, apply=False)
    outcome = p.process("n00", make(), T0)
    assert outcome.outcome is OutcomeKind.DRY_RUN
    assert outcome.detail == "would cap power at 250 W on 2 simulated GPUs"
    readings = [w for k in range(1, 20) for w in busy_power_w(cluster, "n00", T0 + 0.37 * k)]
    assert max(readings) > 300  # unchanged: busy A100s draw ~392 W while computing


def test_applied_cap_holds_the_simulated_node_below_it() -> None:
    cluster = SimulatedCluster(nodes=8, gpus_per_node=2, seed=1, failure_rate_scale=0.0)
    cluster.read(T0)
    p = processor({Action.POWER_CAP: simulated_power_cap_handler(cluster)}, apply=True)
    assert p.process("n00", make(), T0).outcome is OutcomeKind.APPLIED
    readings = [w for k in range(1, 20) for w in busy_power_w(cluster, "n00", T0 + 0.37 * k)]
    assert max(readings) <= 250.0 and max(readings) > 200.0
    assert p.process("n00", make(power_cap_w=None), T0 + 10).outcome is OutcomeKind.APPLIED
    assert max(w for k in range(1, 20) for w in busy_power_w(cluster, "n00", T0 + 10 + 0.37 * k)) > 300


def test_cap_outside_the_simulated_gpus_range_is_rejected() -> None:
    cluster = SimulatedCluster(nodes=8, gpus_per_node=2, seed=1, failure_rate_scale=0.0)
    p = processor({Action.POWER_CAP: simulated_power_cap_handler(cluster)}, apply=True)
    for cap in (50.0, 450.0):  # A100-SXM4: below a quarter of TDP, above TDP (400 W)
        outcome = p.process("n00", make(power_cap_w=cap), T0)
        assert (outcome.outcome, outcome.reason, outcome.field) == (
            OutcomeKind.REJECTED,
            "out_of_range",
            "params.power_cap_w",
        )
        assert "allowed range [100, 400] W" in (outcome.detail or "")


# --- NVML (fake) ---------------------------------------------------------------------------------------


class FakePowerNvml:
    """pynvml's power-limit entry points over two fake GPUs (limits in mW, as NVML)."""

    NVMLError = pynvml.NVMLError

    def __init__(self, *, set_error: int | None = None) -> None:
        for name in dir(pynvml):
            if name.startswith("NVML_"):
                setattr(self, name, getattr(pynvml, name))
        self.limits_mw = [700_000, 700_000]
        self.set_error = set_error
        self.initialised = 0

    def nvmlInit(self) -> None:
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.limits_mw)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: int) -> list[int]:
        return [200_000, 700_000]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: int) -> int:
        return 700_000

    def nvmlDeviceGetPowerManagementLimit(self, handle: int) -> int:
        return self.limits_mw[handle]

    def nvmlDeviceSetPowerManagementLimit(self, handle: int, limit_mw: int) -> None:
        if self.set_error is not None:
            raise pynvml.NVMLError(self.set_error)
        self.limits_mw[handle] = limit_mw


def test_nvml_power_limits_convert_milliwatts_once() -> None:
    fake = FakePowerNvml()
    limits = NvmlPowerLimits(nvml_module=fake)
    assert limits.gpu_count == 2
    assert limits.constraints_w(0) == (200.0, 700.0)
    limits.set_limit_w(1, 512.5)
    assert fake.limits_mw == [700_000, 512_500]
    assert limits.limit_w(1) == 512.5 and limits.default_limit_w(1) == 700.0
    limits.close()
    limits.close()
    assert fake.initialised == 0


def test_nvml_no_permission_becomes_not_permitted() -> None:
    limits = NvmlPowerLimits(nvml_module=FakePowerNvml(set_error=pynvml.NVML_ERROR_NO_PERMISSION))
    with pytest.raises(PowerLimitNotPermitted, match="GPU 0"):
        limits.set_limit_w(0, 500.0)


def test_nvml_handler_applies_to_every_gpu_within_its_range() -> None:
    fake = FakePowerNvml()
    p = processor({Action.POWER_CAP: nvml_power_cap_handler(NvmlPowerLimits(nvml_module=fake))}, apply=True)
    outcome = p.process("n00", make(power_cap_w=550.0), T0)
    assert (outcome.outcome, outcome.detail) == (
        OutcomeKind.APPLIED,
        "cap power at 550 W on 2 GPU(s) via NVML",
    )
    assert fake.limits_mw == [550_000, 550_000]
    low = p.process("n00", make(power_cap_w=150.0), T0)
    assert (low.outcome, low.reason) == (OutcomeKind.REJECTED, "out_of_range")
    assert "[200, 700] W" in (low.detail or "") and fake.limits_mw == [550_000, 550_000]
    assert p.process("n00", make(power_cap_w=None), T0).outcome is OutcomeKind.APPLIED
    assert fake.limits_mw == [700_000, 700_000]  # the default limit restored


def test_nvml_handler_without_root_reports_not_permitted(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakePowerNvml(set_error=pynvml.NVML_ERROR_NO_PERMISSION)
    p = processor({Action.POWER_CAP: nvml_power_cap_handler(NvmlPowerLimits(nvml_module=fake))}, apply=True)
    with caplog.at_level(logging.WARNING, logger="sensors.command_agent"):
        outcome = p.process("n00", make(power_cap_w=550.0), T0)
    assert (outcome.outcome, outcome.reason) == (OutcomeKind.NOT_PERMITTED, "device")
    assert "GPU 0" in (outcome.detail or "") and "not_permitted" in caplog.text
    assert fake.limits_mw == [700_000, 700_000]


# --- checkpoint advisories -------------------------------------------------------------------------------


def test_checkpoint_advisory_writes_the_marker(tmp_path: Path) -> None:
    p = processor({Action.CHECKPOINT_NOW: checkpoint_handler(tmp_path / "markers")}, apply=True)
    payload = make(Action.CHECKPOINT_NOW, job_id="pretrain-70b", risk=0.8)
    outcome = p.process("n00", payload, T0)
    marker = tmp_path / "markers" / "pretrain-70b.checkpoint-now.json"
    assert outcome.outcome is OutcomeKind.APPLIED and str(marker) in (outcome.detail or "")
    content = json.loads(marker.read_text())
    assert content["job_id"] == "pretrain-70b" and content["risk"] == 0.8
    assert content["command_id"] == outcome.command_id
    assert [f.name for f in marker.parent.iterdir()] == [marker.name]  # no temporary file left


def test_checkpoint_advisory_without_marker_dir_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    p = processor({Action.CHECKPOINT_NOW: checkpoint_handler(None)}, apply=True)
    with caplog.at_level(logging.WARNING, logger="sensors.command_agent"):
        outcome = p.process("n00", make(Action.CHECKPOINT_NOW, job_id="j1", risk=0.6), T0)
    assert outcome.outcome is OutcomeKind.APPLIED
    assert "checkpoint advisory for job j1" in caplog.text


def test_checkpoint_dry_run_writes_nothing(tmp_path: Path) -> None:
    p = processor({Action.CHECKPOINT_NOW: checkpoint_handler(tmp_path)}, apply=False)
    outcome = p.process("n00", make(Action.CHECKPOINT_NOW, job_id="j1"), T0)
    assert outcome.outcome is OutcomeKind.DRY_RUN and not list(tmp_path.iterdir())


# --- robustness ------------------------------------------------------------------------------------------


def test_junk_is_rejected_counted_and_the_agent_goes_on() -> None:
    cluster = SimulatedCluster(nodes=8, gpus_per_node=2, seed=1, failure_rate_scale=0.0)
    p = processor({Action.POWER_CAP: simulated_power_cap_handler(cluster)}, apply=True)
    junk = [b"", b"\x00\xff", b"[]", b"{}", b'{"sig": 5}', b"9" * 10_000, orjson.dumps({"a": [[[[1]]]]})]
    outcomes = [p.process("n00", j, T0) for j in junk]
    assert all(o.outcome is OutcomeKind.REJECTED and o.reason for o in outcomes)
    good = make()
    assert p.process("n00", good, T0).outcome is OutcomeKind.APPLIED
    assert p.process("n00", good, T0 + 1).reason == "replayed"
    assert p.stats.received == len(junk) + 2
    assert p.stats.outcomes == {"rejected": len(junk) + 1, "applied": 1}
    assert p.stats.rejected["too_large"] == 1 and p.stats.rejected["replayed"] == 1


def test_a_handler_crash_is_a_failed_outcome_not_a_dead_agent() -> None:
    def explode(_command: Command) -> str:
        raise RuntimeError("driver wedged")

    handler = ActionHandler(describe=lambda c: "x", apply=explode)
    p = processor({Action.POWER_CAP: handler}, apply=True)
    outcome = p.process("n00", make(), T0)
    assert (outcome.outcome, outcome.detail) == (OutcomeKind.FAILED, "RuntimeError: driver wedged")
    refused = ActionHandler(
        describe=lambda c: "x", apply=lambda c: (_ for _ in ()).throw(ActionNotPermitted("no"))
    )
    assert (
        processor({Action.POWER_CAP: refused}, apply=True).process("n00", make(), T0).outcome
        is OutcomeKind.NOT_PERMITTED
    )


def test_action_without_a_handler_is_rejected() -> None:
    p = processor({}, apply=True)
    outcome = p.process("n00", make(), T0)
    assert (outcome.outcome, outcome.reason, outcome.field) == (
        OutcomeKind.REJECTED,
        "unknown_action",
        "action",
    )


def test_agent_queues_own_topics_only_and_bounds_the_queue() -> None:
    cluster = SimulatedCluster(nodes=8, gpus_per_node=2, seed=1, failure_rate_scale=0.0)
    p = processor({Action.POWER_CAP: simulated_power_cap_handler(cluster)}, apply=False, nodes=("n00", "n01"))
    settings = AgentSettings(
        parse_broker_url("mqtt://127.0.0.1:1"), Topics("demo"), ("n00", "n01"), max_pending=2
    )
    agent = CommandAgent(settings, p, clock=lambda: T0)
    assert settings.resolved_client_id() == "twin-agent-demo-n00-x2"

    def deliver(topic: str, payload: bytes) -> None:
        message = mqtt.MQTTMessage(topic=topic.encode())
        message.payload = payload
        agent._on_message(None, None, message)  # type: ignore[arg-type]

    deliver("gpu-twin/v1/demo/n05/commands", make(node="n05"))  # not ours
    deliver("gpu-twin/v1/demo/n00/commands", make(node="n00"))
    deliver("gpu-twin/v1/demo/n01/commands", make(node="n00"))  # signed for n00, sent to n01
    deliver("gpu-twin/v1/demo/n01/commands", make(node="n01"))  # queue full: dropped
    assert (agent.stats.ignored, agent.stats.dropped) == (1, 1)
    assert agent.process_pending() == 2
    assert agent.stats.outcomes == {"dry_run": 1, "rejected": 1}
    assert agent.stats.rejected == {"wrong_target": 1}
    agent.close()


def test_no_secret_in_logs(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    cluster = SimulatedCluster(nodes=8, gpus_per_node=2, seed=1, failure_rate_scale=0.0)
    handlers = {
        Action.POWER_CAP: simulated_power_cap_handler(cluster),
        Action.CHECKPOINT_NOW: checkpoint_handler(tmp_path),
    }
    p = processor(handlers, apply=True)
    forged = sign_command(
        Command(f"{9:032x}", "demo", "n00", Action.POWER_CAP, {"power_cap_w": 300.0}, T0, T0 + 60),
        CommandSecret.from_text("x" * 40),
    )
    with caplog.at_level(logging.DEBUG):
        outcomes = [
            p.process("n00", payload, T0)
            for payload in (
                make(),
                make(Action.CHECKPOINT_NOW, job_id="j"),
                forged,
                b"junk",
                make(power_cap_w=9.0),
            )
        ]
    assert {o.outcome for o in outcomes} == {OutcomeKind.APPLIED, OutcomeKind.REJECTED}
    assert caplog.records  # something was logged
    assert SECRET_TEXT not in caplog.text
    assert all(SECRET_TEXT not in orjson.dumps(o.to_payload()).decode() for o in outcomes)
    assert SECRET_TEXT not in (tmp_path / "j.checkpoint-now.json").read_text()
