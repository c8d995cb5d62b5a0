"""The simulation's event log: plain, comparable tuples in the order SimPy processed them.

Identical specs, states and seeds give identical logs (`Event` compares field by field), which is what the
determinism tests check. Checkpoints are counted per job, not logged (a 54-day run writes ~20,000).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class EventKind(StrEnum):
    """What happened. Times are simulation seconds from the start of the run (or from the fork)."""

    SUBMIT = "submit"  # a job entered the queue
    START = "start"  # a job got all its nodes for the first time (`nodes` lists them)
    REPLACE = "replace"  # a job got a replacement node (`nodes` holds it)
    RESUME = "resume"  # a job (re)started computing after launch/restart (`value` = steps done)
    FAILURE = "failure"  # a node or a job's software failed (`category`, `gpu`; `job` when one was hit)
    INTERRUPT = "interrupt"  # a failure stopped a running or restarting job (`value` = lost work, s)
    REPAIRED = "repaired"  # a failed node is back in service
    RECOVERED = "recovered"  # a stale or degraded node (from the initial state) is healthy again
    FINISH = "finish"  # a job reached its target (`value` = steps done)


class Event(NamedTuple):
    """One event. Fields that do not apply are None; `nodes` is empty unless nodes were handed out."""

    time_s: float
    kind: EventKind
    job: str | None = None
    node: int | None = None
    category: str | None = None  # failure root cause (Llama 3 Table 5 row name)
    gpu: int | None = None  # GPU index within the node, for GPU-component failures
    value: float | None = None
    nodes: tuple[int, ...] = ()


class EventLog:
    """An append-only list of `Event`s; `record` is the only writer."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[Event] = []

    def record(
        self,
        time_s: float,
        kind: EventKind,
        *,
        job: str | None = None,
        node: int | None = None,
        category: str | None = None,
        gpu: int | None = None,
        value: float | None = None,
        nodes: tuple[int, ...] = (),
    ) -> None:
        self.events.append(Event(float(time_s), kind, job, node, category, gpu, value, nodes))

    def of_kind(self, kind: EventKind) -> list[Event]:
        return [e for e in self.events if e.kind is kind]

    def __len__(self) -> int:
        return len(self.events)
