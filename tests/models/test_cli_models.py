"""`twin traces import` and `twin models train|evaluate|forecast` end to end, on subsamples of the public
traces and small simulated histories (the full-size run is `twin models evaluate` itself)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import twin.predictors as predictors
from twin.cli import main
from twin.predictors import SimulatedHistory, write_telemetry
from twin.store.forecasts import read_forecasts
from twin.store.repository import Store
from twin.traces import TRACE_FORMATS

# Subsample sizes: enough rows for every split to hold both classes, small enough for a fast test.
ALIBABA_PODS = 2_500
TITAN_GPUS = 4_000
# Fewer boosting iterations than the models' defaults: the test checks the plumbing, not the accuracy.
FAST = ["--max-iter", "30"]


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(argv, out=out, stdin=io.StringIO()), out.getvalue()


@pytest.fixture(scope="module")
def small_traces(traces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A traces folder with seeded subsamples of the Alibaba and Titan files (same layout)."""
    folder = tmp_path_factory.mktemp("traces")
    for kind, n in (("alibaba-2023", ALIBABA_PODS), ("titan", TITAN_GPUS)):
        source = traces_dir / TRACE_FORMATS[kind].relative_path
        frame = pd.read_csv(source, dtype=str, keep_default_na=False)
        target = folder / TRACE_FORMATS[kind].relative_path
        target.parent.mkdir(parents=True)
        frame.sample(n, random_state=0).sort_index().to_csv(target, index=False)
    return folder


@pytest.fixture
def quick_simulations(monkeypatch: pytest.MonkeyPatch, small_history: SimulatedHistory) -> None:
    """The CLI's simulated histories, shrunk: the small power history, a small risk history."""
    original = predictors.simulate_risk_history
    monkeypatch.setattr(predictors, "simulate_history", lambda **_: small_history)
    monkeypatch.setattr(
        predictors,
        "simulate_risk_history",
        lambda **kw: original(nodes=16, hours=12.0, failure_rate_scale=1000.0, seed=kw.get("seed", 0)),
    )


def test_evaluate_json_has_the_documented_shape(
    small_traces: Path, quick_simulations: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(["models", "evaluate", "--json", "--traces", str(small_traces), *FAST])
    assert code == 0, capsys.readouterr().err
    result: dict[str, Any] = json.loads(out)
    power, duration, failure = result["power"], result["duration"], result["failure"]
    assert {"mae_w", "baseline_mae_w", "n_test"} <= power.keys()
    assert {"dataset", "mae_log_s", "baseline_mae_log_s", "n_test"} <= duration.keys()
    assert {"dataset", "roc_auc", "pr_auc", "baseline_pr_auc", "n_test"} <= failure.keys()
    assert duration["dataset"] == "alibaba-2023" and failure["dataset"] == "titan"
    assert power["mae_w"] < power["baseline_mae_w"]
    assert duration["mae_log_s"] < duration["baseline_mae_log_s"]
    assert failure["pr_auc"] > failure["baseline_pr_auc"] and failure["roc_auc"] > 0.5
    pods = pd.read_csv(small_traces / TRACE_FORMATS["alibaba-2023"].relative_path)
    jobs = int((pods["pod_phase"] != "Pending").sum())
    assert duration["n_train"] == int(jobs * 0.7) and duration["n_test"] == jobs - duration["n_train"]
    assert power["n_test"] > 0 and failure["n_test"] > 0


def test_missing_traces_give_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["models", "evaluate", "--json", "--traces", str(tmp_path / "nowhere")])
    assert code == 2
    assert "public traces not found at" in capsys.readouterr().err


def test_train_then_forecast_from_the_store(
    small_traces: Path,
    quick_simulations: None,
    small_history: SimulatedHistory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = f"sqlite:///{tmp_path / 'twin.db'}"
    with Store.open(db) as store:
        write_telemetry(store, small_history.telemetry)
    registry = tmp_path / "registry"
    code, out = run(
        [
            "models",
            "train",
            "--json",
            "--db",
            db,
            "--registry",
            str(registry),
            "--traces",
            str(small_traces),
            *FAST,
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = json.loads(out)
    assert result["failed"] == {}
    cards = {c["name"]: c for c in result["saved"]}
    assert set(cards) == {"power", "job-duration", "job-failure", "gpu-failure", "gpu-risk"}
    assert cards["power"]["data_range"]["rows"] == len(small_history.telemetry)
    assert "node@3600s" in cards["power"]["metrics"]
    assert cards["gpu-failure"]["metrics"]["roc_auc"] > 0.5
    code, out = run(["models", "forecast", "--json", "--db", db, "--registry", str(registry)])
    assert code == 0, capsys.readouterr().err
    written = json.loads(out)["written"]
    assert written["power"] == 3 * (small_history.telemetry["node"].nunique() + 1)
    with Store.open(db) as store:
        assert len(read_forecasts(store, kind="power")) == written["power"]
        assert len(read_forecasts(store, kind="failure")) == written["failure"] > 0


def test_train_reports_a_missing_source_and_trains_the_rest(
    small_traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry"
    argv = [
        "models",
        "train",
        "--json",
        "--db",
        f"sqlite:///{tmp_path / 'none.db'}",
        "--registry",
        str(registry),
    ]
    code, out = run([*argv, "--traces", str(small_traces), "--only", "power", "gpu-failure", *FAST])
    assert code == 2
    result = json.loads(out)
    assert [c["name"] for c in result["saved"]] == ["gpu-failure"]
    assert "no database at" in result["failed"]["power"]
    assert "not trained: power: no database at" in capsys.readouterr().err


def test_forecast_without_a_trained_model_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(
        ["models", "forecast", "--db", f"sqlite:///{tmp_path / 'twin.db'}", "--registry", str(tmp_path)]
    )
    assert code == 2
    assert "no saved model 'power'" in capsys.readouterr().err


def test_traces_import_checks_and_stores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runtimes.csv"
    path.write_text("runtime\n12.5\n0\n3600\n")
    db = f"sqlite:///{tmp_path / 'twin.db'}"
    code, out = run(["traces", "import", "philly", str(path), "--db", db, "--json"])
    assert code == 0
    assert json.loads(out) == {
        "kind": "philly",
        "path": str(path),
        "rows": 3,
        "columns": ["runtime"],
        "stored": 3,
    }
    code, _ = run(["traces", "import", "titan", str(path)])
    assert code == 2
    err = capsys.readouterr().err
    assert str(path) in err and "expected columns: SN, time, nlife" in err
