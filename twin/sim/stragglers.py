"""Stragglers: iteration-time noise across workers, from Alibaba PAI per-worker mini-batch times.

Data: ../shared/traces/alibaba-gpu-v2020-pai/mini-batch-time/ (Alibaba cluster-trace-gpu-v2020; Xiao et
al., "AntMan", OSDI'20). `coefficient_variation.csv` holds, for 100 distributed jobs of 10 workers, the
coefficient of variation (σ/μ over workers) of every iteration's mini-batch time; `job_{1..4}_norm.csv`
hold four jobs' per-worker normalised times.

Model. Worker i's time for one step is t·r_i, with r_i iid lognormal of mean 1 and CoV c (positive and
right-skewed, like the PAI per-worker times): σ² = ln(1 + c²), r = exp(−σ²/2 + σZ). A synchronous job
waits for its slowest worker, so its step takes t·max_i r_i; over W workers

    E[max r] = ∫ exp(−σ²/2 + σx) f_W(x) dx,   f_W(x) = W φ(x) Φ(x)^(W−1)   (density of the max of W N(0,1)),

and likewise E[(max r)²] with exp(−σ² + 2σx). Both integrals are evaluated by quadrature. A chunk of k
steps lasts k·t·m with m the mean of k iid step maxima: mean E[max r], variance Var[max r]/k (steps
independent: persistent stragglers are not modelled); m is drawn lognormal with those two moments.
W is the job's GPU count (every GPU is a rank of the synchronous step).

Check against the data (tests/sim/test_stragglers.py): for PAI jobs 1–3 the measured mean of (slowest of
10 workers / mean worker) is 1.110, 1.124, 1.105; the model at each job's RMS CoV gives 1.107, 1.138,
1.099 (within 1.3 %). Job 4, whose workers swing 0.2–3.9× the mean, is not lognormal: 2.33 vs 2.07.
With c = 0.0352 and W = 16,384, E[max r] ≈ 1.15: the job runs ~15 % slower than its noise-free step.

Default c: the 10th percentile over the 100 PAI jobs of each job's median per-iteration CoV (0.0352).
ASSUMPTION: PAI workers hold 20–50 % of a GPU on a shared cluster (mini-batch-time_README.md), so their
noise exceeds a dedicated training cluster's; the quietest decile of PAI jobs is taken as the analogue.
Note that `twin.perf` is calibrated on measured step times that already contain their runs' noise, so
stragglers are off unless a spec asks for them.
"""

from __future__ import annotations

import csv
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from twin.errors import ScenarioError
from twin.sim.spec import StragglerSpec

PAI_SUBDIR = Path("alibaba-gpu-v2020-pai") / "mini-batch-time"
PAI_COV_FILE = "coefficient_variation.csv"
# ASSUMPTION (module doc): the quietest decile of PAI jobs stands for a dedicated training cluster.
DEFAULT_COV_QUANTILE = 0.10
# Fallback when the trace file is absent: the same statistic computed from coefficient_variation.csv
# (p10 over the 100 jobs of the per-job median CoV = 0.0352).
PAI_P10_MEDIAN_COV = 0.0352
# Quadrature grid for the max of W standard normals: the max of up to 10^7 normals stays below ~6σ and
# above -8σ with negligible mass outside; 16,001 points give E[max of 10] = 1.53875 (exact 1.53875).
_GRID = np.linspace(-8.0, 8.0, 16_001)


def default_traces_dir() -> Path:
    """../shared/traces beside the checkout (as `twin validate` finds ../shared/calibration)."""
    return Path(__file__).resolve().parents[3] / "shared" / "traces"


def pai_job_covs(path: Path) -> np.ndarray:
    """Per-job median (over iterations) of the per-iteration CoV across workers, one value per job."""
    medians: list[float] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)  # header: job, iteration indices
        for row in reader:
            values = [float(v) for v in row[1:] if v.strip()]
            if values:
                medians.append(float(np.median(values)))
    if not medians:
        raise ScenarioError(f"{path}: no CoV rows found.")
    return np.asarray(medians, dtype=np.float64)


def straggler_spec(
    *, cov: float | None = None, quantile: float | None = None, traces_dir: Path | None = None
) -> StragglerSpec:
    """A `StragglerSpec` from an explicit CoV, or from a quantile of the PAI per-job CoVs.

    Falls back to `PAI_P10_MEDIAN_COV` (with a note in `source`) when the trace file is absent and no
    quantile other than the default was asked for.
    """
    if cov is not None:
        if isinstance(cov, bool) or not math.isfinite(cov) or not 0.0 <= cov < 1.0:
            raise ScenarioError(f"stragglers.cov(={cov!r}) must be in [0, 1).")
        return StragglerSpec(cov=float(cov), source="stragglers.cov (given)")
    q = DEFAULT_COV_QUANTILE if quantile is None else quantile
    if isinstance(q, bool) or not math.isfinite(q) or not 0.0 <= q <= 1.0:
        raise ScenarioError(f"stragglers.quantile(={quantile!r}) must be in [0, 1].")
    path = (traces_dir or default_traces_dir()) / PAI_SUBDIR / PAI_COV_FILE
    if not path.is_file():
        if q != DEFAULT_COV_QUANTILE:
            raise ScenarioError(f"stragglers.quantile needs the PAI trace, not found at {path}.")
        return StragglerSpec(
            cov=PAI_P10_MEDIAN_COV,
            source=f"PAI p10 median CoV {PAI_P10_MEDIAN_COV} (built-in: {path} not found)",
        )
    value = float(np.quantile(pai_job_covs(path), q))
    return StragglerSpec(cov=value, source=f"{path.name}: q{q:g} of per-job median CoV = {value:.4f}")


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return np.asarray([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x], dtype=np.float64)


_LOG_PHI = -0.5 * _GRID**2 - 0.5 * math.log(2.0 * math.pi)
_LOG_CDF = np.log(np.maximum(_normal_cdf(_GRID), np.finfo(np.float64).tiny))


def _max_density(workers: int) -> np.ndarray:
    """f_W on the grid, normalised by the trapezoid rule."""
    log_f = math.log(workers) + _LOG_PHI + (workers - 1) * _LOG_CDF
    f = np.exp(log_f - log_f.max())
    return np.asarray(f / np.trapezoid(f, _GRID), dtype=np.float64)


@lru_cache(maxsize=256)
def expected_max_standard_normal(workers: int) -> float:
    """E[max of `workers` iid N(0,1)] by quadrature (0 for one worker, 1.5388 for ten)."""
    if workers < 1:
        raise ScenarioError(f"workers(={workers}) must be >= 1.")
    return float(np.trapezoid(_GRID * _max_density(workers), _GRID))


@lru_cache(maxsize=256)
def step_multiplier_moments(cov: float, workers: int) -> tuple[float, float]:
    """Mean and variance of max over `workers` of lognormal(mean 1, CoV `cov`) (module doc formulas)."""
    if workers < 1:
        raise ScenarioError(f"workers(={workers}) must be >= 1.")
    if cov == 0.0:
        return 1.0, 0.0
    sigma2 = math.log1p(cov * cov)
    sigma = math.sqrt(sigma2)
    f = _max_density(workers)
    m1 = float(np.trapezoid(np.exp(-sigma2 / 2.0 + sigma * _GRID) * f, _GRID))
    m2 = float(np.trapezoid(np.exp(-sigma2 + 2.0 * sigma * _GRID) * f, _GRID))
    return m1, max(0.0, m2 - m1 * m1)


class StragglerModel:
    """Chunk-time multipliers for one job on `workers` GPUs."""

    __slots__ = ("cov", "mean", "variance", "workers")

    def __init__(self, spec: StragglerSpec, workers: int) -> None:
        self.cov = spec.cov
        self.workers = workers
        self.mean, self.variance = step_multiplier_moments(spec.cov, workers)

    def chunk_multipliers(self, rng: np.random.Generator, steps: np.ndarray) -> np.ndarray:
        """One multiplier per chunk of `steps[i]` steps: lognormal with mean E[max r], var Var/k."""
        if self.variance == 0.0:
            return np.full(steps.shape, self.mean)
        var = self.variance / np.maximum(steps, 1)
        s2 = np.log1p(var / (self.mean * self.mean))
        return np.asarray(
            np.exp(math.log(self.mean) - s2 / 2.0 + np.sqrt(s2) * rng.standard_normal(steps.shape)),
            dtype=np.float64,
        )
