"""What the GPU did while a case was timed: SM clock, temperature and power, sampled through
NVML (the ``nvidia-ml-py`` package of the ``cuda`` extra) on a background thread.

A case is flagged ``throttled`` when its lowest sampled SM clock fell below 75% of the
device's default application clock, nvbench's rule: a GPU that slows down for heat or power
mid-case makes its timings describe the cooling, not the kernels. Without NVML (no package, no
driver, the simulator) nothing is sampled and the rows say nothing about the GPU.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

THROTTLE_FRACTION = 0.75  # nvbench: throttled below 75% of the default SM clock
SAMPLE_EVERY_S = 0.01

# one reading: (SM clock MHz, temperature C, power W)
Reader = Callable[[], tuple[float, float, float]]


@dataclass
class Samples:
    """Readings of one case and the clock they are judged against."""

    default_mhz: float
    clocks: list[float] = field(default_factory=list)
    temps: list[float] = field(default_factory=list)
    watts: list[float] = field(default_factory=list)

    def add(self, reading: tuple[float, float, float]) -> None:
        clock, temp, power = reading
        self.clocks.append(clock)
        self.temps.append(temp)
        self.watts.append(power)

    def summary(self) -> dict:
        """Row columns: lowest clock, the default, hottest, most power, and the flag."""
        if not self.clocks:
            return {}
        low = min(self.clocks)
        return {"gpu_sm_mhz_min": low, "gpu_sm_mhz_default": self.default_mhz,
                "gpu_temp_c_max": max(self.temps), "gpu_power_w_max": round(max(self.watts), 1),
                "throttled": bool(self.default_mhz) and low < THROTTLE_FRACTION * self.default_mhz}


class Sampler:
    """``with Sampler(read, default_mhz) as s: ...`` samples every ``every_s`` seconds (and once
    at the start and end, so even a short case has readings); ``s.summary()`` afterwards."""

    def __init__(self, read: Reader | None, default_mhz: float = 0.0,
                 every_s: float = SAMPLE_EVERY_S) -> None:
        self.read, self.every_s = read, every_s
        self.samples = Samples(default_mhz)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        try:
            self.samples.add(self.read())
        except Exception:  # a reading NVML refuses mid-case is skipped, not fatal
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self) -> "Sampler":
        if self.read is not None:
            self._sample()
            self._thread = threading.Thread(target=self._loop, name="convbench-nvml",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()

    def summary(self) -> dict:
        return self.samples.summary()


_nvml: tuple[Reader, float] | None | bool = False  # False: not tried yet; None: unavailable


def nvml_reader() -> tuple[Reader, float] | None:
    """(reader of the current device, its default SM clock in MHz), or None without NVML.
    Initialised once per process."""
    global _nvml
    if _nvml is not False:
        return _nvml
    _nvml = None
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(_device_index())
        try:
            default = pynvml.nvmlDeviceGetDefaultApplicationsClock(handle, pynvml.NVML_CLOCK_SM)
        except pynvml.NVMLError:  # not reported: judge against the maximum instead
            default = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)

        def read() -> tuple[float, float, float]:
            return (float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
                    float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
                    pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)

        read()
        _nvml = (read, float(default))
    except Exception:  # no package, no driver, no device: nothing to sample
        _nvml = None
    return _nvml


def _device_index() -> int:
    """NVML's index of the device Numba uses (the first visible one unless told otherwise)."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


def sampler_for(device: str) -> Sampler:
    """A sampler of the GPU for CUDA cases; one that samples nothing otherwise."""
    from ..devices import simulator_enabled

    if device != "cuda" or simulator_enabled():
        return Sampler(None)
    found = nvml_reader()
    return Sampler(*found) if found else Sampler(None)
