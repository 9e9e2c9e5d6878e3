"""Shared test settings: hypothesis profiles and random inputs from recorded seeds."""
import os

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


def random_case(rng, x_shape, w_shape, dtype="float64"):
    """Standard-normal input and kernel (never zeros) of the given shapes and dtype."""
    return (rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype))
