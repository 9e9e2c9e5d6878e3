"""Every registered conv2d algorithm (ours and peers) against the float64 reference on random
valid shapes, and every algorithm's declared workspace against what it really allocates."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convbench as cb
from convbench import registry
from convbench.reference import random_inputs, reference
from convbench.spec import conv_spec, pool_spec
from convbench.tolerance import check_close, conv_error_bound, pool_error_bound

CONV = registry.algorithms("conv2d", "cpu")
POOL = registry.algorithms("max_pool2d", "cpu") + registry.algorithms("avg_pool2d", "cpu")
OURS = [a for a in CONV + POOL if not a.is_peer]


@st.composite
def conv_cases(draw):
    """A random valid layer: odd sizes, stride, padding, dilation, batch 1, one channel,
    kernels as large as the (padded) input."""
    groups = draw(st.integers(1, 3))
    n, c, k = draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)), groups * draw(
        st.integers(1, 3))
    h, w = draw(st.integers(1, 17)), draw(st.integers(1, 17))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = tuple(draw(st.integers(0, 3)) for _ in range(4))
    hp, wp = h + pad[0] + pad[1], w + pad[2] + pad[3]
    kh = draw(st.integers(1, max(1, (hp - 1) // dh + 1)))
    kw = draw(st.integers(1, max(1, (wp - 1) // dw + 1)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    flip = draw(st.booleans())
    dtype = draw(st.sampled_from(["float32", "float64"]))
    params = dict(n=n, c=c, k=k, h=h, w=w, kh=kh, kw=kw, stride=stride, pad=pad,
                  dilation=(dh, dw), flip=flip, dtype=dtype, groups=groups,
                  bias=draw(st.booleans()))
    return params, draw(st.integers(0, 2**32 - 1))


def _build(p: dict):
    return conv_spec((p["n"], p["c"], p["h"], p["w"]),
                     (p["k"], p["c"] // p["groups"], p["kh"], p["kw"]),
                     stride=p["stride"], padding=p["pad"], dilation=p["dilation"],
                     flip=p["flip"], dtype=p["dtype"], groups=p["groups"], bias=p["bias"])


def supported_case(algo, p: dict):
    """The drawn layer, or the nearest one the algorithm supports: one group, or depthwise
    (groups = C, K a multiple of C); then also stride and dilation 1; then also a 3x3 kernel
    (on an input grown to fit it), keeping everything else drawn."""
    plain = dict(p, stride=(1, 1), dilation=(1, 1))
    square = dict(plain, kh=3, kw=3, h=max(p["h"], 3), w=max(p["w"], 3))
    candidates = []
    for base in (p, plain, square):
        candidates += [base, dict(base, groups=1),
                       dict(base, groups=base["c"], k=base["c"] * max(1, base["k"] // base["c"])),
                       dict(base, groups=base["c"], k=base["c"])]
    for candidate in candidates:
        spec = _build(candidate)
        if algo.supports(spec):
            return spec
    raise AssertionError(f"{algo.name} supports none of the drawn layer's neighbours")


@pytest.mark.parametrize("algo", CONV, ids=lambda a: a.name)
@given(case=conv_cases())
def test_conv_algorithm_matches_reference(algo, case):
    params, seed = case
    spec = supported_case(algo, params)
    x, w, b = random_inputs(spec, seed)
    got = algo.call(x, w, spec, b)
    assert got.shape == spec.out_shape and got.dtype == spec.dtype
    ok, ratio = check_close(got, reference(spec, x, w, b),
                            conv_error_bound(x, w, spec, algo.error_model, b))
    assert ok, f"{algo.name} on {spec.label()}: error/bound = {ratio:.3g}"


@pytest.mark.parametrize("algo", POOL, ids=lambda a: f"{a.op}-{a.name}")
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 15), w=st.integers(1, 15),
       size=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       stride=st.tuples(st.integers(1, 4), st.integers(1, 4)), data=st.data())
def test_pool_algorithm_matches_reference(algo, n, c, h, w, size, stride, data):
    size = (min(size[0], h), min(size[1], w))
    pad = (data.draw(st.integers(0, size[0] // 2)), data.draw(st.integers(0, size[1] // 2)))
    include = data.draw(st.booleans())
    spec = pool_spec(algo.op.split("_")[0], (n, c, h, w), size, stride=stride, padding=pad,
                     count_include_pad=include, dtype=data.draw(st.sampled_from(["float32", "float64"])))
    x = np.random.default_rng(data.draw(st.integers(0, 999))).standard_normal(spec.x_shape)
    x = x.astype(spec.dtype)
    ok, ratio = check_close(algo.run(x, spec), reference(spec, x), pool_error_bound(x, spec))
    assert ok, f"{algo.name} on {spec.label()}: error/bound = {ratio:.3g}"


WORKSPACE_CASES = [
    conv_spec((2, 3, 40, 37), (5, 3, 5, 5), padding=2, dtype="float32"),
    conv_spec((1, 4, 64, 64), (4, 4, 3, 3), stride=2, dilation=2, dtype="float64"),
    conv_spec((3, 8, 20, 20), (6, 8, 1, 1), dtype="float32"),
    conv_spec((1, 1, 200, 150), (1, 1, 11, 11), flip=True, dtype="float32"),
    conv_spec((2, 6, 23, 19), (5, 6, 3, 3), padding=(1, 0, 2, 1), dtype="float32"),
    # (the implicit GEMM gathers every image's pixels into shared columns: most of its bytes)
    conv_spec((8, 1024, 3, 3), (96, 1024, 1, 1), dtype="float32"),
    # (a fully connected layer: im2col's one GEMM over all images needs nothing)
    conv_spec((64, 2048, 1, 1), (96, 2048, 1, 1), dtype="float32"),
]


# squeeze-excitation layers: 1x1 kernels on images of one pixel, several images
FULLY_CONNECTED = [conv_spec((n, c, 1, 1), (k, c, 1, 1), dtype=dtype, bias=bias)
                   for n, c, k, bias, dtype in [(8, 20, 480, True, "float32"),
                                                (3, 7, 5, False, "float64"),
                                                (64, 96, 4, True, "float32")]]


@pytest.mark.parametrize("algo,spec", [(a, s) for a in CONV for s in FULLY_CONNECTED
                                       if a.supports(s)],
                         ids=lambda v: getattr(v, "name", None) or v.label())
def test_fully_connected_layers_match_reference(algo, spec):
    x, w, b = random_inputs(spec, spec.c + spec.k)
    ok, ratio = check_close(algo.call(x, w, spec, b), reference(spec, x, w, b),
                            conv_error_bound(x, w, spec, algo.error_model, b))
    assert ok, f"{algo.name} on {spec.label()}: error/bound = {ratio:.3g}"


def _peak_extra_bytes(run, *args) -> int:
    """Peak traced bytes during ``run`` minus the output it returns."""
    run(*args)  # compile first: Numba's own allocations are not the algorithm's workspace
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = run(*args)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak - out.nbytes


@pytest.mark.parametrize("algo,spec", [(a, s) for a in OURS if a.op == "conv2d"
                                       for s in WORKSPACE_CASES if a.supports(s)],
                         ids=lambda v: getattr(v, "name", None) or v.label())
def test_declared_workspace_matches_measured(algo, spec):
    """Declared workspace equals the measured peak of extra host bytes (within 10%)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.x_shape).astype(spec.dtype)
    w = rng.standard_normal(spec.w_shape).astype(spec.dtype)
    declared = algo.workspace_bytes(spec)
    measured = _peak_extra_bytes(algo.run, x, w, spec)
    assert abs(measured - declared) <= 0.10 * max(declared, 1) + 4096, (
        f"{algo.name}: declared {declared} B, measured {measured} B")


@pytest.mark.parametrize("algo", [a for a in OURS if a.op != "conv2d"], ids=lambda a: a.op)
def test_pooling_allocates_only_what_it_declares(algo):
    spec = pool_spec(algo.op.split("_")[0], (4, 8, 300, 300), 3, stride=2, padding=1)
    x = np.random.default_rng(0).standard_normal(spec.x_shape).astype(spec.dtype)
    declared = algo.workspace_bytes(spec)
    assert declared < 0.01 * x.nbytes  # a row per thread
    assert abs(_peak_extra_bytes(algo.run, x, spec) - declared) <= 4096


def test_fft_tiled_needs_less_workspace_than_fft_for_small_kernels():
    spec = conv_spec((1, 1, 512, 512), (1, 1, 5, 5), dtype="float32")
    assert cb.workspace_bytes("fft_tiled", spec) < cb.workspace_bytes("fft", spec) / 4


def test_v1_reference_loop_agrees_with_v2():
    """The kept teaching version v1 of direct computes the same as the registered kernel."""
    from convbench.cpu.direct import direct_conv2d, direct_conv2d_v1

    rng = np.random.default_rng(3)
    spec = conv_spec((2, 3, 9, 8), (5, 3, 3, 2), stride=(2, 1), padding=1, dilation=(1, 2))
    x = rng.standard_normal(spec.x_shape).astype(np.float32)
    w = rng.standard_normal(spec.w_shape).astype(np.float32)
    np.testing.assert_allclose(direct_conv2d_v1(x, w, spec), direct_conv2d(x, w, spec),
                               rtol=1e-5, atol=1e-5)


def test_direct_row_passes_follow_the_kernel_loop():
    """The cost feature counts the vector passes v3 makes per kernel row: 5, then 3, then 1."""
    from convbench.cpu import direct

    for kw in range(1, 32):
        j = passes = 0
        while j < kw:
            j += 5 if kw - j >= 5 else 3 if kw - j >= 3 else 1
            passes += 1
        assert direct.row_passes(kw) == passes


@pytest.mark.parametrize("name", ["depthwise_cl", "implicit_gemm", "direct", "winograd"])
def test_workspace_is_never_read_before_written(name, monkeypatch):
    """Each kernel's scratch comes NaN-filled: whatever it reads of it (a staged row's zero
    margins, which depthwise_cl zeroes once per call, not per task) it must have written."""
    from convbench import workspace

    def poisoned(shape, dtype):
        arr = np.empty(shape, dtype)
        arr.fill(np.nan)
        return arr

    monkeypatch.setattr(workspace, "empty", poisoned)
    algo = registry.get("conv2d", "cpu", name)
    for stride, pad in (((1, 1), (2, 1, 0, 3)), ((2, 2), (2, 2, 2, 2)), ((1, 2), (0, 0, 1, 0))):
        groups = 16 if name.startswith("depthwise") else 1
        spec = conv_spec((2, 16, 9, 11), (16, 16 // groups, 3, 3), stride=stride, padding=pad,
                         groups=groups, dtype="float32")
        if not algo.supports(spec):
            continue
        x, w, b = random_inputs(spec, 1)
        got = algo.call(x, w, spec, b)
        ok, ratio = check_close(got, reference(spec, x, w, b),
                                conv_error_bound(x, w, spec, algo.error_model, b))
        assert ok, f"{name} on {spec.label()}: error/bound = {ratio:.3g}"
