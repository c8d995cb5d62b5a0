"""Poll a source at a fixed interval and publish what it reads (`twin sensors …`).

Ticks are scheduled on absolute times (t0 + k·interval), so publishing jitter does not accumulate into
drift; between ticks the publisher's network I/O runs. A tick that falls behind (the host was suspended,
a poll took longer than the interval) is skipped rather than replayed in a burst, and counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sensors.publisher import PublisherHub
from sensors.source import Source


@dataclass(slots=True)
class RunStats:
    ticks: int = 0
    skipped_ticks: int = 0
    samples: int = 0
    gpu_samples: int = 0
    events: int = 0
    dropped: int = 0


def run_source(
    source: Source,
    hub: PublisherHub,
    interval_s: float,
    *,
    stop: threading.Event | None = None,
    duration_s: float | None = None,
    clock: Callable[[], float] = time.time,
    on_tick: Callable[[RunStats], None] | None = None,
) -> RunStats:
    """Publish `source`'s readings every `interval_s` seconds until `stop` is set or `duration_s` passes."""
    if not interval_s > 0:
        raise ValueError(f"interval_s(={interval_s}) must be > 0.")
    stop = stop or threading.Event()
    stats = RunStats()
    start = clock()
    next_tick = start
    while not stop.is_set():
        now = clock()
        if duration_s is not None and now - start >= duration_s:
            break
        if now < next_tick:
            hub.poll(min(next_tick - now, 0.05))
            continue
        behind = int((now - next_tick) // interval_s)
        if behind:
            stats.skipped_ticks += behind
            next_tick += behind * interval_s
        reading = source.read(now)
        for sample in reading.samples:
            if hub.publish_sample(sample):
                stats.samples += 1
                stats.gpu_samples += len(sample.gpus)
            else:
                stats.dropped += 1
        for event in reading.events:
            if hub.publish_event(event):
                stats.events += 1
            else:
                stats.dropped += 1
        if reading.silent_nodes:
            hub.go_silent(reading.silent_nodes)
        stats.ticks += 1
        next_tick += interval_s
        hub.poll(0.0)
        if on_tick is not None:
            on_tick(stats)
    return stats
