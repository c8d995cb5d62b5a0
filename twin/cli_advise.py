"""`twin advise`: what the twin advises the cluster now (power caps, checkpoint now), and with --publish,
the signed commands sent to the nodes and the outcomes they report (heavy imports in the handler).

twin advise --db URL --cluster C [--max-slowdown 0.05] [--gpu h100-sxm] [--json]
            [--publish --broker URL (--command-secret-file PATH | $TWIN_COMMAND_SECRET) [--wait-s 5]]

Jobs come from the store (running jobs with their model, layout and nodes, DESIGN §4 events); the GPU
type, node size and training shape are flags because job events do not carry them. Node risk comes from
the telemetry of the last `--window-s` seconds (`twin.advisor.node_risks_from_telemetry`).

Advice already acted on is not sent again: a node whose newest `power_cap` command has the same cap and
was applied (or is pending and unexpired) is skipped; a job that was advised to checkpoint after its last
checkpoint is not advised again for `CHECKPOINT_READVISE_S`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

if TYPE_CHECKING:
    from twin.advisor import CheckpointAdvice, PowerCapAdvice
    from twin.store.repository import Store

DEFAULT_GPU: Final = "h100-sxm"  # the demo's GPU (twin.demo.DEMO_GPU)
DEFAULT_GPUS_PER_NODE: Final = 8
# ASSUMPTION: job events carry tokens per step but not the sequence length; 4,096 tokens per sample is
# the Llama 3 8B/70B short-context pre-training length (Dubey et al. 2024, §3.4.1: 8,192 after the first
# stage — either gives the same tokens per step, which is what the step time mostly depends on).
DEFAULT_SEQ_LEN: Final = 4096
# Telemetry window for the risk score. ASSUMPTION: 10 minutes holds a correctable-error burst's start
# (bursts last hours, sensors.sim_failures.DEFAULT_PRECURSOR_LEAD_S) without the history of old ones.
DEFAULT_WINDOW_S: Final = 600.0
# ASSUMPTION: a job that ignored a checkpoint advisory is reminded after 30 minutes.
CHECKPOINT_READVISE_S: Final = 1800.0
DEFAULT_WAIT_S: Final = 5.0


@dataclass(slots=True)
class AdvicePlan:
    """What `twin advise` found at `now_s`: advice to send, what it skipped and why."""

    now_s: float
    node_risk: dict[str, float]
    power_caps: list[PowerCapAdvice] = field(default_factory=list)
    checkpoints: list[CheckpointAdvice] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"job_id" | "node", "reason"}

    def to_json(self) -> dict[str, Any]:
        return {
            "now_s": self.now_s,
            "node_risk": self.node_risk,
            "power_caps": [a.to_json() for a in self.power_caps],
            "checkpoints": [a.to_json() for a in self.checkpoints],
            "skipped": self.skipped,
        }


def plan_advice(
    store: Store,
    cluster: str,
    now_s: float,
    *,
    max_slowdown: float,
    cluster_section: Mapping[str, Any],
    seq_len: int = DEFAULT_SEQ_LEN,
    global_batch: int | None = None,
    window_s: float = DEFAULT_WINDOW_S,
) -> AdvicePlan:
    """Read the cluster's running jobs and recent telemetry from `store` and decide the advice."""
    import dataclasses

    from twin.advisor import (
        advise_checkpoint,
        advise_power_cap,
        job_checkpoint_write_s,
        job_scenario,
        node_risks_from_telemetry,
    )
    from twin.calibration_online import job_model_spec
    from twin.errors import TwinError
    from twin.store.commands import command_rows

    frame = store.telemetry_frame(cluster, since_ts=now_s - window_s)
    rows = cast(list[dict[str, Any]], frame.to_dict("records"))
    plan = AdvicePlan(now_s, node_risks_from_telemetry(rows))
    for job in store.jobs(cluster):
        if job["state"] != "running":
            continue
        job_id, nodes = job["job_id"], tuple(job["nodes"] or ())
        write_s: float | None = None
        try:
            tokens, steps = job["tokens"], job["last_step"]
            batch = global_batch
            if batch is None and tokens and steps:
                batch = max(1, round(tokens / steps / seq_len))
            if batch is None:
                raise TwinError("no tokens per step reported; give --global-batch")
            scenario = job_scenario(
                job_model_spec(job["model"] or {}),
                job["layout"] or {},
                nodes,
                cluster_section,
                {"seq_len": seq_len, "global_batch": batch},
            )
            write_s = job_checkpoint_write_s(scenario.model, scenario.cluster, scenario.layout)
            advice = advise_power_cap(
                scenario.model,
                scenario.cluster,
                scenario.layout,
                scenario.training,
                max_slowdown=max_slowdown,
                job_id=job_id,
                nodes=nodes,
            )
        except (TwinError, ValueError) as exc:
            plan.skipped.append({"job_id": job_id, "reason": f"no power-cap advice: {exc}"})
            advice = None
        if advice is not None:
            fresh = [n for n in nodes if not _cap_in_force(store, cluster, n, advice.power_cap_w, now_s)]
            for node in sorted(set(nodes) - set(fresh)):
                plan.skipped.append({"node": node, "reason": f"{advice.power_cap_w:g} W already applied"})
            if fresh:
                plan.power_caps.append(dataclasses.replace(advice, nodes=tuple(fresh)))
        last_checkpoint = job["last_checkpoint_ts"] or job["started_ts"] or now_s
        checkpoint = advise_checkpoint(
            job_id,
            nodes,
            plan.node_risk,
            seconds_since_checkpoint=max(0.0, now_s - last_checkpoint),
            checkpoint_write_s=write_s,
        )
        if checkpoint is None:
            continue
        since = max(last_checkpoint, now_s - CHECKPOINT_READVISE_S)
        earlier = [
            r
            for r in command_rows(store, cluster, action="checkpoint_now", since_ts=since)
            if r["params"] and r["params"].get("job_id") == job_id and r["issued_ts"] is not None
        ]
        if earlier:
            plan.skipped.append({"job_id": job_id, "reason": "advised to checkpoint already"})
        else:
            plan.checkpoints.append(checkpoint)
    return plan


def _cap_in_force(store: Store, cluster: str, node: str, cap_w: float, now_s: float) -> bool:
    """True when `node`'s newest power_cap command set `cap_w` and was applied (or is pending, unexpired)."""
    from twin.store.commands import PENDING, command_rows

    rows = [r for r in command_rows(store, cluster, node=node, action="power_cap", limit=8) if r["issued_ts"]]
    if not rows:
        return False
    newest = rows[0]
    if not newest["params"] or newest["params"].get("power_cap_w") != cap_w:
        return False
    if newest["outcome"] == "applied":
        return True
    return bool(newest["outcome"] == PENDING and (newest["expires_ts"] or 0.0) > now_s)


def _format(plan: AdvicePlan) -> str:
    lines = [f"twin advise at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(plan.now_s))}"]
    risky = {n: r for n, r in plan.node_risk.items() if r > 0}
    if risky:
        lines.append("node risk: " + ", ".join(f"{n} {r:.2f}" for n, r in sorted(risky.items())))
    for a in plan.power_caps:
        lines.append(f"power cap  job {a.job_id} on {', '.join(a.nodes)}: {a.reason()}")
    for c in plan.checkpoints:
        lines.append(f"checkpoint job {c.job_id}: {c.reason()}")
    for s in plan.skipped:
        lines.append(f"skipped    {s.get('job_id') or s.get('node')}: {s['reason']}")
    if len(lines) == 1:
        lines.append("nothing to advise (no running jobs?)")
    return "\n".join(lines)


def cmd_advise(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    """0 on success; 2 for bad arguments, a missing database or secret; 1 when the broker is unreachable."""
    from sensors.errors import SensorError
    from twin.cli_store import _open
    from twin.errors import TwinError

    if not 0 <= args.max_slowdown < 1:
        sys.stderr.write(f"twin advise: --max-slowdown(={args.max_slowdown}) must be in [0, 1).\n")
        return 2
    if not (math.isfinite(args.window_s) and args.window_s > 0):
        sys.stderr.write(f"twin advise: --window-s(={args.window_s}) must be > 0.\n")
        return 2
    secret = None
    if args.publish:
        from twin.cli_telemetry import read_command_secret

        try:
            secret = read_command_secret(args.command_secret_file)
        except SensorError as exc:
            sys.stderr.write(f"twin advise: {exc}\n")
            return 2
        if secret is None:
            sys.stderr.write("twin advise: --publish needs --command-secret-file or $TWIN_COMMAND_SECRET.\n")
            return 2
    opened = _open(args.db)
    if isinstance(opened, str):
        sys.stderr.write(f"twin advise: {opened}\n")
        return 2
    store = opened
    try:
        section = {"gpu": args.gpu, "gpus_per_node": args.gpus_per_node, "pue": args.pue}
        try:
            plan = plan_advice(
                store,
                args.cluster,
                time.time(),
                max_slowdown=args.max_slowdown,
                cluster_section=section,
                seq_len=args.seq_len,
                global_batch=args.global_batch,
                window_s=args.window_s,
            )
        except TwinError as exc:
            sys.stderr.write(f"twin advise: {exc}\n")
            return 2
        result: dict[str, Any] = plan.to_json()
        if args.publish:
            published = _publish(plan, args, secret, store)
            if published is None:
                return 1
            result["commands"] = published
        if args.json:
            out.write(json.dumps(result, indent=2, allow_nan=False) + "\n")
        else:
            out.write(_format(plan) + "\n")
            for c in result.get("commands", []):
                outcome = c["outcome"] or "no outcome yet"
                reason = f" [{c['reason']}]" if c.get("reason") else ""
                out.write(
                    f"sent       {c['action']} to {c['node']} ({c['command_id'][:8]}…): {outcome}{reason}\n"
                )
        return 0
    finally:
        store.close()


def _publish(
    plan: AdvicePlan, args: argparse.Namespace, secret: Any, store: Store
) -> list[dict[str, Any]] | None:
    """Send the plan's advice; the commands with their outcomes (None when the broker is unreachable)."""
    from sensors.contract import Topics
    from sensors.mqtt_url import parse_broker_url
    from twin.command_publisher import CommandPublisher, CommandPublisherSettings

    url = parse_broker_url(args.broker)
    settings = CommandPublisherSettings(url, Topics(args.cluster, args.topic_root), secret)
    publisher = CommandPublisher(settings, store)
    try:
        if not publisher.start(timeout_s=10.0):
            sys.stderr.write(f"twin advise: cannot subscribe at {url.redacted()} (unreachable or refused).\n")
            return None
        commands = [c for a in plan.power_caps for c in publisher.issue_power_cap(a)]
        commands += [c for a in plan.checkpoints for c in publisher.issue_checkpoint(a)]
        outcomes = publisher.wait_for_outcomes([c.id for c in commands], args.wait_s) if commands else {}
    finally:
        publisher.close()
    rows = []
    for c in commands:
        o = outcomes.get(c.id)
        rows.append(
            {
                "command_id": c.id,
                "node": c.node,
                "action": str(c.action),
                "params": dict(c.params),
                "outcome": None if o is None else str(o.outcome),
                "reason": None if o is None else o.reason,
                "detail": None if o is None else o.detail,
            }
        )
    return rows


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `advise` to `twin`; the handler is `args.func(args, out, stdin) -> int`."""
    p = subparsers.add_parser(
        "advise", help="power caps and checkpoint advisories from the live twin; --publish sends them"
    )
    p.add_argument("--db", default=os.environ.get("TWIN_DB", "sqlite:///twin.db"))
    p.add_argument(
        "--broker",
        default=os.environ.get("TWIN_BROKER", "mqtt://127.0.0.1:1884"),
        help="mqtt[s]://[user:pass@]host:port (with --publish; default $TWIN_BROKER or the embedded broker)",
    )
    p.add_argument("--cluster", default=os.environ.get("TWIN_CLUSTER", "demo"))
    p.add_argument("--topic-root", default="gpu-twin/v1")
    p.add_argument("--max-slowdown", type=float, default=0.05, help="largest step slowdown a cap may cost")
    p.add_argument("--gpu", default=DEFAULT_GPU, help=f"GPU preset of the cluster (default {DEFAULT_GPU})")
    p.add_argument("--gpus-per-node", type=int, default=DEFAULT_GPUS_PER_NODE)
    p.add_argument("--pue", type=float, default=1.2, help="facility PUE for the energy figures")
    p.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN, help="tokens per sample of the jobs")
    p.add_argument("--global-batch", type=int, default=None, help="default: tokens per step / seq len")
    p.add_argument("--window-s", type=float, default=DEFAULT_WINDOW_S, help="telemetry window for risk")
    p.add_argument("--publish", action="store_true", help="sign and send the advice, record the outcomes")
    p.add_argument(
        "--command-secret-file", default=None, help="shared HMAC secret (default $TWIN_COMMAND_SECRET)"
    )
    p.add_argument("--wait-s", type=float, default=DEFAULT_WAIT_S, help="wait this long for outcomes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_advise)
