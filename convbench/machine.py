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


@lru_cache(maxsize=1)
def blas_kernel() -> str:
    """The BLAS library and the kernel set it runs (OpenBLAS's core type, e.g. SkylakeX or
    Haswell, which ``OPENBLAS_CORETYPE`` can force): NumPy's GEMM speed follows it."""
    try:
        # importing threadpoolctl sets KMP_DUPLICATE_LIB_OK in os.environ; a library call
        # leaves the environment as it found it
        unset = "KMP_DUPLICATE_LIB_OK" not in os.environ
        from threadpoolctl import threadpool_info

        if unset:
            os.environ.pop("KMP_DUPLICATE_LIB_OK", None)
        import numpy  # noqa: F401  (loads the BLAS that threadpoolctl reports)

        for lib in threadpool_info():
            if lib.get("user_api") == "blas":
                return f"{lib.get('internal_api', '?')} {lib.get('architecture') or '?'}"
    except Exception:  # an odd BLAS build that threadpoolctl cannot read
        pass
    return "blas ?"


def hardware_id() -> str:
    """CPU model, architecture, usable cores, the vector target the kernels are compiled for
    and the BLAS kernel: what timings depend on, beside the software."""
    from .target import vector_target

    return (f"{cpu_model()}|{platform.machine()}|{usable_cores()} cores|"
            f"{vector_target().isa}|{blas_kernel()}")


HARDWARE_FIELDS = 5  # the fields of hardware_id() at the start of every machine id


def machine_id() -> str:
    """The hardware (:func:`hardware_id`), Numba threads and convbench's version: two
    processes with the same id can share calibrations, tuned picks and baselines."""
    return f"{hardware_id()}|{numba_threads()} threads|convbench {__version__}"


@lru_cache(maxsize=1)
def host_id() -> str:
    """This host, as opposed to another of the same kind: /etc/machine-id where there is one
    (a fresh VM or CI runner gets a new one), else the host name."""
    try:
        text = Path("/etc/machine-id").read_text().strip()
        if text:
            return text[:16]
    except OSError:
        pass
    return platform.node() or "?"


def same_hardware(id_a: str, id_b: str) -> bool:
    """Whether two machine ids name the same hardware: CPU model, architecture, core count,
    vector target and BLAS kernel (the package version may differ)."""
    return id_a.split("|")[:HARDWARE_FIELDS] == id_b.split("|")[:HARDWARE_FIELDS]


HARDWARE_NAMES = ("CPU", "architecture", "cores", "vector target", "BLAS kernel")


def hardware_difference(there: str, here: str) -> str:
    """What differs between two machine ids' hardware, in words ('' when nothing does):
    'BLAS kernel openblas SkylakeX there, openblas Haswell here'."""
    pairs = zip(HARDWARE_NAMES, there.split("|")[:HARDWARE_FIELDS],
                here.split("|")[:HARDWARE_FIELDS])
    return "; ".join(f"{name} {a} there, {b} here" for name, a, b in pairs if a != b)


# hardware fields by how much a timing depends on them: the architecture, the vector target
# the kernels are compiled for, the BLAS kernel, the CPU model, the cores
CLOSENESS_ORDER = (1, 3, 4, 0, 2)


def closeness(there: str, here: str) -> tuple[bool, ...]:
    """How closely the hardware of machine id ``there`` matches ``here``: one flag per field in
    CLOSENESS_ORDER, so that a larger tuple is a closer match (a calibration of another CPU
    model with this vector target is closer than one of this model with another target)."""
    a, b = there.split("|")[:HARDWARE_FIELDS], here.split("|")[:HARDWARE_FIELDS]
    return tuple(i < len(a) and i < len(b) and a[i] == b[i] for i in CLOSENESS_ORDER)


def machine_slug(identity: str | None = None) -> str:
    """A file-name-safe short form of a machine id's hardware part (for per-machine files)."""
    hardware = "-".join((identity or machine_id()).split("|")[:HARDWARE_FIELDS])
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
