"""Benchmark fixtures: the control every session times, so results carry across machines."""
import time

import numpy as np
import pytest

from convbench.bench.gate import control_fn


@pytest.fixture(scope="session")
def control_seconds():
    """Median seconds of the fixed control GEMM in this session (the normaliser)."""
    fn = control_fn()
    fn()
    times = []
    for _ in range(9):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))
