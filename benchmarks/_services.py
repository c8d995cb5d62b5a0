"""Real processes for the ingest benchmarks: a private Mosquitto with our shipped configuration, `twin
serve`, and a load publisher — each a separate OS process, as deployed.

The private Mosquitto uses deploy/mosquitto/mosquitto.conf with only the listener port, the persistence
folder, authentication and the per-connection log lines changed (loopback, anonymous), so the benchmark
measures the configuration we ship, not the machine's default broker.

CPU time of each process comes from the kernel's accounting of the child when it is reaped (`os.wait4`),
so it covers the whole life of the process, every thread included.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from _common import REPO_ROOT

MOSQUITTO: Final = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SHIPPED_CONF: Final = REPO_ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
DEFAULT_POSTGRES_URL: Final = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
GPUS_PER_NODE: Final = 8
CLOCK_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def mosquitto_available() -> bool:
    return os.access(MOSQUITTO, os.X_OK)


def load_average() -> str:
    """The 1/5/15-minute load averages, as `uptime` prints them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# --- process accounting -----------------------------------------------------------------------------


def cpu_seconds_alive(pid: int) -> float:
    """User + system CPU seconds of a running process so far (/proc/<pid>/stat, every thread)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S  # utime, stime (fields 14, 15)


def reap(process: subprocess.Popen[bytes], timeout_s: float) -> float | None:
    """Wait for `process` to exit and return its CPU seconds (user + system, all threads); None on timeout.

    Uses `os.wait4`, which hands back the kernel's resource accounting of the child; `returncode` is set
    as `Popen.wait` would.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return float(usage.ru_utime + usage.ru_stime)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def stop_process(process: subprocess.Popen[bytes], sig: int, timeout_s: float) -> float | None:
    """Send `sig`, reap the process and return its CPU seconds; SIGKILL after `timeout_s` (then None)."""
    if process.returncode is not None:
        return None
    process.send_signal(sig)
    cpu = reap(process, timeout_s)
    if cpu is None:
        process.kill()
        reap(process, 10.0)
    return cpu


# --- Mosquitto --------------------------------------------------------------------------------------


class PrivateMosquitto:
    """Our shipped mosquitto.conf on a free loopback port; its persistence folder survives restarts."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        data = workdir / "mosquitto-data"
        data.mkdir(parents=True, exist_ok=True)
        text = SHIPPED_CONF.read_text()
        text = re.sub(r"(?m)^listener .*$", f"listener {self.port} 127.0.0.1", text)
        text = re.sub(r"(?m)^allow_anonymous .*$", "allow_anonymous true", text)
        text = re.sub(r"(?m)^(password_file|acl_file) .*$", "", text)
        text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {data}/", text)
        text = re.sub(r"(?m)^log_dest .*$", f"log_dest file {workdir / 'mosquitto.log'}", text)
        text = re.sub(r"(?m)^log_type (information|notice)$", "", text)
        if os.geteuid() == 0:  # as root it would switch to the `mosquitto` user: keep our folder writable
            text += "\nuser root\n"
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(text)
        self.process: subprocess.Popen[bytes] | None = None
        self.cpu_s = 0.0  # summed over every run of this broker (restarts included)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        with open(self.workdir / "mosquitto.out", "ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10.0
        while True:  # right after a stop the port may still be held for a moment
            try:
                wait_port(self.port, timeout_s=0.5)
                return
            except RuntimeError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mosquitto did not start on port {self.port}; see {self.workdir / 'mosquitto.log'}"
                    ) from None

    def stop(self) -> None:
        """Graceful stop (SIGTERM): Mosquitto writes its persistence file, as in a real restart."""
        if self.process is not None:
            self.cpu_s += stop_process(self.process, signal.SIGTERM, 30.0) or 0.0
            self.process = None


# --- twin serve and the load publisher ----------------------------------------------------------------


def python() -> str:
    return sys.executable


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'benchmarks'}"}


def start_serve(
    broker_url: str, db_url: str, stats_path: Path, *extra: str, client_id: str | None = None
) -> subprocess.Popen[bytes]:
    """`twin serve` as its own process (MQTT 5 persistent session, manual acks); log beside the stats."""
    command = [
        python(), "-m", "twin.cli", "serve", "--broker", broker_url, "--db", db_url,
        "--stats-json", str(stats_path), "--client-id", client_id or f"bench-serve-{stats_path.stem}", *extra,
    ]  # fmt: skip
    with open(stats_path.with_suffix(".log"), "ab") as log:
        return subprocess.Popen(command, env=_env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)


def start_publisher(
    broker_url: str, cluster: str, nodes: int, rate_msgs_per_s: float, duration_s: float, out_path: Path
) -> subprocess.Popen[bytes]:
    """benchmarks/_load_publisher.py as its own process; it writes `out_path` (JSON) when done."""
    command = [
        python(), str(REPO_ROOT / "benchmarks" / "_load_publisher.py"), broker_url, cluster, str(nodes),
        str(rate_msgs_per_s), str(duration_s), str(out_path),
    ]  # fmt: skip
    with open(out_path.with_suffix(".log"), "ab") as log:
        return subprocess.Popen(command, env=_env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)


def wait_serve_connected(
    log_path: Path, serve: subprocess.Popen[bytes], timeout_s: float = 60.0, settle_s: float = 0.3
) -> None:
    """Until `twin serve --verbose` logs a connection it had not logged before this call; then `settle_s`
    more (it subscribes in the same callback: the pause covers the SUBACK)."""
    before = log_path.read_text(errors="replace").count("connected to") if log_path.exists() else 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log_path.exists() and log_path.read_text(errors="replace").count("connected to") > before:
            time.sleep(settle_s)
            return
        if serve.poll() is not None:
            raise RuntimeError(f"twin serve exited ({serve.returncode}); see {log_path}")
        time.sleep(0.01)
    raise RuntimeError(f"twin serve did not connect in {timeout_s} s; see {log_path}")


def logged_connect_time(log_path: Path) -> float | None:
    """Unix time of the last "connected to" line `twin serve --verbose` logged (asctime: local time, ms)."""
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if "connected to" in line:
            stamp = line[:23]  # "2026-11-21 04:30:05,123"
            try:
                parsed = time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")
                return time.mktime(parsed) + int(stamp[20:23]) / 1000
            except ValueError:
                return None
    return None


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """True once `path` exists; False when `process` exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            return path.exists()
        time.sleep(0.02)
    return True


def published_keys(summary: Mapping[str, Any]) -> dict[tuple[str, float], int]:
    """Every (node, ts) the load publisher handed to paho (refused ones left out) → its message index.

    The publisher stamps message k with `start + k * step_s` for node `nodes[k % len(nodes)]`; the same
    float arithmetic here gives bit-identical timestamps.
    """
    nodes: list[str] = summary["nodes"]
    start: float = summary["start"]
    step_s: float = summary["step_s"]
    refused = set(summary["refused"])
    return {
        (nodes[k % len(nodes)], start + k * step_s): k for k in range(summary["messages"]) if k not in refused
    }


# --- the database -----------------------------------------------------------------------------------


def postgres_reachable(url: str) -> str | None:
    """None when PostgreSQL answers at `url`, else why not."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc.__cause__ or exc).splitlines()[0]}"
    finally:
        engine.dispose()
    return None


def postgres_schema_url(url: str, schema: str) -> str:
    """`url` with the connection's search_path set to `schema` (created here), for `twin serve --db`."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    finally:
        engine.dispose()
    return make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)


def _tcp_local_ports(pid: int, remote_port: int) -> set[int]:
    """Local ports of `pid`'s TCP connections to `remote_port` (from /proc: socket inodes of its fds)."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def postgres_backends_of(url: str, client_pid: int) -> list[int]:
    """PIDs of the PostgreSQL backends serving `client_pid`'s connections (pg_stat_activity.client_port)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    ports = _tcp_local_ports(client_pid, make_url(url).port or 5432)
    if not ports:
        return []
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(:ports)"),
                {"ports": sorted(ports)},
            )
            return [int(pid) for (pid,) in rows]
    except Exception:  # the database is down: no backends to account for
        return []
    finally:
        engine.dispose()


def drop_postgres_schema(url: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store holds for one cluster."""

    rows: int  # telemetry rows
    distinct_keys: int  # distinct (node, gpu_index, ts)
    messages: dict[tuple[str, float], int]  # (node, ts) → GPU rows stored for that message

    @property
    def duplicated(self) -> int:
        return self.rows - self.distinct_keys


class StoreProbe:
    """Cheap progress checks and the final count against the benchmark's database (one pooled engine)."""

    def __init__(self, db_url: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(db_url, pool_pre_ping=True)

    def close(self) -> None:
        self.engine.dispose()

    def node_progress(self, cluster: str) -> dict[str, float]:
        """Each node's newest committed sample ts (the 64-row nodes table: cheap); {} when unavailable."""
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                result = conn.execute(
                    text("SELECT node, last_seen_ts FROM nodes WHERE cluster = :c"), {"c": cluster}
                )
                return {str(node): float(ts) for node, ts in result if ts is not None}
        except Exception:
            return {}

    def stored(self, cluster: str) -> Stored | None:
        """Rows, distinct keys and rows per (node, ts) stored for `cluster`; None when unreachable."""
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT count(*) FROM telemetry WHERE cluster = :c"), {"c": cluster}
                ).scalar_one()
                distinct = conn.execute(
                    text(
                        "SELECT count(*) FROM (SELECT DISTINCT node, gpu_index, ts FROM telemetry "
                        "WHERE cluster = :c) AS d"
                    ),
                    {"c": cluster},
                ).scalar_one()
                per_message = conn.execute(
                    text(
                        "SELECT node, ts, count(DISTINCT gpu_index) FROM telemetry WHERE cluster = :c "
                        "GROUP BY node, ts"
                    ),
                    {"c": cluster},
                )
                messages = {(str(node), float(ts)): int(n) for node, ts, n in per_message}
        except Exception:
            return None
        return Stored(int(rows), int(distinct), messages)

    def wait_complete(
        self, cluster: str, final_ts: Mapping[str, float], timeout_s: float, still_running: Callable[[], bool]
    ) -> float | None:
        """Poll until every node's newest committed sample is its last published one; the wall time
        (time.time()) when that was first seen, or None on timeout (poll interval 20 ms)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            progress = self.node_progress(cluster)
            if progress and all(progress.get(node, -1.0) >= ts for node, ts in final_ts.items()):
                return time.time()
            if not still_running():
                return None
            time.sleep(0.02)
        return None


@dataclass(frozen=True, slots=True)
class Accounting:
    """Published keys against stored rows for one run."""

    published_messages: int
    published_rows: int
    stored_rows: int
    lost_rows: int
    lost_messages: int
    duplicated_rows: int
    unexpected_rows: int  # stored rows whose (node, ts) was never published (should be 0)


def account(summary: Mapping[str, Any], stored: Stored) -> Accounting:
    expected = published_keys(summary)
    lost_rows = lost_messages = 0
    for key in expected:
        have = stored.messages.get(key, 0)
        if have < GPUS_PER_NODE:
            lost_rows += GPUS_PER_NODE - have
            lost_messages += have == 0
    unexpected = sum(n for key, n in stored.messages.items() if key not in expected)
    return Accounting(
        published_messages=len(expected),
        published_rows=len(expected) * GPUS_PER_NODE,
        stored_rows=stored.rows,
        lost_rows=lost_rows,
        lost_messages=lost_messages,
        duplicated_rows=stored.duplicated,
        unexpected_rows=unexpected,
    )


def final_ts_by_node(summary: Mapping[str, Any]) -> dict[str, float]:
    """Each node's last published timestamp (its newest key)."""
    newest: dict[str, float] = {}
    for node, ts in published_keys(summary):
        if ts > newest.get(node, -1.0):
            newest[node] = ts
    return newest
