"""The scenario contract (DESIGN §3): parse a scenario mapping into specs, evaluate it, serialise the result.

`evaluate(scenario)` is the Python API the CLI, the service and the dashboard share. Parsing is strict:
unknown keys, wrong types and out-of-range values raise `ScenarioError` naming the field and value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from twin.errors import ScenarioError
from twin.perf.estimate import Estimate, estimate
from twin.perf.gpu_presets import gpu_preset
from twin.perf.model_presets import model_preset
from twin.perf.specs import (
    ClusterSpec,
    ModelSpec,
    Offload,
    ParallelLayout,
    Precision,
    Recompute,
    TrainingSpec,
)

SECTIONS = ("model", "cluster", "layout", "training")
MODEL_SHAPE_KEYS = ("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab", "gated_mlp")
MODEL_KEYS = frozenset({"preset", "name", *MODEL_SHAPE_KEYS})
CLUSTER_KEYS = frozenset(
    {
        "gpu",
        "gpus",
        "gpus_per_node",
        "price_per_gpu_hour",
        "currency",
        "pue",
        "power_cap_w",
        "intra_node_bandwidth_gbytes_per_s",
        "inter_node_bandwidth_gbits_per_s",
        "checkpoint_bandwidth_gbytes_per_s",
        "failure_rate_scale",
    }
)
LAYOUT_KEYS = frozenset(
    {
        "tp",
        "pp",
        "cp",
        "dp",
        "micro_batch",
        "virtual_stages",
        "zero_stage",
        "offload",
        "recompute",
        "sequence_parallel",
        "precision",
    }
)
TRAINING_KEYS = frozenset({"seq_len", "global_batch", "tokens"})


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed scenario: the specs the performance core takes."""

    model: ModelSpec
    cluster: ClusterSpec
    layout: ParallelLayout
    training: TrainingSpec


def _section(scenario: Mapping[str, Any], name: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    value = scenario.get(name, {})
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{name}(={value!r}) must be an object.")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ScenarioError(f"unknown key {name}.{unknown[0]!r}; allowed: {', '.join(sorted(allowed))}.")
    return value


def _int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{field}(={value!r}) must be an integer.")
    if isinstance(value, float) and not value.is_integer():
        raise ScenarioError(f"{field}(={value!r}) must be an integer.")
    return int(value)


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(f"{field}(={value!r}) must be a finite number.")
    return float(value)


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"{field}(={value!r}) must be true or false.")
    return value


def _choice(field: str, value: Any, enum: type[Precision] | type[Offload] | type[Recompute]) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = "|".join(e.value for e in enum)
        raise ScenarioError(f"{field}(={value!r}) must be one of {allowed}.") from None


def parse_model(raw: Mapping[str, Any] | str) -> ModelSpec:
    """A preset name, `{"preset": name, ...overrides}`, or an explicit shape."""
    if isinstance(raw, str):
        return model_preset(raw)
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"model(={raw!r}) must be a preset name or an object.")
    section = _section({"model": raw}, "model", MODEL_KEYS)
    shape: dict[str, Any] = {}
    for key in MODEL_SHAPE_KEYS:
        if key in section:
            value = section[key]
            shape[key] = _bool(f"model.{key}", value) if key == "gated_mlp" else _int(f"model.{key}", value)
    if "name" in section and not isinstance(section["name"], str):
        raise ScenarioError(f"model.name(={section['name']!r}) must be a string.")
    if "preset" in section:
        if not isinstance(section["preset"], str):
            raise ScenarioError(f"model.preset(={section['preset']!r}) must be a string.")
        base = model_preset(section["preset"])
        return replace(base, name=section.get("name", base.name), **shape)
    missing = [k for k in MODEL_SHAPE_KEYS if k not in shape and k != "kv_heads"]
    if missing:
        raise ScenarioError(f"model needs a preset or a shape; missing model.{missing[0]}.")
    shape.setdefault("kv_heads", shape["heads"])
    return ModelSpec(name=section.get("name", "custom"), **shape)


def parse_cluster(raw: Mapping[str, Any]) -> ClusterSpec:
    section = _section({"cluster": raw}, "cluster", CLUSTER_KEYS)
    if "gpu" not in section:
        raise ScenarioError("cluster.gpu is required (a GPU preset name, see `twin presets`).")
    if not isinstance(section["gpu"], str):
        raise ScenarioError(f"cluster.gpu(={section['gpu']!r}) must be a GPU preset name.")
    if "gpus" not in section:
        raise ScenarioError("cluster.gpus is required.")
    gpu = gpu_preset(section["gpu"])

    def optional(key: str, scale: float) -> float | None:
        return None if section.get(key) is None else _number(f"cluster.{key}", section[key]) * scale

    currency = section.get("currency", "EUR")
    if not isinstance(currency, str) or not currency:
        raise ScenarioError(f"cluster.currency(={currency!r}) must be a currency code such as EUR.")
    return ClusterSpec(
        gpu=gpu,
        gpus=_int("cluster.gpus", section["gpus"]),
        gpus_per_node=_int("cluster.gpus_per_node", section.get("gpus_per_node", 8)),
        price_per_gpu_hour=_number("cluster.price_per_gpu_hour", section.get("price_per_gpu_hour", 0.0)),
        currency=currency,
        pue=_number("cluster.pue", section.get("pue", 1.2)),
        power_cap_w=optional("power_cap_w", 1.0),
        intra_node_bandwidth_bytes_per_s=optional("intra_node_bandwidth_gbytes_per_s", 1e9),
        inter_node_bandwidth_bytes_per_s=optional("inter_node_bandwidth_gbits_per_s", 1e9 / 8),
        checkpoint_bandwidth_bytes_per_s=optional("checkpoint_bandwidth_gbytes_per_s", 1e9),
        failure_rate_scale=_number("cluster.failure_rate_scale", section.get("failure_rate_scale", 1.0)),
    )


def parse_layout(raw: Mapping[str, Any], gpus: int) -> ParallelLayout:
    section = _section({"layout": raw}, "layout", LAYOUT_KEYS)
    tp = _int("layout.tp", section.get("tp", 1))
    pp = _int("layout.pp", section.get("pp", 1))
    cp = _int("layout.cp", section.get("cp", 1))
    for name, value in (("tp", tp), ("pp", pp), ("cp", cp)):
        if value < 1:
            raise ScenarioError(f"layout.{name}(={value}) must be >= 1.")
    if section.get("dp") is None:
        if gpus % (tp * pp * cp):
            raise ScenarioError(
                f"cluster.gpus(={gpus}) must be divisible by tp·pp·cp(={tp}·{pp}·{cp}={tp * pp * cp})."
            )
        dp = gpus // (tp * pp * cp)
    else:
        dp = _int("layout.dp", section["dp"])
    return ParallelLayout(
        tp=tp,
        pp=pp,
        cp=cp,
        dp=dp,
        micro_batch=_int("layout.micro_batch", section.get("micro_batch", 1)),
        virtual_stages=_int("layout.virtual_stages", section.get("virtual_stages", 1)),
        zero_stage=_int("layout.zero_stage", section.get("zero_stage", 1)),
        offload=_choice("layout.offload", section.get("offload", "none"), Offload),
        recompute=_choice("layout.recompute", section.get("recompute", "selective"), Recompute),
        sequence_parallel=_bool("layout.sequence_parallel", section.get("sequence_parallel", tp > 1)),
        precision=_choice("layout.precision", section.get("precision", "bf16"), Precision),
    )


def parse_training(raw: Mapping[str, Any]) -> TrainingSpec:
    section = _section({"training": raw}, "training", TRAINING_KEYS)
    for key in ("seq_len", "global_batch"):
        if key not in section:
            raise ScenarioError(f"training.{key} is required.")
    tokens = section.get("tokens")
    return TrainingSpec(
        seq_len=_int("training.seq_len", section["seq_len"]),
        global_batch=_int("training.global_batch", section["global_batch"]),
        tokens=None if tokens is None else _number("training.tokens", tokens),
    )


def parse(scenario: Mapping[str, Any]) -> Scenario:
    """Parse and validate one scenario mapping (DESIGN §3)."""
    if not isinstance(scenario, Mapping):
        raise ScenarioError(f"a scenario must be an object, got {type(scenario).__name__}.")
    unknown = sorted(set(scenario) - set(SECTIONS))
    if unknown:
        raise ScenarioError(f"unknown key {unknown[0]!r}; a scenario has {', '.join(SECTIONS)}.")
    for required in ("model", "cluster", "training"):
        if required not in scenario:
            raise ScenarioError(f"scenario needs '{required}'.")
    model = parse_model(scenario["model"])
    cluster = parse_cluster(scenario["cluster"])
    layout = parse_layout(scenario.get("layout", {}), cluster.gpus)
    return Scenario(model, cluster, layout, parse_training(scenario["training"]))


def layout_json(layout: ParallelLayout) -> dict[str, Any]:
    """A layout in the contract's JSON form."""
    return {
        "tp": layout.tp,
        "pp": layout.pp,
        "cp": layout.cp,
        "dp": layout.dp,
        "micro_batch": layout.micro_batch,
        "virtual_stages": layout.virtual_stages,
        "zero_stage": layout.zero_stage,
        "offload": layout.offload.value,
        "recompute": layout.recompute.value,
        "sequence_parallel": layout.sequence_parallel,
        "precision": layout.precision.value,
    }


def result_json(parsed: Scenario, est: Estimate) -> dict[str, Any]:
    """The contract's result object (SI units), plus the resolved inputs for reference."""
    out: dict[str, Any] = {
        "fits": est.fits,
        "reason": est.reason,
        "memory": {
            "params_bytes": est.memory.params_bytes,
            "grads_bytes": est.memory.grads_bytes,
            "optimizer_bytes": est.memory.optimizer_bytes,
            "activations_bytes": est.memory.activations_bytes,
            "other_bytes": est.memory.other_bytes,
            "total_bytes": est.memory.total_bytes,
            "capacity_bytes": est.memory.capacity_bytes,
        },
        "step_time_s": est.step.step_time_s,
        "breakdown_s": est.step.breakdown_s,
        "tokens_per_s": est.step.tokens_per_s,
        "tokens_per_s_per_gpu": est.step.tokens_per_s_per_gpu,
        "model_tflops_per_gpu": est.step.model_tflops_per_gpu,
        "mfu": est.step.mfu,
        "power_per_gpu_w": est.power.power_per_gpu_w,
        "cluster_power_w": est.power.cluster_power_w,
    }
    if est.reliability is not None:
        rel = est.reliability
        out.update(
            time_to_train_s=rel.time_to_train_s,
            energy_kwh=est.power.energy_kwh,
            cost=est.power.cost,
            currency=parsed.cluster.currency,
            expected_interruptions=rel.expected_interruptions,
            goodput=rel.goodput,
            checkpoint_interval_s=rel.checkpoint_interval_s,
            checkpoint_write_s=rel.checkpoint_write_s,
        )
    layout = est.layout
    out["resolved"] = {
        "model": {"name": parsed.model.name, "params": parsed.model.params},
        "gpu": parsed.cluster.gpu.name,
        "gpus": parsed.cluster.gpus,
        "layout": layout_json(layout),
        "steps": None
        if parsed.training.tokens is None
        else parsed.training.tokens / parsed.training.tokens_per_step,
    }
    return out


def evaluate(scenario: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate one scenario mapping and return the contract's result (raises `ScenarioError`)."""
    parsed = parse(scenario)
    return result_json(parsed, estimate(parsed.model, parsed.cluster, parsed.layout, parsed.training))
