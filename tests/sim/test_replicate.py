"""Replications: identical summaries whatever the engine or the number of workers; the CLI."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json

import pytest

from tests.sim.helpers import EXAMPLE, MANY_FAILURES, small_spec
from twin.cli import main
from twin.errors import ScenarioError, TwinError
from twin.sim import Stat, replicate

HAS_RAY = importlib.util.find_spec("ray") is not None


def _comparable(summary: object) -> dict[str, object]:
    out = dataclasses.asdict(summary)  # type: ignore[call-overload]
    for key in ("wall_s", "workers", "engine"):
        out.pop(key)
    return dict(out)


def test_stat_percentiles() -> None:
    s = Stat.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.mean, s.p10, s.p50, s.p90, s.n) == (3.0, 1.4, 3.0, 4.6, 5)
    assert Stat.of([]).n == 0


def test_process_pool_gives_the_same_summary_as_one_process() -> None:
    spec = small_spec(4, spare_nodes=1, scale=MANY_FAILURES)
    serial = replicate(spec, 2, replications=4, seed=9, workers=1)
    pooled = replicate(spec, 2, replications=4, seed=9, workers=2)
    assert pooled.workers == 2
    assert _comparable(serial) == _comparable(pooled)
    assert serial.interruptions.n == 4 and serial.interruptions.mean > 0
    assert len(serial.power_kw_hourly_mean) == 48


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (optional extra: pip install 'gpu-twin[ray]')")
def test_ray_gives_the_same_summary_as_local() -> None:
    spec = small_spec(4, spare_nodes=1, scale=MANY_FAILURES)
    local = replicate(spec, 2, replications=3, seed=4, workers=1)
    remote = replicate(spec, 2, replications=3, seed=4, engine="ray")
    assert _comparable(local) == _comparable(remote)


def test_bad_arguments() -> None:
    spec = small_spec()
    with pytest.raises(ScenarioError, match="engine"):
        replicate(spec, 1, 2, engine="dask")
    with pytest.raises(ScenarioError, match=r"replications\(=0\)"):
        replicate(spec, 1, 0)
    with pytest.raises(ScenarioError, match=r"days\(=-1\)"):
        replicate(spec, -1, 2)
    with pytest.raises(TwinError, match="ghost"):
        summary = replicate(spec, 1, 1, workers=1)
        summary.job("ghost")
    if not HAS_RAY:
        with pytest.raises(TwinError, match="needs Ray"):
            replicate(spec, 1, 1, engine="ray")


def test_cli_sim_json_and_text() -> None:
    out = io.StringIO()
    code = main(
        ["sim", str(EXAMPLE), "--days", "2", "--replications", "2", "--workers", "1", "--json"], out=out
    )
    assert code == 0
    summary = json.loads(out.getvalue())
    assert summary["replications"] == 2 and summary["jobs"][0]["job_id"] == "llama3-405b"
    assert summary["jobs"][0]["completion_s"]["mean"] is None  # not finished in 2 days: NaN → null
    text = io.StringIO()
    assert main(["sim", str(EXAMPLE), "--days", "2", "--workers", "1"], out=text) == 0
    assert "interruptions" in text.getvalue() and "llama3-405b" in text.getvalue()


def test_cli_sim_bad_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "/nonexistent/spec.json", "--days", "1"], out=io.StringIO()) == 2
    assert "cannot read /nonexistent/spec.json" in capsys.readouterr().err
