"""GPU presets: the accelerators a scenario can name in `cluster.gpu` (DESIGN §3), with their sources.

Conventions shared by every preset (per GPU, SI units):

- Peak rates are dense: a datasheet figure marked "with sparsity" is halved. `tf32_tflops` is the rate
  fp32 training gets on its GEMMs (`GpuSpec.peak_flops_per_s`); fp16 runs at the `bf16_tflops` rate.
- `hbm_bytes` = nominal capacity × 2**30. Vendors' HBM "GB" are binary in practice: nvidia-smi
  `memory.total` reads 32,510 MiB on V100-SXM2-32GB (zai-org/GLM-130B#32) and 32,768 MiB on V100 PCIe
  32GB (akash-network/provider-configs#90), 81,559 MiB on H100 80GB (wilicc/gpu-burn#114), and, as
  commonly reported, 40,960 / 81,920 MiB on A100 40GB / 80GB, 143,771 MiB on H200 "141GB", 183,359 MiB
  on B200 "180GB" (Vultr HGX B200 guide: "179 GB"), 189,471 MiB on GB200 "186GB"; ROCm lists the
  MI300X as 192 GiB. Nominal × 2**30 is thus within 1 GiB above what the driver exposes
  (`twin.perf.memory` subtracts the CUDA context). Decimal GB would understate capacity by 7 %.
- Memory and link bandwidths use decimal units as vendors state them (1 TB/s = 1e12 B/s). Link
  figures are per direction: a vendor's bidirectional number is halved.
- `inter_node_bandwidth_bytes_per_s`: the scale-out NICs of the reference system divided by its GPUs.
- `host_power_w` = (reference system max power - GPUs × TDP) / GPUs: CPUs, DRAM, NICs, switches, fans
  and PSU losses at the system's rated maximum. It is the max-power bound; measured training draw is
  lower (an HGX H100 node peaked at 8.4 kW of its 10.2 kW rating, Latif et al. 2024, arXiv
  2412.08602; the Acme Seren A100 servers' IPMI p95 is 5.0 kW of DGX A100's 6.5 kW,
  ../shared/traces/shanghai-ai-lab-acme/server_power_w_cdf_ipmi_seren.csv).
- `idle_w`: board power with no kernel running, from published nvidia-smi / DCGM readings; where no
  reading was found the derivation is stated at the constant.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from twin.perf.calibration import matmul_efficiency_for
from twin.perf.preset_lookup import lookup
from twin.perf.specs import GpuSpec

# --- units -------------------------------------------------------------------------------------------
HBM_BYTES_PER_NOMINAL_GB = float(2**30)  # see module doc: HBM "GB" on datasheets are GiB
BITS_PER_BYTE = 8  # network links are specified in bits per second

# --- host links (per direction) ----------------------------------------------------------------------
# NVIDIA datasheets quote x16 bidirectional: Gen3 32 GB/s (V100), Gen4 64 GB/s (A100),
# Gen5 128 GB/s (H100/H200/B200); halved for one direction.
PCIE_GEN3_X16_BYTES_PER_S = 16e9
PCIE_GEN4_X16_BYTES_PER_S = 32e9
PCIE_GEN5_X16_BYTES_PER_S = 64e9
# GB200: Grace reaches its GPUs over NVLink-C2C, 900 GB/s bidirectional (NVIDIA GB200 NVL72 product
# page; Grace Blackwell Superchip), i.e. 450 GB/s per direction.
NVLINK_C2C_BYTES_PER_S = 450e9

# --- scale-up links (per GPU, per direction) ---------------------------------------------------------
NVLINK2_V100_BYTES_PER_S = 150e9  # V100 SXM2: NVLink 300 GB/s (V100 datasheet)
NVLINK3_A100_BYTES_PER_S = 300e9  # A100 SXM: NVLink 600 GB/s (A100 datasheet)
NVLINK4_H100_BYTES_PER_S = 450e9  # H100/H200 SXM: NVLink 900 GB/s (H100, H200 datasheets)
NVLINK5_BLACKWELL_BYTES_PER_S = 900e9  # B200/GB200: NVLink 1.8 TB/s (DGX B200, GB200 NVL72 pages)
# MI300X: 7 Infinity Fabric (xGMI) links to the other 7 OAMs of the platform, 128 GB/s bidirectional
# each (AMD Instinct MI300X data sheet / platform brief: 896 GB/s aggregate peer bandwidth).
XGMI_MI300X_BYTES_PER_S = 7 * 64e9

# --- scale-out NICs ------------------------------------------------------------------------------------
EDR_BITS_PER_S = 100e9  # InfiniBand EDR / ConnectX-5
HDR_BITS_PER_S = 200e9  # InfiniBand HDR / ConnectX-6
NDR_BITS_PER_S = 400e9  # InfiniBand NDR / ConnectX-7

# --- reference systems ---------------------------------------------------------------------------------
GPUS_PER_DGX = 8
# DGX-1 with V100 (the SXM2 32GB system; DGX-2 uses 350 W SXM3 parts): 3,500 W max (DGX-1 datasheet),
# four 100 Gb/s InfiniBand NICs (NVIDIA DGX-1 with V100 system architecture white paper),
# 2 × Xeon E5-2698 v4 at 135 W TDP (Intel ARK).
DGX1_MAX_POWER_W = 3_500.0
DGX1_EDR_NICS = 4
DGX1_CPU_TDP_W = 135.0
# DGX A100: 6.5 kW max (DGX A100 user guide / datasheet), 8 × single-port ConnectX-6 200 Gb/s HDR for
# the compute fabric.
DGX_A100_MAX_POWER_W = 6_500.0
# DGX H100 and DGX H200: 10.2 kW max (DGX H100/H200 user guide, power specifications), 8 × ConnectX-7
# 400 Gb/s; 2 × Xeon Platinum 8480C at 350 W TDP (Intel ARK, 8480+).
DGX_H100_MAX_POWER_W = 10_200.0
DGX_H100_CPU_TDP_W = 350.0
# DGX B200: 14.3 kW max, 8 × ConnectX-7 400 Gb/s (DGX B200 user guide, "Introduction to NVIDIA DGX
# B200 Systems").
DGX_B200_MAX_POWER_W = 14_300.0
# GB200 NVL72: 72 GPUs, ~120 kW per rack (NVIDIA GTC 2024 rack figure, widely reported; 18 compute
# trays of up to 5.4 kW plus 9 NVLink switch trays). Each 4-GPU compute tray has 4 × 400 Gb/s
# ConnectX-7 class NICs (DGX GB200 reference; MLPerf Inference v6.1 Crusoe GB200-NVL72 system file).
GB200_NVL72_RACK_POWER_W = 120_000.0
GB200_NVL72_GPUS = 72
# PCIe-card servers (no NVSwitch): NVIDIA Enterprise Reference Architecture "PCIe Optimized 2-8-5"
# (2 CPUs, 8 GPUs, 5 NICs: 4 east-west + 1 north-south), i.e. one 400 Gb/s NIC per two GPUs.
PCIE_SERVER_GPUS_PER_EAST_WEST_NIC = 2

# --- board power (TDP) -----------------------------------------------------------------------------------
V100_SXM2_TDP_W = 300.0  # V100 datasheet
V100_PCIE_TDP_W = 250.0  # V100 datasheet
A100_SXM_TDP_W = 400.0  # A100 datasheet (40GB and 80GB SXM)
H100_SXM_TDP_W = 700.0  # H100 datasheet ("up to 700 W")
H100_PCIE_TDP_W = 350.0  # H100 datasheet ("300-350 W"), upper end
H200_TDP_W = 700.0  # H200 datasheet (SXM, "up to 700 W")
B200_TDP_W = 1_000.0  # HGX B200 (Blackwell datasheet: B200 1,000 W)
GB200_TDP_W = 1_200.0  # per GPU in GB200 NVL72 (Blackwell datasheet: GB200 1,200 W per GPU)
MI300X_TDP_W = 750.0  # AMD Instinct MI300X data sheet (OAM, 750 W)

# --- idle power --------------------------------------------------------------------------------------------
# V100-SXM2-32GB at 0 % utilisation: 56.6 W (nvidia-smi -q in NVIDIA/nvidia-docker#1076) and 53 W
# (nvidia-smi in zai-org/GLM-130B#32, formerly THUDM).
V100_SXM2_IDLE_W = 55.0
# A100-SXM4-40GB at 0 % utilisation: 52.5-54.3 W (nvidia-smi log, huggingface.co/spaces/seawolf2357/
# PLUS_Lab_GPUs gpus.csv, 2025-07-03).
A100_SXM_40GB_IDLE_W = 53.0
# A100-SXM4-80GB: DCGM power floor of the Acme clusters, lowest decile 58-61 W
# (../shared/traces/shanghai-ai-lab-acme/gpu_power_w_cdf.csv; Hu et al., NSDI'24).
A100_SXM_80GB_IDLE_W = 60.0
# PCIe boards idle lower than SXM modules of the same chip: A100 80GB PCIe 43.9-47.8 W vs A100-SXM4
# 52.5-54.3 W in the same PLUS Lab log, a ratio of ~46/53. Applied to V100 and H100 PCIe, for which no
# reading was found.
PCIE_TO_SXM_IDLE_RATIO = 46.0 / 53.0
# H200 SXM idle: 80.3 W (api.serialalice.pt GPU energy benchmark, nvidia-smi) and 73.7 W (RunPod
# H200 dormant state, conservemode.com validation study); midpoint.
H200_IDLE_W = 77.0
# H100 SXM: no bare-idle reading found; same GH100 die and board power as H200 with 5 instead of 6
# HBM stacks, so taken slightly below the H200 figure (an estimate).
H100_SXM_IDLE_W = 70.0
# B200 (air-cooled HGX) idle: 137 W (comparison reading in ROCm/legacy-rocm-build#5219, "MI355 Power
# Draw & Temps is Insanely High at Idle"). GB200 uses the same GPU; no separate reading was found.
B200_IDLE_W = 137.0
# MI300X: 191 W socket power at 0 % GPU activity with a resident process (rocm-smi in
# ROCm/legacy-rocm-build#5231); no reading without a process was found, so this is an upper estimate.
MI300X_IDLE_W = 190.0


def host_power_per_gpu_w(system_max_w: float, gpus: int, gpu_tdp_w: float) -> float:
    """Non-GPU power per GPU of a reference system at its rated maximum: (max - gpus × TDP) / gpus."""
    return (system_max_w - gpus * gpu_tdp_w) / gpus


# DGX-1's non-GPU power, with its CPUs swapped for DGX H100's: host of an 8-card Hopper PCIe server.
_DGX1_HOST_W = DGX1_MAX_POWER_W - GPUS_PER_DGX * V100_SXM2_TDP_W
HOPPER_PCIE_SERVER_HOST_W = _DGX1_HOST_W + 2 * (DGX_H100_CPU_TDP_W - DGX1_CPU_TDP_W)

_GPU_PRESETS: dict[str, GpuSpec] = {
    "v100-sxm2-32gb": GpuSpec(
        name="v100-sxm2-32gb",
        fp32_tflops=15.7,  # V100 datasheet (SXM2): FP32 15.7 TFLOPS
        tf32_tflops=15.7,  # no TF32 on Volta: fp32 GEMMs run on the CUDA cores
        bf16_tflops=125.0,  # V100 datasheet: Tensor 125 TFLOPS (fp16; Volta has no bf16 tensor cores)
        fp8_tflops=None,
        hbm_bytes=32 * HBM_BYTES_PER_NOMINAL_GB,  # V100 datasheet: 32 GB HBM2
        hbm_bandwidth_bytes_per_s=900e9,  # V100 datasheet: 900 GB/s
        tdp_w=V100_SXM2_TDP_W,
        idle_w=V100_SXM2_IDLE_W,
        intra_node_bandwidth_bytes_per_s=NVLINK2_V100_BYTES_PER_S,
        inter_node_bandwidth_bytes_per_s=DGX1_EDR_NICS * EDR_BITS_PER_S / BITS_PER_BYTE / GPUS_PER_DGX,
        pcie_bandwidth_bytes_per_s=PCIE_GEN3_X16_BYTES_PER_S,
        host_power_w=host_power_per_gpu_w(DGX1_MAX_POWER_W, GPUS_PER_DGX, V100_SXM2_TDP_W),
        matmul_efficiency=matmul_efficiency_for("v100-sxm2-32gb"),
        source="NVIDIA V100 datasheet (SXM2 32GB); reference system DGX-1 with V100",
    ),
    "v100-pcie-32gb": GpuSpec(
        name="v100-pcie-32gb",
        fp32_tflops=14.0,  # V100 datasheet (PCIe): FP32 14 TFLOPS
        tf32_tflops=14.0,  # no TF32 on Volta
        bf16_tflops=112.0,  # V100 datasheet (PCIe): Tensor 112 TFLOPS (fp16)
        fp8_tflops=None,
        hbm_bytes=32 * HBM_BYTES_PER_NOMINAL_GB,  # V100 datasheet: 32 GB HBM2
        hbm_bandwidth_bytes_per_s=900e9,  # V100 datasheet: 900 GB/s
        tdp_w=V100_PCIE_TDP_W,
        idle_w=V100_SXM2_IDLE_W * PCIE_TO_SXM_IDLE_RATIO,
        intra_node_bandwidth_bytes_per_s=PCIE_GEN3_X16_BYTES_PER_S,  # no NVLink: peers talk over PCIe
        # Assumption: the DGX-1 NIC ratio (one 100 Gb/s EDR NIC per two GPUs).
        inter_node_bandwidth_bytes_per_s=DGX1_EDR_NICS * EDR_BITS_PER_S / BITS_PER_BYTE / GPUS_PER_DGX,
        pcie_bandwidth_bytes_per_s=PCIE_GEN3_X16_BYTES_PER_S,
        # DGX-1 has no NVSwitch either: its non-GPU power stands in for an 8-card V100 PCIe server.
        host_power_w=_DGX1_HOST_W / GPUS_PER_DGX,
        matmul_efficiency=matmul_efficiency_for("v100-pcie-32gb"),
        source="NVIDIA V100 datasheet (PCIe 32GB); host and NICs as DGX-1 (assumption)",
    ),
    "a100-sxm-40gb": GpuSpec(
        name="a100-sxm-40gb",
        fp32_tflops=19.5,  # A100 datasheet: FP32 19.5 TFLOPS
        tf32_tflops=156.0,  # A100 datasheet: TF32 156 TFLOPS (312 with sparsity)
        bf16_tflops=312.0,  # A100 datasheet: BF16/FP16 312 TFLOPS (624 with sparsity)
        fp8_tflops=None,
        hbm_bytes=40 * HBM_BYTES_PER_NOMINAL_GB,  # A100 datasheet: 40 GB HBM2
        hbm_bandwidth_bytes_per_s=1_555e9,  # A100 datasheet: 1,555 GB/s
        tdp_w=A100_SXM_TDP_W,
        idle_w=A100_SXM_40GB_IDLE_W,
        intra_node_bandwidth_bytes_per_s=NVLINK3_A100_BYTES_PER_S,
        inter_node_bandwidth_bytes_per_s=HDR_BITS_PER_S / BITS_PER_BYTE,  # DGX A100: 1 HDR NIC per GPU
        pcie_bandwidth_bytes_per_s=PCIE_GEN4_X16_BYTES_PER_S,
        host_power_w=host_power_per_gpu_w(DGX_A100_MAX_POWER_W, GPUS_PER_DGX, A100_SXM_TDP_W),
        matmul_efficiency=matmul_efficiency_for("a100-sxm-40gb"),
        source="NVIDIA A100 datasheet (SXM4 40GB); reference system DGX A100 (320GB)",
    ),
    "a100-sxm-80gb": GpuSpec(
        name="a100-sxm-80gb",
        fp32_tflops=19.5,  # A100 datasheet: FP32 19.5 TFLOPS
        tf32_tflops=156.0,  # A100 datasheet: TF32 156 TFLOPS (312 with sparsity)
        bf16_tflops=312.0,  # A100 datasheet: BF16/FP16 312 TFLOPS (624 with sparsity)
        fp8_tflops=None,
        hbm_bytes=80 * HBM_BYTES_PER_NOMINAL_GB,  # A100 datasheet: 80 GB HBM2e
        hbm_bandwidth_bytes_per_s=2_039e9,  # A100 datasheet: 2,039 GB/s
        tdp_w=A100_SXM_TDP_W,
        idle_w=A100_SXM_80GB_IDLE_W,
        intra_node_bandwidth_bytes_per_s=NVLINK3_A100_BYTES_PER_S,
        inter_node_bandwidth_bytes_per_s=HDR_BITS_PER_S / BITS_PER_BYTE,  # DGX A100: 1 HDR NIC per GPU
        pcie_bandwidth_bytes_per_s=PCIE_GEN4_X16_BYTES_PER_S,
        host_power_w=host_power_per_gpu_w(DGX_A100_MAX_POWER_W, GPUS_PER_DGX, A100_SXM_TDP_W),
        matmul_efficiency=matmul_efficiency_for("a100-sxm-80gb"),
        source="NVIDIA A100 datasheet (SXM4 80GB); reference system DGX A100 (640GB)",
    ),
    "h100-sxm": GpuSpec(
        name="h100-sxm",
        fp32_tflops=67.0,  # H100 datasheet (SXM): FP32 67 TFLOPS (white paper: 66.9)
        tf32_tflops=494.7,  # H100 white paper: TF32 494.7 dense (989.4 with sparsity)
        bf16_tflops=989.4,  # H100 white paper: BF16/FP16 989.4 dense (1,978.9 with sparsity)
        fp8_tflops=1_978.9,  # H100 white paper: FP8 1,978.9 dense (3,957.8 with sparsity)
        hbm_bytes=80 * HBM_BYTES_PER_NOMINAL_GB,  # H100 datasheet: 80 GB HBM3
        hbm_bandwidth_bytes_per_s=3.35e12,  # H100 datasheet: 3.35 TB/s
        tdp_w=H100_SXM_TDP_W,
        idle_w=H100_SXM_IDLE_W,
        intra_node_bandwidth_bytes_per_s=NVLINK4_H100_BYTES_PER_S,
        inter_node_bandwidth_bytes_per_s=NDR_BITS_PER_S / BITS_PER_BYTE,  # DGX H100: 1 NDR NIC per GPU
        pcie_bandwidth_bytes_per_s=PCIE_GEN5_X16_BYTES_PER_S,
        host_power_w=host_power_per_gpu_w(DGX_H100_MAX_POWER_W, GPUS_PER_DGX, H100_SXM_TDP_W),
        matmul_efficiency=matmul_efficiency_for("h100-sxm"),
        source="NVIDIA H100 datasheet and Hopper white paper (SXM5 80GB); reference system DGX H100",
    ),
    "h100-pcie": GpuSpec(
        name="h100-pcie",
        fp32_tflops=51.0,  # H100 datasheet (PCIe): FP32 51 TFLOPS
        tf32_tflops=378.0,  # H100 datasheet (PCIe): TF32 756 with sparsity
        bf16_tflops=756.5,  # H100 datasheet (PCIe): BF16/FP16 1,513 with sparsity
        fp8_tflops=1_513.0,  # H100 datasheet (PCIe): FP8 3,026 with sparsity
        hbm_bytes=80 * HBM_BYTES_PER_NOMINAL_GB,  # H100 datasheet (PCIe): 80 GB HBM2e
        hbm_bandwidth_bytes_per_s=2.0e12,  # H100 datasheet (PCIe): 2 TB/s
        tdp_w=H100_PCIE_TDP_W,
        idle_w=H100_SXM_IDLE_W * PCIE_TO_SXM_IDLE_RATIO,
        # Without the optional 2-card NVLink bridge (600 GB/s) an 8-card server's peers use PCIe.
        intra_node_bandwidth_bytes_per_s=PCIE_GEN5_X16_BYTES_PER_S,
        inter_node_bandwidth_bytes_per_s=NDR_BITS_PER_S / BITS_PER_BYTE / PCIE_SERVER_GPUS_PER_EAST_WEST_NIC,
        pcie_bandwidth_bytes_per_s=PCIE_GEN5_X16_BYTES_PER_S,
        host_power_w=HOPPER_PCIE_SERVER_HOST_W / GPUS_PER_DGX,
        matmul_efficiency=matmul_efficiency_for("h100-pcie"),
        source="NVIDIA H100 datasheet (PCIe 80GB); NICs per NVIDIA Enterprise RA PCIe 2-8-5",
    ),
    "h200": GpuSpec(
        name="h200",
        fp32_tflops=67.0,  # H200 datasheet (SXM): FP32 67 TFLOPS, same GH100 compute as H100 SXM
        tf32_tflops=494.7,  # H200 datasheet: TF32 989 with sparsity (H100 white paper: 494.7 dense)
        bf16_tflops=989.4,  # H200 datasheet: BF16/FP16 1,979 with sparsity
        fp8_tflops=1_978.9,  # H200 datasheet: FP8 3,958 with sparsity
        hbm_bytes=141 * HBM_BYTES_PER_NOMINAL_GB,  # H200 datasheet: 141 GB HBM3e
        hbm_bandwidth_bytes_per_s=4.8e12,  # H200 datasheet: 4.8 TB/s
        tdp_w=H200_TDP_W,
        idle_w=H200_IDLE_W,
        intra_node_bandwidth_bytes_per_s=NVLINK4_H100_BYTES_PER_S,
        inter_node_bandwidth_bytes_per_s=NDR_BITS_PER_S / BITS_PER_BYTE,  # DGX H200: 1 NDR NIC per GPU
        pcie_bandwidth_bytes_per_s=PCIE_GEN5_X16_BYTES_PER_S,
        host_power_w=host_power_per_gpu_w(DGX_H100_MAX_POWER_W, GPUS_PER_DGX, H200_TDP_W),
        matmul_efficiency=matmul_efficiency_for("h200"),
        source="NVIDIA H200 datasheet (SXM 141GB); reference system DGX H200",
    ),
    "b200": GpuSpec(
        name="b200",
        fp32_tflops=75.0,  # HGX B200 spec: FP32 600 TFLOPS per 8 GPUs
        tf32_tflops=1_100.0,  # Blackwell datasheet (HGX B200): TF32 2.2 PFLOPS with sparsity
        bf16_tflops=2_250.0,  # HGX B200: BF16/FP16 4.5 PFLOPS with sparsity per GPU (36 per 8)
        fp8_tflops=4_500.0,  # DGX B200 datasheet: 72 PFLOPS FP8 training per 8 GPUs, with sparsity
        # DGX B200: 1,440 GB total = 180 GB per GPU usable of the 192 GB of HBM3e fitted (8 stacks);
        # nvidia-smi shows 183,359 MiB. The usable figure is what training can allocate.
        hbm_bytes=180 * HBM_BYTES_PER_NOMINAL_GB,
        # DGX B200 datasheet: 64 TB/s per 8 GPUs (later NVIDIA pages list 7.7 TB/s for the 180 GB part).
        hbm_bandwidth_bytes_per_s=8.0e12,
        tdp_w=B200_TDP_W,
        idle_w=B200_IDLE_W,
        intra_node_bandwidth_bytes_per_s=NVLINK5_BLACKWELL_BYTES_PER_S,
        inter_node_bandwidth_bytes_per_s=NDR_BITS_PER_S / BITS_PER_BYTE,  # DGX B200: 8 × CX-7 400 Gb/s
        pcie_bandwidth_bytes_per_s=PCIE_GEN5_X16_BYTES_PER_S,  # DGX B200 host: Xeon 8570, PCIe Gen5
        host_power_w=host_power_per_gpu_w(DGX_B200_MAX_POWER_W, GPUS_PER_DGX, B200_TDP_W),
        matmul_efficiency=matmul_efficiency_for("b200"),
        source="NVIDIA DGX B200 datasheet / user guide and HGX B200 spec; reference system DGX B200",
    ),
    "gb200": GpuSpec(
        name="gb200",
        fp32_tflops=80.0,  # GB200 NVL72 spec: FP32 5,760 TFLOPS per 72 GPUs
        tf32_tflops=1_250.0,  # GB200 NVL72: TF32 180 PFLOPS per 72 GPUs, with sparsity
        bf16_tflops=2_500.0,  # GB200 NVL72: BF16/FP16 360 PFLOPS per 72 GPUs, with sparsity
        fp8_tflops=5_000.0,  # GB200 NVL72: FP8 720 PFLOPS per 72 GPUs, with sparsity
        # GB200 NVL72: 13.4 TB HBM3e per 72 GPUs = 186 GB per GPU usable (192 GB fitted); MLPerf system
        # descriptions list "186 GB".
        hbm_bytes=186 * HBM_BYTES_PER_NOMINAL_GB,
        hbm_bandwidth_bytes_per_s=8.0e12,  # GB200 NVL72: 576 TB/s per 72 GPUs
        tdp_w=GB200_TDP_W,
        idle_w=B200_IDLE_W,
        intra_node_bandwidth_bytes_per_s=NVLINK5_BLACKWELL_BYTES_PER_S,  # NVL72: 130 TB/s per 72 GPUs
        inter_node_bandwidth_bytes_per_s=NDR_BITS_PER_S / BITS_PER_BYTE,  # 1 × 400 Gb/s NIC per GPU
        pcie_bandwidth_bytes_per_s=NVLINK_C2C_BYTES_PER_S,
        host_power_w=host_power_per_gpu_w(GB200_NVL72_RACK_POWER_W, GB200_NVL72_GPUS, GB200_TDP_W),
        matmul_efficiency=matmul_efficiency_for("gb200"),
        source="NVIDIA GB200 NVL72 specifications (per GPU of the rack); reference system GB200 NVL72",
    ),
    "mi300x": GpuSpec(
        name="mi300x",
        # AMD MI300X data sheet: peak FP32 vector 163.4 TFLOPs (FP64 vector is 81.7).
        fp32_tflops=163.4,
        tf32_tflops=653.7,  # AMD MI300X data sheet: TF32 matrix 653.7 (1,307.4 with sparsity)
        bf16_tflops=1_307.4,  # AMD MI300X data sheet: BF16/FP16 matrix 1,307.4 (2,614.9 with sparsity)
        fp8_tflops=2_614.9,  # AMD MI300X data sheet: FP8 2,614.9 (5,229.8 with sparsity)
        hbm_bytes=192 * HBM_BYTES_PER_NOMINAL_GB,  # AMD MI300X data sheet: 192 GB HBM3
        hbm_bandwidth_bytes_per_s=5.3e12,  # AMD MI300X data sheet: 5.3 TB/s
        tdp_w=MI300X_TDP_W,
        idle_w=MI300X_IDLE_W,
        intra_node_bandwidth_bytes_per_s=XGMI_MI300X_BYTES_PER_S,
        # 8-GPU MI300X platforms ship one 400 Gb/s NIC per GPU (Azure ND MI300X v5: 8 × 400 Gb/s NDR).
        inter_node_bandwidth_bytes_per_s=NDR_BITS_PER_S / BITS_PER_BYTE,
        pcie_bandwidth_bytes_per_s=PCIE_GEN5_X16_BYTES_PER_S,  # MI300X: PCIe Gen5 x16 host link
        # No published max system power for an 8 × MI300X platform: DGX H100 (same class: 2 x86
        # sockets, 8 OAM/SXM modules, 8 × 400 Gb/s NICs) stands in.
        host_power_w=host_power_per_gpu_w(DGX_H100_MAX_POWER_W, GPUS_PER_DGX, H100_SXM_TDP_W),
        matmul_efficiency=matmul_efficiency_for("mi300x"),
        source="AMD Instinct MI300X data sheet; host power as DGX H100 (assumption)",
    ),
}

GPU_PRESETS: Mapping[str, GpuSpec] = MappingProxyType(_GPU_PRESETS)


def gpu_preset(name: str) -> GpuSpec:
    """The GPU preset called `name` (case-insensitive, `_` for `-`).

    Raises `UnknownPresetError` listing the closest preset names.
    """
    return lookup("GPU", name, GPU_PRESETS)
