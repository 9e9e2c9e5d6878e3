"""conv2d as people use it: bias, groups and depthwise layers against torch, SciPy's
boundary modes against SciPy, and the refusals of algorithms that cannot."""
import numpy as np
import pytest
import scipy.signal
from hypothesis import given
from hypothesis import strategies as st

import convbench as cb

try:  # torch is an optional peer: only the comparisons with it need it
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = F = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed (the peers extra)")

OURS = [a for a in cb.algorithms("conv2d", "cpu") if not a.is_peer]


@st.composite
def grouped_layers(draw):
    groups = draw(st.integers(1, 4))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    if depthwise:
        cg = 1
    h, w = draw(st.integers(3, 12)), draw(st.integers(3, 12))
    k = draw(st.sampled_from([1, 3]))
    stride = draw(st.integers(1, 2))
    pad = draw(st.integers(0, 1))
    return dict(n=draw(st.integers(1, 2)), c=groups * cg, k=groups * kg, h=h, w=w, ksize=k,
                groups=groups, stride=stride, pad=pad, bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))


@needs_torch
@pytest.mark.parametrize("algo", OURS, ids=lambda a: a.name)
@given(layer=grouped_layers())
def test_bias_and_groups_match_torch(algo, layer):
    p = layer
    spec = cb.conv_spec((p["n"], p["c"], p["h"], p["w"]),
                        (p["k"], p["c"] // p["groups"], p["ksize"], p["ksize"]),
                        stride=p["stride"], padding=p["pad"], groups=p["groups"],
                        bias=p["bias"])
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = rng.standard_normal(spec.w_shape).astype(np.float32)
    b = rng.standard_normal(spec.k).astype(np.float32) if p["bias"] else None
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                        None if b is None else torch.from_numpy(b), stride=p["stride"],
                        padding=p["pad"], groups=p["groups"]).numpy()
    if not algo.supports(spec):  # refused with its reason, never computed wrong
        with pytest.raises(ValueError, match="does not support"):
            cb.conv2d(x, w, b, stride=p["stride"], padding=p["pad"], groups=p["groups"],
                      algorithm=algo.name)
        return
    got = cb.conv2d(x, w, b, stride=p["stride"], padding=p["pad"], groups=p["groups"],
                    algorithm=algo.name)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


def test_every_algorithm_either_supports_groups_or_says_why():
    spec = cb.conv_spec((1, 4, 8, 8), (6, 2, 3, 3), groups=2)
    for algo in cb.algorithms("conv2d", "cpu"):
        assert algo.supports(spec) or "groups" in algo.limits, algo.name
    assert {a.name for a in OURS if a.supports(spec)} >= {"direct", "im2col"}


def test_auto_chooses_among_those_that_support_the_layer():
    depthwise = cb.explain((8, 64, 28, 28), (64, 1, 3, 3), padding=1, groups=64)
    assert depthwise.algorithm.supports(cb.conv_spec((8, 64, 28, 28), (64, 1, 3, 3), padding=1,
                                                     groups=64))
    refused = {c.name for c in depthwise.candidates if c.note.startswith("unsupported")}
    assert {"fft", "winograd"} <= refused


@pytest.mark.parametrize("kwargs,match", [
    ({"groups": 3}, "groups must divide"),
    ({"groups": 0}, "groups must be >= 1"),
    ({"groups": 1.5}, "groups must be an int"),
])
def test_bad_groups(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cb.conv2d(np.ones((1, 4, 6, 6), np.float32), np.ones((4, 4, 3, 3), np.float32), **kwargs)


def test_weight_shape_must_follow_the_groups():
    with pytest.raises(ValueError, match=r"w.shape\[1\] must be 2"):
        cb.conv2d(np.ones((1, 4, 6, 6), np.float32), np.ones((4, 4, 3, 3), np.float32), groups=2)


@pytest.mark.parametrize("bias,match", [(np.ones(3), r"shape \(4,\)"),
                                        (np.ones((4, 1)), r"shape \(4,\)"),
                                        (np.array(["a"] * 4), "real")])
def test_bad_bias(bias, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cb.conv2d(np.ones((1, 2, 6, 6), np.float32), np.ones((4, 2, 3, 3), np.float32), bias)


def test_bias_is_added_on_every_device_path():
    x = np.ones((1, 2, 6, 6), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    b = np.array([1.0, -2.0, 0.5], np.float32)
    for algo in OURS:
        spec = cb.conv_spec(x.shape, w.shape, bias=True)
        if algo.supports(spec):
            y = cb.conv2d(x, w, b, algorithm=algo.name)
            np.testing.assert_allclose(y[0, :, 0, 0], b, atol=1e-6, err_msg=algo.name)


@given(h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 7), kw=st.integers(1, 7),
       mode=st.sampled_from(["full", "same", "valid"]),
       boundary=st.sampled_from(["fill", "wrap", "symm"]),
       fillvalue=st.floats(-3, 3), seed=st.integers(0, 2**16))
def test_boundary_modes_match_scipy(h, w, kh, kw, mode, boundary, fillvalue, seed):
    rng = np.random.default_rng(seed)
    a, k = rng.standard_normal((h, w)), rng.standard_normal((kh, kw))
    for ours, theirs in ((cb.correlate2d, scipy.signal.correlate2d),
                         (cb.convolve2d, scipy.signal.convolve2d)):
        try:
            expected = theirs(a, k, mode, boundary, fillvalue)  # positionally, as SciPy allows
        except ValueError:
            with pytest.raises(ValueError):
                ours(a, k, mode, boundary, fillvalue)
            continue
        np.testing.assert_allclose(ours(a, k, mode, boundary, fillvalue), expected,
                                   rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("algorithm", [a.name for a in OURS])
def test_boundary_modes_for_every_algorithm_that_can(algorithm, rng):
    a, k = rng.standard_normal((9, 8)), rng.standard_normal((3, 3))
    for boundary in ("wrap", "symm"):
        expected = scipy.signal.correlate2d(a, k, "same", boundary)
        try:
            got = cb.correlate2d(a, k, "same", boundary, algorithm=algorithm)
        except ValueError as exc:  # an algorithm that cannot run the layer says why
            assert "does not support" in str(exc)
            continue
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("boundary,fillvalue,match", [("reflect", 0, "boundary"),
                                                      ("fill", "x", "fillvalue"),
                                                      ("fill", 1j, "fillvalue")])
def test_bad_boundary_arguments(boundary, fillvalue, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cb.correlate2d(np.ones((4, 4)), np.ones((2, 2)), "full", boundary, fillvalue)
