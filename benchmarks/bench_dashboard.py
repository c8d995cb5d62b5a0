"""Dashboard responsiveness, measured server-side with Streamlit's AppTest (the script run the browser waits
for; the browser's own drawing is not included).

- What-if rerun: change the ZeRO stage (1 ↔ 3) on the what-if page and time the rerun. Target < 300 ms.
- Live page with 1,024 GPUs: a SQLite store filled through the ingest path with the simulated 128 × 8 GPU
  cluster (10 s samples; 30 minutes, the default power window, in full mode), the live page rerun
  (heatmap of 1,024 GPUs, power history, alerts, 16 jobs with step times and the cached projection).
  Target < 1 s. The first render, which also runs the live projection (twin.live_sim), is reported apart.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ensure_repo_on_path, figure, header, median, p95, target

WHATIF_TARGET_MS = 300.0
LIVE_TARGET_MS = 1_000.0
RERUNS_FULL, RERUNS_SMOKE = 30, 5
MINUTES_FULL, MINUTES_SMOKE = 30.0, 3.0
NODES, GPUS_PER_NODE = 128, 8
APP_TIMEOUT_S = 120.0


def app_script(page: str, settings: dict[str, object]) -> None:
    from dashboard.app import run
    from dashboard.settings import DashboardSettings

    run(DashboardSettings(**settings), start_page=page)  # type: ignore[arg-type]


def _apptest(page: str, settings: dict[str, Any]) -> Any:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(
        app_script, kwargs={"page": page, "settings": settings}, default_timeout=APP_TIMEOUT_S
    )
    at.run()
    if at.exception:
        raise RuntimeError(f"{page} page raised: {at.exception[0].value}")
    return at


def _timed_ms(at: Any) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = (time.perf_counter() - start) * 1e3
    if at.exception:
        raise RuntimeError(f"rerun raised: {at.exception[0].value}")
    return elapsed


def bench_whatif(url: str, reruns: int) -> None:
    header("dashboard: what-if rerun after a widget change (AppTest, in-process)")
    at = _apptest("whatif", {"db_url": url})
    memory = {m.label: m.value for m in at.metric}["memory per GPU"]
    samples: list[float] = []
    seen: set[str] = {str(memory)}
    for k in range(reruns):
        at.selectbox(key="a_zero_stage").set_value(3 if k % 2 == 0 else 1)
        samples.append(_timed_ms(at))
        seen.add(str({m.label: m.value for m in at.metric}["memory per GPU"]))
    if len(seen) < 2:
        raise RuntimeError("changing the ZeRO stage did not change the memory shown")
    med, tail = median(samples), p95(samples)
    figure("reruns", str(reruns))
    figure("median / p95", f"{med:.0f} / {tail:.0f} ms")
    figure("min / max", f"{min(samples):.0f} / {max(samples):.0f} ms")
    target(med < WHATIF_TARGET_MS, f"what-if rerun median {med:.0f} ms < {WHATIF_TARGET_MS:g} ms")
    target(tail < WHATIF_TARGET_MS, f"what-if rerun p95 {tail:.0f} ms < {WHATIF_TARGET_MS:g} ms")


def bench_live(folder: Path, minutes: float, reruns: int) -> None:
    from dashboard import live
    from dashboard.sample_data import fill_store, live_sim_spec
    from twin.store.repository import Store

    header(
        f"dashboard: live page, {NODES * GPUS_PER_NODE:,} GPUs, {minutes:g} min of 10 s telemetry (AppTest)"
    )
    url = f"sqlite:///{folder / 'live.db'}"
    spec = folder / "spec.json"
    spec.write_text(json.dumps(live_sim_spec(nodes=NODES, gpus_per_node=GPUS_PER_NODE)))
    start = time.perf_counter()
    with Store.open(url) as store:
        fill = fill_store(
            store, nodes=NODES, gpus_per_node=GPUS_PER_NODE, minutes=minutes, end_ts=time.time()
        )
    figure(
        "store fill (decode + write_batch)",
        f"{fill.telemetry_rows:,} rows in {time.perf_counter() - start:.1f} s",
    )
    with Store.open(url, create=False) as store:
        reads = []
        for _ in range(reruns):
            t0 = time.perf_counter()
            data = live.read_live(store, fill.cluster, time.time(), 1_800.0, 3_600.0)
            reads.append((time.perf_counter() - t0) * 1e3)
    settings = {"db_url": url, "sim_spec": str(spec), "stale_after_s": 3_600.0}
    t0 = time.perf_counter()
    at = _apptest("live", settings)
    first_ms = (time.perf_counter() - t0) * 1e3
    shown = {m.label: m.value for m in at.metric}
    samples = [_timed_ms(at) for _ in range(reruns)]
    med, tail = median(samples), p95(samples)
    figure("GPUs in the heatmap", f"{len(data.frame):,}")
    figure("GPUs reporting; nodes reporting", f"{shown['GPUs reporting']}; {shown['Nodes reporting']}")
    figure("first render (incl. projection)", f"{first_ms:.0f} ms")
    figure("store reads per refresh (median)", f"{median(reads):.0f} ms")
    figure("refresh median / p95", f"{med:.0f} / {tail:.0f} ms")
    target(
        med < LIVE_TARGET_MS, f"live page refresh, 1,024 GPUs, median {med:.0f} ms < {LIVE_TARGET_MS:g} ms"
    )
    target(tail < LIVE_TARGET_MS, f"live page refresh, 1,024 GPUs, p95 {tail:.0f} ms < {LIVE_TARGET_MS:g} ms")


def main(smoke: bool = False) -> None:
    ensure_repo_on_path()
    # AppTest runs scripts outside a server; Streamlit warns about that once per app ("can be ignored").
    # A filter, not a level: Streamlit resets its loggers' levels when an app loads its config.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        lambda record: "missing ScriptRunContext" not in record.getMessage()
    )
    reruns = RERUNS_SMOKE if smoke else RERUNS_FULL
    minutes = MINUTES_SMOKE if smoke else MINUTES_FULL
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        folder = Path(tmp)
        empty = f"sqlite:///{folder / 'empty.db'}"
        from twin.store.repository import Store

        Store.open(empty).close()
        bench_whatif(empty, reruns)
        bench_live(folder, minutes, reruns)


if __name__ == "__main__":
    main(smoke="--smoke" in sys.argv[1:])
