"""Build the simulated telemetry source from twin presets and scenarios (DESIGN §1: `sensors` gets its
workload as plain data; the twin computes it with `twin.perf` — here).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from sensors.simulated import JobSpec, SimulatedCluster
from twin.workload_profile import gpu_profile, workload_profile


def simulated_cluster(
    *,
    nodes: int,
    gpus_per_node: int,
    gpu: str = "a100-sxm-80gb",
    scenario: dict[str, Any] | None = None,
    seed: int = 0,
    failure_rate_scale: float = 1.0,
    node_prefix: str = "n",
) -> SimulatedCluster:
    """A seeded simulated cluster of `nodes` × `gpus_per_node` GPUs of the `gpu` preset.

    Without a scenario: the default fleet (half the nodes in jobs of the reference Llama 3 8B workload,
    the rest idle, matching the Acme A100 power distribution). With a scenario: its model and layout run
    as back-to-back jobs of the scenario's GPU count (whole nodes) on as many nodes as they fill.
    """
    profile = gpu_profile(gpu)
    jobs: tuple[JobSpec, ...] | None = None
    if scenario is not None:
        workload = workload_profile(scenario)
        per_job = max(1, math.ceil(workload.gpus / gpus_per_node))
        names = [f"{node_prefix}{k:02d}" for k in range(nodes)]
        jobs = tuple(
            JobSpec(f"job-{k:03d}", workload, tuple(names[first : first + per_job]))
            for k, first in enumerate(range(0, nodes - per_job + 1, per_job))
        )
    return SimulatedCluster(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        gpu=profile,
        jobs=jobs,
        seed=seed,
        failure_rate_scale=failure_rate_scale,
        node_prefix=node_prefix,
    )


def simulated_cluster_from_args(args: argparse.Namespace) -> SimulatedCluster:
    """`twin sensors simulate` flags → a simulated cluster (`--scenario`: one JSON or TOML scenario)."""
    scenario = None
    if getattr(args, "scenario", None):
        import json
        import tomllib

        path = Path(args.scenario)
        text = path.read_text(encoding="utf-8")
        scenario = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    return simulated_cluster(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        gpu=args.gpu,
        scenario=scenario,
        seed=args.seed,
        failure_rate_scale=args.failure_rate_scale,
        node_prefix=args.node_prefix,
    )
