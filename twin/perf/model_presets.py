"""Model presets: published transformer shapes a scenario can name in `model.preset` (DESIGN §3).

Each shape is copied from its paper or its model card / config.json; `source` names it. Family
conventions follow `ModelSpec` (GPT-style: tied embeddings and dropout; Llama-style: untied, no
dropout); a preset sets `tied_embeddings` / `dropout` only where its model departs from them.
`tests/perf/test_presets.py` checks every preset's `params` against its published parameter count.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from twin.perf.preset_lookup import lookup
from twin.perf.specs import ModelSpec

# GPT-2/GPT-3 byte-pair vocabulary (Radford et al. 2019; Brown et al. 2020 use the same tokenizer).
GPT2_VOCAB = 50_257
# Llama 2 SentencePiece vocabulary (Touvron et al. 2023b; config.json "vocab_size": 32000).
LLAMA2_VOCAB = 32_000
# Llama 3 / 3.1 tiktoken-based vocabulary (config.json "vocab_size": 128256).
LLAMA3_VOCAB = 128_256
# Grouped-query attention key/value heads of Llama 2 70B and all Llama 3 / 3.1 models (config.json
# "num_key_value_heads": 8).
LLAMA_GQA_KV_HEADS = 8
# GPT-style MLP width: 4 × hidden (Vaswani et al. 2017; Brown et al. 2020 "d_ff = 4 · d_model").
GPT_FFN_MULTIPLIER = 4

_GPT3_SOURCE = "Brown et al. 2020, Language Models are Few-Shot Learners, Table 2.1"


def _gpt3(name: str, layers: int, hidden: int, heads: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=heads,
        ffn_hidden=GPT_FFN_MULTIPLIER * hidden,
        vocab=GPT2_VOCAB,
        gated_mlp=False,
        source=_GPT3_SOURCE,
    )


def _llama2(name: str, layers: int, hidden: int, heads: int, kv_heads: int, ffn_hidden: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        ffn_hidden=ffn_hidden,
        vocab=LLAMA2_VOCAB,
        gated_mlp=True,
        source=f"Touvron et al. 2023, Llama 2; meta-llama/Llama-2-{name.split('-')[1]}-hf config.json",
    )


def _llama3(name: str, layers: int, hidden: int, heads: int, ffn_hidden: int, card: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=LLAMA_GQA_KV_HEADS,
        ffn_hidden=ffn_hidden,
        vocab=LLAMA3_VOCAB,
        gated_mlp=True,
        source=f"Llama Team 2024, The Llama 3 Herd of Models, Table 3; {card} config.json",
    )


_MODEL_PRESETS: dict[str, ModelSpec] = {
    # --- GPT-3 family: n_layers, d_model, n_heads of Table 2.1 -----------------------------------------
    "gpt3-125m": _gpt3("gpt3-125m", layers=12, hidden=768, heads=12),
    "gpt3-350m": _gpt3("gpt3-350m", layers=24, hidden=1024, heads=16),
    "gpt3-760m": _gpt3("gpt3-760m", layers=24, hidden=1536, heads=16),
    # Table 2.1 lists 24 heads of d_head 128 for d_model 2048, which is inconsistent (24 × 128 = 3072);
    # d_head = 128 is kept, giving 16 heads.
    "gpt3-1.3b": _gpt3("gpt3-1.3b", layers=24, hidden=2048, heads=16),
    "gpt3-2.7b": _gpt3("gpt3-2.7b", layers=32, hidden=2560, heads=32),
    "gpt3-6.7b": _gpt3("gpt3-6.7b", layers=32, hidden=4096, heads=32),
    # Table 2.1 lists d_model 5140 with 40 heads of 128; 5140 is not divisible by 40, so 40 × 128 = 5120.
    "gpt3-13b": _gpt3("gpt3-13b", layers=40, hidden=5120, heads=40),
    "gpt3-175b": _gpt3("gpt3-175b", layers=96, hidden=12288, heads=96),
    # --- Llama 2 ---------------------------------------------------------------------------------------
    "llama2-7b": _llama2("llama2-7b", layers=32, hidden=4096, heads=32, kv_heads=32, ffn_hidden=11008),
    "llama2-13b": _llama2("llama2-13b", layers=40, hidden=5120, heads=40, kv_heads=40, ffn_hidden=13824),
    "llama2-70b": _llama2(
        "llama2-70b", layers=80, hidden=8192, heads=64, kv_heads=LLAMA_GQA_KV_HEADS, ffn_hidden=28672
    ),
    # --- Llama 3 / 3.1 (3.1 changes context length and RoPE scaling, not the shape) ---------------------
    "llama3-8b": _llama3(
        "llama3-8b", layers=32, hidden=4096, heads=32, ffn_hidden=14336, card="meta-llama/Meta-Llama-3-8B"
    ),
    "llama3-70b": _llama3(
        "llama3-70b", layers=80, hidden=8192, heads=64, ffn_hidden=28672, card="meta-llama/Meta-Llama-3-70B"
    ),
    "llama3-405b": _llama3(
        "llama3-405b", layers=126, hidden=16384, heads=128, ffn_hidden=53248, card="meta-llama/Llama-3.1-405B"
    ),
    "llama3.1-8b": _llama3(
        "llama3.1-8b", layers=32, hidden=4096, heads=32, ffn_hidden=14336, card="meta-llama/Llama-3.1-8B"
    ),
    "llama3.1-70b": _llama3(
        "llama3.1-70b", layers=80, hidden=8192, heads=64, ffn_hidden=28672, card="meta-llama/Llama-3.1-70B"
    ),
    "llama3.1-405b": _llama3(
        "llama3.1-405b",
        layers=126,
        hidden=16384,
        heads=128,
        ffn_hidden=53248,
        card="meta-llama/Llama-3.1-405B",
    ),
    # --- other published large models ----------------------------------------------------------------------
    "bloom-176b": ModelSpec(
        name="bloom-176b",
        layers=70,
        hidden=14336,
        heads=112,
        kv_heads=112,
        ffn_hidden=GPT_FFN_MULTIPLIER * 14336,
        vocab=250_880,  # bigscience/bloom config.json "vocab_size": 250880 (padded from 250,680)
        gated_mlp=False,
        tied_embeddings=True,
        dropout=False,  # config.json "hidden_dropout": 0.0, "attention_dropout": 0.0
        source="BigScience 2022, BLOOM (arXiv 2211.05100), Table 3; bigscience/bloom config.json",
    ),
    "opt-175b": ModelSpec(
        name="opt-175b",
        layers=96,
        hidden=12288,
        heads=96,
        kv_heads=96,
        ffn_hidden=GPT_FFN_MULTIPLIER * 12288,
        vocab=50_272,  # facebook/opt config.json "vocab_size": 50272
        gated_mlp=False,
        tied_embeddings=True,
        dropout=True,  # Zhang et al. 2022 §2.2: dropout 0.1 throughout
        source="Zhang et al. 2022, OPT: Open Pre-trained Transformer Language Models, Table 1",
    ),
    "mt-nlg-530b": ModelSpec(
        name="mt-nlg-530b",
        layers=105,
        hidden=20480,
        heads=128,
        kv_heads=128,
        ffn_hidden=GPT_FFN_MULTIPLIER * 20480,
        vocab=GPT2_VOCAB,  # GPT-2 tokenizer
        gated_mlp=False,
        source="Smith et al. 2022, Using DeepSpeed and Megatron to Train Megatron-Turing NLG 530B, §3",
    ),
    "megatron-1t": ModelSpec(
        name="megatron-1t",
        layers=128,
        hidden=25600,
        heads=160,
        kv_heads=160,
        ffn_hidden=GPT_FFN_MULTIPLIER * 25600,
        vocab=51_200,  # Narayanan et al. 2021 §5.1: vocabulary of 51,200
        gated_mlp=False,
        source="Narayanan et al. 2021, Efficient Large-Scale Language Model Training on GPU Clusters "
        "Using Megatron-LM, Table 1 (1T row)",
    ),
    # gpt-3.5-turbo's size is not published; ~20B is the literature's estimate (it appeared in
    # CodeFusion, Singh et al. 2023, arXiv 2310.17680 v1, later withdrawn). GPT-NeoX-20B is a
    # documented GPT-style 20B shape and is used as the stand-in.
    "gpt-3.5-turbo-20b": ModelSpec(
        name="gpt-3.5-turbo-20b",
        layers=44,
        hidden=6144,
        heads=64,
        kv_heads=64,
        ffn_hidden=GPT_FFN_MULTIPLIER * 6144,
        vocab=50_432,  # EleutherAI/gpt-neox-20b config.json "vocab_size": 50432
        gated_mlp=False,
        tied_embeddings=False,  # config.json "tie_word_embeddings": false
        dropout=False,  # 20B.yml: hidden-dropout 0, attention-dropout 0
        source="Shape of GPT-NeoX-20B (Black et al. 2022, arXiv 2204.06745, Table 1) standing in for "
        "gpt-3.5-turbo's estimated ~20B",
    ),
}

MODEL_PRESETS: Mapping[str, ModelSpec] = MappingProxyType(_MODEL_PRESETS)


def model_preset(name: str) -> ModelSpec:
    """The model preset called `name` (case-insensitive, `_` for `-`).

    Raises `UnknownPresetError` listing the closest preset names.
    """
    return lookup("model", name, MODEL_PRESETS)
