"""Run every benchmark and print its figures and PASS/MISS target lines.

    python benchmarks/run_all.py            # full repetitions
    python benchmarks/run_all.py --smoke    # fewer repetitions (CI; well under a minute on 2 cores)

Targets are reported, never asserted: a slow machine prints MISS and still exits 0. The exit status is 1
only when a benchmark raises (something crashed).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = (
    "bench_whatif",
    "bench_sweep",
    "bench_cold_start",
    "bench_validation",
    "bench_store",
    "bench_ingest",
    "bench_faults",
    "bench_models",
    "bench_sim",
    "bench_dashboard",
)


class Benchmark(Protocol):
    def main(self, smoke: bool = False) -> None: ...


def _load(name: str) -> Benchmark:
    for folder in (str(BENCH_DIR.parent), str(BENCH_DIR)):  # repo root for `twin`, then benchmarks/
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return cast(Benchmark, importlib.import_module(name))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gpu-twin benchmarks")
    parser.add_argument("--smoke", action="store_true", help="fewer repetitions (CI)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    args = parser.parse_args(argv)
    names: Sequence[str] = args.only or BENCHMARKS
    print(
        f"gpu-twin benchmarks ({'smoke' if args.smoke else 'full'}): Python {platform.python_version()} "
        f"on {platform.machine()}, {platform.system()}",
        flush=True,
    )
    start = time.perf_counter()
    crashed: list[str] = []
    for name in names:
        try:
            _load(name).main(smoke=args.smoke)
        except Exception:
            crashed.append(name)
            print(f"  CRASH in {name}:", flush=True)
            traceback.print_exc()
            sys.stderr.flush()
    recorded = cast(list[tuple[bool, str]], vars(importlib.import_module("_common"))["RECORDED"])
    passed = sum(ok for ok, _ in recorded)
    print("\n== summary", flush=True)
    for ok, description in recorded:
        print(f"  {'PASS' if ok else 'MISS'}  {description}")
    print(
        f"  {passed}/{len(recorded)} targets met, {len(recorded) - passed} missed, "
        f"{len(crashed)} crashed{': ' + ', '.join(crashed) if crashed else ''}; "
        f"{time.perf_counter() - start:.1f} s",
        flush=True,
    )
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
