"""Parsing a simulation spec: defaults resolved through twin.perf, and errors that name the field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.sim.helpers import EXAMPLE, job, raw_spec, small_spec
from twin.errors import ScenarioError, TwinError
from twin.perf.reliability import DEFAULT_RESTART_S, checkpoint_bytes, daly_interval_s, job_mtbf_s
from twin.sim import JobProgress, NodeCondition, SimState, load_spec, parse_spec, simulate
from twin.sim.spec import DEFAULT_REPAIR_GPU_S, Health


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_spec(raw)
    return str(info.value)


def test_example_parses_with_daly_interval_and_default_bandwidth() -> None:
    spec = load_spec(EXAMPLE)
    (llama,) = spec.jobs
    assert spec.cluster.total_gpus == 16_640 and spec.cluster.gpus == 16_384
    assert llama.gpus == 16_384 and llama.nodes == 2048
    # δ = 405B params × 14 bytes (bf16 + fp32 Adam) / (2 TB/s Tectonic share of 16,384 GPUs) ≈ 2.84 s
    write_s = checkpoint_bytes(llama.model.params) / 2e12
    assert llama.checkpoint_write_s == pytest.approx(write_s)
    assert llama.checkpoint_interval_s == pytest.approx(daly_interval_s(write_s, job_mtbf_s(16_384)))
    assert llama.target_steps == math.ceil(1.56e13 / (8192 * 2048))


def test_defaults_for_restart_and_repair() -> None:
    spec = small_spec()
    assert spec.cluster.restart_s == DEFAULT_RESTART_S
    assert spec.cluster.repair_gpu_s == DEFAULT_REPAIR_GPU_S
    assert spec.stragglers is None and spec.arrivals is None


def test_job_needing_more_gpus_than_exist_names_the_field() -> None:
    message = _error(raw_spec(2, jobs=[job("big", 24)]))
    assert "jobs['big'].gpus(=24)" in message and "16 schedulable GPUs" in message


def test_zero_nodes_negative_rates_and_unknown_keys() -> None:
    assert "cluster.nodes(=0) must be >= 1" in _error(raw_spec(0))
    assert "cluster.failure_rate_scale(=-1.0)" in _error(raw_spec(scale=-1.0))
    assert "cluster.repair_s.gpu(=-5)" in _error(raw_spec(repair_s={"gpu": -5}))
    assert "cluster.spare_nodes(=-1)" in _error(raw_spec(spare_nodes=-1))
    assert "unknown key cluster.'colour'" in _error(raw_spec(colour="red"))
    bad_job = raw_spec(jobs=[{**job("a"), "priority": 3}])
    assert "unknown key jobs[0].'priority'" in _error(bad_job)
    assert "unknown key spec.'extra'" in _error({**raw_spec(), "extra": 1})


def test_job_errors_name_the_job() -> None:
    assert "jobs[0].gpus is required" in _error(
        raw_spec(jobs=[{k: v for k, v in job("a").items() if k != "gpus"}])
    )
    assert "jobs[0]: layout.offload(='disk')" in _error(
        raw_spec(jobs=[{**job("a"), "layout": {"tp": 8, "offload": "disk"}}])
    )
    assert "does not fit" in _error(raw_spec(jobs=[{**job("a"), "layout": {"tp": 1, "zero_stage": 0}}]))
    assert "jobs['a'].training.tokens is required" in _error(
        raw_spec(jobs=[{**job("a"), "training": {"seq_len": 4096, "global_batch": 64}}])
    )
    assert "jobs[1].id(='a') is used twice" in _error(raw_spec(jobs=[job("a"), job("a")]))
    assert "jobs[0].checkpoint_interval_s(=0)" in _error(raw_spec(jobs=[job("a", checkpoint_interval_s=0)]))


def test_arrivals_and_stragglers_errors() -> None:
    base = raw_spec(jobs=[])
    assert "arrivals.kind(='burst')" in _error({**base, "arrivals": {"kind": "burst"}})
    poisson = {"kind": "poisson", "rate_per_hour": -2, "template": job("t")}
    assert "arrivals.rate_per_hour(=-2)" in _error({**base, "arrivals": poisson})
    helios = {"kind": "helios", "path": "/nonexistent.csv", "template": job("t")}
    assert "arrivals.path: cannot read /nonexistent.csv" in _error({**base, "arrivals": helios})
    assert "stragglers.cov(=1.5)" in _error({**raw_spec(), "stragglers": {"cov": 1.5}})
    assert "nothing to simulate" in _error(base)


def test_toml_spec(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(
        '[cluster]\ngpu = "h100-sxm"\nnodes = 2\n\n[[jobs]]\nid = "t"\nmodel = "llama3-8b"\ngpus = 8\n'
        "layout = {tp = 8}\ntraining = {seq_len = 4096, global_batch = 64, tokens = 1e9}\n"
    )
    assert load_spec(path).jobs[0].job_id == "t"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cluster": {"gpu": "h100-sxm"}, "jobs": []}))
    with pytest.raises(ScenarioError, match=r"cluster\.nodes is required"):
        load_spec(bad)


def test_bad_initial_state_names_the_field() -> None:
    spec = small_spec()
    with pytest.raises(
        TwinError, match=r"state.jobs\[0\].job_id\(='ghost'\) is not a job of the spec; known: a, b"
    ):
        simulate(spec, 1, state=SimState(jobs=(JobProgress("ghost"),)))
    with pytest.raises(ScenarioError, match=r"state.nodes\[0\].node\(=99\)"):
        simulate(spec, 1, state=SimState(nodes=(NodeCondition(99, Health.FAILED),)))
    with pytest.raises(ScenarioError, match=r"steps_done\(=9999\) exceeds the job's target \(3815 steps\)"):
        simulate(spec, 1, state=SimState(jobs=(JobProgress("b", steps_done=9999),)))
    with pytest.raises(ScenarioError, match=r"nodes has 1 nodes; the job runs on 2"):
        simulate(spec, 1, state=SimState(jobs=(JobProgress("a", nodes=(0,)),)))
    with pytest.raises(ScenarioError, match=r"days\(=0\) must be > 0"):
        simulate(spec, 0)
