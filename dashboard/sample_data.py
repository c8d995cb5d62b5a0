"""Fill a store with real data from the simulated cluster, through the ingest path, without a broker.

`fill_store` polls a seeded `sensors.simulated.SimulatedCluster` (built by `twin.sim_source`) every
`interval_s` seconds over a window ending at `end_ts`, encodes each node sample and job event as the MQTT
payload the publisher would send, decodes it with `twin.decode.Decoder` into an `IngestBatch` and writes
it with `Store.write_batch` — the same decode → store path as `twin serve`. Nodes announce `online` when
first heard and `offline` when they go silent (their MQTT last will). Used by the dashboard tests, the
browser test, the benchmark and `python -m dashboard.sample_data DB_URL` (a demo store).

`live_sim_spec(...)` describes the same cluster and its jobs as a `twin sim` spec (JSON), so the live
page can project the simulated jobs (`twin dashboard --sim-spec FILE`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from sensors.contract import Topics
from sensors.sim_profiles import (
    REFERENCE_JOB_GPUS,
    REFERENCE_LAYOUT,
    REFERENCE_MODEL,
    REFERENCE_TOKENS_PER_STEP,
)
from twin.cli_telemetry import DEFAULT_CLUSTER
from twin.decode import Decoder
from twin.records import IngestBatch
from twin.sim_source import simulated_cluster
from twin.store.repository import Store

DEFAULT_GPU: Final = "a100-sxm-80gb"  # the simulated fleet's GPU (sensors.sim_profiles.A100_SXM_80GB)
# The scale target: 128 nodes × 8 GPUs = 1,024 GPUs.
DEFAULT_NODES: Final = 128
DEFAULT_GPUS_PER_NODE: Final = 8
DEFAULT_MINUTES: Final = 10.0
# ASSUMPTION: one sample per node every 10 s — dcgm-exporter's default collection interval is 30 s, the
# twin's sensors publish every 1–10 s; 10 s keeps a 10-minute 1,024-GPU store at ~61,000 rows.
DEFAULT_INTERVAL_S: Final = 10.0
# ASSUMPTION (demo only): failures 2,000× the Llama 3 rates (sensors.sim_failures) so that a 10-minute
# window of 1,024 GPUs shows a few XID failures and precursors (~5 expected) instead of ~0.003.
DEMO_FAILURE_RATE_SCALE: Final = 2_000.0
# Rows written per transaction (one poll of 128 nodes is ~1,024 rows; a few polls per batch).
POLLS_PER_BATCH: Final = 6
# The reference job's training shape (sensors.sim_profiles: 8,192 × 128 tokens per step).
REFERENCE_SEQ_LEN: Final = 8192
REFERENCE_GLOBAL_BATCH: Final = REFERENCE_TOKENS_PER_STEP // REFERENCE_SEQ_LEN
# ASSUMPTION: the simulated jobs train 20 tokens per parameter (Hoffmann et al. 2022, compute-optimal),
# so a projection has a finish line; the simulated cluster itself runs them until they fail.
TOKENS_PER_PARAM_TARGET: Final = 20.0


@dataclass(frozen=True, slots=True)
class FillResult:
    """What `fill_store` wrote: telemetry rows, job events, rejects (should be 0) and the time range."""

    telemetry_rows: int
    job_events: int
    rejects: int
    polls: int
    start_ts: float
    end_ts: float
    cluster: str
    nodes: int
    gpus_per_node: int


def fill_store(
    store: Store,
    *,
    cluster: str = DEFAULT_CLUSTER,
    nodes: int = DEFAULT_NODES,
    gpus_per_node: int = DEFAULT_GPUS_PER_NODE,
    minutes: float = DEFAULT_MINUTES,
    interval_s: float = DEFAULT_INTERVAL_S,
    end_ts: float,
    seed: int = 0,
    failure_rate_scale: float = DEMO_FAILURE_RATE_SCALE,
    gpu: str = DEFAULT_GPU,
) -> FillResult:
    """Simulate `minutes` of the cluster, one poll every `interval_s` s ending at `end_ts` (unix s)."""
    if not interval_s > 0:
        raise ValueError(f"interval_s(={interval_s}) must be > 0.")
    if not minutes > 0:
        raise ValueError(f"minutes(={minutes}) must be > 0.")
    source = simulated_cluster(
        nodes=nodes, gpus_per_node=gpus_per_node, gpu=gpu, seed=seed, failure_rate_scale=failure_rate_scale
    )
    topics = Topics(cluster)
    decoder = Decoder()
    polls = int(minutes * 60.0 / interval_s) + 1
    start_ts = end_ts - (polls - 1) * interval_s
    batch = IngestBatch()
    announced: set[str] = set()
    silent: set[str] = set()
    rows = events = rejects = 0
    for k in range(polls):
        ts = start_ts + k * interval_s
        reading = source.read(ts)
        for sample in reading.samples:
            if sample.node not in announced:
                announced.add(sample.node)
                decoder.decode(topics.status(sample.node), b"online", ts, batch)
            decoder.decode(topics.telemetry(sample.node), orjson.dumps(sample.to_payload()), ts, batch)
        for event in reading.events:
            decoder.decode(topics.job_events(event.job_id), orjson.dumps(event.to_payload()), ts, batch)
        for node in reading.silent_nodes:
            if node not in silent:
                silent.add(node)
                decoder.decode(topics.status(node), b"offline", ts, batch)
        if (k + 1) % POLLS_PER_BATCH == 0 or k == polls - 1:
            rows += len(batch.telemetry)
            events += len(batch.job_events)
            rejects += len(batch.rejects)
            store.write_batch(batch)
            batch.clear()
    source.close()
    return FillResult(rows, events, rejects, polls, start_ts, end_ts, cluster, nodes, gpus_per_node)


def live_sim_spec(
    *,
    nodes: int = DEFAULT_NODES,
    gpus_per_node: int = DEFAULT_GPUS_PER_NODE,
    gpu: str = DEFAULT_GPU,
    failure_rate_scale: float = 1.0,
) -> dict[str, Any]:
    """The simulated cluster and its default jobs (`sensors.sim_profiles.default_jobs`) as a `twin sim`
    spec: same GPU, node count, job ids, model, layout and training shape, so a live projection can fork
    from the store. Prices are the README example's (2.5 EUR per GPU-hour, PUE 1.2)."""
    from sensors.fleet_profile import BUSY_FLEET_FRACTION

    busy = int(nodes * BUSY_FLEET_FRACTION + 0.5)
    per_job = max(1, REFERENCE_JOB_GPUS // gpus_per_node)
    params = float(REFERENCE_MODEL["params"])
    jobs = [
        {
            "id": f"job-{k:03d}",
            "model": {"preset": str(REFERENCE_MODEL["name"])},
            "gpus": (min(first + per_job, busy) - first) * gpus_per_node,
            "layout": {key: value for key, value in REFERENCE_LAYOUT.items() if key != "dp"},
            "training": {
                "seq_len": REFERENCE_SEQ_LEN,
                "global_batch": REFERENCE_GLOBAL_BATCH,
                "tokens": TOKENS_PER_PARAM_TARGET * params,
            },
        }
        for k, first in enumerate(range(0, busy, per_job))
    ]
    return {
        "description": f"The simulated cluster of dashboard.sample_data: {nodes} × {gpus_per_node} {gpu}.",
        "cluster": {
            "gpu": gpu,
            "nodes": nodes,
            "gpus_per_node": gpus_per_node,
            "price_per_gpu_hour": 2.5,
            "currency": "EUR",
            "pue": 1.2,
            "failure_rate_scale": failure_rate_scale,
        },
        "jobs": jobs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dashboard.sample_data sqlite:///demo.db [--minutes 10] [--spec demo-spec.json]`."""
    parser = argparse.ArgumentParser(description="fill a store with simulated cluster data (demo, tests)")
    parser.add_argument("db", help="database URL, e.g. sqlite:///demo.db")
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER)
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    parser.add_argument("--gpus-per-node", type=int, default=DEFAULT_GPUS_PER_NODE)
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES)
    parser.add_argument("--interval-s", type=float, default=DEFAULT_INTERVAL_S)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--failure-rate-scale", type=float, default=DEMO_FAILURE_RATE_SCALE)
    parser.add_argument("--spec", help="also write the matching `twin sim` spec (JSON) to this file")
    args = parser.parse_args(argv)
    with Store.open(args.db) as store:
        result = fill_store(
            store,
            cluster=args.cluster,
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            minutes=args.minutes,
            interval_s=args.interval_s,
            end_ts=time.time(),
            seed=args.seed,
            failure_rate_scale=args.failure_rate_scale,
        )
    if args.spec:
        spec = live_sim_spec(nodes=args.nodes, gpus_per_node=args.gpus_per_node)
        Path(args.spec).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    print(
        f"wrote {result.telemetry_rows:,} telemetry rows, {result.job_events:,} job events "
        f"({result.rejects} rejects) of {result.nodes} × {result.gpus_per_node} GPUs "
        f"over {result.polls} polls",
        file=sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
