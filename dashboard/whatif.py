"""What-if page logic: form inputs ↔ scenario (DESIGN §3), evaluation (optionally calibrated to a live job),
starting points (README example, the published worked example, a live job) and result tables.

No Streamlit here: the page keeps a `WhatIfInputs` per scenario in session state and calls these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dashboard.formatting import (
    fmt_count,
    fmt_duration,
    fmt_energy_kwh,
    fmt_gib,
    fmt_money,
    fmt_pct,
    fmt_power,
    fmt_step_time,
)
from twin.cli import EXAMPLE_SCENARIO
from twin.errors import TwinError
from twin.perf.model_presets import MODEL_PRESETS
from twin.scenario import MODEL_SHAPE_KEYS, parse, result_json

SECONDS_PER_DAY: Final = 86_400.0
AUTO_DP: Final = 0  # the form's DP value meaning "null: GPUs / (TP·PP·CP)"
README_EXAMPLE: Final = "README example: Llama 3 70B, 15T tokens, 1,024 × H100"
WORKED_EXAMPLE_PREFIX: Final = "Worked example: "
LIVE_JOB_PREFIX: Final = "Live job: "


@dataclass(frozen=True, slots=True)
class WhatIfInputs:
    """Every input of the what-if form (DESIGN §3 fields; `model_preset=None` means the explicit shape)."""

    model_preset: str | None
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn_hidden: int
    vocab: int
    gated_mlp: bool
    gpu: str
    gpus: int
    gpus_per_node: int
    price_per_gpu_hour: float
    currency: str
    pue: float
    tp: int
    pp: int
    cp: int
    dp: int  # AUTO_DP: fill the GPUs
    micro_batch: int
    virtual_stages: int
    zero_stage: int
    offload: str
    recompute: str
    sequence_parallel: bool
    precision: str
    seq_len: int
    global_batch: int
    tokens: float  # 0: no token target (no time/energy/cost)

    def to_scenario(self) -> dict[str, Any]:
        """The scenario mapping of DESIGN §3."""
        model: dict[str, Any] = (
            {"preset": self.model_preset}
            if self.model_preset is not None
            else {"name": "custom", **{k: getattr(self, k) for k in MODEL_SHAPE_KEYS}}
        )
        training: dict[str, Any] = {"seq_len": self.seq_len, "global_batch": self.global_batch}
        if self.tokens > 0:
            training["tokens"] = self.tokens
        return {
            "model": model,
            "cluster": {
                "gpu": self.gpu,
                "gpus": self.gpus,
                "gpus_per_node": self.gpus_per_node,
                "price_per_gpu_hour": self.price_per_gpu_hour,
                "currency": self.currency,
                "pue": self.pue,
            },
            "layout": {
                "tp": self.tp,
                "pp": self.pp,
                "cp": self.cp,
                "dp": None if self.dp == AUTO_DP else self.dp,
                "micro_batch": self.micro_batch,
                "virtual_stages": self.virtual_stages,
                "zero_stage": self.zero_stage,
                "offload": self.offload,
                "recompute": self.recompute,
                "sequence_parallel": self.sequence_parallel,
                "precision": self.precision,
            },
            "training": training,
        }

    @classmethod
    def from_scenario(cls, scenario: Mapping[str, Any]) -> WhatIfInputs:
        """The form for a scenario (parsed first, so defaults and a preset's shape are filled in)."""
        parsed = parse(scenario)
        raw_model = scenario["model"]
        preset = None
        if isinstance(raw_model, str):
            preset = raw_model
        elif (
            isinstance(raw_model, Mapping) and "preset" in raw_model and set(raw_model) <= {"preset", "name"}
        ):
            preset = str(raw_model["preset"])
        m, c, lay, t = parsed.model, parsed.cluster, parsed.layout, parsed.training
        raw_dp = (scenario.get("layout") or {}).get("dp")
        return cls(
            model_preset=preset,
            layers=m.layers,
            hidden=m.hidden,
            heads=m.heads,
            kv_heads=m.kv_heads,
            ffn_hidden=m.ffn_hidden,
            vocab=m.vocab,
            gated_mlp=m.gated_mlp,
            gpu=scenario["cluster"]["gpu"],
            gpus=c.gpus,
            gpus_per_node=c.gpus_per_node,
            price_per_gpu_hour=c.price_per_gpu_hour,
            currency=c.currency,
            pue=c.pue,
            tp=lay.tp,
            pp=lay.pp,
            cp=lay.cp,
            dp=AUTO_DP if raw_dp is None else lay.dp,
            micro_batch=lay.micro_batch,
            virtual_stages=lay.virtual_stages,
            zero_stage=lay.zero_stage,
            offload=lay.offload.value,
            recompute=lay.recompute.value,
            sequence_parallel=lay.sequence_parallel,
            precision=lay.precision.value,
            seq_len=t.seq_len,
            global_batch=t.global_batch,
            tokens=0.0 if t.tokens is None else float(t.tokens),
        )

    def replace(self, **changes: Any) -> WhatIfInputs:
        return dataclasses.replace(self, **changes)


FIELDS: Final = tuple(f.name for f in dataclasses.fields(WhatIfInputs))


@dataclass(frozen=True, slots=True)
class Outcome:
    """A what-if evaluated: the contract's result, or the scenario error that prevented it."""

    result: dict[str, Any] | None
    error: str | None = None
    efficiency_scale: float = 1.0


def evaluate_inputs(inputs: WhatIfInputs, efficiency_scale: float = 1.0) -> Outcome:
    """Evaluate the form's scenario; `efficiency_scale` ≠ 1 is a live job's calibration
    (`twin.calibration_online`: the achieved-GEMM-efficiency factor that reproduces its step times)."""
    try:
        from twin.perf.estimate import estimate

        parsed = parse(inputs.to_scenario())
        est = estimate(parsed.model, parsed.cluster, parsed.layout, parsed.training, efficiency_scale)
        return Outcome(result_json(parsed, est), efficiency_scale=efficiency_scale)
    except TwinError as exc:
        return Outcome(None, str(exc), efficiency_scale)


def readme_example() -> WhatIfInputs:
    return WhatIfInputs.from_scenario(EXAMPLE_SCENARIO)


# --- the published worked example (twin.seed_report) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkedExample:
    """One row of the published worked example and the twin's own fastest fitting V100 setup for it."""

    label: str
    published: Mapping[str, Any]  # twin.seed_report.WorkedExampleRow.to_dict()
    twin: Mapping[str, Any]  # twin.seed_report_twin.twin_estimate()
    inputs: WhatIfInputs


def worked_examples() -> list[WorkedExample]:
    """The three rows of `twin seed-report`: GPT-3.5 175B, GPT-3.5 Turbo 20B and Llama 2 7B on V100."""
    from twin import seed_report as published
    from twin.seed_report_twin import GPUS_PER_NODE, ROWS, twin_estimate

    out = []
    for twin_row, row in zip(ROWS, published.worked_example(), strict=True):
        est = twin_estimate(twin_row, row.gpus_practical)
        scenario = {
            "model": {"preset": twin_row.preset},
            "cluster": {
                "gpu": "v100-sxm2-32gb",
                "gpus": est["gpus"],
                "gpus_per_node": GPUS_PER_NODE,
                "price_per_gpu_hour": published.PRICE_PER_V100_HOUR_EUR,
                "currency": published.CURRENCY,
            },
            "layout": {**est["layout"], "dp": None},
            "training": {
                "seq_len": twin_row.seq_len,
                "global_batch": twin_row.global_batch,
                "tokens": twin_row.tokens,
            },
        }
        out.append(
            WorkedExample(
                label=f"{WORKED_EXAMPLE_PREFIX}{twin_row.model} on V100",
                published=row.to_dict(),
                twin=est,
                inputs=WhatIfInputs.from_scenario(scenario),
            )
        )
    return out


def worked_example_table(example: WorkedExample, result: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """Published figures next to the twin's estimate of the form's current scenario."""
    p = example.published
    currency = str(p.get("currency", "EUR"))
    twin: Mapping[str, Any] = result or {}
    resolved = twin.get("resolved", {})
    rows = [
        ("GPUs (V100-32GB)", fmt_count(p["gpus_practical"]), fmt_count(resolved.get("gpus"))),
        (
            "duration",
            f"{p['duration_days']:,.1f} days",
            fmt_duration(twin.get("time_to_train_s")),
        ),
        ("power per GPU", fmt_power(p["power_per_gpu_w"]), fmt_power(twin.get("power_per_gpu_w"))),
        ("energy", fmt_energy_kwh(p["energy_kwh"]), fmt_energy_kwh(twin.get("energy_kwh"))),
        (
            "cost",
            fmt_money(p["cost_total"], currency),
            fmt_money(twin.get("cost"), twin.get("currency", currency)),
        ),
        ("MFU", "100 % (peak assumed)", fmt_pct(twin.get("mfu"))),
    ]
    return [{"quantity": q, "published example": a, "twin (this form)": b} for q, a, b in rows]


# --- start from a live job ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveStart:
    """A live job turned into form inputs, with its calibration (or why it could not be calibrated)."""

    job_id: str
    inputs: WhatIfInputs
    efficiency_scale: float
    observed_step_time_s: float | None
    predicted_step_time_s: float | None
    calibrated_step_time_s: float | None
    notes: tuple[str, ...]


def live_start(
    job: Mapping[str, Any],
    step_times_s: Sequence[float],
    base: WhatIfInputs,
    spec: Mapping[str, Any] | None,
    cluster: str,
) -> LiveStart:
    """Fill the form from a running job: its model and layout (job events), its GPUs (nodes × GPUs per
    node), the hardware and training shape of the `twin sim` spec when given (else the form's), and the
    efficiency scale `twin.calibration_online` learns from its step times. Raises `TwinError`."""
    from twin.calibration_online import Calibrator, PerfCurve, job_model_spec

    job_id = str(job["job_id"])
    notes: list[str] = []
    model = job_model_spec(job.get("model") or {})
    spec_cluster: Mapping[str, Any] = (spec or {}).get("cluster", {})
    spec_job = next((j for j in (spec or {}).get("jobs", []) if j.get("id") == job_id), None)
    gpus_per_node = int(spec_cluster.get("gpus_per_node", base.gpus_per_node))
    gpu = str(spec_cluster.get("gpu", base.gpu))
    if not spec_cluster:
        notes.append(f"telemetry does not name the GPU model: using the form's {gpu}")
    nodes = len(job.get("nodes") or ())
    layout = dict(job.get("layout") or {})
    gpus = nodes * gpus_per_node if nodes else base.gpus
    training = (spec_job or {}).get("training") or {}
    if not training:
        notes.append("job events carry no training shape: seq_len, global batch and tokens are the form's")
    inputs = base.replace(
        model_preset=model.name if model.name in MODEL_PRESETS else None,
        layers=model.layers,
        hidden=model.hidden,
        heads=model.heads,
        kv_heads=model.kv_heads,
        ffn_hidden=model.ffn_hidden,
        vocab=model.vocab,
        gated_mlp=model.gated_mlp,
        gpu=gpu,
        gpus=gpus,
        gpus_per_node=gpus_per_node,
        price_per_gpu_hour=float(spec_cluster.get("price_per_gpu_hour", base.price_per_gpu_hour)),
        currency=str(spec_cluster.get("currency", base.currency)),
        pue=float(spec_cluster.get("pue", base.pue)),
        tp=int(layout.get("tp", base.tp)),
        pp=int(layout.get("pp", base.pp)),
        cp=int(layout.get("cp", base.cp)),
        dp=AUTO_DP,
        micro_batch=int(layout.get("micro_batch", base.micro_batch)),
        virtual_stages=int(layout.get("virtual_stages", base.virtual_stages)),
        zero_stage=int(layout.get("zero_stage", base.zero_stage)),
        offload=str(layout.get("offload", base.offload)),
        recompute=str(layout.get("recompute", base.recompute)),
        sequence_parallel=bool(layout.get("sequence_parallel", base.sequence_parallel)),
        precision=str(layout.get("precision", base.precision)),
        seq_len=int(training.get("seq_len", base.seq_len)),
        global_batch=int(training.get("global_batch", base.global_batch)),
        tokens=float(training.get("tokens", base.tokens) or 0.0),
    )
    parsed = parse(inputs.to_scenario())
    curve = PerfCurve.from_specs(parsed.model, parsed.cluster, parsed.layout, parsed.training)
    if not step_times_s:
        notes.append("no step times yet: not calibrated (efficiency ×1)")
        predicted = curve.step_time_s(1.0)
        return LiveStart(job_id, inputs, 1.0, None, predicted, predicted, tuple(notes))
    calibrator = Calibrator()
    calibrator.register_job(cluster, job_id, curve)
    for step_time_s in step_times_s:
        calibrator.observe_step(cluster, job_id, step_time_s)
    report = calibrator.report().job(cluster, job_id)
    return LiveStart(
        job_id=job_id,
        inputs=inputs,
        efficiency_scale=report.efficiency_scale,
        observed_step_time_s=report.observed_step_time_s,
        predicted_step_time_s=report.predicted_step_time_s,
        calibrated_step_time_s=report.calibrated_step_time_s,
        notes=tuple(notes),
    )


# --- result summaries ---------------------------------------------------------------------------


def headline(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) pairs of a result, in display order."""
    mem = result["memory"]
    currency = result.get("currency")
    out = [
        ("memory per GPU", fmt_gib(mem["total_bytes"])),
        ("usable HBM per GPU", fmt_gib(mem["capacity_bytes"])),
        ("step time", fmt_step_time(result["step_time_s"])),
        ("MFU", fmt_pct(result["mfu"])),
        ("tokens/s", fmt_count(result["tokens_per_s"])),
        ("power per GPU", fmt_power(result["power_per_gpu_w"])),
        ("cluster power (IT)", fmt_power(result["cluster_power_w"])),
    ]
    if "time_to_train_s" in result:
        out += [
            ("time to train", fmt_duration(result["time_to_train_s"])),
            ("energy (facility)", fmt_energy_kwh(result["energy_kwh"])),
            ("cost", fmt_money(result["cost"], currency)),
            ("expected interruptions", fmt_count(result["expected_interruptions"], 1)),
            ("goodput", fmt_pct(result["goodput"])),
        ]
    return out


def comparison_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, str]]:
    """Side-by-side headline of two results with B's change relative to A."""
    numeric = {
        "memory per GPU": ("memory", "total_bytes"),
        "usable HBM per GPU": ("memory", "capacity_bytes"),
        "step time": ("step_time_s", None),
        "MFU": ("mfu", None),
        "tokens/s": ("tokens_per_s", None),
        "power per GPU": ("power_per_gpu_w", None),
        "cluster power (IT)": ("cluster_power_w", None),
        "time to train": ("time_to_train_s", None),
        "energy (facility)": ("energy_kwh", None),
        "cost": ("cost", None),
        "expected interruptions": ("expected_interruptions", None),
        "goodput": ("goodput", None),
    }

    def value(r: Mapping[str, Any], label: str) -> float | None:
        key, sub = numeric[label]
        v = r.get(key)
        if sub is not None and isinstance(v, Mapping):
            v = v.get(sub)
        return float(v) if isinstance(v, int | float) else None

    rows = []
    b_head = dict(headline(b))
    for label, a_text in headline(a):
        va, vb = value(a, label), value(b, label)
        change = "—"
        if va is not None and vb is not None and va != 0:
            change = f"{(vb - va) / abs(va):+.1%}"
        rows.append({"": label, "A": a_text, "B": b_head.get(label, "—"), "B vs A": change})
    return rows
