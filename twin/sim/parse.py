"""Parse an offline simulation spec (JSON or TOML, like the scenario contract of DESIGN §3).

    {"description": "...",
     "cluster": {"gpu": "h100-sxm", "nodes": 2048, "gpus_per_node": 8, "spare_nodes": 32,
                 "price_per_gpu_hour": 2.5, "currency": "EUR", "pue": 1.2, "power_cap_w": null,
                 "failure_rate_scale": 1.0, "restart_s": 600,
                 "repair_s": {"gpu": 172800, "network": 28800, "host": 86400}, ...bandwidths as in §3},
     "jobs": [{"id": "pretrain", "model": {"preset": "llama3.1-405b"}, "layout": {...}, "training": {...},
               "gpus": 16384, "checkpoint_interval_s": null, "arrival_s": 0, "efficiency_scale": 1.0}],
     "arrivals": {"kind": "poisson", "rate_per_hour": 2, "template": {job}, "start_s", "end_s", "max_jobs"}
              | {"kind": "helios", "path": null, "column": "submit_gpu_job", "start": null, "scale": 1,
                 "template": {job}, "max_jobs": null},
     "stragglers": false | true | {"cov": 0.03} | {"quantile": 0.1}}

Strict: unknown keys, wrong types and out-of-range values raise `ScenarioError` naming the field and value.
Parsing resolves every job through `twin.perf` and reads the trace files it names (Helios, PAI).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twin.errors import ScenarioError
from twin.perf.gpu_presets import gpu_preset
from twin.perf.reliability import DEFAULT_RESTART_S
from twin.scenario import CLUSTER_KEYS as SCENARIO_CLUSTER_KEYS
from twin.scenario import LAYOUT_KEYS, parse_layout, parse_model, parse_training
from twin.sim.arrivals import HELIOS_BIN_S, HELIOS_VENUS_FILE, load_submit_counts
from twin.sim.spec import (
    DEFAULT_REPAIR_GPU_S,
    DEFAULT_REPAIR_HOST_S,
    DEFAULT_REPAIR_NETWORK_S,
    JobSpec,
    PoissonArrivals,
    ReplayArrivals,
    SimCluster,
    SimSpec,
    StragglerSpec,
    resolve_job,
)
from twin.sim.stragglers import default_traces_dir, straggler_spec

TOP_KEYS = frozenset({"description", "cluster", "jobs", "arrivals", "stragglers"})
# The scenario contract's cluster keys (DESIGN §3), with whole nodes instead of a GPU count, plus the
# simulation's own: hot spares, restart and repair times.
CLUSTER_KEYS = (SCENARIO_CLUSTER_KEYS - {"gpus"}) | {"nodes", "spare_nodes", "restart_s", "repair_s"}
REPAIR_KEYS = frozenset({"gpu", "network", "host"})
JOB_KEYS = frozenset(
    {"id", "model", "layout", "training", "gpus", "checkpoint_interval_s", "arrival_s", "efficiency_scale"}
)
POISSON_KEYS = frozenset({"kind", "rate_per_hour", "start_s", "end_s", "max_jobs", "template"})
HELIOS_KEYS = frozenset({"kind", "path", "column", "start", "scale", "max_jobs", "template"})
STRAGGLER_KEYS = frozenset({"cov", "quantile"})


def _object(field: str, value: Any, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{field}(={value!r}) must be an object.")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ScenarioError(f"unknown key {field}.{unknown[0]!r}; allowed: {', '.join(sorted(allowed))}.")
    return value


def _int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise ScenarioError(f"{field}(={value!r}) must be an integer.")
    if value < minimum:
        raise ScenarioError(f"{field}(={value!r}) must be >= {minimum}.")
    return int(value)


def _number(field: str, value: Any, *, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(f"{field}(={value!r}) must be a finite number.")
    if value < minimum or (strict and value == minimum):
        raise ScenarioError(f"{field}(={value!r}) must be {'>' if strict else '>='} {minimum:g}.")
    return float(value)


def _optional(section: Mapping[str, Any], key: str, field: str, scale: float = 1.0) -> float | None:
    value = section.get(key)
    return None if value is None else _number(field, value, strict=True) * scale


def parse_cluster(raw: Any) -> SimCluster:
    c = _object("cluster", raw, CLUSTER_KEYS)
    for key in ("gpu", "nodes"):
        if key not in c:
            raise ScenarioError(f"cluster.{key} is required.")
    if not isinstance(c["gpu"], str):
        raise ScenarioError(f"cluster.gpu(={c['gpu']!r}) must be a GPU preset name.")
    repair = _object("cluster.repair_s", c.get("repair_s", {}), REPAIR_KEYS)
    currency = c.get("currency", "EUR")
    if not isinstance(currency, str) or not currency:
        raise ScenarioError(f"cluster.currency(={currency!r}) must be a currency code such as EUR.")
    cluster = SimCluster(
        gpu=gpu_preset(c["gpu"]),
        nodes=_int("cluster.nodes", c["nodes"], 1),
        gpus_per_node=_int("cluster.gpus_per_node", c.get("gpus_per_node", 8), 1),
        spare_nodes=_int("cluster.spare_nodes", c.get("spare_nodes", 0), 0),
        price_per_gpu_hour=_number("cluster.price_per_gpu_hour", c.get("price_per_gpu_hour", 0.0)),
        currency=currency,
        pue=_number("cluster.pue", c.get("pue", 1.2), minimum=1.0),
        power_cap_w=_optional(c, "power_cap_w", "cluster.power_cap_w"),
        intra_node_bandwidth_bytes_per_s=_optional(
            c, "intra_node_bandwidth_gbytes_per_s", "cluster.intra_node_bandwidth_gbytes_per_s", 1e9
        ),
        inter_node_bandwidth_bytes_per_s=_optional(
            c, "inter_node_bandwidth_gbits_per_s", "cluster.inter_node_bandwidth_gbits_per_s", 1e9 / 8
        ),
        checkpoint_bandwidth_bytes_per_s=_optional(
            c, "checkpoint_bandwidth_gbytes_per_s", "cluster.checkpoint_bandwidth_gbytes_per_s", 1e9
        ),
        failure_rate_scale=_number(
            "cluster.failure_rate_scale", c.get("failure_rate_scale", 1.0), strict=True
        ),
        restart_s=_number("cluster.restart_s", c.get("restart_s", DEFAULT_RESTART_S)),
        repair_gpu_s=_number("cluster.repair_s.gpu", repair.get("gpu", DEFAULT_REPAIR_GPU_S), strict=True),
        repair_network_s=_number(
            "cluster.repair_s.network", repair.get("network", DEFAULT_REPAIR_NETWORK_S), strict=True
        ),
        repair_host_s=_number(
            "cluster.repair_s.host", repair.get("host", DEFAULT_REPAIR_HOST_S), strict=True
        ),
    )
    cluster.job_cluster(cluster.gpus)  # the perf core's own checks (power cap above idle, ...)
    return cluster


def parse_job(raw: Any, cluster: SimCluster, where: str, *, default_id: str | None = None) -> JobSpec:
    """One job (or an arrivals template, `default_id` naming it); `where` prefixes error messages."""
    j = _object(where, raw, JOB_KEYS if default_id is None else JOB_KEYS - {"arrival_s"})
    job_id = j.get("id", default_id)
    if not isinstance(job_id, str) or not job_id:
        raise ScenarioError(f"{where}.id(={job_id!r}) must be a non-empty string.")
    for key in ("model", "training"):
        if key not in j:
            raise ScenarioError(f"{where}.{key} is required.")
    layout_raw = _object(f"{where}.layout", j.get("layout", {}), LAYOUT_KEYS)
    tp, pp, cp = (_int(f"{where}.layout.{k}", layout_raw.get(k, 1), 1) for k in ("tp", "pp", "cp"))
    if layout_raw.get("dp") is None:
        if "gpus" not in j:
            raise ScenarioError(f"{where}.gpus is required (or give layout.dp).")
        gpus = _int(f"{where}.gpus", j["gpus"], 1)
        if gpus % (tp * pp * cp):
            raise ScenarioError(f"{where}.gpus(={gpus}) must be divisible by tp·pp·cp(={tp * pp * cp}).")
    else:
        gpus = tp * pp * cp * _int(f"{where}.layout.dp", layout_raw["dp"], 1)
        if "gpus" in j and _int(f"{where}.gpus", j["gpus"], 1) != gpus:
            raise ScenarioError(f"{where}.gpus(={j['gpus']!r}) must equal tp·pp·cp·dp(={gpus}).")
    interval = j.get("checkpoint_interval_s")
    try:
        model, layout, training = (
            parse_model(j["model"]),
            parse_layout(layout_raw, gpus),
            parse_training(j["training"]),
        )
    except ScenarioError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    return resolve_job(
        job_id,
        model,
        layout,
        training,
        cluster,
        arrival_s=_number(f"{where}.arrival_s", j.get("arrival_s", 0.0)),
        efficiency_scale=_number(f"{where}.efficiency_scale", j.get("efficiency_scale", 1.0), strict=True),
        checkpoint_interval_s=None
        if interval is None
        else _number(f"{where}.checkpoint_interval_s", interval, strict=True),
    )


def parse_arrivals(
    raw: Any, cluster: SimCluster, base_dir: Path | None, traces_dir: Path | None
) -> PoissonArrivals | ReplayArrivals:
    kind = raw.get("kind") if isinstance(raw, Mapping) else None
    if kind == "poisson":
        a = _object("arrivals", raw, POISSON_KEYS)
        if "template" not in a:
            raise ScenarioError("arrivals.template is required (the job every arrival copies).")
        end = a.get("end_s")
        max_jobs = a.get("max_jobs")
        return PoissonArrivals(
            template=parse_job(a["template"], cluster, "arrivals.template", default_id="poisson"),
            rate_per_hour=_number("arrivals.rate_per_hour", a.get("rate_per_hour"), strict=True),
            start_s=_number("arrivals.start_s", a.get("start_s", 0.0)),
            end_s=None if end is None else _number("arrivals.end_s", end),
            max_jobs=None if max_jobs is None else _int("arrivals.max_jobs", max_jobs, 0),
        )
    if kind == "helios":
        a = _object("arrivals", raw, HELIOS_KEYS)
        if "template" not in a:
            raise ScenarioError("arrivals.template is required (the job every arrival copies).")
        if a.get("path") is None:
            path = (traces_dir or default_traces_dir()) / HELIOS_VENUS_FILE
        elif isinstance(a["path"], str):
            path = Path(a["path"])
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
        else:
            raise ScenarioError(f"arrivals.path(={a['path']!r}) must be a file path.")
        column = a.get("column", "submit_gpu_job")
        start = a.get("start")
        if start is not None and not isinstance(start, str):
            raise ScenarioError(f"arrivals.start(={start!r}) must be a timestamp string.")
        scale = _number("arrivals.scale", a.get("scale", 1.0), strict=True)
        if scale > 1.0:
            raise ScenarioError(f"arrivals.scale(={scale!r}) must be <= 1 (it thins the trace).")
        max_jobs = a.get("max_jobs")
        return ReplayArrivals(
            template=parse_job(a["template"], cluster, "arrivals.template", default_id="helios"),
            counts=load_submit_counts(path, str(column), start),
            bin_s=HELIOS_BIN_S,
            source=f"{path.name}:{column}",
            scale=scale,
            max_jobs=None if max_jobs is None else _int("arrivals.max_jobs", max_jobs, 0),
        )
    raise ScenarioError(f"arrivals.kind(={kind!r}) must be 'poisson' or 'helios'.")


def parse_stragglers(raw: Any, traces_dir: Path | None) -> StragglerSpec | None:
    if raw is None or raw is False:
        return None
    if raw is True:
        return straggler_spec(traces_dir=traces_dir)
    s = _object("stragglers", raw, STRAGGLER_KEYS)
    if "cov" in s and "quantile" in s:
        raise ScenarioError("stragglers: give cov or quantile, not both.")
    cov = None if s.get("cov") is None else _number("stragglers.cov", s["cov"])
    quantile = None if s.get("quantile") is None else _number("stragglers.quantile", s["quantile"])
    return straggler_spec(cov=cov, quantile=quantile, traces_dir=traces_dir)


def parse_spec(raw: Any, *, base_dir: Path | None = None, traces_dir: Path | None = None) -> SimSpec:
    """Parse and validate a simulation spec mapping; relative trace paths resolve against `base_dir`."""
    spec = _object("spec", raw, TOP_KEYS)
    if "cluster" not in spec:
        raise ScenarioError("spec needs 'cluster'.")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"description(={description!r}) must be a string.")
    cluster = parse_cluster(spec["cluster"])
    jobs_raw = spec.get("jobs", [])
    if not isinstance(jobs_raw, list):
        raise ScenarioError(f"jobs(={jobs_raw!r}) must be a list.")
    jobs = tuple(parse_job(job, cluster, f"jobs[{i}]") for i, job in enumerate(jobs_raw))
    seen: set[str] = set()
    for i, job in enumerate(jobs):
        if job.job_id in seen:
            raise ScenarioError(f"jobs[{i}].id(={job.job_id!r}) is used twice.")
        seen.add(job.job_id)
    arrivals = (
        None
        if spec.get("arrivals") is None
        else parse_arrivals(spec["arrivals"], cluster, base_dir, traces_dir)
    )
    if not jobs and arrivals is None:
        raise ScenarioError("spec needs 'jobs' or 'arrivals' (nothing to simulate).")
    return SimSpec(
        cluster=cluster,
        jobs=jobs,
        arrivals=arrivals,
        stragglers=parse_stragglers(spec.get("stragglers"), traces_dir),
        description=description,
    )


def load_spec(path: str | Path, *, traces_dir: Path | None = None) -> SimSpec:
    """Read a JSON or TOML (by suffix) spec file and parse it; relative paths resolve beside the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ScenarioError(
            f"{path}: invalid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}"
        ) from None
    return parse_spec(raw, base_dir=path.parent, traces_dir=traces_dir)
