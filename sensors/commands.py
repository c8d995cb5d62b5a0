"""The command contract (twin → node advisories, DESIGN §4): payload, signature, freshness, whitelist.

Pure: no I/O, no clock (callers pass `now_s`), no global state. The twin builds a `Command`, signs it with
`sign_command` and publishes the JSON on `{root}/{cluster}/{node}/commands`; the node agent hands the raw
bytes to `CommandVerifier.verify`, which returns the `Command` or raises `CommandRejected` with a stable
reason code and the offending field. A command payload (UTF-8 JSON object, every key required except
`reason`)::

    {"schema": 1, "id": "9f0c…(32 hex)", "cluster": "demo", "node": "n03", "action": "power_cap",
     "params": {"power_cap_w": 550.0}, "issued_ts": 1767225600.0, "expires_ts": 1767225720.0,
     "reason": "saves 9.8 % energy for 4.7 % slowdown", "sig": "(64 hex)"}

- `sig` is HMAC-SHA256 (RFC 2104, FIPS 180-4) with the shared secret over the *canonical JSON* of every
  other key: keys sorted, no whitespace, UTF-8 (`canonical_json`). The verifier re-serialises what it
  parsed, so key order and spacing on the wire do not matter, and compares in constant time.
- `id` is a 128-bit random nonce in lowercase hex (the command id): each may be used once. The replay
  cache remembers ids until their command could no longer pass the freshness check, in bounded memory.
- Freshness: `issued_ts` ≤ now + `max_clock_skew_s`, now ≤ `expires_ts` + `max_clock_skew_s`, and
  0 < `expires_ts` − `issued_ts` ≤ `MAX_COMMAND_TTL_S`.
- `cluster` and `node` bind the command to its target: a signed command copied to another node's topic
  is refused (`wrong_target`).
- Whitelisted actions (`ACTIONS`) with their parameters and bounds; anything else is refused.

The outcome the node reports back (`CommandOutcome`, on `{root}/{cluster}/{node}/commands/outcome`) is
not signed: the broker's ACL lets only that node's account publish there (deploy/mosquitto/acl.example).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import orjson

from sensors.contract import MAX_POWER_W, SEGMENT_PATTERN, check_segment
from sensors.errors import ContractError, SensorError

COMMAND_SCHEMA_VERSION: Final = 1
# RFC 2104 §3: "less than L bytes is strongly discouraged" (L = 32, SHA-256's output length).
MIN_SECRET_BYTES: Final = 32
SIGNATURE_HEX_CHARS: Final = 64  # SHA-256 output, 32 bytes as hex
NONCE_HEX_CHARS: Final = 32  # 128 random bits (the birthday bound makes a collision negligible)
_NONCE: Final = re.compile(rf"[0-9a-f]{{{NONCE_HEX_CHARS}}}")
_SIGNATURE: Final = re.compile(rf"[0-9a-f]{{{SIGNATURE_HEX_CHARS}}}")
# ASSUMPTION: the largest valid command is ~450 bytes; 4 KiB refuses junk before it is parsed.
MAX_COMMAND_BYTES: Final = 4_096
# ASSUMPTION: an advisory is computed from 1 Hz telemetry; after 10 minutes the state it was based on is
# gone, so no command may live longer.
MAX_COMMAND_TTL_S: Final = 600.0
# ASSUMPTION: NTP keeps hosts within milliseconds; 30 s tolerates a badly synchronised host without
# opening a long replay window.
DEFAULT_MAX_CLOCK_SKEW_S: Final = 30.0
# ASSUMPTION: a twin issues at most a few commands per node per minute; 10,000 remembered ids (~1 MB)
# cover a 1,000-node cluster's TTL window many times over.
DEFAULT_REPLAY_CAPACITY: Final = 10_000
MAX_REASON_CHARS: Final = 256
# Risk scores are probabilities.
MIN_RISK: Final = 0.0
MAX_RISK: Final = 1.0

PAYLOAD_KEYS: Final = frozenset(
    {"schema", "id", "cluster", "node", "action", "params", "issued_ts", "expires_ts", "reason", "sig"}
)
REQUIRED_KEYS: Final = PAYLOAD_KEYS - {"reason"}


class CommandSecret:
    """The shared HMAC secret. Its value never appears in `repr`, `str` or an error message."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes):
            raise ContractError(f"command secret must be bytes, not {type(key).__name__}.")
        if len(key) < MIN_SECRET_BYTES:
            raise ContractError(
                f"command secret is {len(key)} bytes; it must be at least {MIN_SECRET_BYTES} "
                "(e.g. `openssl rand -hex 32`)."
            )
        self._key = key

    @classmethod
    def from_text(cls, text: str) -> CommandSecret:
        """The secret from text (a file's content or an environment variable), surrounding space stripped."""
        return cls(text.strip().encode("utf-8"))

    def mac(self, message: bytes) -> str:
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return "CommandSecret(***)"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickled (a multiprocessing queue would copy it around)
        raise TypeError("CommandSecret cannot be pickled.")


class Action(StrEnum):
    POWER_CAP = "power_cap"  # params: power_cap_w (W, or null: restore the device's default limit)
    CHECKPOINT_NOW = "checkpoint_now"  # params: job_id, risk (0–1, optional)


class ParamKind(StrEnum):
    NUMBER = "number"
    SEGMENT = "segment"  # a topic segment (job id)


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One action parameter: its type, whether it is required and may be null, and its bounds."""

    kind: ParamKind
    required: bool = True
    nullable: bool = False
    min_value: float | None = None  # exclusive when `min_exclusive`
    max_value: float | None = None
    min_exclusive: bool = False


# The whitelist. Device limits (NVML's allowed power range) are checked again by the agent's handler.
ACTIONS: Final[Mapping[Action, Mapping[str, ParamSpec]]] = MappingProxyType(
    {
        Action.POWER_CAP: MappingProxyType(
            {"power_cap_w": ParamSpec(ParamKind.NUMBER, True, True, 0.0, MAX_POWER_W, min_exclusive=True)}
        ),
        Action.CHECKPOINT_NOW: MappingProxyType(
            {
                "job_id": ParamSpec(ParamKind.SEGMENT),
                "risk": ParamSpec(ParamKind.NUMBER, required=False, min_value=MIN_RISK, max_value=MAX_RISK),
            }
        ),
    }
)


class RejectReason(StrEnum):
    """Why a command was refused (stable codes, stored and counted)."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"  # not JSON, not an object, a missing/unknown/mistyped key
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    WRONG_TARGET = "wrong_target"
    NOT_YET_VALID = "not_yet_valid"
    STALE = "stale"
    REPLAYED = "replayed"
    UNKNOWN_ACTION = "unknown_action"
    BAD_PARAMS = "bad_params"
    OUT_OF_RANGE = "out_of_range"


class CommandRejected(SensorError):  # noqa: N818 (it is an outcome, not a failure of ours)
    """A command the node refuses: `reason` (code), `field` (the offending key, if any), message, and the
    command id and action when they could be read (for the outcome report)."""

    def __init__(
        self,
        reason: RejectReason,
        message: str,
        *,
        field: str | None = None,
        command_id: str | None = None,
        action: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.command_id = command_id
        self.action = action


@dataclass(frozen=True, slots=True)
class Command:
    """One advisory for one node. `params` is plain JSON data (see `ACTIONS`)."""

    id: str
    cluster: str
    node: str
    action: Action
    params: Mapping[str, Any]
    issued_ts: float
    expires_ts: float
    reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _NONCE.fullmatch(self.id):
            raise ContractError(f"id(={self.id!r}) must be {NONCE_HEX_CHARS} lowercase hex digits.")
        check_segment("cluster", self.cluster)
        check_segment("node", self.node)
        try:
            object.__setattr__(self, "action", Action(self.action))
        except ValueError:
            raise ContractError(
                f"action(={self.action!r}) is not one of {[a.value for a in Action]}."
            ) from None
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        for name in ("issued_ts", "expires_ts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ContractError(f"{name}(={value!r}) must be a finite number of unix seconds.")
        ttl = self.expires_ts - self.issued_ts
        if not 0 < ttl <= MAX_COMMAND_TTL_S:
            raise ContractError(
                f"expires_ts − issued_ts(={ttl!r}) must be in (0, {MAX_COMMAND_TTL_S}] seconds."
            )
        if self.reason is not None and (
            not isinstance(self.reason, str) or len(self.reason) > MAX_REASON_CHARS
        ):
            raise ContractError(f"reason must be text of at most {MAX_REASON_CHARS} characters.")
        problem = check_params(self.action, self.params)
        if problem is not None:
            raise ContractError(problem[2])

    def body(self) -> dict[str, Any]:
        """The signed part of the payload (everything but `sig`)."""
        out: dict[str, Any] = {
            "schema": COMMAND_SCHEMA_VERSION,
            "id": self.id,
            "cluster": self.cluster,
            "node": self.node,
            "action": str(self.action),
            "params": dict(self.params),
            "issued_ts": self.issued_ts,
            "expires_ts": self.expires_ts,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def canonical_json(body: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: keys sorted at every level, no whitespace, UTF-8, no NaN/Infinity."""
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # orjson's JSONEncodeError (non-JSON value, non-str key)
        raise ContractError(f"command body is not plain JSON: {exc}") from None


def sign_command(command: Command, secret: CommandSecret) -> bytes:
    """The wire payload of `command`: its body plus `sig`, as JSON bytes."""
    body = command.body()
    payload = {**body, "sig": secret.mac(canonical_json(body))}
    return orjson.dumps(payload)


def check_params(action: Action, params: Mapping[str, Any]) -> tuple[RejectReason, str, str] | None:
    """None when `params` fit the whitelist of `action`, else (reason, field, message)."""
    specs = ACTIONS[action]
    for key in params:
        if key not in specs:
            allowed = ", ".join(sorted(specs))
            return (
                RejectReason.BAD_PARAMS,
                f"params.{key}",
                f"params.{key} is not a parameter of {action}; allowed: {allowed}.",
            )
    for key, spec in specs.items():
        where = f"params.{key}"
        if key not in params:
            if spec.required:
                return RejectReason.BAD_PARAMS, where, f"{where} is required for {action}."
            continue
        value = params[key]
        if value is None:
            if spec.nullable:
                continue
            return RejectReason.BAD_PARAMS, where, f"{where}(=null) must not be null."
        if spec.kind is ParamKind.SEGMENT:
            if not isinstance(value, str) or not SEGMENT_PATTERN.fullmatch(value):
                return (
                    RejectReason.BAD_PARAMS,
                    where,
                    f"{where}(={value!r:.80}) must match {SEGMENT_PATTERN.pattern}.",
                )
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return RejectReason.BAD_PARAMS, where, f"{where}(={value!r:.80}) must be a finite number."
        low, high = spec.min_value, spec.max_value
        too_low = low is not None and (value <= low if spec.min_exclusive else value < low)
        if too_low or (high is not None and value > high):
            left = "(" if spec.min_exclusive else "["
            return RejectReason.OUT_OF_RANGE, where, f"{where}(={value!r}) must be in {left}{low}, {high}]."
    return None


class ReplayCache:
    """Command ids seen, each kept until `forget_after_s` (its expiry plus the clock skew), in bounded memory.

    When full, the id that expires first is forgotten and its expiry becomes a floor: any later command
    expiring at or before the floor is refused as `replayed`, so evicting an id never lets its command
    be replayed (honest commands expire after the floor: they were issued later).
    """

    def __init__(self, capacity: int = DEFAULT_REPLAY_CAPACITY) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity(={capacity!r}) must be an integer ≥ 1.")
        self.capacity = capacity
        self._forget_at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self.floor_s = -math.inf
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._forget_at)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._forget_at

    def _expire(self, now_s: float) -> None:
        while self._heap and self._heap[0][0] < now_s:
            _, old = heapq.heappop(self._heap)
            self._forget_at.pop(old, None)

    def admit(self, command_id: str, forget_after_s: float, now_s: float) -> bool:
        """Remember `command_id`; False when it was seen (or may have been: at or below the floor)."""
        self._expire(now_s)
        if command_id in self._forget_at or forget_after_s <= self.floor_s:
            return False
        if len(self._forget_at) >= self.capacity:
            oldest_s, old = heapq.heappop(self._heap)
            self._forget_at.pop(old, None)
            self.floor_s = max(self.floor_s, oldest_s)
            self.evicted += 1
        self._forget_at[command_id] = forget_after_s
        heapq.heappush(self._heap, (forget_after_s, command_id))
        return True


def _finite_ts(body: Mapping[str, Any], name: str, command_id: str | None) -> float:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CommandRejected(
            RejectReason.MALFORMED,
            f"{name}(={value!r:.80}) must be a finite number of unix seconds.",
            field=name,
            command_id=command_id,
        )
    return float(value)


@dataclass(slots=True)
class CommandVerifier:
    """Checks raw command payloads for the nodes of one cluster (see the module docstring)."""

    secret: CommandSecret
    cluster: str
    nodes: Collection[str]
    max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S
    replay: ReplayCache = field(default_factory=ReplayCache)

    def __post_init__(self) -> None:
        check_segment("cluster", self.cluster)
        self.nodes = frozenset(check_segment("node", n) for n in self.nodes)
        if not self.nodes:
            raise ContractError("nodes must name at least one node.")
        if not math.isfinite(self.max_clock_skew_s) or self.max_clock_skew_s < 0:
            raise ContractError(f"max_clock_skew_s(={self.max_clock_skew_s!r}) must be ≥ 0.")

    def verify(self, payload: bytes, node: str, now_s: float) -> Command:
        """The command in `payload` (received on `node`'s topic at `now_s`), or `CommandRejected`."""
        if len(payload) > MAX_COMMAND_BYTES:
            raise CommandRejected(
                RejectReason.TOO_LARGE, f"payload is {len(payload)} bytes; at most {MAX_COMMAND_BYTES}."
            )
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise CommandRejected(RejectReason.MALFORMED, f"payload is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise CommandRejected(
                RejectReason.MALFORMED, f"payload must be a JSON object, not {type(body).__name__}."
            )
        raw_id = body.get("id")
        command_id = raw_id if isinstance(raw_id, str) and _NONCE.fullmatch(raw_id) else None
        raw_action = body.get("action")
        action_name = raw_action if isinstance(raw_action, str) and len(raw_action) <= 64 else None

        def reject(reason: RejectReason, message: str, where: str | None = None) -> CommandRejected:
            return CommandRejected(reason, message, field=where, command_id=command_id, action=action_name)

        # 1. Authenticity first: nothing else in an unsigned or forged payload is worth reading.
        sig = body.pop("sig", None)
        if sig is None:
            raise reject(RejectReason.UNSIGNED, "the command carries no sig (HMAC-SHA256).", "sig")
        if not isinstance(sig, str) or not _SIGNATURE.fullmatch(sig):
            raise reject(
                RejectReason.BAD_SIGNATURE, f"sig must be {SIGNATURE_HEX_CHARS} lowercase hex digits.", "sig"
            )
        try:
            expected = self.secret.mac(canonical_json(body))
        except ContractError as exc:
            raise reject(RejectReason.MALFORMED, str(exc)) from None
        if not hmac.compare_digest(expected, sig):
            raise reject(
                RejectReason.BAD_SIGNATURE, "sig does not match the command (wrong secret or altered).", "sig"
            )

        # 2. Shape.
        unknown = sorted(set(body) - PAYLOAD_KEYS)
        if unknown:
            raise reject(RejectReason.MALFORMED, f"unknown key {unknown[0]!r:.80}.", unknown[0][:64])
        missing = sorted(REQUIRED_KEYS - {"sig"} - set(body))
        if missing:
            raise reject(RejectReason.MALFORMED, f"missing key {missing[0]!r}.", missing[0])
        if body["schema"] != COMMAND_SCHEMA_VERSION or isinstance(body["schema"], bool):
            raise reject(
                RejectReason.UNSUPPORTED_SCHEMA,
                f"schema(={body['schema']!r:.40}) must be {COMMAND_SCHEMA_VERSION}.",
                "schema",
            )
        if command_id is None:
            raise reject(RejectReason.MALFORMED, f"id must be {NONCE_HEX_CHARS} lowercase hex digits.", "id")
        for name in ("cluster", "node"):
            if not isinstance(body[name], str) or not SEGMENT_PATTERN.fullmatch(body[name]):
                raise reject(
                    RejectReason.MALFORMED, f"{name}(={body[name]!r:.80}) is not a topic segment.", name
                )
        issued_ts = _finite_ts(body, "issued_ts", command_id)
        expires_ts = _finite_ts(body, "expires_ts", command_id)
        reason_text = body.get("reason")
        if reason_text is not None and (
            not isinstance(reason_text, str) or len(reason_text) > MAX_REASON_CHARS
        ):
            raise reject(
                RejectReason.MALFORMED,
                f"reason must be text of at most {MAX_REASON_CHARS} characters.",
                "reason",
            )
        try:
            action = Action(body["action"])
        except ValueError:
            allowed = ", ".join(a.value for a in Action)
            raise reject(
                RejectReason.UNKNOWN_ACTION,
                f"action(={body['action']!r:.80}) is not one of {allowed}.",
                "action",
            ) from None
        params = body["params"]
        if not isinstance(params, dict):
            raise reject(
                RejectReason.MALFORMED, f"params must be an object, not {type(params).__name__}.", "params"
            )
        problem = check_params(action, params)
        if problem is not None:
            raise reject(problem[0], problem[2], problem[1])

        # 3. Target.
        if body["cluster"] != self.cluster or body["node"] != node or node not in self.nodes:
            raise reject(
                RejectReason.WRONG_TARGET,
                f"command is for {body['cluster']}/{body['node']}, received on {self.cluster}/{node}.",
                "node" if body["cluster"] == self.cluster else "cluster",
            )

        # 4. Freshness and replay.
        ttl = expires_ts - issued_ts
        if not 0 < ttl <= MAX_COMMAND_TTL_S:
            raise reject(
                RejectReason.MALFORMED,
                f"expires_ts − issued_ts(={ttl!r}) must be in (0, {MAX_COMMAND_TTL_S}] seconds.",
                "expires_ts",
            )
        skew = self.max_clock_skew_s
        if issued_ts > now_s + skew:
            raise reject(
                RejectReason.NOT_YET_VALID,
                f"issued_ts is {issued_ts - now_s:.1f} s in the future (clock skew allowed: {skew} s).",
                "issued_ts",
            )
        if now_s > expires_ts + skew:
            raise reject(RejectReason.STALE, f"command expired {now_s - expires_ts:.1f} s ago.", "expires_ts")
        if not self.replay.admit(command_id, expires_ts + skew, now_s):
            raise reject(RejectReason.REPLAYED, f"command id {command_id} was already received.", "id")
        try:
            return Command(
                id=command_id,
                cluster=body["cluster"],
                node=body["node"],
                action=action,
                params=params,
                issued_ts=issued_ts,
                expires_ts=expires_ts,
                reason=reason_text,
            )
        except ContractError as exc:  # every check above should have caught it first
            raise reject(RejectReason.MALFORMED, str(exc)) from None


# --- outcomes (node → twin) -----------------------------------------------------------------------


class OutcomeKind(StrEnum):
    APPLIED = "applied"
    DRY_RUN = "dry_run"
    REJECTED = "rejected"
    NOT_PERMITTED = "not_permitted"
    FAILED = "failed"  # the action was allowed but applying it raised an unexpected error


MAX_DETAIL_CHARS: Final = 512
OUTCOME_KEYS: Final = frozenset(
    {"schema", "ts", "node", "command_id", "action", "outcome", "reason", "field", "detail"}
)


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What a node did with one command (or with a payload it could not read: `command_id` None)."""

    node: str
    ts: float
    outcome: OutcomeKind
    command_id: str | None = None
    action: str | None = None
    reason: str | None = None  # a RejectReason code, or why not permitted/failed
    field: str | None = None
    detail: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "schema": COMMAND_SCHEMA_VERSION,
            "ts": self.ts,
            "node": self.node,
            "command_id": self.command_id,
            "action": self.action,
            "outcome": str(self.outcome),
            "reason": self.reason,
            "field": self.field,
            "detail": None if self.detail is None else self.detail[:MAX_DETAIL_CHARS],
        }


def parse_outcome(payload: bytes) -> CommandOutcome:
    """An outcome payload, or `ContractError` naming the bad field (the twin records what it can read)."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise ContractError(f"outcome payload is {len(payload)} bytes; at most {MAX_COMMAND_BYTES}.")
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"outcome payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ContractError("outcome payload must be a JSON object.")
    unknown = sorted(set(body) - OUTCOME_KEYS)
    if unknown:
        raise ContractError(f"outcome key {unknown[0]!r:.80} is unknown.")
    if body.get("schema") != COMMAND_SCHEMA_VERSION:
        raise ContractError(f"outcome schema(={body.get('schema')!r:.40}) must be {COMMAND_SCHEMA_VERSION}.")
    node = body.get("node")
    if not isinstance(node, str) or not SEGMENT_PATTERN.fullmatch(node):
        raise ContractError(f"outcome node(={node!r:.80}) is not a topic segment.")
    ts = body.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise ContractError(f"outcome ts(={ts!r:.40}) must be a finite number.")
    try:
        kind = OutcomeKind(str(body.get("outcome")))
    except ValueError:
        raise ContractError(
            f"outcome(={body.get('outcome')!r:.40}) is not one of {[k.value for k in OutcomeKind]}."
        ) from None
    command_id = body.get("command_id")
    if command_id is not None and (not isinstance(command_id, str) or not _NONCE.fullmatch(command_id)):
        raise ContractError(
            f"outcome command_id(={command_id!r:.80}) must be null or {NONCE_HEX_CHARS} hex digits."
        )
    texts: dict[str, str | None] = {}
    for name, limit in (("action", 64), ("reason", 64), ("field", 128), ("detail", MAX_DETAIL_CHARS)):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise ContractError(f"outcome {name}(={value!r:.40}) must be text or null.")
        texts[name] = None if value is None else value[:limit]
    return CommandOutcome(
        node=node,
        ts=float(ts),
        outcome=kind,
        command_id=command_id,
        action=texts["action"],
        reason=texts["reason"],
        field=texts["field"],
        detail=texts["detail"],
    )
