"""`twin sim FILE`: Monte Carlo replications of an offline cluster scenario; `twin project SPEC`: the same
from the live state in the store, calibrated, with what-ifs (heavy imports in the handlers).

twin sim examples/sim_llama3_405b.json --days 54 --replications 16 --seed 1 [--engine local|ray]
         [--workers N] [--ray-address A] [--json]
twin project SPEC --db URL --cluster C [--hours 48] [--replications 32] [--seed 0]
         [--what-if '{"power_cap_w": 500}' ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from twin.sim.spec import SimSpec
    from twin.sim.summary import ReplicationSummary, Stat

DAY_S = 86_400.0


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _stat(stat: Stat, scale: float = 1.0, fmt: str = ",.1f") -> str:
    if stat.n == 0:
        return "-"
    return (
        f"mean {stat.mean / scale:{fmt}} (P10 {stat.p10 / scale:{fmt}}, P50 {stat.p50 / scale:{fmt}}, "
        f"P90 {stat.p90 / scale:{fmt}})"
    )


def format_summary(spec: SimSpec, summary: ReplicationSummary, source: str) -> str:
    c = spec.cluster
    used, idle, down = (
        s.mean for s in (summary.gpu_hours_used, summary.gpu_hours_idle, summary.gpu_hours_down)
    )
    total = used + idle + down
    lines = [
        f"twin sim {source}: {summary.days:g} days × {summary.replications} replications "
        f"(seed {summary.seed}, {summary.engine} engine, {summary.workers} workers, {summary.wall_s:.2f} s)",
        f"cluster: {c.total_nodes:,} nodes ({c.spare_nodes} spare) × {c.gpus_per_node} {c.gpu.name}; "
        f"GPU-hours used {used / total:.1%}, idle {idle / total:.1%}, down {down / total:.1%}",
        f"energy (facility, MWh): {_stat(summary.energy_kwh, 1e3)}",
        f"interruptions (all jobs): {_stat(summary.interruptions)}",
    ]
    count = summary.interruptions.mean or 1.0
    top = sorted(summary.interruptions_by_category.items(), key=lambda kv: -kv[1])
    lines.append("  by cause: " + ", ".join(f"{k} {v:.1f} ({v / count:.0%})" for k, v in top))
    for job in summary.jobs:
        spec_job = next(j for j in spec.jobs if j.job_id == job.job_id)
        lines.append(
            f"job {job.job_id} ({spec_job.gpus:,} GPUs, {spec_job.model.name}): finished in "
            f"{job.finished_fraction:.0%} of replications"
        )
        if job.completion_s.n:
            lines.append(f"  completion (days): {_stat(job.completion_s, DAY_S, '.2f')}")
        lines += [
            f"  progress at finish/horizon: {_stat(job.progress, 0.01, '.2f')} %",
            f"  interruptions: {_stat(job.interruptions)}; lost work (h): {_stat(job.lost_work_s, 3600.0)}",
            f"  energy (MWh): {_stat(job.energy_kwh, 1e3)}",
            f"  cost ({summary.currency}): {_stat(job.cost, 1.0, ',.0f')}",
        ]
    if summary.arrived_jobs.mean:
        lines.append(
            f"arrivals: {summary.arrived_jobs.mean:,.1f} jobs, "
            f"{summary.arrived_finished.mean:,.1f} finished; completion (h, submit to finish): "
            f"{_stat(summary.arrived_mean_completion_s, 3600.0)}"
        )
    return "\n".join(lines)


def cmd_sim(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    """0 on success, 2 for a bad spec or arguments."""
    from twin.errors import TwinError
    from twin.sim.parse import load_spec
    from twin.sim.replicate import replicate

    try:
        spec = load_spec(args.file)
        summary = replicate(
            spec,
            args.days,
            args.replications,
            args.seed,
            engine=args.engine,
            workers=args.workers,
            ray_address=args.ray_address,
        )
    except TwinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out.write(json.dumps(_json_safe(summary.to_json()), allow_nan=False) + "\n")
    else:
        out.write(format_summary(spec, summary, args.file) + "\n")
    return 0


def _fmt_ts(ts: float | None) -> str:
    if ts is None:
        return "beyond the horizon"
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_projection(data: dict[str, Any]) -> str:
    lines = [
        f"projection of cluster {data['cluster']!r}: {data['hours']:g} h × {data['replications']} "
        f"replications (seed {data['seed']})"
        + (f"; what-ifs: {', '.join(data['what_ifs'])}" if data["what_ifs"] else "")
    ]
    for job in data["jobs"]:
        observed = job["observed_step_time_s"]
        lines.append(
            f"job {job['job_id']}: {job['progress']:.1%} done ({'running' if job['running'] else 'queued'}); "
            f"step {job['calibrated_step_time_s']:.3f} s calibrated"
            + (
                f" (observed {observed:.3f} s, model {job['predicted_step_time_s']:.3f} s)"
                if observed
                else ""
            )
        )
        lines.append(
            f"  ETA P10 {_fmt_ts(job['eta_p10_ts'])}, P50 {_fmt_ts(job['eta_p50_ts'])}, "
            f"P90 {_fmt_ts(job['eta_p90_ts'])} "
            f"(finishes within the horizon in {job['finished_fraction']:.0%})"
        )
        lines.append(
            f"  interruptions {job['expected_interruptions']:.2f}, "
            f"energy {job['energy_kwh_to_completion']:,.0f} kWh, "
            f"cost {job['cost_to_completion']:,.0f} {data['currency']} (within the horizon)"
        )
    for node, out in data["nodes_out"].items():
        lines.append(f"node {node}: {out['health']} ({out['why']})")
    power = data["power_kw_hourly"]["mean"]
    if power:
        lines.append(f"cluster power, next hours (kW): {', '.join(f'{p:,.0f}' for p in power[:12])}")
    lines += [f"note: {note}" for note in data["notes"]]
    return "\n".join(lines)


def cmd_project(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    """0 on success, 2 for a bad spec, what-if or unknown cluster."""
    import time

    from twin.errors import TwinError
    from twin.live_sim import WhatIf, compare, fork_live, load_live_state, project
    from twin.sim.parse import load_spec
    from twin.store.repository import Store

    try:
        spec = load_spec(args.spec)
        what_ifs = [WhatIf.from_json(json.loads(text)) for text in args.what_if]
        with Store.open(args.db, create=False) as store:
            state = load_live_state(store, args.cluster)
        if not any(c == args.cluster for c, _ in state.nodes):
            raise TwinError(
                f"cluster(={args.cluster!r}) has no nodes in {args.db}; is `twin serve` ingesting it?"
            )
        plan = fork_live(spec, state, args.cluster, now_s=args.now if args.now is not None else time.time())
        kw = {
            "hours": args.hours,
            "replications": args.replications,
            "seed": args.seed,
            "workers": args.workers,
        }
        if what_ifs:
            data = compare(plan, what_ifs, **kw).to_json()
            text = format_projection(data["baseline"]) + "\n\n" + format_projection(data["variant"])
        else:
            data = project(plan, **kw).to_json()
            text = format_projection(data)
    except (TwinError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.write((json.dumps(_json_safe(data), allow_nan=False) if args.json else text) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `sim` to `twin`; the handler is `args.func(args, out, stdin) -> int`."""
    p = subparsers.add_parser(
        "sim", help="simulate a cluster scenario: jobs, failures, checkpoints (Monte Carlo)"
    )
    p.add_argument("file", help="simulation spec (JSON or TOML; see twin/sim/parse.py)")
    p.add_argument("--days", type=float, required=True, help="simulated horizon in days")
    p.add_argument("--replications", type=int, default=1, help="independent replications (default 1)")
    p.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="local processes or Ray")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPU count)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--json", action="store_true", help="the summary as one JSON object")
    p.set_defaults(func=cmd_sim)

    p = subparsers.add_parser(
        "project", help="project live jobs forward from the store (calibrated ETA, energy, cost) and what-ifs"
    )
    p.add_argument("spec", help="`twin sim` spec of the cluster; its job ids are the live jobs' ids")
    p.add_argument("--db", default=os.environ.get("TWIN_DB", "sqlite:///twin.db"))
    p.add_argument("--cluster", default=os.environ.get("TWIN_CLUSTER", "demo"))
    p.add_argument("--hours", type=float, default=48.0, help="horizon (default 48)")
    p.add_argument("--replications", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--now", type=float, default=None, help="fork time, unix s (default: now)")
    p.add_argument(
        "--what-if",
        action="append",
        default=[],
        help='JSON, repeatable: {"layout": {"job": ID, "zero_stage": 3}}, {"add_nodes": N}, '
        '{"remove_nodes": N}, {"fail_node": NAME}, {"power_cap_w": W}',
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_project)
