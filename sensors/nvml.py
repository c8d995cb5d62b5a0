"""Telemetry from the local GPUs through NVML (NVIDIA's `pynvml` bindings, package nvidia-ml-py).

Read-only: the source initialises NVML, queries, registers for XID events and shuts down; it never changes
a device setting (`NvmlPowerLimits`, at the end, is the one writer: the command agent's power caps).
Vendor units are converted once, by `NVML_UNITS_PER_CONTRACT_UNIT`. Vendor errors are translated in one
place (`_Nvml`): "this device does not report that metric" (`NVMLError_NotSupported` and kin) becomes None;
NVML missing or unusable at start becomes `SensorUnavailable`; any other NVML failure while reading becomes
`SensorError` naming the GPU and the fields. There is no silent fallback to simulated data.

XID errors reach NVML users only as events: the source registers each GPU for
`nvmlEventTypeXidCriticalError` and drains the event set (timeout 0) on every read, remembering the last
XID per GPU. `xid_last` is 0 until an XID arrives (DCGM_FI_DEV_XID_ERRORS' convention) and None for a GPU
that cannot be registered.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from sensors.contract import GPU_FIELDS_BY_NAME, FieldKind, GpuReading, NodeSample, check_segment
from sensors.errors import SensorError, SensorUnavailable
from sensors.source import SourceReading

_log = logging.getLogger(__name__)

MW_PER_W: Final = 1000.0  # nvmlDeviceGetPowerUsage reports milliwatts (NVML API reference).
MJ_PER_J: Final = 1000.0  # nvmlDeviceGetTotalEnergyConsumption reports millijoules since driver load.
# Contract field → NVML units per contract unit (contract value = NVML value / this). The only unit
# conversions at this edge.
NVML_UNITS_PER_CONTRACT_UNIT: Final[Mapping[str, float]] = {
    "power_w": MW_PER_W,  # mW → W
    "energy_j": MJ_PER_J,  # mJ → J
    "gpu_util_pct": 1,  # nvmlUtilization_t.gpu, % of the sample period
    "mem_util_pct": 1,  # nvmlUtilization_t.memory, % of the sample period
    "mem_used_bytes": 1,  # nvmlMemory_t.used, bytes
    "mem_total_bytes": 1,  # nvmlMemory_t.total, bytes
    "temp_c": 1,  # NVML_TEMPERATURE_GPU, °C
    "sm_clock_mhz": 1,  # NVML_CLOCK_SM current clock, MHz
    "ecc_sbe_total": 1,  # NVML_VOLATILE_ECC corrected count since driver load
    "ecc_dbe_total": 1,  # NVML_VOLATILE_ECC uncorrected count since driver load
    "throttle_reasons": 1,  # nvmlClocksEventReasons bitmask
}
# NVML error codes that mean "this device or driver does not report the metric" (→ None).
UNSUPPORTED_ERRORS: Final = (
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_FUNCTION_NOT_FOUND",
    "NVML_ERROR_NO_PERMISSION",
    "NVML_ERROR_NOT_FOUND",
    "NVML_ERROR_NO_DATA",
)
# Why NVML cannot start, by error code, for the `SensorUnavailable` message.
UNAVAILABLE_HINTS: Final[Mapping[str, str]] = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": "the NVML library (libnvidia-ml.so.1) was not found: no NVIDIA driver?",
    "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA kernel driver is not loaded",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "NVML and the kernel driver differ in version (reload the driver)",
    "NVML_ERROR_NO_PERMISSION": "no permission to use the GPUs",
}
# Events drained per read at most (a flood must not stall the poll loop; the rest wait for the next read).
MAX_EVENTS_PER_READ: Final = 1024

_Query = Callable[[Any, Any], tuple[Any, ...]]


def _power(nvml: Any, handle: Any) -> tuple[Any, ...]:
    return (nvml.nvmlDeviceGetPowerUsage(handle),)


def _energy(nvml: Any, handle: Any) -> tuple[Any, ...]:
    return (nvml.nvmlDeviceGetTotalEnergyConsumption(handle),)


def _utilization(nvml: Any, handle: Any) -> tuple[Any, ...]:
    rates = nvml.nvmlDeviceGetUtilizationRates(handle)
    return (rates.gpu, rates.memory)


def _memory(nvml: Any, handle: Any) -> tuple[Any, ...]:
    info = nvml.nvmlDeviceGetMemoryInfo(handle)
    return (info.used, info.total)


def _temperature(nvml: Any, handle: Any) -> tuple[Any, ...]:
    return (nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),)


def _sm_clock(nvml: Any, handle: Any) -> tuple[Any, ...]:
    return (nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),)


def _ecc_corrected(nvml: Any, handle: Any) -> tuple[Any, ...]:
    kind = nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
    return (nvml.nvmlDeviceGetTotalEccErrors(handle, kind, nvml.NVML_VOLATILE_ECC),)


def _ecc_uncorrected(nvml: Any, handle: Any) -> tuple[Any, ...]:
    kind = nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    return (nvml.nvmlDeviceGetTotalEccErrors(handle, kind, nvml.NVML_VOLATILE_ECC),)


def _clock_event_reasons(nvml: Any, handle: Any) -> tuple[Any, ...]:
    return (nvml.nvmlDeviceGetCurrentClocksEventReasons(handle),)


def _clock_throttle_reasons(nvml: Any, handle: Any) -> tuple[Any, ...]:
    # The pre-R535 name of the same bitmask, for drivers without the "event reasons" entry point.
    return (nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle),)


# (contract fields, alternative queries tried in order until one is supported).
QUERIES: Final[tuple[tuple[tuple[str, ...], tuple[_Query, ...]], ...]] = (
    (("power_w",), (_power,)),
    (("energy_j",), (_energy,)),
    (("gpu_util_pct", "mem_util_pct"), (_utilization,)),
    (("mem_used_bytes", "mem_total_bytes"), (_memory,)),
    (("temp_c",), (_temperature,)),
    (("sm_clock_mhz",), (_sm_clock,)),
    (("ecc_sbe_total",), (_ecc_corrected,)),
    (("ecc_dbe_total",), (_ecc_uncorrected,)),
    (("throttle_reasons",), (_clock_event_reasons, _clock_throttle_reasons)),
)


def to_contract(field: str, raw: Any) -> int | float | None:
    """An NVML value in the contract's unit and type for `field` (None stays None)."""
    if raw is None:
        return None
    divisor = NVML_UNITS_PER_CONTRACT_UNIT[field]
    scaled = raw if divisor == 1 else raw / divisor
    return round(scaled) if GPU_FIELDS_BY_NAME[field].kind is FieldKind.INT else float(scaled)


def _import_pynvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise SensorUnavailable("NVML bindings are not installed (pip install nvidia-ml-py).") from exc


class _Nvml:
    """The one place NVML errors are translated (Zeus: vendor errors → a few typed errors)."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.error: type[Exception] = module.NVMLError
        self._unsupported = frozenset(getattr(module, name) for name in UNSUPPORTED_ERRORS)
        self._timeout = module.NVML_ERROR_TIMEOUT

    def code(self, exc: Exception) -> Any:
        return getattr(exc, "value", None)

    def is_unsupported(self, exc: Exception) -> bool:
        return self.code(exc) in self._unsupported

    def is_timeout(self, exc: Exception) -> bool:
        return bool(self.code(exc) == self._timeout)

    def unavailable(self, exc: Exception) -> SensorUnavailable:
        for name, hint in UNAVAILABLE_HINTS.items():
            if self.code(exc) == getattr(self.module, name):
                return SensorUnavailable(f"NVML cannot be used: {hint} ({type(exc).__name__}).")
        return SensorUnavailable(f"NVML cannot be used: {type(exc).__name__} ({exc}).")

    def start(self) -> int:
        """nvmlInit and count the GPUs; `SensorUnavailable` if NVML cannot start or sees no GPU."""
        try:
            self.module.nvmlInit()
        except self.error as exc:
            raise self.unavailable(exc) from exc
        try:
            count = int(self.module.nvmlDeviceGetCount())
        except self.error as exc:
            self.stop()
            raise self.unavailable(exc) from exc
        if count < 1:
            self.stop()
            raise SensorUnavailable("NVML cannot be used: it reports no GPU on this machine.")
        return count

    def stop(self) -> None:
        try:
            self.module.nvmlShutdown()
        except self.error as exc:
            _log.warning("nvmlShutdown failed: %s", exc)

    def query(
        self, index: int, handle: Any, fields: tuple[str, ...], queries: tuple[_Query, ...]
    ) -> tuple[Any, ...]:
        """Raw values for `fields`, all None when the device reports none of the alternatives."""
        for query in queries:
            try:
                return query(self.module, handle)
            except AttributeError:
                continue  # bindings older than the entry point
            except self.error as exc:
                if self.is_unsupported(exc):
                    continue
                raise SensorError(
                    f"NVML GPU {index} {'/'.join(fields)}: {type(exc).__name__} ({exc})."
                ) from exc
        return (None,) * len(fields)


class NvmlSource:
    """Every GPU NVML sees on this machine, as one `NodeSample` per read (node name given).

    `nvml_module` replaces the `pynvml` module (tests pass a fake). The constructor initialises NVML and
    raises `SensorUnavailable` when it cannot; `close()` shuts NVML down.
    """

    def __init__(self, node: str, *, nvml_module: Any = None) -> None:
        self._node = check_segment("node", node)
        self._nvml = _Nvml(nvml_module if nvml_module is not None else _import_pynvml())
        count = self._nvml.start()
        self._closed = False
        self._event_set: Any = None
        try:
            nvml = self._nvml.module
            self._handles = tuple(nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count))
            self._uuids = tuple(self._uuid(i, h) for i, h in enumerate(self._handles))
            self._xid_last: list[int | None] = [None] * count
            self._register_xid_events()
        except self._nvml.error as exc:
            self.close()
            raise self._nvml.unavailable(exc) from exc
        except BaseException:
            self.close()
            raise

    @property
    def name(self) -> str:
        return "nvml"

    @property
    def gpu_count(self) -> int:
        return len(self._handles)

    def read(self, now_s: float) -> SourceReading:
        """Every GPU now, stamped `now_s` (unix s). Raises `SensorError` on a failing (e.g. lost) GPU."""
        if self._closed:
            raise SensorError("NvmlSource is closed.")
        self._drain_xid_events()
        gpus = tuple(self._reading(i, h) for i, h in enumerate(self._handles))
        return SourceReading(samples=(NodeSample(node=self._node, ts=now_s, gpus=gpus),))

    def close(self) -> None:
        """Free the event set and shut NVML down; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._event_set is not None:
            try:
                self._nvml.module.nvmlEventSetFree(self._event_set)
            except self._nvml.error as exc:
                _log.warning("nvmlEventSetFree failed: %s", exc)
            self._event_set = None
        self._nvml.stop()

    def _reading(self, index: int, handle: Any) -> GpuReading:
        values: dict[str, Any] = {
            "index": index,
            "uuid": self._uuids[index],
            "xid_last": self._xid_last[index],
        }
        for fields, queries in QUERIES:
            raw = self._nvml.query(index, handle, fields, queries)
            for field, value in zip(fields, raw, strict=True):
                values[field] = to_contract(field, value)
        if values["power_w"] is None:
            raise SensorError(
                f"NVML GPU {index} does not report power usage; power_w is required by the contract."
            )
        return GpuReading(**values)

    def _uuid(self, index: int, handle: Any) -> str | None:
        (raw,) = self._nvml.query(index, handle, ("uuid",), (lambda n, h: (n.nvmlDeviceGetUUID(h),),))
        if isinstance(raw, bytes):
            return raw.decode("ascii", errors="replace")
        return None if raw is None else str(raw)

    def _register_xid_events(self) -> None:
        """Best effort: a GPU that cannot be registered keeps `xid_last` None."""
        nvml = self._nvml.module
        try:
            self._event_set = nvml.nvmlEventSetCreate()
        except (self._nvml.error, AttributeError) as exc:
            _log.info("NVML event sets unavailable, no XID reporting: %s", exc)
            return
        for index, handle in enumerate(self._handles):
            try:
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._event_set)
            except (self._nvml.error, AttributeError) as exc:
                _log.info("GPU %d: cannot register for XID events: %s", index, exc)
                continue
            self._xid_last[index] = 0

    def _drain_xid_events(self) -> None:
        if self._event_set is None:
            return
        nvml = self._nvml.module
        for _ in range(MAX_EVENTS_PER_READ):
            try:
                data = nvml.nvmlEventSetWait_v2(self._event_set, 0)
            except self._nvml.error as exc:
                if not self._nvml.is_timeout(exc):
                    _log.warning("NVML event wait failed: %s", exc)
                return
            if data.eventType != nvml.nvmlEventTypeXidCriticalError:
                continue
            try:
                index = int(nvml.nvmlDeviceGetIndex(data.device))
            except self._nvml.error as exc:
                _log.warning("XID %d from an unidentifiable GPU: %s", data.eventData, exc)
                continue
            if 0 <= index < len(self._xid_last) and self._xid_last[index] is not None:
                self._xid_last[index] = int(data.eventData)


def nvml_available(nvml_module: Any = None) -> tuple[bool, str]:
    """Whether NVML can be used here, and a sentence saying why not (or what it found)."""
    try:
        nvml = _Nvml(nvml_module if nvml_module is not None else _import_pynvml())
        count = nvml.start()
    except SensorUnavailable as exc:
        return False, str(exc)
    try:
        driver = nvml.module.nvmlSystemGetDriverVersion()
    except (nvml.error, AttributeError):
        driver = "unknown"
    finally:
        nvml.stop()
    if isinstance(driver, bytes):
        driver = driver.decode("ascii", errors="replace")
    return True, f"NVML sees {count} GPU(s), driver {driver}."


class PowerLimitNotPermitted(SensorError):  # noqa: N818 (an outcome the agent reports, not a bug)
    """NVML refused to change a power limit: no permission (not root) or not supported on this device."""


# NVML error codes meaning "you may not set this here" (→ PowerLimitNotPermitted, outcome "not permitted").
NOT_PERMITTED_ERRORS: Final = ("NVML_ERROR_NO_PERMISSION", "NVML_ERROR_NOT_SUPPORTED")


class NvmlPowerLimits:
    """Read and set the GPUs' power limits (W) through NVML: the one writer in this module, used only by
    the command agent (`sensors.command_agent`) when it is told to apply commands.

    NVML works in milliwatts (`nvmlDeviceGetPowerManagementLimitConstraints`, `…DefaultLimit`,
    `nvmlDeviceSetPowerManagementLimit`); watts are converted here, once. Setting a limit needs root
    (NVML_ERROR_NO_PERMISSION otherwise), which becomes `PowerLimitNotPermitted`; any other NVML failure
    becomes `SensorError` naming the GPU. The constructor initialises NVML (reference-counted, so it may
    coexist with an `NvmlSource`); `close()` shuts it down.
    """

    def __init__(self, *, nvml_module: Any = None) -> None:
        self._nvml = _Nvml(nvml_module if nvml_module is not None else _import_pynvml())
        count = self._nvml.start()
        self._closed = False
        nvml = self._nvml.module
        self._not_permitted = frozenset(getattr(nvml, name) for name in NOT_PERMITTED_ERRORS)
        try:
            self._handles = tuple(nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count))
        except self._nvml.error as exc:
            self.close()
            raise self._nvml.unavailable(exc) from exc

    @property
    def gpu_count(self) -> int:
        return len(self._handles)

    def _call(self, index: int, what: str, function: str, *args: Any) -> Any:
        if self._closed:
            raise SensorError("NvmlPowerLimits is closed.")
        try:
            return getattr(self._nvml.module, function)(self._handles[index], *args)
        except self._nvml.error as exc:
            if self._nvml.code(exc) in self._not_permitted:
                raise PowerLimitNotPermitted(
                    f"NVML GPU {index} {what}: {type(exc).__name__} ({exc})."
                ) from exc
            raise SensorError(f"NVML GPU {index} {what}: {type(exc).__name__} ({exc}).") from exc

    def constraints_w(self, index: int) -> tuple[float, float]:
        """The (min, max) power limit the device accepts, W."""
        low, high = self._call(index, "power limit range", "nvmlDeviceGetPowerManagementLimitConstraints")
        return low / MW_PER_W, high / MW_PER_W

    def limit_w(self, index: int) -> float:
        """The power limit now in force, W."""
        return float(self._call(index, "power limit", "nvmlDeviceGetPowerManagementLimit")) / MW_PER_W

    def default_limit_w(self, index: int) -> float:
        """The limit the device boots with, W (what "no cap" restores)."""
        return (
            float(self._call(index, "default power limit", "nvmlDeviceGetPowerManagementDefaultLimit"))
            / MW_PER_W
        )

    def set_limit_w(self, index: int, power_limit_w: float) -> None:
        """Set GPU `index`'s power limit; `PowerLimitNotPermitted` when NVML refuses (not root)."""
        milliwatts = round(power_limit_w * MW_PER_W)
        self._call(
            index, f"set power limit {power_limit_w} W", "nvmlDeviceSetPowerManagementLimit", milliwatts
        )

    def close(self) -> None:
        """Shut NVML down (idempotent)."""
        if not self._closed:
            self._closed = True
            self._nvml.stop()
