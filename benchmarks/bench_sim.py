"""The SimPy cluster twin on the Llama 3 snapshot: 16,384 H100s, one 405B-scale job, 54 days.

Figures: time of one replication (target < 2 s), N replications in one process and across processes
(speed-up), mean unexpected interruptions over replications against the published 419 (Dubey et al.
2024, §3.3.4; target within ±10 %), the root-cause mix against Table 5, and the simulated time to train
against the analytic goodput model of `twin.perf` (Daly 2006).
"""

from __future__ import annotations

import os
import sys
import time

from _common import REPO_ROOT, ensure_repo_on_path, figure, header, median, target

EXAMPLE = REPO_ROOT / "examples" / "sim_llama3_405b.json"
TARGET_REPLICATION_S = 2.0
TARGET_INTERRUPTIONS_REL = 0.10
TARGET_MIX_POINTS = 0.03  # largest |simulated − published| share of a component (gpu/network/host/software)
TARGET_PARALLEL_EFFICIENCY = 0.7  # speed-up ≥ 0.7 × workers
TARGET_ANALYTIC_REL = 0.02  # simulated vs Daly-model time to train
TIMED_FULL, TIMED_SMOKE = 5, 2
REPLICATIONS_FULL, REPLICATIONS_SMOKE = 64, 8
FINISH_DAYS = 100  # long enough for the ~78-day run to finish in every replication


def main(smoke: bool = False) -> None:
    ensure_repo_on_path()
    from twin.perf.estimate import estimate
    from twin.perf.reliability import (
        LLAMA3_INTERRUPTION_CAUSES,
        LLAMA3_SNAPSHOT_DAYS,
        LLAMA3_UNEXPECTED_INTERRUPTIONS,
        Component,
    )
    from twin.sim import load_spec, replicate, simulate

    header("cluster twin: Llama 3 405B-scale job on 16,384 H100s for 54 days (examples/sim_llama3_405b.json)")
    start = time.perf_counter()
    spec = load_spec(EXAMPLE)
    figure("parse + resolve through twin.perf", f"{(time.perf_counter() - start) * 1e3:.1f} ms")
    (job,) = spec.jobs
    timings = f"{job.step_time_s:.2f} s / {job.checkpoint_interval_s:.0f} s / {job.checkpoint_write_s:.2f} s"
    figure("step / checkpoint interval / write", timings)

    samples = []
    for seed in range(TIMED_SMOKE if smoke else TIMED_FULL):
        start = time.perf_counter()
        result = simulate(spec, LLAMA3_SNAPSHOT_DAYS, seed=seed)
        samples.append(time.perf_counter() - start)
    one_s = median(samples)
    figure("one replication (median)", f"{one_s:.3f} s ({len(result.events):,} events)")
    target(one_s < TARGET_REPLICATION_S, f"one 54-day replication {one_s:.3f} s < {TARGET_REPLICATION_S:g} s")

    n = REPLICATIONS_SMOKE if smoke else REPLICATIONS_FULL
    workers = min(os.cpu_count() or 1, n)
    serial = replicate(spec, LLAMA3_SNAPSHOT_DAYS, n, seed=419, workers=1)
    pooled = replicate(spec, LLAMA3_SNAPSHOT_DAYS, n, seed=419, workers=workers)
    speedup = serial.wall_s / pooled.wall_s
    figure(f"{n} replications, 1 process", f"{serial.wall_s:.2f} s")
    figure(f"{n} replications, {workers} processes", f"{pooled.wall_s:.2f} s (speed-up {speedup:.2f}×)")
    same = pooled.interruptions == serial.interruptions and pooled.energy_kwh == serial.energy_kwh
    target(same, "process pool gives the same summary as one process")
    if workers > 1 and not smoke:
        target(
            speedup >= TARGET_PARALLEL_EFFICIENCY * workers,
            f"speed-up {speedup:.2f}× on {workers} processes ≥ {TARGET_PARALLEL_EFFICIENCY:g} × {workers}",
        )

    stat = serial.job(job.job_id).interruptions
    error = stat.mean / LLAMA3_UNEXPECTED_INTERRUPTIONS - 1.0
    figure(
        "interruptions (mean, P10-P90)", f"{stat.mean:.1f} ({stat.p10:.0f}-{stat.p90:.0f}) vs 419 published"
    )
    target(
        abs(error) <= TARGET_INTERRUPTIONS_REL,
        f"mean interruptions {stat.mean:.1f} within ±{TARGET_INTERRUPTIONS_REL:.0%} of 419 ({error:+.1%})",
    )
    by_category = serial.job(job.job_id).interruptions_by_category
    total = sum(by_category.values())
    component_of = {c.name: c.component for c in LLAMA3_INTERRUPTION_CAUSES}
    worst = 0.0
    for component in Component:
        published = sum(c.count for c in LLAMA3_INTERRUPTION_CAUSES if c.component is component) / 419
        simulated = sum(v for k, v in by_category.items() if component_of[k] is component) / total
        worst = max(worst, abs(simulated - published))
        figure(f"  {component.value} share", f"{simulated:.1%} (Table 5: {published:.1%})")
    for cause in LLAMA3_INTERRUPTION_CAUSES[:5]:
        figure(f"  {cause.name}", f"{by_category.get(cause.name, 0.0):.1f} per run (Table 5: {cause.count})")
    target(worst <= TARGET_MIX_POINTS, f"component mix within {TARGET_MIX_POINTS:.0%} points of Table 5")

    est = estimate(job.model, spec.cluster.job_cluster(job.gpus), job.layout, job.training)
    assert est.reliability is not None
    finish = replicate(spec, FINISH_DAYS, REPLICATIONS_SMOKE, seed=78, workers=workers).job(job.job_id)
    sim_days = finish.completion_s.mean / 86_400
    model_days = est.reliability.time_to_train_s / 86_400
    figure("time to train: simulated / Daly model", f"{sim_days:.2f} / {model_days:.2f} days")
    target(
        finish.finished_fraction == 1.0 and abs(sim_days / model_days - 1) <= TARGET_ANALYTIC_REL,
        f"simulated time to train within {TARGET_ANALYTIC_REL:.0%} of the analytic model",
    )


if __name__ == "__main__":
    main(smoke="--smoke" in sys.argv[1:])
