"""GPU and model presets (twin.perf.gpu_presets, twin.perf.model_presets) and preset lookup, pinned to
published numbers."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from twin.errors import ScenarioError, UnknownPresetError
from twin.perf.calibration import matmul_efficiency_for
from twin.perf.gpu_presets import GPU_PRESETS, gpu_preset
from twin.perf.model_presets import MODEL_PRESETS, model_preset
from twin.perf.preset_lookup import lookup
from twin.perf.specs import GpuSpec

GIB = 2**30
MIB = 2**20

REQUIRED_GPU_PRESETS = (
    "v100-sxm2-32gb",
    "v100-pcie-32gb",
    "a100-sxm-40gb",
    "a100-sxm-80gb",
    "h100-sxm",
    "h100-pcie",
    "h200",
    "b200",
    "gb200",
    "mi300x",
)

# name: dense fp32, tf32, bf16, fp8 TFLOP/s; nominal HBM GB; HBM TB/s; TDP W (vendor datasheets).
DATASHEET = {
    "v100-sxm2-32gb": (15.7, 15.7, 125.0, None, 32, 0.9, 300.0),
    "v100-pcie-32gb": (14.0, 14.0, 112.0, None, 32, 0.9, 250.0),
    "a100-sxm-40gb": (19.5, 156.0, 312.0, None, 40, 1.555, 400.0),
    "a100-sxm-80gb": (19.5, 156.0, 312.0, None, 80, 2.039, 400.0),
    "h100-sxm": (67.0, 494.7, 989.4, 1978.9, 80, 3.35, 700.0),
    "h100-pcie": (51.0, 378.0, 756.5, 1513.0, 80, 2.0, 350.0),
    "h200": (67.0, 494.7, 989.4, 1978.9, 141, 4.8, 700.0),
    "b200": (75.0, 1100.0, 2250.0, 4500.0, 180, 8.0, 1000.0),
    "gb200": (80.0, 1250.0, 2500.0, 5000.0, 186, 8.0, 1200.0),
    "mi300x": (163.4, 653.7, 1307.4, 2614.9, 192, 5.3, 750.0),
}

# nvidia-smi / rocm-smi memory.total in MiB, as cited in twin/perf/gpu_presets.py.
DRIVER_REPORTED_MIB = {
    "v100-sxm2-32gb": 32_510,
    "a100-sxm-40gb": 40_960,
    "a100-sxm-80gb": 81_920,
    "h100-sxm": 81_559,
    "h200": 143_771,
    "b200": 183_359,
    "gb200": 189_471,
}

# Scale-up link per GPU per direction: half the vendor's bidirectional figure.
INTRA_NODE_BYTES_PER_S = {
    "v100-sxm2-32gb": 150e9,  # NVLink 300 GB/s
    "a100-sxm-80gb": 300e9,  # NVLink 600 GB/s
    "h100-sxm": 450e9,  # NVLink 900 GB/s
    "h200": 450e9,
    "b200": 900e9,  # NVLink 1.8 TB/s
    "gb200": 900e9,
    "mi300x": 448e9,  # 7 xGMI links × 64 GB/s
    "h100-pcie": 64e9,  # no NVLink bridge: PCIe Gen5 x16
}

# Scale-out NIC per GPU per direction in the reference system.
INTER_NODE_BYTES_PER_S = {
    "v100-sxm2-32gb": 6.25e9,  # DGX-1: 4 × 100 Gb/s EDR for 8 GPUs
    "a100-sxm-80gb": 25e9,  # DGX A100: 200 Gb/s HDR per GPU
    "h100-sxm": 50e9,  # DGX H100: 400 Gb/s NDR per GPU
    "h200": 50e9,
    "b200": 50e9,
}

# (reference system max W, GPUs, GPU TDP W): host_power_w is what is left per GPU.
REFERENCE_SYSTEM_POWER = {
    "v100-sxm2-32gb": (3_500.0, 8, 300.0),  # DGX-1
    "a100-sxm-80gb": (6_500.0, 8, 400.0),  # DGX A100
    "h100-sxm": (10_200.0, 8, 700.0),  # DGX H100
    "h200": (10_200.0, 8, 700.0),  # DGX H200
    "b200": (14_300.0, 8, 1_000.0),  # DGX B200
    "gb200": (120_000.0, 72, 1_200.0),  # GB200 NVL72 rack
}

# Published parameter counts: (count, where it is published).
PUBLISHED_PARAMS = {
    "gpt3-125m": (125e6, "Brown et al. 2020 Table 2.1"),
    "gpt3-350m": (350e6, "Brown et al. 2020 Table 2.1"),
    "gpt3-760m": (760e6, "Brown et al. 2020 Table 2.1"),
    "gpt3-1.3b": (1.3e9, "Brown et al. 2020 Table 2.1"),
    "gpt3-2.7b": (2.7e9, "Brown et al. 2020 Table 2.1"),
    "gpt3-6.7b": (6.7e9, "Brown et al. 2020 Table 2.1"),
    "gpt3-13b": (13.0e9, "Brown et al. 2020 Table 2.1"),
    "gpt3-175b": (175.0e9, "Brown et al. 2020 Table 2.1"),
    "llama2-7b": (6_738_415_616, "meta-llama/Llama-2-7b-hf safetensors total"),
    "llama2-13b": (13_015_864_320, "meta-llama/Llama-2-13b-hf safetensors total"),
    "llama2-70b": (68_976_648_192, "meta-llama/Llama-2-70b-hf safetensors total"),
    "llama3-8b": (8_030_261_248, "meta-llama/Meta-Llama-3-8B safetensors total"),
    "llama3-70b": (70_553_706_496, "meta-llama/Meta-Llama-3-70B safetensors total"),
    "llama3-405b": (405e9, "Llama Team 2024, The Llama 3 Herd of Models"),
    "llama3.1-8b": (8_030_261_248, "meta-llama/Llama-3.1-8B safetensors total"),
    "llama3.1-70b": (70_553_706_496, "meta-llama/Llama-3.1-70B safetensors total"),
    "llama3.1-405b": (405e9, "Llama Team 2024, The Llama 3 Herd of Models"),
    "bloom-176b": (176_247_271_424, "bigscience/bloom model card"),
    "opt-175b": (175e9, "Zhang et al. 2022 Table 1"),
    "mt-nlg-530b": (530e9, "Smith et al. 2022"),
    "megatron-1t": (1008e9, "Narayanan et al. 2021 Table 1"),
    "gpt-3.5-turbo-20b": (20_554_567_680, "GPT-NeoX-20B, Black et al. 2022"),
}
PARAMS_TOLERANCE = 0.03


@pytest.mark.parametrize("name", REQUIRED_GPU_PRESETS)
def test_required_gpu_preset_exists_under_its_own_name(name: str) -> None:
    gpu = gpu_preset(name)
    assert isinstance(gpu, GpuSpec)
    assert gpu.name == name


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_gpu_preset_matches_vendor_datasheet(name: str) -> None:
    fp32, tf32, bf16, fp8, hbm_gb, hbm_tb_per_s, tdp_w = DATASHEET[name]
    gpu = GPU_PRESETS[name]
    assert gpu.fp32_tflops == pytest.approx(fp32)
    assert gpu.tf32_tflops == pytest.approx(tf32)
    assert gpu.bf16_tflops == pytest.approx(bf16)
    if fp8 is None:
        assert gpu.fp8_tflops is None
    else:
        assert gpu.fp8_tflops == pytest.approx(fp8)
    assert gpu.hbm_bytes == hbm_gb * GIB
    assert gpu.hbm_bandwidth_bytes_per_s == pytest.approx(hbm_tb_per_s * 1e12)
    assert gpu.tdp_w == tdp_w


def test_h100_sxm_dense_bf16_peak_is_989_4_tflops() -> None:
    assert gpu_preset("h100-sxm").bf16_tflops == 989.4


def test_a100_sxm_80gb_holds_80_gib_of_hbm() -> None:
    assert gpu_preset("a100-sxm-80gb").hbm_bytes == 80 * GIB


def test_h200_has_h100_sxm_compute_with_more_and_faster_memory() -> None:
    h100, h200 = gpu_preset("h100-sxm"), gpu_preset("h200")
    assert (h200.fp32_tflops, h200.tf32_tflops, h200.bf16_tflops, h200.fp8_tflops) == (
        h100.fp32_tflops,
        h100.tf32_tflops,
        h100.bf16_tflops,
        h100.fp8_tflops,
    )
    assert h200.hbm_bytes > h100.hbm_bytes
    assert h200.hbm_bandwidth_bytes_per_s > h100.hbm_bandwidth_bytes_per_s


@pytest.mark.parametrize("name", sorted(DRIVER_REPORTED_MIB))
def test_hbm_capacity_is_within_one_gib_above_what_the_driver_reports(name: str) -> None:
    excess = GPU_PRESETS[name].hbm_bytes - DRIVER_REPORTED_MIB[name] * MIB
    assert 0 <= excess < GIB


@pytest.mark.parametrize("name", ["v100-sxm2-32gb", "v100-pcie-32gb", "a100-sxm-40gb", "a100-sxm-80gb"])
def test_gpus_without_fp8_tensor_cores_have_no_fp8_rate(name: str) -> None:
    assert GPU_PRESETS[name].fp8_tflops is None


@pytest.mark.parametrize("name", sorted(INTRA_NODE_BYTES_PER_S))
def test_intra_node_bandwidth_is_per_direction(name: str) -> None:
    got = GPU_PRESETS[name].intra_node_bandwidth_bytes_per_s
    assert got == pytest.approx(INTRA_NODE_BYTES_PER_S[name])


@pytest.mark.parametrize("name", sorted(INTER_NODE_BYTES_PER_S))
def test_inter_node_bandwidth_is_the_reference_systems_nic_share_per_gpu(name: str) -> None:
    got = GPU_PRESETS[name].inter_node_bandwidth_bytes_per_s
    assert got == pytest.approx(INTER_NODE_BYTES_PER_S[name])


@pytest.mark.parametrize("name", sorted(REFERENCE_SYSTEM_POWER))
def test_host_power_is_reference_system_max_minus_gpu_tdps_per_gpu(name: str) -> None:
    system_w, gpus, tdp_w = REFERENCE_SYSTEM_POWER[name]
    assert GPU_PRESETS[name].host_power_w == pytest.approx((system_w - gpus * tdp_w) / gpus)


def test_a100_idle_power_is_the_acme_trace_floor() -> None:
    assert gpu_preset("a100-sxm-80gb").idle_w == 60.0


@pytest.mark.parametrize("name", sorted(GPU_PRESETS))
def test_every_gpu_preset_is_consistent_and_cites_a_source(name: str) -> None:
    gpu = GPU_PRESETS[name]
    assert gpu.name == name
    assert gpu.source
    assert gpu.matmul_efficiency == matmul_efficiency_for(name)
    assert 0 < gpu.idle_w < gpu.tdp_w
    assert gpu.host_power_w > 0
    assert gpu.bf16_tflops >= gpu.tf32_tflops >= gpu.fp32_tflops
    if gpu.fp8_tflops is not None:
        assert gpu.fp8_tflops == pytest.approx(2 * gpu.bf16_tflops, rel=1e-3)


def test_preset_tables_are_read_only() -> None:
    assert isinstance(GPU_PRESETS, MappingProxyType)
    assert isinstance(MODEL_PRESETS, MappingProxyType)
    with pytest.raises(TypeError):
        GPU_PRESETS["x"] = GPU_PRESETS["h100-sxm"]  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_model_preset_parameter_count_is_within_3_percent_of_published(name: str) -> None:
    published, _where = PUBLISHED_PARAMS[name]
    assert model_preset(name).params == pytest.approx(published, rel=PARAMS_TOLERANCE)


def test_every_model_preset_has_a_published_parameter_count_to_check() -> None:
    assert set(MODEL_PRESETS) == set(PUBLISHED_PARAMS)


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_every_model_preset_is_named_after_its_key_and_cites_a_source(name: str) -> None:
    model = MODEL_PRESETS[name]
    assert model.name == name
    assert model.source


def test_llama2_70b_uses_grouped_query_attention_and_smaller_ones_do_not() -> None:
    assert model_preset("llama2-70b").kv_heads == 8
    assert model_preset("llama2-7b").kv_heads == model_preset("llama2-7b").heads
    assert model_preset("llama2-13b").kv_heads == model_preset("llama2-13b").heads


def test_llama3_405b_and_llama3_1_405b_share_one_shape() -> None:
    a, b = model_preset("llama3-405b"), model_preset("llama3.1-405b")
    assert (a.layers, a.hidden, a.heads, a.kv_heads, a.ffn_hidden, a.vocab) == (
        b.layers,
        b.hidden,
        b.heads,
        b.kv_heads,
        b.ffn_hidden,
        b.vocab,
    )
    assert (a.layers, a.hidden, a.heads, a.ffn_hidden, a.vocab) == (126, 16384, 128, 53248, 128256)


@pytest.mark.parametrize(
    ("name", "tied", "dropout"),
    [
        ("gpt3-175b", True, True),
        ("opt-175b", True, True),
        ("bloom-176b", True, False),
        ("llama3-70b", False, False),
        ("gpt-3.5-turbo-20b", False, False),
    ],
)
def test_model_presets_tie_embeddings_and_use_dropout_as_published(
    name: str, tied: bool, dropout: bool
) -> None:
    model = model_preset(name)
    assert model.is_tied is tied
    assert model.has_dropout is dropout


def test_lookup_is_case_insensitive() -> None:
    assert gpu_preset("H100-SXM") is GPU_PRESETS["h100-sxm"]
    assert model_preset("Llama3.1-70B") is MODEL_PRESETS["llama3.1-70b"]


def test_lookup_accepts_underscores_for_dashes_and_ignores_surrounding_spaces() -> None:
    assert gpu_preset("a100_sxm_80gb") is GPU_PRESETS["a100-sxm-80gb"]
    assert model_preset(" mt_nlg_530b ") is MODEL_PRESETS["mt-nlg-530b"]


def test_unknown_gpu_names_the_closest_presets() -> None:
    with pytest.raises(UnknownPresetError) as info:
        gpu_preset("h100")
    message = str(info.value)
    assert message.startswith("unknown GPU preset 'h100'; closest: ")
    assert "h100-sxm" in message


def test_unknown_model_names_the_closest_presets() -> None:
    with pytest.raises(UnknownPresetError, match="llama3-8b"):
        model_preset("llama3-7b")


def test_unknown_name_with_nothing_close_lists_every_preset_sorted() -> None:
    with pytest.raises(UnknownPresetError) as info:
        gpu_preset("tpu-v5p")
    assert str(info.value) == f"unknown GPU preset 'tpu-v5p'; known: {', '.join(sorted(GPU_PRESETS))}"


def test_unknown_preset_error_is_a_scenario_error_and_a_key_error() -> None:
    with pytest.raises(UnknownPresetError) as info:
        model_preset("gpt-5")
    assert isinstance(info.value, ScenarioError)
    assert isinstance(info.value, KeyError)
    assert not str(info.value).startswith('"')


def test_lookup_works_on_any_table_and_keeps_the_tables_spelling() -> None:
    table = {"alpha-one": 1, "beta": 2}
    assert lookup("thing", "ALPHA_ONE", table) == 1
    with pytest.raises(UnknownPresetError, match="closest: alpha-one"):
        lookup("thing", "alpha-on", table)


def test_lookup_rejects_a_non_string_name() -> None:
    with pytest.raises(UnknownPresetError, match="must be a string"):
        lookup("GPU", 100, GPU_PRESETS)  # type: ignore[arg-type]
