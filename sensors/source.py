"""One interface for every telemetry source (Zeus: real, null and replay implementations behind one seam).

A source is polled: `read(now_s)` returns what it has observed up to wall-clock `now_s` (unix seconds):
node samples and, for sources that know about jobs (the simulated cluster, replay), job events. Sources do
no MQTT; `sensors.runner` moves their output to the publisher. Constructors do no I/O beyond what the
source is about (opening NVML, a file); `close()` releases it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sensors.contract import JobEvent, NodeSample


@dataclass(frozen=True, slots=True)
class SourceReading:
    """What one poll of a source produced."""

    samples: tuple[NodeSample, ...] = ()
    events: tuple[JobEvent, ...] = ()
    # Nodes that have gone silent (the simulated cluster's failures): the runner stops publishing for
    # them and, for a real node, its MQTT last will would say `offline`.
    silent_nodes: tuple[str, ...] = ()


@runtime_checkable
class Source(Protocol):
    """A telemetry source. `name` says which kind it is ("simulated", "nvml", "replay", "dcgm")."""

    @property
    def name(self) -> str: ...

    def read(self, now_s: float) -> SourceReading: ...

    def close(self) -> None: ...
