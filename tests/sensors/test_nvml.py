"""NvmlSource against a fake `pynvml` (two GPUs, unsupported metrics, XID events) and the real one."""

# The fake mirrors pynvml's function names (nvmlDeviceGetPowerUsage, …).
# ruff: noqa: N802

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml
import pytest

from sensors.contract import GpuReading
from sensors.errors import SensorError, SensorUnavailable
from sensors.nvml import NvmlSource, nvml_available, to_contract
from sensors.source import Source

GIB = 2**30


@dataclass
class FakeGpu:
    """What one fake device reports; a value that is an NVML error code is raised as that error."""

    uuid: str
    power_mw: int
    energy_mj: int
    util: tuple[int, int]
    memory: tuple[int, int]  # used, total bytes
    temp_c: int
    sm_mhz: int
    ecc: tuple[int, int]  # corrected, uncorrected
    event_reasons: int
    errors: dict[str, int] = field(default_factory=dict)  # NVML function name → NVML_ERROR_* code


class FakeNvml:
    """Just enough of `pynvml` for NvmlSource: real error classes and constants, fake devices."""

    NVMLError = pynvml.NVMLError

    def __init__(self, gpus: list[FakeGpu], *, init_error: int | None = None) -> None:
        for name in dir(pynvml):
            if name.startswith(("NVML_", "nvmlEventType")):
                setattr(self, name, getattr(pynvml, name))
        self.gpus = gpus
        self.init_error = init_error
        self.errors: dict[str, int] = {}  # whole-library failures: function name → code
        self.initialised = 0
        self.calls: list[str] = []
        self.events: deque[SimpleNamespace] = deque()
        self.registered: set[int] = set()
        self.freed_event_sets = 0

    def _enter(self, function: str, gpu: FakeGpu | None = None) -> None:
        self.calls.append(function)
        code = (
            self.errors.get(function) if gpu is None else gpu.errors.get(function, self.errors.get(function))
        )
        if code is not None:
            raise pynvml.NVMLError(code)

    def _gpu(self, function: str, handle: int) -> FakeGpu:
        assert self.initialised > 0, f"{function} called before nvmlInit"
        gpu = self.gpus[handle]
        self._enter(function, gpu)
        return gpu

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "535.129.03"

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._enter("nvmlDeviceGetHandleByIndex")
        return index

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        return handle

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        return self._gpu("nvmlDeviceGetTotalEnergyConsumption", handle).energy_mj

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        gpu, memory = self._gpu("nvmlDeviceGetUtilizationRates", handle).util
        return SimpleNamespace(gpu=gpu, memory=memory)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        used, total = self._gpu("nvmlDeviceGetMemoryInfo", handle).memory
        return SimpleNamespace(used=used, total=total, free=total - used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu("nvmlDeviceGetTemperature", handle).temp_c

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        assert clock == pynvml.NVML_CLOCK_SM
        return self._gpu("nvmlDeviceGetClockInfo", handle).sm_mhz

    def nvmlDeviceGetTotalEccErrors(self, handle: int, error_type: int, counter_type: int) -> int:
        assert counter_type == pynvml.NVML_VOLATILE_ECC
        corrected, uncorrected = self._gpu("nvmlDeviceGetTotalEccErrors", handle).ecc
        return corrected if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED else uncorrected

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).event_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: int) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksThrottleReasons", handle).event_reasons

    def nvmlEventSetCreate(self) -> str:
        self._enter("nvmlEventSetCreate")
        return "event-set"

    def nvmlDeviceRegisterEvents(self, handle: int, event_types: int, event_set: str) -> None:
        self._gpu("nvmlDeviceRegisterEvents", handle)
        assert event_types == pynvml.nvmlEventTypeXidCriticalError and event_set == "event-set"
        self.registered.add(handle)

    def nvmlEventSetWait_v2(self, event_set: str, timeout_ms: int) -> SimpleNamespace:
        assert timeout_ms == 0, "reads must never block on events"
        if not self.events:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        return self.events.popleft()

    def nvmlEventSetFree(self, event_set: str) -> None:
        self.freed_event_sets += 1

    def xid(self, handle: int, code: int) -> None:
        """Queue an XID as the driver would, if the device was registered."""
        if handle in self.registered:
            event = SimpleNamespace(
                device=handle, eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=code
            )
            self.events.append(event)


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(
            uuid="GPU-aaaa",
            power_mw=612_500,
            energy_mj=48_213_377_415,
            util=(97, 41),
            memory=(70 * GIB, 80 * GIB),
            temp_c=66,
            sm_mhz=1980,
            ecc=(3, 0),
            event_reasons=0x4,
        ),
        FakeGpu(
            uuid="GPU-bbbb",
            power_mw=71_000,
            energy_mj=1_500,
            util=(0, 0),
            memory=(GIB, 80 * GIB),
            temp_c=30,
            sm_mhz=345,
            ecc=(0, 0),
            event_reasons=0x1,
            errors={
                "nvmlDeviceGetTotalEnergyConsumption": pynvml.NVML_ERROR_NOT_SUPPORTED,
                "nvmlDeviceGetTotalEccErrors": pynvml.NVML_ERROR_NOT_SUPPORTED,
                "nvmlDeviceGetTemperature": pynvml.NVML_ERROR_NO_PERMISSION,
                "nvmlDeviceRegisterEvents": pynvml.NVML_ERROR_NOT_SUPPORTED,
            },
        ),
    ]


def test_two_gpus_in_contract_units_with_nulls_for_unsupported() -> None:
    fake = FakeNvml(two_gpus())
    source = NvmlSource("node-1", nvml_module=fake)
    assert isinstance(source, Source) and source.name == "nvml" and source.gpu_count == 2
    reading = source.read(1_700_000_000.0)
    (sample,) = reading.samples
    assert (sample.node, sample.ts) == ("node-1", 1_700_000_000.0)
    assert sample.gpus == (
        GpuReading(
            index=0,
            uuid="GPU-aaaa",
            power_w=612.5,
            energy_j=48_213_377.415,
            gpu_util_pct=97.0,
            mem_util_pct=41.0,
            mem_used_bytes=70 * GIB,
            mem_total_bytes=80 * GIB,
            temp_c=66.0,
            sm_clock_mhz=1980.0,
            ecc_sbe_total=3,
            ecc_dbe_total=0,
            xid_last=0,  # registered, no XID yet
            throttle_reasons=0x4,
        ),
        GpuReading(
            index=1,
            uuid="GPU-bbbb",
            power_w=71.0,
            energy_j=None,
            gpu_util_pct=0.0,
            mem_util_pct=0.0,
            mem_used_bytes=GIB,
            mem_total_bytes=80 * GIB,
            temp_c=None,
            sm_clock_mhz=345.0,
            ecc_sbe_total=None,
            ecc_dbe_total=None,
            xid_last=None,  # could not register for events
            throttle_reasons=0x1,
        ),
    )
    assert isinstance(sample.gpus[0].power_w, float) and isinstance(sample.gpus[0].mem_used_bytes, int)
    source.close()


def test_conversions_happen_once_at_the_edge() -> None:
    assert to_contract("power_w", 612_500) == 612.5
    assert to_contract("energy_j", 1_500) == 1.5
    assert to_contract("mem_used_bytes", 80 * GIB) == 80 * GIB
    assert to_contract("temp_c", 66) == 66.0 and isinstance(to_contract("temp_c", 66), float)
    assert to_contract("ecc_sbe_total", None) is None


def test_xid_events_are_remembered_per_gpu() -> None:
    fake = FakeNvml(two_gpus())
    source = NvmlSource("node-1", nvml_module=fake)
    fake.xid(0, 48)
    fake.xid(0, 79)  # the last one wins
    fake.xid(1, 31)  # GPU 1 is not registered: never delivered
    first = source.read(1.0).samples[0].gpus
    assert [g.xid_last for g in first] == [79, None]
    second = source.read(2.0).samples[0].gpus  # no new event: the last XID is remembered
    assert [g.xid_last for g in second] == [79, None]
    source.close()


def test_event_sets_unsupported_leave_xid_none() -> None:
    fake = FakeNvml(two_gpus())
    fake.errors["nvmlEventSetCreate"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    source = NvmlSource("node-1", nvml_module=fake)
    assert [g.xid_last for g in source.read(1.0).samples[0].gpus] == [None, None]
    assert "nvmlEventSetWait_v2" not in fake.calls
    source.close()
    assert fake.freed_event_sets == 0


def test_older_driver_falls_back_to_throttle_reasons() -> None:
    gpus = two_gpus()
    gpus[0].errors["nvmlDeviceGetCurrentClocksEventReasons"] = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    source = NvmlSource("node-1", nvml_module=FakeNvml(gpus))
    assert source.read(1.0).samples[0].gpus[0].throttle_reasons == 0x4
    source.close()


def test_a_lost_gpu_is_an_error_naming_it() -> None:
    gpus = two_gpus()
    source = NvmlSource("node-1", nvml_module=FakeNvml(gpus))
    gpus[1].errors["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_GPU_IS_LOST
    with pytest.raises(SensorError, match="NVML GPU 1 power_w: NVMLError_GpuIsLost"):
        source.read(1.0)
    source.close()


def test_power_is_required() -> None:
    gpus = two_gpus()
    gpus[0].errors["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    source = NvmlSource("node-1", nvml_module=FakeNvml(gpus))
    with pytest.raises(SensorError, match="GPU 0 does not report power usage"):
        source.read(1.0)
    source.close()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded"),
        (pynvml.NVML_ERROR_UNKNOWN, "NVMLError_Unknown"),
    ],
)
def test_init_failure_is_unavailable(code: int, message: str) -> None:
    fake = FakeNvml(two_gpus(), init_error=code)
    with pytest.raises(SensorUnavailable, match=message):
        NvmlSource("node-1", nvml_module=fake)
    assert nvml_available(fake)[0] is False


def test_no_gpu_is_unavailable_and_nvml_is_shut_down() -> None:
    fake = FakeNvml([])
    with pytest.raises(SensorUnavailable, match="no GPU"):
        NvmlSource("node-1", nvml_module=fake)
    assert fake.initialised == 0
    assert nvml_available(fake) == (False, "NVML cannot be used: it reports no GPU on this machine.")


def test_failure_after_init_shuts_nvml_down() -> None:
    fake = FakeNvml(two_gpus())
    fake.errors["nvmlDeviceGetHandleByIndex"] = pynvml.NVML_ERROR_NO_PERMISSION
    with pytest.raises(SensorUnavailable, match="no permission"):
        NvmlSource("node-1", nvml_module=fake)
    assert fake.initialised == 0


def test_close_frees_events_and_shuts_down_once() -> None:
    fake = FakeNvml(two_gpus())
    source = NvmlSource("node-1", nvml_module=fake)
    assert fake.initialised == 1
    source.close()
    source.close()
    assert fake.initialised == 0 and fake.freed_event_sets == 1
    assert fake.calls.count("nvmlShutdown") == 1
    with pytest.raises(SensorError, match="closed"):
        source.read(1.0)


def test_nvml_available_reports_what_it_found() -> None:
    fake = FakeNvml(two_gpus())
    assert nvml_available(fake) == (True, "NVML sees 2 GPU(s), driver 535.129.03.")
    assert fake.initialised == 0


def test_real_pynvml_without_a_driver_is_unavailable() -> None:
    available, why = nvml_available()
    if available:
        pytest.skip(f"an NVML GPU is present here: {why}")
    assert why.startswith("NVML cannot be used")
    with pytest.raises(SensorUnavailable):
        NvmlSource("node-1")
