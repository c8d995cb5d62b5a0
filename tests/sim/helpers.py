"""Small simulation specs for the tests (a few nodes, Llama 3 8B jobs that finish in hours)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from twin.sim import SimSpec, parse_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sim_llama3_405b.json"


def job(job_id: str, gpus: int = 8, tokens: float = 1e9, **extra: Any) -> dict[str, Any]:
    """A Llama 3 8B job on `gpus` GPUs (TP8): ~6.4 s steps on 8 H100s, 3,815 steps for 1e9 tokens."""
    return {
        "id": job_id,
        "model": {"preset": "llama3-8b"},
        "gpus": gpus,
        "layout": {"tp": 8},
        "training": {"seq_len": 4096, "global_batch": 64, "tokens": tokens},
        **extra,
    }


def raw_spec(
    nodes: int = 4, *, jobs: list[dict[str, Any]] | None = None, scale: float = 1.0, **cluster: Any
) -> dict[str, Any]:
    return {
        "cluster": {
            "gpu": "h100-sxm",
            "nodes": nodes,
            "gpus_per_node": 8,
            "price_per_gpu_hour": 2.0,
            "failure_rate_scale": scale,
            **cluster,
        },
        "jobs": copy.deepcopy(jobs) if jobs is not None else [job("a", 16), job("b", 8)],
    }


def small_spec(
    nodes: int = 4, *, jobs: list[dict[str, Any]] | None = None, scale: float = 1.0, **cluster: Any
) -> SimSpec:
    return parse_spec(raw_spec(nodes, jobs=jobs, scale=scale, **cluster))


# Failure-free for practical purposes: 1e-9 × the Llama 3 rate is one failure per ~5e13 GPU-hours.
NO_FAILURES = 1e-9
# Failure-heavy: 1,000 × the Llama 3 rate, ~0.02 interruptions per GPU-hour (one per ~1.5 h on 32 GPUs).
MANY_FAILURES = 1000.0
