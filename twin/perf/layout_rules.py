"""Which layouts are valid for a model, cluster and batch: each rule written once, used two ways.

A what-if with an invalid layout raises `ScenarioError` naming the values (DESIGN §3, issue §9); a
sweep drops the invalid layouts with one vectorised mask. (A valid layout that does not fit in memory is
not an error: it is a result with `fits=false`.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from twin.errors import ScenarioError
from twin.perf.batch import BoolArray, LayoutBatch
from twin.perf.specs import ClusterSpec, ModelSpec, Offload, Precision, TrainingSpec


@dataclass(frozen=True, slots=True)
class Rule:
    """`ok` returns a mask of valid layouts; `message` explains the first invalid one."""

    ok: Callable[[ModelSpec, ClusterSpec, TrainingSpec, LayoutBatch], BoolArray]
    message: Callable[[ModelSpec, ClusterSpec, TrainingSpec, LayoutBatch, int], str]


def _i(a: np.ndarray, i: int) -> int:
    return int(a[i])


RULES: tuple[Rule, ...] = (
    Rule(
        lambda m, c, t, b: b.tp * b.pp * b.cp * b.dp == c.gpus,
        lambda m, c, t, b, i: (
            f"tp·pp·cp·dp (={_i(b.tp, i)}·{_i(b.pp, i)}·{_i(b.cp, i)}·{_i(b.dp, i)}"
            f"={_i(b.tp * b.pp * b.cp * b.dp, i)}) must equal cluster.gpus(={c.gpus})."
        ),
    ),
    Rule(
        lambda m, c, t, b: m.heads % b.tp == 0,
        lambda m, c, t, b, i: f"layout.tp(={_i(b.tp, i)}) must divide model.heads(={m.heads}).",
    ),
    Rule(
        lambda m, c, t, b: m.kv_heads % b.tp == 0,
        lambda m, c, t, b, i: (
            f"layout.tp(={_i(b.tp, i)}) must divide model.kv_heads(={m.kv_heads}) "
            "(Megatron-LM splits key/value groups across tensor-parallel ranks)."
        ),
    ),
    Rule(
        lambda m, c, t, b: m.heads % (b.tp * b.cp) == 0,
        lambda m, c, t, b, i: (
            f"layout.tp·cp(={_i(b.tp, i)}·{_i(b.cp, i)}) must divide model.heads(={m.heads}) "
            "(all-to-all context parallelism splits heads)."
        ),
    ),
    Rule(
        lambda m, c, t, b: t.seq_len % b.cp == 0,
        lambda m, c, t, b, i: f"layout.cp(={_i(b.cp, i)}) must divide training.seq_len(={t.seq_len}).",
    ),
    Rule(
        # Uneven splits are allowed (Megatron's --decoder-first/last-pipeline-num-layers; Llama 3 405B ran
        # 126 layers on PP 16): the slowest stage holds ceil(layers / pp) layers.
        lambda m, c, t, b: m.layers >= b.pp * b.virtual_stages,
        lambda m, c, t, b, i: (
            f"layout.pp·virtual_stages(={_i(b.pp, i)}·{_i(b.virtual_stages, i)}) must not exceed "
            f"model.layers(={m.layers})."
        ),
    ),
    Rule(
        lambda m, c, t, b: (b.virtual_stages == 1) | (b.pp > 1),
        lambda m, c, t, b, i: (
            f"layout.virtual_stages(={_i(b.virtual_stages, i)}) needs pipeline parallelism (pp > 1)."
        ),
    ),
    Rule(
        lambda m, c, t, b: t.global_batch % (b.dp * b.micro_batch) == 0,
        lambda m, c, t, b, i: (
            f"training.global_batch(={t.global_batch}) must be divisible by dp·micro_batch"
            f"(={_i(b.dp, i)}·{_i(b.micro_batch, i)})."
        ),
    ),
    Rule(
        lambda m, c, t, b: (b.virtual_stages == 1) | ((t.global_batch // (b.dp * b.micro_batch)) % b.pp == 0),
        lambda m, c, t, b, i: (
            f"the interleaved schedule needs micro-batches per step "
            f"(={t.global_batch // _i(b.dp * b.micro_batch, i)}) divisible by layout.pp(={_i(b.pp, i)})."
        ),
    ),
    Rule(
        lambda m, c, t, b: ~b.is_offload(Offload.PARAMS) | (b.zero_stage == 3),
        lambda m, c, t, b, i: (
            f'layout.offload="params" needs zero_stage 3 (ZeRO-Infinity), got {_i(b.zero_stage, i)}.'
        ),
    ),
    Rule(
        lambda m, c, t, b: ~b.is_offload(Offload.OPTIMIZER) | (b.zero_stage >= 1),
        lambda m, c, t, b, i: (
            f'layout.offload="optimizer" needs zero_stage >= 1 (ZeRO-Offload), got {_i(b.zero_stage, i)}.'
        ),
    ),
    Rule(
        lambda m, c, t, b: ~b.is_precision(Precision.FP8) | (c.gpu.fp8_tflops is not None),
        lambda m, c, t, b, i: f'layout.precision="fp8" needs FP8 tensor cores; {c.gpu.name} has none.',
    ),
)


def valid_mask(
    model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, batch: LayoutBatch
) -> BoolArray:
    """True for every layout that satisfies all rules."""
    mask = np.ones(len(batch), dtype=np.bool_)
    for rule in RULES:
        mask &= np.asarray(rule.ok(model, cluster, training, batch), dtype=np.bool_)
    return mask


def check_layouts(model: ModelSpec, cluster: ClusterSpec, training: TrainingSpec, batch: LayoutBatch) -> None:
    """Raise `ScenarioError` with the message of the first rule the first invalid layout breaks."""
    for rule in RULES:
        ok = np.asarray(rule.ok(model, cluster, training, batch), dtype=np.bool_)
        if not ok.all():
            raise ScenarioError(rule.message(model, cluster, training, batch, int(np.argmin(ok))))
