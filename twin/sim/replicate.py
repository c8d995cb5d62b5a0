"""Monte Carlo over replications: local processes or a Ray cluster, one summary with mean and P10/P50/P90.

Replication i runs with child i of `SeedSequence(seed)` (`SeedSequence.spawn`), so the summary depends
only on (spec, days, replications, seed, state) — not on the engine or the number of workers. Each
worker returns a compact `ReplicaOutcome` (no event log) to keep inter-process traffic small.
Ray is optional (`pip install 'gpu-twin[ray]'`): `ray.init(address=...)`, a local Ray when no address.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from twin.errors import ScenarioError, TwinError
from twin.sim.run import horizon_s_of
from twin.sim.spec import SimSpec, SimState
from twin.sim.state_check import check_state
from twin.sim.summary import ReplicaOutcome, ReplicationSummary, run_one, summarise

ENGINES = ("local", "ray")


def _local(
    spec: SimSpec, days: float, seeds: list[np.random.SeedSequence], state: SimState | None, workers: int
) -> list[ReplicaOutcome]:
    if workers == 1:
        return [run_one(spec, days, s, state) for s in seeds]
    # forkserver: safe when the caller has threads (the twin service does), and the server preloads us.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["twin.sim.replicate"])
    n = len(seeds)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(run_one, [spec] * n, [days] * n, seeds, [state] * n))


def _ray(
    spec: SimSpec,
    days: float,
    seeds: list[np.random.SeedSequence],
    state: SimState | None,
    address: str | None,
) -> list[ReplicaOutcome]:
    try:
        ray: Any = importlib.import_module("ray")
    except ImportError:
        raise TwinError("engine 'ray' needs Ray: pip install 'gpu-twin[ray]' (or pip install ray).") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(run_one)
    spec_ref, state_ref = ray.put(spec), ray.put(state)
    return list(ray.get([remote.remote(spec_ref, days, s, state_ref) for s in seeds]))


def replicate(
    spec: SimSpec,
    days: float,
    replications: int,
    seed: int = 0,
    *,
    engine: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    state: SimState | None = None,
) -> ReplicationSummary:
    """Run `replications` independent replications of `simulate(spec, days, ·, state)` and summarise."""
    if isinstance(replications, bool) or not isinstance(replications, int) or replications < 1:
        raise ScenarioError(f"replications(={replications!r}) must be an integer >= 1.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ScenarioError(f"seed(={seed!r}) must be an integer >= 0.")
    if engine not in ENGINES:
        raise ScenarioError(f"engine(={engine!r}) must be one of {', '.join(ENGINES)}.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ScenarioError(f"workers(={workers!r}) must be an integer >= 1.")
    horizon_s_of(days)
    check_state(spec, state or SimState())  # fail here, not in every worker
    seeds = np.random.SeedSequence(seed).spawn(replications)
    used = min(workers or os.cpu_count() or 1, replications)
    start = time.perf_counter()
    if engine == "ray":
        outcomes = _ray(spec, days, seeds, state, ray_address)
    else:
        outcomes = _local(spec, days, seeds, state, used)
    return ReplicationSummary(
        replications=replications,
        days=float(days),
        seed=seed,
        engine=engine,
        workers=used,
        wall_s=time.perf_counter() - start,
        currency=spec.cluster.currency,
        **summarise(outcomes, spec),
    )
