"""Live projections for the dashboard: fork the SimPy twin from the store and project the jobs forward.

`twin.live_sim` is imported lazily and guarded: when it is missing, when no `twin sim` spec of the cluster
was given, or when the projection itself fails, the page gets a `ProjectionView` that says why
("projection unavailable: …") instead of a stack trace.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final

from twin.errors import TwinError
from twin.store.repository import Store

# Replications run in the dashboard's own process (the local engine's worker pool would compete with the
# page for the same cores).
PROJECTION_WORKERS: Final = 1
PROJECTION_SEED: Final = 0


@dataclass(frozen=True, slots=True)
class ProjectionView:
    """A projection's JSON (`twin.live_sim.Projection.to_json`) by job, or why there is none."""

    reason: str | None = None
    jobs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    power_kw_hourly: Mapping[str, list[float]] | None = None
    now_s: float | None = None
    hours: float | None = None
    notes: tuple[str, ...] = ()
    currency: str | None = None

    @property
    def available(self) -> bool:
        return self.reason is None


def _live_sim() -> ModuleType | str:
    try:
        return importlib.import_module("twin.live_sim")
    except ImportError as exc:
        return f"twin.live_sim cannot be imported ({exc})"


def _project_json(
    live_sim: ModuleType, spec: Any, store: Store, cluster: str, now_s: float, hours: float, replications: int
) -> dict[str, Any]:
    """Call whichever entry point `twin.live_sim` offers: `project_live(spec, state, …)` or
    `fork_live` + `project`."""
    state = live_sim.load_live_state(store, cluster)
    if hasattr(live_sim, "project_live"):
        projection = live_sim.project_live(
            spec, state, cluster, now_s=now_s, hours=hours, replications=replications, seed=PROJECTION_SEED
        )
    else:
        plan = live_sim.fork_live(spec, state, cluster, now_s=now_s)
        projection = live_sim.project(
            plan, hours=hours, replications=replications, seed=PROJECTION_SEED, workers=PROJECTION_WORKERS
        )
    result: dict[str, Any] = projection.to_json()
    return result


def project_cluster(
    store: Store, cluster: str, spec_path: str | None, *, now_s: float, hours: float, replications: int
) -> ProjectionView:
    """The live projection of `cluster` at `now_s`, or a view whose `reason` says why there is none."""
    module = _live_sim()
    if isinstance(module, str):
        return ProjectionView(reason=module)
    if spec_path is None:
        return ProjectionView(
            reason="no `twin sim` spec of the cluster — start `twin dashboard --sim-spec FILE` "
            "(its hardware and each job's training target; see examples/sim_llama3_405b.json)"
        )
    try:
        from twin.sim.parse import load_spec

        spec = load_spec(spec_path)
        raw = _project_json(module, spec, store, cluster, now_s, hours, replications)
    except TwinError as exc:
        return ProjectionView(reason=str(exc))
    except Exception as exc:  # a bug in a module in progress must not take the live page down
        return ProjectionView(reason=f"{type(exc).__name__}: {exc}")
    jobs = {str(j["job_id"]): j for j in raw.get("jobs", [])}
    power = raw.get("power_kw_hourly")
    return ProjectionView(
        jobs=jobs,
        power_kw_hourly=power if isinstance(power, Mapping) else None,
        now_s=float(raw.get("now_s", now_s)),
        hours=float(raw.get("hours", hours)),
        notes=tuple(str(n) for n in raw.get("notes", ())),
        currency=raw.get("currency"),
    )
