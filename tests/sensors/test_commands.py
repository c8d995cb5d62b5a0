"""The command contract: canonical JSON, HMAC signatures, freshness, replay cache, whitelist, outcomes."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

import orjson
import pytest

from sensors.commands import (
    MAX_COMMAND_BYTES,
    MAX_COMMAND_TTL_S,
    Action,
    Command,
    CommandOutcome,
    CommandRejected,
    CommandSecret,
    CommandVerifier,
    OutcomeKind,
    RejectReason,
    ReplayCache,
    canonical_json,
    parse_outcome,
    sign_command,
)
from sensors.contract import Topics
from sensors.errors import ContractError

SECRET_TEXT = "test-secret-0123456789abcdef-0123456789abcdef"
SECRET = CommandSecret.from_text(SECRET_TEXT)
NOW = 1_767_225_600.0
ID = "0123456789abcdef0123456789abcdef"


def command(**overrides: Any) -> Command:
    fields: dict[str, Any] = {
        "id": ID,
        "cluster": "demo",
        "node": "n01",
        "action": Action.POWER_CAP,
        "params": {"power_cap_w": 550.0},
        "issued_ts": NOW,
        "expires_ts": NOW + 120.0,
        "reason": "saves 9 % energy",
    }
    fields.update(overrides)
    return Command(**fields)


def verifier(**overrides: Any) -> CommandVerifier:
    fields: dict[str, Any] = {"secret": SECRET, "cluster": "demo", "nodes": ("n01", "n02")}
    fields.update(overrides)
    return CommandVerifier(**fields)


def resign(body: dict[str, Any], secret: CommandSecret = SECRET) -> bytes:
    """Sign an arbitrary body (what a twin with the secret could send)."""
    body = {k: v for k, v in body.items() if k != "sig"}
    return orjson.dumps({**body, "sig": secret.mac(canonical_json(body))})


def rejected(
    payload: bytes, node: str = "n01", now: float = NOW, v: CommandVerifier | None = None
) -> CommandRejected:
    with pytest.raises(CommandRejected) as info:
        (v or verifier()).verify(payload, node, now)
    return info.value


def test_signed_command_round_trips() -> None:
    got = verifier().verify(sign_command(command(), SECRET), "n01", NOW + 1)
    assert got == command()
    assert got.params["power_cap_w"] == 550.0


def test_signature_is_hmac_sha256_of_the_canonical_body() -> None:
    payload = orjson.loads(sign_command(command(), SECRET))
    sig = payload.pop("sig")
    canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    assert sig == hmac.new(SECRET_TEXT.encode(), canonical, hashlib.sha256).hexdigest()
    assert canonical.startswith(b'{"action":"power_cap","cluster":"demo","expires_ts":')


def test_key_order_and_whitespace_on_the_wire_do_not_matter() -> None:
    body = orjson.loads(sign_command(command(), SECRET))
    reordered = (
        "{\n  "
        + ",\n  ".join(
            f"{orjson.dumps(k).decode()}: {orjson.dumps(v).decode()}" for k, v in reversed(body.items())
        )
        + "\n}"
    ).encode()
    assert verifier().verify(reordered, "n01", NOW) == command()


def test_unsigned_command_is_rejected() -> None:
    body = command().body()
    err = rejected(orjson.dumps(body))
    assert (err.reason, err.field, err.command_id) == (RejectReason.UNSIGNED, "sig", ID)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(params={"power_cap_w": 200.0}),  # altered after signing
        lambda b: b.update(node="n02"),  # redirected to another node
        lambda b: b.update(expires_ts=NOW + 599),  # lifetime stretched
        lambda b: b.update(sig="0" * 64),
    ],
)
def test_altered_command_fails_the_signature(mutate: Any) -> None:
    body = orjson.loads(sign_command(command(), SECRET))
    mutate(body)
    assert rejected(orjson.dumps(body)).reason is RejectReason.BAD_SIGNATURE


def test_wrong_secret_fails_the_signature() -> None:
    other = CommandSecret.from_text("another-secret-0123456789abcdef-0123456789")
    err = rejected(sign_command(command(), other))
    assert err.reason is RejectReason.BAD_SIGNATURE and "sig" in str(err)


def test_malformed_signature_field_is_rejected() -> None:
    body = command().body()
    for sig in (12, "XYZ", "A" * 64):
        assert rejected(orjson.dumps({**body, "sig": sig})).reason is RejectReason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", RejectReason.MALFORMED),
        (b"{not json", RejectReason.MALFORMED),
        (b"[1, 2]", RejectReason.MALFORMED),
        (b'"text"', RejectReason.MALFORMED),
        (b'{"power_cap_w": NaN}', RejectReason.MALFORMED),
        (b"\xff\xfe", RejectReason.MALFORMED),
        (b"{" + b" " * MAX_COMMAND_BYTES + b"}", RejectReason.TOO_LARGE),
    ],
)
def test_junk_is_rejected_with_a_reason(payload: bytes, reason: RejectReason) -> None:
    err = rejected(payload)
    assert err.reason is reason and str(err)


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"schema": 2}, RejectReason.UNSUPPORTED_SCHEMA, "schema"),
        ({"extra": 1}, RejectReason.MALFORMED, "extra"),
        ({"id": "not-a-nonce"}, RejectReason.MALFORMED, "id"),
        ({"node": "n/1"}, RejectReason.MALFORMED, "node"),
        ({"issued_ts": "now"}, RejectReason.MALFORMED, "issued_ts"),
        ({"expires_ts": NOW - 1}, RejectReason.MALFORMED, "expires_ts"),
        ({"expires_ts": NOW + MAX_COMMAND_TTL_S + 1}, RejectReason.MALFORMED, "expires_ts"),
        ({"reason": 42}, RejectReason.MALFORMED, "reason"),
        ({"action": "reboot"}, RejectReason.UNKNOWN_ACTION, "action"),
        ({"params": [550]}, RejectReason.MALFORMED, "params"),
        ({"params": {}}, RejectReason.BAD_PARAMS, "params.power_cap_w"),
        ({"params": {"power_cap_w": "550"}}, RejectReason.BAD_PARAMS, "params.power_cap_w"),
        ({"params": {"power_cap_w": True}}, RejectReason.BAD_PARAMS, "params.power_cap_w"),
        ({"params": {"power_cap_w": 550, "gpus": [0]}}, RejectReason.BAD_PARAMS, "params.gpus"),
        ({"params": {"power_cap_w": 0}}, RejectReason.OUT_OF_RANGE, "params.power_cap_w"),
        ({"params": {"power_cap_w": -5}}, RejectReason.OUT_OF_RANGE, "params.power_cap_w"),
        ({"params": {"power_cap_w": 1e9}}, RejectReason.OUT_OF_RANGE, "params.power_cap_w"),
        ({"cluster": "other"}, RejectReason.WRONG_TARGET, "cluster"),
        ({"node": "n02"}, RejectReason.WRONG_TARGET, "node"),  # signed for n02, arrived on n01's topic
    ],
)
def test_signed_but_invalid_commands_are_rejected_naming_the_field(
    change: dict[str, Any], reason: RejectReason, field: str
) -> None:
    body = {**command().body(), **change}
    err = rejected(resign(body))
    assert (err.reason, err.field) == (reason, field), str(err)


def test_missing_key_is_named() -> None:
    body = command().body()
    del body["issued_ts"]
    err = rejected(resign(body))
    assert (err.reason, err.field) == (RejectReason.MALFORMED, "issued_ts")


def test_checkpoint_now_params() -> None:
    good = command(action=Action.CHECKPOINT_NOW, params={"job_id": "pretrain-70b", "risk": 0.8})
    assert verifier().verify(sign_command(good, SECRET), "n01", NOW).params["job_id"] == "pretrain-70b"
    for params, reason in (
        ({"job_id": "a/b"}, RejectReason.BAD_PARAMS),
        ({"risk": 0.5}, RejectReason.BAD_PARAMS),
        ({"job_id": "j", "risk": 1.5}, RejectReason.OUT_OF_RANGE),
    ):
        body = {**good.body(), "id": "f" * 32, "params": params}
        assert rejected(resign(body)).reason is reason


def test_null_power_cap_means_restore_the_default() -> None:
    cmd = command(params={"power_cap_w": None})
    assert verifier().verify(sign_command(cmd, SECRET), "n01", NOW).params == {"power_cap_w": None}


def test_stale_and_future_commands_are_rejected() -> None:
    payload = sign_command(command(), SECRET)
    skew = verifier().max_clock_skew_s
    assert rejected(payload, now=NOW + 120 + skew + 0.1).reason is RejectReason.STALE
    assert rejected(payload, now=NOW - skew - 0.1).reason is RejectReason.NOT_YET_VALID
    assert verifier().verify(payload, "n01", NOW + 120 + skew) == command()  # at the edge of the window
    assert verifier().verify(payload, "n01", NOW - skew) == command()


def test_replayed_command_is_rejected() -> None:
    v = verifier()
    payload = sign_command(command(), SECRET)
    v.verify(payload, "n01", NOW)
    err = rejected(payload, now=NOW + 1, v=v)
    assert (err.reason, err.field, err.command_id) == (RejectReason.REPLAYED, "id", ID)


def test_rejected_stale_replay_stays_rejected_after_the_id_is_forgotten() -> None:
    v = verifier()
    payload = sign_command(command(), SECRET)
    v.verify(payload, "n01", NOW)
    later = NOW + 120 + v.max_clock_skew_s + 1
    assert rejected(payload, now=later, v=v).reason is RejectReason.STALE
    v.replay.admit("e" * 32, later + 100, later)  # any admit expires old ids
    assert ID not in v.replay


def test_replay_cache_memory_is_bounded_without_replay_holes() -> None:
    cache = ReplayCache(capacity=3)
    for i in range(3):
        assert cache.admit(f"{i:032x}", forget_after_s=100.0 + i, now_s=0.0)
    assert cache.admit(f"{9:032x}", forget_after_s=200.0, now_s=0.0)  # evicts id 0 (forget at 100)
    assert len(cache) == 3 and cache.evicted == 1 and cache.floor_s == 100.0
    # The evicted id (and anything expiring no later) is refused: it may have been seen.
    assert not cache.admit(f"{0:032x}", forget_after_s=100.0, now_s=1.0)
    assert not cache.admit(f"{1:032x}", forget_after_s=101.0, now_s=1.0)  # still remembered
    assert cache.admit(f"{7:032x}", forget_after_s=150.0, now_s=1.0)


def test_replay_cache_forgets_expired_ids() -> None:
    cache = ReplayCache(capacity=10)
    cache.admit(ID, forget_after_s=10.0, now_s=0.0)
    assert not cache.admit(ID, forget_after_s=10.0, now_s=5.0)
    cache.admit("f" * 32, forget_after_s=30.0, now_s=11.0)
    assert ID not in cache and len(cache) == 1


def test_secret_is_never_shown() -> None:
    assert SECRET_TEXT not in repr(SECRET) and SECRET_TEXT not in str(SECRET)
    assert SECRET_TEXT not in repr(verifier())
    with pytest.raises(TypeError):
        pickle.dumps(SECRET)
    with pytest.raises(ContractError, match="at least 32") as info:
        CommandSecret.from_text("short-secret")
    assert "short-secret" not in str(info.value)


def test_secret_text_is_stripped() -> None:
    assert CommandSecret.from_text(SECRET_TEXT + "\n").mac(b"x") == SECRET.mac(b"x")


def test_command_validates_its_fields() -> None:
    with pytest.raises(ContractError, match="id"):
        command(id="xyz")
    with pytest.raises(ContractError, match="expires_ts"):
        command(expires_ts=NOW)
    with pytest.raises(ContractError, match="power_cap_w"):
        command(params={"power_cap_w": -1})
    with pytest.raises(ContractError, match="action"):
        command(action="reboot")


def test_outcome_round_trip_and_validation() -> None:
    out = CommandOutcome("n01", NOW, OutcomeKind.REJECTED, ID, "power_cap", "replayed", "id", "seen before")
    assert parse_outcome(orjson.dumps(out.to_payload())) == out
    unreadable = CommandOutcome("n01", NOW, OutcomeKind.REJECTED, None, None, "malformed", None, "not JSON")
    assert parse_outcome(orjson.dumps(unreadable.to_payload())) == unreadable
    for bad in (b"[]", b'{"schema": 1}', orjson.dumps({**out.to_payload(), "outcome": "exploded"})):
        with pytest.raises(ContractError):
            parse_outcome(bad)


def test_outcome_topic() -> None:
    topics = Topics("demo")
    assert topics.command_outcome("n01") == "gpu-twin/v1/demo/n01/commands/outcome"
    assert topics.command_outcome() == "gpu-twin/v1/demo/+/commands/outcome"
    assert topics.commands("n01") == "gpu-twin/v1/demo/n01/commands"  # unchanged
    with pytest.raises(ContractError):
        topics.command_outcome("n/1")
