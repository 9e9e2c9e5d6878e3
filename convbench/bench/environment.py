"""What machine and software a run measured: stored as environment.json beside the results."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np

from ..devices import available_devices

GEMM_SIZE = 1024


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gemm_peak_gflops(size: int = GEMM_SIZE, repeats: int = 5) -> float:
    """Best float32 GEMM rate of NumPy's BLAS here: the roofline that 'fraction of peak' uses."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty_like(a)
    np.dot(a, b, out=c)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.dot(a, b, out=c)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _gpu() -> dict | None:
    if "cuda" not in available_devices():
        return None
    from numba import cuda

    try:
        dev = cuda.get_current_device()
        return {"name": str(dev.name), "compute_capability": list(dev.compute_capability),
                "simulator": os.environ.get("NUMBA_ENABLE_CUDASIM", "0") != "0"}
    except Exception as exc:  # a GPU that fails to report is recorded, not fatal
        return {"error": str(exc)}


def collect(measure_gemm: bool = True) -> dict:
    """Everything a reader needs to judge or reproduce the run."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = {
        "cpu": cpu_model(),
        "cores": cores,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {p: _version(p) for p in
                     ("convbench", "numpy", "numba", "scipy", "torch", "numba-cuda", "cupy")},
        "env": {k: os.environ.get(k) for k in
                ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS",
                 "NUMBA_NUM_THREADS", "NUMBA_ENABLE_CUDASIM", "CONVBENCH_MAX_WORKSPACE")},
        "devices": available_devices(),
        "gpu": _gpu(),
        "git_commit": _git_commit(),
    }
    if measure_gemm:
        env["gemm_peak_gflops"] = round(gemm_peak_gflops(), 1)
    return env
