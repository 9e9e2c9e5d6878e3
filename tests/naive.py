"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""


def random_case(rng, x_shape, w_shape, dtype="float64"):
    """Standard-normal input and kernel (never zeros) of the given shapes and dtype."""
    return (rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype))
