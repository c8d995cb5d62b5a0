"""The advisor: power caps from the performance core, failure risk from precursors, checkpoint advice, and
`twin advise`'s plan from a store (SQLite)."""

from __future__ import annotations

import copy
import dataclasses
import io
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sensors.commands import Action, Command, CommandOutcome, OutcomeKind
from twin.advisor import (
    CAP_RESOLUTION_W,
    MIN_CAP_FRACTION_OF_TDP,
    PRECURSOR_XID_RISK,
    SBE_BURST_FAILURE_SHARE,
    advise_checkpoint,
    advise_power_cap,
    cap_grid_w,
    combine_risks,
    gpu_risk,
    job_risk,
    job_scenario,
    node_risks_from_telemetry,
)
from twin.cli import EXAMPLE_SCENARIO, main
from twin.cli_advise import plan_advice
from twin.errors import ScenarioError
from twin.perf.estimate import estimate
from twin.perf.model_presets import model_preset
from twin.perf.power import compute_phase_power_w
from twin.records import TELEMETRY_COLUMNS, IngestBatch, JobEventRecord
from twin.scenario import Scenario, parse
from twin.store.commands import record_command, record_outcome
from twin.store.repository import Store


def h100_example() -> Scenario:
    scenario = copy.deepcopy(EXAMPLE_SCENARIO)
    scenario["cluster"]["gpus"] = 64
    scenario["training"]["global_batch"] = 64
    return parse(scenario)


def energy_and_step(s: Scenario, cap: float | None) -> tuple[float, float]:
    est = estimate(s.model, dataclasses.replace(s.cluster, power_cap_w=cap), s.layout, s.training)
    return est.power.cluster_power_w * est.step.step_time_s * s.cluster.pue, est.step.step_time_s


# --- power caps -----------------------------------------------------------------------------------------


def test_power_cap_is_the_most_saving_cap_within_the_slowdown_bound() -> None:
    s = h100_example()
    advice = advise_power_cap(
        s.model, s.cluster, s.layout, s.training, max_slowdown=0.05, job_id="j", nodes=("a",)
    )
    assert advice is not None
    base_j, base_s = energy_and_step(s, None)
    capped_j, capped_s = energy_and_step(s, advice.power_cap_w)
    assert advice.step_time_s == pytest.approx(base_s) and advice.capped_step_time_s == pytest.approx(
        capped_s
    )
    assert advice.energy_per_step_j == pytest.approx(base_j)
    assert advice.capped_energy_per_step_j == pytest.approx(capped_j)
    assert 0 < advice.slowdown <= 0.05
    assert advice.power_cap_w < compute_phase_power_w(s.cluster.gpu)
    assert advice.capped_power_per_gpu_w < advice.power_per_gpu_w
    # Every other cap on the grid is either too slow or saves less.
    for cap in cap_grid_w(s.cluster):
        energy, step = energy_and_step(s, cap)
        assert step / base_s - 1 > 0.05 or energy >= capped_j - 1e-6
    # The next cap down breaks the bound: the advice is the lowest cap within it.
    _, below_s = energy_and_step(s, advice.power_cap_w - CAP_RESOLUTION_W)
    assert below_s / base_s - 1 > 0.05


def test_energy_saved_figures_are_consistent() -> None:
    s = h100_example()
    advice = advise_power_cap(s.model, s.cluster, s.layout, s.training, max_slowdown=0.1)
    assert advice is not None
    saved = advice.energy_per_step_j - advice.capped_energy_per_step_j
    assert advice.energy_saved_per_step_j == pytest.approx(saved)
    assert advice.energy_saved_per_hour_j == pytest.approx(saved * 3600 / advice.capped_step_time_s)
    assert advice.energy_saved_fraction == pytest.approx(saved / advice.energy_per_step_j)
    assert "slowdown" in advice.reason() and advice.to_json()["energy_saved_per_hour_j"] > 0


def test_a_looser_bound_allows_a_lower_cap_that_saves_more() -> None:
    s = h100_example()
    tight = advise_power_cap(s.model, s.cluster, s.layout, s.training, max_slowdown=0.05)
    loose = advise_power_cap(s.model, s.cluster, s.layout, s.training, max_slowdown=0.15)
    assert tight is not None and loose is not None
    assert loose.power_cap_w < tight.power_cap_w
    assert loose.energy_saved_per_step_j > tight.energy_saved_per_step_j


def test_no_slowdown_allowed_means_no_cap() -> None:
    s = h100_example()
    assert advise_power_cap(s.model, s.cluster, s.layout, s.training, max_slowdown=0.0) is None


def test_an_existing_cap_is_not_the_baseline() -> None:
    s = h100_example()
    capped_cluster = dataclasses.replace(s.cluster, power_cap_w=400.0)
    a = advise_power_cap(s.model, capped_cluster, s.layout, s.training)
    b = advise_power_cap(s.model, s.cluster, s.layout, s.training)
    assert a == b


@pytest.mark.parametrize("bad", [-0.1, 1.0, math.nan, True])
def test_bad_max_slowdown_is_an_error(bad: Any) -> None:
    s = h100_example()
    with pytest.raises(ScenarioError, match="max_slowdown"):
        advise_power_cap(s.model, s.cluster, s.layout, s.training, max_slowdown=bad)


def test_cap_grid_spans_the_allowed_range() -> None:
    cluster = h100_example().cluster
    grid = cap_grid_w(cluster)
    assert grid[0] >= MIN_CAP_FRACTION_OF_TDP * cluster.gpu.tdp_w and grid[0] > cluster.gpu.idle_w
    assert grid[-1] < compute_phase_power_w(cluster.gpu)
    assert all(b - a == CAP_RESOLUTION_W for a, b in itertools.pairwise(grid))


def test_job_scenario_from_job_events() -> None:
    layout = {"tp": 8, "pp": 2, "cp": 1, "dp": None, "zero_stage": 1, "precision": "bf16"}
    s = job_scenario(
        model_preset("llama3-70b"),
        layout,
        [f"n{i:02d}" for i in range(8)],
        {"gpu": "h100-sxm", "gpus_per_node": 8},
        {"seq_len": 8192, "global_batch": 256},
    )
    assert (s.cluster.gpus, s.layout.dp, s.cluster.gpu.name) == (64, 4, "h100-sxm")
    with pytest.raises(ScenarioError):
        job_scenario(
            model_preset("llama3-70b"), layout, [], {"gpu": "h100-sxm"}, {"seq_len": 1, "global_batch": 1}
        )


# --- failure risk and checkpoints -----------------------------------------------------------------------


def test_gpu_risk_from_precursors() -> None:
    assert gpu_risk(0, []) == 0.0
    assert gpu_risk(0, [48]) == 1.0 and gpu_risk(3, [79]) == 1.0
    assert gpu_risk(0, [63]) == pytest.approx(PRECURSOR_XID_RISK)
    few, many = gpu_risk(1, []), gpu_risk(50, [])
    assert 0 < few < many <= SBE_BURST_FAILURE_SHARE
    assert gpu_risk(50, [63]) == pytest.approx(1 - (1 - many) * (1 - PRECURSOR_XID_RISK))
    with pytest.raises(ValueError, match="sbe_increase"):
        gpu_risk(-1, [])


def test_combine_risks() -> None:
    assert combine_risks([]) == 0.0
    assert combine_risks([0.5, 0.5]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="risk"):
        combine_risks([1.5])


def row(node: str, gpu: int, ts: float, sbe: int | None, xid: int | None = 0) -> dict[str, Any]:
    return {"node": node, "gpu_index": gpu, "ts": ts, "ecc_sbe_total": sbe, "xid_last": xid}


def test_node_risk_from_telemetry_counts_rising_correctable_errors() -> None:
    rows = [
        row("n01", 0, 3.0, 14),
        row("n01", 0, 1.0, 10),  # out of order on purpose
        row("n01", 0, 2.0, 12),
        row("n01", 1, 1.0, 5),
        row("n01", 1, 2.0, 5),
        row("n02", 0, 1.0, 100),
        row("n02", 0, 2.0, 1),  # driver reloaded: the counter restarted
        row("n02", 0, 3.0, 2),
        row("n03", 0, 1.0, None, 63),
        row("n04", 0, 1.0, 0, 0),
        row("n04", 0, 2.0, None, None),
    ]
    risk = node_risks_from_telemetry(rows)
    assert risk["n01"] == pytest.approx(gpu_risk(4, []))
    assert risk["n02"] == pytest.approx(gpu_risk(1, []))
    assert risk["n03"] == pytest.approx(PRECURSOR_XID_RISK)
    assert risk["n04"] == 0.0


def test_checkpoint_advice_weighs_risk_against_the_checkpoint_cost() -> None:
    nodes = ("n01", "n02")
    risk = {"n01": 0.6, "n02": 0.1}
    advice = advise_checkpoint("j", nodes, risk, seconds_since_checkpoint=600, checkpoint_write_s=30)
    assert advice is not None
    assert advice.risk == pytest.approx(job_risk(nodes, risk)) == pytest.approx(1 - 0.4 * 0.9)
    assert advice.risky_nodes == (("n01", 0.6), ("n02", 0.1))
    assert "n01 0.60" in advice.reason()
    # Little work at stake: a checkpoint costs more than the expected loss.
    assert advise_checkpoint("j", nodes, risk, seconds_since_checkpoint=40, checkpoint_write_s=30) is None
    # Low risk.
    assert advise_checkpoint("j", nodes, {"n01": 0.1}, seconds_since_checkpoint=1e6) is None
    # Nodes of other jobs do not count.
    assert advise_checkpoint("j", nodes, {"n09": 1.0}, seconds_since_checkpoint=1e6) is None


# --- twin advise's plan from the store -------------------------------------------------------------------


def telemetry_row(node: str, gpu: int, ts: float, sbe: int, xid: int = 0) -> tuple[Any, ...]:
    values = dict.fromkeys(TELEMETRY_COLUMNS)
    values.update(
        cluster="demo", node=node, gpu_index=gpu, ts=ts, power_w=600.0, ecc_sbe_total=sbe, xid_last=xid
    )
    return tuple(values[c] for c in TELEMETRY_COLUMNS)


@pytest.fixture
def live_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{tmp_path / 'twin.db'}")
    nodes = tuple(f"n{i:02d}" for i in range(8))
    model = {"name": "llama3-70b", "params": model_preset("llama3-70b").params}
    layout = {"tp": 8, "pp": 2, "cp": 1, "dp": 4, "zero_stage": 1, "precision": "bf16"}
    batch = IngestBatch()
    batch.job_events.append(
        JobEventRecord("demo", "pretrain", "start", 1000.0, 0, None, 0.0, model, layout, nodes)
    )
    batch.job_events.append(JobEventRecord("demo", "pretrain", "step", 1900.0, 100, 10.0, 100 * 256 * 8192.0))
    for k in range(10):  # n03 GPU 2: correctable errors rising (a precursor burst)
        for node in nodes:
            batch.telemetry.append(telemetry_row(node, 2, 1500.0 + 40 * k, 3 * k if node == "n03" else 0))
    store.write_batch(batch)
    yield store
    store.close()


def test_plan_advises_a_cap_and_a_checkpoint(live_store: Store) -> None:
    section = {"gpu": "h100-sxm", "gpus_per_node": 8}
    plan = plan_advice(live_store, "demo", 2000.0, max_slowdown=0.05, cluster_section=section, seq_len=8192)
    (cap,) = plan.power_caps
    assert cap.job_id == "pretrain" and len(cap.nodes) == 8 and cap.slowdown <= 0.05
    (ckpt,) = plan.checkpoints
    assert ckpt.job_id == "pretrain" and ckpt.risky_nodes[0][0] == "n03"
    assert ckpt.work_at_risk_s == 1000.0  # no checkpoint yet: since the start
    assert plan.node_risk["n03"] > 0.25 and plan.node_risk["n00"] == 0.0


def test_plan_skips_advice_already_applied(live_store: Store) -> None:
    section = {"gpu": "h100-sxm", "gpus_per_node": 8}
    first = plan_advice(live_store, "demo", 2000.0, max_slowdown=0.05, cluster_section=section, seq_len=8192)
    cap = first.power_caps[0].power_cap_w
    for i, node in enumerate(("n00", "n01")):
        cmd = Command(f"{i + 1:032x}", "demo", node, Action.POWER_CAP, {"power_cap_w": cap}, 1990.0, 2100.0)
        record_command(live_store, cmd)
        outcome = OutcomeKind.APPLIED if node == "n00" else OutcomeKind.NOT_PERMITTED
        record_outcome(live_store, "demo", CommandOutcome(node, 1991.0, outcome, cmd.id, "power_cap"))
    ckpt = Command("f" * 32, "demo", "n00", Action.CHECKPOINT_NOW, {"job_id": "pretrain"}, 1995.0, 2050.0)
    record_command(live_store, ckpt)
    plan = plan_advice(live_store, "demo", 2000.0, max_slowdown=0.05, cluster_section=section, seq_len=8192)
    assert "n00" not in plan.power_caps[0].nodes and "n01" in plan.power_caps[0].nodes  # n01 refused: retry
    assert plan.checkpoints == []
    assert {"job_id": "pretrain", "reason": "advised to checkpoint already"} in plan.skipped


def test_plan_reports_jobs_it_cannot_model(live_store: Store) -> None:
    plan = plan_advice(live_store, "demo", 2000.0, max_slowdown=0.05, cluster_section={"gpu": "no-such-gpu"})
    assert plan.power_caps == [] and "no-such-gpu" in plan.skipped[0]["reason"]


# --- twin advise ------------------------------------------------------------------------------------------


def test_cli_advise_prints_the_plan(live_store: Store, tmp_path: Path) -> None:
    live_store.close()  # the CLI opens the database itself
    db = f"sqlite:///{tmp_path / 'twin.db'}"
    out = io.StringIO()
    assert main(["advise", "--db", db, "--cluster", "demo", "--seq-len", "8192"], out, io.StringIO()) == 0
    assert "power cap  job pretrain on n00, n01" in out.getvalue()
    out = io.StringIO()
    assert (
        main(
            ["advise", "--db", db, "--cluster", "demo", "--json", "--max-slowdown", "0.1"], out, io.StringIO()
        )
        == 0
    )
    plan = json.loads(out.getvalue())
    assert plan["power_caps"][0]["job_id"] == "pretrain" and plan["power_caps"][0]["slowdown"] <= 0.1


def test_cli_advise_refuses_bad_arguments(
    live_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    live_store.close()  # the CLI opens the database itself
    monkeypatch.delenv("TWIN_COMMAND_SECRET", raising=False)
    db = f"sqlite:///{tmp_path / 'twin.db'}"
    cases = [
        (["--db", db, "--max-slowdown", "1.5"], "--max-slowdown"),
        (["--db", db, "--publish"], "--publish needs"),
        (["--db", f"sqlite:///{tmp_path / 'none.db'}"], "no database"),
    ]
    for args, message in cases:
        assert main(["advise", *args], io.StringIO(), io.StringIO()) == 2
        assert message in capsys.readouterr().err
