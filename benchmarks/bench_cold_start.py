"""CLI cold start: wall time of `python -m twin.cli whatif --json -` fed EXAMPLE_SCENARIO on stdin.

Each timed run is a fresh interpreter (median over the runs, after one untimed run that also leaves the
bytecode cache warm). One further run of the same command under `-X importtime` lists every module the
process imported while evaluating the scenario; pandas, scikit-learn and streamlit must not be among them.
Target: median < 1.5 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from _common import REPO_ROOT, ensure_repo_on_path, figure, header, median, target

TARGET_S = 1.5
RUNS_FULL = 10
RUNS_SMOKE = 3
HEAVY_MODULES = ("pandas", "sklearn", "streamlit")
COMMAND = ("-m", "twin.cli", "whatif", "--json", "-")


def _run(payload: str, extra: tuple[str, ...] = ()) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *extra, *COMMAND],
        input=payload,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"twin whatif exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    lines = proc.stdout.strip().splitlines()
    if len(lines) != 1:
        raise RuntimeError(f"twin whatif printed {len(lines)} lines, expected one JSON result")
    result = json.loads(lines[0])
    if "error" in result or "step_time_s" not in result:
        raise RuntimeError(f"twin whatif did not evaluate the scenario: {lines[0][:500]}")
    return wall, proc


def imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from `-X importtime` lines: 'import time: self | cumulative | <indent>name'."""
    names: set[str] = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name)
    return names


def main(smoke: bool = False) -> None:
    ensure_repo_on_path()
    from twin.cli import EXAMPLE_SCENARIO

    runs = RUNS_SMOKE if smoke else RUNS_FULL
    payload = json.dumps(EXAMPLE_SCENARIO)
    header("cold start: python -m twin.cli whatif --json - (EXAMPLE_SCENARIO on stdin)")
    _run(payload)  # untimed: compiles/caches bytecode so the runs measure start-up, not compilation
    walls = [_run(payload)[0] for _ in range(runs)]
    wall = median(walls)
    figure("runs (after 1 untimed)", str(runs))
    figure("wall time median", f"{wall * 1e3:.0f} ms")
    figure("wall time min / max", f"{min(walls) * 1e3:.0f} / {max(walls) * 1e3:.0f} ms")
    target(wall < TARGET_S, f"cold start median {wall:.3f} s < {TARGET_S:g} s")

    _, proc = _run(payload, ("-X", "importtime"))
    modules = imported_modules(proc.stderr)
    if not modules:
        raise RuntimeError("-X importtime produced no import lines; cannot check the imported modules")
    heavy = sorted(m for m in modules if m.split(".", 1)[0] in HEAVY_MODULES)
    numpy_loaded = any(m.split(".", 1)[0] == "numpy" for m in modules)
    figure("modules imported (-X importtime)", f"{len(modules)} (numpy: {'yes' if numpy_loaded else 'no'})")
    target(
        not heavy,
        f"{', '.join(HEAVY_MODULES)} not imported by `twin whatif`"
        + (f" (found: {', '.join(heavy[:5])}{', ...' if len(heavy) > 5 else ''})" if heavy else ""),
    )


if __name__ == "__main__":
    main(smoke="--smoke" in sys.argv[1:])
