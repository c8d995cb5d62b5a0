"""The twin's side of the predictors (`models` imports nothing of ours, DESIGN §1, so telemetry sources,
`twin.perf` and the store meet the predictors' DataFrames here): simulated history with a job schedule
and the performance core's power estimate for it, history read from the store, simulated telemetry
with failure precursors, and forecasts turned into store rows (`twin.store.forecasts`).

Simulated power history: a seeded `sensors.simulated.SimulatedCluster` runs a planned stream of training
jobs (each on whole nodes, from a few reference workloads computed with `twin.perf` via
`twin.workload_profile`); idle gaps separate them, failures interrupt and delay them. The physics
estimate of a node at a time is what the performance core says the *plan* draws: for each GPU, the
workload's time-average power (`WorkloadProfile.power_per_gpu_w`) while a planned job holds the node,
the GPU preset's idle power otherwise. It knows the schedule in advance (scheduled load), not the
failures or the silicon spread of idle power.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

import numpy as np
import pandas as pd

from sensors.contract import GPU_FIELDS, FieldKind
from sensors.sim_failures import DEFAULT_PRECURSOR_LEAD_S
from sensors.simulated import JobSpec, SimulatedCluster, WorkloadProfile
from sensors.source import SourceReading
from twin.records import TELEMETRY_COLUMNS, TELEMETRY_VALUE_FIELDS, IngestBatch
from twin.store.forecasts import Forecast, write_forecasts
from twin.store.repository import Store
from twin.workload_profile import gpu_profile, workload_profile

DEFAULT_CLUSTER: Final = "sim"
DEFAULT_GPU: Final = "a100-sxm-80gb"
# A fixed start time (2023-11-14 22:13:20 UTC) so that simulated history is the same on every run.
HISTORY_START_TS: Final = 1_700_000_000.0
# The workloads of the planned jobs: the simulated fleet's reference job (Llama 3 8B on 32 GPUs,
# sensors.sim_profiles), smaller jobs of the same model and of GPT-3 1.3B / Llama 2 13B, and one job
# under a 250 W power cap, so that nodes draw visibly different levels. Chosen by us (ASSUMPTION): a mix,
# not a measured job population.
WORKLOAD_SCENARIOS: Final[tuple[dict[str, Any], ...]] = (
    {
        "model": {"preset": "llama3-8b"},
        "cluster": {"gpu": DEFAULT_GPU, "gpus": 32},
        "layout": {"tp": 2, "pp": 2},
        "training": {"seq_len": 8192, "global_batch": 128},
    },
    {
        "model": {"preset": "llama3-8b"},
        "cluster": {"gpu": DEFAULT_GPU, "gpus": 8},
        "layout": {"tp": 2, "pp": 1},
        "training": {"seq_len": 4096, "global_batch": 32},
    },
    {
        "model": {"preset": "gpt3-1.3b"},
        "cluster": {"gpu": DEFAULT_GPU, "gpus": 16},
        "layout": {"tp": 1, "pp": 1},
        "training": {"seq_len": 2048, "global_batch": 256},
    },
    {
        "model": {"preset": "llama2-13b"},
        "cluster": {"gpu": DEFAULT_GPU, "gpus": 16},
        "layout": {"tp": 4, "pp": 4},
        "training": {"seq_len": 4096, "global_batch": 64},
    },
    {
        "model": {"preset": "llama3-8b"},
        "cluster": {"gpu": DEFAULT_GPU, "gpus": 16, "power_cap_w": 250.0},
        "layout": {"tp": 2, "pp": 2},
        "training": {"seq_len": 8192, "global_batch": 64},
    },
)
# Planned job durations: log-normal around 2 h (σ of ln = 0.8), cut to [15 min, 12 h]. ASSUMPTION: the
# Philly runtime median is 1,186 s (../shared/traces) but those are mostly small jobs; multi-node
# training runs last longer. Only the shape matters here: some jobs end within the 1-h horizon.
JOB_MEDIAN_S: Final = 2 * 3600.0
JOB_SIGMA_LN: Final = 0.8
JOB_MIN_S: Final = 15 * 60.0
JOB_MAX_S: Final = 12 * 3600.0
# Idle time between one job leaving a set of nodes and the next one starting there: exponential with
# this mean. ASSUMPTION: half an hour; measured, it leaves 20.5 % of the GPU samples idle in the 48-h
# default history, the same order as the Acme fleet's idle share (sensors.fleet_profile: ~30 % of
# samples at the idle floor).
IDLE_GAP_MEAN_S: Final = 30 * 60.0
# Failure rates of the power history: Llama 3's (sensors.sim_failures), unscaled. Measured over a day of
# 16 × 8 GPUs: at × 30 the failures (restarts from a checkpoint hours back, drained GPUs) push the plan
# off course — the plan says busy/idle right for 79 % of node-minutes, physics MAE 731 W per node —
# while at × 3 it holds (99.8 %, 228 W).
POWER_HISTORY_FAILURE_SCALE: Final = 1.0
# Failure-risk history: 512 GPUs for three days at 2-min polls with failure rates × 200, so that the
# data hold dozens of GPU failures within a 1-h horizon, and the simulator's own precursor lead (6 h).
# ASSUMPTION: a compressed timeline, not a claim about real rates (those are in the Titan evaluation).
# Measured alternatives: × 1,000 silences half the nodes in a day (node failures scale too); a 30-min
# or 2-h lead leaves most failing GPUs without a correctable-error rise inside the window (ROC-AUC 0.57–0.66).
RISK_HISTORY_FAILURE_SCALE: Final = 200.0
RISK_PRECURSOR_LEAD_S: Final = DEFAULT_PRECURSOR_LEAD_S
# Step events are not used for training; one per 1,000 steps keeps the simulation fast.
STEP_EVENT_EVERY: Final = 1000

_GPU_VALUES: Final = attrgetter(*TELEMETRY_VALUE_FIELDS)
# Integer telemetry columns: a frame holding a missing value turns them to float; the store wants ints.
_INT_COLUMNS: Final = frozenset(
    {"gpu_index"} | {f.name for f in GPU_FIELDS if f.kind is FieldKind.INT and f.name != "index"}
)


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """A job of the plan: which nodes, from when to when (unix s), running which workload."""

    job_id: str
    nodes: tuple[str, ...]
    start_s: float
    end_s: float
    workload: WorkloadProfile


@dataclass(frozen=True, slots=True)
class SimulatedHistory:
    """Telemetry rows (`twin.records.TELEMETRY_COLUMNS`), the physics estimate per node and bucket
    (`cluster, node, ts, physics_power_w`, reaching `ahead_s` past the telemetry) and the plan."""

    telemetry: pd.DataFrame
    physics: pd.DataFrame
    jobs: tuple[PlannedJob, ...]


def reference_workloads(
    scenarios: Sequence[dict[str, Any]] = WORKLOAD_SCENARIOS,
) -> tuple[WorkloadProfile, ...]:
    """The workloads of `scenarios`, computed by the performance core."""
    return tuple(workload_profile(s) for s in scenarios)


def node_names(nodes: int, prefix: str = "n") -> tuple[str, ...]:
    """The simulated cluster's node names (`SimulatedCluster` numbers them the same way)."""
    width = max(2, len(str(nodes - 1)))
    return tuple(f"{prefix}{i:0{width}d}" for i in range(nodes))


def plan_jobs(
    names: Sequence[str],
    gpus_per_node: int,
    workloads: Sequence[WorkloadProfile],
    start_s: float,
    end_s: float,
    rng: np.random.Generator,
) -> tuple[PlannedJob, ...]:
    """Jobs back to back on whole nodes until `end_s`; each takes the nodes free soonest, after a gap."""
    free = np.full(len(names), start_s)
    jobs: list[PlannedJob] = []
    while free.min() < end_s:
        workload = workloads[int(rng.integers(len(workloads)))]
        size = min(len(names), max(1, math.ceil(workload.gpus / gpus_per_node)))
        chosen = np.argsort(free, kind="stable")[:size]
        start = float(free[chosen].max()) + float(rng.exponential(IDLE_GAP_MEAN_S))
        planned = float(np.clip(rng.lognormal(math.log(JOB_MEDIAN_S), JOB_SIGMA_LN), JOB_MIN_S, JOB_MAX_S))
        steps = max(1, round(planned / workload.step_time_s))
        end = start + steps * workload.step_time_s
        jobs.append(
            PlannedJob(f"job-{len(jobs):04d}", tuple(names[i] for i in sorted(chosen)), start, end, workload)
        )
        free[chosen] = end
    return tuple(jobs)


def physics_frame(
    jobs: Sequence[PlannedJob],
    names: Sequence[str],
    gpus_per_node: int,
    idle_w: float,
    *,
    cluster: str,
    start_s: float,
    end_s: float,
    bucket_s: float = 60.0,
) -> pd.DataFrame:
    """The plan's power per node and bucket [start_s, end_s): Σ over GPUs of idle power plus, for the
    share of the bucket a planned job holds the node, its workload's extra time-average power."""
    first = math.floor(start_s / bucket_s)
    buckets = max(0, math.ceil(end_s / bucket_s) - first)
    edges = (first + np.arange(buckets + 1)) * bucket_s
    extra = np.zeros((buckets, len(names)))
    column = {n: i for i, n in enumerate(names)}
    for job in jobs:
        overlap = np.clip(np.minimum(edges[1:], job.end_s) - np.maximum(edges[:-1], job.start_s), 0.0, None)
        if not overlap.any():
            continue
        per_node_w = gpus_per_node * (job.workload.power_per_gpu_w - idle_w) * overlap / bucket_s
        for node in job.nodes:
            extra[:, column[node]] += per_node_w
    power = gpus_per_node * idle_w + extra
    return pd.DataFrame(
        {
            "cluster": cluster,
            "node": np.tile(np.asarray(names, dtype=object), buckets),
            "ts": np.repeat(edges[:-1], len(names)),
            "physics_power_w": power.reshape(-1),
        }
    )


def reading_rows(reading: SourceReading, cluster: str) -> list[tuple[Any, ...]]:
    """A source reading as telemetry tuples in `TELEMETRY_COLUMNS` order (what the decoder produces)."""
    return [
        (cluster, sample.node, gpu.index, sample.ts, *_GPU_VALUES(gpu))
        for sample in reading.samples
        for gpu in sample.gpus
    ]


def run_source(
    source: SimulatedCluster, start_s: float, polls: int, interval_s: float, cluster: str
) -> pd.DataFrame:
    """Poll `source` `polls` times every `interval_s` from `start_s`; the samples as a telemetry frame."""
    rows: list[tuple[Any, ...]] = []
    for i in range(polls):
        rows.extend(reading_rows(source.read(start_s + i * interval_s), cluster))
    return pd.DataFrame.from_records(rows, columns=list(TELEMETRY_COLUMNS))


def simulate_history(
    *,
    nodes: int = 16,
    gpus_per_node: int = 8,
    hours: float = 48.0,
    interval_s: float = 30.0,
    seed: int = 0,
    gpu: str = DEFAULT_GPU,
    cluster: str = DEFAULT_CLUSTER,
    failure_rate_scale: float = POWER_HISTORY_FAILURE_SCALE,
    start_ts: float = HISTORY_START_TS,
    bucket_s: float = 60.0,
    ahead_s: float = 3600.0,
) -> SimulatedHistory:
    """`hours` of telemetry of a simulated cluster running planned jobs, with the plan's physics estimate
    (bucketed by `bucket_s`, reaching `ahead_s` past the last sample). Deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    names = node_names(nodes)
    profile = gpu_profile(gpu)
    polls = max(1, math.floor(hours * 3600.0 / interval_s) + 1)
    end_s = start_ts + (polls - 1) * interval_s
    jobs = plan_jobs(names, gpus_per_node, reference_workloads(), start_ts, end_s + ahead_s, rng)
    specs = [
        JobSpec(
            j.job_id,
            j.workload,
            j.nodes,
            start_s=j.start_s,
            steps=max(1, round((j.end_s - j.start_s) / j.workload.step_time_s)),
        )
        for j in jobs
    ]
    source = SimulatedCluster(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        gpu=profile,
        jobs=specs,
        rng=rng,
        failure_rate_scale=failure_rate_scale,
        step_event_every=STEP_EVENT_EVERY,
    )
    try:
        telemetry = run_source(source, start_ts, polls, interval_s, cluster)
    finally:
        source.close()
    physics = physics_frame(
        jobs,
        names,
        gpus_per_node,
        profile.idle_w,
        cluster=cluster,
        start_s=start_ts,
        end_s=end_s + ahead_s + bucket_s,
        bucket_s=bucket_s,
    )
    return SimulatedHistory(telemetry, physics, jobs)


def simulate_risk_history(
    *,
    nodes: int = 64,
    gpus_per_node: int = 8,
    hours: float = 72.0,
    interval_s: float = 120.0,
    seed: int = 0,
    gpu: str = DEFAULT_GPU,
    cluster: str = DEFAULT_CLUSTER,
    failure_rate_scale: float = RISK_HISTORY_FAILURE_SCALE,
    precursor_lead_s: float = RISK_PRECURSOR_LEAD_S,
    start_ts: float = HISTORY_START_TS,
) -> pd.DataFrame:
    """Telemetry of the default simulated fleet with failures and their precursors (ECC bursts, XIDs)."""
    source = SimulatedCluster(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        gpu=gpu_profile(gpu),
        seed=seed,
        failure_rate_scale=failure_rate_scale,
        precursor_lead_s=precursor_lead_s,
        step_event_every=STEP_EVENT_EVERY,
    )
    try:
        return run_source(
            source, start_ts, max(1, math.floor(hours * 3600.0 / interval_s) + 1), interval_s, cluster
        )
    finally:
        source.close()


def write_telemetry(store: Store, telemetry: pd.DataFrame, *, batch_rows: int = 20_000) -> int:
    """Write a telemetry frame (`TELEMETRY_COLUMNS`) to the store in batches; returns rows inserted."""
    frame = telemetry[list(TELEMETRY_COLUMNS)]
    columns = [
        [
            None
            if v is None or (isinstance(v, float) and math.isnan(v))
            else (int(v) if name in _INT_COLUMNS else v)
            for v in frame[name].tolist()
        ]
        for name in TELEMETRY_COLUMNS
    ]
    rows = list(zip(*columns, strict=True))
    inserted = 0
    for start in range(0, len(rows), batch_rows):
        inserted += store.write_batch(
            IngestBatch(telemetry=rows[start : start + batch_rows])
        ).telemetry_inserted
    return inserted


def store_history(
    store: Store, cluster: str | None = None, since_ts: float | None = None, until_ts: float | None = None
) -> pd.DataFrame:
    """Raw telemetry from the store (`Store.telemetry_frame`), for fitting the power forecaster."""
    return store.telemetry_frame(cluster, since_ts, until_ts)


# ------------------------------------------------------------------------------------------ forecasts


def power_forecasts(frame: pd.DataFrame, model_version: str) -> list[Forecast]:
    """`models.power.PowerForecaster.predict` rows as store forecasts (kind `power`, unit W)."""
    out = []
    for row in frame.to_dict("records"):
        level = str(row["level"])
        out.append(
            Forecast(
                kind="power",
                cluster=str(row["cluster"]),
                scope=level,
                target=str(row["cluster"]) if level == "cluster" else str(row["node"]),
                made_at_ts=float(row["made_at_ts"]),
                horizon_s=float(row["horizon_s"]),
                p10=float(row["p10_w"]),
                p50=float(row["p50_w"]),
                p90=float(row["p90_w"]),
                unit="W",
                model_version=model_version,
            )
        )
    return out


def risk_forecasts(rows: pd.DataFrame, risk: Any, horizon_s: float, model_version: str) -> list[Forecast]:
    """GPU failure probabilities (`models.failure.telemetry_risk_features` rows and their risk) as store
    forecasts (kind `failure`, scope `gpu`, target `node/index`, p50 = the probability)."""
    return [
        Forecast(
            kind="failure",
            cluster=str(row["cluster"]),
            scope="gpu",
            target=f"{row['node']}/{int(row['gpu_index'])}",
            made_at_ts=float(row["ts"]),
            horizon_s=float(horizon_s),
            p50=float(p),
            unit="probability",
            model_version=model_version,
        )
        for row, p in zip(rows.to_dict("records"), np.asarray(risk, dtype=np.float64).tolist(), strict=True)
    ]


def forecast_power(
    store: Store,
    model: Any,
    model_version: str,
    *,
    now_ts: float,
    cluster: str | None = None,
    physics: pd.DataFrame | None = None,
) -> int:
    """Forecast power from the store's newest telemetry (up to `now_ts`) with a fitted
    `models.power.PowerForecaster`, write the forecasts, return how many were written."""
    bucket = float(model.bucket_s)
    since = now_ts - float(model.min_history_s_) - 2 * bucket
    telemetry = store.telemetry_frame(cluster, since, now_ts)
    frame = model.predict(telemetry, physics)
    return write_forecasts(store, power_forecasts(frame, model_version))


def forecast_failure_risk(
    store: Store,
    model: Any,
    model_version: str,
    *,
    now_ts: float,
    cluster: str | None = None,
    horizon_s: float = 3600.0,
    window_s: float = 1800.0,
    bucket_s: float = 120.0,
) -> int:
    """Score every reporting GPU's failure risk from the store's telemetry of the last `window_s` with a
    fitted `models.failure.FailureRiskModel`, write the forecasts, return how many were written."""
    from models.failure import telemetry_risk_features

    telemetry = store.telemetry_frame(cluster, now_ts - window_s - bucket_s, now_ts)
    rows = telemetry_risk_features(telemetry, window_s=window_s, bucket_s=bucket_s)
    if rows.empty:
        return 0
    return write_forecasts(store, risk_forecasts(rows, model.predict_risk(rows), horizon_s, model_version))
