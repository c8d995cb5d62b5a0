"""The live twin state: latest reading per GPU, node status, job progress and observed step time.

Pure and clock-free: the service folds decoded records in and passes the current time to
`check_stale`. A node is `stale` when no telemetry has arrived for `STALE_AFTER_INTERVALS` of its
telemetry interval (the telemetry issue: "no telemetry for 3 intervals → stale"); the interval is learnt
per node from the spacing of its samples (an exponentially weighted mean), seeded with the configured
publishing interval.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from twin.records import COL, TELEMETRY_COLUMNS, JobEventRecord, NodeStatusRecord, TelemetryTuple

STALE_AFTER_INTERVALS: Final = 3.0
# Weight of the newest gap in the per-node interval estimate (EWMA, α = 0.2: ~5-sample memory).
INTERVAL_EWMA_ALPHA: Final = 0.2
# Recent sample timestamps remembered per node to recognise a redelivered message (QoS 1 duplicates
# arrive within the broker's in-flight window; 64 samples cover a minute at 1 Hz).
RECENT_TS_PER_NODE: Final = 64
# Step times kept per job for the observed-vs-predicted comparison (online calibration, issue 4).
STEP_TIMES_PER_JOB: Final = 512

NodeKey = tuple[str, str]  # (cluster, node)
GpuKey = tuple[str, str, int]  # (cluster, node, gpu index)
JOB_STATE_BY_EVENT: Final = {
    "start": "running",
    "step": "running",
    "checkpoint": "running",
    "end": "ended",
    "fail": "failed",
}


@dataclass(slots=True)
class NodeLive:
    cluster: str
    node: str
    status: str = "unknown"  # online | offline | stale | unknown
    last_ts: float | None = None  # newest sample timestamp (the node's clock)
    last_received_s: float | None = None  # when the service received it (the service's clock)
    interval_s: float = 1.0
    gpus: int = 0
    recent_ts: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_TS_PER_NODE))


@dataclass(slots=True)
class JobLive:
    cluster: str
    job_id: str
    state: str = "running"
    started_ts: float | None = None
    updated_ts: float = 0.0
    last_step: int | None = None
    last_checkpoint_step: int | None = None  # newest checkpoint event's step (work after it is at risk)
    tokens: float | None = None
    model: dict[str, Any] | None = None
    layout: dict[str, Any] | None = None
    nodes: tuple[str, ...] = ()
    reason: str | None = None
    step_times_s: deque[float] = field(default_factory=lambda: deque(maxlen=STEP_TIMES_PER_JOB))

    @property
    def observed_step_time_s(self) -> float | None:
        """Median of the recent step times (robust to the first, slow steps and to stragglers)."""
        if not self.step_times_s:
            return None
        ordered = sorted(self.step_times_s)
        return ordered[len(ordered) // 2]


class TwinState:
    """Thread-safe live state; `snapshot()` gives a JSON-able copy for readers."""

    def __init__(self, default_interval_s: float = 1.0, *, min_interval_s: float = 0.0) -> None:
        """`min_interval_s` floors the learnt interval in the stale check: a reader that folds samples
        in batches (the service, every `batch_max_delay_s`) cannot see a node more often than that, however
        fast the node publishes."""
        if not default_interval_s > 0:
            raise ValueError(f"default_interval_s(={default_interval_s}) must be > 0.")
        if not min_interval_s >= 0:
            raise ValueError(f"min_interval_s(={min_interval_s}) must be ≥ 0.")
        self.default_interval_s = default_interval_s
        self.min_interval_s = min_interval_s
        self.nodes: dict[NodeKey, NodeLive] = {}
        self.gpus: dict[GpuKey, TelemetryTuple] = {}
        self.jobs: dict[tuple[str, str], JobLive] = {}
        self._lock = threading.Lock()

    def _node(self, cluster: str, node: str) -> NodeLive:
        key = (cluster, node)
        live = self.nodes.get(key)
        if live is None:
            live = self.nodes[key] = NodeLive(cluster, node, interval_s=self.default_interval_s)
        return live

    def is_duplicate(self, cluster: str, node: str, ts: float) -> bool:
        """True when this node's sample at `ts` was already folded (a QoS 1 redelivery)."""
        live = self.nodes.get((cluster, node))
        if live is None or live.last_ts is None or ts > live.last_ts:
            return False  # newer than anything folded: the common case costs no scan
        return ts in live.recent_ts

    def fold_message(self, cluster: str, node: str, ts: float, received_s: float) -> None:
        """Record that a telemetry message for (cluster, node) at `ts` arrived at `received_s`."""
        with self._lock:
            live = self._node(cluster, node)
            if live.last_ts is not None and ts > live.last_ts:
                gap = ts - live.last_ts
                live.interval_s += INTERVAL_EWMA_ALPHA * (gap - live.interval_s)
            if live.last_ts is None or ts >= live.last_ts:
                live.last_ts = ts
                live.last_received_s = received_s
            live.recent_ts.append(ts)
            if live.status in ("unknown", "stale"):
                live.status = "online"

    def fold_telemetry(self, rows: Iterable[TelemetryTuple]) -> None:
        """Keep the newest reading per GPU (older redeliveries do not overwrite newer readings)."""
        c_cluster, c_node, c_index, c_ts = COL["cluster"], COL["node"], COL["gpu_index"], COL["ts"]
        with self._lock:
            gpus = self.gpus
            for row in rows:
                key = (row[c_cluster], row[c_node], row[c_index])
                current = gpus.get(key)
                if current is None or row[c_ts] >= current[c_ts]:
                    gpus[key] = row

    def fold_status(self, record: NodeStatusRecord) -> None:
        with self._lock:
            self._node(record.cluster, record.node).status = record.status

    def fold_job_event(self, record: JobEventRecord) -> None:
        """Advance a job; an event older than the job's newest does not move its state backwards."""
        with self._lock:
            key = (record.cluster, record.job_id)
            job = self.jobs.get(key)
            if job is None:
                job = self.jobs[key] = JobLive(record.cluster, record.job_id, updated_ts=record.ts)
            if record.model is not None:
                job.model = record.model
            if record.layout is not None:
                job.layout = record.layout
            if record.nodes:
                job.nodes = record.nodes
            if record.event == "start":
                job.started_ts = record.ts if job.started_ts is None else min(job.started_ts, record.ts)
            if record.step_time_s is not None and record.event == "step":
                job.step_times_s.append(record.step_time_s)
            if record.step is not None and (job.last_step is None or record.step > job.last_step):
                job.last_step = record.step
            if record.event == "checkpoint" and record.step is not None:
                job.last_checkpoint_step = max(job.last_checkpoint_step or 0, record.step)
            if record.tokens is not None:
                job.tokens = max(job.tokens or 0.0, record.tokens)
            if record.ts >= job.updated_ts:  # the newest event decides the state; late ones do not
                job.state = JOB_STATE_BY_EVENT[record.event]
                job.updated_ts = record.ts
                if record.event == "fail":
                    job.reason = record.reason

    def mark_stale(self, cluster: str, node: str) -> None:
        """Mark a known node `stale` (e.g. restoring a state the store recorded)."""
        with self._lock:
            self._node(cluster, node).status = "stale"

    def copy(self) -> TwinState:
        """A consistent copy (taken under the lock) for readers that work on it at length, e.g. a fork
        of the simulation, while the service keeps folding into the original."""
        out = TwinState(self.default_interval_s, min_interval_s=self.min_interval_s)
        with self._lock:
            for key, node in self.nodes.items():
                recent = deque(node.recent_ts, RECENT_TS_PER_NODE)
                out.nodes[key] = dataclasses.replace(node, recent_ts=recent)
            out.gpus = dict(self.gpus)
            for key, job in self.jobs.items():
                out.jobs[key] = dataclasses.replace(
                    job, step_times_s=deque(job.step_times_s, STEP_TIMES_PER_JOB)
                )
        return out

    def check_stale(self, now_s: float) -> list[NodeKey]:
        """Mark nodes silent for more than STALE_AFTER_INTERVALS intervals as `stale`; return the new ones."""
        newly: list[NodeKey] = []
        floor_s = self.min_interval_s
        with self._lock:
            for key, live in self.nodes.items():
                if live.status != "online" or live.last_received_s is None:
                    continue
                if now_s - live.last_received_s > STALE_AFTER_INTERVALS * max(live.interval_s, floor_s):
                    live.status = "stale"
                    newly.append(key)
        return newly

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy: nodes with status and GPUs' latest readings, jobs with progress."""
        with self._lock:
            gpus_by_node: dict[NodeKey, list[dict[str, Any]]] = {}
            for (cluster, node, _), row in sorted(self.gpus.items()):
                gpus_by_node.setdefault((cluster, node), []).append(
                    dict(zip(TELEMETRY_COLUMNS, row, strict=True))
                )
            nodes = [
                {
                    "cluster": live.cluster,
                    "node": live.node,
                    "status": live.status,
                    "last_ts": live.last_ts,
                    "interval_s": round(live.interval_s, 3),
                    "gpus": gpus_by_node.get(key, []),
                }
                for key, live in sorted(self.nodes.items())
            ]
            jobs = [
                {
                    "cluster": job.cluster,
                    "job_id": job.job_id,
                    "state": job.state,
                    "started_ts": job.started_ts,
                    "updated_ts": job.updated_ts,
                    "last_step": job.last_step,
                    "last_checkpoint_step": job.last_checkpoint_step,
                    "tokens": job.tokens,
                    "observed_step_time_s": job.observed_step_time_s,
                    "model": job.model,
                    "layout": job.layout,
                    "nodes": list(job.nodes),
                    "reason": job.reason,
                }
                for _, job in sorted(self.jobs.items())
            ]
        return {"nodes": nodes, "jobs": jobs}
