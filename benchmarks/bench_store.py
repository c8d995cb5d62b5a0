"""Store write rate: `Store.write_batch` of 8-GPU telemetry, batches of 2,000 messages, SQLite and PostgreSQL.

The load is the hardest shape for the store: a cluster of 2,000 nodes × 8 GPUs reporting once a second, so a
batch of 2,000 messages (16,000 GPU samples) has every row from a different GPU, and besides inserting the
samples the store writes 16,000 GPU and 2,000 node "last seen" rows (updates, after the warm-up batch).
Rows are built before timing; each batch is one transaction (commit included). Rate = rows per batch /
median batch wall time (the overall rate, rows / total time, is printed beside it).
Target >= 100,000 GPU-sample rows/s per backend (the ingest service's target, before decoding costs).

SQLite writes a file in a temporary folder (WAL, synchronous=NORMAL). PostgreSQL uses
`TWIN_BENCH_POSTGRES_URL` (default: the local `test` database) in a schema of its own, dropped afterwards;
when it cannot be reached the benchmark prints SKIP for it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import ensure_repo_on_path, figure, header, median, p95, target
from _services import postgres_reachable

TARGET_ROWS_PER_S = 100_000
NODES, GPUS_PER_NODE = 2_000, 8  # one batch = one second of this cluster = 2,000 messages
BATCHES_FULL, WARMUP_FULL = 20, 2
BATCHES_SMOKE, WARMUP_SMOKE = 3, 1
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = 1_700_000_000.0


def _batch_rows(second: int) -> list[tuple[Any, ...]]:
    """One second of the cluster: every GPU's sample, values varying a little by GPU and time."""
    rows = []
    for n in range(NODES):
        node = f"n{n:04d}"
        ts = T0 + second + (n % 100) * 1e-3  # nodes' clocks are not in lockstep
        for g in range(GPUS_PER_NODE):
            power = 550.0 + ((n * 7 + g * 13 + second) % 150)
            rows.append(
                (
                    "bench", node, g, ts, f"GPU-{n:04d}-{g}", power, 1.0e9 + second * power, 97.0, 41.0,
                    71 * 2**30, 80 * 2**30, 60.0 + g, 1980.0, 0, 0, None, 0,
                )
            )  # fmt: skip
    return rows


def _measure(url: str, schema: str | None, batches: int, warmup: int) -> tuple[int, list[float]]:
    """Rows inserted and the wall seconds of each timed batch (after `warmup` untimed ones)."""
    from twin.records import IngestBatch
    from twin.store.repository import Store

    store = Store.open(url, schema=schema)
    try:
        for second in range(warmup):
            store.write_batch(IngestBatch(telemetry=_batch_rows(second)))
        loads = [IngestBatch(telemetry=_batch_rows(warmup + i)) for i in range(batches)]
        inserted = 0
        walls: list[float] = []
        for batch in loads:
            start = time.perf_counter()
            inserted += store.write_batch(batch).telemetry_inserted
            walls.append(time.perf_counter() - start)
        return inserted, walls
    finally:
        store.close()


def _report(backend: str, inserted: int, walls: list[float]) -> None:
    rows_per_batch = NODES * GPUS_PER_NODE
    rate = rows_per_batch / median(walls)
    figure(f"{backend}: rows inserted", f"{inserted:,} in {len(walls)} batches of {rows_per_batch:,}")
    figure(f"{backend}: per batch", f"median {median(walls) * 1e3:.1f} ms, p95 {p95(walls) * 1e3:.1f} ms")
    figure(
        f"{backend}: write rate", f"{rate:,.0f} rows/s (median batch); {inserted / sum(walls):,.0f} overall"
    )
    target(rate >= TARGET_ROWS_PER_S, f"{backend} store write {rate:,.0f} rows/s >= {TARGET_ROWS_PER_S:,}")


def main(smoke: bool = False) -> None:
    ensure_repo_on_path()
    from sqlalchemy import create_engine, text

    from twin.store.urls import redact_url

    batches, warmup = (BATCHES_SMOKE, WARMUP_SMOKE) if smoke else (BATCHES_FULL, WARMUP_FULL)
    header(f"store write rate: {NODES:,} nodes × {GPUS_PER_NODE} GPUs, one message per node per batch")
    with tempfile.TemporaryDirectory(prefix="twin-bench-store-") as folder:
        inserted, walls = _measure(f"sqlite:///{Path(folder) / 'twin.db'}", None, batches, warmup)
    _report("SQLite", inserted, walls)

    url = os.environ.get("TWIN_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    why_not = postgres_reachable(url)
    if why_not is not None:
        print(f"  SKIP: PostgreSQL at {redact_url(url)} not reachable ({why_not})", flush=True)
        return
    schema = f"twin_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        inserted, walls = _measure(url, schema, batches, warmup)
    finally:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
    _report("PostgreSQL", inserted, walls)


if __name__ == "__main__":
    main(smoke="--smoke" in sys.argv[1:])
