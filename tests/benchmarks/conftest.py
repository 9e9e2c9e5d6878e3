"""Benchmark fixtures: the controls every session times, so results carry across sessions."""
import time

import numpy as np
import pytest

from convbench.bench import controls


@pytest.fixture(scope="session")
def control_seconds():
    """Median seconds of each kind's fixed control in this session (the normalisers), timed on
    first use of each kind."""
    cache = {}

    def seconds(kind: str) -> float:
        if kind not in cache:
            fn = controls.control(kind)
            times = []
            for _ in range(9):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            cache[kind] = float(np.median(times))
        return cache[kind]

    return seconds


def pytest_collection_modifyitems(config, items):
    """Without timing (--benchmark-disable, CI's default), peers on large layers are left out:
    run once, they would check SciPy's and torch's arithmetic, not ours, at a minute's cost."""
    disabled = (config.getoption("benchmark_disable", False)
                and not config.getoption("benchmark_enable", False))  # addopts disables
    if not disabled:
        return
    keep = [item for item in items if item.get_closest_marker("peer_large") is None]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
