"""The public API against SciPy and PyTorch semantics, and its mathematical properties."""
import numpy as np
import pytest
import scipy.signal
from hypothesis import given
from hypothesis import strategies as st

import convbench as cb
from naive import random_case
from convbench.reference import conv2d_reference
from convbench.tolerance import conv_error_bound

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the cross-checks with torch run wherever torch imports (CI installs it)
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")
OURS = [a.name for a in cb.algorithms("conv2d", "cpu") if not a.is_peer]


def able(x_shape, w_shape, **kwargs) -> list[str]:
    """Our algorithms that support this layer (the others refuse it, as tested elsewhere)."""
    spec = cb.conv_spec(x_shape, w_shape, **kwargs)
    return [a.name for a in cb.algorithms("conv2d", "cpu") if not a.is_peer and a.supports(spec)]


def signal_or_refusal(fn, a, k, mode, algorithm):
    """fn's result, or None when ``algorithm`` refused the case with its documented error."""
    try:
        return fn(a, k, mode, algorithm=algorithm)
    except ValueError as exc:
        assert "does not support this case" in str(exc), exc
        return None


def test_seed_article_example():
    """The 5x5 image and 3x3 kernel of the seed article give the article's feature map."""
    image = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0],
                      [0, 1, 1, 0, 0]])
    kernel = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    expected = np.array([[4, 3, 4], [2, 4, 3], [2, 3, 4]])
    for algorithm in able((1, 1, 5, 5), (1, 1, 3, 3)):
        got = cb.correlate2d(image, kernel, "valid", algorithm=algorithm)
        np.testing.assert_allclose(got, expected, atol=1e-9, err_msg=algorithm)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("shape,kshape", [
    ((7, 9), (3, 3)), ((7, 9), (2, 2)), ((8, 6), (4, 3)), ((5, 5), (5, 5)), ((6, 7), (1, 4)),
    ((3, 4), (5, 6)),  # kernel larger than the image: scipy swaps the inputs in "valid"
])
@pytest.mark.parametrize("algorithm", OURS)
def test_matches_scipy_signal(mode, shape, kshape, algorithm, rng):
    a, k = rng.standard_normal(shape), rng.standard_normal(kshape)
    for ours, theirs in ((cb.correlate2d, scipy.signal.correlate2d),
                         (cb.convolve2d, scipy.signal.convolve2d)):
        got = signal_or_refusal(ours, a, k, mode, algorithm)
        if got is not None:
            np.testing.assert_allclose(got, theirs(a, k, mode), rtol=1e-9, atol=1e-9,
                                       err_msg=f"{ours.__name__} {algorithm}")


@given(h=st.integers(1, 12), w=st.integers(1, 12), kh=st.integers(1, 12), kw=st.integers(1, 12),
       mode=st.sampled_from(["full", "same"]), seed=st.integers(0, 2**16))
def test_signal_random_shapes_match_scipy(h, w, kh, kw, mode, seed):
    rng = np.random.default_rng(seed)
    a, k = rng.standard_normal((h, w)), rng.standard_normal((kh, kw))
    np.testing.assert_allclose(cb.correlate2d(a, k, mode), scipy.signal.correlate2d(a, k, mode),
                               rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(cb.convolve2d(a, k, mode), scipy.signal.convolve2d(a, k, mode),
                               rtol=1e-8, atol=1e-8)


@needs_torch
@pytest.mark.parametrize("algorithm,kshape,kwargs", [
    (a, k, kw) for k in ((4, 3, 3, 4), (4, 3, 3, 3)) for kw in (
        {}, {"stride": 2}, {"stride": (1, 3), "padding": 1}, {"padding": "same"},
        {"padding": "same", "dilation": 2}, {"dilation": (2, 1), "padding": (2, 0)},
        {"stride": 2, "padding": 2, "dilation": 2})
    for a in able((2, 3, 11, 10), k, **kw)], ids=str)
def test_conv2d_matches_torch(algorithm, kshape, kwargs, rng):
    x, w = random_case(rng, (2, 3, 11, 10), kshape, "float32")
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), **kwargs).numpy()
    got = cb.conv2d(x, w, algorithm=algorithm, **kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@needs_torch
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size,stride,padding", [
    (2, None, 0), (3, 2, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1)), (5, 1, 2), (1, 1, 0),
])
def test_pooling_matches_torch(kind, size, stride, padding, rng):
    x = rng.standard_normal((2, 3, 13, 10)).astype(np.float32)
    tfn = F.max_pool2d if kind == "max" else F.avg_pool2d
    expected = tfn(torch.from_numpy(x), size, stride, padding).numpy()
    ours = cb.max_pool2d if kind == "max" else cb.avg_pool2d
    np.testing.assert_allclose(ours(x, size, stride=stride, padding=padding), expected,
                               rtol=1e-6, atol=1e-6)


@needs_torch
def test_avg_pool_exclude_padding_matches_torch(rng):
    x = rng.standard_normal((1, 2, 7, 8)).astype(np.float64)
    expected = F.avg_pool2d(torch.from_numpy(x), 3, 2, 1, count_include_pad=False).numpy()
    np.testing.assert_allclose(cb.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False),
                               expected, rtol=1e-12)


def test_max_pool_propagates_nan():
    x = np.ones((1, 1, 4, 4))
    x[0, 0, 1, 1] = np.nan
    y = cb.max_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 1])


@pytest.mark.parametrize("algorithm,shape", [
    (a, s) for s in ((5, 3, 4, 3), (5, 3, 3, 3)) for a in able((2, 3, 9, 8), s, padding=(1, 2))])
def test_flip_is_correlation_with_rotated_kernel(algorithm, shape, rng):
    x, w = random_case(rng, (2, 3, 9, 8), shape)
    flipped = cb.conv2d(x, w, flip=True, padding=(1, 2), algorithm=algorithm)
    rotated = cb.conv2d(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), padding=(1, 2),
                        algorithm=algorithm)
    np.testing.assert_allclose(flipped, rotated, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("algorithm", able((1, 2, 10, 10), (3, 2, 3, 3)))
def test_linear_in_the_input(algorithm, rng):
    x1, w = random_case(rng, (1, 2, 10, 10), (3, 2, 3, 3))
    x2 = rng.standard_normal(x1.shape)
    lhs = cb.conv2d(2.0 * x1 - 3.0 * x2, w, algorithm=algorithm)
    rhs = 2.0 * cb.conv2d(x1, w, algorithm=algorithm) - 3.0 * cb.conv2d(x2, w, algorithm=algorithm)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("algorithm,ksize", [(a, k) for k in (5, 3) for a in
                                             able((2, 8, 20, 20), (6, 8, k, k), padding=k // 2)])
def test_float32_error_within_documented_bound(algorithm, ksize, rng):
    """float32 results stay within tolerance.py's bound of the float64 reference, and that
    bound is tight enough to mean something (far below the outputs' own size)."""
    x, w = random_case(rng, (2, 8, 20, 20), (6, 8, ksize, ksize), "float32")
    algo = next(a for a in cb.algorithms("conv2d", "cpu") if a.name == algorithm)
    spec = cb.conv_spec(x.shape, w.shape, padding=ksize // 2, dtype="float32")
    expected = conv2d_reference(x, w, spec)
    bound = conv_error_bound(x, w, spec, algo.error_model)
    err = np.abs(cb.conv2d(x, w, padding=ksize // 2, algorithm=algorithm) - expected)
    assert (err <= bound).all()
    assert np.median(bound) < 0.05 * np.median(np.abs(expected))


def test_non_contiguous_inputs(rng):
    x, w = random_case(rng, (2, 3, 12, 14), (4, 3, 3, 3))
    xt, wt = x[:, :, ::2, ::-1], w.transpose(0, 1, 3, 2)
    for algorithm in able(xt.shape, wt.shape):
        np.testing.assert_allclose(
            cb.conv2d(xt, wt, algorithm=algorithm),
            cb.conv2d(np.ascontiguousarray(xt), np.ascontiguousarray(wt), algorithm=algorithm),
            rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cb.max_pool2d(x[:, ::-1], 2), cb.max_pool2d(x[:, ::-1].copy(), 2))


def test_output_dtype_follows_input(rng):
    for dtype in ("float32", "float64"):
        x, w = random_case(rng, (1, 1, 6, 6), (1, 1, 3, 3), dtype)
        assert cb.conv2d(x, w).dtype == dtype
        assert cb.avg_pool2d(x, 2).dtype == dtype


def test_a_repeated_call_skips_validation_and_any_other_form_takes_it(rng, monkeypatch):
    # a call whose argument set was validated before goes straight to its algorithm; the
    # same shapes in any other form (Fortran order, big-endian, a float64 or list bias)
    # are validated and converted again, and every form gives the same result
    from convbench import ops

    x, w = random_case(rng, (2, 3, 9, 9), (4, 3, 3, 3), "float32")
    bias = rng.standard_normal(4).astype(np.float32)
    options = dict(stride=(1, 2), padding=1)
    first = cb.conv2d(x, w, bias, **options)

    def refuse(*args):
        raise AssertionError("validated again")

    monkeypatch.setattr(ops, "check_dtype", refuse)
    np.testing.assert_array_equal(cb.conv2d(x, w, bias, **options), first)
    others = [(np.asfortranarray(x), w, bias), (x.astype(">f4"), w, bias),
              (x, w, bias.astype(np.float64)), (x, w, list(bias))]
    for args in others:
        with pytest.raises(AssertionError, match="validated again"):
            cb.conv2d(*args, **options)
    monkeypatch.undo()
    for args in others:
        np.testing.assert_allclose(cb.conv2d(*args, **options), first, rtol=1e-6, atol=1e-6)


def test_a_repeated_call_follows_an_algorithm_replaced_in_the_registry(rng):
    import dataclasses

    from convbench import registry

    x, w = random_case(rng, (1, 2, 8, 8), (3, 2, 3, 3), "float32")
    expected = cb.conv2d(x, w, algorithm="direct")
    cb.conv2d(x, w, algorithm="direct")  # remembered
    real = registry.get("conv2d", "cpu", "direct")
    calls = []

    def counted(x, w, spec):
        calls.append(spec.label())
        return real.run(x, w, spec)

    with registry.registered(dataclasses.replace(real, run=counted)):
        np.testing.assert_array_equal(cb.conv2d(x, w, algorithm="direct"), expected)
    assert len(calls) == 1
    np.testing.assert_array_equal(cb.conv2d(x, w, algorithm="direct"), expected)
    assert len(calls) == 1  # the registry restored: the real one again
