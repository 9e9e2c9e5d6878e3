"""What machine this is: the identity that makes a timing, a calibration or a baseline
comparable with another (asv's "machine" concept). Below both the chooser and the harness."""
from __future__ import annotations

import os
import platform
import re
from functools import lru_cache
from pathlib import Path

from ._version import __version__


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def numba_threads() -> int:
    from numba import config

    return int(config.NUMBA_NUM_THREADS)


def machine_id() -> str:
    """CPU model, architecture, usable cores, Numba threads and convbench's version: two
    processes with the same id can share calibrations, tuned picks and baselines."""
    return (f"{cpu_model()}|{platform.machine()}|{usable_cores()} cores|"
            f"{numba_threads()} threads|convbench {__version__}")


def same_hardware(id_a: str, id_b: str) -> bool:
    """Whether two machine ids name the same CPU model, architecture and core count (the
    package version may differ)."""
    return id_a.split("|")[:3] == id_b.split("|")[:3]


def machine_slug(identity: str | None = None) -> str:
    """A file-name-safe short form of a machine id's hardware part (for per-machine files)."""
    hardware = "-".join((identity or machine_id()).split("|")[:3])
    return re.sub(r"[^A-Za-z0-9]+", "-", hardware).strip("-").lower()[:80]


def gpu_name() -> str | None:
    """The current CUDA device's name (None without a usable GPU or in the simulator)."""
    from .devices import cuda_available, simulator_enabled

    if simulator_enabled() or not cuda_available():
        return None
    try:
        from numba import cuda

        name = cuda.get_current_device().name
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # a GPU that fails to report has no identity to match
        return None


def device_identity(device: str) -> str:
    """What a calibration for ``device`` must have been made on to apply here: this machine's
    id for the CPU, the GPU's name for CUDA (compared with :func:`same_hardware`)."""
    if device == "cuda":
        return f"{gpu_name() or 'no GPU'}|cuda|gpu"
    return machine_id()
