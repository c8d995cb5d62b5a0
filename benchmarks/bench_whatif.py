"""In-process what-if latency: `twin.scenario.evaluate(EXAMPLE_SCENARIO)`, median and p95. Target < 5 ms."""

from __future__ import annotations

import sys
import time

from _common import ensure_repo_on_path, figure, header, median, p95, target

TARGET_MS = 5.0
CALLS_FULL, WARMUP_FULL = 2000, 50
CALLS_SMOKE, WARMUP_SMOKE = 200, 10


def main(smoke: bool = False) -> None:
    ensure_repo_on_path()
    from twin.cli import EXAMPLE_SCENARIO
    from twin.scenario import evaluate

    calls, warmup = (CALLS_SMOKE, WARMUP_SMOKE) if smoke else (CALLS_FULL, WARMUP_FULL)
    header("what-if latency: twin.scenario.evaluate(EXAMPLE_SCENARIO), in-process")
    for _ in range(warmup):
        evaluate(EXAMPLE_SCENARIO)
    samples_ms: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        evaluate(EXAMPLE_SCENARIO)
        samples_ms.append((time.perf_counter() - start) * 1e3)
    med, tail = median(samples_ms), p95(samples_ms)
    figure("calls (after warm-up)", f"{calls} (warm-up {warmup})")
    figure("median", f"{med:.3f} ms")
    figure("p95", f"{tail:.3f} ms")
    figure("min / max", f"{min(samples_ms):.3f} / {max(samples_ms):.3f} ms")
    target(med < TARGET_MS, f"median latency {med:.3f} ms < {TARGET_MS:g} ms")
    target(tail < TARGET_MS, f"p95 latency {tail:.3f} ms < {TARGET_MS:g} ms")


if __name__ == "__main__":
    main(smoke="--smoke" in sys.argv[1:])
