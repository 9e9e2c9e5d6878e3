"""Shared test settings: hypothesis profiles, and the thread settings of `python -m convbench`."""
import os

# Before NumPy loads OpenBLAS: idle BLAS threads sleep at once (OpenBLAS's shortest timeout)
# instead of polling for ~0.1 s, as convbench.configure_for_benchmarks() arranges for the
# command line (the timing tests interleave BLAS and Numba).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("GOMP_SPINCOUNT", "30000")
# Without a GPU the CUDA kernels run in Numba's simulator (tests/cuda use tiny shapes there);
# on a machine with an NVIDIA device the same tests run on the GPU at full size.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Numba compiles on first call, so the first example of a test is slow: no deadline.
settings.register_profile(
    "default", deadline=None, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng():
    return np.random.default_rng(20151103)

