"""Faults: the broker restarts, the service is killed (`kill -9`), PostgreSQL stops for 30 s — lost and
duplicated rows for each, end to end through the real processes.

Each scenario: a private Mosquitto (our shipped deploy/mosquitto/mosquitto.conf: persistence on), `twin
serve` with a fixed client id (MQTT 5 persistent session, acknowledgement after commit, idempotent writes)
and the load publisher (64 nodes × 8 GPUs, QoS 1, 1,000 messages/s for 12 s). A few seconds in:

- broker:  `PrivateMosquitto.stop()` (SIGTERM: it writes its persistence file), started again on the same
           port 2 s later. The publishers buffer and re-send; the service reconnects to its session.
- service: SIGKILL to `twin serve`; 2 s later a new one with the same --client-id. The broker kept every
           unacknowledged message in the session and redelivers it.
- postgres: `pg_ctlcluster --skip-systemctl-redirect VERSION main stop` (fast: open transactions abort),
           started again 30 s later (full mode only; always restarted in a `finally`). The service keeps
           receiving into memory (bounded by Receive Maximum) and retries the batch with backoff.

Expected rows: every (node, ts) the publisher handed to paho × 8 GPUs (rebuilt from its summary). Lost =
expected keys missing from the store; duplicated = rows − distinct (node, GPU, ts). Also printed: publisher
reconnects, the service's write errors and connects, redeliveries absorbed (rows the store ignored as already
stored, and messages the live state recognised as already received).

Smoke mode (CI): the service kill on SQLite with a 6 s run. Full mode: broker and service on SQLite and
PostgreSQL, the PostgreSQL outage on PostgreSQL (SKIP when it is not a local cluster pg_ctlcluster manages).

    python benchmarks/bench_faults.py [--smoke] [--only broker|service|postgres] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ensure_repo_on_path, figure, header, target
from _services import (
    DEFAULT_POSTGRES_URL,
    GPUS_PER_NODE,
    PrivateMosquitto,
    StoreProbe,
    account,
    drop_postgres_schema,
    final_ts_by_node,
    load_average,
    logged_connect_time,
    mosquitto_available,
    postgres_reachable,
    postgres_schema_url,
    published_keys,
    read_json,
    reap,
    start_publisher,
    start_serve,
    stop_process,
    wait_for_file,
    wait_serve_connected,
)

NODES = 64
RATE_FULL, DURATION_FULL_S, FAULT_AT_FULL_S = 1_000.0, 12.0, 4.0
RATE_SMOKE, DURATION_SMOKE_S, FAULT_AT_SMOKE_S = 1_000.0, 6.0, 2.0
BROKER_DOWN_S = 2.0
SERVICE_DOWN_S = 2.0
SERVICE_DOWN_SMOKE_S = 1.5
POSTGRES_DOWN_S = 30.0
DRAIN_TIMEOUT_S = 120.0


@dataclass(slots=True)
class Scenario:
    """The processes of one scenario run; a fault replaces what it kills."""

    workdir: Path
    cluster: str
    db_url: str
    broker: PrivateMosquitto
    client_id: str
    serves: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    restarted_at: float | None = None  # time.time() when a replacement service had connected
    shared_group: str | None = None  # instances subscribe as $share/<group>/… and split the messages
    instances: int = 1

    def start_serve(self, instance: int = 0) -> None:
        stats = self.workdir / f"serve{len(self.serves) + 1}.json"
        extra = ("--shared-group", self.shared_group) if self.shared_group else ()
        process = start_serve(
            self.broker.url,
            self.db_url,
            stats,
            "--cluster",
            self.cluster,
            "--verbose",
            *extra,
            client_id=self.client_id if self.shared_group is None else f"{self.client_id}-{instance}",
        )
        self.serves.append((process, stats))
        wait_serve_connected(stats.with_suffix(".log"), process)

    def running(self) -> list[subprocess.Popen[bytes]]:
        return [process for process, _ in self.serves if process.poll() is None]

    @property
    def serve(self) -> subprocess.Popen[bytes]:
        return self.serves[-1][0]


Fault = Callable[[Scenario, bool], None]


def restart_broker(s: Scenario, smoke: bool) -> None:
    s.broker.stop()
    stopped = time.monotonic()
    time.sleep(BROKER_DOWN_S)
    s.broker.start()
    s.notes.append(f"broker down {time.monotonic() - stopped:.1f} s (SIGTERM, restarted on the same port)")


def kill_service(s: Scenario, smoke: bool) -> None:
    stop_process(s.serve, signal.SIGKILL, 10.0)
    killed = time.monotonic()
    time.sleep(SERVICE_DOWN_SMOKE_S if smoke else SERVICE_DOWN_S)
    s.start_serve()
    s.restarted_at = logged_connect_time(s.serves[-1][1].with_suffix(".log")) or time.time()
    s.notes.append(
        f"service SIGKILLed, a new one with the same client id connected {time.monotonic() - killed:.1f} s "
        "later (the killed one's counters died with it)"
    )


def kill_one_of_two(s: Scenario, smoke: bool) -> None:
    """Two instances share the load; SIGKILL instance 0 and start it again (same client id, same group)."""
    stop_process(s.serves[0][0], signal.SIGKILL, 10.0)
    killed = time.monotonic()
    time.sleep(SERVICE_DOWN_SMOKE_S if smoke else SERVICE_DOWN_S)
    s.start_serve(0)
    s.notes.append(
        f"2 instances in shared group {s.shared_group!r}; instance 0 SIGKILLed and started again "
        f"{time.monotonic() - killed:.1f} s later while instance 1 kept serving"
    )


def postgres_cluster(url: str) -> tuple[str, str] | None:
    """(version, name) of the local cluster pg_ctlcluster manages on `url`'s port, or None."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.host not in ("127.0.0.1", "localhost", None) or not shutil.which("pg_lsclusters"):
        return None
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False)
    for line in listing.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == str(parsed.port or 5432) and parts[3].startswith("online"):
            return parts[0], parts[1]
    return None


def _pg_ctl(version: str, name: str, action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def stop_postgres(s: Scenario, smoke: bool) -> None:
    cluster = postgres_cluster(os.environ.get("TWIN_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL)
    assert cluster is not None
    version, name = cluster
    _pg_ctl(version, name, "stop")
    stopped = time.monotonic()
    try:
        time.sleep(POSTGRES_DOWN_S)
    finally:
        _pg_ctl(version, name, "start")
    s.notes.append(f"PostgreSQL {version}/{name} stopped for {time.monotonic() - stopped:.1f} s")


def ensure_postgres_running() -> None:
    """Start the cluster again if a scenario left it stopped (called in a `finally`)."""
    from sqlalchemy.engine import make_url

    url = os.environ.get("TWIN_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    port = str(make_url(url).port or 5432)
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False)
    for line in listing.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == port and not parts[3].startswith("online"):
            _pg_ctl(parts[0], parts[1], "start")


@dataclass(slots=True)
class FaultResult:
    name: str
    backend: str
    published_messages: int
    published_rows: int
    stored_rows: int
    lost_rows: int
    duplicated_rows: int
    unexpected_rows: int
    completed: bool
    drain_s: float | None  # last commit − end of the offered schedule
    publisher: dict[str, Any]
    serve_stats: list[dict[str, Any]]
    notes: list[str]
    backlog_messages: int | None  # messages the restarted service got that were published before it connected


def run_scenario(
    workdir: Path, name: str, backend: str, db_url: str, fault: Fault, smoke: bool
) -> FaultResult:
    rate, duration_s, fault_at_s = (
        (RATE_SMOKE, DURATION_SMOKE_S, FAULT_AT_SMOKE_S)
        if smoke
        else (RATE_FULL, DURATION_FULL_S, FAULT_AT_FULL_S)
    )
    cluster = f"fault{uuid.uuid4().hex[:10]}"
    run_dir = workdir / cluster
    run_dir.mkdir(parents=True)
    broker = PrivateMosquitto(run_dir)
    broker.start()
    s = Scenario(run_dir, cluster, db_url, broker, client_id=f"bench-faults-{cluster}")
    if fault is kill_one_of_two:
        s.shared_group, s.instances = "bench", 2
    publisher: subprocess.Popen[bytes] | None = None
    probe = StoreProbe(db_url)
    try:
        for instance in range(s.instances):
            s.start_serve(instance)
        out = run_dir / "publisher.json"
        publisher = start_publisher(broker.url, cluster, NODES, rate, duration_s, out)
        started = out.with_name(out.name + ".started")
        if not wait_for_file(started, publisher, 60.0):
            raise RuntimeError(f"the load publisher did not start; see {out.with_suffix('.log')}")
        first_publish = read_json(started)["start"]
        time.sleep(max(0.0, first_publish + fault_at_s - time.time()))
        fault(s, smoke)
        if reap(publisher, duration_s + 300.0) is None:
            raise RuntimeError(f"the load publisher did not finish; see {out.with_suffix('.log')}")
        summary = read_json(out)
        completed_at = probe.wait_complete(
            cluster, final_ts_by_node(summary), DRAIN_TIMEOUT_S, lambda: bool(s.running())
        )
        expected_rows = len(published_keys(summary)) * GPUS_PER_NODE
        stored = probe.stored(cluster)
        deadline = time.monotonic() + 10.0  # a redelivery older than each node's newest may still be due
        while (stored is None or stored.rows < expected_rows) and time.monotonic() < deadline:
            time.sleep(0.5)
            stored = probe.stored(cluster)
        if stored is None:
            raise RuntimeError("the store could not be read after the run")
        for process in s.running():
            stop_process(process, signal.SIGTERM, 60.0)
        stats = [read_json(path) for _, path in s.serves if path.exists()]
        accounting = account(summary, stored)
        backlog = None
        if s.shared_group is not None:
            shares = [st["telemetry_messages"] for st in stats]
            s.notes.append(
                "telemetry messages per instance (stats of instances that exited cleanly): "
                + ", ".join(f"{n:,}" for n in shares)
            )
        if s.restarted_at is not None and stats:
            after = sum(1 for _, ts in published_keys(summary) if ts >= s.restarted_at)
            backlog = stats[-1]["telemetry_messages"] - after
        return FaultResult(
            name=name,
            backend=backend,
            published_messages=accounting.published_messages,
            published_rows=accounting.published_rows,
            stored_rows=accounting.stored_rows,
            lost_rows=accounting.lost_rows,
            duplicated_rows=accounting.duplicated_rows,
            unexpected_rows=accounting.unexpected_rows,
            completed=completed_at is not None,
            drain_s=None if completed_at is None else completed_at - first_publish - duration_s,
            publisher=summary,
            serve_stats=stats,
            notes=s.notes,
            backlog_messages=backlog,
        )
    finally:
        probe.close()
        if publisher is not None and publisher.returncode is None:
            stop_process(publisher, signal.SIGKILL, 10.0)
        for process, _ in s.serves:
            if process.returncode is None:
                stop_process(process, signal.SIGKILL, 10.0)
        broker.stop()


def report(r: FaultResult) -> None:
    label = f"{r.name} ({r.backend})"
    for note in r.notes:
        figure(label, note)
    pub = r.publisher
    figure(
        "  publisher",
        f"{r.published_messages:,} messages = {r.published_rows:,} rows; reconnects {pub['reconnects']}, "
        f"refused {len(pub['refused'])}, all acknowledged {pub['all_acked']}",
    )
    figure(
        "  stored / lost / duplicated",
        f"{r.stored_rows:,} / {r.lost_rows:,} / {r.duplicated_rows:,} rows "
        f"(stored but never published: {r.unexpected_rows})",
    )
    figure(
        "  drained",
        "NOT within the timeout"
        if r.drain_s is None
        else f"last commit {r.drain_s:.1f} s after the schedule ended",
    )
    write_errors = sum(st.get("write_errors", 0) for st in r.serve_stats)
    connects = sum(st.get("connects", 0) for st in r.serve_stats)
    ignored = sum(st.get("rows_ignored_in_store", 0) for st in r.serve_stats)
    dup_msgs = sum(st.get("rejects", {}).get("duplicate", 0) for st in r.serve_stats)
    other_rejects = {
        k: v for st in r.serve_stats for k, v in st.get("rejects", {}).items() if k != "duplicate"
    }
    figure(
        "  service",
        f"write errors {write_errors}, connects {connects}, redeliveries absorbed: {ignored:,} rows already "
        f"stored + {dup_msgs:,} messages already received; other rejects {other_rejects or 'none'}",
    )
    if r.backlog_messages is not None:
        figure(
            "  restarted service",
            f"received {r.serve_stats[-1]['telemetry_messages']:,} telemetry messages, "
            f"≈{r.backlog_messages:,} of them published before it connected (unacknowledged at the kill "
            "or queued at the broker)",
        )
    target(r.lost_rows == 0, f"{label}: zero lost rows ({r.lost_rows:,} of {r.published_rows:,})")
    target(r.duplicated_rows == 0, f"{label}: zero duplicated rows ({r.duplicated_rows:,})")


def main(smoke: bool = False, argv: Sequence[str] | None = None) -> None:
    ensure_repo_on_path()
    from twin.store.repository import redact_url

    parser = argparse.ArgumentParser(description="gpu-twin fault benchmark")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", choices=("broker", "service", "postgres", "shared"), action="append")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    args = parser.parse_args(argv if argv is not None else [])
    smoke = smoke or args.smoke
    faults: dict[str, Fault] = {
        "broker restart": restart_broker,
        "service kill -9": kill_service,
        "PostgreSQL down 30 s": stop_postgres,
        "shared subscription, 2 instances, one kill -9": kill_one_of_two,
    }
    keys = {
        "broker": "broker restart",
        "service": "service kill -9",
        "postgres": "PostgreSQL down 30 s",
        "shared": "shared subscription, 2 instances, one kill -9",
    }
    if smoke:
        plan = [("service kill -9", "sqlite")]
    else:
        plan = [
            ("broker restart", "sqlite"),
            ("service kill -9", "sqlite"),
            ("broker restart", "postgresql"),
            ("service kill -9", "postgresql"),
            ("PostgreSQL down 30 s", "postgresql"),
            ("shared subscription, 2 instances, one kill -9", "postgresql"),
            ("shared subscription, 2 instances, one kill -9", "sqlite"),
        ]
    if args.only:
        plan = [(n, b) for n, b in plan if n in {keys[o] for o in args.only}]
    if args.backend:
        plan = [(n, b) for n, b in plan if b in args.backend]

    rate, duration_s = (RATE_SMOKE, DURATION_SMOKE_S) if smoke else (RATE_FULL, DURATION_FULL_S)
    header(
        f"faults: {NODES} nodes × 8 GPUs at {rate:,.0f} msg/s for {duration_s:g} s → Mosquitto → twin serve; "
        "lost and duplicated rows"
    )
    if not mosquitto_available():
        print("  SKIP: the mosquitto binary is not installed (apt-get install mosquitto)", flush=True)
        return
    figure("machine", f"{os.cpu_count()} cores, load average {load_average()} (1/5/15 min) at start")
    base_url = os.environ.get("TWIN_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    pg_why_not = postgres_reachable(base_url) if any(b == "postgresql" for _, b in plan) else None
    with tempfile.TemporaryDirectory(prefix="twin-bench-faults-") as folder:
        workdir = Path(folder)
        schema: str | None = None
        try:
            for name, backend in plan:
                if backend == "sqlite":
                    db_url, label = f"sqlite:///{workdir / 'twin.db'}", "SQLite"
                else:
                    if pg_why_not is not None:
                        print(
                            f"  SKIP {name}: PostgreSQL at {redact_url(base_url)} unreachable ({pg_why_not})"
                        )
                        continue
                    if name == "PostgreSQL down 30 s" and postgres_cluster(base_url) is None:
                        why = "is not a local cluster that pg_ctlcluster manages"
                        print(f"  SKIP {name}: {redact_url(base_url)} {why}", flush=True)
                        continue
                    if schema is None:
                        schema = f"twin_bench_faults_{os.getpid()}_{uuid.uuid4().hex[:6]}"
                    db_url, label = postgres_schema_url(base_url, schema), "PostgreSQL"
                try:
                    result = run_scenario(workdir, name, label, db_url, faults[name], smoke)
                finally:
                    if name == "PostgreSQL down 30 s":
                        ensure_postgres_running()
                report(result)
        finally:
            if schema is not None:
                ensure_postgres_running()
                _drop_when_up(lambda: drop_postgres_schema(base_url, schema))


def _drop_when_up(drop: Callable[[], None], timeout_s: float = 30.0) -> None:
    """Drop the benchmark's schema, waiting for PostgreSQL to accept connections after a restart."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            drop()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


if __name__ == "__main__":
    main(argv=sys.argv[1:])
