"""The `twin` command line. Each subcommand imports what it needs only when it runs (cold start matters)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from twin.errors import TwinError

GIB = 2**30
# The README's example: Llama 3 70B pre-training on 1,024 H100s, 15T tokens (Llama 3 report scale).
EXAMPLE_SCENARIO: dict[str, Any] = {
    "model": {"preset": "llama3-70b"},
    "cluster": {
        "gpu": "h100-sxm",
        "gpus": 1024,
        "gpus_per_node": 8,
        "price_per_gpu_hour": 2.5,
        "currency": "EUR",
        "pue": 1.2,
    },
    "layout": {
        "tp": 8,
        "pp": 4,
        "cp": 1,
        "dp": None,
        "micro_batch": 1,
        "virtual_stages": 1,
        "zero_stage": 1,
        "offload": "none",
        "recompute": "selective",
        "sequence_parallel": True,
        "precision": "bf16",
    },
    "training": {"seq_len": 8192, "global_batch": 1024, "tokens": 1.5e13},
}

# Flag shortcuts: flag name → (section, key, type).
SHORTCUTS: dict[str, tuple[str, str, type]] = {
    "model": ("model", "preset", str),
    "gpu": ("cluster", "gpu", str),
    "gpus": ("cluster", "gpus", int),
    "gpus_per_node": ("cluster", "gpus_per_node", int),
    "price_per_gpu_hour": ("cluster", "price_per_gpu_hour", float),
    "power_cap_w": ("cluster", "power_cap_w", float),
    "tp": ("layout", "tp", int),
    "pp": ("layout", "pp", int),
    "cp": ("layout", "cp", int),
    "dp": ("layout", "dp", int),
    "micro_batch": ("layout", "micro_batch", int),
    "virtual_stages": ("layout", "virtual_stages", int),
    "zero_stage": ("layout", "zero_stage", int),
    "offload": ("layout", "offload", str),
    "recompute": ("layout", "recompute", str),
    "precision": ("layout", "precision", str),
    "seq_len": ("training", "seq_len", int),
    "global_batch": ("training", "global_batch", int),
    "tokens": ("training", "tokens", float),
}


def _add_shortcuts(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("shortcuts (override the FILE's fields, or build a scenario alone)")
    for name, (section, key, kind) in SHORTCUTS.items():
        group.add_argument(
            f"--{name.replace('_', '-')}", dest=f"set_{name}", type=kind, help=f"{section}.{key}"
        )


def _apply_shortcuts(scenario: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in scenario.items()}
    for name, (section, key, _) in SHORTCUTS.items():
        value = getattr(args, f"set_{name}")
        if value is None:
            continue
        if section == "model":  # a model flag replaces the FILE's model
            out["model"] = {"preset": value}
            continue
        target = out.setdefault(section, {})
        if not isinstance(target, dict):
            continue  # parse() reports "section(=...) must be an object"
        target[key] = value
    return out


def read_scenarios(source: str, stdin: TextIO) -> Iterator[dict[str, Any] | TwinError]:
    """Scenarios from `source` ('-' for stdin): one object, a JSON array, JSON Lines, or a TOML file.

    Yields the scenario, or a `TwinError` in its place when a line cannot be read (so others still run).
    """
    from twin.errors import ScenarioError

    if source == "-":
        text = stdin.read()
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            yield ScenarioError(f"cannot read {source}: {exc.strerror}")
            return
        if path.suffix == ".toml":
            import tomllib

            try:
                yield tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                yield ScenarioError(f"{source}: invalid TOML: {exc}")
            return
    stripped = text.strip()
    if not stripped:
        yield ScenarioError("no scenario given (empty input)")
        return
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError:
        whole = None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                yield ScenarioError(f"line {number}: invalid JSON: {exc.msg}")
        return
    if isinstance(whole, list):
        yield from whole
    else:
        yield whole


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never (failures outpace progress)"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.3g} s"


def format_result(result: dict[str, Any]) -> str:
    """A readable summary of one what-if result."""
    r = result["resolved"]
    lay = r["layout"]
    mem = result["memory"]
    lines = [
        f"{r['model']['name']} ({r['model']['params'] / 1e9:.1f}B) on {r['gpus']} × {r['gpu']}  "
        f"TP{lay['tp']} PP{lay['pp']} CP{lay['cp']} DP{lay['dp']} mb{lay['micro_batch']} "
        f"ZeRO-{lay['zero_stage']} offload={lay['offload']} recompute={lay['recompute']} {lay['precision']}",
        f"  fits: {'yes' if result['fits'] else 'NO — ' + str(result['reason'])}",
        "  memory/GPU: "
        + ", ".join(
            f"{k.removesuffix('_bytes')} {mem[k] / GIB:.1f}"
            for k in ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "other_bytes")
        )
        + f" = {mem['total_bytes'] / GIB:.1f} GiB of {mem['capacity_bytes'] / GIB:.1f} GiB usable",
        f"  step: {result['step_time_s']:.3f} s  ({result['tokens_per_s']:,.0f} tokens/s, "
        f"{result['model_tflops_per_gpu']:.0f} TFLOP/s/GPU, MFU {result['mfu']:.1%})",
        "  breakdown: "
        + ", ".join(f"{k.removesuffix('_s')} {v:.3f}" for k, v in result["breakdown_s"].items() if v > 0),
        f"  power: {result['power_per_gpu_w']:.0f} W/GPU, "
        f"cluster {result['cluster_power_w'] / 1e3:,.0f} kW (IT)",
    ]
    if "time_to_train_s" in result:
        lines.append(
            f"  to train: {_fmt_duration(result['time_to_train_s'])}, {result['energy_kwh']:,.0f} kWh, "
            f"{result['cost']:,.0f} {result['currency']}, "
            f"{result['expected_interruptions']:.1f} interruptions, goodput {result['goodput']:.1%}"
        )
    return "\n".join(lines)


def cmd_whatif(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from twin.scenario import evaluate

    sources: Sequence[dict[str, Any] | TwinError | Any]
    if args.file is None:
        if not any(getattr(args, f"set_{n}") is not None for n in SHORTCUTS):
            print("twin whatif: give FILE ('-' for stdin) or shortcut flags (see --help)", file=sys.stderr)
            return 2
        sources = [{}]
    else:
        sources = list(read_scenarios(args.file, stdin))
    failures = 0
    for item in sources:
        if isinstance(item, TwinError):
            result: dict[str, Any] = {"error": str(item)}
        elif not isinstance(item, dict):
            result = {"error": f"a scenario must be an object, got {type(item).__name__}"}
        else:
            try:
                result = evaluate(_apply_shortcuts(item, args))
            except TwinError as exc:
                result = {"error": str(exc)}
        failures += "error" in result
        if args.json:
            out.write(json.dumps(_json_safe(result), allow_nan=False) + "\n")
        else:
            out.write(("error: " + result["error"] if "error" in result else format_result(result)) + "\n")
    return 1 if failures and failures == len(sources) else 0


def cmd_sweep(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from twin.layout_sweep import sweep
    from twin.scenario import parse

    items = list(read_scenarios(args.file, stdin))
    if len(items) != 1 or not isinstance(items[0], dict):
        first = items[0] if items else None
        message = str(first) if isinstance(first, TwinError) else "twin sweep takes exactly one scenario"
        print(f"error: {message}", file=sys.stderr)
        return 2
    try:
        result = sweep(parse(_apply_shortcuts(items[0], args)), rank_by=args.rank_by)
    except TwinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = result.rows(top=args.top, fits_only=args.fits_only)
    if args.json:
        summary = {
            "enumerated": result.enumerated,
            "valid": len(result.arrays.batch),
            "fitting": int(result.arrays.fits.sum()),
            "rank_by": args.rank_by,
        }
        out.write(json.dumps(_json_safe({"summary": summary, "layouts": rows})) + "\n")
        return 0
    out.write(
        f"{result.enumerated:,} layouts enumerated, {len(result.arrays.batch):,} valid, "
        f"{int(result.arrays.fits.sum()):,} fit; ranked by {args.rank_by} (* = Pareto time/cost)\n"
    )
    out.write(
        f"{'#':>3} {'TP':>3} {'PP':>3} {'CP':>3} {'DP':>5} {'mb':>3} {'v':>2} {'Z':>2} {'offload':>9} "
        f"{'recomp':>9} {'fits':>4} {'GiB':>6} {'step s':>8} {'MFU':>6} {'train':>12} {'cost':>12}\n"
    )
    for row in rows:
        lay = row["layout"]
        train = _fmt_duration(row["time_to_train_s"]) if "time_to_train_s" in row else "-"
        cost = f"{row['cost']:,.0f}" if "cost" in row else "-"
        out.write(
            f"{row['rank']:>3} {lay['tp']:>3} {lay['pp']:>3} {lay['cp']:>3} {lay['dp']:>5} "
            f"{lay['micro_batch']:>3} {lay['virtual_stages']:>2} {lay['zero_stage']:>2} {lay['offload']:>9} "
            f"{lay['recompute']:>9} {'yes' if row['fits'] else 'no':>4} "
            f"{row['memory_total_bytes'] / GIB:>6.1f} "
            f"{row['step_time_s']:>8.3f} {row['mfu']:>6.1%} {train:>12} {cost:>12}"
            f"{' *' if row['pareto_time_cost'] else ''}\n"
        )
    return 0


def cmd_presets(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from twin.perf.gpu_presets import GPU_PRESETS
    from twin.perf.model_presets import MODEL_PRESETS

    if args.json:
        gpus = {
            name: {
                "bf16_tflops": g.bf16_tflops,
                "fp8_tflops": g.fp8_tflops,
                "hbm_bytes": g.hbm_bytes,
                "hbm_bandwidth_bytes_per_s": g.hbm_bandwidth_bytes_per_s,
                "tdp_w": g.tdp_w,
                "source": g.source,
            }
            for name, g in GPU_PRESETS.items()
        }
        models = {
            name: {"params": m.params, "layers": m.layers, "hidden": m.hidden, "source": m.source}
            for name, m in MODEL_PRESETS.items()
        }
        out.write(json.dumps({"gpus": gpus, "models": models}) + "\n")
        return 0
    out.write(f"{'GPU':<16} {'bf16 TF/s':>9} {'fp8 TF/s':>9} {'HBM GiB':>8} {'TB/s':>5} {'TDP W':>6}\n")
    for name, g in GPU_PRESETS.items():
        fp8 = f"{g.fp8_tflops:.0f}" if g.fp8_tflops else "-"
        out.write(
            f"{name:<16} {g.bf16_tflops:>9.0f} {fp8:>9} {g.hbm_bytes / GIB:>8.0f} "
            f"{g.hbm_bandwidth_bytes_per_s / 1e12:>5.2f} {g.tdp_w:>6.0f}\n"
        )
    out.write(
        f"\n{'model':<20} {'params':>8} {'layers':>6} {'hidden':>6} {'heads':>5} {'kv':>4} {'vocab':>7}\n"
    )
    for name, m in MODEL_PRESETS.items():
        out.write(
            f"{name:<20} {m.params / 1e9:>7.1f}B {m.layers:>6} {m.hidden:>6} {m.heads:>5} "
            f"{m.kv_heads:>4} {m.vocab:>7}\n"
        )
    return 0


def cmd_validate(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from dataclasses import asdict

    from twin.validate import default_data_dir, load_all, run, summarise

    data_dir = Path(args.data) if args.data else default_data_dir()
    if not data_dir.is_dir():
        print(f"error: calibration data not found at {data_dir} (use --data DIR)", file=sys.stderr)
        return 2
    results = run(load_all(data_dir))
    summary = summarise(results)
    if args.json:
        out.write(
            json.dumps(
                {
                    "summary": [asdict(s) for s in summary],
                    "rows": [
                        {
                            "dataset": r.case.dataset,
                            "case": r.case.name,
                            "split": r.case.split,
                            "measured_step_s": r.case.measured_step_s,
                            "predicted_step_s": r.predicted_step_s,
                            "step_error_pct": r.step_error_pct,
                            "measured_memory_bytes": r.case.measured_memory_bytes,
                            "predicted_memory_bytes": r.predicted_memory_bytes,
                            "memory_error_pct": r.memory_error_pct,
                        }
                        for r in results
                    ],
                }
            )
            + "\n"
        )
        return 0
    if args.rows:
        out.write(f"{'dataset':<13} {'split':<6} {'case':<52} {'meas s':>8} {'pred s':>8} {'err %':>7}\n")
        for r in results:
            out.write(
                f"{r.case.dataset:<13} {r.case.split:<6} {r.case.name:<52} {r.case.measured_step_s:>8.3f} "
                f"{r.predicted_step_s:>8.3f} {r.step_error_pct:>+7.1f}\n"
            )
        out.write("\n")
    out.write(
        f"{'dataset':<13} {'split':<7} {'metric':<12} {'n':>5} {'MAPE %':>7} {'mean %':>7} {'max %':>7}\n"
    )
    for s in summary:
        out.write(
            f"{s.dataset:<13} {s.split:<7} {s.metric:<12} {s.n:>5} {s.mape_pct:>7.1f} "
            f"{s.mean_error_pct:>+7.1f} {s.max_abs_error_pct:>7.1f}\n"
        )
    return 0


def cmd_seed_report(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from twin.seed_report_twin import render_with_twin, seed_report_json

    if args.json:
        out.write(json.dumps(_json_safe(seed_report_json())) + "\n")
    else:
        out.write(render_with_twin() + "\n")
    return 0


def cmd_example(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    """The README's what-if example end to end, and the best layouts for it (no services needed)."""
    from twin.layout_sweep import sweep
    from twin.scenario import evaluate, parse

    out.write("gpu-twin example — what-if: Llama 3 70B, 15T tokens, 1,024 × H100 (TP8 PP4, ZeRO-1)\n\n")
    out.write(format_result(evaluate(EXAMPLE_SCENARIO)) + "\n\n")
    result = sweep(parse(EXAMPLE_SCENARIO), rank_by="time")
    out.write(
        f"Layout sweep: {result.enumerated:,} layouts, {len(result.arrays.batch):,} valid, "
        f"{int(result.arrays.fits.sum()):,} fit. Fastest five:\n"
    )
    for row in result.rows(top=5, fits_only=True):
        lay = row["layout"]
        out.write(
            f"  TP{lay['tp']} PP{lay['pp']} CP{lay['cp']} DP{lay['dp']} mb{lay['micro_batch']} "
            f"v{lay['virtual_stages']} ZeRO-{lay['zero_stage']} recompute={lay['recompute']}: "
            f"{_fmt_duration(row['time_to_train_s'])}, {row['cost']:,.0f} EUR, MFU {row['mfu']:.1%}\n"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twin", description="gpu-twin: a digital twin of GPU training clusters"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("whatif", help="evaluate scenarios (DESIGN §3): memory, step time, power, cost")
    p.add_argument(
        "file", nargs="?", help="scenario file: one object, a JSON array, JSON Lines or TOML; - = stdin"
    )
    p.add_argument("--json", action="store_true", help="one JSON result per line, in input order")
    _add_shortcuts(p)
    p.set_defaults(func=cmd_whatif)

    p = sub.add_parser("sweep", help="rank every valid layout for a scenario's model, cluster and training")
    p.add_argument("file", help="one scenario (its layout is ignored except for precision); - = stdin")
    p.add_argument("--rank-by", choices=("time", "cost", "energy"), default="time")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--fits-only", action="store_true")
    p.add_argument("--json", action="store_true")
    _add_shortcuts(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("presets", help="list GPU and model presets with their key numbers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("validate", help="compare predictions with measured runs (../shared/calibration)")
    p.add_argument("--data", help="calibration data folder (default: ../shared/calibration)")
    p.add_argument("--rows", action="store_true", help="print every case, not only the summary")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("seed-report", help="reproduce the published worked example of training costs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_seed_report)

    p = sub.add_parser("example", help="the what-if example and its layout sweep, printed")
    p.set_defaults(func=cmd_example)

    from twin import cli_advise, cli_dashboard, cli_demo, cli_models, cli_sim, cli_store, cli_telemetry

    cli_telemetry.register(sub)
    cli_store.register(sub)
    cli_sim.register(sub)
    cli_advise.register(sub)
    cli_demo.register(sub)
    cli_dashboard.register(sub)
    cli_models.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args, out or sys.stdout, stdin or sys.stdin)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    raise SystemExit(main())
