"""Online calibration: learn each running job's efficiency and power factors from what it is observed doing.

The performance core predicts a job's step time and GPU power from its specs; a live job reports its step
times (job events) and its GPUs their power (telemetry). A `Calibrator` keeps, per job and per cluster,

- an **efficiency scale** `s`: the `efficiency_scale` that makes `twin.perf.estimate.estimate` reproduce the
  observed step time, and
- a **power scale** `p`: observed mean GPU power / the power the core predicts at that efficiency scale,

so that projections and what-ifs for the job can call `estimate(..., efficiency_scale=s)` and multiply power
by `p`. Pure: no I/O, no clock; the caller feeds observations in (`observe_step`, `observe_power`) or builds
a calibrator from a `TwinState` snapshot (`calibrate_from_state`).

**From a step time to an efficiency scale.** `efficiency_scale` multiplies the achieved GEMM efficiency (and
fused attention's, capped at 1) in `twin.perf.step`; element-wise HBM work, host dispatch floors,
collectives, pipeline sends and the optimizer step do not scale, and ZeRO overlap terms depend on compute
time. Step time is therefore *not* inversely proportional to the scale: T(s) ≈ A/s + B with kinks. We
tabulate T(s) with `estimate` on a geometric grid (`PerfCurve`), enforce monotonicity, and invert by
log-log interpolation between the two grid points that bracket the observation (a root find on a
tabulated monotone function). The grid is refined where it bends (the host-dispatch floor, overlap kinks)
until interpolation errs by < `CURVE_LOG_TOLERANCE` in ln T; the tests measure < 2e-4. A step faster
than the model allows even at peak GEMM efficiency, or slower than `MIN_EFFICIENCY_SCALE`, is clamped to the
grid's end and counted.

**Estimator (per job, per quantity; in log space, z = ln s or ln p).**
- Robust location: the median m of the job's last `WINDOW_OBSERVATIONS` values. The median's breakdown
  point is 50 %: stragglers, warm-up steps and checkpoint stalls (all one-sided, slow) move it by at most one
  rank per outlier, where a mean, an EWMA or a Huber update with a fixed clip still follows them (3×
  stragglers in 10 % of steps lengthen the mean step by 20 %; in the tests the scale that explains the mean
  step is 0.64 for a job at 0.8, while the median's is 0.79). The window is the smoothing: it forgets the
  past after W observations, so a job that really slows down (a degraded node) is tracked within W/2.
- Robust spread: σ² = (ν₀σ₀² + n·σ_MAD²) / (ν₀ + n), σ_MAD = 1.4826·MAD (Rousseeuw & Croux 1993), i.e. the
  scale of the posterior of a normal variance (known centre) under a scaled-inverse-χ² prior of ν₀
  pseudo-observations at σ₀ (Gelman et al., *Bayesian Data Analysis*, 3rd ed., §2.6), so one or two
  observations do not claim zero noise.
- Shrinkage towards the cluster (the normal–normal hierarchical model, BDA3 §5.4): the job's factor is
  ẑ = w·m + (1 − w)·μ, w = τ² / (τ² + se²), se² = (π/2)·σ²/n (the sampling variance of a median), μ the
  median of the *other* jobs' medians in the cluster (each job one vote; 0, i.e. the offline model, when
  there is none) and τ the spread of jobs' true factors around their cluster's. A new job gets μ; a job
  with many consistent observations gets its own median.
- Cluster factor: the median over the cluster's jobs (with ≥ `MIN_OBSERVATIONS_FOR_CLUSTER`) of their
  medians.
- Outliers (reported, not discarded; the median already resists them): |z − m| > 3.5·σ, the modified
  z-score rule of Iglewicz & Hoaglin (1993).

**Honest error.** Every observation is first predicted, then learnt from (prequential evaluation, Dawid
1984): "before" uses the uncalibrated core (scale 1, power scale 1), "after" the factors learnt from the
observations before it. Errors are mean absolute percentage errors over those predictions.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import numpy as np

from twin.errors import ScenarioError, TwinError
from twin.perf.batch import FloatArray
from twin.perf.calibration import DEFAULT_MATMUL_EFFICIENCY
from twin.perf.estimate import estimate
from twin.perf.model_presets import model_preset
from twin.perf.specs import ClusterSpec, ModelSpec, ParallelLayout, TrainingSpec
from twin.records import COL, TelemetryTuple
from twin.scenario import MODEL_SHAPE_KEYS, parse_cluster, parse_layout, parse_model, parse_training
from twin.state import JobLive, NodeLive, TwinState

# --- the step-time curve ---------------------------------------------------------------------------
# ASSUMPTION: below 5 % of the modelled efficiency a job is broken (hung collectives, host swapping),
# not mis-modelled; slower observations are clamped to it and counted.
MIN_EFFICIENCY_SCALE: Final = 0.05
# Achieved GEMM efficiency cannot exceed peak: matmul_efficiency · scale ≤ 1 (GpuSpec enforces ≤ 1 for the
# unscaled value), so the grid ends at 1 / matmul_efficiency.
PEAK_MATMUL_EFFICIENCY: Final = 1.0
# Initial grid points per e-fold of efficiency scale: ln T is smooth in ln s with |d² ln T / d(ln s)²| ≤ 1/4
# for T = A/s + B, so linear interpolation errs by ≤ h²/8 · 1/4 = 5e-4 in ln T at h = 1/8; every cell is then
# checked at its midpoint and halved until it errs by less than CURVE_LOG_TOLERANCE.
CURVE_POINTS_PER_E_FOLD: Final = 8
# A curve segment shorter than this still gets two points.
MIN_CURVE_SEGMENT_POINTS: Final = 2
# ASSUMPTION: interpolation tolerance in ln T and ln P (0.01 %), far below step-time noise (≥ 1 %).
CURVE_LOG_TOLERANCE: Final = 1e-4
# ASSUMPTION: bound on `estimate` calls per curve (~0.4 ms each: ≤ 0.1 s per job).
MAX_CURVE_POINTS: Final = 256

# --- the estimator ---------------------------------------------------------------------------------
# ASSUMPTION: observations kept per job and quantity. A median of 128 has standard error 1.25σ/√128 =
# 0.11σ and adapts to a real change within 64 observations (~10 min of 10-s steps).
WINDOW_OBSERVATIONS: Final = 128
# σ = 1.4826 · MAD for normal data: 1/Φ⁻¹(3/4) (Rousseeuw & Croux 1993, JASA 88:1273).
MAD_TO_SIGMA: Final = 1.4826
# Sampling variance of the median of n normal draws: (π/2)·σ²/n (asymptotic, Laplace; e.g. Kenney &
# Keeping, Mathematics of Statistics, part 2).
MEDIAN_VARIANCE_FACTOR: Final = math.pi / 2
# ASSUMPTION: weight of the prior spread, in observations (ν₀ of the scaled-inverse-χ² prior, BDA3 §2.6).
PRIOR_SPREAD_OBSERVATIONS: Final = 4.0
# Prior within-job spread of ln(step time): the median per-iteration coefficient of variation of the
# Alibaba PAI mini-batch-time trace is 0.093 (../shared/traces/alibaba-gpu-v2020-pai/mini-batch-time/
# coefficient_variation.csv, 82,739 iterations; AntMan, OSDI'20), rounded to 0.09.
STEP_SPREAD_PRIOR_LOG: Final = 0.09
# Prior within-job spread of ln(power sample): a 1-Hz power reading lands in one phase of a step. The
# reference job (sensors.sim_profiles: 89.1 % compute at 392 W, 5.4 % communication at 196 W, 5.5 % waiting
# at 111 W; mean 366 W) has a per-sample standard deviation of 76 W, 0.21 of its mean; rounded to 0.2.
POWER_SPREAD_PRIOR_LOG: Final = 0.2
# Spread of jobs' true step-time factors around their cluster's: the core's held-out step-time MAPE is
# 8.2 % (README, "Accuracy": vTrain A100, 64–512 GPUs); for normal errors σ = MAPE·√(π/2) = 0.103.
JOB_SPREAD_STEP_LOG: Final = 0.10
# ASSUMPTION: spread of jobs' true power factors. The compute-phase power is measured (0.98 TDP ± 1 %, Acme
# p90), the communication and waiting levels are assumptions (twin.perf.power); the reference job spends
# 11 % of its step there, and moving those levels across their whole idle→TDP range moves its mean power
# by −3 % to +7 %; rounded up to 0.10.
JOB_SPREAD_POWER_LOG: Final = 0.10
# Modified z-score outlier threshold (Iglewicz & Hoaglin 1993, "How to Detect and Handle Outliers").
OUTLIER_Z: Final = 3.5
# ASSUMPTION: a job votes in its cluster's factor once its median resists one slow warm-up step (n ≥ 3).
MIN_OBSERVATIONS_FOR_CLUSTER: Final = 3

# --- building from the live state ------------------------------------------------------------------
# ASSUMPTION: a job event's `model.params` may be rounded; beyond 0.1 % it is another model than the preset.
PARAMS_MATCH_RTOL: Final = 1e-3
# Node states whose last readings no longer describe the job (TwinState: offline, or silent for 3 intervals).
UNUSABLE_NODE_STATES: Final = frozenset({"offline", "stale"})
PERCENT: Final = 100.0

Factor = Literal["efficiency", "power"]  # the two learnt quantities, named as the _Job windows


class CalibrationError(TwinError, ValueError):
    """An observation or an input to calibration is invalid; the message names the field and the value."""


class UnknownJobError(TwinError, KeyError):
    """Calibration was asked about a job (or a cluster) it does not know."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


def _positive(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise CalibrationError(f"{name}(={value!r}) must be a finite number > 0.")
    return float(value)


def _name(name: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise CalibrationError(f"{name}(={value!r}) must be a non-empty string.")
    return value


# === what a job is predicted to do at a given efficiency scale =======================================


class JobPerfModel(Protocol):
    """A job's predicted step time and GPU power as functions of the efficiency scale, and the inverse."""

    def step_time_s(self, efficiency_scale: float) -> float: ...

    def power_per_gpu_w(self, efficiency_scale: float) -> float: ...

    def efficiency_scale_for(self, step_time_s: float) -> tuple[float, bool]:
        """The scale that reproduces `step_time_s`, and whether it had to be clamped to the model's range."""
        ...


@dataclass(frozen=True, slots=True, eq=False)
class PerfCurve:
    """`estimate()` tabulated over efficiency scales: step time (non-increasing) and power per GPU.

    Build it with `PerfCurve.from_specs`; the grid contains 1.0 exactly, so `step_time_s(1.0)` is the core's
    uncalibrated prediction.
    """

    scales: FloatArray  # increasing
    step_times_s: FloatArray  # non-increasing
    powers_per_gpu_w: FloatArray

    def __post_init__(self) -> None:
        n = len(self.scales)
        if n < 2 or len(self.step_times_s) != n or len(self.powers_per_gpu_w) != n:
            raise CalibrationError(f"a PerfCurve needs ≥ 2 points of each array, got {n}.")
        if not np.all(np.diff(self.scales) > 0) or self.scales[0] <= 0:
            raise CalibrationError("PerfCurve.scales must be positive and increasing.")
        if not (np.all(np.isfinite(self.step_times_s)) and np.all(self.step_times_s > 0)):
            raise CalibrationError("PerfCurve.step_times_s must be finite and > 0.")
        if np.any(np.diff(self.step_times_s) > 0):
            raise CalibrationError("PerfCurve.step_times_s must not increase with the efficiency scale.")

    @classmethod
    def from_specs(
        cls,
        model: ModelSpec,
        cluster: ClusterSpec,
        layout: ParallelLayout,
        training: TrainingSpec,
    ) -> PerfCurve:
        """Tabulate the core between MIN_EFFICIENCY_SCALE and peak GEMM efficiency (raises ScenarioError)."""
        max_scale = PEAK_MATMUL_EFFICIENCY / cluster.gpu.matmul_efficiency

        def at(scale: float) -> tuple[float, float]:
            est = estimate(model, cluster, layout, training, efficiency_scale=scale)
            return est.step.step_time_s, est.power.power_per_gpu_w

        points = _tabulate(at, _grid(MIN_EFFICIENCY_SCALE, max_scale))
        scales = sorted(points)
        # The core is non-increasing in the scale (more efficient compute never lengthens a step; the
        # ZeRO overlap terms give back at most what compute saves); clip float noise at the kinks.
        steps = np.minimum.accumulate(np.array([points[x][0] for x in scales]))
        powers = np.array([points[x][1] for x in scales])
        return cls(np.array(scales), steps, powers)

    def _interp_log(self, values: FloatArray, efficiency_scale: float) -> float:
        scale = min(max(_positive("efficiency_scale", efficiency_scale), self.scales[0]), self.scales[-1])
        i = int(np.searchsorted(self.scales, scale))
        if self.scales[i] == scale:  # on the grid: the core's own value
            return float(values[i])
        x = math.log(scale)
        return float(np.exp(np.interp(x, np.log(self.scales), np.log(values))))

    def step_time_s(self, efficiency_scale: float) -> float:
        return self._interp_log(self.step_times_s, efficiency_scale)

    def power_per_gpu_w(self, efficiency_scale: float) -> float:
        return self._interp_log(self.powers_per_gpu_w, efficiency_scale)

    def efficiency_scale_for(self, step_time_s: float) -> tuple[float, bool]:
        """The smallest scale whose step time is `step_time_s` (log-log interpolation between grid points)."""
        t = _positive("step_time_s", step_time_s)
        steps = self.step_times_s
        if t >= steps[0]:
            return float(self.scales[0]), bool(t > steps[0])
        if t <= steps[-1]:
            # Faster than the model at peak efficiency, or on a flat floor (host-dispatch bound): the
            # smallest scale that reaches the floor.
            first = int(np.searchsorted(-steps, -steps[-1], side="left"))
            return float(self.scales[first]), bool(t < steps[-1])
        i = int(np.searchsorted(-steps, -t, side="left"))  # first grid point with T ≤ t; T[i-1] > t
        lt0, lt1 = math.log(steps[i - 1]), math.log(steps[i])
        ls0, ls1 = math.log(self.scales[i - 1]), math.log(self.scales[i])
        frac = (math.log(t) - lt0) / (lt1 - lt0)
        return math.exp(ls0 + frac * (ls1 - ls0)), False


def _grid(min_scale: float, max_scale: float) -> list[float]:
    """A geometric grid of scales from min_scale to max_scale with 1.0 on it (ends exact)."""
    grid = {min_scale, 1.0, max_scale}
    for lo, hi in ((min_scale, 1.0), (1.0, max_scale)):
        if hi > lo:
            n = max(MIN_CURVE_SEGMENT_POINTS, math.ceil(math.log(hi / lo) * CURVE_POINTS_PER_E_FOLD) + 1)
            grid.update(float(x) for x in np.geomspace(lo, hi, n)[1:-1])
    return sorted(grid)


def _tabulate(
    at: Callable[[float], tuple[float, float]], grid: list[float]
) -> dict[float, tuple[float, float]]:
    """Evaluate `at` (scale → T, P) on `grid`, then halve (geometrically) every cell whose midpoint is
    farther than CURVE_LOG_TOLERANCE in ln T or ln P from the log-log interpolation of its ends (adaptive
    refinement near kinks such as the host-dispatch floor), up to MAX_CURVE_POINTS evaluations."""
    points = {x: at(x) for x in grid}
    cells = list(itertools.pairwise(grid))
    while cells and len(points) < MAX_CURVE_POINTS:
        lo, hi = cells.pop()
        mid = math.sqrt(lo * hi)
        points[mid] = at(mid)
        ends = zip(points[lo], points[hi], strict=True)
        error = max(
            abs(math.log(m) - 0.5 * (math.log(a) + math.log(b)))
            for m, (a, b) in zip(points[mid], ends, strict=True)
        )
        if error > CURVE_LOG_TOLERANCE:
            cells += [(lo, mid), (mid, hi)]
    return points


@dataclass(frozen=True, slots=True)
class SplitCurve:
    """Closed form when only a prediction and its compute share are known (no specs).

    T(s) = T₁·(f/s + 1 − f): the compute share f of the step scales with 1/s, the rest does not. Power is
    the time-weighted mean of the compute and the other phases: P(s) = (P_c·f/s + P_o·(1−f)) / (f/s + 1−f).
    """

    predicted_step_time_s: float
    compute_fraction: float = 1.0
    compute_power_w: float | None = None
    other_power_w: float | None = None
    max_scale: float = PEAK_MATMUL_EFFICIENCY / DEFAULT_MATMUL_EFFICIENCY

    def __post_init__(self) -> None:
        _positive("predicted_step_time_s", self.predicted_step_time_s)
        f = self.compute_fraction
        if not (isinstance(f, int | float) and 0 < f <= 1):
            raise CalibrationError(f"compute_fraction(={f!r}) must be in (0, 1].")
        if self.compute_power_w is not None:
            _positive("compute_power_w", self.compute_power_w)
        if self.other_power_w is not None:
            _positive("other_power_w", self.other_power_w)
        if _positive("max_scale", self.max_scale) <= MIN_EFFICIENCY_SCALE:
            raise CalibrationError(f"max_scale(={self.max_scale}) must be > {MIN_EFFICIENCY_SCALE}.")

    def _clamp(self, scale: float) -> float:
        return min(max(_positive("efficiency_scale", scale), MIN_EFFICIENCY_SCALE), self.max_scale)

    def step_time_s(self, efficiency_scale: float) -> float:
        f = self.compute_fraction
        return self.predicted_step_time_s * (f / self._clamp(efficiency_scale) + 1.0 - f)

    def power_per_gpu_w(self, efficiency_scale: float) -> float:
        if self.compute_power_w is None:
            raise CalibrationError("this SplitCurve has no compute_power_w: it cannot predict power.")
        other = self.compute_power_w if self.other_power_w is None else self.other_power_w
        f, s = self.compute_fraction, self._clamp(efficiency_scale)
        return (self.compute_power_w * f / s + other * (1.0 - f)) / (f / s + 1.0 - f)

    def efficiency_scale_for(self, step_time_s: float) -> tuple[float, bool]:
        ratio = _positive("step_time_s", step_time_s) / self.predicted_step_time_s
        f = self.compute_fraction
        compute_ratio = ratio - (1.0 - f)  # T/T₁ − (1 − f) = f/s
        if compute_ratio <= f / self.max_scale:  # faster than peak efficiency allows
            return self.max_scale, compute_ratio < f / self.max_scale
        scale = f / compute_ratio
        if scale < MIN_EFFICIENCY_SCALE:
            return MIN_EFFICIENCY_SCALE, True
        return scale, False


# === the robust estimator ==========================================================================


class _RobustWindow:
    """The last W values (log factors): median, MAD-based spread pooled with a prior, standard error."""

    def __init__(self, spread_prior_log: float, size: int = WINDOW_OBSERVATIONS) -> None:
        self._order: deque[float] = deque(maxlen=size)
        self._sorted: list[float] = []
        self._prior = spread_prior_log
        self.median = 0.0
        self.sigma = spread_prior_log
        self.total = 0  # observations ever added

    @property
    def n(self) -> int:
        return len(self._sorted)

    def add(self, x: float) -> None:
        if len(self._order) == self._order.maxlen:
            old = self._order[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._order.append(x)
        bisect.insort(self._sorted, x)
        self.total += 1
        self.median = _median(self._sorted)
        mad = _median(sorted(abs(v - self.median) for v in self._sorted))
        n, nu0 = float(self.n), PRIOR_SPREAD_OBSERVATIONS
        self.sigma = math.sqrt((nu0 * self._prior**2 + n * (MAD_TO_SIGMA * mad) ** 2) / (nu0 + n))

    def is_outlier(self, x: float) -> bool:
        return self.n > 0 and abs(x - self.median) > OUTLIER_Z * self.sigma

    def shrunk(self, prior_log: float, between_spread_log: float) -> float:
        """w·median + (1 − w)·prior, w = τ² / (τ² + (π/2)σ²/n)."""
        if self.n == 0:
            return prior_log
        se2 = MEDIAN_VARIANCE_FACTOR * self.sigma**2 / self.n
        w = between_spread_log**2 / (between_spread_log**2 + se2)
        return w * self.median + (1.0 - w) * prior_log


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


@dataclass(slots=True)
class _Errors:
    """Prequential absolute percentage errors: sums and count."""

    n: int = 0
    before_pct: float = 0.0
    after_pct: float = 0.0

    def add(self, before: float, after: float, observed: float) -> None:
        self.n += 1
        self.before_pct += PERCENT * abs(before - observed) / observed
        self.after_pct += PERCENT * abs(after - observed) / observed

    def merged(self, other: _Errors) -> _Errors:
        return _Errors(self.n + other.n, self.before_pct + other.before_pct, self.after_pct + other.after_pct)

    @property
    def mape_before_pct(self) -> float | None:
        return self.before_pct / self.n if self.n else None

    @property
    def mape_after_pct(self) -> float | None:
        return self.after_pct / self.n if self.n else None


@dataclass(slots=True)
class _Job:
    cluster: str
    job_id: str
    model: JobPerfModel
    efficiency: _RobustWindow = field(default_factory=lambda: _RobustWindow(STEP_SPREAD_PRIOR_LOG))
    power: _RobustWindow = field(default_factory=lambda: _RobustWindow(POWER_SPREAD_PRIOR_LOG))
    step_errors: _Errors = field(default_factory=_Errors)
    power_errors: _Errors = field(default_factory=_Errors)
    step_times_s: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW_OBSERVATIONS))
    powers_w: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW_OBSERVATIONS))
    step_outliers: int = 0
    clamped: int = 0


# === results =======================================================================================


@dataclass(frozen=True, slots=True)
class StepObservation:
    """One step time, as predicted before it was learnt from."""

    observed_step_time_s: float
    predicted_step_time_s: float  # the uncalibrated core
    calibrated_step_time_s: float  # with the factors learnt before this observation
    implied_efficiency_scale: float
    clamped: bool
    outlier: bool


@dataclass(frozen=True, slots=True)
class PowerObservation:
    """One mean GPU power reading of a job, as predicted before it was learnt from."""

    observed_power_w: float
    predicted_power_w: float
    calibrated_power_w: float
    outlier: bool


@dataclass(frozen=True, slots=True)
class JobCalibration:
    """One job's factors and its prediction errors before and after calibration (prequential MAPE, %)."""

    cluster: str
    job_id: str
    efficiency_scale: float
    power_scale: float
    step_observations: int
    predicted_step_time_s: float
    calibrated_step_time_s: float
    observed_step_time_s: float | None  # median of the recent window
    error_before_pct: float | None
    error_after_pct: float | None
    outlier_fraction: float | None  # of step observations (stragglers, warm-up, stalls)
    clamped_observations: int
    power_observations: int
    predicted_power_w: float | None
    calibrated_power_w: float | None
    observed_power_w: float | None
    power_error_before_pct: float | None
    power_error_after_pct: float | None


@dataclass(frozen=True, slots=True)
class ClusterCalibration:
    """A cluster's pooled factors and MAPE over all its jobs' observations, %."""

    cluster: str
    efficiency_scale: float
    power_scale: float
    jobs: int
    step_observations: int
    error_before_pct: float | None
    error_after_pct: float | None
    power_observations: int
    power_error_before_pct: float | None
    power_error_after_pct: float | None


@dataclass(frozen=True, slots=True)
class SkippedJob:
    """A running job that could not be calibrated, and why."""

    cluster: str
    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    jobs: tuple[JobCalibration, ...]
    clusters: tuple[ClusterCalibration, ...]
    skipped: tuple[SkippedJob, ...] = ()

    def job(self, cluster: str, job_id: str) -> JobCalibration:
        for job in self.jobs:
            if (job.cluster, job.job_id) == (cluster, job_id):
                return job
        raise UnknownJobError(f"job {cluster}/{job_id} is not in this calibration report.")

    def cluster(self, name: str) -> ClusterCalibration:
        for cluster in self.clusters:
            if cluster.cluster == name:
                return cluster
        raise UnknownJobError(f"cluster {name!r} is not in this calibration report.")

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": [dataclasses.asdict(j) for j in self.jobs],
            "clusters": [dataclasses.asdict(c) for c in self.clusters],
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
        }


# === the calibrator ================================================================================


class Calibrator:
    """Per-job and per-cluster efficiency and power scales, learnt online (see the module doc).

    Register a job's `JobPerfModel` (`register_job`, or pass `model=` to the first observation), then feed
    `observe_step` / `observe_power`. Thread-safe. Re-registering a job (a new layout) keeps what was learnt:
    the efficiency scale describes the job's achieved efficiency, not its layout.
    """

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._by_cluster: dict[str, list[_Job]] = {}
        self._lock = threading.RLock()

    # --- feeding ---------------------------------------------------------------------------------
    def register_job(self, cluster: str, job_id: str, model: JobPerfModel) -> None:
        key = (_name("cluster", cluster), _name("job_id", job_id))
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                job = self._jobs[key] = _Job(cluster, job_id, model)
                self._by_cluster.setdefault(cluster, []).append(job)
            else:
                job.model = model

    def _job(self, cluster: str, job_id: str, model: JobPerfModel | None) -> _Job:
        if model is not None:
            self.register_job(cluster, job_id, model)
        job = self._jobs.get((cluster, job_id))
        if job is None:
            raise UnknownJobError(
                f"job {cluster}/{job_id} is not registered with the calibrator: register_job() it, or pass "
                "its model with the observation."
            )
        return job

    def observe_step(
        self, cluster: str, job_id: str, step_time_s: float, *, model: JobPerfModel | None = None
    ) -> StepObservation:
        """Predict one observed step time (before and after calibration), then learn from it."""
        observed = _positive("step_time_s", step_time_s)
        with self._lock:
            job = self._job(cluster, job_id, model)
            scale = math.exp(self._job_log(job, "efficiency"))
            predicted = job.model.step_time_s(1.0)
            calibrated = job.model.step_time_s(scale)
            implied, clamped = job.model.efficiency_scale_for(observed)
            z = math.log(implied)
            outlier = job.efficiency.is_outlier(z)
            job.step_errors.add(predicted, calibrated, observed)
            job.efficiency.add(z)
            job.step_times_s.append(observed)
            job.step_outliers += outlier
            job.clamped += clamped
        return StepObservation(observed, predicted, calibrated, implied, clamped, outlier)

    def observe_power(
        self, cluster: str, job_id: str, power_per_gpu_w: float, *, model: JobPerfModel | None = None
    ) -> PowerObservation:
        """Predict one observed mean GPU power of the job, then learn the power scale from it.

        The core's power is taken at the job's current efficiency scale (a slower compute phase shifts the
        phase mix); the power scale is what remains.
        """
        observed = _positive("power_per_gpu_w", power_per_gpu_w)
        with self._lock:
            job = self._job(cluster, job_id, model)
            model_w = job.model.power_per_gpu_w(math.exp(self._job_log(job, "efficiency")))
            predicted = job.model.power_per_gpu_w(1.0)
            calibrated = model_w * math.exp(self._job_log(job, "power"))
            y = math.log(observed / model_w)
            outlier = job.power.is_outlier(y)
            job.power_errors.add(predicted, calibrated, observed)
            job.power.add(y)
            job.powers_w.append(observed)
        return PowerObservation(observed, predicted, calibrated, outlier)

    # --- factors ---------------------------------------------------------------------------------
    def _cluster_log(self, cluster: str, kind: Factor, exclude: _Job | None = None) -> float:
        windows: Iterable[_RobustWindow] = (
            getattr(job, kind) for job in self._by_cluster.get(cluster, ()) if job is not exclude
        )
        medians = sorted(w.median for w in windows if w.n >= MIN_OBSERVATIONS_FOR_CLUSTER)
        return _median(medians) if medians else 0.0

    def _job_log(self, job: _Job, kind: Factor) -> float:
        spread = JOB_SPREAD_STEP_LOG if kind == "efficiency" else JOB_SPREAD_POWER_LOG
        window: _RobustWindow = getattr(job, kind)
        return window.shrunk(self._cluster_log(job.cluster, kind, exclude=job), spread)

    def _lookup(self, cluster: str, job_id: str, kind: Factor, strict: bool) -> float:
        with self._lock:
            job = self._jobs.get((cluster, job_id))
            if job is None:
                if strict:
                    raise UnknownJobError(f"job {cluster}/{job_id} has no calibration.")
                return math.exp(self._cluster_log(cluster, kind))
            return math.exp(self._job_log(job, kind))

    def job_efficiency_scale(self, cluster: str, job_id: str, *, strict: bool = False) -> float:
        """The `efficiency_scale` to pass to `estimate()` for this job.

        A job with few observations leans on its cluster's factor; an unknown job gets the cluster's factor
        (1.0, the offline model, for an unknown cluster) unless `strict`, which raises `UnknownJobError`.
        """
        return self._lookup(cluster, job_id, "efficiency", strict)

    def job_power_scale(self, cluster: str, job_id: str, *, strict: bool = False) -> float:
        """Multiply the core's `power_per_gpu_w` (at the job's efficiency scale) by this."""
        return self._lookup(cluster, job_id, "power", strict)

    def cluster_efficiency_scale(self, cluster: str) -> float:
        with self._lock:
            return math.exp(self._cluster_log(cluster, "efficiency"))

    def cluster_power_scale(self, cluster: str) -> float:
        with self._lock:
            return math.exp(self._cluster_log(cluster, "power"))

    def calibrated_step_time_s(self, cluster: str, job_id: str) -> float:
        with self._lock:
            job = self._job(cluster, job_id, None)
            return job.model.step_time_s(math.exp(self._job_log(job, "efficiency")))

    def jobs(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._jobs)

    # --- reporting -------------------------------------------------------------------------------
    def _job_report(self, job: _Job) -> JobCalibration:
        scale = math.exp(self._job_log(job, "efficiency"))
        power_scale = math.exp(self._job_log(job, "power"))
        has_power = bool(job.powers_w)
        return JobCalibration(
            cluster=job.cluster,
            job_id=job.job_id,
            efficiency_scale=scale,
            power_scale=power_scale,
            step_observations=job.step_errors.n,
            predicted_step_time_s=job.model.step_time_s(1.0),
            calibrated_step_time_s=job.model.step_time_s(scale),
            observed_step_time_s=_median(sorted(job.step_times_s)) if job.step_times_s else None,
            error_before_pct=job.step_errors.mape_before_pct,
            error_after_pct=job.step_errors.mape_after_pct,
            outlier_fraction=job.step_outliers / job.step_errors.n if job.step_errors.n else None,
            clamped_observations=job.clamped,
            power_observations=job.power_errors.n,
            predicted_power_w=job.model.power_per_gpu_w(1.0) if has_power else None,
            calibrated_power_w=job.model.power_per_gpu_w(scale) * power_scale if has_power else None,
            observed_power_w=_median(sorted(job.powers_w)) if has_power else None,
            power_error_before_pct=job.power_errors.mape_before_pct,
            power_error_after_pct=job.power_errors.mape_after_pct,
        )

    def report(self, skipped: Iterable[SkippedJob] = ()) -> CalibrationReport:
        with self._lock:
            jobs = tuple(self._job_report(job) for _, job in sorted(self._jobs.items()))
            clusters = []
            for name, members in sorted(self._by_cluster.items()):
                steps, powers = _Errors(), _Errors()
                for job in members:
                    steps, powers = steps.merged(job.step_errors), powers.merged(job.power_errors)
                clusters.append(
                    ClusterCalibration(
                        cluster=name,
                        efficiency_scale=math.exp(self._cluster_log(name, "efficiency")),
                        power_scale=math.exp(self._cluster_log(name, "power")),
                        jobs=len(members),
                        step_observations=steps.n,
                        error_before_pct=steps.mape_before_pct,
                        error_after_pct=steps.mape_after_pct,
                        power_observations=powers.n,
                        power_error_before_pct=powers.mape_before_pct,
                        power_error_after_pct=powers.mape_after_pct,
                    )
                )
        return CalibrationReport(jobs, tuple(clusters), tuple(skipped))

    def to_json(self) -> dict[str, Any]:
        """The factors the twin uses, per cluster and per job (JSON-able)."""
        with self._lock:
            clusters = sorted(self._by_cluster)
            return {
                "clusters": {
                    name: {
                        "efficiency_scale": math.exp(self._cluster_log(name, "efficiency")),
                        "power_scale": math.exp(self._cluster_log(name, "power")),
                    }
                    for name in clusters
                },
                "jobs": [
                    {
                        "cluster": job.cluster,
                        "job_id": job.job_id,
                        "efficiency_scale": math.exp(self._job_log(job, "efficiency")),
                        "power_scale": math.exp(self._job_log(job, "power")),
                        "step_observations": job.efficiency.total,
                        "power_observations": job.power.total,
                    }
                    for _, job in sorted(self._jobs.items())
                ],
            }


# === building from the live state ==================================================================


def job_model_spec(raw: Mapping[str, Any]) -> ModelSpec:
    """A job event's `model`: a preset, an explicit shape, or `{"name": preset, "params": n}` as the simulated
    cluster and the step reporter send it (`params` must then match the preset's)."""
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"job model(={raw!r}) must be an object.")
    params = raw.get("params")
    rest = {k: v for k, v in raw.items() if k != "params"}
    if "preset" in rest or any(k in rest for k in MODEL_SHAPE_KEYS):
        spec = parse_model(rest)
    elif isinstance(rest.get("name"), str):
        spec = model_preset(rest["name"])
    else:
        raise ScenarioError(f"job model(={dict(raw)!r}) needs a preset, a shape or a preset name.")
    if params is not None:
        if isinstance(params, bool) or not isinstance(params, int | float) or not math.isfinite(params):
            raise ScenarioError(f"model.params(={params!r}) must be a number of parameters.")
        if abs(params - spec.params) > PARAMS_MATCH_RTOL * spec.params:
            raise ScenarioError(
                f"model.params(={params!r}) does not match {spec.name!r} ({spec.params} parameters)."
            )
    return spec


def job_perf_curve(
    job: JobLive, cluster_section: Mapping[str, Any], training_section: Mapping[str, Any]
) -> PerfCurve:
    """The `PerfCurve` of a live job: its model and layout (job events), the cluster's hardware (a scenario
    cluster section; `gpus` is the job's own count), and its training shape (seq_len, global_batch).
    Raises `ScenarioError` naming what is missing or invalid."""
    if job.model is None:
        raise ScenarioError(f"job {job.cluster}/{job.job_id} has not reported its model.")
    if job.layout is None:
        raise ScenarioError(f"job {job.cluster}/{job.job_id} has not reported its layout.")
    model = job_model_spec(job.model)
    hardware = parse_cluster({**cluster_section, "gpus": 1})  # the job's own count replaces `gpus` below
    node_gpus = len(job.nodes) * hardware.gpus_per_node
    if job.layout.get("dp") is None and not job.nodes:
        raise ScenarioError(f"job {job.cluster}/{job.job_id}: layout.dp is null and no nodes were reported.")
    layout = parse_layout(job.layout, node_gpus)  # dp null: the nodes' GPUs
    if job.nodes and layout.gpus > node_gpus:
        raise ScenarioError(
            f"job layout needs tp·pp·cp·dp(={layout.gpus}) GPUs, its {len(job.nodes)} nodes have {node_gpus}."
        )
    cluster = dataclasses.replace(hardware, gpus=layout.gpus)
    return PerfCurve.from_specs(model, cluster, layout, parse_training(training_section))


def job_observed_power_w(
    job: JobLive,
    gpus: Mapping[tuple[str, str, int], TelemetryTuple],
    nodes: Mapping[tuple[str, str], NodeLive],
) -> float | None:
    """Mean newest power of the GPUs on the job's nodes (whole-node gang allocation), skipping offline and
    stale nodes and readings older than the job's start; None when there is none."""
    c_power, c_ts = COL["power_w"], COL["ts"]
    wanted = {(job.cluster, node) for node in job.nodes}
    readings = [
        float(row[c_power])
        for (cluster, node, _), row in gpus.items()
        if (cluster, node) in wanted
        and row[c_power] is not None
        and math.isfinite(row[c_power])
        and (job.started_ts is None or row[c_ts] >= job.started_ts)
        and (nodes.get((cluster, node)) is None or nodes[(cluster, node)].status not in UNUSABLE_NODE_STATES)
    ]
    return sum(readings) / len(readings) if readings else None


@dataclass(frozen=True, slots=True)
class StateCalibration:
    calibrator: Calibrator
    report: CalibrationReport


def calibrate_from_state(
    state: TwinState,
    clusters: Mapping[str, Mapping[str, Any]],
    training: Mapping[str, Any] | None = None,
    *,
    job_training: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> StateCalibration:
    """Calibrate every running job of a `TwinState` snapshot, prequentially.

    `clusters`: per cluster name, a scenario cluster section (`gpu`, `gpus_per_node`, bandwidths,
    `power_cap_w`; `gpus` is ignored) — telemetry does not carry the GPU type reliably. Job events carry no
    training shape, so `job_training[(cluster, job_id)]` or else `training` gives `seq_len` and
    `global_batch`. Jobs are fed in order of start (the earlier jobs form the cluster prior of later ones),
    each with its recent step times in arrival order and one power observation (the mean of its nodes'
    newest readings). A job that cannot be calibrated is reported in `report.skipped` with the reason.
    """
    snapshot = state.copy()  # a consistent copy: the service folds into `state` concurrently
    jobs = [
        (job, list(job.step_times_s))
        for job in snapshot.jobs.values()
        if job.state == "running" and job.step_times_s
    ]
    gpus, nodes = snapshot.gpus, snapshot.nodes
    jobs.sort(key=lambda item: (item[0].started_ts is None, item[0].started_ts or 0.0, item[0].job_id))
    calibrator = Calibrator()
    skipped: list[SkippedJob] = []
    for job, step_times in jobs:
        section = clusters.get(job.cluster)
        train = (job_training or {}).get((job.cluster, job.job_id), training)
        try:
            if section is None:
                raise ScenarioError(f"no cluster section for cluster {job.cluster!r}.")
            if train is None:
                raise ScenarioError("no training section (seq_len, global_batch) for the job.")
            curve = job_perf_curve(job, section, train)
        except (ScenarioError, CalibrationError) as exc:
            skipped.append(SkippedJob(job.cluster, job.job_id, str(exc)))
            continue
        calibrator.register_job(job.cluster, job.job_id, curve)
        for step_time_s in step_times:
            calibrator.observe_step(job.cluster, job.job_id, step_time_s)
        power_w = job_observed_power_w(job, gpus, nodes)
        if power_w is not None:
            calibrator.observe_power(job.cluster, job.job_id, power_w)
    return StateCalibration(calibrator, calibrator.report(skipped))
