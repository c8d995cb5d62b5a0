"""Ingest throughput end to end: simulated nodes → the real Mosquitto → `twin serve` → SQLite / PostgreSQL.

Three OS processes, as deployed: a private Mosquitto with our shipped deploy/mosquitto/mosquitto.conf, `twin
serve` (MQTT 5 persistent session, acknowledgement after commit, idempotent writes) and the load publisher
(benchmarks/_load_publisher.py: 64 nodes × 8 GPUs, one MQTT connection per node, QoS 1, at R messages/s for
D seconds). Every run gets a fresh broker and a fresh cluster name.

Figures, per run:
- offered rate: R messages/s × 8 = GPU samples/s the publisher is asked to produce.
- sustained stored rate: GPU-sample rows stored ÷ (time of the last commit − time of the first publish).
  The last commit is when the benchmark first sees every node's newest published sample committed (it polls
  the store's 64-row `nodes` table every 20 ms, so the figure is accurate to ~20 ms in D + drain seconds).
- a rate counts as sustained ("kept up") when nothing was lost and the last message was committed within
  MAX_END_LAG_S = 1 s of the end of the offered schedule (first publish + D). Anything that falls behind —
  the publisher, the broker or the service — builds a backlog that grows with D, so with D = 15 s a pipeline
  5 % short of the offered rate already misses. The sustained stored rate of a kept-up run is then at least
  R × 8 × D / (D + 1 s): the drain of the last batch is inside the figure.
- published vs stored: keys (node, ts) the publisher handed to paho × 8 GPUs against the rows stored;
  lost = published keys missing in the store, duplicated = rows − distinct (node, GPU, ts) keys.
- latency p50/p99: sample timestamp (its scheduled publish time) → commit, from `twin serve --stats-json`.
- CPU: each process's user + system seconds (kernel accounting at exit, `os.wait4`) and its share of one
  core while the load ran (/proc/<pid>/stat deltas over first publish → last commit), including the
  PostgreSQL backends serving `twin serve`; the machine's busy share of all its cores (/proc/stat) says
  whether the machine was full, and what processes outside the benchmark (other users) took meanwhile.
- service alone (full mode): a backlog of 60,000 messages queued at the broker for the service's session
  while it is away, then drained by a fresh `twin serve` with nothing else of the benchmark running — the
  service's own capacity and CPU per row, without the load publisher competing for the two cores.

Full mode tries 12,500 messages/s (100,000 GPU samples/s) and steps the rate down (or up) to find the highest
rate sustained with zero loss, on SQLite then PostgreSQL (`TWIN_BENCH_POSTGRES_URL`, default the local `test`
database, in a schema of its own that is dropped afterwards; SKIP when unreachable). Smoke mode: SQLite,
2,000 messages/s for 3 s. Without the mosquitto binary the benchmark prints SKIP.

    python benchmarks/bench_ingest.py [--smoke] [--backend sqlite|postgresql] [--rate R] [--duration-s D]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ensure_repo_on_path, figure, header, target
from _services import (
    DEFAULT_POSTGRES_URL,
    PrivateMosquitto,
    StoreProbe,
    account,
    cpu_seconds_alive,
    drop_postgres_schema,
    final_ts_by_node,
    load_average,
    logged_connect_time,
    mosquitto_available,
    postgres_backends_of,
    postgres_reachable,
    postgres_schema_url,
    read_json,
    reap,
    start_publisher,
    start_serve,
    stop_process,
    wait_for_file,
    wait_serve_connected,
)

TARGET_GPU_SAMPLES_PER_S = 100_000
NODES = 64
GPUS_PER_NODE = 8
MAX_END_LAG_S = 1.0
# `twin serve --mqtt-version`: its default, MQTT 5. 3.1.1 costs the service ~20 % less CPU per message
# (paho builds no MQTT 5 properties) but needs the broker to allow enough messages in flight, as the
# shipped mosquitto.conf does (max_inflight_messages 10000); see RESULTS.md.
DEFAULT_MQTT_VERSION = "5"
FULL_START_RATE = 12_500.0  # messages/s: 100,000 GPU samples/s
FULL_DURATION_S = 15.0
FULL_MAX_RUNS = 4
SMOKE_RATE = 2_000.0
SMOKE_DURATION_S = 3.0
# Service capacity alone: this backlog (messages) is queued at the broker while the service is away, then
# drained with nothing else of the benchmark running.
DRAIN_MESSAGES = 60_000
DRAIN_PUBLISH_RATE = 10_000.0
# Rate ladder bounds for the full search (messages/s).
MIN_RATE, MAX_RATE = 500.0, 25_000.0


@dataclass(slots=True)
class CpuWindow:
    """CPU seconds of named groups of processes, and of the whole machine, between two instants.

    Tracked per pid: a process born inside the window counts from zero; one that exits inside it counts
    nothing (the caller takes its total from `reap` instead). `refresh` re-lists a group (new backends).
    """

    pids: dict[str, list[int]]
    refresh: dict[str, Callable[[], list[int]]] = field(default_factory=dict)
    start_wall: float = 0.0
    start: dict[int, float] = field(default_factory=dict)
    end: dict[int, float] = field(default_factory=dict)
    machine_start: tuple[float, float] = (0.0, 0.0)
    machine_end: tuple[float, float] = (0.0, 0.0)
    wall_s: float = 0.0

    def begin(self) -> None:
        self.start_wall = time.time()
        self.start = {pid: cpu_seconds_alive(pid) for pids in self.pids.values() for pid in pids}
        self.machine_start = _machine_cpu()

    def finish(self) -> None:
        for name, listing in self.refresh.items():
            self.pids[name] = sorted(set(self.pids[name]) | set(listing()))
        self.end = {pid: cpu_seconds_alive(pid) for pids in self.pids.values() for pid in pids}
        self.machine_end = _machine_cpu()
        self.wall_s = time.time() - self.start_wall

    def seconds(self, name: str) -> float:
        return sum(
            max(0.0, self.end.get(pid, 0.0) - self.start.get(pid, 0.0))
            for pid in self.pids.get(name, [])
            if pid in self.end and self.end[pid] > 0.0
        )

    def share(self, name: str) -> float:
        """Share of one core used by `name` in the window (1.0 = one core busy all the time)."""
        return self.seconds(name) / self.wall_s if self.wall_s else 0.0

    def machine_busy(self) -> float:
        """Busy share of all the machine's cores in the window (every process, other users' included)."""
        busy = self.machine_end[0] - self.machine_start[0]
        total = self.machine_end[1] - self.machine_start[1]
        return busy / total if total else 0.0


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    values = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user … steal (guest time is already counted in user)
    return total - idle, total


@dataclass(frozen=True, slots=True)
class Database:
    """Where runs store: a fresh SQLite file, or a fresh PostgreSQL schema, per run (so runs compare)."""

    backend: str  # "SQLite" or "PostgreSQL"
    server_url: str | None = None  # PostgreSQL only

    @contextmanager
    def fresh(self, run_dir: Path) -> Iterator[str]:
        """A database URL for one run; the database is removed afterwards."""
        if self.server_url is None:
            path = run_dir / "twin.db"
            try:
                yield f"sqlite:///{path}"
            finally:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        schema = f"twin_bench_ingest_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        try:
            yield postgres_schema_url(self.server_url, schema)
        finally:
            drop_postgres_schema(self.server_url, schema)


@dataclass(slots=True)
class RunResult:
    backend: str
    rate: float
    duration_s: float
    publisher: dict[str, Any]
    serve: dict[str, Any]
    published_rows: int
    stored_rows: int
    lost_rows: int
    duplicated_rows: int
    unexpected_rows: int
    complete_s: float | None  # first publish → last commit; None when it never completed
    cpu_total_s: dict[str, float]
    cpu_share: dict[str, float]
    machine_busy: float

    @property
    def offered_gpu_samples_per_s(self) -> float:
        return self.rate * GPUS_PER_NODE

    @property
    def stored_per_s(self) -> float:
        return self.stored_rows / self.complete_s if self.complete_s else 0.0

    @property
    def end_lag_s(self) -> float | None:
        """Last commit − end of the offered schedule (first publish + D)."""
        return None if self.complete_s is None else self.complete_s - self.duration_s

    @property
    def sustained(self) -> bool:
        lag = self.end_lag_s
        return lag is not None and self.lost_rows == 0 and lag <= MAX_END_LAG_S


def service_cpu_window(
    broker: PrivateMosquitto, serve: subprocess.Popen[bytes], backend: str, db_url: str
) -> CpuWindow:
    """CPU accounting for the broker and `twin serve`, plus its PostgreSQL backends (re-listed by
    `CpuWindow.refresh`: a reconnect gets a new backend)."""
    assert broker.pid is not None
    groups = {"twin serve": [serve.pid], "mosquitto": [broker.pid]}
    refresh: dict[str, Callable[[], list[int]]] = {}
    if backend == "PostgreSQL":
        serve_pid = serve.pid
        refresh["postgres"] = lambda: postgres_backends_of(db_url, serve_pid)
        groups["postgres"] = refresh["postgres"]()
    return CpuWindow(groups, refresh)


def run_once(
    workdir: Path, db: Database, rate: float, duration_s: float, mqtt_version: str = DEFAULT_MQTT_VERSION
) -> RunResult:
    """One run: fresh broker, database and `twin serve`, the publisher at `rate` for `duration_s`; count."""
    cluster = f"bench{uuid.uuid4().hex[:10]}"
    run_dir = workdir / cluster
    run_dir.mkdir(parents=True)
    with db.fresh(run_dir) as db_url:
        return _run_once(run_dir, cluster, db.backend, db_url, rate, duration_s, mqtt_version)


def _run_once(
    run_dir: Path,
    cluster: str,
    backend: str,
    db_url: str,
    rate: float,
    duration_s: float,
    mqtt_version: str,
) -> RunResult:
    broker = PrivateMosquitto(run_dir)
    broker.start()
    stats_path = run_dir / "serve.json"
    serve: subprocess.Popen[bytes] | None = None
    publisher: subprocess.Popen[bytes] | None = None
    probe = StoreProbe(db_url)
    cpu_total: dict[str, float] = {}
    try:
        serve = start_serve(
            broker.url, db_url, stats_path, "--cluster", cluster, "--verbose", "--mqtt-version", mqtt_version
        )
        wait_serve_connected(stats_path.with_suffix(".log"), serve)
        out = run_dir / "publisher.json"
        publisher = start_publisher(broker.url, cluster, NODES, rate, duration_s, out)
        started = out.with_name(out.name + ".started")
        if not wait_for_file(started, publisher, 60.0):
            raise RuntimeError(f"the load publisher did not start; see {out.with_suffix('.log')}")
        window = service_cpu_window(broker, serve, backend, db_url)
        window.begin()
        first_publish = read_json(started)["start"]
        # The publisher needs D seconds plus its flush; then the service drains what is left.
        drain_timeout_s = max(60.0, 4 * duration_s)
        publisher_cpu = reap(publisher, duration_s + 240.0)
        if publisher_cpu is None:
            raise RuntimeError(f"the load publisher did not finish; see {out.with_suffix('.log')}")
        cpu_total["publisher"] = publisher_cpu
        summary = read_json(out)
        serving = serve
        completed_at = probe.wait_complete(
            cluster, final_ts_by_node(summary), drain_timeout_s, lambda: serving.poll() is None
        )
        window.finish()
        stored = probe.stored(cluster)
        if stored is None:
            raise RuntimeError("the store could not be read after the run")
        serve_cpu = stop_process(serve, signal.SIGTERM, 60.0)
        cpu_total["twin serve"] = serve_cpu or 0.0
        serve_stats = read_json(stats_path) if stats_path.exists() else {}
        broker.stop()
        cpu_total["mosquitto"] = broker.cpu_s
        accounting = account(summary, stored)
        share: dict[str, float] = {name: window.share(name) for name in window.pids}
        complete_s = None if completed_at is None else completed_at - first_publish
        # The publisher ran D s plus its flush (it exits once every message is acknowledged); it measures
        # its own CPU over that time.
        active_s = summary["publish_s"] + summary["flush_s"]
        share["publisher"] = summary["active_cpu_s"] / active_s if active_s else 0.0
        ours = sum(share.values()) - share["publisher"] + summary["active_cpu_s"] / window.wall_s
        share["other processes"] = max(0.0, window.machine_busy() * (os.cpu_count() or 1) - ours)
        return RunResult(
            backend=backend,
            rate=rate,
            duration_s=duration_s,
            publisher=summary,
            serve=serve_stats,
            published_rows=accounting.published_rows,
            stored_rows=accounting.stored_rows,
            lost_rows=accounting.lost_rows,
            duplicated_rows=accounting.duplicated_rows,
            unexpected_rows=accounting.unexpected_rows,
            complete_s=complete_s,
            cpu_total_s=cpu_total,
            cpu_share=share,
            machine_busy=window.machine_busy(),
        )
    finally:
        probe.close()
        for process in (publisher, serve):
            if process is not None and process.returncode is None:
                stop_process(process, signal.SIGKILL, 10.0)
        broker.stop()


@dataclass(slots=True)
class DrainResult:
    backend: str
    rows: int
    lost_rows: int
    drain_s: float | None  # from the service's connection (its log line) to the last commit
    serve_cpu_s: float
    broker_cpu_s: float
    postgres_cpu_s: float | None
    others_share: float  # cores' worth of CPU used by processes outside this benchmark meanwhile

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.drain_s if self.drain_s else 0.0


def run_drain(
    workdir: Path, db: Database, messages: int, mqtt_version: str = DEFAULT_MQTT_VERSION
) -> DrainResult:
    """The service's own capacity: queue `messages` at the broker for a known session while no service is
    connected, then start `twin serve` and time the drain — the load publisher has already exited, so the
    service (with the broker feeding it) has the machine to itself, apart from other users."""
    cluster = f"drain{uuid.uuid4().hex[:10]}"
    run_dir = workdir / cluster
    run_dir.mkdir(parents=True)
    with db.fresh(run_dir) as db_url:
        return _run_drain(run_dir, cluster, db.backend, db_url, messages, mqtt_version)


def _run_drain(
    run_dir: Path, cluster: str, backend: str, db_url: str, messages: int, mqtt_version: str
) -> DrainResult:
    broker = PrivateMosquitto(run_dir)
    broker.start()
    client_id = f"bench-drain-{cluster}"
    extra = ("--cluster", cluster, "--verbose", "--mqtt-version", mqtt_version)
    serve: subprocess.Popen[bytes] | None = None
    probe = StoreProbe(db_url)
    try:
        first = run_dir / "serve1.json"
        serve = start_serve(broker.url, db_url, first, *extra, client_id=client_id)
        wait_serve_connected(first.with_suffix(".log"), serve)
        stop_process(serve, signal.SIGTERM, 30.0)  # the session (and its subscription) stays at the broker
        out = run_dir / "publisher.json"
        publisher = start_publisher(
            broker.url, cluster, NODES, DRAIN_PUBLISH_RATE, messages / DRAIN_PUBLISH_RATE, out
        )
        if reap(publisher, 600.0) is None:
            raise RuntimeError(f"the load publisher did not finish; see {out.with_suffix('.log')}")
        summary = read_json(out)
        second = run_dir / "serve2.json"
        serve = start_serve(broker.url, db_url, second, *extra, client_id=client_id)
        wait_serve_connected(second.with_suffix(".log"), serve, settle_s=0.0)  # CPU from here on
        window = service_cpu_window(broker, serve, backend, db_url)
        window.begin()
        serving = serve
        completed_at = probe.wait_complete(
            cluster, final_ts_by_node(summary), 300.0, lambda: serving.poll() is None
        )
        window.finish()
        connected_at = logged_connect_time(second.with_suffix(".log"))
        stored = probe.stored(cluster)
        if stored is None:
            raise RuntimeError("the store could not be read after the drain")
        accounting = account(summary, stored)
        drain_s = None if completed_at is None or connected_at is None else completed_at - connected_at
        cpu = {name: window.seconds(name) for name in window.pids}
        ours = sum(cpu.values()) / window.wall_s if window.wall_s else 0.0
        return DrainResult(
            backend=backend,
            rows=stored.rows,
            lost_rows=accounting.lost_rows,
            drain_s=drain_s,
            serve_cpu_s=cpu["twin serve"],
            broker_cpu_s=cpu["mosquitto"],
            postgres_cpu_s=cpu.get("postgres"),
            others_share=max(0.0, window.machine_busy() * (os.cpu_count() or 1) - ours),
        )
    finally:
        probe.close()
        if serve is not None and serve.returncode is None:
            stop_process(serve, signal.SIGTERM, 60.0)
        broker.stop()


def report_drain(d: DrainResult) -> None:
    if d.drain_s is None:
        figure(f"{d.backend}: service alone (drain)", "did not complete")
        return
    cpu = f"twin serve {d.serve_cpu_s / d.drain_s:.0%} of a core ({d.serve_cpu_s / d.rows * 1e6:.1f} µs/row)"
    cpu += f", mosquitto {d.broker_cpu_s / d.drain_s:.0%}"
    if d.postgres_cpu_s is not None:
        pg = d.postgres_cpu_s
        cpu += f", postgres backend {pg / d.drain_s:.0%} ({pg / d.rows * 1e6:.1f} µs/row)"
    figure(
        f"{d.backend}: service alone (drain)",
        f"{d.rows:,} queued rows stored in {d.drain_s:.2f} s = {d.rows_per_s:,.0f} GPU-samples/s; "
        f"lost {d.lost_rows:,}",
    )
    figure("  CPU while draining", f"{cpu}; everything else {d.others_share:.0%} of a core")


def report(result: RunResult) -> None:
    b = result.backend
    pub, serve = result.publisher, result.serve
    figure(
        f"{b} @ {result.rate:,.0f} msg/s",
        f"offered {result.offered_gpu_samples_per_s:,.0f} GPU-samples/s for {result.duration_s:g} s "
        f"({NODES} nodes × {GPUS_PER_NODE} GPUs)",
    )
    figure(
        "  publisher",
        f"published in {pub['publish_s']:.2f} s, all acked {pub['flush_s']:.2f} s later; "
        f"refused {len(pub['refused'])}, reconnects {pub['reconnects']}",
    )
    if result.complete_s is None:
        figure("  sustained stored rate", "did not complete before the drain timeout")
    else:
        figure(
            "  sustained stored rate",
            f"{result.stored_per_s:,.0f} GPU-samples/s ({result.stored_rows:,} rows, first publish → last "
            f"commit {result.complete_s:.2f} s = D + {result.end_lag_s:.2f} s)",
        )
    figure(
        "  published / stored / lost / dup",
        f"{result.published_rows:,} / {result.stored_rows:,} / {result.lost_rows:,} / "
        f"{result.duplicated_rows:,} rows (stored but never published: {result.unexpected_rows})",
    )
    p50, p99 = serve.get("latency_p50_s"), serve.get("latency_p99_s")
    figure(
        "  latency sample → commit",
        "n/a" if p50 is None or p99 is None else f"p50 {p50 * 1e3:,.0f} ms, p99 {p99 * 1e3:,.0f} ms",
    )
    figure(
        "  service",
        f"received {serve.get('received', 0):,} messages, {serve.get('batches_committed', 0):,} batches, "
        f"rows ignored in store {serve.get('rows_ignored_in_store', 0):,}, "
        f"write errors {serve.get('write_errors', 0)}, rejects {serve.get('rejects', {})}",
    )
    shares = ", ".join(
        f"{name} {result.cpu_total_s.get(name, 0.0):.1f} s ({result.cpu_share.get(name, 0.0):.0%} of a core)"
        for name in ("publisher", "mosquitto", "twin serve")
    )
    if "postgres" in result.cpu_share:
        shares += f", postgres backend {result.cpu_share['postgres']:.0%} of a core"
    figure("  CPU (total; share while loaded)", shares)
    figure(
        "  machine busy while loaded",
        f"{result.machine_busy:.0%} of {os.cpu_count()} cores; everything else (other users, this "
        f"script's polling) {result.cpu_share['other processes']:.0%} of a core",
    )
    figure(
        "  verdict",
        "kept up (sustained)"
        if result.sustained
        else f"NOT sustained (lost rows or last commit > D + {MAX_END_LAG_S:g} s)",
    )


def next_rate(results: Sequence[RunResult]) -> float | None:
    """The next offered rate to try, or None when the highest sustained rate is pinned down.

    Below the lowest miss and above the highest kept-up rate: the midpoint once both exist; else 90 % of
    what the missed run actually stored (within 40–80 % of its rate), or 25 % above a kept-up rate.
    """
    kept = [r.rate for r in results if r.sustained]
    missed = [r.rate for r in results if not r.sustained]
    best, lowest_miss = max(kept, default=None), min(missed, default=None)
    if best is not None and lowest_miss is not None:
        if lowest_miss - best <= max(0.1 * best, 250.0):
            return None
        rate = (best + lowest_miss) / 2
    elif best is not None:
        rate = best * 1.25
    else:
        last = results[-1]
        stored_msgs = last.stored_per_s / GPUS_PER_NODE
        rate = min(max(0.9 * stored_msgs, 0.4 * last.rate), 0.8 * last.rate)
    rate = float(round(min(max(rate, MIN_RATE), MAX_RATE) / 250) * 250)
    return None if any(r.rate == rate for r in results) else rate


def search(
    workdir: Path, db: Database, duration_s: float, mqtt_version: str = DEFAULT_MQTT_VERSION
) -> list[RunResult]:
    """Runs from 12,500 msg/s (100,000 GPU samples/s) towards the highest rate that is kept up."""
    results: list[RunResult] = []
    rate: float | None = FULL_START_RATE
    while rate is not None and len(results) < FULL_MAX_RUNS:
        result = run_once(workdir, db, rate, duration_s, mqtt_version)
        report(result)
        results.append(result)
        rate = next_rate(results)
    return results


def summarize(backend: str, results: Sequence[RunResult], smoke: bool) -> None:
    best = max((r for r in results if r.sustained), key=lambda r: r.rate, default=None)
    lost = sum(r.lost_rows for r in results)
    duplicated = sum(r.duplicated_rows for r in results)
    if best is None:
        figure(f"{backend}: highest sustained rate", f"none of the {len(results)} rate(s) tried was kept up")
        best_offered = 0.0
    else:
        best_offered = best.offered_gpu_samples_per_s
        p99 = best.serve.get("latency_p99_s")
        figure(
            f"{backend}: highest sustained rate",
            f"{best.rate:,.0f} msg/s = {best_offered:,.0f} GPU-samples/s offered and kept up; stored "
            f"{best.stored_per_s:,.0f}/s incl. drain; p99 {'n/a' if p99 is None else f'{p99 * 1e3:,.0f} ms'}",
        )
    if smoke:
        figure(f"{backend}: throughput target", "full mode only (smoke runs a modest rate)")
    else:
        target(
            best_offered >= TARGET_GPU_SAMPLES_PER_S,
            f"{backend}: ≥ {TARGET_GPU_SAMPLES_PER_S:,} GPU-samples/s sustained with zero loss "
            f"(highest kept up: {best_offered:,.0f}/s)",
        )
    target(lost == 0, f"{backend}: zero lost rows ({lost:,} over {len(results)} run(s))")
    target(duplicated == 0, f"{backend}: zero duplicated rows ({duplicated:,} over {len(results)} run(s))")


def main(smoke: bool = False, argv: Sequence[str] | None = None) -> None:
    ensure_repo_on_path()
    from twin.store.repository import redact_url

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--rate", type=float, help="one run at this many messages/s (no search)")
    parser.add_argument("--duration-s", type=float, default=None)
    parser.add_argument("--no-drain", action="store_true", help="skip the service-alone drain (full mode)")
    parser.add_argument(
        "--mqtt-version",
        choices=("5", "3.1.1"),
        default=DEFAULT_MQTT_VERSION,
        help="protocol of `twin serve`'s session (default: twin serve's own default, 5)",
    )
    args = parser.parse_args(argv if argv is not None else [])
    smoke = smoke or args.smoke
    backends = args.backend or (["sqlite"] if smoke else ["sqlite", "postgresql"])
    duration_s = args.duration_s or (SMOKE_DURATION_S if smoke else FULL_DURATION_S)

    header(
        f"ingest throughput: {NODES} nodes × {GPUS_PER_NODE} GPUs → Mosquitto (shipped conf) → twin serve "
        f"(MQTT {args.mqtt_version}) → "
        f"{' and '.join(backends)}"
    )
    if not mosquitto_available():
        print("  SKIP: the mosquitto binary is not installed (apt-get install mosquitto)", flush=True)
        return
    figure("machine", f"{os.cpu_count()} cores, load average {load_average()} (1/5/15 min) at start")
    with tempfile.TemporaryDirectory(prefix="twin-bench-ingest-") as folder:
        workdir = Path(folder)
        for backend in backends:
            db = Database("SQLite")
            if backend == "postgresql":
                server_url = os.environ.get("TWIN_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
                why_not = postgres_reachable(server_url)
                if why_not is not None:
                    print(
                        f"  SKIP: PostgreSQL at {redact_url(server_url)} unreachable ({why_not})", flush=True
                    )
                    continue
                db = Database("PostgreSQL", server_url)
            if smoke or args.rate:
                result = run_once(workdir, db, args.rate or SMOKE_RATE, duration_s, args.mqtt_version)
                report(result)
                results = [result]
            else:
                results = search(workdir, db, duration_s, args.mqtt_version)
            if not smoke and not args.no_drain:
                report_drain(run_drain(workdir, db, DRAIN_MESSAGES, args.mqtt_version))
            summarize(db.backend, results, smoke)


if __name__ == "__main__":
    main(argv=sys.argv[1:])
