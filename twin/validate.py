"""`twin validate`: the performance model against measured training runs (../shared/calibration).

Data sets:
- vTrain (Bang et al., MICRO 2024; VIA-Research/vTrain data/ground_truth_*.csv): Megatron GPT runs on
  A100 SXM nodes of 8 GPUs; fp16, tied 50,257-token embeddings, activation checkpointing
  (`use_checkpoint: true`), unfused softmax attention; inter-node 800 Gb/s per node = 100 Gb/s per GPU
  (its config/validation/*). Single-node rows (2–8 GPUs) are the fit split, multi-node rows the report.
- SimuMax (MooreThreads/SimuMax, simumax_b200_summary.json): Megatron-LM + Transformer Engine on one
  8× B200 node; bf16, micro-batch 1, sequence 4,096 unless the case name says otherwise, distributed
  optimizer (ZeRO-1), sequence parallel, flash attention, no recompute, untied embeddings, all-to-all
  context parallelism, layer count truncated to `layer_num`. Rows with 4 micro-batches fit the B200
  efficiency; the others are the report split. Memory is compared with the measured peak allocation.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from twin.perf.estimate import estimate
from twin.perf.gpu_presets import gpu_preset
from twin.perf.model_presets import model_preset
from twin.perf.specs import ClusterSpec, ModelSpec, ParallelLayout, Precision, Recompute, TrainingSpec

GIB = 2**30
VTRAIN_VOCAB = 50257  # GPT-2 BPE vocabulary used by vTrain's Megatron GPT models
VTRAIN_INTER_NODE_BYTES_PER_S_PER_GPU = 800e9 / 8 / 8  # 800 Gb/s per 8-GPU node (vTrain config)
SIMUMAX_SEQ_LEN = 4096  # --seq-length 4096 (SimuMax tools/b200 launch scripts)
SIMUMAX_MODELS = {"llama3-70b": "llama3-70b", "llama3-405b": "llama3.1-405b"}
# SimuMax's 405B config uses 16 KV heads (configs/models/llama3_405b.json), not the released model's 8.
SIMUMAX_KV_HEADS = {"llama3-405b": 16}


@dataclass(frozen=True, slots=True)
class Case:
    """One measured run: what ran, how long a step took, and its measured peak memory if known."""

    dataset: str
    name: str
    split: str  # "fit" or "report"
    model: ModelSpec
    cluster: ClusterSpec
    layout: ParallelLayout
    training: TrainingSpec
    measured_step_s: float
    measured_memory_bytes: float | None = None


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    predicted_step_s: float
    predicted_memory_bytes: float

    @property
    def step_error_pct(self) -> float:
        return 100.0 * (self.predicted_step_s - self.case.measured_step_s) / self.case.measured_step_s

    @property
    def memory_error_pct(self) -> float | None:
        measured = self.case.measured_memory_bytes
        if measured is None:
            return None
        return 100.0 * (self.predicted_memory_bytes - measured) / measured


def default_data_dir() -> Path:
    """../shared/calibration beside the checkout (CI clones the repo with shared/ beside it)."""
    return Path(__file__).resolve().parents[2] / "shared" / "calibration"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def load_vtrain(data_dir: Path) -> list[Case]:
    """vTrain's single-node (fit) and multi-node (report) rows."""
    cases: list[Case] = []
    gpu = gpu_preset("a100-sxm-80gb")
    for filename, split in (("vtrain_a100_single_node.csv", "fit"), ("vtrain_a100_multi_node.csv", "report")):
        path = data_dir / filename
        for i, row in enumerate(_read_csv(path)):
            hidden = int(row["hidden size"])
            model = ModelSpec(
                name=f"gpt-h{hidden}-l{row['# layers']}",
                layers=int(row["# layers"]),
                hidden=hidden,
                heads=int(row["attention heads"]),
                kv_heads=int(row["attention heads"]),
                ffn_hidden=4 * hidden,
                vocab=VTRAIN_VOCAB,
                gated_mlp=False,
            )
            gpus = int(row["# GPUs"])
            cluster = ClusterSpec(
                gpu=gpu,
                gpus=gpus,
                gpus_per_node=min(8, gpus),
                inter_node_bandwidth_bytes_per_s=VTRAIN_INTER_NODE_BYTES_PER_S_PER_GPU,
            )
            layout = ParallelLayout(
                tp=int(row["tensor parallelism"]),
                pp=int(row["pipeline parallelism"]),
                dp=int(row["data parallelism"]),
                micro_batch=int(row["micro batch"]),
                zero_stage=0,
                recompute=Recompute.FULL,
                sequence_parallel=False,
                precision=Precision.FP16,
                fused_attention=False,
            )
            training = TrainingSpec(
                seq_len=int(row["sequence length"]), global_batch=int(row["global batch"])
            )
            cases.append(
                Case(
                    dataset="vtrain-a100",
                    name=f"{path.stem}#{i + 1}",
                    split=split,
                    model=model,
                    cluster=cluster,
                    layout=layout,
                    training=training,
                    measured_step_s=float(row["iteration time (ms)"]) / 1e3,
                )
            )
    return cases


_PARALLEL = re.compile(r"(tp|pp|dp|cp|ep)(\d+)")
_SEQ = re.compile(r"seq(\d+)")


def load_simumax(data_dir: Path) -> list[Case]:
    """SimuMax B200 dense (Llama 3) rows; MoE rows (DeepSeek) are skipped: the twin has no MoE model."""
    data = json.loads((data_dir / "simumax_b200_summary.json").read_text(encoding="utf-8"))
    gpu = gpu_preset("b200")
    cases: list[Case] = []
    for row in data["rows"]:
        name = row["case"]
        if row["model"] not in SIMUMAX_MODELS or row.get("status") != "ok":
            continue
        base = model_preset(SIMUMAX_MODELS[row["model"]])
        model = replace(
            base,
            name=f"{row['model']}-l{row['layer_num']}",
            layers=int(row["layer_num"]),
            kv_heads=SIMUMAX_KV_HEADS.get(row["model"], base.kv_heads),
        )
        sizes = {k: int(v) for k, v in _PARALLEL.findall(name)}
        seq = _SEQ.search(name)
        layout = ParallelLayout(
            tp=sizes.get("tp", 1),
            pp=sizes.get("pp", 1),
            cp=sizes.get("cp", 1),
            dp=sizes.get("dp", 1),
            micro_batch=1,
            zero_stage=1,
            recompute=Recompute.NONE,
            sequence_parallel=True,
            precision=Precision.BF16,
        )
        micro_batches = int(row["mbc"])
        training = TrainingSpec(
            seq_len=int(seq.group(1)) if seq else SIMUMAX_SEQ_LEN, global_batch=micro_batches * layout.dp
        )
        cases.append(
            Case(
                dataset="simumax-b200",
                name=name,
                split="fit" if micro_batches == 4 else "report",
                model=model,
                cluster=ClusterSpec(gpu=gpu, gpus=8, gpus_per_node=8),
                layout=layout,
                training=training,
                measured_step_s=float(row["real_ms"]) / 1e3,
                measured_memory_bytes=float(row["real_alloc_gib"]) * GIB,
            )
        )
    return cases


def load_all(data_dir: Path | None = None) -> list[Case]:
    directory = data_dir or default_data_dir()
    return load_vtrain(directory) + load_simumax(directory)


def run(cases: Iterable[Case]) -> list[CaseResult]:
    """Predict every case."""
    results = []
    for case in cases:
        est = estimate(case.model, case.cluster, case.layout, case.training)
        results.append(CaseResult(case, est.step.step_time_s, est.memory.total_bytes))
    return results


@dataclass(frozen=True, slots=True)
class ErrorSummary:
    dataset: str
    split: str
    metric: str
    n: int
    mape_pct: float
    mean_error_pct: float
    max_abs_error_pct: float


def summarise(results: Sequence[CaseResult]) -> list[ErrorSummary]:
    """MAPE, mean signed error and max |error| per data set, split and metric (step time, memory)."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in results:
        groups.setdefault((r.case.dataset, r.case.split, "step_time"), []).append(r.step_error_pct)
        if r.memory_error_pct is not None:
            groups.setdefault((r.case.dataset, r.case.split, "peak_memory"), []).append(r.memory_error_pct)
    return [
        ErrorSummary(
            dataset=d,
            split=s,
            metric=m,
            n=len(errors),
            mape_pct=sum(abs(e) for e in errors) / len(errors),
            mean_error_pct=sum(errors) / len(errors),
            max_abs_error_pct=max(abs(e) for e in errors),
        )
        for (d, s, m), errors in sorted(groups.items())
    ]


def mape(results: Sequence[CaseResult]) -> float:
    return sum(abs(r.step_error_pct) for r in results) / len(results) if results else math.nan
