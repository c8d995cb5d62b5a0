"""Live cluster page logic: store rows → heatmap matrix, alerts, job table, summary. No Streamlit here.

Alert rules (each names its threshold and source):
- **stale**: a node not `offline` whose newest telemetry (or status) is older than `stale_after_s`, or marked
  `stale` by the service — the rule of `twin.store.status.store_status`, evaluated on the node rows the
  page already read (that function also counts every table, too slow for a refresh loop).
- **offline**: the node said so (its MQTT last will).
- **failure**: a GPU's newest XID is 48 (double-bit ECC) or 79 (fell off the bus), a GPU whose node still
  reports but it does not (off the bus), a job that ended in `failed` (with its reason).
- **thermal**: NVML thermal throttle bits set, or the temperature within `THERMAL_MARGIN_C` of the A100's
  slowdown temperature.
- **risk**: failure precursors — correctable ECC errors or a pending row remap (XID 63), which precede a
  double-bit error (sensors.sim_failures) — and failure forecasts above `HIGH_FAILURE_RISK` when any exist.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from twin.records import TELEMETRY_COLUMNS
from twin.store.repository import Store
from twin.workload_profile import A100_SLOWDOWN_TEMP_C

FloatMatrix = npt.NDArray[np.float64]

# XID codes (NVIDIA "Xid Errors" catalogue; the same as sensors.sim_failures).
XID_DBE: Final = 48  # double-bit ECC error
XID_ROW_REMAP: Final = 63  # row remapping / page retirement recorded
XID_FALLEN_OFF_BUS: Final = 79
FAILURE_XIDS: Final[Mapping[int, str]] = {
    XID_DBE: "double-bit ECC error",
    XID_FALLEN_OFF_BUS: "fell off the bus",
}
# NVML clocks-event reasons that mean heat (NVML API reference, nvmlClocksEventReasons):
# SwThermalSlowdown 0x20, HwThermalSlowdown 0x40.
THROTTLE_SW_THERMAL: Final = 0x20
THROTTLE_HW_THERMAL: Final = 0x40
THERMAL_THROTTLE_MASK: Final = THROTTLE_SW_THERMAL | THROTTLE_HW_THERMAL
# ASSUMPTION: warn 5 °C before the slowdown temperature (A100 89 °C, twin.workload_profile); the
# telemetry does not say which GPU model a node has, so the A100's is used for every GPU.
THERMAL_MARGIN_C: Final = 5.0
THERMAL_WARNING_C: Final = A100_SLOWDOWN_TEMP_C - THERMAL_MARGIN_C
# ASSUMPTION: a failure forecast (probability within its horizon) of 20 % or more is "high risk" —
# about 100× the per-node daily failure probability of the Llama 3 rates on 8 GPUs.
HIGH_FAILURE_RISK: Final = 0.2
# Step events read per job for the observed step time (median): the newest 64.
STEP_EVENTS_PER_JOB: Final = 64

# Heatmap metric label → (telemetry column, unit, colour scale).
HEATMAP_METRICS: Final[Mapping[str, tuple[str, str, str]]] = {
    "Power": ("power_w", "W", "Inferno"),
    "Temperature": ("temp_c", "°C", "YlOrRd"),
    "Utilisation": ("gpu_util_pct", "%", "Viridis"),
}
SEVERITY_ORDER: Final[Mapping[str, int]] = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing on the live cluster that needs attention."""

    severity: str  # error | warning | info
    kind: str  # stale | offline | failure | thermal | risk
    where: str  # node, node/GPU or job id
    message: str
    ts: float | None = None


@dataclass(frozen=True, slots=True)
class Heatmap:
    """A node × GPU matrix: `z[g, n]` is GPU g of `nodes[n]` (NaN: no reading)."""

    nodes: tuple[str, ...]
    gpu_indices: tuple[int, ...]
    z: FloatMatrix
    metric: str
    column: str
    unit: str
    colorscale: str


@dataclass(frozen=True, slots=True)
class Summary:
    """Headline numbers of the live cluster."""

    nodes: int
    nodes_reporting: int
    gpus_reporting: int
    power_w: float
    mean_util_pct: float | None
    max_temp_c: float | None
    jobs_running: int
    newest_ts: float | None


def telemetry_frame(latest: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """`Store.latest_telemetry` rows as a DataFrame with `TELEMETRY_COLUMNS` (numeric columns as floats)."""
    frame = pd.DataFrame.from_records(list(latest), columns=list(TELEMETRY_COLUMNS))
    for column in TELEMETRY_COLUMNS:
        if column not in ("cluster", "node", "uuid"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


def heatmap(frame: pd.DataFrame, metric: str, nodes: Sequence[str] = ()) -> Heatmap:
    """The node × GPU matrix of `metric` (a key of HEATMAP_METRICS). `nodes` adds nodes with no reading."""
    if metric not in HEATMAP_METRICS:
        raise ValueError(f"metric(={metric!r}) must be one of {', '.join(HEATMAP_METRICS)}.")
    column, unit, scale = HEATMAP_METRICS[metric]
    names = sorted(set(frame["node"].astype(str)) | set(nodes))
    indices = sorted({int(i) for i in frame["gpu_index"].dropna()}) or [0]
    z = np.full((len(indices), len(names)), np.nan)
    if len(frame):
        col = {name: k for k, name in enumerate(names)}
        row = {gpu: k for k, gpu in enumerate(indices)}
        n = frame["node"].astype(str).map(col).to_numpy(dtype=np.int64)
        g = frame["gpu_index"].astype("int64").map(row).to_numpy(dtype=np.int64)
        z[g, n] = frame[column].to_numpy(dtype=np.float64)
    return Heatmap(tuple(names), tuple(indices), z, metric, column, unit, scale)


def _heard_ts(node: Mapping[str, Any]) -> float | None:
    for key in ("last_seen_ts", "status_ts", "first_seen_ts"):
        value = node.get(key)
        if value is not None:
            return float(value)
    return None


def summary(
    frame: pd.DataFrame,
    nodes: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    now_s: float,
    stale_after_s: float,
) -> Summary:
    """Headline numbers. A GPU reports when its newest sample is in its node's newest message (a GPU off
    the bus stays behind), within `stale_after_s` of `now_s`, and its node is not offline."""
    live_nodes = {
        str(n["node"]): float(n["last_seen_ts"])
        for n in nodes
        if n.get("status") != "offline" and n.get("last_seen_ts") is not None
    }
    if len(frame):
        node_last = frame["node"].astype(str).map(live_nodes).astype("float64")
        fresh = frame[(frame["ts"] >= node_last) & (frame["ts"] >= now_s - stale_after_s)]
    else:
        fresh = frame
    util = fresh["gpu_util_pct"].dropna()
    temp = fresh["temp_c"].dropna()
    return Summary(
        nodes=len(nodes),
        nodes_reporting=int(fresh["node"].nunique()) if len(fresh) else 0,
        gpus_reporting=len(fresh),
        power_w=float(fresh["power_w"].sum()) if len(fresh) else 0.0,
        mean_util_pct=float(util.mean()) if len(util) else None,
        max_temp_c=float(temp.max()) if len(temp) else None,
        jobs_running=sum(1 for j in jobs if j.get("state") in ("running", "checkpointing")),
        newest_ts=float(frame["ts"].max()) if len(frame) else None,
    )


def alerts(
    nodes: Sequence[Mapping[str, Any]],
    frame: pd.DataFrame,
    jobs: Sequence[Mapping[str, Any]],
    now_s: float,
    stale_after_s: float,
    failure_risks: Iterable[tuple[str, float]] = (),
) -> list[Alert]:
    """Every alert of the live cluster, most severe first (then by place)."""
    out: list[Alert] = []
    node_seen: dict[str, float] = {}
    for node in nodes:
        name, status = str(node["node"]), str(node.get("status"))
        heard = _heard_ts(node)
        if node.get("last_seen_ts") is not None:
            node_seen[name] = float(node["last_seen_ts"])
        if status == "offline":
            out.append(
                Alert(
                    "error", "offline", name, "node reported offline (MQTT last will)", node.get("status_ts")
                )
            )
        elif status == "stale" or (heard is not None and heard < now_s - stale_after_s):
            silent = "never" if heard is None else f"{now_s - heard:,.0f} s"
            out.append(
                Alert("warning", "stale", name, f"no telemetry for {silent} (> {stale_after_s:g} s)", heard)
            )
    if len(frame):
        out.extend(_gpu_alerts(frame, node_seen))
    for job in jobs:
        if job.get("state") == "failed":
            reason = job.get("reason") or "no reason given"
            out.append(
                Alert(
                    "error", "failure", f"job {job['job_id']}", f"job failed: {reason}", job.get("ended_ts")
                )
            )
    for target, probability in failure_risks:
        if probability >= HIGH_FAILURE_RISK:
            out.append(
                Alert(
                    "warning",
                    "risk",
                    target,
                    f"failure forecast {probability:.0%} (≥ {HIGH_FAILURE_RISK:.0%})",
                )
            )
    out.sort(key=lambda a: (SEVERITY_ORDER[a.severity], a.kind, a.where))
    return out


def _gpu_alerts(frame: pd.DataFrame, node_seen: Mapping[str, float]) -> list[Alert]:
    out: list[Alert] = []
    xid = frame["xid_last"].fillna(0).astype("int64").to_numpy()
    throttle = frame["throttle_reasons"].fillna(0).astype("int64").to_numpy()
    temp = frame["temp_c"].to_numpy(dtype=np.float64)
    sbe = frame["ecc_sbe_total"].fillna(0).to_numpy(dtype=np.float64)
    ts = frame["ts"].to_numpy(dtype=np.float64)
    nodes = frame["node"].astype(str).to_numpy()
    gpus = frame["gpu_index"].astype("int64").to_numpy()
    with np.errstate(invalid="ignore"):
        hot = ((throttle & THERMAL_THROTTLE_MASK) != 0) | (temp >= THERMAL_WARNING_C)
    # A GPU silent while its node still reports: it fell off the bus (its row keeps its last reading).
    node_last = np.array([node_seen.get(n, t) for n, t in zip(nodes, ts, strict=True)])
    missing = ts < node_last
    for k in np.flatnonzero((xid == XID_DBE) | (xid == XID_FALLEN_OFF_BUS) | missing):
        where = f"{nodes[k]}/GPU {gpus[k]}"
        if xid[k] in FAILURE_XIDS:
            message = f"XID {xid[k]}: {FAILURE_XIDS[int(xid[k])]}"
        else:
            message = f"GPU stopped reporting {node_last[k] - ts[k]:,.0f} s before its node (off the bus?)"
        out.append(Alert("error", "failure", where, message, float(ts[k])))
    for k in np.flatnonzero(hot):
        reason = "thermal throttling" if throttle[k] & THERMAL_THROTTLE_MASK else "hot"
        out.append(
            Alert(
                "warning",
                "thermal",
                f"{nodes[k]}/GPU {gpus[k]}",
                f"{reason}: {temp[k]:.0f} °C (warning at {THERMAL_WARNING_C:g} °C)",
                float(ts[k]),
            )
        )
    precursor = ((sbe > 0) | (xid == XID_ROW_REMAP)) & ~((xid == XID_DBE) | (xid == XID_FALLEN_OFF_BUS))
    for k in np.flatnonzero(precursor):
        remap = ", row remap pending (XID 63)" if xid[k] == XID_ROW_REMAP else ""
        out.append(
            Alert(
                "warning",
                "risk",
                f"{nodes[k]}/GPU {gpus[k]}",
                f"high failure risk: {sbe[k]:,.0f} correctable ECC errors{remap}",
                float(ts[k]),
            )
        )
    return out


def observed_step_time_s(step_times: Sequence[tuple[float, int | None, float]]) -> float | None:
    """Median of the recent step times (robust to slow first steps and stragglers, as twin.state)."""
    values = [s for _, _, s in step_times if math.isfinite(s)]
    return float(np.median(values)) if values else None


JOB_COLUMNS: Final = (
    "job",
    "state",
    "model",
    "nodes",
    "step",
    "tokens",
    "progress",
    "observed step",
    "predicted step",
    "calibrated step",
    "ETA P50",
    "ETA P90",
    "reason",
)


def job_rows(
    jobs: Sequence[Mapping[str, Any]],
    step_times: Mapping[str, Sequence[tuple[float, int | None, float]]],
    projection: Mapping[str, Mapping[str, Any]] | None,
) -> list[dict[str, Any]]:
    """One row per job (SI values; the UI formats them): observed step time from the job's events,
    predicted/calibrated step time, progress and ETA from the projection when there is one."""
    rows = []
    for job in jobs:
        job_id = str(job["job_id"])
        model = job.get("model") or {}
        proj = (projection or {}).get(job_id, {})
        observed = observed_step_time_s(step_times.get(job_id, ()))
        if observed is None and job.get("last_step_time_s") is not None:
            observed = float(job["last_step_time_s"])
        rows.append(
            {
                "job": job_id,
                "state": job.get("state"),
                "model": model.get("name") or model.get("preset") or "custom",
                "nodes": len(job.get("nodes") or ()),
                "step": job.get("last_step"),
                "tokens": job.get("tokens"),
                "progress": proj.get("progress"),
                "observed step": observed,
                "predicted step": proj.get("predicted_step_time_s"),
                "calibrated step": proj.get("calibrated_step_time_s"),
                "ETA P50": proj.get("eta_p50_ts"),
                "ETA P90": proj.get("eta_p90_ts"),
                "reason": job.get("reason"),
            }
        )
    return rows


# --- reading the store --------------------------------------------------------------------------------

# Points of the cluster power chart over the window. ASSUMPTION: every sensor reports at least every 30 s
# (dcgm-exporter's default collection interval), so the 30 s buckets of a 30-minute window see every GPU.
POWER_POINTS: Final = 60
MIN_POWER_BUCKET_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class LiveData:
    """One read of the live cluster from the store."""

    now_s: float
    frame: pd.DataFrame  # newest sample per GPU (TELEMETRY_COLUMNS)
    nodes: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    step_times: dict[str, list[tuple[float, int | None, float]]]
    power: pd.DataFrame  # ts, power_w, gpus (twin.store.power_history.cluster_power_series)

    @property
    def empty(self) -> bool:
        return self.frame.empty and not self.jobs and not self.nodes


def power_bucket_s(window_s: float) -> float:
    return max(MIN_POWER_BUCKET_S, window_s / POWER_POINTS)


def read_live(store: Store, cluster: str, now_s: float, window_s: float, stale_after_s: float) -> LiveData:
    """Everything the live page shows, read from `store`."""
    from twin.store.power_history import cluster_power_series

    frame = telemetry_frame(store.latest_telemetry(cluster))
    nodes = store.nodes(cluster)
    jobs = store.jobs(cluster)
    step_times = {
        str(job["job_id"]): [
            (float(e["ts"]), e["step"], float(e["step_time_s"]))
            for e in store.job_events(job["job_id"], cluster, newest=STEP_EVENTS_PER_JOB)
            if e["event"] == "step" and e["step_time_s"] is not None
        ]
        for job in jobs
    }
    # The window ends at the newest sample, so a store that stopped receiving still shows its last data.
    newest = float(frame["ts"].max()) if len(frame) else now_s
    until = newest + 1.0
    bucket = power_bucket_s(window_s)
    # A GPU's last power counts until its node would be stale (so the still-filling newest bucket and
    # unsynchronised sensors do not dip the sum; a dead GPU drops out once it would be stale).
    power = cluster_power_series(store, cluster, until - window_s, until, bucket, hold_s=stale_after_s)
    return LiveData(now_s, frame, nodes, jobs, step_times, power)
