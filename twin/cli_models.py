"""`twin traces import`, `twin models train|evaluate|forecast`: the predictors' commands.

Settings are read here, at the edge: TWIN_DB (database URL), TWIN_TRACES (the public traces folder,
default ../shared/traces beside the checkout), TWIN_REGISTRY (saved models, default ./twin-models).
Heavy imports (pandas, scikit-learn) happen inside the handlers. Exit status: 0 done, 2 bad input
(missing traces or database, too little history, a wrong file format), 1 a database failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:
    import pandas as pd

    from twin.model_registry import ModelRegistry
    from twin.store.repository import Store

DEFAULT_DB_URL: Final = "sqlite:///twin.db"  # twin.store.urls.DEFAULT_DB_URL, not imported: cold start
# Registry names of the saved models.
POWER_MODEL: Final = "power"
DURATION_MODEL: Final = "job-duration"
JOB_FAILURE_MODEL: Final = "job-failure"
GPU_FAILURE_MODEL: Final = "gpu-failure"  # Titan: position, batch, age
GPU_RISK_MODEL: Final = "gpu-risk"  # telemetry precursors (simulated history)
MODEL_NAMES: Final = (POWER_MODEL, DURATION_MODEL, JOB_FAILURE_MODEL, GPU_FAILURE_MODEL, GPU_RISK_MODEL)
# Simulated power history for `evaluate` and `train --simulated`: 16 nodes × 8 GPUs for 48 h at 30-s
# polls (~740,000 GPU samples). ASSUMPTION: two days give the 1-h horizon ~1,000 test buckets per node
# after the 70 % split; the seed fixes the run.
DEFAULT_SIM_HOURS: Final = 48.0
DEFAULT_SEED: Final = 0


class _CommandError(Exception):
    """A handled failure: the message to print and the exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def register(sub: Any) -> None:
    """Add `traces` and `models` to the `twin` parser."""
    default_db = os.environ.get("TWIN_DB") or DEFAULT_DB_URL
    db_help = f"database URL (default: $TWIN_DB or {DEFAULT_DB_URL})"

    traces = sub.add_parser("traces", help="public GPU-cluster traces (../shared/traces)")
    traces_sub = traces.add_subparsers(dest="traces_command", required=True)
    p = traces_sub.add_parser("import", help="read and check a trace file; with --db, store its records")
    p.add_argument("kind", choices=("alibaba-2023", "titan", "philly"))
    p.add_argument(
        "path", help="the trace file (e.g. ../shared/traces/olcf-titan-gpu-life/gc_summary_loc.csv)"
    )
    p.add_argument("--db", default=None, help="store the records in this database (default: only check)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_traces_import)

    models = sub.add_parser("models", help="train, evaluate and run the predictors")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    p = models_sub.add_parser("train", help="fit the predictors and save them in the registry")
    p.add_argument("--db", default=default_db, help=db_help + "; the power model learns from its telemetry")
    p.add_argument("--cluster", default=None, help="only this cluster's telemetry (default: all)")
    p.add_argument(
        "--simulated", action="store_true", help="fit the power model on simulated history, not the store"
    )
    p.add_argument("--only", nargs="+", choices=MODEL_NAMES, help="fit only these models")
    _add_common(p)
    p.set_defaults(func=cmd_models_train)

    p = models_sub.add_parser("evaluate", help="held-out scores of every predictor against its baselines")
    p.add_argument("--db", default=None, help="backtest power on this store's history (default: simulated)")
    p.add_argument("--cluster", default=None, help="with --db: only this cluster")
    _add_common(p)
    p.set_defaults(func=cmd_models_evaluate)

    p = models_sub.add_parser(
        "forecast", help="forecast power and GPU failure risk from the store, write them"
    )
    p.add_argument("--db", default=default_db, help=db_help)
    p.add_argument("--cluster", default=None)
    p.add_argument("--registry", default=None, help="saved models (default: $TWIN_REGISTRY or ./twin-models)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_forecast)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--traces", default=None, help="public traces folder (default: $TWIN_TRACES or ../shared/traces)"
    )
    p.add_argument("--registry", default=None, help="saved models (default: $TWIN_REGISTRY or ./twin-models)")
    p.add_argument("--hours", type=float, default=DEFAULT_SIM_HOURS, help="simulated power history, hours")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument(
        "--max-iter",
        type=_positive_int,
        default=None,
        help="boosting iterations of every model (default: each model's own; fewer is faster and rougher)",
    )
    p.add_argument("--json", action="store_true")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= 1")
    return value


def _boost(args: argparse.Namespace, **params: Any) -> dict[str, Any]:
    """Estimator parameters with `--max-iter` applied when given."""
    if getattr(args, "max_iter", None) is not None:
        params["max_iter"] = args.max_iter
    return params


def _run(body: Callable[[], int]) -> int:
    """Run a handler body, printing handled failures to stderr with their exit status."""
    from sqlalchemy.exc import SQLAlchemyError

    from models.errors import ModelInputError
    from twin.errors import TwinError

    try:
        return body()
    except _CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except (TwinError, ModelInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"error: database failure: {type(exc).__name__}: {exc.__cause__ or exc}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------------------------- traces


def cmd_traces_import(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    """`twin traces import KIND PATH [--db URL]`."""

    def body() -> int:
        from twin.traces import load_trace, write_trace

        frame = load_trace(args.kind, args.path)
        written = 0
        if args.db:
            store = _open_store(args.db, create=True)
            try:
                written = write_trace(store, args.kind, frame, imported_ts=time.time())
            finally:
                store.close()
        summary = {
            "kind": args.kind,
            "path": str(args.path),
            "rows": len(frame),
            "columns": list(frame.columns),
        }
        summary["stored"] = written
        if args.json:
            out.write(json.dumps(summary) + "\n")
        else:
            where = (
                f"; stored {written:,} records in {_redact(args.db)}"
                if args.db
                else " (give --db to store them)"
            )
            out.write(f"{args.kind}: {len(frame):,} rows, columns {', '.join(frame.columns)}{where}\n")
        return 0

    return _run(body)


# ------------------------------------------------------------------------------------------- helpers


def _redact(url: str) -> str:
    from twin.store.urls import redact_url

    return redact_url(url)


def _open_store(url: str, *, create: bool = False) -> Store:
    """The store at `url`; an SQLite file that does not exist is an error unless `create`."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from twin.store.repository import Store

    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if (
        not create
        and parsed is not None
        and parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
        and not Path(str(parsed.database)).exists()
    ):
        raise _CommandError(f"no database at {parsed.database} (give --db or set TWIN_DB)")
    return Store.open(url)


def _traces_dir(args: argparse.Namespace) -> Path:
    from twin.traces import default_traces_dir

    folder = Path(args.traces) if args.traces else default_traces_dir()
    if not folder.is_dir():
        raise _CommandError(f"public traces not found at {folder} (give --traces DIR or set TWIN_TRACES)")
    return folder


def _trace(args: argparse.Namespace, kind: str) -> pd.DataFrame:
    from twin.traces import load_trace, trace_path

    path = trace_path(kind, _traces_dir(args))
    if not path.is_file():
        raise _CommandError(f"the {kind} trace is not at {path} (give --traces DIR or set TWIN_TRACES)")
    return load_trace(kind, path)


def _registry(args: argparse.Namespace) -> ModelRegistry:
    from twin.model_registry import DEFAULT_REGISTRY_DIR, REGISTRY_ENV, ModelRegistry

    return ModelRegistry(args.registry or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY_DIR)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------ evaluate


def evaluate_power(
    telemetry: pd.DataFrame, physics: pd.DataFrame | None, source: str, params: dict[str, Any]
) -> dict[str, Any]:
    """The `power` section of `twin models evaluate`: node-level scores pooled over the horizons (the
    headline), the cluster level and each horizon."""
    import numpy as np

    from models.power import PowerForecaster, power_backtest

    scores, forecasts = power_backtest(telemetry, physics, forecaster=PowerForecaster(**params))
    ok = np.isfinite(forecasts["actual_w"]) & np.isfinite(forecasts["current_w"])
    if physics is not None:
        ok &= np.isfinite(forecasts["physics_w"])

    def pooled(level: str) -> dict[str, Any]:
        rows = forecasts[ok & (forecasts["level"] == level)]
        actual = rows["actual_w"].to_numpy()
        section: dict[str, Any] = {
            "mae_w": float(np.mean(np.abs(rows["p50_w"].to_numpy() - actual))),
            "persistence_mae_w": float(np.mean(np.abs(rows["current_w"].to_numpy() - actual))),
            "physics_mae_w": None
            if physics is None
            else float(np.mean(np.abs(rows["physics_w"].to_numpy() - actual))),
            "interval_coverage_p10_p90": float(
                np.mean((rows["p10_w"] <= actual) & (actual <= rows["p90_w"]))
            ),
            "n_test": len(rows),
        }
        baselines = [
            v for k, v in section.items() if k in ("persistence_mae_w", "physics_mae_w") and v is not None
        ]
        section["baseline_mae_w"] = min(baselines)
        return section

    node = pooled("node")
    return {
        "mae_w": node["mae_w"],
        "baseline_mae_w": node["baseline_mae_w"],
        "n_test": node["n_test"],
        "level": "node",
        "source": source,
        "persistence_mae_w": node["persistence_mae_w"],
        "physics_mae_w": node["physics_mae_w"],
        "interval_coverage_p10_p90": node["interval_coverage_p10_p90"],
        "cluster": pooled("cluster"),
        "by_horizon": [
            {
                "level": s.level,
                "horizon_s": s.horizon_s,
                "mae_w": s.mae_w,
                "persistence_mae_w": s.persistence_mae_w,
                "physics_mae_w": s.physics_mae_w,
                "interval_coverage_p10_p90": s.interval_coverage,
                "n_test": s.n_test,
            }
            for s in scores
        ],
    }


def _power_data(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """Telemetry (and physics) for the power model: the store's (`--db`) or simulated history."""
    if getattr(args, "simulated", False) or not args.db:
        from twin.predictors import simulate_history

        history = simulate_history(hours=args.hours, seed=args.seed)
        return history.telemetry, history.physics, f"simulated ({args.hours:g} h, seed {args.seed})"
    store = _open_store(args.db)
    try:
        telemetry = store.telemetry_frame(args.cluster)
    finally:
        store.close()
    if telemetry.empty:
        raise _CommandError(f"the store at {_redact(args.db)} holds no raw telemetry to learn power from")
    return telemetry, None, f"store {_redact(args.db)}"


def cmd_models_evaluate(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    """`twin models evaluate [--json]`: every predictor against its baselines on held-out data."""

    def body() -> int:
        from models.duration import alibaba_jobs, evaluate_jobs
        from models.failure import (
            TITAN_FEATURES,
            FailureRiskModel,
            evaluate_telemetry_risk,
            evaluate_titan,
            telemetry_risk_dataset,
        )
        from twin.predictors import simulate_risk_history

        pods, titan = _trace(args, "alibaba-2023"), _trace(args, "titan")
        telemetry, physics, source = _power_data(args)
        power = evaluate_power(telemetry, physics, source, _boost(args, random_state=args.seed))
        duration, job_failure = evaluate_jobs(alibaba_jobs(pods), random_state=args.seed, **_boost(args))
        failure = evaluate_titan(
            titan,
            model=FailureRiskModel(TITAN_FEATURES, **_boost(args, random_state=args.seed)),
            random_state=args.seed,
        )
        simulated = evaluate_telemetry_risk(
            telemetry_risk_dataset(simulate_risk_history(seed=args.seed)), model=_gpu_risk_model(args)
        )
        result = {
            "power": power,
            "duration": {
                "dataset": duration.dataset,
                "mae_log_s": duration.mae_log_s,
                "baseline_mae_log_s": duration.baseline_mae_log_s,
                "n_test": duration.n_test,
                "baseline": "median",
                "analytic_mae_log_s": duration.analytic_mae_log_s,
                "analytic_note": "the Alibaba trace carries no analytic (performance-model) estimate",
                "interval_coverage_p10_p90": duration.interval_coverage,
                "median_interval_coverage_p10_p90": duration.median_interval_coverage,
                "n_train": duration.n_train,
                "job_failure": job_failure.to_json(),
            },
            "failure": {
                "dataset": failure.dataset,
                "roc_auc": failure.roc_auc,
                "pr_auc": failure.pr_auc,
                "baseline_pr_auc": failure.baseline_pr_auc,
                "n_test": failure.n_test,
                "baseline_roc_auc": failure.baseline_roc_auc,
                "positives_test": failure.positives_test,
                "brier": failure.brier,
                "baseline_brier": failure.baseline_brier,
                "horizon_years": 1.0,
                "simulated_telemetry": simulated.to_json(),
            },
        }
        if args.json:
            out.write(json.dumps(_finite(result), allow_nan=False) + "\n")
        else:
            out.write(format_evaluation(result) + "\n")
        return 0

    return _run(body)


def format_evaluation(result: dict[str, Any]) -> str:
    """The human summary of `twin models evaluate`."""
    p, d, f = result["power"], result["duration"], result["failure"]
    jf, sim = d["job_failure"], f["simulated_telemetry"]
    lines = [
        f"power ({p['source']}, node level, 1 min/15 min/1 h pooled, {p['n_test']:,} test forecasts):",
        f"  MAE {p['mae_w']:.1f} W vs persistence {p['persistence_mae_w']:.1f} W"
        + (f", physics {p['physics_mae_w']:.1f} W" if p["physics_mae_w"] is not None else "")
        + f"; P10–P90 covers {p['interval_coverage_p10_p90']:.1%}",
        f"  cluster: MAE {p['cluster']['mae_w']:.0f} W "
        f"vs best baseline {p['cluster']['baseline_mae_w']:.0f} W",
        f"duration ({d['dataset']}, {d['n_test']:,} test jobs): MAE {d['mae_log_s']:.3f} ln(s) vs median "
        f"{d['baseline_mae_log_s']:.3f}; P10–P90 covers {d['interval_coverage_p10_p90']:.1%} "
        f"(no analytic estimate in this trace)",
        f"job failure ({jf['dataset']}): ROC-AUC {jf['roc_auc']:.3f}, PR-AUC {jf['pr_auc']:.3f} vs base rate "
        f"{jf['baseline_pr_auc']:.3f}",
        f"GPU failure within 1 year ({f['dataset']}, {f['n_test']:,} test landmarks): "
        f"ROC-AUC {f['roc_auc']:.3f}, PR-AUC {f['pr_auc']:.3f} vs base rate {f['baseline_pr_auc']:.3f}; "
        f"Brier {f['brier']:.4f} vs {f['baseline_brier']:.4f}",
        f"GPU failure within 1 h (simulated telemetry, {sim['n_test']:,} test landmarks): ROC-AUC "
        f"{sim['roc_auc']:.3f}, PR-AUC {sim['pr_auc']:.3f} vs base rate {sim['baseline_pr_auc']:.4f}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- train


def cmd_models_train(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    """`twin models train`: score each predictor on its held-out split, refit it on all data, save it.

    A predictor whose data is missing or too short is reported and skipped; the others still train
    (exit status 2 when any was skipped).
    """
    from models.errors import ModelInputError
    from twin.errors import TwinError

    def body() -> int:
        wanted = set(args.only or MODEL_NAMES)
        registry = _registry(args)
        cards, failed = [], {}
        for names, trainer in (
            ((POWER_MODEL,), _train_power),
            ((DURATION_MODEL, JOB_FAILURE_MODEL), _train_jobs),
            ((GPU_FAILURE_MODEL,), _train_titan),
            ((GPU_RISK_MODEL,), _train_gpu_risk),
        ):
            if not wanted.intersection(names):
                continue
            try:
                cards += trainer(args, registry, wanted)
            except (_CommandError, TwinError, ModelInputError) as exc:
                failed[", ".join(n for n in names if n in wanted)] = str(exc)
        if args.json:
            result = {"saved": [_finite(c.to_json()) for c in cards], "failed": failed}
            out.write(json.dumps(result) + "\n")
        else:
            for card in cards:
                out.write(f"saved {card.version} → {registry.root / card.name / card.version}\n")
        for which, message in failed.items():
            print(f"error: not trained: {which}: {message}", file=sys.stderr)
        return 2 if failed else 0

    return _run(body)


def _train_power(args: argparse.Namespace, registry: ModelRegistry, wanted: set[str]) -> list[Any]:
    from models.errors import InsufficientHistoryError
    from models.power import PowerForecaster, power_backtest

    telemetry, physics, source = _power_data(args)
    metrics: dict[str, Any] = {}
    try:
        scores, _ = power_backtest(
            telemetry, physics, forecaster=PowerForecaster(**_boost(args, random_state=args.seed))
        )
        metrics = {f"{s.level}@{s.horizon_s:g}s": s.mae_w for s in scores}
        metrics |= {f"{s.level}@{s.horizon_s:g}s_baseline": s.baseline_mae_w for s in scores}
    except InsufficientHistoryError as exc:
        metrics = {"note": f"no held-out score: {exc}"}
    model = PowerForecaster(**_boost(args, random_state=args.seed)).fit(telemetry, physics=physics)
    ts = telemetry["ts"]
    card = registry.save(
        POWER_MODEL,
        model,
        trained_at_ts=time.time(),
        features=model.feature_names_,
        data_range={
            "source": source,
            "since_ts": float(ts.min()),
            "until_ts": float(ts.max()),
            "rows": len(telemetry),
        },
        metrics=metrics,
    )
    return [card]


def _train_jobs(args: argparse.Namespace, registry: ModelRegistry, wanted: set[str]) -> list[Any]:
    from models.duration import JobDurationModel, alibaba_jobs, evaluate_jobs, job_failure_model

    jobs = alibaba_jobs(_trace(args, "alibaba-2023"))
    duration, failure = evaluate_jobs(jobs, random_state=args.seed, **_boost(args))
    data_range = {
        "dataset": "alibaba-2023",
        "jobs": len(jobs),
        "creation_time_min_s": float(jobs["creation_time"].min()),
        "creation_time_max_s": float(jobs["creation_time"].max()),
    }
    cards = []
    if DURATION_MODEL in wanted:
        model = JobDurationModel(**_boost(args, random_state=args.seed)).fit(
            jobs, jobs["duration_s"].to_numpy()
        )
        cards.append(
            registry.save(
                DURATION_MODEL,
                model,
                trained_at_ts=time.time(),
                features=[str(f) for f in model.feature_names_in_],
                data_range=data_range,
                metrics=duration.to_json(),
            )
        )
    if JOB_FAILURE_MODEL in wanted:
        classifier = job_failure_model(args.seed).set_params(**_boost(args))
        classifier.fit(jobs, jobs["failed"].to_numpy())
        cards.append(
            registry.save(
                JOB_FAILURE_MODEL,
                classifier,
                trained_at_ts=time.time(),
                features=[str(f) for f in classifier.feature_names_in_],
                data_range=data_range,
                metrics=failure.to_json(),
            )
        )
    return cards


def _train_titan(args: argparse.Namespace, registry: ModelRegistry, wanted: set[str]) -> list[Any]:
    from models.failure import TITAN_FEATURES, FailureRiskModel, evaluate_titan, titan_landmarks

    gpus = _trace(args, "titan")
    score = evaluate_titan(
        gpus,
        model=FailureRiskModel(TITAN_FEATURES, **_boost(args, random_state=args.seed)),
        random_state=args.seed,
    )
    rows = titan_landmarks(gpus)
    model = FailureRiskModel(TITAN_FEATURES, **_boost(args, random_state=args.seed))
    model.fit(rows, rows["label"].to_numpy(), groups=rows["SN"].to_numpy())
    card = registry.save(
        GPU_FAILURE_MODEL,
        model,
        trained_at_ts=time.time(),
        features=TITAN_FEATURES,
        data_range={"dataset": "titan", "gpus": len(gpus), "landmarks": len(rows), "horizon_years": 1.0},
        metrics=score.to_json(),
    )
    return [card]


def gpu_risk_model(seed: int, max_iter: int | None = None) -> Any:
    """An unfitted GPU failure-risk model with the settings tuned for simulated telemetry."""
    from models.failure import (
        SIMULATED_RISK_LEARNING_RATE,
        SIMULATED_RISK_MAX_ITER,
        SIMULATED_RISK_MIN_SAMPLES_LEAF,
        TELEMETRY_RISK_FEATURES,
        FailureRiskModel,
    )

    return FailureRiskModel(
        TELEMETRY_RISK_FEATURES,
        max_iter=SIMULATED_RISK_MAX_ITER if max_iter is None else max_iter,
        learning_rate=SIMULATED_RISK_LEARNING_RATE,
        min_samples_leaf=SIMULATED_RISK_MIN_SAMPLES_LEAF,
        random_state=seed,
    )


def _gpu_risk_model(args: argparse.Namespace) -> Any:
    return gpu_risk_model(args.seed, getattr(args, "max_iter", None))


def _train_gpu_risk(args: argparse.Namespace, registry: ModelRegistry, wanted: set[str]) -> list[Any]:
    from models.failure import evaluate_telemetry_risk, telemetry_risk_dataset
    from twin.predictors import simulate_risk_history

    rows = telemetry_risk_dataset(simulate_risk_history(seed=args.seed))
    score = evaluate_telemetry_risk(rows, model=_gpu_risk_model(args))
    max_iter = getattr(args, "max_iter", None)
    _, card = fit_gpu_risk(rows, registry, seed=args.seed, max_iter=max_iter, metrics=score.to_json())
    return [card]


def fit_gpu_risk(
    rows: Any,
    registry: ModelRegistry,
    *,
    seed: int,
    max_iter: int | None = None,
    metrics: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Fit the GPU failure-risk model on `telemetry_risk_dataset` rows (grouped by GPU) and save it with
    its window settings; returns (model, card)."""
    from models.failure import RISK_BUCKET_S, RISK_HORIZON_S, RISK_WINDOW_S, TELEMETRY_RISK_FEATURES

    model = gpu_risk_model(seed, max_iter)
    gpu = rows["cluster"].astype(str) + "/" + rows["node"].astype(str) + "/" + rows["gpu_index"].astype(str)
    model.fit(rows, rows["label"].to_numpy(), groups=gpu.to_numpy())
    card = registry.save(
        GPU_RISK_MODEL,
        model,
        trained_at_ts=time.time(),
        features=TELEMETRY_RISK_FEATURES,
        data_range={
            "source": f"simulated (seed {seed})",
            "landmarks": len(rows),
            "horizon_s": RISK_HORIZON_S,
            "window_s": RISK_WINDOW_S,
            "bucket_s": RISK_BUCKET_S,
        },
        metrics=metrics or {},
    )
    return model, card


# ------------------------------------------------------------------------------------------ forecast


def cmd_models_forecast(args: argparse.Namespace, out: TextIO, _stdin: TextIO) -> int:
    """`twin models forecast`: power (and GPU risk) forecasts from the store's newest telemetry."""

    def body() -> int:
        from twin.forecasting import forecast_from_store, load_predictors

        predictors = load_predictors(_registry(args).root)
        if predictors.risk is None:
            print(
                "note: no GPU failure-risk forecasts: no usable gpu-risk model in the registry",
                file=sys.stderr,
            )
        store = _open_store(args.db)
        try:
            made = forecast_from_store(store, args.cluster, predictors)
        finally:
            store.close()
        if made.made_at_ts is None:
            raise _CommandError(f"the store at {_redact(args.db)} holds no raw telemetry to forecast from")
        now_ts, written = made.made_at_ts, made.written
        if args.json:
            out.write(json.dumps({"made_at_ts": now_ts, "written": written}) + "\n")
        else:
            out.write(
                f"wrote {written['power']} power and {written['failure']} GPU failure-risk forecasts "
                f"made at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now_ts))}\n"
            )
        return 0

    return _run(body)
