"""What a real A100 training fleet's telemetry looks like: quantile tables from the Acme trace.

Source of every table: the Shanghai AI Lab Acme trace, DCGM telemetry of the Seren and Kalos clusters
(8 × A100-SXM4-80GB per node), March–August 2023. Hu et al., "Characterization of Large Language Model
Development in the Datacenter", NSDI'24; data published under CC BY 4.0 (github.com/InternLM/AcmeTrace).
The tables are the 1,000-point CDFs of ../shared/traces/shanghai-ai-lab-acme/gpu_{power_w,temp_c,util}_cdf.csv
linearly interpolated at `ACME_QUANTILE_PCTS` and rounded to 0.1; `tests/sensors/test_simulated.py`
checks them against the CSVs. The product never reads the CSVs.

The simulated cluster uses them in three places:
- idle GPUs draw their power level from the idle part of the power distribution (`idle_power_w`),
  affinely rescaled for other GPU types by their idle and TDP power;
- the thermal model's steady state is calibrated so that an idle and a loaded GPU sit at the fleet's
  idle and loaded temperatures (`TEMP_AT_ZERO_POWER_C`, `THERMAL_RESISTANCE_C_PER_W`);
- idle GPUs report 0 % utilisation (`IDLE_GPU_UTIL_PCT`).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Percentiles at which the tables below are given (the tails at 1 % and 99 % resolve the idle floor and the
# above-TDP transients that a 5 % grid would miss).
ACME_QUANTILE_PCTS: Final[tuple[float, ...]] = (0.0, 1.0, *(float(p) for p in range(5, 100, 5)), 99.0, 100.0)

# DCGM board power, W (gpu_power_w_cdf.csv, columns seren_gpu_power_w and kalos_gpu_power_w).
ACME_SEREN_GPU_POWER_W: Final[tuple[float, ...]] = (
    15.4, 60.0, 61.8, 63.0, 64.0, 64.9, 66.2, 69.7, 76.5, 90.7, 93.6, 96.5,
    102.6, 118.3, 134.2, 212.0, 290.2, 336.9, 373.2, 395.1, 407.7, 436.6, 558.0,
)  # fmt: skip
ACME_KALOS_GPU_POWER_W: Final[tuple[float, ...]] = (
    55.7, 60.2, 61.9, 63.0, 63.9, 65.0, 66.4, 72.9, 90.4, 94.0, 96.9, 101.4,
    119.8, 148.7, 236.4, 325.3, 371.8, 388.7, 396.7, 403.6, 413.0, 439.7, 599.7,
)  # fmt: skip
# GPU (die) temperature, °C (gpu_temp_c_cdf.csv, columns seren_gpu_temp_c and kalos_gpu_temp_c).
ACME_SEREN_GPU_TEMP_C: Final[tuple[float, ...]] = (
    23.0, 25.0, 27.0, 28.0, 29.0, 30.0, 31.0, 33.0, 34.0, 35.0, 36.0, 39.0,
    41.0, 44.0, 48.0, 51.0, 53.0, 55.0, 58.0, 61.0, 65.0, 69.0, 80.0,
)  # fmt: skip
ACME_KALOS_GPU_TEMP_C: Final[tuple[float, ...]] = (
    15.0, 22.0, 25.0, 27.0, 28.0, 29.0, 30.0, 32.0, 34.0, 36.0, 38.0, 40.0,
    42.0, 44.0, 47.0, 49.0, 51.0, 54.0, 56.0, 58.0, 62.0, 66.0, 79.0,
)  # fmt: skip
# GPU utilisation (DCGM_FI_DEV_GPU_UTIL), % (gpu_util_cdf.csv, seren_gpu_util_pct and kalos_gpu_util_pct).
ACME_SEREN_GPU_UTIL_PCT: Final[tuple[float, ...]] = (
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 82.7, 97.0, 98.0, 99.0,
    99.0, 99.0, 99.0, 99.0, 99.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0,
)  # fmt: skip
ACME_KALOS_GPU_UTIL_PCT: Final[tuple[float, ...]] = (
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 61.0, 91.0, 97.0, 97.0, 98.0,
    98.0, 99.0, 99.0, 99.0, 99.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0,
)  # fmt: skip

# The GPU both Acme clusters run: A100-SXM4-80GB, TDP 400 W (A100 datasheet). Its idle floor, 60 W, is the
# power of the lowest Acme decile (p1–p10 = 60.0–63.0 W above) and the `a100-sxm-80gb` preset's idle_w.
ACME_GPU_TDP_W: Final = 400.0
ACME_GPU_IDLE_W: Final = 60.0

# The idle part of the power distribution: from p1 (p0 is a single 15 W sensor glitch in Seren) to the
# median (96.5 / 101.4 W). Every sample at or below the median is below the lowest power a training step
# draws on an A100 (its waiting phase, 60 + 0.15 × 340 = 111 W, twin.perf.power), so a simulated fleet
# whose idle GPUs draw from this band and whose other GPUs train reproduces the fleet median.
IDLE_QUANTILE_LOW: Final = 0.01
IDLE_QUANTILE_HIGH: Final = 0.50
# Share of a default fleet's GPUs that are training: the samples above the idle band.
BUSY_FLEET_FRACTION: Final = 1.0 - IDLE_QUANTILE_HIGH
# Idle GPUs report no kernel activity: Acme's utilisation is 0 % up to p30 in both clusters (above).
IDLE_GPU_UTIL_PCT: Final = 0.0

_PCT = np.asarray(ACME_QUANTILE_PCTS, dtype=np.float64) / 100.0
# The fleet's power quantile function: the mean of the two clusters' quantile functions (their
# Wasserstein barycentre), so that neither cluster's mix of jobs dominates.
_FLEET_POWER_W = (np.asarray(ACME_SEREN_GPU_POWER_W) + np.asarray(ACME_KALOS_GPU_POWER_W)) / 2.0
_FLEET_TEMP_C = (np.asarray(ACME_SEREN_GPU_TEMP_C) + np.asarray(ACME_KALOS_GPU_TEMP_C)) / 2.0


def fleet_power_quantile_w(q: FloatArray | float) -> FloatArray:
    """The A100 fleet's power at quantile(s) `q` in [0, 1], W (piecewise-linear between table points)."""
    return np.asarray(np.interp(q, _PCT, _FLEET_POWER_W), dtype=np.float64)


def fleet_temp_quantile_c(q: FloatArray | float) -> FloatArray:
    """The A100 fleet's GPU temperature at quantile(s) `q` in [0, 1], °C."""
    return np.asarray(np.interp(q, _PCT, _FLEET_TEMP_C), dtype=np.float64)


def rescale_a100_power_w(power_w: FloatArray, idle_w: float, tdp_w: float) -> FloatArray:
    """Map an A100 power level onto another GPU: affine in the idle→TDP range, W.

    P' = idle' + (P − 60 W) · (TDP' − idle') / (400 W − 60 W), so the A100's idle floor maps to the other
    GPU's idle power and its TDP to the other TDP; the identity for an A100-SXM4-80GB. Clipped at 0 W.
    """
    scale = (tdp_w - idle_w) / (ACME_GPU_TDP_W - ACME_GPU_IDLE_W)
    return np.maximum(0.0, idle_w + (power_w - ACME_GPU_IDLE_W) * scale)


def idle_power_w(u: FloatArray, idle_w: float, tdp_w: float) -> FloatArray:
    """Idle power levels for uniform draws `u` in [0, 1): the fleet's idle band, rescaled to the GPU, W."""
    q = IDLE_QUANTILE_LOW + np.asarray(u, dtype=np.float64) * (IDLE_QUANTILE_HIGH - IDLE_QUANTILE_LOW)
    return rescale_a100_power_w(fleet_power_quantile_w(q), idle_w, tdp_w)


# --- thermal calibration -----------------------------------------------------------------------------
# Steady-state die temperature is linear in board power, T = T0 + R·P (a first-order thermal network with
# a fixed inlet temperature). R and T0 are fitted through two points matched by quantile, the fleet's
# typical idle GPU (p25: 66.3 W, 30.5 °C) and loaded GPU (p90: 399.4 W, 59.5 °C):
# R = (59.5 − 30.5) / (399.4 − 66.3) = 0.087 °C/W, T0 = 30.5 − R·66.3 = 24.7 °C.
TEMP_FIT_IDLE_QUANTILE: Final = 0.25
TEMP_FIT_LOAD_QUANTILE: Final = 0.90
THERMAL_RESISTANCE_C_PER_W: Final = float(
    (fleet_temp_quantile_c(TEMP_FIT_LOAD_QUANTILE) - fleet_temp_quantile_c(TEMP_FIT_IDLE_QUANTILE))
    / (fleet_power_quantile_w(TEMP_FIT_LOAD_QUANTILE) - fleet_power_quantile_w(TEMP_FIT_IDLE_QUANTILE))
)
TEMP_AT_ZERO_POWER_C: Final = float(
    fleet_temp_quantile_c(TEMP_FIT_IDLE_QUANTILE)
    - THERMAL_RESISTANCE_C_PER_W * fleet_power_quantile_w(TEMP_FIT_IDLE_QUANTILE)
)
# Per-GPU spread of the temperature (position in the chassis, heatsink contact): from p10 to p40 the Acme
# fleet's temperature rises 27.5 → 35.5 °C while its power rises only 63.0 → 92.4 W (2.6 °C at R). Those
# quantiles are the idle band's p18–p80, about ±0.87σ of a normal spread, so σ ≈ (8.0 − 2.6) / 1.74 ≈ 3 °C.
GPU_TEMP_OFFSET_SD_C: Final = 3.0
