"""Load generator: simulated 8-GPU nodes publishing QoS 1 telemetry at a fixed rate through our
`PublisherHub` (one MQTT connection per node, as in production).

Readings come from the seeded simulated cluster (one poll, re-stamped), so payloads have realistic values
and sizes; generating fresh physics for 12,500 node-samples a second would measure the simulator, not
ingestion. For the same reason each node's GPU entries are turned into JSON-ready dicts once
(`_Restamped`): the bytes on the wire are exactly `NodeSample.to_payload()`'s (checked at start), but the
generator, which shares the machine's two cores with the broker and the service under test, spends
~10 % less CPU per message. Message k goes to node `nodes[k % len(nodes)]` with timestamp
`start + k * step_s` (its scheduled time, unique per message), so the benchmark can rebuild every
published key from the summary.

When the clock starts it writes OUT.json.started (the start time); when done, OUT.json: messages handed to
paho, indices paho refused (buffer full), acknowledged, reconnects, publish and flush seconds, and the CPU
seconds used between the start of the clock and the last acknowledgement.

    python benchmarks/_load_publisher.py BROKER_URL CLUSTER NODES RATE_MSGS_PER_S DURATION_S OUT.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from sensors.contract import SCHEMA_VERSION, GpuReading, NodeSample, Topics
from sensors.mqtt_url import parse_broker_url
from sensors.publisher import PublisherHub, PublisherSettings

GPUS_PER_NODE = 8
# Sleep between publishing rounds when caught up. Every round costs one send per node connection (64) and
# a select over them, so a longer tick spends less of the generator's CPU per message (the CPU is shared
# with the broker and the service under test); 20 ms adds at most 20 ms to the measured latency.
TICK_S = 0.02
# Publish at most this many messages between two network polls (keeps socket buffers moving when behind).
BURST = 256
FLUSH_TIMEOUT_S = 180.0


class _Restamped(NodeSample):
    """A template sample under a new timestamp, its GPU entries converted to JSON-ready dicts once."""

    __slots__ = ("gpus_json",)
    gpus_json: list[dict[str, Any]]

    def __init__(self, node: str, ts: float, gpus: tuple[GpuReading, ...], gpus_json: list[dict[str, Any]]):
        super().__init__(node, ts, gpus)
        object.__setattr__(self, "gpus_json", gpus_json)

    def to_payload(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "ts": self.ts, "node": self.node, "gpus": self.gpus_json}


def readings(nodes: int) -> list[NodeSample]:
    from twin.sim_source import simulated_cluster

    source = simulated_cluster(nodes=nodes, gpus_per_node=GPUS_PER_NODE, seed=7)
    return list(source.read(time.time()).samples)


def main(argv: list[str]) -> int:
    url, cluster, out = argv[1], argv[2], Path(argv[6])
    nodes, rate, duration = int(argv[3]), float(argv[4]), float(argv[5])
    templates = readings(nodes)
    gpus_json = [[g.to_json() for g in sample.gpus] for sample in templates]
    for sample, entries in zip(templates, gpus_json, strict=True):
        fast = _Restamped(sample.node, 1.5, sample.gpus, entries).to_payload()
        if orjson.dumps(fast) != orjson.dumps(NodeSample(sample.node, 1.5, sample.gpus).to_payload()):
            raise AssertionError("_Restamped.to_payload() differs from NodeSample.to_payload()")
    settings = PublisherSettings(url=parse_broker_url(url), topics=Topics(cluster), buffer_limit=10**7)
    hub = PublisherHub(settings)
    if not hub.connect([sample.node for sample in templates], timeout_s=30.0):
        print("not every node connected within 30 s; publishing anyway (paho queues)", file=sys.stderr)
    hub.flush(10.0)  # the retained `online` statuses
    step_s = 1.0 / rate
    total = round(rate * duration)
    refused: list[int] = []
    start = time.time()
    cpu_start = time.process_time()
    out.with_name(out.name + ".started").write_text(json.dumps({"start": start}))
    sent = 0
    while sent < total:
        due = min(int((time.time() - start) * rate) + 1, total) - sent
        for _ in range(min(due, BURST)):
            k = sent % len(templates)
            sample = templates[k]
            restamped = _Restamped(sample.node, start + sent * step_s, sample.gpus, gpus_json[k])
            if not hub.publish_sample(restamped):
                refused.append(sent)
            sent += 1
        hub.poll(0.0)
        if due <= BURST:
            # Caught up: sleep to the next tick rather than wake on every PUBACK. A select() that returns
            # per acknowledgement costs a pass over all 64 connections each time, which made the generator
            # use ~0.8 of a core whatever the rate — CPU taken from the broker and the service under test.
            time.sleep(TICK_S)
    publish_s = time.time() - start
    all_acked = hub.flush(FLUSH_TIMEOUT_S)
    flush_s = time.time() - start - publish_s
    active_cpu_s = time.process_time() - cpu_start
    summary = {
        "messages": sent,
        "gpu_samples": (sent - len(refused)) * GPUS_PER_NODE,
        "start": start,
        "step_s": step_s,
        "nodes": [sample.node for sample in templates],
        "refused": refused,
        "publish_s": publish_s,
        "flush_s": flush_s,
        "all_acked": all_acked,
        "active_cpu_s": active_cpu_s,
        "acked": hub.stats.acked,
        "dropped": hub.stats.dropped,
        "reconnects": hub.stats.reconnects,
        "connect_failures": hub.stats.connect_failures,
    }
    hub.close(timeout_s=10.0)
    out.write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
